/**
 * Decoding and alignment in a pool of worker threads: `readImages` followed by `similarityAlign`,
 * with both steps for each image run on another core.
 */
import os from 'node:os';

import { Piscina } from 'piscina';
import { Observable, type OperatorFunction, type Subscriber } from 'rxjs';

import { readImages } from './readImages.ts';
import { isRejected, reject, type AlignedFace, type ImageRef, type Landmarks, type Maybe, type Rejected } from './records.ts';
import { similarityAlign, type SimilarityAlignOptions } from './similarityAlign.ts';
import type { DecodeAlignImage, DecodeAlignTask, DecodeAlignWorkerData } from './workers/decodeAlign.worker.ts';

const WORKER_FILE = new URL('./workers/decodeAlign.worker.mjs', import.meta.url);
/** Tasks that one worker thread runs at once. */
const TASKS_PER_THREAD = 2;
/** Largest number of images in one task. */
const MAX_IMAGES_PER_TASK = 8;

export interface AlignInWorkersOptions extends SimilarityAlignOptions {
  /** Returns the landmarks of an image, or `undefined` when there are none. Runs on the calling thread. */
  readonly landmarksOf: (ref: ImageRef) => Landmarks | undefined;
  /** Number of worker threads, default `os.availableParallelism()`. */
  readonly threads?: number;
  /**
   * Largest number of images dispatched and not yet emitted, default 8 per thread (2 tasks of
   * 4 images).
   */
  readonly maxInFlight?: number;
  /** Largest image to decode, in pixels, as for `readImages` (default 50,000,000). */
  readonly maxPixels?: number;
}

/**
 * Decodes and aligns each image in a pool of worker threads, giving the same records as
 * `readImages()` followed by `similarityAlign()` with landmarks from `landmarksOf`.
 *
 * The worker decodes each image with `decodeImage` and aligns it as `similarityAlign` does, and
 * the aligned pixels come back transferred, not copied. Results are emitted in input order. At
 * most `maxInFlight` images are dispatched and not yet emitted, so a slow consumer holds back the
 * workers instead of letting results pile up. Incoming `Rejected` records pass through unchanged,
 * in their place.
 *
 * Images that are waiting when a task starts go to the worker together, up to 8 in one task, and
 * a worker runs 2 tasks at once. One message for several images costs the threads less than one
 * message each. An image that arrives while a task slot is free goes out at once, alone, so a
 * slow source gets no added latency.
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
 * or a worker that cannot start) errors the output, and so does an error thrown by `landmarksOf`.
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
  const settings = resolveOptions(options);

  return (source) =>
    new Observable<Maybe<AlignedFace>>((subscriber) => {
      const pool = new Piscina<DecodeAlignTask, Array<AlignedFace | Rejected>>({
        filename: WORKER_FILE.href,
        minThreads: settings.threads,
        maxThreads: settings.threads,
        workerData: settings.workerData,
        // A task spends most of its time waiting for sharp, which decodes on the libuv thread
        // pool. Two tasks per thread keep decodes queued there while the thread aligns the
        // images of another task.
        concurrentTasksPerWorker: TASKS_PER_THREAD,
      });
      const dispatcher = new OrderedDispatcher(settings, subscriber, (task) => pool.run(task));

      const subscription = source.subscribe({
        next: (record) => dispatcher.add(record),
        error: (error: unknown) => subscriber.error(error),
        complete: () => dispatcher.endOfInput(),
      });
      return () => {
        subscription.unsubscribe();
        // Destroying the pool cancels the tasks still running. Their results are not emitted,
        // because the subscriber is already closed.
        pool.destroy().catch(() => undefined);
      };
    });
}

/**
 * Groups waiting images into tasks, runs them, and emits the results in input order.
 *
 * Each record gets the index of its place in the input. A record leaves the queue only while
 * fewer than `maxInFlight` records are dispatched and not yet emitted, and an image that needs a
 * worker leaves it only when a task slot is free or a task being filled has room.
 */
class OrderedDispatcher {
  private readonly waiting: Array<Maybe<ImageRef>> = [];
  private waitingHead = 0;
  private readonly finished = new Map<number, Maybe<AlignedFace>>();
  private receivedCount = 0;
  private dispatchedCount = 0;
  private emittedCount = 0;
  private runningTasks = 0;
  private inputEnded = false;
  private drainScheduled = false;
  private readonly maxRunningTasks: number;
  private readonly imagesPerTask: number;

  constructor(
    private readonly settings: AlignInWorkersSettings,
    private readonly subscriber: Subscriber<Maybe<AlignedFace>>,
    private readonly runTask: (task: DecodeAlignTask) => Promise<Array<AlignedFace | Rejected>>,
  ) {
    this.maxRunningTasks = settings.threads * TASKS_PER_THREAD;
    // A small window is spread over the task slots, so that every thread gets work.
    this.imagesPerTask = Math.max(1, Math.min(MAX_IMAGES_PER_TASK, Math.floor(settings.maxInFlight / this.maxRunningTasks)));
  }

  add(record: Maybe<ImageRef>): void {
    this.waiting.push(record);
    this.receivedCount += 1;
    this.scheduleDrain();
  }

  endOfInput(): void {
    this.inputEnded = true;
    this.scheduleDrain();
  }

  // Draining in a microtask lets a source that emits many records at once (such as `from(list)`)
  // queue them all first, so that they go out in full tasks.
  private scheduleDrain(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    queueMicrotask(() => {
      this.drainScheduled = false;
      this.drain();
    });
  }

  private drain(): void {
    for (;;) {
      if (this.subscriber.closed) return;
      while (this.finished.has(this.emittedCount)) {
        const output = this.finished.get(this.emittedCount) as Maybe<AlignedFace>;
        this.finished.delete(this.emittedCount);
        this.emittedCount += 1;
        this.subscriber.next(output);
        if (this.subscriber.closed) return;
      }
      if (!this.dispatch()) break;
    }
    if (this.inputEnded && this.emittedCount === this.receivedCount) this.subscriber.complete();
  }

  /** Takes records off the queue as far as the window and the task slots allow, and returns whether it took any. */
  private dispatch(): boolean {
    const windowEnd = this.emittedCount + this.settings.maxInFlight;
    let task: DecodeAlignImage[] = [];
    let indices: number[] = [];
    let took = false;

    while (this.waitingHead < this.waiting.length && this.dispatchedCount < windowEnd) {
      const record = this.waiting[this.waitingHead] as Maybe<ImageRef>;
      if (!isRejected(record) && task.length === 0 && this.runningTasks >= this.maxRunningTasks) break;
      this.takeHead();
      took = true;
      const index = this.dispatchedCount;
      this.dispatchedCount += 1;

      if (isRejected(record)) {
        this.finished.set(index, record);
        continue;
      }
      let landmarks: Landmarks | undefined;
      try {
        landmarks = this.settings.landmarksOf(record);
      } catch (error) {
        this.subscriber.error(error);
        return false;
      }
      if (landmarks === undefined) {
        this.finished.set(
          index,
          reject(record, 'similarityAlign', `cannot align ${record.path}: no landmarks for ${record.id}; expected five landmarks for every image`),
        );
        continue;
      }

      if (task.length === 0) this.runningTasks += 1;
      task.push({ ref: { id: record.id, path: record.path }, landmarks });
      indices.push(index);
      if (task.length === this.imagesPerTask) {
        this.start(task, indices);
        task = [];
        indices = [];
      }
    }
    if (task.length > 0) this.start(task, indices);
    return took;
  }

  private takeHead(): void {
    this.waitingHead += 1;
    // Drop the consumed part of the queue now and then, so a long input does not stay in memory.
    if (this.waitingHead >= 1024 && this.waitingHead * 2 >= this.waiting.length) {
      this.waiting.splice(0, this.waitingHead);
      this.waitingHead = 0;
    }
  }

  private start(task: DecodeAlignTask, indices: readonly number[]): void {
    this.runTask(task).then(
      (results) => {
        this.runningTasks -= 1;
        if (this.subscriber.closed) return;
        results.forEach((result, position) => this.finished.set(indices[position] as number, result));
        this.drain();
      },
      (error: unknown) => this.subscriber.error(error),
    );
  }
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
  const maxInFlight = options.maxInFlight ?? TASKS_PER_THREAD * MAX_IMAGES_PER_TASK * threads;
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
