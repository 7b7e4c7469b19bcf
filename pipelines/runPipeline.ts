/**
 * Runs a validated pipeline: opens its stages, wires them into one RxJS stream with the artifact
 * cache around each cacheable stage, bounds the images in flight, counts what every stage does,
 * and returns a report.
 *
 * Cache keys form a chain per image. The first link is the SHA-256 of the image file. Each
 * later stage's key hashes its name, version and output-relevant parameters together with the
 * previous link and any per-image input (landmarks from a file). All keys of an image are known
 * before anything runs, so a change to one stage's parameters changes its key and every key
 * after it, and none before it.
 *
 * A cacheable stage whose stored output is complete on its own (aligned crops, features) wraps
 * the whole pipeline up to and including itself, so on a hit nothing before it runs, not even
 * decoding.
 * A stage whose stored output needs its input back (detections need the pixels) wraps only
 * itself.
 */
import { existsSync } from 'node:fs';

import { catchError, from, identity, ignoreElements, lastValueFrom, Observable, Subject, tap, type OperatorFunction } from 'rxjs';

import { ArtifactCache, hashFile, sha256Hex } from '../lib/artifactCache.ts';
import { log } from '../lib/log.ts';
import { initBackend, type BackendInfo, type BackendName } from '../model/backend.ts';
import type { Batch } from '../operators/batch.ts';
import { cached, type CachedOperator } from '../operators/cached.ts';
import { flowControl } from '../operators/flowControl.ts';
import type { VerificationReport } from '../operators/kFoldVerify.ts';
import type { TrainingSummary } from './train.ts';
import { isRejected, type ImageRef, type Maybe, type Rejected } from '../operators/records.ts';
import { SOURCE_IDS, type OpenedStage, type PipelineContext, type StageDefinition } from './operatorDefinition.ts';
import type { ValidatedPipeline, ValidatedStage } from './spec.ts';
import { StageProgress } from './stageProgress.ts';

export interface RunPipelineOptions {
  /** Cache folder; overrides the spec's `cache`. `null` runs without a cache. */
  readonly cacheDir?: string | null;
  /** Run stages again for images whose failure is cached (default false). */
  readonly retryFailed?: boolean;
  /** Draw one progress bar per stage (default: when stderr is a TTY); otherwise log every 15 s. */
  readonly progress?: boolean;
  /** Force one tensor backend; by default the fastest that loads. */
  readonly backend?: BackendName;
}

/** What one stage did during a run. Counts are in images, also for stages that see batches. */
export interface StageCounts {
  readonly label: string;
  readonly op: string;
  readonly input: string;
  readonly output: string;
  readonly cacheable: boolean;
  /** Records the stage's operator received (cache hits and passed-on rejections excluded). */
  inputs: number;
  /** Records the stage's operator emitted that were not rejections. */
  outputs: number;
  /** Images whose output came from the cache. */
  cacheHits: number;
  /** Images whose output the stage computed and stored. */
  stored: number;
  /** Images rejected because the cache contains a failure of this stage for them. */
  cachedFailures: number;
  /** Images this stage never saw because a later stage's cache had their result. */
  skipped: number;
  /** Rejections of earlier stages that passed through this one. */
  passedOn: number;
  /** Rejections made by this stage, computed or from the cache, by reason. */
  rejected: Record<string, number>;
  /** Seconds from the first record in to the last record out (stages overlap, so these do not add up). */
  activeSeconds: number;
}

export interface PipelineReport {
  readonly name: string;
  readonly spec: string;
  readonly startedAt: string;
  readonly seconds: number;
  readonly backend: Pick<BackendInfo, 'name' | 'threads'> | undefined;
  readonly cacheDir: string | undefined;
  /** Images the source listed. */
  readonly images: number;
  readonly stages: readonly StageCounts[];
  /** Every image that did not make it through, with the stage and reason. */
  readonly rejected: readonly Rejected[];
  readonly memory: {
    readonly peakRssBytes: number;
    /** Resident set size after every 1,000 finished images, to show that memory stays flat. */
    readonly samples: ReadonlyArray<{ readonly images: number; readonly rssBytes: number }>;
  };
  /** The terminal stage's result: the k-fold verification report, or the summary of a training run. */
  readonly result?: VerificationReport | TrainingSummary | undefined;
}

/** Returns the number of rejections a stage made, over all reasons. */
export function rejectedTotal(counts: Pick<StageCounts, 'rejected'>): number {
  return Object.values(counts.rejected).reduce((a, b) => a + b, 0);
}

/** One stage opened for a run, with what the runner derives from it. */
interface LiveStage {
  readonly spec: ValidatedStage;
  readonly definition: StageDefinition;
  readonly opened: OpenedStage;
  readonly keyParams: unknown;
  readonly cacheable: boolean;
  readonly counts: StageCounts;
  cachedOperator?: CachedOperator<ImageRef, unknown>;
  /** Records the stage has received and not yet emitted (per-item stages). */
  held?: () => number;
}

/** Sources list their images up front; every other stage is opened here. */
async function openStages(pipeline: ValidatedPipeline, context: PipelineContext, cacheEnabled: boolean): Promise<{ images: readonly ImageRef[]; stages: LiveStage[] }> {
  const [first, ...rest] = pipeline.stages;
  if (first === undefined || first.definition.kind !== 'source') throw new Error('a pipeline starts with a source');
  const opening = async <T>(spec: ValidatedStage, open: () => Promise<T>): Promise<T> => {
    try {
      return await open();
    } catch (error) {
      throw new StageError(`${spec.path} (${spec.label})`, error instanceof Error ? error.message : String(error), { cause: error });
    }
  };
  const source = first.definition;
  const images = await opening(first, () => source.open(first.params, context));
  context.shared.set(SOURCE_IDS, new Set(images.map((ref) => ref.id)));
  const stages: LiveStage[] = [];
  try {
    for (const spec of rest) {
      const definition = spec.definition as StageDefinition;
      const opened = await opening(spec, () => definition.open(spec.params, context));
      const cacheable = cacheEnabled && spec.cache && opened.cache !== undefined && definition.shape === 'per-item';
      stages.push({
        spec,
        definition,
        opened,
        keyParams: opened.keyParams ?? spec.params,
        cacheable,
        counts: {
          label: spec.label,
          op: definition.name,
          input: definition.input,
          output: definition.output,
          cacheable,
          inputs: 0,
          outputs: 0,
          cacheHits: 0,
          stored: 0,
          cachedFailures: 0,
          skipped: 0,
          passedOn: 0,
          rejected: {},
          activeSeconds: 0,
        },
      });
    }
  } catch (error) {
    await disposeStages(stages);
    throw error;
  }
  return { images, stages };
}

async function disposeStages(stages: readonly LiveStage[]): Promise<void> {
  for (const stage of stages) {
    try {
      await stage.opened.dispose?.();
    } catch (error) {
      log.warn({ stage: stage.spec.label, error: (error as Error).message }, 'could not release a stage');
    }
  }
}

/** Returns the key of a stage's artifact for a key input, as `cached` computes it. */
function artifactKey(stage: LiveStage, input: string): string {
  return ArtifactCache.key({ stage: stage.definition.name, version: stage.definition.version, params: stage.keyParams, input });
}

/**
 * Computes the cache-key chain of each image: `chain[i]` is the key input of stage i (0-based
 * among the non-source stages), which `cached` hashes with the stage's name, version and
 * parameters into the artifact key.
 */
class KeyChains {
  private readonly chains = new Map<string, Promise<string[]>>();

  constructor(
    private readonly stages: readonly LiveStage[],
    private readonly refs: ReadonlyMap<string, ImageRef>,
  ) {}

  /**
   * Returns the key input of stage `index` for image `id`, or undefined when the image file
   * cannot be read. Such an image then runs uncached, and `readImages` rejects it with the
   * reason.
   */
  async inputOf(id: string, index: number): Promise<string | undefined> {
    const chain = await this.chainOf(id).catch(() => undefined);
    return chain?.[index];
  }

  /** Returns the artifact key of stage `index` for image `id`. */
  async keyOf(id: string, index: number): Promise<string> {
    return artifactKey(this.stages[index] as LiveStage, (await this.chainOf(id))[index] as string);
  }

  forget(id: string): void {
    this.chains.delete(id);
  }

  private chainOf(id: string): Promise<string[]> {
    let chain = this.chains.get(id);
    if (chain === undefined) {
      chain = this.compute(id);
      this.chains.set(id, chain);
    }
    return chain;
  }

  private async compute(id: string): Promise<string[]> {
    const ref = this.refs.get(id);
    if (ref === undefined) throw new Error(`no image with id ${id} in this run`);
    let previous = await hashFile(ref.path);
    const inputs: string[] = [];
    for (const stage of this.stages) {
      const itemKey = stage.opened.itemKey?.(id);
      const input = itemKey === undefined ? previous : sha256Hex(`${previous}\n${itemKey}`);
      inputs.push(input);
      // A batching stage changes grouping, not content, so the chain passes through it.
      if (stage.definition.shape === 'per-item') {
        previous = artifactKey(stage, input);
      }
    }
    return inputs;
  }
}

function itemsIn(record: unknown): number {
  if (isRejected(record)) return 1;
  const items = (record as Partial<Batch<unknown>>).items;
  return Array.isArray(items) ? items.length : 1;
}

/**
 * Returns a rejection's reason without the image's path and id, so that equal reasons of
 * different images are counted together.
 */
function reasonKey(record: Rejected): string {
  return (record.reason.split('\n')[0] ?? '').replaceAll(record.path, '<image>').replaceAll(record.id, '<id>');
}

/** Raised for a fault of one stage, with the stage's place in the spec in the message. */
export class StageError extends Error {
  override readonly name = 'StageError';
  constructor(
    readonly stage: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${stage}: ${message}`, options);
  }
}

/** Returns the ids a record stands for: a batch's items, or the record itself. */
function idsIn(record: unknown): string[] {
  const items = (record as Partial<Batch<ImageRef>>).items;
  return Array.isArray(items) ? items.map((item) => item.id) : [(record as ImageRef).id];
}

/**
 * Wraps a stage's operator so that its inputs, outputs, rejections and active time are counted,
 * and so that a per-item stage that drops, duplicates or reorders records stops the run with
 * an error naming it, instead of stalling the run or mixing up images.
 */
function counted(stage: LiveStage, onActivity: () => void = () => undefined): OperatorFunction<unknown, unknown> {
  const counts = stage.counts;
  const where = `${stage.spec.path} (${stage.spec.label})`;
  const checkOrder = stage.definition.shape === 'per-item';
  return (source) => {
    const passing = new Set<string>();
    // Ids of the records in flight through the stage, oldest first.
    let pending: string[] = [];
    let head = 0;
    let firstIn: number | undefined;
    stage.held = () => pending.length - head;

    const expectOutput = (record: unknown): void => {
      for (const id of idsIn(record)) {
        const expected = pending[head];
        if (expected === undefined) {
          throw new StageError(where, `emitted ${id} with no input left to match it; a per-item stage must emit exactly one record per input`);
        }
        if (id !== expected) {
          throw new StageError(where, `emitted ${id} where ${expected} was next; a per-item stage must emit exactly one record per input, in input order`);
        }
        head++;
      }
      if (head > 1024 && head * 2 > pending.length) {
        pending = pending.slice(head);
        head = 0;
      }
    };

    return source.pipe(
      tap((record) => {
        firstIn ??= performance.now();
        onActivity();
        if (checkOrder) pending.push(...idsIn(record));
        if (isRejected(record)) passing.add(record.id);
        else counts.inputs += itemsIn(record);
      }),
      stage.opened.operator,
      tap({
        next: (record) => {
          onActivity();
          if (firstIn !== undefined) counts.activeSeconds = (performance.now() - firstIn) / 1000;
          if (checkOrder) expectOutput(record);
          if (!isRejected(record)) {
            if (stage.definition.shape !== 'terminal') counts.outputs += itemsIn(record);
            return;
          }
          if (passing.delete(record.id)) {
            counts.passedOn++;
            return;
          }
          const reason = reasonKey(record);
          counts.rejected[reason] = (counts.rejected[reason] ?? 0) + 1;
        },
        complete: () => {
          if (checkOrder && head < pending.length) {
            throw new StageError(where, `completed without emitting a record for ${pending.length - head} input(s), the first ${pending[head]}; a per-item stage must emit one record per input`);
          }
        },
      }),
      catchError((error: unknown) => {
        if (error instanceof StageError) throw error;
        throw new StageError(where, error instanceof Error ? error.message : String(error), { cause: error });
      }),
    );
  };
}

/**
 * Builds the per-image part of the pipeline (every stage but a terminal one) as one operator
 * from image refs to the last stage's records, with cache wrappers placed as the file header
 * describes.
 */
function buildChain(
  stages: readonly LiveStage[],
  cache: ArtifactCache | undefined,
  keys: KeyChains,
  retryFailed: boolean,
  onActivity: () => void,
): OperatorFunction<Maybe<ImageRef>, unknown> {
  let chain: OperatorFunction<Maybe<ImageRef>, unknown> = identity as OperatorFunction<Maybe<ImageRef>, unknown>;
  stages.forEach((stage, index) => {
    const inner = chain;
    const operator = counted(stage, onActivity);
    if (!stage.cacheable || cache === undefined) {
      chain = (source) => source.pipe(inner, operator);
      return;
    }
    const storage = stage.opened.cache as NonNullable<OpenedStage['cache']>;
    const common = {
      stage: stage.definition.name,
      version: stage.definition.version,
      params: stage.keyParams,
      encode: storage.encode,
      decode: storage.decode,
      retryFailed,
    };
    if (storage.selfContained) {
      const wrapped = cached<ImageRef, unknown>(
        cache,
        { ...common, inputHash: (ref) => keys.inputOf(ref.id, index) },
        (refs) => refs.pipe(inner, operator) as Observable<Maybe<unknown>>,
      );
      stage.cachedOperator = wrapped;
      chain = wrapped as OperatorFunction<Maybe<ImageRef>, unknown>;
    } else {
      const wrapped = cached<ImageRef, unknown>(cache, { ...common, inputHash: (record) => keys.inputOf(record.id, index) }, operator as OperatorFunction<ImageRef, Maybe<unknown>>);
      stage.cachedOperator = wrapped;
      chain = (source) => source.pipe(inner, wrapped as OperatorFunction<unknown, unknown>);
    }
  });
  return chain;
}

/** Copies the cache counters into the stage counts, and derives `skipped`. */
function settleCounts(stages: readonly LiveStage[]): void {
  for (const stage of stages) {
    const counters = stage.cachedOperator?.counters;
    if (counters === undefined) continue;
    stage.counts.cacheHits = counters.hits;
    stage.counts.stored = counters.stored;
    stage.counts.cachedFailures = counters.failures;
  }
  stages.forEach((stage, index) => {
    stage.counts.skipped = stages
      .slice(index + 1)
      .filter((later) => later.opened.cache?.selfContained === true && later.cacheable)
      .reduce((sum, later) => sum + later.counts.cacheHits + later.counts.cachedFailures, 0);
  });
}

/**
 * Adds the rejections that cached failures stand for to the counts of the stage that made them,
 * which may lie before the stage whose cache stored them.
 */
function countCachedFailures(stages: readonly LiveStage[], rejected: readonly Rejected[]): void {
  for (const stage of stages) {
    const computed = rejectedTotal(stage.counts);
    const fromCache = rejected.filter((record) => record.stage === stage.definition.name);
    // Rejections of this stage that its operator did not make came from the cache.
    let surplus = fromCache.length - computed;
    for (const record of fromCache) {
      if (surplus <= 0) break;
      const reason = reasonKey(record);
      stage.counts.rejected[reason] = (stage.counts.rejected[reason] ?? 0) + 1;
      surplus--;
    }
  }
}

/** Runs a validated pipeline to its end and returns what happened. */
export async function runPipeline(pipeline: ValidatedPipeline, options: RunPipelineOptions = {}): Promise<PipelineReport> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const interactive = options.progress ?? process.stderr.isTTY === true;
  const usesTensors = pipeline.stages.some((stage) => stage.definition.usesTensors === true);
  let backend: BackendInfo | undefined;
  if (usesTensors) {
    backend = await initBackend(options.backend);
    log.info({ backend: backend.name, threads: backend.threads, skipped: backend.skipped.map((s) => s.name) }, 'tensor backend selected');
  }

  const cacheDir = options.cacheDir === null ? undefined : (options.cacheDir ?? pipeline.cacheDir);
  const cache = cacheDir === undefined ? undefined : ArtifactCache.open(cacheDir);
  const context: PipelineContext = { specDir: pipeline.specDir, retryFailed: options.retryFailed === true, interactive, backend: options.backend, shared: new Map() };

  let opened: { images: readonly ImageRef[]; stages: LiveStage[] };
  try {
    opened = await openStages(pipeline, context, cache !== undefined);
  } catch (error) {
    cache?.close();
    throw error;
  }
  const { images, stages } = opened;
  log.info({ pipeline: pipeline.name, images: images.length, stages: stages.map((s) => s.spec.label), cache: cacheDir ?? null }, 'pipeline started');

  const terminal = stages.at(-1)?.definition.shape === 'terminal' ? stages.at(-1) : undefined;
  const perItem = terminal === undefined ? stages : stages.slice(0, -1);
  const refs = new Map(images.map((ref) => [ref.id, ref]));
  const keys = new KeyChains(perItem, refs);
  let lastActivity = performance.now();
  const chain = buildChain(perItem, cache, keys, options.retryFailed === true, () => {
    lastActivity = performance.now();
  });
  const stall = new Subject<never>();
  const stallError = (why: string): Error => {
    const holders = perItem
      .filter((stage) => (stage.held?.() ?? 0) > 0)
      .map((stage) => `${stage.spec.path} (${stage.spec.label}) holds ${stage.held?.() ?? 0} record(s) it has not emitted`);
    return new Error(
      `the run stalled: ${why}, with ${finished} of ${images.length} images finished. ${holders.join('; ') || 'No stage holds a record'}. ` +
        'A stage that drops records instead of rejecting them stalls the run; a per-item stage must emit one record per input.',
    );
  };
  // An empty event loop while the run is unfinished means no stage can make progress.
  const onBeforeExit = (): void => stall.error(stallError('nothing is left to run'));
  process.once('beforeExit', onBeforeExit);
  const watchdog = setInterval(() => {
    const idle = (performance.now() - lastActivity) / 1000;
    if (idle > pipeline.stallTimeoutSeconds) stall.error(stallError(`no stage emitted a record for ${Math.round(idle)} s (stallTimeoutSeconds ${pipeline.stallTimeoutSeconds})`));
  }, Math.min(5000, pipeline.stallTimeoutSeconds * 250));
  watchdog.unref();

  const flow = flowControl(pipeline.maxInFlight);
  const rejected: Rejected[] = [];
  const samples: Array<{ images: number; rssBytes: number }> = [];
  let finished = 0;
  let peakRss = process.memoryUsage.rss();
  const bars = new StageProgress(
    images.length,
    stages.map((stage) => stage.counts),
    interactive,
    () => settleCounts(perItem),
  );

  const afterChain = (record: unknown): void => {
    const count = itemsIn(record);
    if (isRejected(record)) rejected.push(record);
    for (let i = 0; i < count; i++) {
      finished++;
      if (finished % 100 === 0) peakRss = Math.max(peakRss, process.memoryUsage.rss());
      if (finished % 1000 === 0) samples.push({ images: finished, rssBytes: process.memoryUsage.rss() });
    }
    if (!isRejected(record)) keys.forget((record as ImageRef).id);
    bars.tick();
  };

  let result: VerificationReport | TrainingSummary | undefined;
  try {
    const main = from(images).pipe(flow.admit(), chain, tap(afterChain), flow.release(itemsIn));
    // The run's records, failing with the stall error if the watchdog raises one.
    const perImage = new Observable<unknown>((subscriber) => {
      const watch = stall.subscribe({ error: (error: unknown) => subscriber.error(error) });
      const run = main.subscribe(subscriber);
      return () => {
        watch.unsubscribe();
        run.unsubscribe();
      };
    });
    if (terminal === undefined) {
      await lastValueFrom(perImage.pipe(ignoreElements()), { defaultValue: undefined });
    } else {
      result = (await lastValueFrom(perImage.pipe(counted(terminal)))) as VerificationReport | TrainingSummary;
    }
  } finally {
    clearInterval(watchdog);
    process.removeListener('beforeExit', onBeforeExit);
    bars.stop();
    await disposeStages(stages);
    cache?.close();
  }
  peakRss = Math.max(peakRss, process.memoryUsage.rss());
  settleCounts(perItem);
  countCachedFailures(perItem, rejected);

  // Logged only now, because log lines written while progress bars are drawn garble them.
  for (const record of rejected) log.warn({ id: record.id, stage: record.stage, reason: record.reason }, 'image rejected');
  const seconds = (performance.now() - started) / 1000;
  log.info({ pipeline: pipeline.name, images: images.length, rejected: rejected.length, seconds: Number(seconds.toFixed(1)) }, 'pipeline finished');

  return {
    name: pipeline.name,
    spec: pipeline.source,
    startedAt,
    seconds,
    backend: backend === undefined ? undefined : { name: backend.name, threads: backend.threads },
    cacheDir,
    images: images.length,
    stages: stages.map((stage) => stage.counts),
    rejected,
    memory: { peakRssBytes: peakRss, samples },
    result,
  };
}

/** A stage of a pipeline as `--dry-run` shows it. */
export interface StagePlan {
  readonly label: string;
  readonly op: string;
  readonly input: string;
  readonly output: string;
  readonly params: unknown;
  /** `off` when the run has no cache or the stage stores nothing. */
  readonly cache:
    | 'off'
    | { readonly artifacts: number; readonly failures: number; readonly missing: number; readonly skipsEarlierStages: boolean };
}

export interface PipelinePlan {
  readonly name: string;
  readonly spec: string;
  readonly images: number;
  readonly cacheDir: string | undefined;
  readonly stages: readonly StagePlan[];
  /** Images that could not be hashed (missing or unreadable files), with the error. */
  readonly unreadable: ReadonlyArray<{ readonly id: string; readonly error: string }>;
}

/**
 * Opens the stages (loading models, listing images), computes every image's cache keys and
 * counts which stages have their output cached, without running anything.
 */
export async function planPipeline(pipeline: ValidatedPipeline, options: Pick<RunPipelineOptions, 'cacheDir' | 'backend'> = {}): Promise<PipelinePlan> {
  if (pipeline.stages.some((stage) => stage.definition.usesTensors === true)) await initBackend(options.backend);
  const cacheDir = options.cacheDir === null ? undefined : (options.cacheDir ?? pipeline.cacheDir);
  // A dry run creates no cache, and a folder that does not exist yet contains nothing.
  const cache = cacheDir === undefined || !existsSync(cacheDir) ? undefined : ArtifactCache.open(cacheDir);
  const context: PipelineContext = { specDir: pipeline.specDir, retryFailed: false, interactive: false, shared: new Map() };
  try {
    const { images, stages } = await openStages(pipeline, context, cacheDir !== undefined);
    try {
      const perItem = stages.filter((stage) => stage.definition.shape !== 'terminal');
      const keys = new KeyChains(perItem, new Map(images.map((ref) => [ref.id, ref])));
      const states = perItem.map(() => ({ artifacts: 0, failures: 0, missing: 0 }));
      const unreadable: Array<{ id: string; error: string }> = [];
      if (cacheDir !== undefined) {
        for (const ref of images) {
          for (const [index, stage] of perItem.entries()) {
            if (!stage.cacheable) continue;
            let key: string;
            try {
              key = await keys.keyOf(ref.id, index);
            } catch (error) {
              unreadable.push({ id: ref.id, error: (error as Error).message });
              break;
            }
            const state = states[index] as { artifacts: number; failures: number; missing: number };
            const kind = cache?.kindOf(key);
            if (kind === 'artifact') state.artifacts++;
            else if (kind === 'failure') state.failures++;
            else state.missing++;
          }
          keys.forget(ref.id);
        }
      }
      const [source] = pipeline.stages;
      const sourcePlan: StagePlan = {
        label: source?.label ?? '',
        op: source?.definition.name ?? '',
        input: '-',
        output: 'ImageRef',
        params: source?.params,
        cache: 'off',
      };
      return {
        name: pipeline.name,
        spec: pipeline.source,
        images: images.length,
        cacheDir,
        unreadable,
        stages: [
          sourcePlan,
          ...stages.map((stage, index) => ({
            label: stage.spec.label,
            op: stage.definition.name,
            input: stage.definition.input,
            output: stage.definition.output,
            params: stage.spec.params,
            cache: stage.cacheable && index < perItem.length ? { ...(states[index] as { artifacts: number; failures: number; missing: number }), skipsEarlierStages: stage.opened.cache?.selfContained === true } : ('off' as const),
          })),
        ],
      };
    } finally {
      await disposeStages(stages);
    }
  } finally {
    cache?.close();
  }
}
