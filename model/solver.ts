/**
 * The solver of the SphereFace reference: SGD with momentum and L2 weight decay, Caffe's update
 * order and per-parameter multipliers, and a multistep learning rate.
 *
 * Caffe updates each parameter w with gradient g as
 *
 *     diff = g + weightDecay · decayMult · w
 *     v    = momentum · v + lr · lrMult · diff
 *     w    = w − v
 *
 * (`sgd_solver.cpp`: Regularize, ComputeUpdateValue, ApplyUpdate). Note that the learning rate
 * sits inside the momentum buffer, unlike PyTorch's SGD, so a learning-rate step changes the
 * step size gradually. A parameter with `lrMult` 0 never changes and has no momentum slot.
 */
import * as tf from '@tensorflow/tfjs-core';

export interface SolverOptions {
  /** Learning rate before the first step value. Reference: 0.1. */
  readonly baseLr: number;
  /** Reference: 0.9. */
  readonly momentum: number;
  /** L2 decay, multiplied by each parameter's `decayMult`. Reference: 5e-4. */
  readonly weightDecay: number;
  /** Factor applied to the learning rate at each step value. Reference: 0.1. */
  readonly gamma: number;
  /** Iterations at which the learning rate is multiplied by `gamma`. Reference: 16,000 and 24,000. */
  readonly stepValues: readonly number[];
  /** Last iteration. Reference: 28,000. */
  readonly maxIterations: number;
}

/** The reference solver (`sphereface_solver.prototxt`). Its third step value, 28,000, never takes effect because training stops there, so it is left out. */
export const REFERENCE_SOLVER: SolverOptions = {
  baseLr: 0.1,
  momentum: 0.9,
  weightDecay: 5e-4,
  gamma: 0.1,
  stepValues: [16000, 24000],
  maxIterations: 28000,
};

/** A parameter the solver updates, with Caffe's multipliers. */
export interface SolverParameter {
  readonly name: string;
  readonly variable: tf.Variable;
  /** Multiplier of the learning rate; 0 freezes the parameter. */
  readonly lrMult: number;
  /** Multiplier of the weight decay. */
  readonly decayMult: number;
}

/** A named float32 array, as checkpoints store tensors. */
export interface NamedArray {
  readonly name: string;
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** Prefix of the checkpoint names of momentum slots: `momentum/conv1_1.weight`. */
export const MOMENTUM_PREFIX = 'momentum/';

/**
 * Checks solver options, naming the first bad field.
 *
 * @throws RangeError for a negative or non-finite rate, a momentum outside [0, 1), step values
 *   that are not increasing positive integers, or a non-positive iteration count.
 */
export function checkSolverOptions(options: SolverOptions): void {
  const finite = (name: string, value: number, min: number): void => {
    if (!Number.isFinite(value) || value < min) throw new RangeError(`solver ${name} must be a finite number ≥ ${min}, got ${String(value)}`);
  };
  finite('baseLr', options.baseLr, 0);
  finite('weightDecay', options.weightDecay, 0);
  finite('gamma', options.gamma, 0);
  if (!Number.isFinite(options.momentum) || options.momentum < 0 || options.momentum >= 1) {
    throw new RangeError(`solver momentum must be in [0, 1), got ${String(options.momentum)}`);
  }
  if (!Number.isSafeInteger(options.maxIterations) || options.maxIterations < 1) {
    throw new RangeError(`solver maxIterations must be a positive integer, got ${String(options.maxIterations)}`);
  }
  let previous = 0;
  for (const step of options.stepValues) {
    if (!Number.isSafeInteger(step) || step <= previous) {
      throw new RangeError(`solver stepValues must be increasing positive integers, got [${options.stepValues.join(', ')}]`);
    }
    previous = step;
  }
}

/**
 * Returns the learning rate of iteration `iteration`, counted from 1. Caffe's multistep policy
 * counts completed iterations from 0, so iteration k here is Caffe's `iter_` = k − 1. With the
 * reference settings, iterations 1–16,000 use 0.1, 16,001–24,000 use 0.01, and the rest 0.001.
 */
export function learningRateAt(iteration: number, options: SolverOptions): number {
  const completed = iteration - 1;
  let rate = options.baseLr;
  for (const step of options.stepValues) if (completed >= step) rate *= options.gamma;
  return rate;
}

/** SGD with momentum and weight decay, with Caffe's update rule and multipliers. */
export class CaffeSgd {
  readonly options: SolverOptions;
  private readonly parameters: readonly SolverParameter[];
  private readonly momentum = new Map<string, tf.Variable>();

  constructor(parameters: readonly SolverParameter[], options: SolverOptions) {
    checkSolverOptions(options);
    this.options = options;
    this.parameters = parameters;
    const names = new Set<string>();
    for (const p of parameters) {
      if (names.has(p.name)) throw new Error(`solver: parameter "${p.name}" is listed twice`);
      names.add(p.name);
      if (!Number.isFinite(p.lrMult) || p.lrMult < 0 || !Number.isFinite(p.decayMult) || p.decayMult < 0) {
        throw new RangeError(`solver: parameter "${p.name}" has lrMult ${p.lrMult} and decayMult ${p.decayMult}; expected finite numbers ≥ 0`);
      }
      if (p.lrMult > 0) {
        // tidy frees the zeros tensor, which the first assign would otherwise leave behind.
        const slot = tf.tidy(() => tf.variable(tf.zerosLike(p.variable), false, `${MOMENTUM_PREFIX}${p.name}#${p.variable.id}`));
        this.momentum.set(p.name, slot);
      }
    }
  }

  /** Returns the parameters the solver changes, those with `lrMult` > 0. */
  trainable(): tf.Variable[] {
    return this.parameters.filter((p) => p.lrMult > 0).map((p) => p.variable);
  }

  /**
   * Applies one update with learning rate `lr`. `gradients` maps a trainable variable's
   * `name` (the tfjs variable name) to its gradient; every trainable parameter must have one.
   */
  apply(gradients: Readonly<Record<string, tf.Tensor>>, lr: number): void {
    const { momentum, weightDecay } = this.options;
    tf.tidy(() => {
      for (const p of this.parameters) {
        if (p.lrMult === 0) continue;
        const grad = gradients[p.variable.name];
        if (grad === undefined) throw new Error(`solver: no gradient for "${p.name}"; every parameter with lrMult > 0 needs one`);
        const slot = this.momentum.get(p.name) as tf.Variable;
        const decay = weightDecay * p.decayMult;
        const diff = decay === 0 ? grad : tf.add(grad, tf.mul(p.variable, decay));
        const velocity = tf.add(tf.mul(slot, momentum), tf.mul(diff, lr * p.lrMult));
        slot.assign(velocity);
        p.variable.assign(tf.sub(p.variable, velocity));
      }
    });
  }

  /** Copies out the momentum slots, named `momentum/<parameter>`, for a checkpoint. */
  async exportSlots(): Promise<NamedArray[]> {
    const out: NamedArray[] = [];
    for (const [name, slot] of this.momentum) {
      out.push({ name: `${MOMENTUM_PREFIX}${name}`, shape: slot.shape, data: new Float32Array((await slot.data()) as Float32Array) });
    }
    return out;
  }

  /**
   * Restores the momentum slots from a checkpoint's arrays. Every slot must be present with its
   * shape; arrays with other names are ignored.
   */
  importSlots(arrays: ReadonlyMap<string, NamedArray>): void {
    for (const [name, slot] of this.momentum) {
      const saved = arrays.get(`${MOMENTUM_PREFIX}${name}`);
      if (saved === undefined) throw new Error(`checkpoint has no momentum for "${name}"`);
      if (saved.shape.join(',') !== slot.shape.join(',')) {
        throw new Error(`checkpoint momentum for "${name}" has shape [${saved.shape.join(', ')}], expected [${slot.shape.join(', ')}]`);
      }
      tf.tidy(() => slot.assign(tf.tensor(saved.data, slot.shape, 'float32')));
    }
  }

  dispose(): void {
    for (const slot of this.momentum.values()) slot.dispose();
    this.momentum.clear();
  }
}
