/**
 * The training data order: a seeded shuffle per epoch, a seeded mirror per image, and batches
 * that run across epoch boundaries as Caffe's image-data layer does.
 *
 * The images form one endless sequence: epoch 0's permutation of the samples, then epoch 1's,
 * and so on. Item i of that sequence is sample `permutation(epoch)[i mod N]` of epoch
 * ⌊i / N⌋, and batch b contains items b·B … b·B + B − 1. Every decision is a function of the seed
 * and the item's place, so batch b is the same whether a run reaches it straight through or
 * after resuming from a checkpoint.
 */
import { concatMap, from, range, type Observable, type OperatorFunction } from 'rxjs';

import type { TrainingSample } from '../datasets/training.ts';
import { mixSeed, permutation } from '../lib/random.ts';
import { isRejected, type Rejected } from './records.ts';

export interface TrainingOrderOptions {
  /** Seed of the shuffles and mirror decisions. */
  readonly seed: number;
  /** Images per batch. */
  readonly batchSize: number;
  /** Mirror each image left to right with probability 0.5. Default true, as the reference trains. */
  readonly mirror?: boolean;
}

/** The origin of one item of the sequence. */
export interface OrderItem {
  readonly epoch: number;
  /** Place within the epoch, from 0. */
  readonly position: number;
  /** Index into the sample list. */
  readonly sample: number;
  readonly mirror: boolean;
}

/** Item places of the endless training sequence, with a cache of the current epoch's permutation. */
export class TrainingOrder {
  readonly seed: number;
  readonly batchSize: number;
  readonly mirror: boolean;
  readonly sampleCount: number;
  private cachedEpoch = -1;
  private cachedOrder: Uint32Array = new Uint32Array(0);

  constructor(sampleCount: number, options: TrainingOrderOptions) {
    if (!Number.isSafeInteger(sampleCount) || sampleCount < 1) throw new RangeError(`training order: the dataset has ${sampleCount} samples; expected at least 1`);
    if (!Number.isSafeInteger(options.batchSize) || options.batchSize < 1) throw new RangeError(`training order: batch size must be a positive integer, got ${String(options.batchSize)}`);
    if (!Number.isSafeInteger(options.seed)) throw new RangeError(`training order: seed must be an integer, got ${String(options.seed)}`);
    this.sampleCount = sampleCount;
    this.seed = options.seed;
    this.batchSize = options.batchSize;
    this.mirror = options.mirror ?? true;
  }

  /** Returns the item at place `index` of the endless sequence. */
  item(index: number): OrderItem {
    const epoch = Math.floor(index / this.sampleCount);
    const position = index - epoch * this.sampleCount;
    if (epoch !== this.cachedEpoch) {
      this.cachedOrder = permutation(this.sampleCount, mixSeed(this.seed, epoch, 1));
      this.cachedEpoch = epoch;
    }
    const sample = this.cachedOrder[position] as number;
    const mirror = this.mirror && (mixSeed(this.seed, epoch, position, 2) & 1) === 1;
    return { epoch, position, sample, mirror };
  }

  /** Returns the items of batch `batch`, counted from 0. */
  batchItems(batch: number): OrderItem[] {
    const first = batch * this.batchSize;
    return Array.from({ length: this.batchSize }, (_, k) => this.item(first + k));
  }
}

/** Gives the aligned 8-bit RGB crop of a sample at the network's input size, or why it cannot. */
export type CropSource = (sample: TrainingSample) => Promise<Uint8Array | Rejected>;

/** One micro-batch of training images, in order, with the crops already mirrored where drawn. */
export interface TrainingBatch {
  /** Batch number, from 0. */
  readonly index: number;
  /** Epoch of the batch's first item. */
  readonly epoch: number;
  readonly ids: readonly string[];
  readonly labels: Int32Array;
  /** [size, height, width, 3] RGB, row-major. */
  readonly pixels: Uint8Array;
  readonly size: number;
  /** Items of the batch whose crop could not be loaded; they are left out of `pixels`. */
  readonly rejected: readonly Rejected[];
}

/** Mirrors an interleaved RGB image left to right, in place. */
export function mirrorInPlace(rgb: Uint8Array, height: number, width: number): void {
  for (let y = 0; y < height; y++) {
    const row = y * width * 3;
    for (let left = 0, right = width - 1; left < right; left++, right--) {
      const a = row + left * 3;
      const b = row + right * 3;
      for (let c = 0; c < 3; c++) {
        const t = rgb[a + c] as number;
        rgb[a + c] = rgb[b + c] as number;
        rgb[b + c] = t;
      }
    }
  }
}

/**
 * Turns batch numbers into batches: loads each item's crop through `crops`, mirrors the drawn
 * ones, and packs them with their labels. A crop that cannot be loaded is left out of its batch
 * and listed in `rejected`; the batch goes on with the rest. Batches come out one at a time, in
 * order, so a credit window around the consumer bounds how many are loaded ahead.
 */
export function loadTrainingBatches(
  samples: readonly TrainingSample[],
  order: TrainingOrder,
  crops: CropSource,
  inputSize: { readonly height: number; readonly width: number },
): OperatorFunction<number, TrainingBatch> {
  if (order.sampleCount !== samples.length) {
    throw new RangeError(`training order covers ${order.sampleCount} samples but the dataset has ${samples.length}`);
  }
  const { height, width } = inputSize;
  const bytes = height * width * 3;
  return concatMap((index: number) =>
    from(
      (async (): Promise<TrainingBatch> => {
        const items = order.batchItems(index);
        const loaded = await Promise.all(items.map((item) => crops(samples[item.sample] as TrainingSample)));
        const pixels = new Uint8Array(items.length * bytes);
        const labels: number[] = [];
        const ids: string[] = [];
        const rejected: Rejected[] = [];
        loaded.forEach((crop, k) => {
          const item = items[k] as OrderItem;
          const sample = samples[item.sample] as TrainingSample;
          if (isRejected(crop)) {
            rejected.push(crop);
            return;
          }
          if (crop.length !== bytes) {
            throw new Error(`crop of ${sample.path} has ${crop.length} bytes; expected ${height}×${width}×3 = ${bytes}`);
          }
          const target = pixels.subarray(labels.length * bytes, (labels.length + 1) * bytes);
          target.set(crop);
          if (item.mirror) mirrorInPlace(target, height, width);
          labels.push(sample.label);
          ids.push(sample.id);
        });
        return {
          index,
          epoch: (items[0] as OrderItem).epoch,
          ids,
          labels: Int32Array.from(labels),
          pixels: labels.length === items.length ? pixels : pixels.slice(0, labels.length * bytes),
          size: labels.length,
          rejected,
        };
      })(),
    ),
  );
}

/** Emits the batch numbers `first` … `first + count − 1`, as the head of a training pipeline. */
export function batchNumbers(first: number, count: number): Observable<number> {
  return range(first, Math.max(0, count));
}
