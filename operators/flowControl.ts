import { Observable, type MonoTypeOperatorFunction } from 'rxjs';

/**
 * A credit window that gives a push-based RxJS pipeline backpressure.
 *
 * `admit()` sits at the head of the pipeline and lets at most `window` records in before
 * `release()`, at the tail, has seen as many leave. Records that arrive while the window is full
 * wait at the head, where they are still cheap (paths, not decoded pixels). So a slow consumer
 * slows reading and decoding, and memory stays bounded by `window` records in flight.
 *
 * Every record that enters must leave through `release()` exactly once, rejections included,
 * or the window closes for good. Nothing checks this at run time: a stage that drops records
 * shows up as a stalled pipeline. Stages between the two must emit one record per input record
 * (`batch` may group them, but a batch releases nothing until its items are unpacked). So:
 * - the window must be at least the batch size of any `batch` between the two, or the first
 *   batch never fills and the pipeline stalls;
 * - a record that errors the stream is never released, so a `retry` between the two leaks credit;
 * - one `FlowControl` serves one subscription at a time; `admit()` throws on a second one.
 *
 * @example
 * const flow = flowControl(256);
 * refs$.pipe(flow.admit(), readImages(), similarityAlign(), batch(32), extractFeatures(model), flow.release())
 */
export interface FlowControl {
  /** Records admitted and not yet released. */
  readonly inFlight: number;
  admit<T>(): MonoTypeOperatorFunction<T>;
  /**
   * Returns credit for each record that passes: `creditOf(record)`, default 1. A stage that
   * splits one admitted record into several (one per face, say) gives 1 for one of them and 0
   * for the others.
   */
  release<T>(creditOf?: (value: T) => number): MonoTypeOperatorFunction<T>;
}

export function flowControl(window: number): FlowControl {
  if (!Number.isInteger(window) || window < 1) {
    throw new RangeError(`flow-control window must be a positive integer, got ${String(window)}`);
  }

  let inFlight = 0;
  // Set by admit(): moves queued records downstream while credit lasts.
  let pump: (() => void) | undefined;

  return {
    get inFlight() {
      return inFlight;
    },

    admit<T>(): MonoTypeOperatorFunction<T> {
      return (source) =>
        new Observable<T>((subscriber) => {
          const queue: T[] = [];
          let head = 0;
          let sourceDone = false;
          let pumping = false;
          let again = false;

          // Releases that happen synchronously inside next() re-enter here. The flags turn that
          // recursion into another turn of the loop below, so a long run of synchronous stages
          // cannot overflow the stack.
          const drain = (): void => {
            if (pumping) {
              again = true;
              return;
            }
            pumping = true;
            do {
              again = false;
              while (head < queue.length && inFlight < window && !subscriber.closed) {
                const value = queue[head] as T;
                queue[head++] = undefined as T;
                inFlight++;
                subscriber.next(value);
              }
              if (head > 1024 && head * 2 > queue.length) {
                queue.splice(0, head);
                head = 0;
              }
            } while (again);
            pumping = false;
            if (sourceDone && head >= queue.length) subscriber.complete();
          };

          if (pump !== undefined) {
            throw new Error('flowControl: admit() is already subscribed; create one flowControl per pipeline run');
          }
          pump = drain;
          const subscription = source.subscribe({
            next(value) {
              queue.push(value);
              drain();
            },
            error(error: unknown) {
              subscriber.error(error);
            },
            complete() {
              sourceDone = true;
              drain();
            },
          });
          return () => {
            subscription.unsubscribe();
            pump = undefined;
          };
        });
    },

    release<T>(creditOf: (value: T) => number = () => 1): MonoTypeOperatorFunction<T> {
      return (source) =>
        new Observable<T>((subscriber) =>
          source.subscribe({
            next(value) {
              subscriber.next(value);
              inFlight -= creditOf(value);
              pump?.();
            },
            error(error: unknown) {
              subscriber.error(error);
            },
            complete() {
              subscriber.complete();
            },
          }),
        );
    },
  };
}
