/**
 * `mergeMap` with a concurrency limit that emits the results in input order.
 */
import { Observable, type OperatorFunction } from 'rxjs';

/**
 * Maps each value through the async `project`, runs at most `concurrency` projections at once,
 * and emits the results in the order of the inputs.
 *
 * The window slides over the input indices: the value at index `i` starts only after the result at
 * index `i - concurrency` has been emitted. So the projections in flight plus the results that
 * wait for an earlier one never exceed `concurrency`, and one slow value stalls the window
 * instead of letting later results pile up. The output completes after the source completes and
 * the last result is emitted. A rejected promise or a throw from `project` errors the output,
 * and unsubscribing drops the results of projections still in flight.
 *
 * NOTE: source values that the window has not reached yet wait in an unbounded queue, because
 * RxJS has no way to ask a source to slow down. Keep the source values small (paths, ids), and
 * let `project` create the large ones.
 *
 * @example
 * // Two decodes in flight at most, results in input order.
 * from(paths).pipe(orderedMergeMap((file) => fs.promises.readFile(file), 2));
 */
export function orderedMergeMap<T, R>(
  project: (value: T, index: number) => Promise<R>,
  concurrency: number,
): OperatorFunction<T, R> {
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new RangeError(`orderedMergeMap: concurrency must be a positive integer, got ${String(concurrency)}`);
  }

  return (source) =>
    new Observable<R>((subscriber) => {
      const pending = new FifoQueue<T>();
      const finished = new Map<number, R>();
      let receivedCount = 0;
      let startedCount = 0;
      let emittedCount = 0;
      let sourceComplete = false;

      const start = (value: T, index: number): void => {
        let result: Promise<R>;
        try {
          result = project(value, index);
        } catch (error) {
          subscriber.error(error);
          return;
        }
        result.then(
          (output) => {
            if (subscriber.closed) return;
            finished.set(index, output);
            drain();
          },
          (error: unknown) => subscriber.error(error),
        );
      };

      // Emits every result that is next in order, then starts as many pending values as the
      // window allows.
      const drain = (): void => {
        while (finished.has(emittedCount)) {
          const output = finished.get(emittedCount) as R;
          finished.delete(emittedCount);
          emittedCount += 1;
          subscriber.next(output);
          if (subscriber.closed) return;
        }

        while (pending.size > 0 && startedCount < emittedCount + concurrency) {
          const index = startedCount;
          startedCount += 1;
          start(pending.shift(), index);
          if (subscriber.closed) return;
        }

        if (sourceComplete && emittedCount === receivedCount) subscriber.complete();
      };

      const subscription = source.subscribe({
        next: (value) => {
          pending.push(value);
          receivedCount += 1;
          drain();
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => {
          sourceComplete = true;
          drain();
        },
      });

      return () => subscription.unsubscribe();
    });
}

/** A FIFO queue with O(1) `shift`, unlike `Array.prototype.shift` on a long array. */
class FifoQueue<T> {
  private items: T[] = [];
  private head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T {
    if (this.size === 0) throw new Error('FifoQueue.shift: the queue is empty');
    const item = this.items[this.head] as T;
    this.head += 1;
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}
