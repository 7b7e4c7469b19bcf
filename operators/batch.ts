import { Observable, type OperatorFunction } from 'rxjs';
import { isRejected, type Maybe, type Rejected } from './records.ts';

/** A group of records processed together; `index` counts batches from 0. */
export interface Batch<T> {
  readonly index: number;
  readonly items: readonly T[];
}

/**
 * Groups records into batches of `size`. The last batch keeps whatever is left when the source
 * completes, so no record is dropped. Rejected records are not batched: they pass through at
 * once, so a rejection can overtake the records that the unfinished batch holds.
 *
 * The operator keeps at most `size − 1` records. It does not itself slow the source down; put
 * it inside a `flowControl` window so that a slow consumer of the batches bounds how many
 * records are read ahead.
 *
 * @example
 * refs$.pipe(readImages(), batch(32)) // Observable<Batch<DecodedImage> | Rejected>
 */
export function batch<T>(size: number): OperatorFunction<Maybe<T>, Batch<T> | Rejected> {
  if (!Number.isInteger(size) || size < 1) {
    throw new RangeError(`batch size must be a positive integer, got ${String(size)}`);
  }

  return (source) =>
    new Observable<Batch<T> | Rejected>((subscriber) => {
      let pending: T[] = [];
      let index = 0;

      const flush = (): void => {
        const items = pending;
        pending = [];
        subscriber.next({ index: index++, items });
      };

      return source.subscribe({
        next(value) {
          if (isRejected(value)) {
            subscriber.next(value);
            return;
          }
          pending.push(value);
          if (pending.length === size) flush();
        },
        error(error: unknown) {
          subscriber.error(error);
        },
        complete() {
          if (pending.length > 0) flush();
          subscriber.complete();
        },
      });
    });
}
