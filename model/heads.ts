/**
 * Classifier heads for training: each turns a batch of embeddings [N, D] and their int32 class
 * labels [N] into the mean cross-entropy loss over the batch, for use inside `tf.variableGrads`.
 *
 * | kind | logit of class j ≠ y | logit of the label class y |
 * |---|---|---|
 * | `asoftmax` (SphereFace) | ‖x‖cosθ_j | (λ‖x‖cosθ_y + ‖x‖ψ(θ_y)) / (1 + λ) |
 * | `cosface` | s·cosθ_j | s·(cosθ_y − m) |
 * | `arcface` | s·cosθ_j | s·cos(θ_y + m), with a fallback past θ_y = π − m |
 * | `softmax` | x·w_j | x·w_y |
 *
 * θ_j is the angle between the embedding x and the class weight w_j. A-Softmax, CosFace and
 * ArcFace use unit-norm class weights and no bias. The plain softmax head has no bias either.
 *
 * The A-Softmax head follows the `MarginInnerProduct` Caffe layer released with SphereFace
 * (github.com/wy1iu/sphereface, tools/caffe-sphereface/src/caffe/layers/
 * margin_inner_product_layer.cpp). ψ(θ) = (−1)^k·cos(mθ) − 2k with k = ⌊mθ/π⌋ is evaluated
 * from cosθ with Chebyshev polynomials and sign masks, never with `acos`. λ follows the schedule
 * max(min, base·(1 + γ·it)^(−power)), and cosθ is not clamped. With m = 1 the logits are the
 * plain inner products with unit-norm weights and λ plays no part, as in that layer.
 *
 * The class weights are one `tf.Variable` named `fc6.weight` of shape [D, numClasses], one
 * column per class. This is the layout of the PyTorch port's `AngleLinear`. Caffe stores the
 * transpose, [numClasses, D].
 */
// The Node build of tfjs-core registers no gradient functions. `@tensorflow/tfjs` 4.22.0
// registers them all on the same tfjs-core instance when it loads.
import '@tensorflow/tfjs';
import * as tf from '@tensorflow/tfjs-core';

import { uniformGenerator } from '../lib/random.ts';

/** λ(it) = max(min, base·(1 + gamma·it)^(−power)), the fields of Caffe's `MarginInnerProduct` parameters. */
export interface LambdaSchedule {
  readonly base: number;
  readonly gamma: number;
  readonly power: number;
  readonly min: number;
}

/**
 * The gradient of the A-Softmax head.
 * - `reference`: the gradient of the released Caffe layer, which is not the derivative of its
 *   forward (see `createHead`).
 * - `autograd`: the true derivative of the forward, with the weight normalisation inside the
 *   graph, as the PyTorch port of SphereFace computes it.
 */
export type AsoftmaxGradient = 'autograd' | 'reference';

export type HeadOptions =
  | { kind: 'asoftmax'; m: 1 | 2 | 3 | 4; lambda?: LambdaSchedule; gradient?: AsoftmaxGradient }
  /** s·(cosθ_y − m) for the label class, with embeddings and class weights normalised. */
  | { kind: 'cosface'; scale: number; margin: number }
  /** s·cos(θ_y + m) for the label class, with embeddings and class weights normalised. */
  | { kind: 'arcface'; scale: number; margin: number }
  /** Plain inner products x·w_j, no bias and no normalisation. */
  | { kind: 'softmax' };

/** `HeadOptions` with every default filled in. */
export type ResolvedHeadOptions =
  | { readonly kind: 'asoftmax'; readonly m: 1 | 2 | 3 | 4; readonly lambda: LambdaSchedule; readonly gradient: AsoftmaxGradient }
  | { readonly kind: 'cosface'; readonly scale: number; readonly margin: number }
  | { readonly kind: 'arcface'; readonly scale: number; readonly margin: number }
  | { readonly kind: 'softmax' };

/** The λ schedule of the SphereFace-20 prototxt: base 1000, gamma 0.12, power 1, lambda_min 5. */
export const SPHEREFACE_LAMBDA: LambdaSchedule = { base: 1000, gamma: 0.12, power: 1, min: 5 };

/**
 * The A-Softmax settings of the released SphereFace-20 model (m = 4 is its `QUADRUPLE` type).
 * The default gradient is `reference` because the release trained this λ schedule, learning
 * rates and iteration count with the Caffe layer's normalised gradient. The SphereFace README
 * states that the true gradient can work too but may need other λ settings, iteration numbers
 * and learning-rate decay.
 */
export const ASOFTMAX_DEFAULTS = { m: 4, lambda: SPHEREFACE_LAMBDA, gradient: 'reference' } as const;

/** The variable name of the class weights, after the classifier layer `fc6` of the SphereFace prototxt. */
export const CLASS_WEIGHT_NAME = 'fc6.weight';

export interface HeadForward {
  /** Mean cross-entropy over the batch, computed through log-softmax so that it stays finite. */
  readonly loss: tf.Scalar;
  /**
   * Number of rows (int32) whose argmax over the margin-free logits is the label: x·ŵ_j for
   * A-Softmax, x·w_j for softmax, cosθ_j for CosFace and ArcFace.
   */
  readonly correct: tf.Scalar;
}

export interface ClassifierHead {
  readonly options: ResolvedHeadOptions;
  readonly numClasses: number;
  readonly embeddingSize: number;
  /** The class weights [embeddingSize, numClasses], named `fc6.weight` (see `createHead` for a second head). */
  readonly weight: tf.Variable;
  /** Returns λ of the A-Softmax head at a 1-based iteration, also when m = 1 leaves it unused. Other heads return NaN. */
  lambda(iteration: number): number;
  /**
   * Prepares the class weights for the next forward. The A-Softmax head with the `reference`
   * gradient rescales every column of `weight` to unit L2 norm in place, as the Caffe layer
   * writes its normalised rows back on every forward. The other heads do nothing.
   */
  prepare(): void;
  /**
   * Computes the loss and the number of correct rows for one batch. `iteration` is the 1-based
   * number of the optimizer step being computed, the same for every micro-batch of one step.
   * The caller owns both returned tensors. Inside `tf.variableGrads`, `tf.keep` the `correct`
   * tensor, because variableGrads disposes every tensor its function creates except the loss.
   */
  forward(embeddings: tf.Tensor2D, labels: tf.Tensor1D, iteration: number): HeadForward;
  /** Disposes `weight`. The head cannot be used afterwards. */
  dispose(): void;
}

/** Keeps square roots and divisions finite for an all-zero embedding or weight column. */
const MIN_SQUARED_NORM = 1e-30;

/**
 * Keeps the ArcFace sinθ = √(1 − cos²θ) differentiable at cosθ = ±1. It changes sinθ only where
 * 1 − cos²θ < 1e-12, which in float32 happens only when cosθ is exactly ±1.
 */
const MIN_SQUARED_SINE = 1e-12;

// ---------------------------------------------------------------------------------------------
// Scalar formulas

/**
 * Returns the A-Softmax λ at a 1-based iteration: max(min, base·(1 + gamma·iteration)^(−power)).
 * The Caffe layer increments its counter before use, so the first step uses λ(1). With the
 * SphereFace-20 schedule λ(1) = 892.857, λ(100) = 76.923, λ(1000) = 8.264, and λ = 5 from
 * iteration 1659 on. A run resumed after step k continues with λ(k + 1).
 */
export function lambdaAt(iteration: number, schedule: LambdaSchedule): number {
  assertIteration(iteration);
  return Math.max(schedule.min, schedule.base * Math.pow(1 + schedule.gamma * iteration, -schedule.power));
}

/**
 * Returns ψ(θ) = (−1)^k·cos(mθ) − 2k, k = ⌊mθ/π⌋, from cosθ, with the Chebyshev polynomials and
 * sign masks of the Caffe layer (sign(0) = 0). It runs from 1 at θ = 0 down to 1 − 2m at θ = π.
 * This is the scalar twin of the tensor code in the head, for tests and documentation.
 */
export function psi(cos: number, m: 1 | 2 | 3 | 4): number {
  const c = cos;
  const s0 = Math.sign(c);
  switch (m) {
    case 1:
      return c;
    case 2:
      return 2 * s0 * c * c - 1;
    case 3: {
      const s1 = Math.sign(Math.abs(c) - 0.5);
      const s2 = s0 * (1 + s1) - 2;
      return s1 * (4 * c * c * c - 3 * c) + s2;
    }
    case 4: {
      const s3 = s0 * Math.sign(2 * c * c - 1);
      const s4 = 2 * s0 + s3 - 3;
      return s3 * (8 * c ** 4 - 8 * c * c + 1) + s4;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Options

function assertIteration(iteration: number): void {
  if (!Number.isSafeInteger(iteration) || iteration < 1) {
    throw new RangeError(`iteration ${iteration} is invalid; expected the 1-based number of the optimizer step, an integer ≥ 1`);
  }
}

function assertFinite(value: number, name: string, minimum: number, inclusive: boolean): void {
  const ok = Number.isFinite(value) && (inclusive ? value >= minimum : value > minimum);
  if (!ok) throw new RangeError(`${name} ${value} is invalid; expected a finite number ${inclusive ? '≥' : '>'} ${minimum}`);
}

/** Fills in the defaults of `options` and throws a `RangeError` naming the first invalid field. */
export function resolveHeadOptions(options: HeadOptions): ResolvedHeadOptions {
  switch (options.kind) {
    case 'asoftmax': {
      if (![1, 2, 3, 4].includes(options.m)) {
        throw new RangeError(`asoftmax head: m ${String(options.m)} is invalid; expected 1, 2, 3 or 4`);
      }
      const lambda = options.lambda ?? ASOFTMAX_DEFAULTS.lambda;
      for (const field of ['base', 'gamma', 'power', 'min'] as const) {
        assertFinite(lambda[field], `asoftmax head: lambda.${field}`, 0, true);
      }
      const gradient = options.gradient ?? ASOFTMAX_DEFAULTS.gradient;
      if (gradient !== 'autograd' && gradient !== 'reference') {
        throw new RangeError(`asoftmax head: gradient "${String(gradient)}" is invalid; expected "autograd" or "reference"`);
      }
      return { kind: 'asoftmax', m: options.m, lambda: { ...lambda }, gradient };
    }
    case 'cosface':
    case 'arcface': {
      assertFinite(options.scale, `${options.kind} head: scale`, 0, false);
      assertFinite(options.margin, `${options.kind} head: margin`, 0, true);
      if (options.kind === 'arcface' && options.margin >= Math.PI) {
        throw new RangeError(`arcface head: margin ${options.margin} is invalid; expected an angle in radians in [0, π)`);
      }
      // cos θ lies in [−1, 1], so from a margin of 2 on the label's logit never exceeds another class's.
      if (options.kind === 'cosface' && options.margin >= 2) {
        throw new RangeError(`cosface head: margin ${options.margin} is invalid; expected a cosine margin in [0, 2), such as 0.35`);
      }
      return { kind: options.kind, scale: options.scale, margin: options.margin };
    }
    case 'softmax':
      return { kind: 'softmax' };
    default: {
      const kind = (options as { kind?: unknown }).kind;
      throw new RangeError(`head kind "${String(kind)}" is invalid; expected "asoftmax", "cosface", "arcface" or "softmax"`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor building blocks

/** Returns the L2 norm of each row of `x` [N, D] as [N, 1]. An all-zero row gets 1e-15, not 0. */
export function rowNorms(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.sqrt(tf.maximum(tf.sum(tf.square(x), 1, true), MIN_SQUARED_NORM)) as tf.Tensor2D);
}

/** Returns `w` [D, C] with every column scaled to unit L2 norm. */
export function normalizeColumns(w: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.div(w, tf.sqrt(tf.maximum(tf.sum(tf.square(w), 0, true), MIN_SQUARED_NORM))) as tf.Tensor2D);
}

/**
 * Normalises the columns of `w` in the forward and passes the gradient through unchanged. The
 * Caffe layer differentiates with respect to its stored weight, which `prepare` has already
 * normalised, so the normalisation itself is not differentiated.
 */
const normalizeColumnsStraightThrough = tf.customGrad((w) => ({
  value: normalizeColumns(w as tf.Tensor2D),
  gradFunc: (dy) => dy,
})) as (w: tf.Tensor2D) => tf.Tensor2D;

interface SignMasks {
  readonly s0: tf.Tensor;
  readonly s1: tf.Tensor;
  readonly s2: tf.Tensor;
  readonly s3: tf.Tensor;
  readonly s4: tf.Tensor;
}

/**
 * Returns the sign masks of the Caffe layer for cosθ = `c`. `tf.sign` has a zero gradient, so
 * the masks select a branch of ψ without being differentiated.
 */
function signMasks(c: tf.Tensor): SignMasks {
  const s0 = tf.sign(c);
  const s1 = tf.sign(tf.sub(tf.abs(c), 0.5));
  const s2 = tf.sub(tf.mul(s0, tf.add(s1, 1)), 2);
  const s3 = tf.mul(s0, tf.sign(tf.sub(tf.mul(tf.square(c), 2), 1)));
  const s4 = tf.sub(tf.add(tf.mul(s0, 2), s3), 3);
  return { s0, s1, s2, s3, s4 };
}

/** Returns ψ(θ) of `c` = cosθ for m = 2, 3, 4, as `psi` does for one number. */
function psiTensor(c: tf.Tensor, m: 2 | 3 | 4): tf.Tensor {
  const { s0, s1, s2, s3, s4 } = signMasks(c);
  const c2 = tf.square(c);
  switch (m) {
    case 2:
      return tf.sub(tf.mul(tf.mul(s0, c2), 2), 1);
    case 3: {
      const chebyshev3 = tf.mul(c, tf.sub(tf.mul(c2, 4), 3));
      return tf.add(tf.mul(s1, chebyshev3), s2);
    }
    case 4: {
      const chebyshev4 = tf.add(tf.mul(tf.sub(c2, 1), tf.mul(c2, 8)), 1);
      return tf.add(tf.mul(s3, chebyshev4), s4);
    }
  }
}

/**
 * Returns the partial derivatives of ‖x‖ψ(θ_y) along w_y and along x, scaled to a unit vector
 * (ĉ_w, ĉ_x), from cosθ_y [N, 1] and ‖x‖ [N, 1]. These are the coefficients of the Caffe
 * layer's backward: d(‖x‖ψ)/dx = c_w·w_y + c_x·x before the scaling.
 */
function normalizedMarginCoefficients(c: tf.Tensor, norms: tf.Tensor, m: 2 | 3 | 4): { cw: tf.Tensor; cx: tf.Tensor } {
  const { s0, s1, s2, s3, s4 } = signMasks(c);
  const c2 = tf.square(c);
  const c3 = tf.mul(c2, c);
  let cw: tf.Tensor;
  let cxTimesNorm: tf.Tensor;
  switch (m) {
    case 2:
      cw = tf.mul(tf.mul(s0, c), 4);
      cxTimesNorm = tf.neg(tf.add(tf.mul(tf.mul(s0, c2), 2), 1));
      break;
    case 3:
      cw = tf.mul(s1, tf.sub(tf.mul(c2, 12), 3));
      cxTimesNorm = tf.neg(tf.sub(tf.mul(tf.mul(s1, c3), 8), s2));
      break;
    case 4:
      cw = tf.mul(s3, tf.sub(tf.mul(c3, 32), tf.mul(c, 16)));
      cxTimesNorm = tf.neg(tf.sub(tf.mul(s3, tf.sub(tf.sub(tf.mul(tf.square(c2), 24), tf.mul(c2, 8)), 1)), s4));
      break;
  }
  const cx = tf.div(cxTimesNorm, norms);
  // The pair is never (0, 0) for a finite ‖x‖, because wherever c_w vanishes, c_x·‖x‖ is −1,
  // −3 or −5.
  const length = tf.sqrt(tf.maximum(tf.add(tf.square(cw), tf.square(cx)), MIN_SQUARED_NORM));
  return { cw: tf.div(cw, length), cx: tf.div(cx, length) };
}

/**
 * Returns the A-Softmax logits: `dot` [N, C] = x·ŵ_j everywhere except the label column, which
 * becomes (λ·x·ŵ_y + ‖x‖ψ(θ_y)) / (1 + λ). The masks make the non-label entries exact copies.
 */
function marginLogits(dot: tf.Tensor2D, norms: tf.Tensor2D, labelMask: tf.Tensor2D, m: 2 | 3 | 4, lambda: number): tf.Tensor2D {
  const labelDot = tf.sum(tf.mul(dot, labelMask), 1, true);
  const labelCos = tf.div(labelDot, norms);
  const labelPsi = psiTensor(labelCos, m);
  const labelLogit = tf.add(tf.mul(labelDot, lambda / (1 + lambda)), tf.mul(tf.mul(norms, labelPsi), 1 / (1 + lambda)));
  return tf.add(tf.mul(dot, tf.sub(1, labelMask)), tf.mul(labelMask, labelLogit)) as tf.Tensor2D;
}

/**
 * Returns `marginLogits` with the gradient of the Caffe layer. Together with the plain matrix
 * product gradient of `dot` = x·Ŵ it gives, for dY = dL/dlogits:
 * - dL/dŴ = xᵀ·dY for every class, with no margin, λ or normalisation term;
 * - dL/dx = Σ_{j≠y} dY_j·ŵ_j + dY_y·[(λ + ĉ_w)·ŵ_y + ĉ_x·x] / (1 + λ).
 * This op adds the second line's label-class correction: dY_y·[(ĉ_w − 1)·ŵ_y + ĉ_x·x] / (1 + λ)
 * to dL/dx, and passes dY to `dot` unchanged, so dL/dŴ stays xᵀ·dY.
 */
function referenceMarginLogits(
  dot: tf.Tensor2D,
  x: tf.Tensor2D,
  normalizedWeight: tf.Tensor2D,
  labels: tf.Tensor1D,
  labelMask: tf.Tensor2D,
  m: 2 | 3 | 4,
  lambda: number,
): tf.Tensor2D {
  const op = tf.customGrad((dotInput, xInput, save) => {
    const forwardDot = dotInput as tf.Tensor2D;
    const forwardX = xInput as tf.Tensor2D;
    const norms = rowNorms(forwardX);
    const value = marginLogits(forwardDot, norms, labelMask, m, lambda);
    const labelCos = tf.div(tf.sum(tf.mul(forwardDot, labelMask), 1, true), norms);
    // ŵ_y for each row [N, D]. The closure tensors are alive only during this forward, so the
    // backward reads everything it needs from `saved`.
    const labelWeights = tf.transpose(tf.gather(normalizedWeight, labels, 1));
    (save as tf.GradSaveFunc)([forwardX, norms, labelCos, labelWeights, labelMask]);

    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor[] => {
      const [savedX, savedNorms, savedCos, savedWeights, savedMask] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
      const { cw, cx } = normalizedMarginCoefficients(savedCos, savedNorms, m);
      const labelDy = tf.div(tf.sum(tf.mul(dy, savedMask), 1, true), 1 + lambda);
      const correction = tf.add(tf.mul(savedWeights, tf.mul(labelDy, tf.sub(cw, 1))), tf.mul(savedX, tf.mul(labelDy, cx)));
      return [dy, correction];
    };
    return { value, gradFunc };
  });
  return op(dot, x) as tf.Tensor2D;
}

/** Returns the mean over rows of −log softmax(logits)[label], through `tf.logSoftmax`. */
function meanCrossEntropy(logits: tf.Tensor2D, labelMask: tf.Tensor2D): tf.Scalar {
  return tf.neg(tf.mean(tf.sum(tf.mul(tf.logSoftmax(logits), labelMask), 1))) as tf.Scalar;
}

/** Returns the number of rows (int32) whose argmax of `plainLogits` equals the label. */
function countCorrect(plainLogits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  return tf.sum(tf.cast(tf.equal(tf.argMax(plainLogits, 1), labels), 'int32')) as tf.Scalar;
}

/**
 * Returns the ArcFace logit of the label class from cosθ_y [N, 1]: cos(θ_y + m) while
 * θ_y < π − m, else cosθ_y − m·sin m. The fallback is the one common PyTorch ArcFace heads use
 * with `easy_margin` off. It keeps the logit decreasing in θ_y where θ_y + m would pass π and
 * cos(θ_y + m) would rise again. sinθ_y comes from √(1 − cos²θ_y), which needs no `acos`.
 */
function arcFaceLabelLogit(labelCos: tf.Tensor, margin: number): tf.Tensor {
  const sine = tf.sqrt(tf.maximum(tf.sub(1, tf.square(labelCos)), MIN_SQUARED_SINE));
  const shifted = tf.sub(tf.mul(labelCos, Math.cos(margin)), tf.mul(sine, Math.sin(margin)));
  const fallback = tf.sub(labelCos, margin * Math.sin(margin));
  // 1 where cosθ_y > cos(π − m), else 0. `tf.step` has a zero gradient, whereas a comparison
  // inside `tf.where` has none registered and stops the backward pass.
  const useShifted = tf.step(tf.sub(labelCos, Math.cos(Math.PI - margin)));
  return tf.add(tf.mul(useShifted, shifted), tf.mul(tf.sub(1, useShifted), fallback));
}

// ---------------------------------------------------------------------------------------------
// The head

/** Caffe's xavier filler with fan-in D: uniform in ±√(3/D). */
function xavierColumns(embeddingSize: number, numClasses: number, seed: number): Float32Array {
  const uniform = uniformGenerator(seed);
  const limit = Math.sqrt(3 / embeddingSize);
  const values = new Float32Array(embeddingSize * numClasses);
  for (let i = 0; i < values.length; i++) values[i] = (2 * uniform() - 1) * limit;
  return values;
}

interface Logits {
  /** The logits the loss uses. */
  readonly logits: tf.Tensor2D;
  /** The margin-free logits that `correct` uses. */
  readonly plain: tf.Tensor2D;
}

class Head implements ClassifierHead {
  readonly weight: tf.Variable;
  private disposed = false;

  constructor(
    readonly options: ResolvedHeadOptions,
    readonly embeddingSize: number,
    readonly numClasses: number,
    seed: number,
  ) {
    const values = xavierColumns(embeddingSize, numClasses, seed);
    this.weight = tf.tidy(() => tf.variable(tf.tensor2d(values, [embeddingSize, numClasses]), true, unusedWeightName()));
  }

  lambda(iteration: number): number {
    if (this.options.kind !== 'asoftmax') return Number.NaN;
    return lambdaAt(iteration, this.options.lambda);
  }

  prepare(): void {
    this.assertUsable();
    if (this.options.kind !== 'asoftmax' || this.options.gradient !== 'reference') return;
    tf.tidy(() => {
      this.weight.assign(normalizeColumns(this.weight as tf.Tensor2D));
    });
  }

  forward(embeddings: tf.Tensor2D, labels: tf.Tensor1D, iteration: number): HeadForward {
    this.assertUsable();
    assertIteration(iteration);
    this.assertBatch(embeddings, labels);
    const result = tf.tidy(() => {
      const labelMask = tf.cast(tf.oneHot(labels, this.numClasses), 'float32') as tf.Tensor2D;
      const { logits, plain } = this.logits(embeddings, labels, labelMask, iteration);
      return { loss: meanCrossEntropy(logits, labelMask), correct: countCorrect(plain, labels) };
    });
    return result;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.weight.dispose();
  }

  private logits(x: tf.Tensor2D, labels: tf.Tensor1D, labelMask: tf.Tensor2D, iteration: number): Logits {
    const options = this.options;
    const weight = this.weight as tf.Tensor2D;
    switch (options.kind) {
      case 'asoftmax': {
        const reference = options.gradient === 'reference';
        const normalizedWeight = reference ? normalizeColumnsStraightThrough(weight) : normalizeColumns(weight);
        const dot = tf.matMul(x, normalizedWeight) as tf.Tensor2D;
        if (options.m === 1) return { logits: dot, plain: dot };
        const lambda = lambdaAt(iteration, options.lambda);
        const logits = reference
          ? referenceMarginLogits(dot, x, normalizedWeight, labels, labelMask, options.m, lambda)
          : marginLogits(dot, rowNorms(x), labelMask, options.m, lambda);
        return { logits, plain: dot };
      }
      case 'cosface':
      case 'arcface': {
        const cos = tf.matMul(tf.div(x, rowNorms(x)) as tf.Tensor2D, normalizeColumns(weight)) as tf.Tensor2D;
        let labelLogit: tf.Tensor;
        if (options.kind === 'cosface') {
          labelLogit = tf.sub(tf.sum(tf.mul(cos, labelMask), 1, true), options.margin);
        } else {
          // Rounding can push a cosine just past ±1. Clamping only the label cosine keeps the
          // other logits unchanged and sinθ_y real.
          labelLogit = arcFaceLabelLogit(tf.clipByValue(tf.sum(tf.mul(cos, labelMask), 1, true), -1, 1), options.margin);
        }
        const margined = tf.add(tf.mul(cos, tf.sub(1, labelMask)), tf.mul(labelMask, labelLogit));
        return { logits: tf.mul(margined, options.scale) as tf.Tensor2D, plain: cos };
      }
      case 'softmax': {
        const dot = tf.matMul(x, weight) as tf.Tensor2D;
        return { logits: dot, plain: dot };
      }
    }
  }

  private assertUsable(): void {
    if (this.disposed) throw new Error(`${this.options.kind} head: used after dispose()`);
  }

  /**
   * Throws unless `embeddings` is float32 [N, embeddingSize] with N ≥ 1 and `labels` is int32 [N]
   * with every value a class index. Checking the values reads the labels back synchronously.
   */
  private assertBatch(embeddings: tf.Tensor2D, labels: tf.Tensor1D): void {
    const name = `${this.options.kind} head`;
    const [n = 0, d] = embeddings.shape;
    if (embeddings.rank !== 2 || n < 1 || d !== this.embeddingSize || embeddings.dtype !== 'float32') {
      throw new Error(`${name}: embeddings are ${embeddings.dtype} [${embeddings.shape.join(', ')}]; expected float32 [N, ${this.embeddingSize}] with N ≥ 1`);
    }
    if (labels.rank !== 1 || labels.shape[0] !== n || labels.dtype !== 'int32') {
      throw new Error(`${name}: labels are ${labels.dtype} [${labels.shape.join(', ')}]; expected int32 [${n}], one per embedding row`);
    }
    const values = labels.dataSync();
    for (let i = 0; i < values.length; i++) {
      const label = values[i] ?? -1;
      if (label < 0 || label >= this.numClasses) {
        throw new RangeError(`${name}: labels[${i}] = ${label} is out of range; expected a class index in [0, ${this.numClasses})`);
      }
    }
  }
}

/**
 * Returns `fc6.weight`, or `fc6.weight#2`, `#3`, … when live variables already have the
 * shorter names. TensorFlow.js rejects a second variable with a registered name.
 */
function unusedWeightName(): string {
  const registered = tf.engine().registeredVariables;
  let name = CLASS_WEIGHT_NAME;
  for (let k = 2; registered[name] !== undefined; k++) name = `${CLASS_WEIGHT_NAME}#${k}`;
  return name;
}

/**
 * Creates a classifier head with fresh class weights: Caffe's xavier filler with fan-in
 * `embeddingSize`, uniform in ±√(3/D) (±0.076547 for D = 512), the same values for the same
 * seed. A-Softmax defaults: the SphereFace-20 λ schedule and the `reference` gradient
 * (`ASOFTMAX_DEFAULTS` gives the reason).
 *
 * The two A-Softmax gradients:
 * - `reference` reproduces the released Caffe layer. `prepare()` normalises the stored columns
 *   in place. dL/dW is the plain inner-product gradient xᵀ·dY with respect to the stored
 *   weight, and dL/dx follows the layer's direction-normalised formula (`referenceMarginLogits`).
 *   With m = 1 both are the plain inner-product gradients. The SphereFace README states that
 *   the weight gradient is normalised like the one for x, but the layer's code does not do
 *   that, and neither does this head.
 * - `autograd` differentiates the forward, the column normalisation included, and `prepare()`
 *   does nothing. Nothing in its graph takes `acos` or √(1 − cos²θ), so the gradient stays
 *   finite at cosθ = ±1 and when rounding makes cosθ slightly larger than 1.
 *
 * The weight variable is named `fc6.weight`. TensorFlow.js keeps one registry of variable names
 * per process, so a head created while another is alive gets `fc6.weight#2` (then `#3`, …).
 */
export function createHead(options: HeadOptions, embeddingSize: number, numClasses: number, seed: number): ClassifierHead {
  const resolved = resolveHeadOptions(options);
  if (!Number.isSafeInteger(embeddingSize) || embeddingSize < 1) {
    throw new RangeError(`embedding size ${embeddingSize} is invalid; expected an integer ≥ 1`);
  }
  if (!Number.isSafeInteger(numClasses) || numClasses < 1) {
    throw new RangeError(`number of classes ${numClasses} is invalid; expected an integer ≥ 1`);
  }
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed ${seed} is invalid; expected an integer`);
  return new Head(resolved, embeddingSize, numClasses, seed);
}
