/**
 * One training step of a face-embedding network with a classifier head: forward, loss and
 * gradients for each micro-batch, the gradients averaged, then one solver update.
 *
 * The trainer owns the network's parameters as `tf.Variable`s, the head's class weights and the
 * solver's momentum. `exportState` and `importState` move all of them in and out of a
 * checkpoint, so a run that resumes from one continues with the same numbers.
 */
import * as tf from '@tensorflow/tfjs-core';

import { normalizePixels } from '../operators/extractFeatures.ts';
import { createHead, type ClassifierHead, type HeadOptions } from './heads.ts';
import { CaffeSgd, learningRateAt, type NamedArray, type SolverOptions, type SolverParameter } from './solver.ts';
import {
  initialSphereFaceParameters,
  SphereFace,
  sphereFaceParameterRoles,
  type SphereFaceOptions,
} from './sphereface.ts';

/** The name the head's class weights carry in checkpoints, as in the reference prototxt. */
export const CLASSIFIER_WEIGHT = 'fc6.weight';

export interface TrainerOptions {
  readonly network: SphereFaceOptions;
  readonly head: HeadOptions;
  readonly solver: SolverOptions;
  readonly numClasses: number;
  /** Seed of the initial weights of the network and the head. */
  readonly seed: number;
}

/** One micro-batch: 8-bit RGB crops [n, height, width, 3] of the network's input size, and their labels. */
export interface MicroBatch {
  readonly pixels: Uint8Array;
  readonly labels: Int32Array;
  readonly size: number;
}

/** The outcome of one optimizer step. */
export interface StepOutcome {
  /** The step's number, from 1. */
  readonly iteration: number;
  /** Mean loss over the step's images, the micro-batches weighted by their sizes. */
  readonly loss: number;
  /** Fraction of the step's images whose plain-cosine prediction is their label. */
  readonly accuracy: number;
  /** λ of the A-Softmax head at this iteration; NaN for heads without one. */
  readonly lambda: number;
  readonly learningRate: number;
  /** Images in the step. */
  readonly images: number;
}

let instances = 0;

export class Trainer {
  readonly options: TrainerOptions;
  readonly network: SphereFace;
  readonly head: ClassifierHead;
  readonly solver: CaffeSgd;
  /** Completed optimizer steps. */
  iteration = 0;
  private readonly variables = new Map<string, tf.Variable>();
  private disposed = false;

  constructor(options: TrainerOptions) {
    this.options = options;
    // tfjs keeps one registry of variable names per process; the suffix keeps two trainers
    // (a trained network and its random-weight baseline, say) from colliding.
    const suffix = `#t${++instances}`;
    const initial = initialSphereFaceParameters(options.network, options.seed);
    const parameters = new Map<string, tf.Variable>();
    for (const [name, p] of initial) {
      const variable = tf.tidy(() => tf.variable(tf.tensor(p.data, [...p.shape], 'float32'), true, `${name}${suffix}`));
      parameters.set(name, variable);
      this.variables.set(name, variable);
    }
    this.network = new SphereFace(parameters, options.network);
    this.head = createHead(options.head, this.network.embeddingSize, options.numClasses, options.seed + 1);
    this.variables.set(CLASSIFIER_WEIGHT, this.head.weight);

    const roles = new Map(sphereFaceParameterRoles(options.network).map((role) => [role.name, role]));
    const solverParameters: SolverParameter[] = [];
    for (const [name, variable] of parameters) {
      const role = roles.get(name);
      if (role === undefined) throw new Error(`trainer: network parameter "${name}" has no training role`);
      solverParameters.push({ name, variable, lrMult: role.lrMult, decayMult: role.decayMult });
    }
    // fc6 in the reference: lr_mult 1, decay_mult 1.
    solverParameters.push({ name: CLASSIFIER_WEIGHT, variable: this.head.weight, lrMult: 1, decayMult: 1 });
    this.solver = new CaffeSgd(solverParameters, options.solver);
  }

  /** The learning rate and λ the next step will use. */
  nextSchedule(): { readonly learningRate: number; readonly lambda: number } {
    const iteration = this.iteration + 1;
    return { learningRate: learningRateAt(iteration, this.options.solver), lambda: this.head.lambda(iteration) };
  }

  /**
   * Runs one optimizer step over `microBatches` (gradient accumulation: the gradients of the
   * micro-batches' mean losses are averaged, as Caffe's `iter_size` and its multi-GPU solver
   * do). Every micro-batch of the step uses the same iteration for λ.
   */
  async step(microBatches: readonly MicroBatch[]): Promise<StepOutcome> {
    if (this.disposed) throw new Error('trainer: used after dispose()');
    const batches = microBatches.filter((b) => b.size > 0);
    if (batches.length === 0) throw new Error('trainer: a step needs at least one image');
    const iteration = this.iteration + 1;
    const { learningRate, lambda } = this.nextSchedule();
    const { height, width } = this.network.inputSize;
    const trainable = this.solver.trainable();

    this.head.prepare();
    let summed: Record<string, tf.Tensor> | undefined;
    let lossSum = 0;
    let correctSum = 0;
    let images = 0;
    for (const batch of batches) {
      if (batch.pixels.length !== batch.size * height * width * 3 || batch.labels.length !== batch.size) {
        throw new Error(`trainer: a micro-batch of ${batch.size} images has ${batch.pixels.length} pixel bytes and ${batch.labels.length} labels; expected ${batch.size * height * width * 3} and ${batch.size}`);
      }
      let correct: tf.Scalar | undefined;
      const { value, grads } = tf.variableGrads(() => {
        const input = normalizePixels(tf.tensor4d(batch.pixels, [batch.size, height, width, 3], 'int32'), this.network);
        const labels = tf.tensor1d(batch.labels, 'int32');
        const out = this.head.forward(this.network.predict(input), labels, iteration);
        correct = tf.keep(out.correct);
        return out.loss;
      }, trainable);
      const [lossValue] = (await value.data()) as Float32Array;
      const [correctValue] = correct === undefined ? [0] : ((await correct.data()) as Float32Array);
      tf.dispose([value, correct as tf.Tensor]);
      lossSum += (lossValue ?? Number.NaN) * batch.size;
      correctSum += correctValue ?? 0;
      images += batch.size;
      if (summed === undefined) summed = grads;
      else {
        const previous = summed;
        summed = tf.tidy(() => Object.fromEntries(Object.entries(previous).map(([name, g]) => [name, tf.add(g, grads[name] as tf.Tensor)])));
        tf.dispose([...Object.values(previous), ...Object.values(grads)]);
      }
    }
    const gradients = summed as Record<string, tf.Tensor>;
    const averaged =
      batches.length === 1
        ? gradients
        : tf.tidy(() => Object.fromEntries(Object.entries(gradients).map(([name, g]) => [name, tf.div(g, batches.length)])));
    try {
      this.solver.apply(averaged, learningRate);
    } finally {
      tf.dispose(Object.values(gradients));
      if (averaged !== gradients) tf.dispose(Object.values(averaged));
    }
    this.iteration = iteration;
    return { iteration, loss: lossSum / images, accuracy: correctSum / images, lambda, learningRate, images };
  }

  /** Copies out every array a checkpoint needs: the network's parameters, `fc6.weight` and the momentum slots. */
  async exportState(): Promise<NamedArray[]> {
    const arrays: NamedArray[] = [];
    for (const [name, variable] of this.variables) {
      arrays.push({ name, shape: variable.shape, data: new Float32Array((await variable.data()) as Float32Array) });
    }
    return [...arrays, ...(await this.solver.exportSlots())];
  }

  /**
   * Restores the arrays `exportState` gave, and the completed step count. Every parameter and
   * momentum slot must be present with its shape.
   */
  importState(arrays: readonly NamedArray[], iteration: number): void {
    const byName = new Map(arrays.map((a) => [a.name, a]));
    for (const [name, variable] of this.variables) {
      const saved = byName.get(name);
      if (saved === undefined) throw new Error(`checkpoint has no "${name}"`);
      if (saved.shape.join(',') !== variable.shape.join(',')) {
        throw new Error(`checkpoint "${name}" has shape [${saved.shape.join(', ')}], expected [${variable.shape.join(', ')}]`);
      }
      tf.tidy(() => variable.assign(tf.tensor(saved.data, variable.shape, 'float32')));
    }
    this.solver.importSlots(byName);
    this.iteration = iteration;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.solver.dispose();
    this.head.dispose();
    this.network.dispose();
  }
}
