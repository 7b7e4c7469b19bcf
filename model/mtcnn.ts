/**
 * The three MTCNN face detection networks in TensorFlow.js, with the released Caffe weights
 * `det1.caffemodel` (P-Net), `det2.caffemodel` (R-Net) and `det3.caffemodel` (O-Net).
 *
 * Layers, as in the deploy prototxt files (no padding anywhere, every conv stride 1):
 *
 * | net | trunk | heads |
 * |---|---|---|
 * | P-Net | conv1 3×3→10, PReLU1, pool 2/2, conv2 3×3→16, PReLU2, conv3 3×3→32, PReLU3 | conv4-1 1×1→2 softmax, conv4-2 1×1→4 |
 * | R-Net | conv1 3×3→28, prelu1, pool 3/2, conv2 3×3→48, prelu2, pool 3/2, conv3 2×2→64, prelu3, conv4 fc→128, prelu4 | conv5-1 fc→2 softmax, conv5-2 fc→4 |
 * | O-Net | conv1 3×3→32, prelu1, pool 3/2, conv2 3×3→64, prelu2, pool 3/2, conv3 3×3→64, prelu3, pool 2/2, conv4 2×2→128, prelu4, conv5 fc→256, prelu5 | conv6-1 fc→2 softmax, conv6-2 fc→4, conv6-3 fc→10 |
 *
 * O-Net's `drop5` dropout is the identity at test time and is left out. Caffe's max pooling rounds
 * its output size up (`maxPoolCeil`). Caffe's InnerProduct flattens its input in C,H,W order, so
 * the first fc weight of R-Net (conv4) and O-Net (conv5) is permuted to the NHWC flatten order on
 * import.
 *
 * Parameter names are `LAYER.weight` (conv HWIO, fc [in, out], or PReLU slopes) and `LAYER.bias`,
 * with Caffe's layer names, so `mapCaffeBlobs` fills them from the caffemodel files.
 *
 * MTCNNv2 adds a fourth network, the landmark refinement net L-Net (`det4.caffemodel`), which
 * `loadMtcnn(dir, { lnet: true })` loads as well. SphereFace does not use it. Its deploy prototxt
 * takes 15 channels of 24×24: five RGB patches, one around each landmark, which a Slice layer
 * splits at channels 3, 6, 9 and 12. Each patch k (1…5) goes through its own trunk
 * conv1_k 3×3→28, prelu1_k, pool1_k 3/2, conv2_k 3×3→48, prelu2_k, pool2_k 3/2, conv3_k 2×2→64,
 * prelu3_k (24→22→11→9→4→3). A Concat joins the five 64×3×3 maps along the channels (320×3×3),
 * and fc4 →256, prelu4 feeds five heads fc4_k →64, prelu4_k, fc5_k →2.
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { modelsRoot } from '../lib/paths.ts';
import { mapCaffeBlobs, readCaffeModel, type CaffeNet } from './caffe.ts';
import type { MappedParameter, ParameterSpec } from './pytorch.ts';
import type { ParameterMap } from './types.ts';

/** P-Net output for a batch of pyramid levels of one size. */
export interface PNetOutput {
  /** Face probability (softmax channel 1 of `prob1`), [N, h, w]. */
  readonly prob: tf.Tensor3D;
  /** Box regression `conv4-2`, channels in Caffe order, [N, h, w, 4]. */
  readonly regression: tf.Tensor4D;
}

export interface RNetOutput {
  /** Face probability (softmax channel 1 of `prob1`), [N]. */
  readonly prob: tf.Tensor1D;
  /** Box regression `conv5-2`, [N, 4]. */
  readonly regression: tf.Tensor2D;
}

/** L-Net output for a batch of faces. */
export interface LNetOutput {
  /**
   * The heads `fc5_1` … `fc5_5` stacked, [N, 5, 2]: for landmark k, the offset of the landmark
   * inside its patch, in units of the patch side, channels in Caffe order. MTCNNv2's
   * `detect_face` adds channel 0 to x and channel 1 to y.
   */
  readonly offsets: tf.Tensor3D;
}

export interface ONetOutput {
  /** Face probability (softmax channel 1 of `prob1`), [N]. */
  readonly prob: tf.Tensor1D;
  /** Box regression `conv6-2`, [N, 4]. */
  readonly regression: tf.Tensor2D;
  /** Landmarks `conv6-3`, [N, 10], in Caffe channel order. */
  readonly landmarks: tf.Tensor2D;
}

/**
 * The three MTCNN networks with the released Caffe weights, on either inference engine. Every
 * input is NHWC float32, already normalised as (x − 127.5) × 0.0078125, and laid out as Caffe saw
 * it: H and W here are Caffe's height and width. Because matcaffe passed Matlab's H×W×3 arrays as
 * W×H×C, the released weights expect the image TRANSPOSED (x↔y): the detector transposes each
 * image or crop before calling these, and transposes the P-Net maps back. The networks themselves
 * know nothing about that. Callers own the input and the returned tensors.
 *
 * Each net may return its output or a promise of it, because TensorFlow.js returns synchronously
 * (`MtcnnNets`) while ONNX Runtime's `session.run` is asynchronous (`model/mtcnnEngine.ts`).
 */
export interface MtcnnEngineNets {
  /** The inference engine that runs the networks. */
  readonly engine: 'onnx' | 'tfjs';
  /** Runs P-Net on [N, H, W, 3] with H, W ≥ 12. The output maps have the size `pnetOutputSize(H, W)`. */
  pnet(input: tf.Tensor4D): PNetOutput | Promise<PNetOutput>;
  /** Runs R-Net on [N, 24, 24, 3]. */
  rnet(input: tf.Tensor4D): RNetOutput | Promise<RNetOutput>;
  /** Runs O-Net on [N, 48, 48, 3]. */
  onet(input: tf.Tensor4D): ONetOutput | Promise<ONetOutput>;
  /**
   * Runs L-Net on [N, 24, 24, 15]: channels 3k … 3k + 2 hold the patch of landmark k (0-based
   * k, in the order of O-Net's landmarks), each transposed like the other nets' inputs. Present
   * only when the networks were loaded with L-Net (`loadMtcnn(dir, { lnet: true })`).
   */
  readonly lnet?: (input: tf.Tensor4D) => LNetOutput | Promise<LNetOutput>;
  /** Releases the weights (and sessions). The networks cannot be used afterwards. */
  dispose(): void;
}

/** The MTCNN networks on TensorFlow.js, whose outputs are ready when a method returns. */
export interface MtcnnNets extends MtcnnEngineNets {
  readonly engine: 'tfjs';
  pnet(input: tf.Tensor4D): PNetOutput;
  rnet(input: tf.Tensor4D): RNetOutput;
  onet(input: tf.Tensor4D): ONetOutput;
  readonly lnet?: (input: tf.Tensor4D) => LNetOutput;
}

/** The weight files inside the MTCNN model folder. */
export const MTCNN_MODEL_FILES = { pnet: 'det1.caffemodel', rnet: 'det2.caffemodel', onet: 'det3.caffemodel', lnet: 'det4.caffemodel' } as const;

/** Smallest P-Net input side in pixels: one 12×12 window. */
export const PNET_MIN_INPUT = 12;
export const RNET_INPUT = 24;
export const ONET_INPUT = 48;
/** L-Net's patch side in pixels, and its number of patches (one per landmark). */
export const LNET_INPUT = 24;
export const LNET_PATCHES = 5;

// ---------------------------------------------------------------------------------------------
// Caffe's max pooling.

/** Output size of Caffe max pooling without padding: ceil((input − kernel) / stride) + 1. */
export function caffePooledSize(input: number, kernel: number, stride: number): number {
  return Math.ceil((input - kernel) / stride) + 1;
}

/**
 * Max pooling with Caffe's rounding: the output size is `caffePooledSize`, so the last window may
 * hang over the bottom or right edge, and it takes the maximum of the values inside the map only.
 * The map is padded at the bottom and right with −∞ up to the size a VALID pool needs. With
 * kernel ≥ stride the last window starts inside the map, so every window contains a real value.
 * Settings that would leave a window entirely in the padding throw.
 */
export function maxPoolCeil(x: tf.Tensor4D, kernel: number, stride: number): tf.Tensor4D {
  const [, height, width] = x.shape;
  const outHeight = caffePooledSize(height, kernel, stride);
  const outWidth = caffePooledSize(width, kernel, stride);
  if (outHeight < 1 || outWidth < 1 || (outHeight - 1) * stride >= height || (outWidth - 1) * stride >= width) {
    throw new Error(`max pool ${kernel}/${stride} on a ${height}×${width} map: a window would lie outside the map; expected kernel ≥ stride`);
  }
  const padBottom = (outHeight - 1) * stride + kernel - height;
  const padRight = (outWidth - 1) * stride + kernel - width;
  return tf.tidy(() => {
    const padded = padBottom > 0 || padRight > 0 ? tf.pad(x, [[0, 0], [0, padBottom], [0, padRight], [0, 0]], Number.NEGATIVE_INFINITY) : x;
    return tf.maxPool(padded, kernel, stride, 'valid');
  });
}

/** Size of P-Net's output maps for an H×W input: conv 3×3, pool 2/2 (ceil), conv 3×3, conv 3×3. */
export function pnetOutputSize(height: number, width: number): { readonly height: number; readonly width: number } {
  const side = (n: number) => caffePooledSize(n - 2, 2, 2) - 4;
  return { height: side(height), width: side(width) };
}

// ---------------------------------------------------------------------------------------------
// Parameter lists.

function conv(layer: string, kernel: number, inChannels: number, outChannels: number): ParameterSpec[] {
  return [
    { name: `${layer}.weight`, shape: [kernel, kernel, inChannels, outChannels], layout: 'conv2d' },
    { name: `${layer}.bias`, shape: [outChannels], layout: 'vector' },
  ];
}

function prelu(layer: string, channels: number): ParameterSpec[] {
  return [{ name: `${layer}.weight`, shape: [channels], layout: 'vector' }];
}

function dense(layer: string, inFeatures: number, outFeatures: number): ParameterSpec[] {
  return [
    { name: `${layer}.weight`, shape: [inFeatures, outFeatures], layout: 'linear' },
    { name: `${layer}.bias`, shape: [outFeatures], layout: 'vector' },
  ];
}

/** Lists an InnerProduct on a C×H×W map, whose weight columns Caffe orders C,H,W. */
function denseOnMap(layer: string, map: { channels: number; height: number; width: number }, outFeatures: number): ParameterSpec[] {
  return [
    { name: `${layer}.weight`, shape: [map.channels * map.height * map.width, outFeatures], layout: { kind: 'linear-chw', ...map } },
    { name: `${layer}.bias`, shape: [outFeatures], layout: 'vector' },
  ];
}

/** P-Net's parameters with TensorFlow.js shapes. Its PReLU layers are named `PReLU1`…`PReLU3` in det1. */
export function pnetParameterSpecs(): ParameterSpec[] {
  return [
    ...conv('conv1', 3, 3, 10),
    ...prelu('PReLU1', 10),
    ...conv('conv2', 3, 10, 16),
    ...prelu('PReLU2', 16),
    ...conv('conv3', 3, 16, 32),
    ...prelu('PReLU3', 32),
    ...conv('conv4-1', 1, 32, 2),
    ...conv('conv4-2', 1, 32, 4),
  ];
}

/** R-Net's parameters with TensorFlow.js shapes. conv4 flattens a 64×3×3 map. */
export function rnetParameterSpecs(): ParameterSpec[] {
  return [
    ...conv('conv1', 3, 3, 28),
    ...prelu('prelu1', 28),
    ...conv('conv2', 3, 28, 48),
    ...prelu('prelu2', 48),
    ...conv('conv3', 2, 48, 64),
    ...prelu('prelu3', 64),
    ...denseOnMap('conv4', { channels: 64, height: 3, width: 3 }, 128),
    ...prelu('prelu4', 128),
    ...dense('conv5-1', 128, 2),
    ...dense('conv5-2', 128, 4),
  ];
}

/** O-Net's parameters with TensorFlow.js shapes. conv5 flattens a 128×3×3 map. */
export function onetParameterSpecs(): ParameterSpec[] {
  return [
    ...conv('conv1', 3, 3, 32),
    ...prelu('prelu1', 32),
    ...conv('conv2', 3, 32, 64),
    ...prelu('prelu2', 64),
    ...conv('conv3', 3, 64, 64),
    ...prelu('prelu3', 64),
    ...conv('conv4', 2, 64, 128),
    ...prelu('prelu4', 128),
    ...denseOnMap('conv5', { channels: 128, height: 3, width: 3 }, 256),
    ...prelu('prelu5', 256),
    ...dense('conv6-1', 256, 2),
    ...dense('conv6-2', 256, 4),
    ...dense('conv6-3', 256, 10),
  ];
}

/**
 * L-Net's parameters with TensorFlow.js shapes. Branch k (1…5) has its own trunk and head. fc4
 * flattens the 320×3×3 concatenation of the five 64×3×3 maps, whose channel 64·(k − 1) + c is
 * channel c of branch k.
 */
export function lnetParameterSpecs(): ParameterSpec[] {
  const branches = Array.from({ length: LNET_PATCHES }, (_, i) => i + 1);
  return [
    ...branches.flatMap((k) => [
      ...conv(`conv1_${k}`, 3, 3, 28),
      ...prelu(`prelu1_${k}`, 28),
      ...conv(`conv2_${k}`, 3, 28, 48),
      ...prelu(`prelu2_${k}`, 48),
      ...conv(`conv3_${k}`, 2, 48, 64),
      ...prelu(`prelu3_${k}`, 64),
    ]),
    ...denseOnMap('fc4', { channels: 64 * LNET_PATCHES, height: 3, width: 3 }, 256),
    ...prelu('prelu4', 256),
    ...branches.flatMap((k) => [...dense(`fc4_${k}`, 256, 64), ...prelu(`prelu4_${k}`, 64), ...dense(`fc5_${k}`, 64, 2)]),
  ];
}

/**
 * Layers with weights in the caffemodel files that the deploy networks do not use. det2 was saved
 * from a training net with a landmark head `conv5-3` (fc 128→10). The R-Net deploy prototxt has
 * no such layer, and the detector uses only conv5-1 and conv5-2.
 */
const UNUSED_LAYERS = { pnet: [], rnet: ['conv5-3'], onet: [], lnet: [] } as const;

// ---------------------------------------------------------------------------------------------
// Forward passes.

type Getter = (name: string) => tf.Tensor;

/** Convolution (stride 1, no padding) with bias, then PReLU with the slopes of `activation` if given. */
function convLayer(x: tf.Tensor4D, get: Getter, layer: string, activation?: string): tf.Tensor4D {
  return tf.fused.conv2d({
    x,
    filter: get(`${layer}.weight`) as tf.Tensor4D,
    bias: get(`${layer}.bias`),
    strides: 1,
    pad: 'valid',
    activation: activation === undefined ? 'linear' : 'prelu',
    preluActivationWeights: activation === undefined ? undefined : get(`${activation}.weight`),
  });
}

/** InnerProduct on [N, in] with a [in, out] weight, then PReLU if `activation` is given. */
function denseLayer(x: tf.Tensor2D, get: Getter, layer: string, activation?: string): tf.Tensor2D {
  return tf.fused.matMul({
    a: x,
    b: get(`${layer}.weight`) as tf.Tensor2D,
    bias: get(`${layer}.bias`),
    activation: activation === undefined ? 'linear' : 'prelu',
    preluActivationWeights: activation === undefined ? undefined : get(`${activation}.weight`),
  }) as tf.Tensor2D;
}

/** Softmax over the two classes of the last axis, keeping channel 1 (face). */
function faceProbability(logits: tf.Tensor): tf.Tensor {
  const probabilities = tf.softmax(logits);
  const begin = logits.shape.map((_, axis) => (axis === logits.rank - 1 ? 1 : 0));
  const size = logits.shape.map((_, axis) => (axis === logits.rank - 1 ? 1 : -1));
  return tf.squeeze(tf.slice(probabilities, begin, size), [logits.rank - 1]);
}

/**
 * Checks the input of P-Net (`size` `any`), R-Net or O-Net: rank 4, 3 channels, float32, and the
 * net's fixed size or at least 12×12.
 *
 * @throws Error naming the net, the shape or dtype found and the one expected.
 */
export function assertNetInput(net: string, input: tf.Tensor4D, size: { height: number; width: number } | 'any'): void {
  const [n, h = 0, w = 0, c] = input.shape;
  const fixed = size !== 'any';
  const sizeOk = fixed ? h === size.height && w === size.width : h >= PNET_MIN_INPUT && w >= PNET_MIN_INPUT;
  if (input.rank !== 4 || c !== 3 || !sizeOk) {
    const expected = fixed ? `[N, ${size.height}, ${size.width}, 3]` : `[N, H, W, 3] with H, W ≥ ${PNET_MIN_INPUT}`;
    throw new Error(`${net}: input has shape [${input.shape.join(', ')}], expected ${expected}`);
  }
  if (input.dtype !== 'float32') throw new Error(`${net}: input has dtype ${input.dtype}, expected float32 normalised as (x − 127.5) × 0.0078125`);
  if (n === undefined) throw new Error(`${net}: input has no batch dimension`);
}

/**
 * Checks L-Net's input: [N, 24, 24, 15] float32.
 *
 * @throws Error naming the shape or dtype found and the one expected.
 */
export function assertLNetInput(input: tf.Tensor4D): void {
  const [, h, w, c] = input.shape;
  if (input.rank !== 4 || h !== LNET_INPUT || w !== LNET_INPUT || c !== 3 * LNET_PATCHES) {
    throw new Error(`lnet: input has shape [${input.shape.join(', ')}], expected [N, ${LNET_INPUT}, ${LNET_INPUT}, ${3 * LNET_PATCHES}]`);
  }
  if (input.dtype !== 'float32') throw new Error(`lnet: input has dtype ${input.dtype}, expected float32 normalised as (x − 127.5) × 0.0078125`);
}

class MtcnnNetworks implements MtcnnNets {
  readonly engine = 'tfjs';
  private disposed = false;

  readonly lnet?: (input: tf.Tensor4D) => LNetOutput;

  /** Takes ownership of the parameter maps, which hold the tensors the spec lists name. */
  constructor(
    private readonly pnetParameters: ParameterMap,
    private readonly rnetParameters: ParameterMap,
    private readonly onetParameters: ParameterMap,
    private readonly lnetParameters?: ParameterMap,
  ) {
    if (lnetParameters !== undefined) this.lnet = (input) => this.runLNet(input, lnetParameters);
  }

  private getter(net: string, parameters: ParameterMap): Getter {
    if (this.disposed) throw new Error(`${net}: called after dispose()`);
    return (name) => {
      const tensor = parameters.get(name);
      if (tensor === undefined) throw new Error(`${net}: no parameter "${name}"`);
      return tensor;
    };
  }

  pnet(input: tf.Tensor4D): PNetOutput {
    const get = this.getter('pnet', this.pnetParameters);
    assertNetInput('pnet', input, 'any');
    const [n = 0, h = 0, w = 0] = input.shape;
    if (n === 0) {
      const size = pnetOutputSize(h, w);
      return { prob: tf.zeros([0, size.height, size.width]), regression: tf.zeros([0, size.height, size.width, 4]) };
    }
    return tf.tidy(() => {
      let x = convLayer(input, get, 'conv1', 'PReLU1');
      x = maxPoolCeil(x, 2, 2);
      x = convLayer(x, get, 'conv2', 'PReLU2');
      x = convLayer(x, get, 'conv3', 'PReLU3');
      const prob = faceProbability(convLayer(x, get, 'conv4-1')) as tf.Tensor3D;
      const regression = convLayer(x, get, 'conv4-2');
      return { prob, regression };
    });
  }

  rnet(input: tf.Tensor4D): RNetOutput {
    const get = this.getter('rnet', this.rnetParameters);
    assertNetInput('rnet', input, { height: RNET_INPUT, width: RNET_INPUT });
    const n = input.shape[0];
    if (n === 0) return { prob: tf.zeros([0]), regression: tf.zeros([0, 4]) };
    return tf.tidy(() => {
      let x = convLayer(input, get, 'conv1', 'prelu1');
      x = maxPoolCeil(x, 3, 2);
      x = convLayer(x, get, 'conv2', 'prelu2');
      x = maxPoolCeil(x, 3, 2);
      x = convLayer(x, get, 'conv3', 'prelu3');
      const features = denseLayer(tf.reshape(x, [n, -1]), get, 'conv4', 'prelu4');
      const prob = faceProbability(denseLayer(features, get, 'conv5-1')) as tf.Tensor1D;
      const regression = denseLayer(features, get, 'conv5-2');
      return { prob, regression };
    });
  }

  onet(input: tf.Tensor4D): ONetOutput {
    const get = this.getter('onet', this.onetParameters);
    assertNetInput('onet', input, { height: ONET_INPUT, width: ONET_INPUT });
    const n = input.shape[0];
    if (n === 0) return { prob: tf.zeros([0]), regression: tf.zeros([0, 4]), landmarks: tf.zeros([0, 10]) };
    return tf.tidy(() => {
      let x = convLayer(input, get, 'conv1', 'prelu1');
      x = maxPoolCeil(x, 3, 2);
      x = convLayer(x, get, 'conv2', 'prelu2');
      x = maxPoolCeil(x, 3, 2);
      x = convLayer(x, get, 'conv3', 'prelu3');
      x = maxPoolCeil(x, 2, 2);
      x = convLayer(x, get, 'conv4', 'prelu4');
      const features = denseLayer(tf.reshape(x, [n, -1]), get, 'conv5', 'prelu5');
      const prob = faceProbability(denseLayer(features, get, 'conv6-1')) as tf.Tensor1D;
      const regression = denseLayer(features, get, 'conv6-2');
      const landmarks = denseLayer(features, get, 'conv6-3');
      return { prob, regression, landmarks };
    });
  }

  private runLNet(input: tf.Tensor4D, parameters: ParameterMap): LNetOutput {
    const get = this.getter('lnet', parameters);
    assertLNetInput(input);
    const n = input.shape[0];
    if (n === 0) return { offsets: tf.zeros([0, LNET_PATCHES, 2]) };
    return tf.tidy(() => {
      const maps: tf.Tensor4D[] = [];
      for (let k = 1; k <= LNET_PATCHES; k++) {
        let x = tf.slice(input, [0, 0, 0, 3 * (k - 1)], [-1, -1, -1, 3]);
        x = convLayer(x, get, `conv1_${k}`, `prelu1_${k}`);
        x = maxPoolCeil(x, 3, 2);
        x = convLayer(x, get, `conv2_${k}`, `prelu2_${k}`);
        x = maxPoolCeil(x, 3, 2);
        maps.push(convLayer(x, get, `conv3_${k}`, `prelu3_${k}`));
      }
      // Concatenating NHWC maps on the channel axis matches Caffe's Concat on axis 1 (C).
      const joined = tf.concat(maps, 3);
      const features = denseLayer(tf.reshape(joined, [n, -1]), get, 'fc4', 'prelu4');
      const heads: tf.Tensor2D[] = [];
      for (let k = 1; k <= LNET_PATCHES; k++) {
        heads.push(denseLayer(denseLayer(features, get, `fc4_${k}`, `prelu4_${k}`), get, `fc5_${k}`));
      }
      return { offsets: tf.stack(heads, 1) as tf.Tensor3D };
    });
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const parameters of [this.pnetParameters, this.rnetParameters, this.onetParameters, this.lnetParameters ?? new Map()]) {
      for (const tensor of parameters.values()) tensor.dispose();
    }
  }
}

function toTensors(parameters: ReadonlyMap<string, MappedParameter>): Map<string, tf.Tensor> {
  const tensors = new Map<string, tf.Tensor>();
  for (const [name, p] of parameters) tensors.set(name, tf.tensor(p.data, [...p.shape], 'float32'));
  return tensors;
}

/** The decoded caffemodel of each net, with L-Net's only when it was requested. */
export interface MtcnnCaffeModels {
  readonly pnet: CaffeNet;
  readonly rnet: CaffeNet;
  readonly onet: CaffeNet;
  readonly lnet?: CaffeNet;
}

/** Each net's parameters with TensorFlow.js shapes and layouts, by the names of the spec lists. */
export interface MtcnnParameters {
  readonly pnet: ReadonlyMap<string, MappedParameter>;
  readonly rnet: ReadonlyMap<string, MappedParameter>;
  readonly onet: ReadonlyMap<string, MappedParameter>;
  readonly lnet?: ReadonlyMap<string, MappedParameter>;
}

/**
 * Maps the blobs of decoded caffemodels onto the nets' parameters (`pnetParameterSpecs` …), with
 * L-Net's when `models.lnet` is given. Throws `CaffeBlobMismatchError` naming the file when a
 * net's blobs do not fit its layers.
 */
export function mapMtcnnParameters(models: MtcnnCaffeModels): MtcnnParameters {
  const pnet = mapCaffeBlobs(models.pnet, pnetParameterSpecs(), { ignore: UNUSED_LAYERS.pnet });
  const rnet = mapCaffeBlobs(models.rnet, rnetParameterSpecs(), { ignore: UNUSED_LAYERS.rnet });
  const onet = mapCaffeBlobs(models.onet, onetParameterSpecs(), { ignore: UNUSED_LAYERS.onet });
  const lnet = models.lnet === undefined ? undefined : mapCaffeBlobs(models.lnet, lnetParameterSpecs(), { ignore: UNUSED_LAYERS.lnet });
  return lnet === undefined ? { pnet, rnet, onet } : { pnet, rnet, onet, lnet };
}

/**
 * Builds the networks from decoded caffemodels, with L-Net when `models.lnet` is given. Throws
 * `CaffeBlobMismatchError` naming the file when a net's blobs do not fit its layers.
 */
export function createMtcnn(models: MtcnnCaffeModels): MtcnnNets {
  // Map every net before creating any tensor, so that a mismatch leaks nothing.
  const parameters = mapMtcnnParameters(models);
  const lnet = parameters.lnet;
  return new MtcnnNetworks(toTensors(parameters.pnet), toTensors(parameters.rnet), toTensors(parameters.onet), lnet === undefined ? undefined : toTensors(lnet));
}

export interface LoadMtcnnOptions {
  /** Also load L-Net from det4.caffemodel, which `landmarkRefinement: 'lnet'` needs. Default false. */
  readonly lnet?: boolean;
}

/** Returns the default MTCNN model folder, `<SPHEREFACE_MODELS>/mtcnn`. */
export function defaultMtcnnDir(): string {
  return path.join(modelsRoot(), 'mtcnn');
}

/** Reads det1–det3.caffemodel, and det4 with `{ lnet: true }`, from a folder. */
export async function readMtcnnCaffeModels(dir: string, options: LoadMtcnnOptions = {}): Promise<MtcnnCaffeModels> {
  const [pnet, rnet, onet, lnet] = await Promise.all([
    readCaffeModel(path.join(dir, MTCNN_MODEL_FILES.pnet)),
    readCaffeModel(path.join(dir, MTCNN_MODEL_FILES.rnet)),
    readCaffeModel(path.join(dir, MTCNN_MODEL_FILES.onet)),
    options.lnet === true ? readCaffeModel(path.join(dir, MTCNN_MODEL_FILES.lnet)) : undefined,
  ]);
  return lnet === undefined ? { pnet, rnet, onet } : { pnet, rnet, onet, lnet };
}

/**
 * Loads det1–det3.caffemodel, and det4 with `{ lnet: true }`, from a folder (default
 * `<SPHEREFACE_MODELS>/mtcnn`) onto TensorFlow.js. `loadMtcnnEngine` in `model/mtcnnEngine.ts`
 * also offers ONNX Runtime.
 */
export async function loadMtcnn(dir: string = defaultMtcnnDir(), options: LoadMtcnnOptions = {}): Promise<MtcnnNets> {
  return createMtcnn(await readMtcnnCaffeModels(dir, options));
}
