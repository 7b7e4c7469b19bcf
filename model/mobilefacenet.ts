/**
 * MobileFaceNet (Chen et al., 2018) in the variant trained on CASIA-WebFace at 112×96, with a
 * 128-d embedding: RGB input normalised as (pixel − 127.5) / 128.
 *
 * Layers, with the PyTorch state-dict prefixes that name them:
 *
 * | prefix | operation | output (H×W×C) |
 * |---|---|---|
 * | `conv1` | 3×3 conv, stride 2, 3→64, BN, PReLU | 56×48×64 |
 * | `dw_conv1` | 3×3 depthwise, stride 1, BN, PReLU | 56×48×64 |
 * | `blocks.0`…`blocks.14` | inverted-residual bottlenecks, see `BOTTLENECK_STAGES` | 7×6×128 |
 * | `conv2` | 1×1 conv 128→512, BN, PReLU | 7×6×512 |
 * | `linear7` | 7×6 depthwise conv, valid padding, BN, no activation | 1×1×512 |
 * | `linear1` | 1×1 conv 512→128, BN, no activation | 128 |
 *
 * A bottleneck `blocks.K` is `conv.0` 1×1 expansion conv, `conv.1` BN, `conv.2` PReLU, `conv.3` 3×3
 * depthwise conv, `conv.4` BN, `conv.5` PReLU, `conv.6` 1×1 projection conv, `conv.7` BN, plus the
 * input when the stride is 1 and the channel count is unchanged. No conv has a bias.
 *
 * Parameters keep the PyTorch names (`conv1.conv.weight`, `conv1.bn.running_var`,
 * `blocks.0.conv.2.weight`, …) in TensorFlow.js layouts (conv HWIO, depthwise [kh, kw, C, 1]).
 * For inference each BatchNorm is folded into the conv before it, once, at construction.
 */
import * as tf from '@tensorflow/tfjs-core';
import { mapStateDict, readTorchCheckpoint, stateDict, type ParameterSpec, type TorchTensor } from './pytorch.ts';
import { assertParametersMatch, assertInputBatch, type EmbeddingModel, type ParameterMap } from './types.ts';

/** PyTorch's BatchNorm2d default epsilon, which the checkpoint was trained with. */
export const BATCH_NORM_EPSILON = 1e-5;

export interface BottleneckStage {
  /** Expansion factor t: the 1×1 expansion conv outputs t × input channels. */
  readonly expansion: number;
  readonly outChannels: number;
  readonly repeats: number;
  /** Stride of the first unit of the stage; the others have stride 1. */
  readonly stride: number;
}

/** The bottleneck stages [t, c, n, s] of the CASIA-WebFace model, applied in order to `blocks.0` … `blocks.14`. */
export const BOTTLENECK_STAGES: readonly BottleneckStage[] = [
  { expansion: 2, outChannels: 64, repeats: 5, stride: 2 },
  { expansion: 4, outChannels: 128, repeats: 1, stride: 2 },
  { expansion: 2, outChannels: 128, repeats: 6, stride: 1 },
  { expansion: 4, outChannels: 128, repeats: 1, stride: 2 },
  { expansion: 2, outChannels: 128, repeats: 2, stride: 1 },
];

const INPUT_HEIGHT = 112;
const INPUT_WIDTH = 96;
const STEM_CHANNELS = 64;
const CONV2_CHANNELS = 512;
const EMBEDDING_SIZE = 128;

type ConvKind = 'conv2d' | 'depthwise';

/** One conv + BN (+ PReLU) unit of the network, before folding. */
interface ConvUnit {
  readonly kind: ConvKind;
  /** State-dict names of the conv weight, the BN prefix (`.weight`, `.bias`, `.running_mean`, `.running_var`) and the PReLU slope, if any. */
  readonly weight: string;
  readonly batchNorm: string;
  readonly prelu: string | undefined;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernel: readonly [height: number, width: number];
  readonly stride: number;
  /** Zero padding on every side, in pixels (PyTorch `padding`). */
  readonly padding: number;
}

interface Bottleneck {
  readonly units: readonly [ConvUnit, ConvUnit, ConvUnit];
  readonly residual: boolean;
}

interface Architecture {
  readonly stem: readonly ConvUnit[];
  readonly bottlenecks: readonly Bottleneck[];
  readonly head: readonly ConvUnit[];
}

function unit(kind: ConvKind, prefix: string, names: { conv: string; bn: string; prelu?: string }, shape: Omit<ConvUnit, 'kind' | 'weight' | 'batchNorm' | 'prelu'>): ConvUnit {
  return {
    kind,
    weight: `${prefix}.${names.conv}.weight`,
    batchNorm: `${prefix}.${names.bn}`,
    prelu: names.prelu === undefined ? undefined : `${prefix}.${names.prelu}.weight`,
    ...shape,
  };
}

function buildArchitecture(): Architecture {
  const named = { conv: 'conv', bn: 'bn', prelu: 'prelu' };
  const stem = [
    unit('conv2d', 'conv1', named, { inChannels: 3, outChannels: STEM_CHANNELS, kernel: [3, 3], stride: 2, padding: 1 }),
    unit('depthwise', 'dw_conv1', named, { inChannels: STEM_CHANNELS, outChannels: STEM_CHANNELS, kernel: [3, 3], stride: 1, padding: 1 }),
  ];

  const bottlenecks: Bottleneck[] = [];
  let channels = STEM_CHANNELS;
  for (const stage of BOTTLENECK_STAGES) {
    for (let r = 0; r < stage.repeats; r++) {
      const prefix = `blocks.${bottlenecks.length}`;
      const stride = r === 0 ? stage.stride : 1;
      const hidden = channels * stage.expansion;
      bottlenecks.push({
        units: [
          unit('conv2d', prefix, { conv: 'conv.0', bn: 'conv.1', prelu: 'conv.2' }, { inChannels: channels, outChannels: hidden, kernel: [1, 1], stride: 1, padding: 0 }),
          unit('depthwise', prefix, { conv: 'conv.3', bn: 'conv.4', prelu: 'conv.5' }, { inChannels: hidden, outChannels: hidden, kernel: [3, 3], stride, padding: 1 }),
          unit('conv2d', prefix, { conv: 'conv.6', bn: 'conv.7' }, { inChannels: hidden, outChannels: stage.outChannels, kernel: [1, 1], stride: 1, padding: 0 }),
        ],
        residual: stride === 1 && channels === stage.outChannels,
      });
      channels = stage.outChannels;
    }
  }

  const head = [
    unit('conv2d', 'conv2', named, { inChannels: channels, outChannels: CONV2_CHANNELS, kernel: [1, 1], stride: 1, padding: 0 }),
    // linear7 spans the whole 7×6 map, so it reduces it to 1×1 (a global depthwise conv).
    unit('depthwise', 'linear7', { conv: 'conv', bn: 'bn' }, { inChannels: CONV2_CHANNELS, outChannels: CONV2_CHANNELS, kernel: [7, 6], stride: 1, padding: 0 }),
    unit('conv2d', 'linear1', { conv: 'conv', bn: 'bn' }, { inChannels: CONV2_CHANNELS, outChannels: EMBEDDING_SIZE, kernel: [1, 1], stride: 1, padding: 0 }),
  ];
  return { stem, bottlenecks, head };
}

const ARCHITECTURE = buildArchitecture();

function allUnits(architecture: Architecture): ConvUnit[] {
  return [...architecture.stem, ...architecture.bottlenecks.flatMap((b) => b.units), ...architecture.head];
}

/**
 * Lists every parameter of the network with its TensorFlow.js shape and PyTorch layout, in
 * state-dict order. BatchNorm's `num_batches_tracked` counters are not parameters.
 */
export function mobileFaceNetParameterSpecs(): ParameterSpec[] {
  const specs: ParameterSpec[] = [];
  for (const u of allUnits(ARCHITECTURE)) {
    const [kh, kw] = u.kernel;
    specs.push(
      u.kind === 'conv2d'
        ? { name: u.weight, shape: [kh, kw, u.inChannels, u.outChannels], layout: 'conv2d' }
        : { name: u.weight, shape: [kh, kw, u.inChannels, 1], layout: 'depthwise' },
    );
    for (const field of ['weight', 'bias', 'running_mean', 'running_var']) {
      specs.push({ name: `${u.batchNorm}.${field}`, shape: [u.outChannels], layout: 'vector' });
    }
    if (u.prelu !== undefined) specs.push({ name: u.prelu, shape: [u.outChannels], layout: 'vector' });
  }
  return specs;
}

/**
 * Convolves an NHWC batch with an HWIO filter and PyTorch's symmetric zero padding. TensorFlow's
 * 'same' padding is not used because for stride 2 on an even size it pads only the bottom and
 * right, one pixel off from PyTorch.
 */
export function convolve(x: tf.Tensor4D, filter: tf.Tensor4D, stride: number, padding: number): tf.Tensor4D {
  return tf.conv2d(x, filter, stride, padding === 0 ? 'valid' : padding);
}

/** A conv unit with BatchNorm folded into its filter and bias. */
interface FoldedUnit {
  readonly kind: ConvKind;
  readonly filter: tf.Tensor4D;
  readonly bias: tf.Tensor1D;
  readonly prelu: tf.Tensor1D | undefined;
  readonly stride: number;
  readonly padding: number;
}

/**
 * Folds inference-mode BatchNorm into the preceding conv: with s = γ / √(σ² + ε), the filter's
 * output channel k is scaled by s_k and the bias becomes β − μ·s.
 */
function foldUnit(u: ConvUnit, parameters: ParameterMap): FoldedUnit {
  const get = (name: string) => parameters.get(name) as tf.Tensor;
  return tf.tidy(() => {
    const scale = tf.div(get(`${u.batchNorm}.weight`), tf.sqrt(tf.add(get(`${u.batchNorm}.running_var`), BATCH_NORM_EPSILON))) as tf.Tensor1D;
    const filterScale = u.kind === 'conv2d' ? scale : tf.reshape(scale, [1, 1, u.outChannels, 1]);
    const filter = tf.keep(tf.mul(get(u.weight), filterScale) as tf.Tensor4D);
    const bias = tf.keep(tf.sub(get(`${u.batchNorm}.bias`), tf.mul(get(`${u.batchNorm}.running_mean`), scale)) as tf.Tensor1D);
    const prelu = u.prelu === undefined ? undefined : tf.keep(tf.clone(get(u.prelu)) as tf.Tensor1D);
    return { kind: u.kind, filter, bias, prelu, stride: u.stride, padding: u.padding };
  });
}

function applyUnit(x: tf.Tensor4D, u: FoldedUnit): tf.Tensor4D {
  const common = {
    x,
    filter: u.filter,
    strides: u.stride,
    pad: u.padding === 0 ? ('valid' as const) : u.padding,
    bias: u.bias,
    activation: u.prelu === undefined ? ('linear' as const) : ('prelu' as const),
    preluActivationWeights: u.prelu,
  };
  return u.kind === 'conv2d' ? tf.fused.conv2d(common) : tf.fused.depthwiseConv2d(common);
}

export class MobileFaceNet implements EmbeddingModel {
  readonly name = 'mobilefacenet';
  readonly inputSize = { height: INPUT_HEIGHT, width: INPUT_WIDTH } as const;
  readonly channelOrder = 'RGB' as const;
  readonly normalization = { mean: 127.5, scale: 1 / 128 } as const;
  readonly embeddingSize = EMBEDDING_SIZE;

  /** The trained parameters as given, BatchNorm not folded, by PyTorch name; see `mobileFaceNetParameterSpecs`. */
  readonly parameters: ParameterMap;

  private readonly stem: readonly FoldedUnit[];
  private readonly bottlenecks: ReadonlyArray<{ readonly units: readonly FoldedUnit[]; readonly residual: boolean }>;
  private readonly head: readonly FoldedUnit[];
  private disposed = false;

  /**
   * Takes ownership of `parameters`, which must hold exactly the tensors that
   * `mobileFaceNetParameterSpecs` lists, with those shapes.
   */
  constructor(parameters: ParameterMap) {
    assertParametersMatch('MobileFaceNet', parameters, mobileFaceNetParameterSpecs());

    this.parameters = parameters;
    this.stem = ARCHITECTURE.stem.map((u) => foldUnit(u, parameters));
    this.bottlenecks = ARCHITECTURE.bottlenecks.map((b) => ({ units: b.units.map((u) => foldUnit(u, parameters)), residual: b.residual }));
    this.head = ARCHITECTURE.head.map((u) => foldUnit(u, parameters));
  }

  predict(input: tf.Tensor4D): tf.Tensor2D {
    if (this.disposed) throw new Error('mobilefacenet: predict() called after dispose()');
    assertInputBatch(this, input.shape);
    return tf.tidy(() => {
      let x = input;
      for (const u of this.stem) x = applyUnit(x, u);
      for (const block of this.bottlenecks) {
        let y = x;
        for (const u of block.units) y = applyUnit(y, u);
        x = block.residual ? tf.add(x, y) : y;
      }
      for (const u of this.head) x = applyUnit(x, u);
      return tf.reshape(x, [input.shape[0], EMBEDDING_SIZE]);
    });
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const tensor of this.parameters.values()) tensor.dispose();
    for (const u of [...this.stem, ...this.bottlenecks.flatMap((b) => b.units), ...this.head]) {
      u.filter.dispose();
      u.bias.dispose();
      u.prelu?.dispose();
    }
  }
}

/** Tests whether `name` is a BatchNorm running statistic, which training updates but does not differentiate. */
function isRunningStatistic(name: string): boolean {
  return name.endsWith('.running_mean') || name.endsWith('.running_var');
}

/**
 * Lists the parameters that gradients update, in state-dict order: every conv weight, BatchNorm
 * weight and bias, and PReLU slope. The running statistics are left out.
 */
export function mobileFaceNetTrainableNames(): string[] {
  return mobileFaceNetParameterSpecs()
    .map((spec) => spec.name)
    .filter((name) => !isRunningStatistic(name));
}

/** The statistics of one BatchNorm layer over a training batch. */
export interface BatchNormStatistics {
  /** State-dict prefix of the layer, such as `conv1.bn` or `blocks.0.conv.1`. */
  readonly batchNorm: string;
  /** Per-channel mean over N, H and W. */
  readonly mean: tf.Tensor1D;
  /** Per-channel biased variance over N, H and W, the one the layer normalises with. */
  readonly variance: tf.Tensor1D;
  /** Values per channel, N·H·W, for the unbiased variance that the running statistics take. */
  readonly count: number;
}

export interface TrainingForwardResult {
  /** The 128-d embeddings, [N, 128]. */
  readonly embeddings: tf.Tensor2D;
  /** One entry per BatchNorm layer, in network order. */
  readonly batchStatistics: readonly BatchNormStatistics[];
}

/**
 * Runs the network as PyTorch's training mode does: every BatchNorm normalises with the mean and
 * biased variance of the batch over N, H and W (`tf.moments`), not with its running statistics.
 * The ops are plain convs, elementwise ops and `tf.prelu`, so `tf.variableGrads` differentiates
 * through the statistics.
 *
 * `parameters` maps the names of `mobileFaceNetTrainableNames` to tensors or variables in the
 * layouts of `mobileFaceNetParameterSpecs`; other entries are ignored. The running statistics are
 * neither read nor updated (see `updateRunningStatistics`). Like every tensor the call creates, the
 * returned tensors belong to the caller, or to the enclosing `tf.tidy`.
 *
 * @throws Error when a parameter is missing or misshapen, when the input is not [N, 112, 96, 3],
 *   or when N < 2, because `linear7` and `linear1` see one value per channel and image, and the
 *   variance of a single value is 0 (PyTorch rejects this case too).
 */
export function mobileFaceNetTrainingForward(parameters: ReadonlyMap<string, tf.Tensor>, input: tf.Tensor4D): TrainingForwardResult {
  assertInputBatch({ name: 'mobilefacenet', inputSize: { height: INPUT_HEIGHT, width: INPUT_WIDTH } }, input.shape);
  const batchSize = input.shape[0];
  if (batchSize < 2) {
    throw new Error(`mobilefacenet training forward: batch size is ${batchSize}, expected at least 2 for batch-statistics BatchNorm`);
  }
  assertTrainableParameters(parameters);

  const batchStatistics: BatchNormStatistics[] = [];
  const run = (x: tf.Tensor4D, u: ConvUnit): tf.Tensor4D => trainingUnit(x, u, parameters, batchStatistics);

  let x = input;
  for (const u of ARCHITECTURE.stem) x = run(x, u);
  for (const block of ARCHITECTURE.bottlenecks) {
    let y = x;
    for (const u of block.units) y = run(y, u);
    x = block.residual ? tf.add(x, y) : y;
  }
  for (const u of ARCHITECTURE.head) x = run(x, u);
  return { embeddings: tf.reshape(x, [batchSize, EMBEDDING_SIZE]), batchStatistics };
}

function assertTrainableParameters(parameters: ReadonlyMap<string, tf.Tensor>): void {
  for (const spec of mobileFaceNetParameterSpecs()) {
    if (isRunningStatistic(spec.name)) continue;
    const tensor = parameters.get(spec.name);
    if (tensor === undefined) throw new Error(`mobilefacenet training forward: parameter "${spec.name}" is missing`);
    if (tensor.shape.join(',') !== spec.shape.join(',')) {
      throw new Error(`mobilefacenet training forward: parameter "${spec.name}" has shape [${tensor.shape.join(', ')}], expected [${spec.shape.join(', ')}]`);
    }
  }
}

/** Applies one conv, batch-statistics BatchNorm and optional PReLU, and appends the layer's statistics. */
function trainingUnit(x: tf.Tensor4D, u: ConvUnit, parameters: ReadonlyMap<string, tf.Tensor>, statistics: BatchNormStatistics[]): tf.Tensor4D {
  const get = (name: string) => parameters.get(name) as tf.Tensor;
  const pad = u.padding === 0 ? ('valid' as const) : u.padding;
  const filter = get(u.weight) as tf.Tensor4D;
  const convolved = u.kind === 'conv2d' ? tf.conv2d(x, filter, u.stride, pad) : tf.depthwiseConv2d(x, filter, u.stride, pad);

  const { mean, variance } = tf.moments(convolved, [0, 1, 2]);
  const [n, h, w] = convolved.shape;
  statistics.push({ batchNorm: u.batchNorm, mean: mean as tf.Tensor1D, variance: variance as tf.Tensor1D, count: n * h * w });
  const gamma = get(`${u.batchNorm}.weight`) as tf.Tensor1D;
  const beta = get(`${u.batchNorm}.bias`) as tf.Tensor1D;
  // (x − μ) · γ / √(σ² + ε) + β with broadcasting, whose gradient reduces over the batch. The
  // gradient of `tf.batchNorm` in tfjs 4.22 tiles each [C] operand to the full activation shape,
  // which took a fifth of a MobileFaceNet step on wasm (batch 8, `tf.profile`, 2026-12-05).
  const scale = tf.mul(gamma, tf.rsqrt(tf.add(variance, BATCH_NORM_EPSILON)));
  const normalised = tf.add(tf.mul(tf.sub(convolved, mean), scale), beta) as tf.Tensor4D;
  return u.prelu === undefined ? normalised : (tf.prelu(normalised, get(u.prelu)) as tf.Tensor4D);
}

/**
 * Moves each layer's running statistics towards the batch statistics as PyTorch's BatchNorm2d
 * does in training mode: running = (1 − momentum) · running + momentum · batch, where the
 * variance is the unbiased one, count / (count − 1) times the biased one. `momentum` is
 * PyTorch's (0.1 by default), not the solver's.
 */
export function updateRunningStatistics(runningStatistics: ReadonlyMap<string, tf.Variable>, batchStatistics: readonly BatchNormStatistics[], momentum = 0.1): void {
  tf.tidy(() => {
    for (const s of batchStatistics) {
      const runningMean = runningStatistics.get(`${s.batchNorm}.running_mean`);
      const runningVar = runningStatistics.get(`${s.batchNorm}.running_var`);
      if (runningMean === undefined || runningVar === undefined) {
        throw new Error(`updateRunningStatistics: no running statistics for BatchNorm "${s.batchNorm}"`);
      }
      const unbiased = tf.mul(s.variance, s.count / (s.count - 1));
      runningMean.assign(tf.add(tf.mul(runningMean, 1 - momentum), tf.mul(s.mean, momentum)));
      runningVar.assign(tf.add(tf.mul(runningVar, 1 - momentum), tf.mul(unbiased, momentum)));
    }
  });
}

/**
 * Builds the network from a PyTorch state dict (`conv1.conv.weight`, …). `source` names the
 * dict in errors. Throws `StateDictMismatchError` listing every missing, extra or misshapen tensor.
 */
export function createMobileFaceNet(state: ReadonlyMap<string, TorchTensor>, source = 'MobileFaceNet state dict'): MobileFaceNet {
  const mapped = mapStateDict(state, mobileFaceNetParameterSpecs(), { source });
  const parameters = new Map<string, tf.Tensor>();
  for (const [name, p] of mapped) parameters.set(name, tf.tensor(p.data, [...p.shape], 'float32'));
  return new MobileFaceNet(parameters);
}

/** Reads a PyTorch checkpoint (either `torch.save` format) and builds the network from its state dict. */
export async function loadMobileFaceNet(checkpointPath: string): Promise<MobileFaceNet> {
  const checkpoint = await readTorchCheckpoint(checkpointPath);
  return createMobileFaceNet(stateDict(checkpoint), checkpointPath);
}
