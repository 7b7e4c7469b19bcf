/**
 * Decoding and alignment in a pool of worker threads: `readImages` followed by `similarityAlign`,
 * with both steps for one image run as one task on another core.
 */
import os from 'node:os';

import { Piscina } from 'piscina';
import { Observable, type OperatorFunction } from 'rxjs';

import { orderedMergeMap } from '../lib/orderedMergeMap.ts';
import { readImages } from './readImages.ts';
import { isRejected, reject, type AlignedFace, type ImageRef, type Landmarks, type Maybe, type Rejected } from './records.ts';
import { similarityAlign, type SimilarityAlignOptions } from './similarityAlign.ts';
import type { DecodeAlignTask, DecodeAlignWorkerData } from './workers/decodeAlign.worker.ts';

const WORKER_FILE = new URL('./workers/decodeAlign.worker.mjs', import.meta.url);
/** Tasks that one worker thread runs at once, and the default of `maxInFlight` per thread. */
const TASKS_PER_THREAD = 3;

export interface AlignInWorkersOptions extends SimilarityAlignOptions {
  /** Returns the landmarks of an image, or `undefined` when there are none. Runs on the calling thread. */
  readonly landmarksOf: (ref: ImageRef) => Landmarks | undefined;
  /** Number of worker threads, default `os.availableParallelism()`. */
  readonly threads?: number;
  /** Largest number of images dispatched and not yet emitted, default three times `threads`. */
  readonly maxInFlight?: number;
  /** Largest image to decode, in pixels, as for `readImages` (default 50,000,000). */
  readonly maxPixels?: number;
}

/**
 * Decodes and aligns each image in a pool of worker threads, giving the same records as
 * `readImages()` followed by `similarityAlign()` with landmarks from `landmarksOf`.
 *
 * Each image is one task: the worker decodes it with `decodeImage` and aligns it as
 * `similarityAlign` does, and the aligned pixels come back transferred, not copied. Results are
 * emitted in input order. At most `maxInFlight` images are dispatched and not yet emitted, so a
 * slow consumer holds back the workers instead of letting results pile up. Incoming `Rejected`
 * records pass through unchanged, in their place.
 *
 * A file that cannot be decoded and a face that cannot be aligned become the same `Rejected`
 * records as in the single-thread stages. An image for which `landmarksOf` returns `undefined`
 * becomes a `Rejected` of stage `similarityAlign` without being read, so it is reported as
 * lacking landmarks even when the file is missing too.
 *
 * NOTE: the workers' decodes all run on the process's libuv thread pool (UV_THREADPOOL_SIZE,
 * default 4 threads), so at most that many images decode at once, whatever `threads` is.
 *
 * The pool starts when the output is subscribed and is destroyed when the output completes,
 * errors or is unsubscribed. A task that fails with an error (a fault of the run, such as EMFILE,
 * or a worker that cannot start) errors the output.
 *
 * @example
 * const landmarks = await readLandmarks();
 * from(refs).pipe(decodeAndAlignInWorkers({ landmarksOf: (ref) => landmarks.get(ref.id) }));
 *
 * @throws TypeError or RangeError at call time when an option is invalid, including the
 *   template, output size and `maxPixels` checks of `similarityAlign` and `readImages`.
 */
export function decodeAndAlignInWorkers(
  options: AlignInWorkersOptions,
): OperatorFunction<Maybe<ImageRef>, Maybe<AlignedFace>> {
  const { landmarksOf, threads, maxInFlight, workerData } = resolveOptions(options);

  return (source) =>
    new Observable<Maybe<AlignedFace>>((subscriber) => {
      const pool = new Piscina<DecodeAlignTask, AlignedFace | Rejected>({
        filename: WORKER_FILE.href,
        minThreads: threads,
        maxThreads: threads,
        workerData,
        // A task spends most of its time waiting for sharp, which decodes on the libuv thread
        // pool. Several tasks per thread keep decodes queued there while the thread aligns an
        // earlier image. On a 2-core machine, 3 gave 5–8 % more images per second than 2,
        // and 4 no more than 3 (bench/alignWorkers.ts).
        concurrentTasksPerWorker: TASKS_PER_THREAD,
      });
      const dispatch = (record: Maybe<ImageRef>): Promise<Maybe<AlignedFace>> => {
        if (isRejected(record)) return Promise.resolve(record);
        const landmarks = landmarksOf(record);
        if (landmarks === undefined) {
          return Promise.resolve(
            reject(record, 'similarityAlign', `cannot align ${record.path}: no landmarks for ${record.id}; expected five landmarks for every image`),
          );
        }
        return pool.run({ ref: { id: record.id, path: record.path }, landmarks });
      };

      const subscription = source.pipe(orderedMergeMap(dispatch, maxInFlight)).subscribe(subscriber);
      return () => {
        subscription.unsubscribe();
        // Destroying the pool cancels the tasks still running. Their results are not emitted,
        // because the inner subscription is already closed.
        pool.destroy().catch(() => undefined);
      };
    });
}

interface AlignInWorkersSettings {
  readonly landmarksOf: (ref: ImageRef) => Landmarks | undefined;
  readonly threads: number;
  readonly maxInFlight: number;
  readonly workerData: DecodeAlignWorkerData;
}

function resolveOptions(options: AlignInWorkersOptions): AlignInWorkersSettings {
  if (typeof options.landmarksOf !== 'function') {
    throw new TypeError(`decodeAndAlignInWorkers: options.landmarksOf must be a function, got ${typeof options.landmarksOf}`);
  }
  const threads = options.threads ?? os.availableParallelism();
  if (!Number.isSafeInteger(threads) || threads < 1) {
    throw new RangeError(`decodeAndAlignInWorkers: threads must be a positive integer, got ${String(threads)}`);
  }
  const maxInFlight = options.maxInFlight ?? TASKS_PER_THREAD * threads;
  if (!Number.isSafeInteger(maxInFlight) || maxInFlight < 1) {
    throw new RangeError(`decodeAndAlignInWorkers: maxInFlight must be a positive integer, got ${String(maxInFlight)}`);
  }

  // Both factories check their options at call time, so invalid ones throw here, not in a worker.
  const align: SimilarityAlignOptions = {
    ...(options.template === undefined ? {} : { template: options.template }),
    ...(options.outputSize === undefined ? {} : { outputSize: options.outputSize }),
  };
  similarityAlign(align);
  readImages(options.maxPixels === undefined ? {} : { maxPixels: options.maxPixels });

  const workerData: DecodeAlignWorkerData =
    options.maxPixels === undefined ? { align } : { align, maxPixels: options.maxPixels };
  return { landmarksOf: options.landmarksOf, threads, maxInFlight, workerData };
}
