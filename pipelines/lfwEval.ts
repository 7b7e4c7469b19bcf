/**
 * The main job: LFW verification end to end. Reads the pairs and landmarks, decodes every image
 * the pairs use once, aligns it onto the model's template (SphereFace's unless the model names
 * another), extracts features of the face and its mirror, and runs the 10-fold protocol.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';

import { from, lastValueFrom, map, toArray, type OperatorFunction } from 'rxjs';
import { readLandmarks, readPairs, uniqueImages, type LfwPair } from '../datasets/lfw.ts';
import { ArtifactCache, hashFile, sha256Hex } from '../lib/artifactCache.ts';
import { faceLandmarks, readDetectionsFile } from '../lib/detectionsFile.ts';
import { log } from '../lib/log.ts';
import { initBackend, type BackendInfo, type BackendName } from '../model/backend.ts';
import { loadMtcnnEngine } from '../model/mtcnnEngine.ts';
import { resolveMtcnnOptions, type MtcnnOptions } from '../model/mtcnnDetect.ts';
import type { EngineName } from '../model/engine.ts';
import { loadModel } from '../model/loadModel.ts';
import { alignmentTemplate, DEFAULT_ALIGNMENT } from '../lib/alignmentTemplates.ts';
import { batch } from '../operators/batch.ts';
import { cached } from '../operators/cached.ts';
import { centerFaceIndex, detectFaces, type NoFacePolicy } from '../operators/detectFaces.ts';
import { extractFeatures, type ExtractTimings } from '../operators/extractFeatures.ts';
import { flowControl } from '../operators/flowControl.ts';
import { verifyFoldsWithScores, type VerificationReport } from '../operators/kFoldVerify.ts';
import { progress } from '../operators/progress.ts';
import { readImages } from '../operators/readImages.ts';
import {
  isRejected,
  type DecodedImage,
  type Feature,
  type ImageRef,
  type LandmarkedImage,
  type Landmarks,
  type Maybe,
  type Rejected,
} from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';

export interface LfwEvalOptions {
  /** Folder with `Name/Name_0001.jpg`. */
  readonly images: string;
  /** View 2 pairs file. */
  readonly pairs: string;
  /**
   * Source of the five landmarks: a landmark file like `lfw_landmark.txt` (1-based), a
   * detections file written by `sphereface preprocess` (`.jsonl`), or `detected` to run MTCNN.
   */
  readonly landmarks: string;
  /** With `landmarks: 'detected'`: what an image without a face becomes (default `reject`). */
  readonly onNoFace?: NoFacePolicy;
  /** With `landmarks: 'detected'`: folder with det1–det3.caffemodel (and det4 for L-Net). */
  readonly mtcnnDir?: string;
  /** With `landmarks: 'detected'`: MTCNN settings; default SphereFace's. */
  readonly mtcnn?: MtcnnOptions;
  /**
   * How to read the numbers of a landmark file (default `one-based`, as the reference
   * evaluation reads `lfw_landmark.txt`).
   */
  readonly landmarkOrigin?: Landmarks['origin'];
  /** Model spec `NAME:PATH`, e.g. `mobilefacenet:068.ckpt`. */
  readonly model: string;
  /** Faces per forward pass (default 32; the mirror images double it). */
  readonly batchSize?: number;
  /** Force one backend; by default the fastest that loads. */
  readonly backend?: BackendName;
  /**
   * Inference engine for the network and, with detected landmarks, for MTCNN. By default the
   * network runs on ONNX Runtime when it exports to it, and MTCNN on `DEFAULT_MTCNN_ENGINE`.
   */
  readonly engine?: EngineName;
  /**
   * Subtract the mean feature of the training folds before scoring, as SphereFace's evaluation
   * does (default true). Without it the thresholds apply to a single pair of faces.
   */
  readonly subtractMean?: boolean;
  /** Reject images with more pixels than this before decoding (default 50,000,000). */
  readonly maxPixels?: number;
  /** Images decoded at once (default 2). */
  readonly decodeConcurrency?: number;
  /** Draw a progress bar (default: when stderr is a TTY). */
  readonly progressBar?: boolean;
  /**
   * Artifact cache folder. Features are stored per image, keyed by the image's bytes, its
   * landmarks, the model file and the alignment settings, so a rerun computes only what changed.
   */
  readonly cacheDir?: string;
}

export interface LfwEvalResult {
  readonly report: VerificationReport;
  /** The pairs in file order; the score arrays below are indexed like them. */
  readonly pairs: readonly LfwPair[];
  /** Score of each pair in the fold where it is a test pair (see `ScoredVerification`). */
  readonly testScores: Float64Array;
  /** `scoresByFold[f][p]`: score of pair p while fold f + 1 is the test fold. */
  readonly scoresByFold: readonly Float64Array[];
  readonly backend: BackendInfo;
  readonly settings: Record<string, unknown>;
  readonly counts: { readonly pairs: number; readonly images: number };
  readonly timings: {
    /** Whole run, from reading the pairs to the report. */
    readonly wallSeconds: number;
    /** Decoding, aligning and extracting, which overlap in the pipeline. */
    readonly pipelineSeconds: number;
    /** Time inside forward passes (image and mirror), summed. */
    readonly forwardSeconds: number;
    /** Images through the whole pipeline per second of `pipelineSeconds`. */
    readonly imagesPerSecond: number;
    /** Images through the forward passes per second of `forwardSeconds`. */
    readonly forwardImagesPerSecond: number;
  };
}

/** Raised when some images could not be turned into features; each pair needs both of its images. */
export class RejectedImagesError extends Error {
  override readonly name = 'RejectedImagesError';
  constructor(readonly rejected: readonly Rejected[]) {
    const listed = rejected
      .slice(0, 20)
      .map((r) => `  ${r.path} (${r.stage}): ${r.reason}`)
      .join('\n');
    const more = rejected.length > 20 ? `\n  … and ${rejected.length - 20} more` : '';
    super(
      `${rejected.length} image(s) used by the pairs could not be processed, so their pairs cannot be scored:\n` +
        `${listed}${more}\nFix or replace these files; pairs are never dropped, because that would shift the folds.`,
    );
  }
}

/** The `landmarks` value that runs MTCNN instead of reading landmarks from a file. */
export const DETECTED = 'detected';

/** Landmarks by image id, and for images without them, why (from a detections file). */
export interface LandmarkSource {
  readonly landmarks: Map<string, Landmarks>;
  readonly whyMissing: Map<string, string>;
  /** SHA-256 of each image at detection time, to check that the images did not change. */
  readonly digests: Map<string, string>;
}

/**
 * Reads landmarks from a landmark file (`Name/Name_0001.jpg` and ten numbers per line) or, for
 * a `.jsonl` file, from a detections file. An entry with several faces (written with policy
 * `all`) gives the face nearest the image centre, as `--landmarks detected` would choose.
 */
export async function landmarksFrom(file: string, origin: Landmarks['origin']): Promise<LandmarkSource> {
  if (!file.endsWith('.jsonl')) {
    const read = await readLandmarks(file);
    const landmarks = origin === 'one-based' ? read : new Map([...read].map(([id, points]) => [id, { ...points, origin }]));
    return { landmarks, whyMissing: new Map(), digests: new Map() };
  }
  const detections = await readDetectionsFile(file);
  const source: LandmarkSource = { landmarks: new Map(), whyMissing: new Map(), digests: new Map() };
  for (const [id, entry] of detections.entries) {
    if (entry.sha256 !== undefined) source.digests.set(id, entry.sha256);
    let index = 0;
    if (entry.faces.length > 1 && entry.width !== undefined && entry.height !== undefined) {
      index = centerFaceIndex(entry.faces, entry.width, entry.height);
    }
    const face = entry.faces[index];
    if (face !== undefined) {
      source.landmarks.set(id, faceLandmarks(face));
    } else if (entry.substituted === true) {
      source.whyMissing.set(id, 'no face; preprocess substituted a centred crop, which the file does not store (use --landmarks detected --on-no-face center-crop)');
    } else {
      source.whyMissing.set(id, entry.rejected ?? 'no face');
    }
  }
  return source;
}

/**
 * Returns a digest of the weights a model spec names, for cache keys: the SHA-256 of the file of
 * a `NAME:PATH` spec; for a saved-model folder, or the manifest of an imported ONNX model, the
 * SHA-256 over its files (manifest, model.json and shards, or manifest and ONNX file); the spec
 * itself when it names no file (`random:SEED`).
 */
export async function modelDigest(spec: string): Promise<string> {
  const folderStat = await stat(spec).catch(() => undefined);
  if (folderStat?.isDirectory() === true) {
    const names = (await readdir(spec)).filter((name) => !name.startsWith('.')).sort();
    const parts = await Promise.all(names.map(async (name) => `${name}:${await hashFile(path.join(spec, name)).catch(() => 'not a file')}`));
    return sha256Hex(parts.join('\n'));
  }
  const file = spec.slice(spec.indexOf(':') + 1);
  if (spec.startsWith('onnx:')) {
    const manifest = await readFile(file, 'utf8').catch(() => undefined);
    const model = manifest === undefined ? undefined : (JSON.parse(manifest) as { model?: unknown }).model;
    const modelHash = typeof model === 'string' ? await hashFile(path.join(path.dirname(file), model)).catch(() => 'missing') : 'none';
    return sha256Hex(`${manifest ?? spec}\n${modelHash}`);
  }
  return hashFile(file).catch(() => spec);
}

/** Throws if an image's bytes differ from the digest recorded at detection time. */
async function assertImagesUnchanged(images: readonly ImageRef[], digests: ReadonlyMap<string, string>, file: string): Promise<void> {
  const changed: string[] = [];
  for (const ref of images) {
    const recorded = digests.get(ref.id);
    if (recorded === undefined) continue;
    const current = await hashFile(ref.path).catch(() => undefined);
    if (current !== recorded) changed.push(ref.id);
  }
  if (changed.length > 0) {
    throw new Error(
      `${changed.length} image(s) changed since ${file} was written (SHA-256 differs), so its landmarks may not fit them: ` +
        `${changed.slice(0, 10).join(', ')}${changed.length > 10 ? ', …' : ''}. Run preprocess again.`,
    );
  }
}

/**
 * Reads the landmarks of every image the pairs use from the file that `options.landmarks`
 * names, and throws, listing the images, when some have none or changed since detection.
 */
async function landmarksForImages(options: LfwEvalOptions, images: readonly ImageRef[]): Promise<Map<string, Landmarks>> {
  const source = await landmarksFrom(options.landmarks, options.landmarkOrigin ?? 'one-based');
  const withoutLandmarks = images.filter((ref) => !source.landmarks.has(ref.id));
  if (withoutLandmarks.length > 0) {
    const listed = withoutLandmarks
      .slice(0, 10)
      .map((ref) => `  ${ref.id}${source.whyMissing.has(ref.id) ? `: ${source.whyMissing.get(ref.id) ?? ''}` : ''}`)
      .join('\n');
    throw new Error(
      `${withoutLandmarks.length} image(s) used by ${options.pairs} have no landmarks in ${options.landmarks}:\n${listed}` +
        (withoutLandmarks.length > 10 ? '\n  …' : ''),
    );
  }
  await assertImagesUnchanged(images, source.digests, options.landmarks);
  return source.landmarks;
}

export async function runLfwEval(options: LfwEvalOptions): Promise<LfwEvalResult> {
  const started = performance.now();
  const batchSize = options.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`batch size must be a positive integer, got ${String(batchSize)}`);
  }

  const backend = await initBackend(options.backend);
  log.info({ backend: backend.name, threads: backend.threads, skipped: backend.skipped.map((s) => s.name) }, 'tensor backend selected');

  const pairs = await readPairs(options.pairs, { imagesDir: options.images });
  if (pairs.folds < 2) {
    throw new Error(
      `${pairs.file}:1: the header gives ${pairs.folds} fold(s), but k-fold verification needs at least 2. ` +
        'The View 1 files (pairsDevTrain.txt, pairsDevTest.txt) have one fold; pass the View 2 pairs.txt.',
    );
  }
  const images = uniqueImages(pairs.pairs);
  log.info({ pairs: pairs.pairs.length, folds: pairs.folds, images: images.length, file: pairs.file }, 'pairs read');

  const detect = options.landmarks === DETECTED;
  const landmarks = detect ? undefined : await landmarksForImages(options, images);
  const mtcnn = resolveMtcnnOptions(options.mtcnn);
  const nets = detect
    ? await loadMtcnnEngine(options.mtcnnDir, { lnet: mtcnn.landmarkRefinement === 'lnet', ...(options.engine === undefined ? {} : { engine: options.engine }) })
    : undefined;

  const { model } = await loadModel(options.model, options.engine === undefined ? {} : { engine: options.engine });
  log.info({ model: model.name, engine: model.engine, input: model.inputSize, channelOrder: model.channelOrder, embedding: model.embeddingSize }, 'model loaded');
  // The crops follow the template the network was trained on; every network built here uses
  // SphereFace's, and an imported ONNX model names its own.
  const { template, outputSize } = alignmentTemplate(model.alignment ?? DEFAULT_ALIGNMENT);

  const timings: ExtractTimings = { seconds: 0, images: 0 };
  // The window bounds decoded images in flight: enough for a few batches to overlap decoding
  // with forward passes, and never fewer than one batch, or the last batch could not fill.
  const flow = flowControl(Math.max(4 * batchSize, 64));
  const pipelineStarted = performance.now();
  const attachLandmarks: OperatorFunction<Maybe<DecodedImage>, Maybe<LandmarkedImage>> =
    nets === undefined
      ? map((image) => (isRejected(image) ? image : { ...image, landmarks: landmarks?.get(image.id) as Landmarks }))
      : detectFaces(nets, { ...mtcnn, policy: 'center', onNoFace: options.onNoFace ?? 'reject' });

  const computeFeatures: OperatorFunction<Maybe<ImageRef>, Maybe<Feature>> = (refs) =>
    refs.pipe(
      readImages({ concurrency: options.decodeConcurrency ?? 2, ...(options.maxPixels === undefined ? {} : { maxPixels: options.maxPixels }) }),
      attachLandmarks,
      similarityAlign({ template, outputSize }),
      batch(batchSize),
      extractFeatures(model, { timings }),
    );

  const cache = options.cacheDir === undefined ? undefined : ArtifactCache.open(options.cacheDir);
  const cachedFeatures =
    cache === undefined
      ? undefined
      : cached<ImageRef, Feature>(
          cache,
          {
            stage: 'lfw-eval-features',
            version: 1,
            params: {
              model: model.name,
              modelFile: await modelDigest(options.model),
              // The engines agree to about 1e-6, not bit for bit, so each keeps its own features.
              engine: model.engine,
              template,
              outputSize,
              feature: 'image ++ mirror',
              landmarks:
                nets === undefined
                  ? { source: 'file', origin: options.landmarkOrigin ?? 'one-based' }
                  : { source: 'mtcnn', ...mtcnn, onNoFace: options.onNoFace ?? 'reject', engine: nets.engine },
            },
            // The landmarks of a file are part of the input: a changed landmark line recomputes that image.
            inputHash: async (ref) => sha256Hex(`${await hashFile(ref.path)}:${JSON.stringify(landmarks?.get(ref.id) ?? null)}`),
            encode: (feature) => new Uint8Array(feature.vector.buffer, feature.vector.byteOffset, feature.vector.byteLength),
            decode: (bytes, ref) => ({ id: ref.id, path: ref.path, vector: new Float32Array(bytes.slice().buffer) }),
          },
          computeFeatures,
        );

  const features$ = from(images).pipe(flow.admit(), cachedFeatures ?? computeFeatures);
  let results: Array<Maybe<Feature>>;
  try {
    results = await lastValueFrom(
      features$.pipe(
        progress({ total: images.length, unit: 'images', ...(options.progressBar === undefined ? {} : { bar: options.progressBar }) }),
        flow.release(),
        toArray(),
      ),
    );
  } finally {
    model.dispose();
    nets?.dispose();
    cache?.close();
  }
  if (cachedFeatures !== undefined) log.info({ ...cachedFeatures.counters, cache: options.cacheDir }, 'feature cache');
  const pipelineSeconds = (performance.now() - pipelineStarted) / 1000;

  // Logged only now, because log lines written while a progress bar is drawn garble it.
  const rejected = results.filter(isRejected);
  for (const record of rejected) log.warn({ id: record.id, stage: record.stage, reason: record.reason }, 'image rejected');
  if (rejected.length > 0) throw new RejectedImagesError(rejected);
  const features = new Map((results as Feature[]).map((f) => [f.id, f.vector]));

  const { report, testScores, scoresByFold } = verifyFoldsWithScores(pairs.pairs, features, { subtractMean: options.subtractMean ?? true });
  const wallSeconds = (performance.now() - started) / 1000;

  return {
    report,
    pairs: pairs.pairs,
    testScores,
    scoresByFold,
    backend,
    counts: { pairs: pairs.pairs.length, images: images.length },
    settings: {
      dataset: 'lfw',
      view: pairs.view,
      images: options.images,
      pairs: pairs.file,
      landmarks: detect ? { source: 'mtcnn', ...mtcnn, policy: 'center', onNoFace: options.onNoFace ?? 'reject' } : options.landmarks,
      landmarkOrigin: detect || options.landmarks.endsWith('.jsonl') ? 'one-based' : (options.landmarkOrigin ?? 'one-based'),
      model: options.model,
      modelName: model.name,
      engine: model.engine,
      inputSize: model.inputSize,
      channelOrder: model.channelOrder,
      normalization: model.normalization,
      alignment: { method: 'cp2tform-similarity', interpolation: 'bilinear', fill: 0, template, outputSize, name: model.alignment ?? DEFAULT_ALIGNMENT },
      feature: 'image ++ horizontal mirror',
      protocol: { folds: pairs.folds, subtractMean: report.subtractMean, thresholdGrid: '-1:1e-4:1', tieRule: 'mean of tied thresholds', comparison: 'strict' },
      batchSize,
    },
    timings: {
      wallSeconds,
      pipelineSeconds,
      forwardSeconds: timings.seconds,
      imagesPerSecond: images.length / pipelineSeconds,
      forwardImagesPerSecond: timings.seconds > 0 ? timings.images / timings.seconds : 0,
    },
  };
}
