/**
 * Face embedding and verification for programs that use sphereface-ts as a library. Each image
 * goes through the same steps as the LFW evaluation with `--landmarks detected`: MTCNN detection
 * with SphereFace's settings, similarity alignment onto the 112×96 template, and the embedding of
 * the face followed by the embedding of its mirror. The feature is that vector scaled to unit
 * L2 norm, and two faces are scored by the cosine of their features, with no mean subtracted.
 */
import { log } from '../lib/log.ts';
import { mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { alignmentTemplate, DEFAULT_ALIGNMENT } from '../lib/alignmentTemplates.ts';
import type { StoredThreshold } from '../model/knownWeights.ts';
import { alignOrReject, resolveAlignSettings } from '../lib/alignFace.ts';
import { initBackend, type BackendName } from '../model/backend.ts';
import { ENGINE_NAMES, type EngineName } from '../model/engine.ts';
import { loadModel } from '../model/loadModel.ts';
import { loadMtcnn, type MtcnnNets } from '../model/mtcnn.ts';
import { detect, resolveMtcnnOptions, type Box, type Detection, type MtcnnOptions, type MtcnnSettings } from '../model/mtcnnDetect.ts';
import type { ModelManifest } from '../model/savedModel.ts';
import type { EmbeddingModel } from '../model/types.ts';
import { centerFaceIndex, clampBox } from '../operators/detectFaces.ts';
import { embedBatch } from '../operators/extractFeatures.ts';
import { isRejected, type DecodedImage, type FivePoints } from '../operators/records.ts';
import { decodeImageInput, describeImageInput, type ImageInput } from './imageInput.ts';

export { ImageInputError, type ImageInput } from './imageInput.ts';

/**
 * Rule that picks one face when an image has several. `largest` takes the largest box area
 * inside the image, and `center` the box centre nearest the image centre (SphereFace's rule). A
 * number is a 0-based index into the faces, which are ordered by detection score, highest first.
 */
export type FaceSelection = 'largest' | 'center' | number;

/** A network with the manifest it was saved with, as `loadModel` returns it. */
export interface LoadedFaceModel {
  readonly model: EmbeddingModel;
  /**
   * The saved model's manifest. Its `threshold.value` is the cosine threshold the model reached
   * on LFW, scored on image-plus-mirror features without mean subtraction, as `verify` scores.
   */
  readonly manifest?: ModelManifest;
  /**
   * The threshold stored with the model: the manifest's, or for a published weights file loaded
   * by its `NAME:FILE` spec, the one measured here (`model/knownWeights.ts`).
   */
  readonly threshold?: StoredThreshold;
}

/** Options of `createFaceVerifier`, `embed` and `verify`. */
export interface FaceVerifierOptions {
  /**
   * The embedding network: a model spec such as `mobilefacenet:models/mobilefacenet-casia/068.ckpt`,
   * a loaded `EmbeddingModel`, or a `{ model, manifest }` pair. The caller keeps ownership of a
   * loaded model, so `dispose()` does not release it. Default: `defaultModelSpec()`, the
   * MobileFaceNet checkpoint in `$SPHEREFACE_MODELS` (default `./models`).
   */
  readonly model?: string | EmbeddingModel | LoadedFaceModel;
  /**
   * Inference engine for a model given as a spec. Default: ONNX Runtime when the network exports
   * to it, else TensorFlow.js. Rejected together with an already loaded model.
   */
  readonly engine?: EngineName;
  /** Face to use when an image has several. Default `largest`. */
  readonly face?: FaceSelection;
  /** Folder with MTCNN's `det1`–`det3.caffemodel` (and `det4` for L-Net). Default `$SPHEREFACE_MODELS/mtcnn`. */
  readonly mtcnnDir?: string;
  /** MTCNN settings. Default: SphereFace's (minimum face 20 px, factor 0.85, thresholds 0.6, 0.7, 0.9). */
  readonly mtcnn?: MtcnnOptions;
  /**
   * Cosine threshold for `verify`: a score above it means the same person. Default: the
   * threshold stored with the model (its manifest's, or the one measured for a published weights
   * file, `model/knownWeights.ts`). Without either, `verify` throws `MissingThresholdError`.
   */
  readonly threshold?: number;
  /** TensorFlow.js backend for detection and pixel normalisation. Default: the fastest that loads. */
  readonly backend?: BackendName;
  /** Reject an image with more pixels than this before decoding it. Default 50,000,000. */
  readonly maxPixels?: number;
}

/** Options of one `embed` call on a verifier. */
export interface EmbedCallOptions {
  /** Face to use when the image has several. Default: the verifier's `face` option. */
  readonly face?: FaceSelection;
}

/** Options of one `verify` call on a verifier. */
export interface VerifyCallOptions extends EmbedCallOptions {
  /** Cosine threshold for this call. Default: the verifier's `threshold`, else the model's stored one. */
  readonly threshold?: number;
}

/** One face that MTCNN found. */
export interface DetectedFace {
  /** Face box [x1, y1, x2, y2] clamped to the image, in 1-based pixel coordinates with x2 and y2 inclusive. */
  readonly box: Box;
  /** Left eye, right eye, nose tip, left and right mouth corner, 1-based [x, y] pixels ("left" is the image's left). */
  readonly landmarks: FivePoints;
  /** O-Net face probability, 0 to 1. */
  readonly score: number;
}

/** The result of `embed`: the feature of the face used and what the detector found. */
export interface FaceEmbedding extends DetectedFace {
  /** The image path, or `<buffer of N bytes>` for an image given as bytes. */
  readonly source: string;
  /** Image size in pixels, after EXIF orientation. */
  readonly imageSize: { readonly width: number; readonly height: number };
  /** The embedding of the face followed by that of its mirror, scaled to unit L2 norm. */
  readonly feature: Float32Array;
  /** Number of faces found in the image. */
  readonly faceCount: number;
  /** Position of the face used among `faces`, 0-based. */
  readonly faceIndex: number;
  /** The rule that chose the face. */
  readonly selection: FaceSelection;
  /** Every face found, highest detection score first. */
  readonly faces: readonly DetectedFace[];
}

/** The result of `verify`. */
export interface Verification {
  /** Cosine of the two features, from −1 to 1. */
  readonly score: number;
  /** The threshold the score was compared with. */
  readonly threshold: number;
  /** Origin of the threshold: the `threshold` option, or the one stored with the model (`manifest`). */
  readonly thresholdSource: 'option' | 'manifest';
  /** True when `score > threshold`, the strict comparison of the LFW protocol. */
  readonly same: boolean;
  /** The model spec, or the network name for a model given already loaded. */
  readonly model: string;
  /** The faces of the first and the second image. */
  readonly faces: readonly [FaceEmbedding, FaceEmbedding];
}

/** An image in which MTCNN found no face. */
export class NoFaceError extends Error {
  override readonly name = 'NoFaceError';
  constructor(readonly source: string) {
    super(`no face found in ${source}; expected a photo with a face at least 20 pixels high (MTCNN minSize)`);
  }
}

/** `verify` was called without a threshold, and the model stores none. */
export class MissingThresholdError extends Error {
  override readonly name = 'MissingThresholdError';
  constructor(readonly model: string) {
    super(
      `no verification threshold: model ${model} stores none. Pass the cosine score above which two faces are the same person, ` +
        'as --threshold X on the command line or { threshold: X } in code, or use a saved model whose manifest stores its LFW threshold',
    );
  }
}

/** Embeds and verifies faces with one network and one detector, loaded once. */
export interface FaceVerifier {
  /** The model spec, or the network name for a model given already loaded. */
  readonly model: string;
  /** Length of `FaceEmbedding.feature`: twice the network's embedding size. */
  readonly featureLength: number;
  /** The threshold `verify` uses by default, or undefined when neither the options nor the manifest give one. */
  readonly threshold: number | undefined;
  /**
   * Detects the faces in an image, chooses one, aligns and embeds it.
   * @throws NoFaceError when the image has no face.
   * @throws ImageInputError when the image cannot be read or decoded.
   * @throws RangeError when `face` is an index past the last face found.
   */
  embed(image: ImageInput, options?: EmbedCallOptions): Promise<FaceEmbedding>;
  /**
   * Embeds both images and compares the cosine of their features with the threshold.
   * @throws MissingThresholdError when no threshold is given or stored; otherwise as `embed`.
   */
  verify(first: ImageInput, second: ImageInput, options?: VerifyCallOptions): Promise<Verification>;
  /** Releases the detector, and the network when the verifier loaded it. Later calls throw. */
  dispose(): void;
}


/** Returns the default model spec: the CASIA-WebFace MobileFaceNet checkpoint in `$SPHEREFACE_MODELS`. */
export function defaultModelSpec(): string {
  return `mobilefacenet:${mobileFaceNetCheckpoint()}`;
}

/**
 * Loads the network and MTCNN once and returns a verifier for many `embed` and `verify` calls.
 * Calls on one verifier run one at a time, in call order, because the detector and the network
 * share one TensorFlow.js backend.
 *
 * @example
 * const verifier = await createFaceVerifier({ threshold: 0.3 });
 * try {
 *   const { score, same } = await verifier.verify('a.jpg', 'b.jpg');
 * } finally {
 *   verifier.dispose();
 * }
 *
 * @throws TypeError or RangeError for invalid options, ModelSpecError for a spec that names no
 *   known network or file, and Error when a model file or the MTCNN weights cannot be read.
 */
export async function createFaceVerifier(options: FaceVerifierOptions = {}): Promise<FaceVerifier> {
  const settings = resolveSettings(options);
  await initBackend(options.backend);

  const nets = await loadMtcnn(options.mtcnnDir, { lnet: settings.mtcnn.landmarkRefinement === 'lnet' });
  let loaded: ResolvedModel;
  try {
    loaded = await resolveModel(options);
  } catch (error) {
    nets.dispose();
    throw error;
  }
  const { model, label, ownsModel } = loaded;
  const storedThreshold = (loaded.threshold ?? loaded.manifest?.threshold)?.value;
  if (storedThreshold !== undefined) checkThreshold(storedThreshold, `the threshold stored with model ${label}`);

  // Faces are aligned onto the template the model was trained on: its manifest's, an imported
  // ONNX model's own, or SphereFace's.
  const alignment = loaded.manifest?.alignment ?? model.alignment ?? DEFAULT_ALIGNMENT;
  const { template, outputSize } = alignmentTemplate(alignment);
  const { height, width } = model.inputSize;
  if (height !== outputSize.height || width !== outputSize.width) {
    if (ownsModel) model.dispose();
    nets.dispose();
    throw new RangeError(
      `model ${label} takes ${height}×${width} inputs, but its alignment ${alignment} makes ` +
        `${outputSize.height}×${outputSize.width} crops; use a network with that input size`,
    );
  }

  const defaultThreshold = settings.threshold ?? storedThreshold;
  const alignSettings = resolveAlignSettings({ template, outputSize });
  let disposed = false;
  let queue: Promise<unknown> = Promise.resolve();

  /** Runs `work` after every earlier call on this verifier has settled. */
  const serialized = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work, work);
    queue = run.catch(() => undefined);
    return run;
  };

  const assertUsable = (): void => {
    if (disposed) throw new Error('this face verifier was disposed; create a new one with createFaceVerifier()');
  };

  const embedOne = async (image: ImageInput, selection: FaceSelection): Promise<FaceEmbedding> => {
    assertUsable();
    const decoded = await decodeImageInput(image, settings.maxPixels);
    const source = describeImageInput(image);
    const detections = await detect(nets, decoded, settings.mtcnn);
    if (detections.length === 0) throw new NoFaceError(source);

    const faces = detections.map((detection) => describeFace(detection, decoded));
    const faceIndex = selectFace(detections, faces, selection, decoded, source);
    const detection = detections[faceIndex] as Detection;
    const aligned = alignOrReject({ ...decoded, landmarks: detection.landmarks }, alignSettings);
    if (isRejected(aligned)) throw new Error(aligned.reason);

    const [vector] = await embedBatch(model, [aligned], true);
    const feature = unitLength(vector as Float32Array, `${label} on the face in ${source}`);
    if (faces.length > 1) {
      log.debug({ source, faces: faces.length, faceIndex, selection }, 'several faces found, one used');
    }
    return {
      ...(faces[faceIndex] as DetectedFace),
      source,
      imageSize: { width: decoded.width, height: decoded.height },
      feature,
      faceCount: faces.length,
      faceIndex,
      selection,
      faces,
    };
  };

  return {
    model: label,
    featureLength: 2 * model.embeddingSize,
    threshold: defaultThreshold,

    embed(image, callOptions = {}) {
      const selection = callOptions.face ?? settings.face;
      checkSelection(selection);
      return serialized(() => embedOne(image, selection));
    },

    async verify(first, second, callOptions = {}) {
      const selection = callOptions.face ?? settings.face;
      checkSelection(selection);
      if (callOptions.threshold !== undefined) checkThreshold(callOptions.threshold, 'threshold');
      const threshold = callOptions.threshold ?? defaultThreshold;
      if (threshold === undefined) throw new MissingThresholdError(label);
      const thresholdSource = callOptions.threshold !== undefined || settings.threshold !== undefined ? 'option' : 'manifest';

      const a = await serialized(() => embedOne(first, selection));
      const b = await serialized(() => embedOne(second, selection));
      const score = cosine(a.feature, b.feature);
      return { score, threshold, thresholdSource, same: score > threshold, model: label, faces: [a, b] };
    },

    dispose() {
      if (disposed) return;
      disposed = true;
      nets.dispose();
      if (ownsModel) model.dispose();
    },
  };
}

/**
 * Embeds the face in one image. It loads the network and the detector for this call alone;
 * for several images, create one `createFaceVerifier` and call its `embed`.
 * @throws as `FaceVerifier.embed` and `createFaceVerifier`.
 */
export async function embed(image: ImageInput, options: FaceVerifierOptions = {}): Promise<FaceEmbedding> {
  const verifier = await createFaceVerifier(options);
  try {
    return await verifier.embed(image);
  } finally {
    verifier.dispose();
  }
}

/**
 * Decides whether two images show the same person: embeds the face of each and compares the
 * cosine of their features with the threshold (the `threshold` option, else the model's stored
 * one). It loads the network and the detector for this call alone; for many pairs, create one
 * `createFaceVerifier` and call its `verify`.
 * @throws as `FaceVerifier.verify` and `createFaceVerifier`.
 */
export async function verify(first: ImageInput, second: ImageInput, options: FaceVerifierOptions = {}): Promise<Verification> {
  const verifier = await createFaceVerifier(options);
  try {
    return await verifier.verify(first, second);
  } finally {
    verifier.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Options and models

interface ResolvedSettings {
  readonly face: FaceSelection;
  readonly mtcnn: MtcnnSettings;
  readonly threshold: number | undefined;
  readonly maxPixels: number;
}

function resolveSettings(options: FaceVerifierOptions): ResolvedSettings {
  const face = options.face ?? 'largest';
  checkSelection(face);
  if (options.threshold !== undefined) checkThreshold(options.threshold, 'threshold');
  const maxPixels = options.maxPixels ?? 50_000_000;
  if (!Number.isSafeInteger(maxPixels) || maxPixels < 1) {
    throw new RangeError(`maxPixels must be a positive integer, got ${String(maxPixels)}`);
  }
  return { face, mtcnn: resolveMtcnnOptions(options.mtcnn), threshold: options.threshold, maxPixels };
}

function checkSelection(selection: FaceSelection): void {
  if (selection === 'largest' || selection === 'center') return;
  if (typeof selection !== 'number' || !Number.isSafeInteger(selection) || selection < 0) {
    throw new RangeError(`face must be 'largest', 'center' or a 0-based face index, got ${String(selection)}`);
  }
}

function checkThreshold(value: number, name: string): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < -1 || value > 1) {
    throw new RangeError(`${name} must be a cosine score from -1 to 1, got ${String(value)}`);
  }
}

interface ResolvedModel extends LoadedFaceModel {
  /** The spec, or the network's name for a model given already loaded. */
  readonly label: string;
  /** Whether the verifier loaded the model and so releases it in `dispose`. */
  readonly ownsModel: boolean;
}

function isEmbeddingModel(value: EmbeddingModel | LoadedFaceModel): value is EmbeddingModel {
  return typeof (value as Partial<EmbeddingModel>).predict === 'function';
}

async function resolveModel(options: FaceVerifierOptions): Promise<ResolvedModel> {
  const requested = options.model ?? defaultModelSpec();
  if (typeof requested === 'string') {
    if (options.engine !== undefined && !(ENGINE_NAMES as readonly string[]).includes(options.engine)) {
      throw new RangeError(`engine '${String(options.engine)}' is unknown; expected one of ${ENGINE_NAMES.join(', ')}`);
    }
    const loaded = await loadModel(requested, options.engine === undefined ? {} : { engine: options.engine });
    return { ...loaded, label: requested, ownsModel: true };
  }
  if (options.engine !== undefined) {
    throw new TypeError(`engine '${options.engine}' applies only to a model given as a spec; load the model on that engine instead`);
  }
  if (isEmbeddingModel(requested)) return { model: requested, label: requested.name, ownsModel: false };
  if (typeof requested !== 'object' || requested === null || !isEmbeddingModel(requested.model)) {
    throw new TypeError('model must be a model spec string, an EmbeddingModel, or { model, manifest } as loadModel returns it');
  }
  return { ...requested, label: requested.model.name, ownsModel: false };
}

// ---------------------------------------------------------------------------------------------
// Faces and features

function describeFace(detection: Detection, image: DecodedImage): DetectedFace {
  const points = detection.landmarks.points;
  return { box: clampBox(detection.box, image.width, image.height), landmarks: points, score: detection.score };
}

/** Returns the index of the face that `selection` picks. */
function selectFace(
  detections: readonly Detection[],
  faces: readonly DetectedFace[],
  selection: FaceSelection,
  image: DecodedImage,
  source: string,
): number {
  if (selection === 'center') return centerFaceIndex(detections, image.width, image.height);
  if (selection === 'largest') {
    let best = 0;
    faces.forEach((face, index) => {
      if (boxArea(face.box) > boxArea((faces[best] as DetectedFace).box)) best = index;
    });
    return best;
  }
  if (selection >= faces.length) {
    throw new RangeError(`face index ${selection} requested, but ${source} has ${faces.length} face(s); expected an index from 0 to ${faces.length - 1}`);
  }
  return selection;
}

/** Area of a 1-based inclusive box in pixels. */
function boxArea([x1, y1, x2, y2]: Box): number {
  return Math.max(0, x2 - x1 + 1) * Math.max(0, y2 - y1 + 1);
}

/** Scales a vector to unit L2 norm, summing in float64. */
function unitLength(vector: Float32Array, origin: string): Float32Array {
  let sum = 0;
  for (const value of vector) sum += value * value;
  const norm = Math.sqrt(sum);
  if (!Number.isFinite(norm) || norm === 0) throw new Error(`${origin} gave a feature of L2 norm ${norm}; expected a finite, non-zero vector`);
  return vector.map((value) => value / norm);
}

/** Cosine of two unit-length vectors of equal length, summed in float64. */
function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  for (let i = 0; i < a.length; i += 1) dot += (a[i] as number) * (b[i] as number);
  return dot;
}
