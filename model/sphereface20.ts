/**
 * SphereFace-20 (Liu et al., CVPR 2017): the 20-layer residual network of the SphereFace
 * reference model, as in its Caffe prototxt. Input 112×96 BGR, (pixel − 127.5) × 0.0078125;
 * output the 512-d `fc5` embedding.
 *
 * Every convolution is 3×3 with padding 1 and is followed by its own per-channel PReLU. Each of
 * the four stages starts with a stride-2 conv (`convS_1`) and continues with residual units of
 * two stride-1 convs whose output is added to the unit's input, with no activation after the sum:
 *
 * | stage | first conv | units | channels | output H×W |
 * |---|---|---|---|---|
 * | 1 | conv1_1 | conv1_2/1_3 | 64 | 56×48 |
 * | 2 | conv2_1 | conv2_2/2_3, conv2_4/2_5 | 128 | 28×24 |
 * | 3 | conv3_1 | conv3_2/3_3 … conv3_8/3_9 | 256 | 14×12 |
 * | 4 | conv4_1 | conv4_2/4_3 | 512 | 7×6 |
 *
 * then `fc5`, a fully connected layer 7·6·512 = 21504 → 512 with no activation.
 *
 * Parameter names follow the PyTorch port of the model, whose state-dict keys match the Caffe
 * layer names, so weights from either map by name:
 * - `convS_K.weight` [3, 3, in, out] (HWIO) and `convS_K.bias` [out]. Caffe trains biases only
 *   on the stride-2 convs and fixes the others at zero. Every conv keeps its bias anyway, because
 *   the PyTorch port trains all of them;
 * - `reluS_K.weight` [out], the PReLU slopes (Caffe's single PReLU blob);
 * - `fc5.weight` [21504, 512] and `fc5.bias` [512]. The rows of `fc5.weight` follow the NHWC
 *   flatten order (y, x, c); Caffe and PyTorch flatten NCHW as (c, y, x), so their weights go
 *   through `fc5WeightToHwc` on import.
 */
import * as tf from '@tensorflow/tfjs-core';
import { linearChwToHwc, mapStateDict, readTorchCheckpoint, stateDict, type ParameterSpec, type TorchTensor } from './pytorch.ts';
import { assertParametersMatch, assertInputBatch, type EmbeddingModel, type ParameterMap } from './types.ts';

const INPUT_HEIGHT = 112;
const INPUT_WIDTH = 96;
const EMBEDDING_SIZE = 512;
/** Spatial size of the last stage's output, which `fc5` flattens. */
export const FC5_INPUT = { channels: 512, height: 7, width: 6 } as const;
const FC5_IN_FEATURES = FC5_INPUT.channels * FC5_INPUT.height * FC5_INPUT.width;
/** Initial PReLU slope, Caffe's default. */
const PRELU_INITIAL_SLOPE = 0.25;

export interface SphereFaceStage {
  readonly channels: number;
  /** Residual units after the stage's stride-2 conv. */
  readonly units: number;
}

/** The four stages of SphereFace-20. */
export const SPHEREFACE20_STAGES: readonly SphereFaceStage[] = [
  { channels: 64, units: 1 },
  { channels: 128, units: 2 },
  { channels: 256, units: 4 },
  { channels: 512, units: 1 },
];

interface ConvLayer {
  /** Caffe layer name, e.g. `conv2_3`. */
  readonly name: string;
  /** PReLU layer name, e.g. `relu2_3`. */
  readonly activation: string;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly stride: 1 | 2;
}

interface Stage {
  readonly downsample: ConvLayer;
  /** Pairs of convs. Each pair's output is added to its input, and the sum is named `resS_K` after the second conv. */
  readonly units: ReadonlyArray<readonly [ConvLayer, ConvLayer]>;
}

function buildStages(): Stage[] {
  const stages: Stage[] = [];
  let inChannels = 3;
  SPHEREFACE20_STAGES.forEach((stage, index) => {
    const s = index + 1;
    const layer = (k: number, stride: 1 | 2, input: number): ConvLayer => ({
      name: `conv${s}_${k}`,
      activation: `relu${s}_${k}`,
      inChannels: input,
      outChannels: stage.channels,
      stride,
    });
    const units: Array<readonly [ConvLayer, ConvLayer]> = [];
    for (let u = 0; u < stage.units; u++) units.push([layer(2 * u + 2, 1, stage.channels), layer(2 * u + 3, 1, stage.channels)]);
    stages.push({ downsample: layer(1, 2, inChannels), units });
    inChannels = stage.channels;
  });
  return stages;
}

const STAGES = buildStages();

function convLayers(): ConvLayer[] {
  return STAGES.flatMap((stage) => [stage.downsample, ...stage.units.flat()]);
}

/**
 * Lists every parameter with its TensorFlow.js shape and PyTorch layout, layer by layer in
 * network order: conv weight, conv bias, PReLU slopes, then `fc5.weight` and `fc5.bias`.
 */
export function sphereFace20ParameterSpecs(): ParameterSpec[] {
  const specs: ParameterSpec[] = [];
  for (const layer of convLayers()) {
    specs.push({ name: `${layer.name}.weight`, shape: [3, 3, layer.inChannels, layer.outChannels], layout: 'conv2d' });
    specs.push({ name: `${layer.name}.bias`, shape: [layer.outChannels], layout: 'vector' });
    specs.push({ name: `${layer.activation}.weight`, shape: [layer.outChannels], layout: 'vector' });
  }
  specs.push({ name: 'fc5.weight', shape: [FC5_IN_FEATURES, EMBEDDING_SIZE], layout: { kind: 'linear-chw', ...FC5_INPUT } });
  specs.push({ name: 'fc5.bias', shape: [EMBEDDING_SIZE], layout: 'vector' });
  return specs;
}

/**
 * Converts a Caffe or PyTorch `fc5` weight, [512 out, 21504 in] with inputs in CHW order, into
 * this network's [21504, 512] with rows in HWC order.
 */
export function fc5WeightToHwc(weight: Float32Array): Float32Array {
  return linearChwToHwc(weight, EMBEDDING_SIZE, FC5_INPUT.channels, FC5_INPUT.height, FC5_INPUT.width);
}

/**
 * Applies one SphereFace conv layer: 3×3 convolution with symmetric zero padding 1, bias, then
 * PReLU with per-channel `slopes`. `filter` is HWIO.
 */
export function convPrelu(x: tf.Tensor4D, filter: tf.Tensor4D, bias: tf.Tensor1D, slopes: tf.Tensor1D, stride: number): tf.Tensor4D {
  // Explicit padding 1: TensorFlow's 'same' pads stride-2 convs on even sizes only at the bottom
  // and right, which is not what Caffe does.
  return tf.fused.conv2d({ x, filter, strides: stride, pad: 1, bias, activation: 'prelu', preluActivationWeights: slopes });
}

/** A deterministic generator of uniform numbers in [0, 1) (mulberry32), so random initialisation is reproducible. */
function uniformGenerator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussianFill(length: number, std: number, uniform: () => number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i += 2) {
    // Box–Muller: two independent normals from two uniforms; 1 − u keeps the log finite.
    const radius = Math.sqrt(-2 * Math.log(1 - uniform())) * std;
    const angle = 2 * Math.PI * uniform();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < length) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}

/** Caffe's xavier filler: uniform in ±√(3 / fan_in). */
function xavierFill(length: number, fanIn: number, uniform: () => number): Float32Array {
  const limit = Math.sqrt(3 / fanIn);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = (2 * uniform() - 1) * limit;
  return out;
}

/**
 * Draws the initial parameters the Caffe prototxt specifies: xavier (fan-in) weights for the
 * stride-2 convs and `fc5`, gaussian std 0.01 for the stride-1 convs, zero biases, PReLU slopes
 * 0.25. The same seed gives the same values; they do not reproduce Caffe's random stream.
 */
export function initialSphereFace20Parameters(seed: number): Map<string, { readonly shape: readonly number[]; readonly data: Float32Array }> {
  const uniform = uniformGenerator(seed);
  const result = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  for (const spec of sphereFace20ParameterSpecs()) {
    const length = spec.shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (spec.name === 'fc5.weight') {
      data = xavierFill(length, FC5_IN_FEATURES, uniform);
    } else if (spec.name.endsWith('.bias')) {
      data = new Float32Array(length);
    } else if (spec.name.startsWith('relu')) {
      data = new Float32Array(length).fill(PRELU_INITIAL_SLOPE);
    } else {
      const [, , inChannels = 0] = spec.shape;
      data = spec.name.endsWith('_1.weight') ? xavierFill(length, inChannels * 9, uniform) : gaussianFill(length, 0.01, uniform);
    }
    result.set(spec.name, { shape: spec.shape, data });
  }
  return result;
}

interface LayerTensors {
  readonly layer: ConvLayer;
  readonly filter: tf.Tensor4D;
  readonly bias: tf.Tensor1D;
  readonly slopes: tf.Tensor1D;
}

export class SphereFace20 implements EmbeddingModel {
  readonly name = 'sphereface20';
  readonly inputSize = { height: INPUT_HEIGHT, width: INPUT_WIDTH } as const;
  readonly channelOrder = 'BGR' as const;
  readonly normalization = { mean: 127.5, scale: 0.0078125 } as const;
  readonly embeddingSize = EMBEDDING_SIZE;

  /** Parameters by name, in the layouts `sphereFace20ParameterSpecs` lists. */
  readonly parameters: ParameterMap;
  private disposed = false;

  /** Takes ownership of `parameters`, which must hold exactly the tensors `sphereFace20ParameterSpecs` lists. */
  constructor(parameters: ParameterMap) {
    assertParametersMatch('SphereFace-20', parameters, sphereFace20ParameterSpecs());
    this.parameters = parameters;
  }

  private layerTensors(layer: ConvLayer): LayerTensors {
    const get = (name: string) => this.parameters.get(name) as tf.Tensor;
    return {
      layer,
      filter: get(`${layer.name}.weight`) as tf.Tensor4D,
      bias: get(`${layer.name}.bias`) as tf.Tensor1D,
      slopes: get(`${layer.activation}.weight`) as tf.Tensor1D,
    };
  }

  /**
   * Runs the network, handing every top blob to `record` under its Caffe name: `convS_K` after
   * its PReLU (Caffe's PReLU is in place), `resS_K` after each residual sum, and `fc5`.
   */
  private run(input: tf.Tensor4D, record: (name: string, value: tf.Tensor) => void): tf.Tensor2D {
    const apply = (x: tf.Tensor4D, layer: ConvLayer): tf.Tensor4D => {
      const t = this.layerTensors(layer);
      const y = convPrelu(x, t.filter, t.bias, t.slopes, layer.stride);
      record(layer.name, y);
      return y;
    };

    let x = input;
    for (const stage of STAGES) {
      x = apply(x, stage.downsample);
      for (const [first, second] of stage.units) {
        const y = apply(apply(x, first), second);
        x = tf.add(x, y);
        record(second.name.replace('conv', 'res'), x);
      }
    }
    const flat = tf.reshape(x, [input.shape[0], FC5_IN_FEATURES]) as tf.Tensor2D;
    const fc5 = tf.fused.matMul({
      a: flat,
      b: this.parameters.get('fc5.weight') as tf.Tensor2D,
      bias: this.parameters.get('fc5.bias') as tf.Tensor1D,
    }) as tf.Tensor2D;
    record('fc5', fc5);
    return fc5;
  }

  predict(input: tf.Tensor4D): tf.Tensor2D {
    this.assertUsable(input);
    return tf.tidy(() => this.run(input, () => {}));
  }

  /**
   * Runs the network and returns every top blob by Caffe name (`conv1_1`, `res1_3`, …, `fc5`),
   * for comparing layer outputs with a reference. The caller disposes the returned tensors.
   */
  activations(input: tf.Tensor4D): Map<string, tf.Tensor> {
    this.assertUsable(input);
    const blobs = new Map<string, tf.Tensor>();
    tf.tidy(() => {
      this.run(input, (name, value) => blobs.set(name, tf.keep(value)));
    });
    return blobs;
  }

  private assertUsable(input: tf.Tensor4D): void {
    if (this.disposed) throw new Error('sphereface20: used after dispose()');
    assertInputBatch(this, input.shape);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const tensor of this.parameters.values()) tensor.dispose();
  }
}

function toTensors(values: ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float32Array }>): Map<string, tf.Tensor> {
  const parameters = new Map<string, tf.Tensor>();
  for (const [name, p] of values) parameters.set(name, tf.tensor(p.data, [...p.shape], 'float32'));
  return parameters;
}

/** Builds a freshly initialised network; see `initialSphereFace20Parameters`. */
export function randomSphereFace20(seed = 0): SphereFace20 {
  return new SphereFace20(toTensors(initialSphereFace20Parameters(seed)));
}

/**
 * Keys of a PyTorch SphereFace state dict that inference does not use: the A-Softmax
 * classifier `fc6` exists only in training.
 */
export const SPHEREFACE20_TRAINING_ONLY_KEYS = ['fc6.'] as const;

/**
 * Builds the network from a PyTorch state dict with the reference layer names (`conv1_1.weight`,
 * `relu1_1.weight`, …, `fc5.weight`), converting conv weights to HWIO and `fc5.weight` to HWC
 * row order. `fc6.*` is ignored; any other missing, extra or misshapen tensor throws
 * `StateDictMismatchError`.
 */
export function createSphereFace20(state: ReadonlyMap<string, TorchTensor>, source = 'SphereFace-20 state dict'): SphereFace20 {
  const mapped = mapStateDict(state, sphereFace20ParameterSpecs(), { source, ignore: SPHEREFACE20_TRAINING_ONLY_KEYS });
  return new SphereFace20(toTensors(mapped));
}

/** Reads a PyTorch checkpoint with a SphereFace-20 state dict; see `createSphereFace20`. */
export async function loadSphereFace20(checkpointPath: string): Promise<SphereFace20> {
  const checkpoint = await readTorchCheckpoint(checkpointPath);
  return createSphereFace20(stateDict(checkpoint), checkpointPath);
}
