/**
 * Wraps a stage so that its results come from an `ArtifactCache` when present and are stored
 * there when computed.
 */
import { Observable, Subject, type OperatorFunction, type Subscription } from 'rxjs';

import { ArtifactCache } from '../lib/artifactCache.ts';
import { log } from '../lib/log.ts';
import { isRejected, reject, type ImageRef, type Maybe } from './records.ts';

export interface CachedSpec<I extends ImageRef, O> {
  /** Stage name; part of the key and the group in `ArtifactCache.stats`. */
  readonly stage: string;
  /** Version of the stage's code; bump it when its output changes for the same input and params. */
  readonly version: string | number;
  /** Stage parameters that affect its output (JSON values only). */
  readonly params: unknown;
  /**
   * Content hash of an input (for an image, `hashFile(ref.path)`). Returning a string instead
   * of a promise lets a cache hit be emitted synchronously. `undefined` sends the input to the
   * stage without looking it up or storing its output, for inputs that cannot be hashed but
   * that the stage should still see (a missing file, which the stage then rejects with its own
   * reason). A throw or rejected promise turns that input into a `Rejected` record.
   */
  readonly inputHash: (input: I) => Promise<string | undefined> | string | undefined;
  /** Keys of the artifacts this stage's output was computed from, in a fixed order. */
  readonly upstream?: readonly string[] | ((input: I) => readonly string[]);
  readonly encode: (output: O) => Uint8Array;
  /** Rebuilds an output from its stored bytes and the input it belongs to. */
  readonly decode: (bytes: Uint8Array, input: I) => O;
  /** Small JSON value stored beside each artifact in the index. */
  readonly meta?: (output: O) => unknown;
  /** Run the stage again for inputs with a recorded failure, default false. */
  readonly retryFailed?: boolean;
}

/** Running totals over every subscription of one `cached` operator. */
export interface CacheCounters {
  /** Inputs served from a stored artifact. */
  hits: number;
  /** Inputs sent to the wrapped stage. */
  misses: number;
  /** Inputs served from a recorded failure. */
  failures: number;
  /** Outputs of the wrapped stage stored as artifacts. */
  stored: number;
  /** Rejections of the wrapped stage stored as failures. */
  storedFailures: number;
}

export type CachedOperator<I, O> = OperatorFunction<Maybe<I>, Maybe<O>> & { readonly counters: CacheCounters };

/** One input waiting for its output, in input order. */
interface Slot<I, O> {
  readonly input: I;
  done: boolean;
  output: Maybe<O> | undefined;
  key: string | undefined;
}

/**
 * Runs `stage` only on inputs whose result is not in `cache`, and stores what it computes.
 *
 * For each input the operator computes `ArtifactCache.key({ stage, version, params, input:
 * inputHash(i), upstream })`. A stored artifact is decoded and emitted without running the
 * stage. A recorded failure is emitted as a `Rejected` of the stage that failed (stored with it)
 * unless `retryFailed` is set. Every other input goes through `stage`, whose output is stored as an artifact, or whose
 * rejection is stored as a failure. Incoming `Rejected` records pass through. Outputs leave in
 * input order, so a hit waits behind an earlier miss.
 *
 * `stage` must emit exactly one record per input, in input order (`batch` followed by an
 * unpacking stage qualifies). The stream errors when it emits more or completes with fewer.
 * An artifact whose `decode` throws is dropped from the cache with a warning and recomputed.
 * Cache read and write errors (disk full, a damaged index) error the stream.
 *
 * @example
 * // `extractEach(model)` stands for any stage that emits one Feature per AlignedFace, in order.
 * const features = cached(cache, {
 *   stage: 'extractFeatures', version: 1, params: { model: 'sphere20a' },
 *   inputHash: (face) => sha256Hex(face.rgb),
 *   encode: (f) => new Uint8Array(f.vector.buffer, f.vector.byteOffset, f.vector.byteLength),
 *   decode: (bytes, face) => ({ id: face.id, path: face.path, vector: new Float32Array(bytes.slice().buffer) }),
 * }, extractEach(model));
 * faces$.pipe(features).subscribe(...); // features.counters.hits after the run
 */
export function cached<I extends ImageRef, O>(
  cache: ArtifactCache,
  spec: CachedSpec<I, O>,
  stage: OperatorFunction<I, Maybe<O>>,
): CachedOperator<I, O> {
  const counters: CacheCounters = { hits: 0, misses: 0, failures: 0, stored: 0, storedFailures: 0 };

  const keyOf = (input: I, inputHash: string): string => {
    const upstream = typeof spec.upstream === 'function' ? spec.upstream(input) : spec.upstream;
    return ArtifactCache.key({ stage: spec.stage, version: spec.version, params: spec.params, input: inputHash, upstream });
  };

  const operator = (source: Observable<Maybe<I>>): Observable<Maybe<O>> =>
    new Observable<Maybe<O>>((subscriber) => {
      const slots: Array<Slot<I, O> | { readonly passed: Maybe<O> }> = [];
      let head = 0;
      // Slots sent to the stage, oldest first. The stage's next output belongs to the first.
      const misses: Array<Slot<I, O>> = [];
      let missHead = 0;
      let pendingHashes = 0;
      let sourceDone = false;
      let stageDone = false;
      let flushing = false;
      let again = false;

      const stageInput = new Subject<I>();

      const fail = (error: unknown): void => {
        subscriber.error(error);
      };

      // Emits finished slots from the head. Re-entrant calls (a synchronous downstream that
      // pulls more input) become another turn of the loop, so the stack stays flat.
      const flush = (): void => {
        if (flushing) {
          again = true;
          return;
        }
        flushing = true;
        do {
          again = false;
          while (head < slots.length && !subscriber.closed) {
            const slot = slots[head] as Slot<I, O> | { readonly passed: Maybe<O> };
            let value: Maybe<O>;
            if ('passed' in slot) {
              value = slot.passed;
            } else {
              if (!slot.done) break;
              value = slot.output as Maybe<O>;
            }
            slots[head++] = undefined as unknown as Slot<I, O>;
            subscriber.next(value);
          }
          if (head > 1024 && head * 2 > slots.length) {
            slots.splice(0, head);
            head = 0;
          }
        } while (again);
        flushing = false;
        maybeComplete();
      };

      // Completes the stage's input once no more misses can arrive, and the output once every
      // slot has been emitted.
      const maybeComplete = (): void => {
        if (subscriber.closed || !sourceDone || pendingHashes > 0) return;
        if (!stageInput.isStopped) stageInput.complete();
        if (missHead < misses.length) {
          if (stageDone) {
            fail(new Error(`cached(${spec.stage}): the wrapped stage completed after ${missHead} of ${misses.length} records; it must emit one record per input`));
          }
          return;
        }
        if (head >= slots.length) subscriber.complete();
      };

      const resolve = (slot: Slot<I, O>, output: Maybe<O>): void => {
        slot.done = true;
        slot.output = output;
      };

      // Looks the key up and either resolves the slot or sends its input to the stage. Without
      // a hash the input goes to the stage, uncached.
      const lookUp = (slot: Slot<I, O>, inputHash: string | undefined): void => {
        if (inputHash === undefined) {
          counters.misses++;
          misses.push(slot);
          stageInput.next(slot.input);
          return;
        }
        const key = keyOf(slot.input, inputHash);
        slot.key = key;
        const entry = cache.get(key);
        if (entry?.kind === 'artifact') {
          let output: O | undefined;
          try {
            output = spec.decode(entry.bytes, slot.input);
          } catch (error) {
            log.warn({ stage: spec.stage, id: slot.input.id, key, error: (error as Error).message }, 'artifact cache: stored artifact could not be decoded; recomputing');
            cache.delete(key);
          }
          if (output !== undefined) {
            counters.hits++;
            resolve(slot, output);
            return;
          }
        } else if (entry?.kind === 'failure' && spec.retryFailed !== true) {
          counters.failures++;
          // The failure may come from a stage inside the wrapped one (a file that would not
          // decode); its name is stored beside the reason.
          const failedStage = (entry.meta as { failedStage?: unknown } | undefined)?.failedStage;
          resolve(slot, reject(slot.input, typeof failedStage === 'string' ? failedStage : spec.stage, entry.reason));
          return;
        }
        counters.misses++;
        misses.push(slot);
        stageInput.next(slot.input);
      };

      const onStageOutput = (output: Maybe<O>): void => {
        const slot = misses[missHead];
        if (slot === undefined) {
          fail(new Error(`cached(${spec.stage}): the wrapped stage emitted more records than it received inputs; it must emit one record per input`));
          return;
        }
        misses[missHead++] = undefined as unknown as Slot<I, O>;
        if (missHead > 1024 && missHead * 2 > misses.length) {
          misses.splice(0, missHead);
          missHead = 0;
        }

        // Outputs are paired with inputs by position, which is safe only if the stage keeps
        // them in order. Another image's output stored under this key would poison later runs.
        const outputId = (output as { id?: unknown }).id;
        if (typeof outputId === 'string' && outputId !== slot.input.id) {
          fail(new Error(`cached(${spec.stage}): the wrapped stage emitted ${outputId} where ${slot.input.id} was next; it must emit one record per input, in input order`));
          return;
        }
        const key = slot.key;
        if (key === undefined) {
          // The input could not be hashed, so its output is passed on without being stored.
        } else if (isRejected(output)) {
          // Filed under the stage that failed, which may lie inside the wrapped one, so that
          // pruning that stage's failures lets them run again.
          cache.putFailure(key, output.reason, { stage: output.stage, meta: { failedStage: output.stage } });
          counters.storedFailures++;
        } else {
          const meta = spec.meta?.(output);
          cache.put(key, spec.encode(output), meta === undefined ? { stage: spec.stage } : { stage: spec.stage, meta });
          counters.stored++;
        }
        resolve(slot, output);
        flush();
      };

      const stageSubscription: Subscription = stageInput.pipe(stage).subscribe({
        next(output) {
          try {
            onStageOutput(output);
          } catch (error) {
            fail(error);
          }
        },
        error: fail,
        complete() {
          stageDone = true;
          maybeComplete();
        },
      });

      const sourceSubscription = source.subscribe({
        next(value) {
          if (isRejected(value)) {
            slots.push({ passed: value });
            flush();
            return;
          }
          const slot: Slot<I, O> = { input: value, done: false, output: undefined, key: undefined };
          slots.push(slot);
          try {
            let hash: Promise<string | undefined> | string | undefined;
            try {
              hash = spec.inputHash(value);
            } catch (error) {
              hash = Promise.reject(error);
            }
            if (typeof hash === 'string' || hash === undefined) {
              lookUp(slot, hash);
              flush();
              return;
            }
            pendingHashes++;
            hash.then(
              (resolved) => {
                pendingHashes--;
                if (subscriber.closed) return;
                try {
                  lookUp(slot, resolved);
                  flush();
                } catch (error) {
                  fail(error);
                }
              },
              (error: unknown) => {
                pendingHashes--;
                if (subscriber.closed) return;
                log.warn({ stage: spec.stage, id: value.id, error: (error as Error).message }, 'artifact cache: could not hash the input; rejecting it');
                resolve(slot, reject(value, spec.stage, `could not hash the input: ${(error as Error).message}`));
                flush();
              },
            );
          } catch (error) {
            fail(error);
          }
        },
        error: fail,
        complete() {
          sourceDone = true;
          flush();
        },
      });

      return () => {
        sourceSubscription.unsubscribe();
        stageSubscription.unsubscribe();
      };
    });

  return Object.assign(operator, { counters });
}
