/**
 * `sphereface train`: a SphereFace network trained with a margin head on aligned faces, with
 * checkpoints that resume exactly.
 *
 *   batch numbers → loadTrainingBatches (shuffle, mirror, crops) → trainStep → log, checkpoint
 *
 * A credit window bounds the batches loaded ahead of the step that is running. The run stops at
 * the solver's last iteration, at the time budget, or at SIGINT/SIGTERM, and in each case saves a
 * checkpoint first. With `resume`, it continues from the newest valid checkpoint in `out`. The
 * data order, mirror decisions, λ and learning rate then continue as if the run had never
 * stopped, because each is a function of the seed and the iteration.
 */
import { constants } from 'node:fs';
import { access, appendFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { concatMap, defer, from, lastValueFrom, takeWhile, toArray } from 'rxjs';

import {
  lfwPeopleSplit,
  fingerprint,
  readIdentityFolders,
  readTrainingList,
  type TrainingSample,
  type TrainingSet,
} from '../datasets/training.ts';
import { readLandmarks, readPairs, type LfwPair } from '../datasets/lfw.ts';
import { canonicalJson } from '../lib/artifactCache.ts';
import { SPHEREFACE_OUTPUT_SIZE } from '../lib/cp2tform.ts';
import { log } from '../lib/log.ts';
import { lfwPaths } from '../lib/paths.ts';
import { initBackend, prepareTraining, type BackendInfo, type BackendName } from '../model/backend.ts';
import { loadLatestCheckpoint, saveCheckpoint, type CheckpointContent } from '../model/checkpoint.ts';
import type { HeadOptions } from '../model/heads.ts';
import type { SolverOptions } from '../model/solver.ts';
import type { SphereFaceOptions } from '../model/sphereface.ts';
import { Trainer } from '../model/trainer.ts';
import { decodeAndAlignInWorkers } from '../operators/alignInWorkers.ts';
import { embedBatch } from '../operators/extractFeatures.ts';
import { flowControl } from '../operators/flowControl.ts';
import { verifyFolds, type FoldResult } from '../operators/kFoldVerify.ts';
import { decodeImage } from '../operators/readImages.ts';
import { isRejected, reject, type AlignedFace, type Rejected } from '../operators/records.ts';
import { batchNumbers, loadTrainingBatches, TrainingOrder, type CropSource } from '../operators/trainingBatches.ts';
import { trainStep, type StepResult } from '../operators/trainStep.ts';
import type { TrainingData } from './trainSettings.ts';

export type { TrainingData } from './trainSettings.ts';

export interface TrainingOptions {
  readonly data: TrainingData;
  readonly network: SphereFaceOptions;
  readonly head: HeadOptions;
  readonly solver: SolverOptions;
  /** Images per micro-batch. */
  readonly batchSize: number;
  /** Micro-batches per optimizer step (default 1). */
  readonly accumulate?: number;
  /** Seed of the initial weights, the shuffles and the mirror decisions (default 0). */
  readonly seed?: number;
  /** Random horizontal mirror with probability 0.5 (default true). */
  readonly mirror?: boolean;
  /** Folder for checkpoints and `train-log.jsonl`. */
  readonly out: string;
  /** Save a checkpoint every this many iterations (default 1000). */
  readonly checkpointEvery?: number;
  /** Checkpoints to keep (default 3). */
  readonly keep?: number;
  /** Continue from the newest valid checkpoint in `out`. Without it, `out` must hold none. */
  readonly resume?: boolean;
  /** Stop, with a checkpoint, after this many seconds of training in this process. */
  readonly timeBudgetSeconds?: number;
  /** Log a line every this many iterations (default 10). */
  readonly display?: number;
  readonly backend?: BackendName;
  /** Evaluate the held-out fold at the end of an `lfw-split` run, and the same network with its initial weights. */
  readonly evaluate?: boolean;
  /** Called after every step, for a progress line. */
  readonly onStep?: (result: StepResult, maxIterations: number) => void;
  /** Stops the run after the current step when aborted; SIGINT and SIGTERM do the same. */
  readonly signal?: AbortSignal;
}

export interface HeldOutResult {
  readonly fold: number;
  readonly trained: FoldResult;
  readonly initial: FoldResult;
}

export interface TrainingSummary {
  /** Network name, e.g. `sphereface4`. */
  readonly model: string;
  readonly backend: BackendInfo;
  readonly startIteration: number;
  readonly iteration: number;
  readonly stoppedBy: 'max-iterations' | 'time-budget' | 'signal';
  readonly checkpoint: string;
  readonly log: string;
  readonly samples: number;
  readonly classes: number;
  /** Samples whose crop could not be loaded, with the first reason seen. */
  readonly rejected: readonly Rejected[];
  readonly seconds: number;
  readonly heldOut?: HeldOutResult;
}

/** The parts of the configuration that must match for a checkpoint to be resumed. */
function resumableConfig(options: TrainingOptions, set: TrainingSet): Record<string, unknown> {
  const { maxIterations: _ignored, ...solver } = options.solver;
  return {
    network: { depth: options.network.depth, inputSize: options.network.inputSize ?? SPHEREFACE_OUTPUT_SIZE },
    head: options.head,
    solver,
    batchSize: options.batchSize,
    accumulate: options.accumulate ?? 1,
    seed: options.seed ?? 0,
    mirror: options.mirror ?? true,
    dataset: fingerprint(set),
  };
}

async function readTrainingData(data: TrainingData): Promise<{ set: TrainingSet; pairs?: readonly LfwPair[]; landmarksFile?: string }> {
  switch (data.kind) {
    case 'folder':
      return { set: await readIdentityFolders(data.root, data.exclude === undefined ? {} : { exclude: data.exclude }) };
    case 'list':
      return {
        set: await readTrainingList(data.file, {
          ...(data.exclude === undefined ? {} : { exclude: data.exclude }),
          ...(data.root === undefined ? {} : { root: data.root }),
        }),
      };
    case 'prepared':
      return { set: data.set };
    case 'lfw-split': {
      const paths = lfwPaths(data.dataRoot);
      const parsed = await readPairs(paths.pairs, { imagesDir: paths.images });
      const split = await lfwPeopleSplit(parsed, data.fold, data.minImagesPerIdentity === undefined ? {} : { minImagesPerIdentity: data.minImagesPerIdentity });
      return { set: split.train, pairs: parsed.pairs, landmarksFile: paths.landmarks };
    }
  }
}

/**
 * Shrinks an aligned RGB crop by whole factors, each output pixel the rounded mean of its
 * block, so a network with a reduced input trains and tests on crops of the reference template.
 */
export function downscaleCrop(rgb: Uint8Array, from: { height: number; width: number }, to: { height: number; width: number }): Uint8Array {
  if (from.height === to.height && from.width === to.width) return rgb;
  const fy = from.height / to.height;
  const fx = from.width / to.width;
  if (!Number.isInteger(fy) || !Number.isInteger(fx) || fy < 1 || fx < 1) {
    throw new RangeError(`cannot shrink ${from.height}×${from.width} crops to ${to.height}×${to.width}; the input size must divide the crop size`);
  }
  const out = new Uint8Array(to.height * to.width * 3);
  const area = fy * fx;
  for (let y = 0; y < to.height; y++) {
    for (let x = 0; x < to.width; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let dy = 0; dy < fy; dy++) {
          const row = ((y * fy + dy) * from.width + x * fx) * 3 + c;
          for (let dx = 0; dx < fx; dx++) sum += rgb[row + dx * 3] as number;
        }
        out[(y * to.width + x) * 3 + c] = Math.round(sum / area);
      }
    }
  }
  return out;
}

/** Crops of already aligned images on disk (a preprocessed folder or list), read on demand. */
function cropsFromFiles(inputSize: { height: number; width: number }): CropSource {
  return async (sample) => {
    const decoded = await decodeImage({ id: sample.id, path: sample.path });
    if (isRejected(decoded)) return decoded;
    const { height, width } = decoded;
    const isTemplate = height === SPHEREFACE_OUTPUT_SIZE.height && width === SPHEREFACE_OUTPUT_SIZE.width;
    if (!(height === inputSize.height && width === inputSize.width) && !isTemplate) {
      return reject(
        { id: sample.id, path: sample.path },
        'trainStep',
        `${sample.path} is ${height}×${width}; expected an aligned crop of ${SPHEREFACE_OUTPUT_SIZE.height}×${SPHEREFACE_OUTPUT_SIZE.width} or ${inputSize.height}×${inputSize.width} (run sphereface preprocess first)`,
      );
    }
    return downscaleCrop(decoded.rgb, { height, width }, inputSize);
  };
}

/**
 * Aligns LFW images from the landmark file in the worker pool and keeps the crops, shrunk to
 * the input size, in memory. The rejected ones are returned as such.
 */
async function alignLfwImages(
  images: ReadonlyArray<{ readonly id: string; readonly path: string }>,
  landmarksFile: string,
  inputSize: { height: number; width: number },
): Promise<Map<string, Uint8Array | Rejected>> {
  const landmarks = await readLandmarks(landmarksFile);
  const faces = await lastValueFrom(
    from(images).pipe(decodeAndAlignInWorkers({ landmarksOf: (ref) => landmarks.get(ref.id) }), toArray()),
  );
  const crops = new Map<string, Uint8Array | Rejected>();
  for (const face of faces) {
    crops.set(face.id, isRejected(face) ? face : downscaleCrop(face.rgb, face, inputSize));
  }
  return crops;
}

function cropsFromMemory(crops: ReadonlyMap<string, Uint8Array | Rejected>): CropSource {
  return async (sample) => {
    const crop = crops.get(sample.id);
    if (crop === undefined) throw new Error(`no aligned crop for ${sample.id}; it was not among the images aligned before training`);
    return crop;
  };
}

/** Creates the checkpoint folder and checks that it can be listed and written, with errors that name it. */
async function createOutputFolder(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') {
      throw new Error(`cannot create the output folder ${dir}: a file is in the way; pass --out with a folder path`, { cause: error });
    }
    throw new Error(`cannot create the output folder ${dir}: ${(error as Error).message}`, { cause: error });
  }
  try {
    await access(dir, constants.R_OK | constants.W_OK | constants.X_OK);
  } catch (error) {
    throw new Error(`output folder ${dir} is not readable and writable (${(error as Error).message}); fix its permissions or choose another --out folder`, { cause: error });
  }
}

/** Rewrites the log without the lines of iterations after `iteration`, which a killed run wrote past its last checkpoint. */
async function truncateLog(file: string, iteration: number): Promise<void> {
  const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return '';
    throw error;
  });
  const kept = text
    .split('\n')
    .filter((line) => {
      if (line.trim() === '') return false;
      try {
        const entry = JSON.parse(line) as { iteration?: unknown };
        return typeof entry.iteration !== 'number' || entry.iteration <= iteration;
      } catch {
        // A line cut short by a kill.
        return false;
      }
    })
    .map((line) => `${line}\n`)
    .join('');
  const temp = `${file}.tmp`;
  await writeFile(temp, kept);
  await rename(temp, file);
}

/** Features of LFW pair images through `network`, with the mirror, as SphereFace's evaluation takes them. */
async function pairFeatures(
  trainer: Trainer,
  crops: ReadonlyMap<string, Uint8Array | Rejected>,
  ids: readonly string[],
): Promise<Map<string, Float32Array>> {
  const { height, width } = trainer.network.inputSize;
  const features = new Map<string, Float32Array>();
  const batchSize = 64;
  for (let start = 0; start < ids.length; start += batchSize) {
    const chunk = ids.slice(start, start + batchSize);
    const faces: AlignedFace[] = chunk.map((id) => {
      const crop = crops.get(id);
      if (crop === undefined || isRejected(crop)) {
        throw new Error(`cannot evaluate: pair image ${id} has no aligned crop${crop === undefined ? '' : ` (${crop.reason})`}`);
      }
      return { id, path: id, width, height, rgb: crop, transform: [[1, 0], [0, 1], [0, 0]] };
    });
    const vectors = await embedBatch(trainer.network, faces, true);
    chunk.forEach((id, k) => features.set(id, vectors[k] as Float32Array));
  }
  return features;
}

/** Runs a training job; see the module comment. */
export async function runTraining(options: TrainingOptions): Promise<TrainingSummary> {
  const started = performance.now();
  const backend = await initBackend(options.backend);
  const kernels = await prepareTraining(backend);
  log.info({ backend: backend.name, threads: backend.threads, skipped: backend.skipped, kernels }, `training on the ${backend.name} backend`);

  const accumulate = options.accumulate ?? 1;
  const checkpointEvery = options.checkpointEvery ?? 1000;
  const display = options.display ?? 10;
  const seed = options.seed ?? 0;
  const inputSize = options.network.inputSize ?? SPHEREFACE_OUTPUT_SIZE;
  const template = SPHEREFACE_OUTPUT_SIZE;
  if (options.data.kind === 'lfw-split' && (template.height % inputSize.height !== 0 || template.width % inputSize.width !== 0)) {
    // Checked before the minutes of alignment, because every LFW crop is shrunk from the template.
    throw new RangeError(
      `input size ${inputSize.height}×${inputSize.width} does not divide the ${template.height}×${template.width} aligned crops; choose a size such as 56x48 or 28x24`,
    );
  }
  const { set, pairs, landmarksFile } = await readTrainingData(options.data);
  log.info({ source: set.source, samples: set.samples.length, classes: set.identities.length }, 'training set');

  await createOutputFolder(options.out);
  const logFile = path.join(options.out, 'train-log.jsonl');
  const config = resumableConfig(options, set);

  const trainer = new Trainer({ network: options.network, head: options.head, solver: options.solver, numClasses: set.identities.length, seed });
  try {
    const latest = await loadLatestCheckpoint(options.out, (file, reason) => log.warn({ file, reason }, `skipping checkpoint ${file}: ${reason}`));
    if (latest !== undefined && options.resume !== true) {
      throw new Error(`${options.out} already holds checkpoints (newest ${latest.path}); pass --resume to continue it, or choose another --out folder`);
    }
    if (latest !== undefined) {
      assertSameConfig(latest.path, latest.content, config, set);
      trainer.importState(latest.content.tensors, latest.content.state.iteration);
      log.info({ checkpoint: latest.path, iteration: trainer.iteration }, `resuming from iteration ${trainer.iteration}`);
    } else if (options.resume === true) {
      log.info({ out: options.out }, 'no checkpoint to resume from; starting at iteration 0');
    }
    // A run killed before its first checkpoint also leaves log lines that the new run repeats.
    await truncateLog(logFile, trainer.iteration);
    const startIteration = trainer.iteration;
    if (startIteration >= options.solver.maxIterations) {
      log.warn({ iteration: startIteration, maxIterations: options.solver.maxIterations }, `the checkpoint is at iteration ${startIteration}, not before the last iteration ${options.solver.maxIterations}; nothing to train (raise --iterations to go on)`);
    }

    let crops: CropSource;
    let memoryCrops: Map<string, Uint8Array | Rejected> | undefined;
    if (options.data.kind === 'lfw-split') {
      const evalIds = options.evaluate === true && pairs !== undefined ? pairs.flatMap((p) => [p.left, p.right]) : [];
      const unique = new Map<string, { id: string; path: string }>();
      for (const s of set.samples) unique.set(s.id, { id: s.id, path: s.path });
      for (const ref of evalIds) unique.set(ref.id, { id: ref.id, path: ref.path });
      const t0 = performance.now();
      memoryCrops = await alignLfwImages([...unique.values()], landmarksFile as string, inputSize);
      log.info({ images: unique.size, seconds: (performance.now() - t0) / 1000 }, 'aligned the LFW images from the landmark file');
      crops = cropsFromMemory(memoryCrops);
    } else if (options.data.kind === 'prepared') {
      const prepared = options.data.crops;
      crops = async (sample) => {
        const crop = prepared.get(sample.id);
        if (crop === undefined) throw new Error(`no aligned crop for ${sample.id} among the records the train stage received`);
        if (isRejected(crop)) return crop;
        const side = crop.length === inputSize.height * inputSize.width * 3 ? inputSize : SPHEREFACE_OUTPUT_SIZE;
        return downscaleCrop(crop, side, inputSize);
      };
    } else {
      crops = cropsFromFiles(inputSize);
    }

    const order = new TrainingOrder(set.samples.length, { seed, batchSize: options.batchSize, mirror: options.mirror ?? true });
    const maxIterations = options.solver.maxIterations;
    const firstBatch = trainer.iteration * accumulate;
    const batchCount = Math.max(0, (maxIterations - trainer.iteration) * accumulate);

    let stopReason: TrainingSummary['stoppedBy'] = 'max-iterations';
    let stopRequested = false;
    const requestStop = (reason: TrainingSummary['stoppedBy']) => {
      if (!stopRequested) {
        stopRequested = true;
        stopReason = reason;
      }
    };
    // Counted apart from stopRequested, so that a first signal after a time-budget stop, or
    // during the final checkpoint, still waits for the checkpoint.
    let signalsReceived = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signalsReceived++;
      if (signalsReceived > 1) {
        log.error({ signal }, `second ${signal}: exiting without a checkpoint`);
        process.exit(130);
      }
      log.warn({ signal }, `${signal}: saving a checkpoint after the current step; send it again to exit at once without one`);
      requestStop('signal');
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const onAbort = () => requestStop('signal');
    options.signal?.addEventListener('abort', onAbort);

    const rejected = new Map<string, Rejected>();
    let lastCheckpoint = latest?.path ?? '';
    let lastSaved = trainer.iteration;
    const trainingStarted = performance.now();
    const save = async (): Promise<void> => {
      if (trainer.iteration === lastSaved && lastCheckpoint !== '') return;
      const item = trainer.iteration * accumulate * options.batchSize;
      const tensors = await trainer.exportState();
      // A step can end with a finite loss but an update that overflowed. Such weights must not
      // become the newest checkpoint, because a resume loads that one first.
      const broken = tensors.find((tensor) => !tensor.data.every(Number.isFinite));
      if (broken !== undefined) {
        throw new Error(
          `${broken.name} has non-finite values after iteration ${trainer.iteration}; training diverged (try a smaller learning rate). ` +
            `No checkpoint was saved${lastCheckpoint === '' ? '' : `, and ${lastCheckpoint} is the newest`}`,
        );
      }
      const content: CheckpointContent = {
        state: {
          format: 'sphereface-ts/checkpoint',
          version: 1,
          iteration: trainer.iteration,
          epoch: Math.floor(item / set.samples.length),
          position: item % set.samples.length,
          seed,
          dataset: { fingerprint: config['dataset'] as string, samples: set.samples.length, classes: set.identities.length },
          config,
          createdAt: new Date().toISOString(),
        },
        tensors,
      };
      lastCheckpoint = await saveCheckpoint(options.out, content, { keep: options.keep ?? 3 });
      lastSaved = trainer.iteration;
      log.info({ checkpoint: lastCheckpoint, iteration: trainer.iteration }, `checkpoint at iteration ${trainer.iteration}`);
    };

    // The window admits one step's micro-batches. The next step's batches enter only after this
    // step's result has been logged and checkpointed, so a stop takes effect between two steps
    // with nothing half done.
    const flow = flowControl(accumulate);
    try {
      await lastValueFrom(
        defer(() => batchNumbers(firstBatch, batchCount)).pipe(
          flow.admit(),
          loadTrainingBatches(set.samples, order, crops, inputSize),
          trainStep(trainer, { accumulate }),
          concatMap(async (result) => {
            for (const r of result.rejected) if (!rejected.has(r.id)) rejected.set(r.id, r);
            const entry = {
              iteration: result.iteration,
              loss: result.loss,
              accuracy: result.accuracy,
              lambda: result.lambda,
              learningRate: result.learningRate,
              images: result.images,
              epoch: result.epoch,
              seconds: Number(result.seconds.toFixed(4)),
              imagesPerSecond: Number(result.imagesPerSecond.toFixed(3)),
              rejected: result.rejected.length,
            };
            await appendFile(logFile, `${JSON.stringify(entry)}\n`);
            if (!Number.isFinite(result.loss)) throw new Error(`loss is ${result.loss} at iteration ${result.iteration}; training diverged (try a smaller learning rate)`);
            options.onStep?.(result, maxIterations);
            if (result.iteration % display === 0 || result.iteration === startIteration + 1) log.info(entry, `iteration ${result.iteration}`);
            if (result.iteration % checkpointEvery === 0) await save();
            if (options.timeBudgetSeconds !== undefined && (performance.now() - trainingStarted) / 1000 >= options.timeBudgetSeconds) {
              requestStop('time-budget');
            }
            return result;
          }),
          takeWhile(() => !stopRequested, true),
          flow.release(() => accumulate),
        ),
        { defaultValue: undefined },
      );
      // The run is over, so a signal from here on only waits for the final checkpoint.
      stopRequested = true;
      await save();
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      options.signal?.removeEventListener('abort', onAbort);
    }
    if (rejected.size > 0) log.warn({ rejected: rejected.size }, `${rejected.size} training images could not be loaded and were left out`);

    let heldOut: HeldOutResult | undefined;
    if (options.evaluate === true && options.data.kind === 'lfw-split' && pairs !== undefined && memoryCrops !== undefined) {
      heldOut = await evaluateHeldOut(trainer, options, set.identities.length, seed, pairs, memoryCrops, options.data.fold);
    }
    return {
      model: trainer.network.name,
      backend,
      startIteration,
      iteration: trainer.iteration,
      stoppedBy: stopReason,
      checkpoint: lastCheckpoint,
      log: logFile,
      samples: set.samples.length,
      classes: set.identities.length,
      rejected: [...rejected.values()],
      seconds: (performance.now() - started) / 1000,
      ...(heldOut === undefined ? {} : { heldOut }),
    };
  } finally {
    trainer.dispose();
  }
}

function assertSameConfig(file: string, content: CheckpointContent, config: Record<string, unknown>, set: TrainingSet): void {
  const saved = content.state.config as Record<string, unknown>;
  const differences = Object.keys(config).filter((key) => canonicalJson(saved[key] ?? null) !== canonicalJson(config[key] ?? null));
  const describe = (key: string): string => {
    if (key !== 'dataset') return `${key} was ${canonicalJson(saved[key] ?? null)}, now ${canonicalJson(config[key] ?? null)}`;
    // The fingerprints alone do not tell a reader what changed, so the counts come first.
    const before = content.state.dataset;
    return (
      `dataset was ${before.samples} images of ${before.classes} identities (fingerprint ${before.fingerprint.slice(0, 12)}), ` +
      `now ${set.samples.length} images of ${set.identities.length} identities from ${set.source} (fingerprint ${String(config.dataset).slice(0, 12)})`
    );
  };
  if (differences.length > 0) {
    throw new Error(
      `checkpoint ${file} was trained with a different ${differences.join(', ')}: ` +
        differences.map(describe).join('; ') +
        '. Resume with the same settings, or start a new --out folder.',
    );
  }
}

async function evaluateHeldOut(
  trainer: Trainer,
  options: TrainingOptions,
  classes: number,
  seed: number,
  pairs: readonly LfwPair[],
  crops: ReadonlyMap<string, Uint8Array | Rejected>,
  fold: number,
): Promise<HeldOutResult> {
  const ids = [...new Set(pairs.flatMap((p) => [p.left.id, p.right.id]))];
  const foldOf = (features: Map<string, Float32Array>): FoldResult => {
    const result = verifyFolds(pairs, features).folds[fold - 1];
    if (result === undefined) throw new Error(`no fold ${fold} in the pairs file`);
    return result;
  };
  log.info({ images: ids.length, fold }, `evaluating fold ${fold}: features of ${ids.length} pair images and their mirrors, with the trained weights, then the initial ones`);
  const trained = foldOf(await pairFeatures(trainer, crops, ids));
  const baseline = new Trainer({ network: options.network, head: options.head, solver: options.solver, numClasses: classes, seed });
  try {
    const initial = foldOf(await pairFeatures(baseline, crops, ids));
    log.info({ fold, trained: trained.accuracy, initial: initial.accuracy }, `held-out fold ${fold}: ${(100 * trained.accuracy).toFixed(2)} % trained, ${(100 * initial.accuracy).toFixed(2)} % with the initial weights`);
    return { fold, trained, initial };
  } finally {
    baseline.dispose();
  }
}
