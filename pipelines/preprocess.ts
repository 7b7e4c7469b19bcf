/**
 * `sphereface preprocess` turns raw photos into aligned face crops, stored losslessly.
 *
 * readImages → detectFaces (MTCNN) → similarityAlign → PNG files, plus a detections file
 * (JSON Lines, see `lib/detectionsFile.ts`) that later runs reuse instead of detecting again.
 */
import { createWriteStream } from 'node:fs';
import { constants } from 'node:fs';
import { access, mkdir, rename, stat } from 'node:fs/promises';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import sharp from 'sharp';
import { concatMap, from, lastValueFrom, tap, toArray } from 'rxjs';
import { hashFile } from '../lib/artifactCache.ts';
import { formatEntry, formatHeader, type DetectedFace, type DetectionsEntry } from '../lib/detectionsFile.ts';
import { SPHEREFACE_OUTPUT_SIZE, SPHEREFACE_TEMPLATE } from '../lib/cp2tform.ts';
import { log } from '../lib/log.ts';
import { pathsOverlap } from '../lib/paths.ts';
import { initBackend, type BackendInfo, type BackendName } from '../model/backend.ts';
import type { EngineName } from '../model/engine.ts';
import { loadMtcnnEngine } from '../model/mtcnnEngine.ts';
import { resolveMtcnnOptions, type MtcnnOptions } from '../model/mtcnnDetect.ts';
import { detectFaces, type FaceImage, type FacePolicy, type NoFacePolicy } from '../operators/detectFaces.ts';
import { flowControl } from '../operators/flowControl.ts';
import { progress } from '../operators/progress.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, reject, type AlignedFace, type ImageRef, type Maybe, type Rejected } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';

export interface PreprocessOptions {
  readonly images: readonly ImageRef[];
  /** Folders the images come from; the output folder must lie outside them. */
  readonly imageRoots?: readonly string[];
  /** Folder for the PNG crops; each crop goes to `<out>/<image id without extension>.png`. */
  readonly out: string;
  /** Detections file to write; default `<out>/detections.jsonl`. */
  readonly detections?: string;
  readonly mtcnn?: MtcnnOptions;
  /** Folder with det1–det3.caffemodel; default `<SPHEREFACE_MODELS>/mtcnn`. */
  readonly mtcnnDir?: string;
  readonly policy?: FacePolicy;
  readonly onNoFace?: NoFacePolicy;
  readonly backend?: BackendName;
  /** Inference engine of the MTCNN networks; by default `loadMtcnnEngine`'s. */
  readonly engine?: EngineName;
  readonly progressBar?: boolean;
  /** Reject images with more pixels than this before decoding (default 50,000,000). */
  readonly maxPixels?: number;
}

export interface PreprocessSummary {
  readonly backend: BackendInfo;
  readonly images: number;
  /** Images in which MTCNN found at least one face. */
  readonly withFace: number;
  /** Face crops written. */
  readonly crops: number;
  /** Images without a face that got a centred crop instead (`onNoFace: 'center-crop'`). */
  readonly substituted: number;
  readonly rejected: readonly Rejected[];
  readonly detectionsFile: string;
  readonly seconds: number;
}

/**
 * Returns the crop file of a face: `<out>/<image id without extension>.png`, with `_N`
 * appended for face N under policy `all` (whose record ids end in `#N`).
 */
export function cropPath(out: string, faceId: string): string {
  const match = /^(.*?)(?:#(\d+))?$/.exec(faceId) as RegExpExecArray;
  const base = (match[1] as string).replace(/\.[^./]+$/, '');
  const file = path.resolve(out, `${base}${match[2] === undefined ? '' : `_${match[2]}`}.png`);
  const relative = path.relative(path.resolve(out), file);
  if (relative.startsWith('..') || path.isAbsolute(relative)) {
    throw new Error(`the crop of "${faceId}" would be written to ${file}, outside the output folder ${path.resolve(out)}`);
  }
  return file;
}

/**
 * Throws unless the output folder and the detections file can be written, before any image
 * is processed. The output must not be a file. It must also not be, contain or lie inside an
 * images folder, because crops would then overwrite or mix with the photos.
 */
export async function checkOutputs(out: string, detectionsFile: string, imageRoots: readonly string[]): Promise<void> {
  const absoluteOut = path.resolve(out);
  for (const root of imageRoots.map((r) => path.resolve(r))) {
    if (pathsOverlap(absoluteOut, root)) {
      throw new Error(`output folder ${absoluteOut} overlaps the images folder ${root}; choose an output folder outside it, so that crops cannot overwrite photos`);
    }
  }
  const outStat = await stat(absoluteOut).catch(() => undefined);
  if (outStat !== undefined && !outStat.isDirectory()) throw new Error(`output folder ${absoluteOut} is a file; expected a folder (it is created if missing)`);
  await mkdir(absoluteOut, { recursive: true });

  const detectionsStat = await stat(detectionsFile).catch(() => undefined);
  if (detectionsStat?.isDirectory()) throw new Error(`detections file ${detectionsFile} is a directory; expected a file name such as ${path.join(detectionsFile, 'detections.jsonl')}`);
  await mkdir(path.dirname(detectionsFile), { recursive: true });
  await access(path.dirname(detectionsFile), constants.W_OK);
}

/** Strips the face number from a record id (`Name_0001.jpg#2` → `Name_0001.jpg`). */
function imageIdOf(faceId: string): string {
  return faceId.replace(/#\d+$/, '');
}

function toDetectedFace(face: FaceImage): DetectedFace | undefined {
  if (face.substituted) return undefined;
  const { score, landmarks } = face.detection;
  return { box: [...face.box], score, landmarks: landmarks.points.map(([x, y]) => [x, y]) as unknown as DetectedFace['landmarks'] };
}

export async function runPreprocess(options: PreprocessOptions): Promise<PreprocessSummary> {
  const started = performance.now();
  const backend = await initBackend(options.backend);
  log.info({ backend: backend.name, threads: backend.threads }, 'tensor backend selected');

  const mtcnn = resolveMtcnnOptions(options.mtcnn);
  const detectionsFile = path.resolve(options.detections ?? path.join(options.out, 'detections.jsonl'));
  await checkOutputs(options.out, detectionsFile, options.imageRoots ?? []);
  const nets = await loadMtcnnEngine(options.mtcnnDir, {
    lnet: mtcnn.landmarkRefinement === 'lnet',
    ...(options.engine === undefined ? {} : { engine: options.engine }),
  });

  // The file gets its name only when the run has finished, so an interrupted or failed run
  // never leaves a detections file that looks complete.
  const partialFile = `${detectionsFile}.partial`;
  const writer = createWriteStream(partialFile);
  let writeError: Error | undefined;
  writer.on('error', (error) => {
    writeError ??= error;
  });
  writer.write(`${formatHeader({ name: 'mtcnn', ...mtcnn, policy: options.policy ?? 'center', onNoFace: options.onNoFace ?? 'reject' })}\n`);

  const byId = new Map(options.images.map((ref) => [ref.id, ref]));
  // Digest of each image file; undefined when the file cannot be read.
  const hashOf = (ref: ImageRef): Promise<string | undefined> => hashFile(ref.path).catch(() => undefined);
  // Sizes of decoded images, for the entries of images without a face.
  const sizes = new Map<string, { width: number; height: number }>();

  // Faces of one image arrive one after another; an entry is written when the next image starts.
  let pending: { entry: DetectionsEntry; faces: DetectedFace[] } | undefined;
  const flush = (): void => {
    if (pending === undefined) return;
    if (writeError !== undefined) throw new Error(`cannot write ${partialFile}: ${writeError.message}`);
    writer.write(`${formatEntry({ ...pending.entry, faces: pending.faces })}\n`);
    pending = undefined;
  };

  let withFace = 0;
  let crops = 0;
  let substituted = 0;
  const rejected: Rejected[] = [];
  // Decoded images wait here for the detector, which is far slower than decoding. A small
  // window keeps few of them in memory, because a 12-megapixel photo is 36 MB of RGB.
  const flow = flowControl(4);
  const cropOwners = new Map<string, string>();

  const record = async (face: Maybe<FaceImage>): Promise<Maybe<FaceImage>> => {
    const imageId = isRejected(face) ? imageIdOf(face.id) : face.imageId;
    if (pending?.entry.id !== imageId) {
      flush();
      const ref = byId.get(imageId) ?? { id: imageId, path: face.path };
      const sha256 = await hashOf(ref);
      const size = sizes.get(imageId) ?? {};
      sizes.delete(imageId);
      pending = { entry: { id: imageId, path: ref.path, ...(sha256 === undefined ? {} : { sha256 }), ...size, faces: [] }, faces: [] };
      if (!isRejected(face) && face.substituted) substituted++;
      if (!isRejected(face) && !face.substituted) withFace++;
    }
    if (isRejected(face)) {
      pending.entry = { ...pending.entry, rejected: face.reason };
    } else if (face.substituted) {
      pending.entry = { ...pending.entry, substituted: true };
    } else {
      const detected = toDetectedFace(face);
      if (detected) pending.faces.push(detected);
    }
    return face;
  };

  const save = async (face: Maybe<AlignedFace>): Promise<Maybe<AlignedFace>> => {
    if (isRejected(face)) {
      rejected.push(face);
      return face;
    }
    const file = cropPath(options.out, face.id);
    // Names differing only in extension or case (a.jpg, a.png, A.JPG) map to one crop file.
    const key = file.toLowerCase();
    const owner = cropOwners.get(key);
    if (owner !== undefined) {
      const clash = reject(face, 'preprocess', `its crop ${file} would overwrite the crop of ${owner}; rename one of the two images`);
      rejected.push(clash);
      return clash;
    }
    cropOwners.set(key, face.id);
    await mkdir(path.dirname(file), { recursive: true });
    await sharp(face.rgb, { raw: { width: face.width, height: face.height, channels: 3 } }).png().toFile(file);
    crops++;
    return face;
  };

  // Under policy `all` one image gives several records; only its first releases its credit.
  const firstOfImage = (face: Maybe<AlignedFace>): number => (/#(?!1$)\d+$/.test(face.id) ? 0 : 1);

  try {
    const decoded = from(options.images).pipe(
      flow.admit(),
      readImages(options.maxPixels === undefined ? {} : { maxPixels: options.maxPixels }),
      tap((image) => {
        if (!isRejected(image)) sizes.set(image.id, { width: image.width, height: image.height });
      }),
      progress({ total: options.images.length, unit: 'images', ...(options.progressBar === undefined ? {} : { bar: options.progressBar }) }),
    );
    await lastValueFrom(
      decoded.pipe(
        detectFaces(nets, { ...mtcnn, policy: options.policy ?? 'center', onNoFace: options.onNoFace ?? 'reject' }),
        concatMap(record),
        similarityAlign({ template: SPHEREFACE_TEMPLATE, outputSize: SPHEREFACE_OUTPUT_SIZE }),
        concatMap(save),
        flow.release(firstOfImage),
        toArray(),
      ),
    );
    flush();
    writer.end();
    await finished(writer);
    if (writeError !== undefined) throw new Error(`cannot write ${partialFile}: ${(writeError as Error).message}`);
    await rename(partialFile, detectionsFile);
    // Logged only now, because log lines written while a progress bar is drawn garble it.
    for (const record of rejected) log.warn({ id: record.id, stage: record.stage, reason: record.reason }, 'image rejected');
  } finally {
    nets.dispose();
    if (!writer.writableFinished) {
      writer.end();
      await finished(writer).catch(() => undefined);
    }
  }

  return {
    backend,
    images: options.images.length,
    withFace,
    crops,
    substituted,
    rejected,
    detectionsFile,
    seconds: (performance.now() - started) / 1000,
  };
}
