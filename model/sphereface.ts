/**
 * The SphereFace-N residual networks (Liu et al., "SphereFace: Deep Hypersphere Embedding for
 * Face Recognition", CVPR 2017) for N = 4, 10, 20, 36 and 64, with the Caffe initialisation and
 * the per-parameter learning-rate and weight-decay multipliers of the reference prototxt.
 * Input 112×96 BGR by default, (pixel − 127.5) × 0.0078125; output the 512-d `fc5` embedding.
 *
 * Every convolution is 3×3 with padding 1 and is followed by its own per-channel PReLU. Each of
 * the four stages (64, 128, 256, 512 channels) starts with a stride-2 conv (`convS_1`) and
 * continues with residual units of two stride-1 convs whose output is added to the unit's input,
 * with no activation after the sum. N counts the convolutions, 4 + 2 × (residual units):
 *
 * | N | residual units per stage |
 * |---|---|
 * | 4 | 0, 0, 0, 0 |
 * | 10 | 0, 1, 2, 0 |
 * | 20 | 1, 2, 4, 1 |
 * | 36 | 2, 4, 8, 2 |
 * | 64 | 3, 8, 16, 3 |
 *
 * `fc5` is a fully connected layer from the flattened last stage (512 × h4 × w4, 7 × 6 at the
 * default input) to 512, with no activation.
 *
 * Parameter names follow the Caffe layer names, which the PyTorch port of SphereFace-20 also
 * uses for its state-dict keys, so weights from either map by name:
 * - `convS_K.weight` [3, 3, in, out] (HWIO) and `convS_K.bias` [out]. Caffe trains biases only
 *   on the stride-2 convs and fixes the others at zero. Every conv keeps its bias anyway, because
 *   the PyTorch port trains all of them;
 * - `reluS_K.weight` [out], the PReLU slopes (Caffe's single PReLU blob);
 * - `fc5.weight` [512·h4·w4, 512] and `fc5.bias` [512]. The rows of `fc5.weight` follow the NHWC
 *   flatten order (y, x, c). Caffe and PyTorch flatten NCHW as (c, y, x), so their weights are
 *   permuted on import.
 */
import * as tf from '@tensorflow/tfjs-core';
import { mapStateDict, readTorchCheckpoint, stateDict, type ParameterSpec, type TorchTensor } from './pytorch.ts';
import { assertInputBatch, assertParametersMatch, type EmbeddingModel, type ParameterMap } from './types.ts';
import { uniformGenerator } from '../lib/random.ts';

export type SphereFaceDepth = 4 | 10 | 20 | 36 | 64;

export const SPHEREFACE_DEPTHS: readonly SphereFaceDepth[] = [4, 10, 20, 36, 64];

/** Input size of the SphereFace alignment template. */
export const SPHEREFACE_INPUT_SIZE = { height: 112, width: 96 } as const;
const EMBEDDING_SIZE = 512;
const STAGE_CHANNELS = [64, 128, 256, 512] as const;
/** Initial PReLU slope, Caffe's default. */
const PRELU_INITIAL_SLOPE = 0.25;
/** Standard deviation of the gaussian filler of the stride-1 convs. */
const GAUSSIAN_STD = 0.01;

// NOTE: the authors' generator script `make_spherenet.py` (github.com/wy1iu/sphereface) uses
// 3, 8, 16, 3 for SphereFace-64, as here. The SphereFace-64 prototxt released in the same
// repository has 7 units in stage 2 (62 convs, 29 residual sums), so its weights would not load.
const RESIDUAL_UNITS: Readonly<Record<SphereFaceDepth, readonly [number, number, number, number]>> = {
  4: [0, 0, 0, 0],
  10: [0, 1, 2, 0],
  20: [1, 2, 4, 1],
  36: [2, 4, 8, 2],
  64: [3, 8, 16, 3],
};

export interface SphereFaceOptions {
  readonly depth: SphereFaceDepth;
  /** Input height and width in pixels, 112×96 by default. */
  readonly inputSize?: { readonly height: number; readonly width: number };
}

export interface SphereFaceStage {
  readonly channels: number;
  /** Residual units after the stage's stride-2 conv. */
  readonly units: number;
}

/**
 * The learning-rate and weight-decay multipliers of one parameter, with Caffe's meaning: the
 * solver's base rate and decay are multiplied by them, and a parameter with `lrMult` 0 is frozen.
 */
export interface ParameterRole {
  readonly name: string;
  readonly shape: readonly number[];
  readonly lrMult: number;
  readonly decayMult: number;
}

/** Initial parameter values in TensorFlow.js layout, by parameter name. */
export type ParameterValues = Map<string, { readonly shape: readonly number[]; readonly data: Float32Array }>;

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

/** The layers of one network configuration and the shape that `fc5` flattens. */
interface Architecture {
  readonly depth: SphereFaceDepth;
  readonly inputSize: { readonly height: number; readonly width: number };
  readonly stages: readonly Stage[];
  readonly fc5Input: { readonly channels: number; readonly height: number; readonly width: number };
}

/** Returns the channels and residual units of the four stages of SphereFace-`depth`. */
export function sphereFaceStages(depth: SphereFaceDepth): SphereFaceStage[] {
  assertDepth(depth);
  return RESIDUAL_UNITS[depth].map((units, index) => ({ channels: STAGE_CHANNELS[index] ?? 0, units }));
}

function assertDepth(depth: unknown): asserts depth is SphereFaceDepth {
  if (!(SPHEREFACE_DEPTHS as readonly unknown[]).includes(depth)) {
    throw new RangeError(`invalid SphereFace depth ${String(depth)}: expected one of ${SPHEREFACE_DEPTHS.join(', ')}`);
  }
}

/**
 * Returns the output size of a 3×3 stride-2 conv with padding 1, by Caffe's floor rule:
 * ⌊(size + 2 − 3) / 2⌋ + 1.
 */
function downsampledSize(size: number): number {
  return Math.floor((size - 1) / 2) + 1;
}

function resolveInputSize(options: SphereFaceOptions): { height: number; width: number } {
  const size = options.inputSize ?? SPHEREFACE_INPUT_SIZE;
  for (const [axis, value] of [['height', size.height], ['width', size.width]] as const) {
    // Any positive integer survives the four stride-2 convs with at least one pixel.
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(`invalid SphereFace input ${axis} ${String(value)}: expected a positive integer number of pixels`);
    }
  }
  return { height: size.height, width: size.width };
}

function architectureOf(options: SphereFaceOptions): Architecture {
  assertDepth(options.depth);
  const inputSize = resolveInputSize(options);
  const stages: Stage[] = [];
  let inChannels = 3;
  let { height, width } = inputSize;
  sphereFaceStages(options.depth).forEach((stage, index) => {
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
    height = downsampledSize(height);
    width = downsampledSize(width);
  });
  return { depth: options.depth, inputSize, stages, fc5Input: { channels: inChannels, height, width } };
}

function convLayers(architecture: Architecture): ConvLayer[] {
  return architecture.stages.flatMap((stage) => [stage.downsample, ...stage.units.flat()]);
}

function fc5InFeatures(architecture: Architecture): number {
  const { channels, height, width } = architecture.fc5Input;
  return channels * height * width;
}

/**
 * Lists every parameter with its TensorFlow.js shape and PyTorch layout, layer by layer in
 * network order: conv weight, conv bias, PReLU slopes, then `fc5.weight` and `fc5.bias`.
 * @throws RangeError for an unknown depth or an input size that is not a positive integer.
 */
export function sphereFaceParameterSpecs(options: SphereFaceOptions): ParameterSpec[] {
  return parameterSpecsOf(architectureOf(options));
}

function parameterSpecsOf(architecture: Architecture): ParameterSpec[] {
  const specs: ParameterSpec[] = [];
  for (const layer of convLayers(architecture)) {
    specs.push({ name: `${layer.name}.weight`, shape: [3, 3, layer.inChannels, layer.outChannels], layout: 'conv2d' });
    specs.push({ name: `${layer.name}.bias`, shape: [layer.outChannels], layout: 'vector' });
    specs.push({ name: `${layer.activation}.weight`, shape: [layer.outChannels], layout: 'vector' });
  }
  specs.push({ name: 'fc5.weight', shape: [fc5InFeatures(architecture), EMBEDDING_SIZE], layout: { kind: 'linear-chw', ...architecture.fc5Input } });
  specs.push({ name: 'fc5.bias', shape: [EMBEDDING_SIZE], layout: 'vector' });
  return specs;
}

/**
 * Lists the Caffe learning-rate and weight-decay multipliers of every parameter, in the order of
 * `sphereFaceParameterSpecs`:
 * - conv and `fc5` weights: lr 1, decay 1;
 * - PReLU slopes: lr 1, decay 1, because the prototxt gives PReLU no `param` block and Caffe's
 *   defaults apply, so the slopes are weight-decayed;
 * - stride-2 conv biases and `fc5.bias`: lr 2, decay 0;
 * - stride-1 conv biases: lr 0, decay 0. They stay at their initial zero, so these convs
 *   effectively have no bias. They are kept as parameters because PyTorch state dicts carry them.
 */
export function sphereFaceParameterRoles(options: SphereFaceOptions): ParameterRole[] {
  const architecture = architectureOf(options);
  const strideOf = new Map(convLayers(architecture).map((layer) => [`${layer.name}.bias`, layer.stride]));
  return parameterSpecsOf(architecture).map((spec) => {
    const stride = strideOf.get(spec.name);
    if (stride === 1) return { name: spec.name, shape: spec.shape, lrMult: 0, decayMult: 0 };
    if (stride === 2 || spec.name === 'fc5.bias') return { name: spec.name, shape: spec.shape, lrMult: 2, decayMult: 0 };
    return { name: spec.name, shape: spec.shape, lrMult: 1, decayMult: 1 };
  });
}

/**
 * Applies one SphereFace conv layer: 3×3 convolution with symmetric zero padding 1, bias, then
 * PReLU with per-channel `slopes`. `filter` is HWIO.
 */
export function convPrelu(x: tf.Tensor4D, filter: tf.Tensor4D, bias: tf.Tensor1D, slopes: tf.Tensor1D, stride: number): tf.Tensor4D {
  // Explicit padding 1: TensorFlow's 'same' pads stride-2 convs on even sizes only at the bottom
  // and right, which is not what Caffe does. Under a gradient tape, tfjs-core 4.22 runs the fused
  // op as separate conv2d, add and prelu ops, which all have gradients.
  return tf.fused.conv2d({ x, filter, strides: stride, pad: 1, bias, activation: 'prelu', preluActivationWeights: slopes });
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
 * 0.25. The same seed gives the same values. They do not reproduce Caffe's random stream.
 * @throws RangeError for an unknown depth or an input size that is not a positive integer.
 */
export function initialSphereFaceParameters(options: SphereFaceOptions, seed: number): ParameterValues {
  const architecture = architectureOf(options);
  const uniform = uniformGenerator(seed);
  const strideOf = new Map(convLayers(architecture).map((layer) => [`${layer.name}.weight`, layer.stride]));
  const result: ParameterValues = new Map();
  // The values are drawn in spec order from one stream, so adding a layer changes every later value.
  for (const spec of parameterSpecsOf(architecture)) {
    const length = spec.shape.reduce((a, b) => a * b, 1);
    const stride = strideOf.get(spec.name);
    let data: Float32Array;
    if (spec.name === 'fc5.weight') {
      data = xavierFill(length, fc5InFeatures(architecture), uniform);
    } else if (stride === 2) {
      const [kh = 0, kw = 0, inChannels = 0] = spec.shape;
      data = xavierFill(length, kh * kw * inChannels, uniform);
    } else if (stride === 1) {
      data = gaussianFill(length, GAUSSIAN_STD, uniform);
    } else if (spec.name.startsWith('relu')) {
      data = new Float32Array(length).fill(PRELU_INITIAL_SLOPE);
    } else {
      data = new Float32Array(length);
    }
    result.set(spec.name, { shape: spec.shape, data });
  }
  return result;
}

/** Wraps parameter values in new tensors, which the caller owns. */
export function parameterTensors(values: ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float32Array }>): Map<string, tf.Tensor> {
  const parameters = new Map<string, tf.Tensor>();
  for (const [name, p] of values) parameters.set(name, tf.tensor(p.data, [...p.shape], 'float32'));
  return parameters;
}

interface LayerTensors {
  readonly filter: tf.Tensor4D;
  readonly bias: tf.Tensor1D;
  readonly slopes: tf.Tensor1D;
}

export class SphereFace implements EmbeddingModel {
  /** Registry name, `sphereface${depth}`. */
  readonly name: string;
  readonly depth: SphereFaceDepth;
  readonly inputSize: { readonly height: number; readonly width: number };
  readonly channelOrder = 'BGR' as const;
  readonly normalization = { mean: 127.5, scale: 0.0078125 } as const;
  readonly embeddingSize = EMBEDDING_SIZE;

  /**
   * Parameters by name, in the layouts `sphereFaceParameterSpecs` lists. They may be
   * `tf.Variable`s, and `predict` is differentiable with respect to them once the gradient
   * functions are registered: the Node bundle of tfjs-core 4.22 has none, and importing
   * `@tensorflow/tfjs` (as `wasmKernels.ts` does) registers them.
   */
  readonly parameters: ParameterMap;
  private readonly architecture: Architecture;
  private disposed = false;

  /**
   * Takes ownership of `parameters`, which must hold exactly the tensors that
   * `sphereFaceParameterSpecs(options)` lists.
   * @throws RangeError for invalid options, Error for missing, extra or misshapen parameters.
   */
  constructor(parameters: ParameterMap, options: SphereFaceOptions) {
    this.architecture = architectureOf(options);
    this.depth = options.depth;
    this.name = `sphereface${options.depth}`;
    this.inputSize = this.architecture.inputSize;
    assertParametersMatch(`SphereFace-${options.depth}`, parameters, parameterSpecsOf(this.architecture));
    this.parameters = parameters;
  }

  private layerTensors(layer: ConvLayer): LayerTensors {
    const get = (name: string) => this.parameters.get(name) as tf.Tensor;
    return {
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
    for (const stage of this.architecture.stages) {
      x = apply(x, stage.downsample);
      for (const [first, second] of stage.units) {
        const y = apply(apply(x, first), second);
        x = tf.add(x, y);
        record(second.name.replace('conv', 'res'), x);
      }
    }
    const flat = tf.reshape(x, [input.shape[0], fc5InFeatures(this.architecture)]) as tf.Tensor2D;
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
    if (this.disposed) throw new Error(`${this.name}: used after dispose()`);
    assertInputBatch(this, input.shape);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const tensor of this.parameters.values()) tensor.dispose();
  }
}

/**
 * Builds a freshly initialised network; see `initialSphereFaceParameters`.
 * @throws RangeError for an unknown depth or an input size that is not a positive integer.
 */
export function randomSphereFace(options: SphereFaceOptions, seed = 0): SphereFace {
  return new SphereFace(parameterTensors(initialSphereFaceParameters(options, seed)), options);
}

/**
 * Keys of a PyTorch SphereFace state dict that inference does not use: the A-Softmax
 * classifier `fc6` exists only in training.
 */
export const SPHEREFACE_TRAINING_ONLY_KEYS = ['fc6.'] as const;

/**
 * Converts a PyTorch state dict with the reference layer names (`conv1_1.weight`,
 * `relu1_1.weight`, …, `fc5.weight`) into parameter values: conv weights to HWIO and
 * `fc5.weight` to HWC row order. `fc6.*` is ignored.
 * @throws StateDictMismatchError naming every missing, extra or misshapen tensor.
 */
export function sphereFaceParametersFromState(state: ReadonlyMap<string, TorchTensor>, options: SphereFaceOptions, source: string): ParameterValues {
  return mapStateDict(state, sphereFaceParameterSpecs(options), { source, ignore: SPHEREFACE_TRAINING_ONLY_KEYS });
}

/**
 * Builds SphereFace-`options.depth` from a PyTorch state dict; see `sphereFaceParametersFromState`.
 * @throws StateDictMismatchError when the state dict does not fit the network.
 */
export function createSphereFace(state: ReadonlyMap<string, TorchTensor>, options: SphereFaceOptions, source = `SphereFace-${options.depth} state dict`): SphereFace {
  return new SphereFace(parameterTensors(sphereFaceParametersFromState(state, options, source)), options);
}

/** Reads a PyTorch checkpoint with a SphereFace state dict; see `createSphereFace`. */
export async function loadSphereFace(checkpointPath: string, options: SphereFaceOptions): Promise<SphereFace> {
  const checkpoint = await readTorchCheckpoint(checkpointPath);
  return createSphereFace(stateDict(checkpoint), options, checkpointPath);
}
