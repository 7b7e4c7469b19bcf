/**
 * The operators a pipeline spec can name without a plugin: sources that list images, and the
 * stages of the SphereFace pipeline from decoding to k-fold verification.
 */
import { mkdir, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { Schema } from 'effect';
import fg from 'fast-glob';
import { concatMap, map } from 'rxjs';
import sharp from 'sharp';

import { readImageFolder, readImageList } from '../datasets/imageFolder.ts';
import { readPairs, uniqueImages, type LfwPairs } from '../datasets/lfw.ts';
import { hashFile } from '../lib/artifactCache.ts';
import { SPHEREFACE_OUTPUT_SIZE } from '../lib/cp2tform.ts';
import { lfwPaths, modelsRoot } from '../lib/paths.ts';
import { MTCNN_MODEL_FILES } from '../model/mtcnn.ts';
import { DEFAULT_MTCNN_ENGINE, loadMtcnnEngine } from '../model/mtcnnEngine.ts';
import { resolveMtcnnOptions } from '../model/mtcnnDetect.ts';
import { loadEngineModel } from '../model/engine.ts';
import { batch } from '../operators/batch.ts';
import { detectFaces, type FaceImage } from '../operators/detectFaces.ts';
import { detectFacesInWorkers } from '../operators/detectFacesInWorkers.ts';
import { extractFeatures } from '../operators/extractFeatures.ts';
import { kFoldVerify } from '../operators/kFoldVerify.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, reject, type AlignedFace, type DecodedImage, type Feature, type Landmarks, type Maybe } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';
import { ALIGNMENT_NAMES, alignmentTemplate, DEFAULT_ALIGNMENT, type AlignmentName } from '../lib/alignmentTemplates.ts';
import type { FivePoints } from '../operators/records.ts';
import { landmarksFrom, modelDigest } from './lfwEval.ts';
import { defineSource, defineStage, SOURCE_IDS, type OperatorDefinition, type OpenedStage } from './operatorDefinition.ts';
import { cropPath } from './preprocess.ts';
import { TRAINING_OPERATORS } from './trainOperators.ts';

const PositiveInt = Schema.Int.pipe(Schema.positive());
const Point = Schema.Tuple(Schema.Number, Schema.Number);

/** The key under which the `lfw` source shares its pairs with `kFoldVerify`. */
const LFW_PAIRS = 'lfw.pairs';

// Sources
// ---------------------------------------------------------------------------------------------

const imageList = defineSource({
  name: 'imageList',
  description: 'images listed in a file, one path per line, optionally followed by a label',
  params: Schema.Struct({ list: Schema.String, root: Schema.optional(Schema.String) }),
  pathParams: [
    { name: 'list', kind: 'file' },
    { name: 'root', kind: 'folder' },
  ],
  output: 'ImageRef',
  open: (params) => readImageList(params.list, params.root),
});

const imageFolder = defineSource({
  name: 'imageFolder',
  description: 'images in a folder with one subfolder per identity (the CASIA-WebFace layout)',
  params: Schema.Struct({ root: Schema.String }),
  pathParams: [{ name: 'root', kind: 'folder' }],
  output: 'ImageRef',
  open: (params) => readImageFolder(params.root),
});

const lfw = defineSource({
  name: 'lfw',
  description: 'every LFW image that the pairs file uses, each once; the pairs go to kFoldVerify',
  params: Schema.Struct({ root: Schema.optional(Schema.String), pairs: Schema.optional(Schema.String) }),
  pathParams: [
    { name: 'root', kind: 'folder' },
    { name: 'pairs', kind: 'file' },
  ],
  output: 'ImageRef',
  open: async (params, context) => {
    const defaults = lfwPaths();
    const pairs = await readPairs(params.pairs ?? defaults.pairs, { imagesDir: params.root ?? defaults.images });
    context.shared.set(LFW_PAIRS, pairs);
    return uniqueImages(pairs.pairs);
  },
});

// Image stages
// ---------------------------------------------------------------------------------------------

const readImagesStage = defineStage({
  name: 'readImages',
  description: 'decode each image to 8-bit RGB (EXIF orientation applied, alpha flattened)',
  params: Schema.Struct({
    concurrency: Schema.optionalWith(PositiveInt, { default: () => 2 }),
    maxPixels: Schema.optionalWith(PositiveInt, { default: () => 50_000_000 }),
  }),
  input: 'ImageRef',
  output: 'DecodedImage',
  version: 1,
  shape: 'per-item',
  open: async (params) => ({
    operator: readImages({ concurrency: params.concurrency, maxPixels: params.maxPixels }) as OpenedStage['operator'],
    // Neither setting changes a decoded image: maxPixels only decides which images are
    // rejected. So raising it reuses every stored result, and images rejected under the old
    // limit run again with --retry-failed.
    keyParams: {},
  }),
});

const landmarks = defineStage({
  name: 'landmarks',
  description: 'attach five landmarks per image from a landmark file or a detections file (.jsonl)',
  params: Schema.Struct({
    file: Schema.String,
    origin: Schema.optionalWith(Schema.Literal('one-based', 'zero-based'), { default: () => 'one-based' as const }),
  }),
  pathParams: [{ name: 'file', kind: 'file' }],
  input: 'DecodedImage',
  output: 'LandmarkedImage',
  version: 1,
  shape: 'per-item',
  open: async (params) => {
    const source = await landmarksFrom(params.file, params.origin);
    const attach = (image: Maybe<DecodedImage>): Maybe<DecodedImage & { landmarks: Landmarks }> => {
      if (isRejected(image)) return image;
      const found = source.landmarks.get(image.id);
      if (found === undefined) {
        const why = source.whyMissing.get(image.id);
        return reject(image, 'landmarks', `no landmarks for ${image.id} in ${params.file}${why === undefined ? '' : `: ${why}`}`);
      }
      return { ...image, landmarks: found };
    };
    return {
      operator: map(attach) as OpenedStage['operator'],
      keyParams: { origin: params.origin },
      // The landmarks of each image are part of its key, so editing one line of the file
      // recomputes that image only.
      itemKey: (id) => JSON.stringify(source.landmarks.get(id)?.points ?? source.whyMissing.get(id) ?? null),
    };
  },
});

/** The fields `detectFaces` adds to a decoded image, as stored in the cache. */
type DetectionFields = Omit<FaceImage, keyof DecodedImage>;

const detectFacesStage = defineStage({
  name: 'detectFaces',
  description: 'MTCNN face detection; keeps the face nearest the image centre and its five landmarks',
  params: Schema.Struct({
    models: Schema.optional(Schema.String),
    minSize: Schema.optional(Schema.Number),
    factor: Schema.optional(Schema.Number),
    thresholds: Schema.optional(Schema.Tuple(Schema.Number, Schema.Number, Schema.Number)),
    refineLandmarks: Schema.optionalWith(Schema.Literal('none', 'lnet'), { default: () => 'none' as const }),
    policy: Schema.optionalWith(Schema.Literal('center', 'all'), { default: () => 'center' as const }),
    onNoFace: Schema.optionalWith(Schema.Literal('reject', 'center-crop'), { default: () => 'reject' as const }),
    /** Worker threads that run MTCNN; 1 runs it on the main thread. Results are the same either way. */
    workers: Schema.optionalWith(PositiveInt, { default: () => os.availableParallelism() }),
    /** Inference engine of the networks; `auto` takes `DEFAULT_MTCNN_ENGINE`. */
    engine: Schema.optionalWith(Schema.Literal('auto', 'onnx', 'tfjs'), { default: () => 'auto' as const }),
  }),
  pathParams: [{ name: 'models', kind: 'folder' }],
  input: 'DecodedImage',
  output: 'FaceImage',
  usesTensors: true,
  version: 1,
  shape: 'per-item',
  check: (params) => {
    if (params.policy === 'all') {
      // NOTE: cached stages take one record per image, and policy `all` emits one per face.
      return 'policy "all" is not supported in pipeline specs yet, because stages after it expect one record per image; use `sphereface preprocess --policy all`';
    }
    try {
      resolveMtcnnOptions({
        ...(params.minSize === undefined ? {} : { minSize: params.minSize }),
        ...(params.factor === undefined ? {} : { factor: params.factor }),
        ...(params.thresholds === undefined ? {} : { thresholds: params.thresholds }),
      });
    } catch (error) {
      return (error as Error).message;
    }
    return undefined;
  },
  open: async (params, context) => {
    const mtcnn = resolveMtcnnOptions({
      ...(params.minSize === undefined ? {} : { minSize: params.minSize }),
      ...(params.factor === undefined ? {} : { factor: params.factor }),
      ...(params.thresholds === undefined ? {} : { thresholds: params.thresholds }),
      landmarkRefinement: params.refineLandmarks,
    });
    const dir = params.models ?? path.join(modelsRoot(), 'mtcnn');
    const lnet = mtcnn.landmarkRefinement === 'lnet';
    const files = [MTCNN_MODEL_FILES.pnet, MTCNN_MODEL_FILES.rnet, MTCNN_MODEL_FILES.onet, ...(lnet ? [MTCNN_MODEL_FILES.lnet] : [])];
    const digests = await Promise.all(files.map((file) => hashFile(path.join(dir, file))));
    const options = { ...mtcnn, policy: 'center' as const, onNoFace: params.onNoFace };
    const requested = params.engine === 'auto' ? {} : { engine: params.engine };
    const nets = params.workers > 1 ? undefined : await loadMtcnnEngine(dir, { lnet, ...requested });
    const operator =
      nets === undefined
        ? detectFacesInWorkers({ ...options, ...requested, modelsDir: dir, threads: params.workers, ...(context.backend === undefined ? {} : { backend: context.backend }) })
        : detectFaces(nets, options);
    // The engines agree to about 1e-4 pixels, not bit for bit, so each keeps its own records.
    // NOTE: with workers, `auto` is keyed as the default engine even if a worker fell back to the other.
    const engine = nets?.engine ?? (params.engine === 'auto' ? DEFAULT_MTCNN_ENGINE : params.engine);
    return {
      operator: operator as OpenedStage['operator'],
      keyParams: { ...mtcnn, onNoFace: params.onNoFace, weights: digests, engine },
      cache: {
        selfContained: false,
        encode: (face: FaceImage) => {
          const { id: _id, path: _path, width: _width, height: _height, rgb: _rgb, ...fields } = face;
          return new TextEncoder().encode(JSON.stringify(fields));
        },
        decode: (bytes: Uint8Array, image: DecodedImage) => ({ ...image, ...(JSON.parse(new TextDecoder().decode(bytes)) as DetectionFields) }) as FaceImage,
      },
      dispose: () => nets?.dispose(),
    };
  },
});

/** Stores an aligned face as a JSON header line (size, transform) followed by its raw RGB. */
function encodeAlignedFace(face: AlignedFace): Uint8Array {
  const header = new TextEncoder().encode(`${JSON.stringify({ width: face.width, height: face.height, transform: face.transform })}\n`);
  const bytes = new Uint8Array(header.length + face.rgb.length);
  bytes.set(header, 0);
  bytes.set(face.rgb, header.length);
  return bytes;
}

function decodeAlignedFace(bytes: Uint8Array, ref: { id: string; path: string }): AlignedFace {
  const newline = bytes.indexOf(10);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(0, newline))) as Pick<AlignedFace, 'width' | 'height' | 'transform'>;
  const rgb = bytes.slice(newline + 1);
  if (rgb.length !== header.width * header.height * 3) {
    throw new Error(`stored face has ${rgb.length} bytes of RGB, expected ${header.width}×${header.height}×3`);
  }
  return { id: ref.id, path: ref.path, ...header, rgb };
}

/** Returns the template points and crop size that the `similarityAlign` stage's parameters name. */
function alignmentOf(params: {
  readonly template: 'sphereface' | AlignmentName | FivePoints;
  readonly outputSize?: { readonly width: number; readonly height: number } | undefined;
}): { template: FivePoints; outputSize: { width: number; height: number } } {
  // Width first, as the stage always keyed its cache entries.
  const size = (value: { readonly width: number; readonly height: number }) => ({ width: value.width, height: value.height });
  if (typeof params.template === 'string') {
    const named = alignmentTemplate(params.template === 'sphereface' ? DEFAULT_ALIGNMENT : params.template);
    return { template: named.template, outputSize: size(params.outputSize ?? named.outputSize) };
  }
  return { template: params.template, outputSize: size(params.outputSize ?? SPHEREFACE_OUTPUT_SIZE) };
}

const similarityAlignStage = defineStage({
  name: 'similarityAlign',
  description: 'warp each face onto the alignment template with a similarity transform (cp2tform)',
  params: Schema.Struct({
    /**
     * `sphereface` (SphereFace's 112×96 template), a named template of
     * `lib/alignmentTemplates.ts` such as `arcface-112x112`, or five 1-based (x, y) points.
     */
    template: Schema.optionalWith(
      Schema.Union(Schema.Literal('sphereface', ...ALIGNMENT_NAMES), Schema.Tuple(Point, Point, Point, Point, Point)),
      { default: () => 'sphereface' as const },
    ),
    /** Crop size; default the named template's, or 112×96 with explicit points. */
    outputSize: Schema.optional(Schema.Struct({ width: PositiveInt, height: PositiveInt })),
  }),
  input: 'LandmarkedImage',
  output: 'AlignedFace',
  version: 1,
  shape: 'per-item',
  check: (params) => {
    try {
      similarityAlign(alignmentOf(params));
    } catch (error) {
      return (error as Error).message;
    }
    return undefined;
  },
  open: async (params) => {
    const { template, outputSize } = alignmentOf(params);
    return {
      operator: similarityAlign({ template, outputSize }) as OpenedStage['operator'],
      keyParams: { template, outputSize },
      cache: { selfContained: true, encode: encodeAlignedFace, decode: decodeAlignedFace },
    };
  },
});

const batchStage = defineStage({
  name: 'batch',
  description: 'group aligned faces into batches for the network',
  params: Schema.Struct({ size: Schema.optionalWith(PositiveInt, { default: () => 32 }) }),
  input: 'AlignedFace',
  output: 'FaceBatch',
  version: 1,
  shape: 'batching',
  open: async (params) => ({ operator: batch(params.size) as OpenedStage['operator'] }),
});

const extractFeaturesStage = defineStage({
  name: 'extractFeatures',
  description: 'embed each face and its mirror image with a network; the feature is both, concatenated',
  params: Schema.Struct({
    model: Schema.String,
    mirror: Schema.optionalWith(Schema.Boolean, { default: () => true }),
    /** Inference engine; `auto` takes ONNX Runtime when the network exports to it. */
    engine: Schema.optionalWith(Schema.Literal('auto', 'onnx', 'tfjs'), { default: () => 'auto' as const }),
  }),
  pathParams: [{ name: 'model', kind: 'model' }],
  input: 'FaceBatch',
  output: 'Feature',
  usesTensors: true,
  version: 1,
  shape: 'per-item',
  open: async (params) => {
    const model = await loadEngineModel(params.model, params.engine === 'auto' ? undefined : params.engine);
    return {
      operator: extractFeatures(model, { mirror: params.mirror }) as OpenedStage['operator'],
      // The engines agree to about 1e-6, not bit for bit, so each keeps its own features.
      keyParams: { model: model.name, weights: await modelDigest(params.model), mirror: params.mirror, engine: model.engine },
      cache: {
        selfContained: true,
        encode: (feature: Feature) => new Uint8Array(feature.vector.buffer, feature.vector.byteOffset, feature.vector.byteLength),
        decode: (bytes: Uint8Array, ref: { id: string; path: string }) => ({ id: ref.id, path: ref.path, vector: new Float32Array(bytes.slice().buffer) }),
      },
      dispose: () => model.dispose(),
    };
  },
});

// Sinks
// ---------------------------------------------------------------------------------------------

const kFoldVerifyStage = defineStage({
  name: 'kFoldVerify',
  description: 'score the pairs by cosine similarity and run the k-fold protocol; the pairs come from the lfw source or `pairs`',
  params: Schema.Struct({ pairs: Schema.optional(Schema.String), root: Schema.optional(Schema.String) }),
  pathParams: [
    { name: 'pairs', kind: 'file' },
    { name: 'root', kind: 'folder' },
  ],
  input: 'Feature',
  output: 'VerificationReport',
  version: 1,
  shape: 'terminal',
  open: async (params, context) => {
    let pairs = context.shared.get(LFW_PAIRS) as LfwPairs | undefined;
    if (params.pairs !== undefined) {
      pairs = await readPairs(params.pairs, { imagesDir: params.root ?? lfwPaths().images });
    }
    if (pairs === undefined) throw new Error('kFoldVerify needs pairs: give params.pairs, or start the pipeline with the lfw source');
    if (pairs.folds < 2) throw new Error(`${pairs.file}: ${pairs.folds} fold(s); k-fold verification needs at least 2 (use the View 2 pairs.txt)`);
    // Checked now rather than after every feature is computed: a pair whose image the source
    // does not list can never be scored, and dropping it would shift the folds.
    const listed = context.shared.get(SOURCE_IDS) as ReadonlySet<string> | undefined;
    const unlisted = listed === undefined ? [] : uniqueImages(pairs.pairs).filter((ref) => !listed.has(ref.id));
    if (unlisted.length > 0) {
      throw new Error(
        `${unlisted.length} image(s) of ${pairs.file} are not among the images the source lists, so their pairs cannot be scored: ` +
          `${unlisted.slice(0, 5).map((ref) => ref.id).join(', ')}${unlisted.length > 5 ? ', …' : ''}`,
      );
    }
    return { operator: kFoldVerify(pairs.pairs) as OpenedStage['operator'] };
  },
});

const writeCrops = defineStage({
  name: 'writeCrops',
  description: 'write each aligned face as <out>/<image id without extension>.png, atomically',
  params: Schema.Struct({ out: Schema.String }),
  pathParams: [{ name: 'out', kind: 'output-folder' }],
  input: 'AlignedFace',
  output: 'AlignedFace',
  version: 1,
  shape: 'per-item',
  open: async (params) => {
    // Temporary files of runs that were killed mid-write; their crops are written again. Files
    // of a process that still runs (a concurrent run into the same folder) are left alone.
    const leftovers = await fg('**/.tmp-*.png', { cwd: params.out, dot: true, absolute: true });
    await Promise.all(leftovers.filter((file) => !isRunning(Number(/\.tmp-(\d+)-/.exec(path.basename(file))?.[1]))).map((file) => rm(file, { force: true })));
    const owners = new Map<string, string>();
    const write = async (face: Maybe<AlignedFace>): Promise<Maybe<AlignedFace>> => {
      if (isRejected(face)) return face;
      const file = cropPath(params.out, face.id);
      // Names that differ only in extension or case (a.jpg, A.png) map to one crop file.
      const owner = owners.get(file.toLowerCase());
      if (owner !== undefined && owner !== face.id) {
        return reject(face, 'writeCrops', `its crop ${file} would overwrite the crop of ${owner}; rename one of the two images`);
      }
      owners.set(file.toLowerCase(), face.id);
      await mkdir(path.dirname(file), { recursive: true });
      // Written under a temporary name and renamed, so a crop file is either absent or whole.
      const temporary = path.join(path.dirname(file), `.tmp-${process.pid}-${path.basename(file)}`);
      try {
        await sharp(face.rgb, { raw: { width: face.width, height: face.height, channels: 3 } }).png().toFile(temporary);
        await rename(temporary, file);
      } catch (error) {
        await rm(temporary, { force: true });
        throw error;
      }
      return face;
    };
    return { operator: concatMap(write) as OpenedStage['operator'] };
  },
});

/** Returns whether a process with this id exists (a signal-0 probe). */
function isRunning(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Every operator a spec can name without plugins. */
export const BUILTIN_OPERATORS: readonly OperatorDefinition[] = [
  imageList,
  imageFolder,
  lfw,
  readImagesStage,
  landmarks,
  detectFacesStage,
  similarityAlignStage,
  batchStage,
  extractFeaturesStage,
  kFoldVerifyStage,
  writeCrops,
  ...TRAINING_OPERATORS,
];
