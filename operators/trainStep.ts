/**
 * The `trainStep` operator: training batches in, one step result out per optimizer step.
 */
import { bufferCount, concatMap, from, type OperatorFunction } from 'rxjs';

import type { StepOutcome, Trainer } from '../model/trainer.ts';
import type { Rejected } from './records.ts';
import type { TrainingBatch } from './trainingBatches.ts';

export interface TrainStepOptions {
  /**
   * Micro-batches whose gradients are averaged into one step, default 1. With batches of 256
   * and `accumulate: 2` a single machine reaches the reference's effective batch of 512.
   */
  readonly accumulate?: number;
}

/** The record `trainStep` emits after each optimizer step. */
export interface StepResult extends StepOutcome {
  /** Epoch of the step's first image. */
  readonly epoch: number;
  /** Number of the last micro-batch in the step, from 0; a resumed run continues after it. */
  readonly lastBatch: number;
  /** Seconds the step took, loading excluded. */
  readonly seconds: number;
  readonly imagesPerSecond: number;
  /** Images of the step's batches that could not be loaded and were left out. */
  readonly rejected: readonly Rejected[];
}

/**
 * Trains `trainer` on the incoming batches. Every `accumulate` consecutive batches make one
 * step, run one at a time in order; the next batches wait upstream meanwhile. A batch left
 * empty by rejections is skipped inside its step; a step whose batches are all empty fails.
 *
 * @example
 * batchNumbers(0, steps).pipe(loadTrainingBatches(set.samples, order, crops, size), trainStep(trainer))
 */
export function trainStep(trainer: Trainer, options: TrainStepOptions = {}): OperatorFunction<TrainingBatch, StepResult> {
  const accumulate = options.accumulate ?? 1;
  if (!Number.isSafeInteger(accumulate) || accumulate < 1) {
    throw new RangeError(`trainStep: accumulate must be a positive integer, got ${String(accumulate)}`);
  }
  return (source) =>
    source.pipe(
      bufferCount(accumulate),
      concatMap((batches) =>
        from(
          (async (): Promise<StepResult> => {
            if (batches.every((batch) => batch.size === 0)) throw allRejectedError(trainer.iteration + 1, batches);
            const started = performance.now();
            const outcome = await trainer.step(batches);
            const seconds = (performance.now() - started) / 1000;
            const first = batches[0] as TrainingBatch;
            const last = batches[batches.length - 1] as TrainingBatch;
            return {
              ...outcome,
              epoch: first.epoch,
              lastBatch: last.index,
              seconds,
              imagesPerSecond: outcome.images / seconds,
              rejected: batches.flatMap((b) => b.rejected),
            };
          })(),
        ),
      ),
    );
}

/** Builds the error for a step with no image to train on, naming the first rejected images and why. */
function allRejectedError(iteration: number, batches: readonly TrainingBatch[]): Error {
  const rejected = batches.flatMap((batch) => batch.rejected);
  const examples = rejected.slice(0, 3).map((r) => `${r.id}: ${r.reason}`);
  const more = rejected.length > examples.length ? `; and ${rejected.length - examples.length} more` : '';
  return new Error(
    `iteration ${iteration} has no image to train on: all ${rejected.length} images of its batches were rejected (${examples.join('; ')}${more}). ` +
      'Fix or remove these files, or check that the data holds aligned crops',
  );
}
