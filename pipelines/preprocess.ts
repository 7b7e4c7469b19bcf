/**
 * `sphereface preprocess` turns raw photos into aligned face crops, stored losslessly.
 *
 * readImages → detectFaces (MTCNN) → similarityAlign → PNG files, plus a detections file
 * (JSON Lines, see `lib/detectionsFile.ts`) that later runs reuse instead of detecting again.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import sharp from 'sharp';
import { concatMap, from, lastValueFrom, toArray } from 'rxjs';
import { formatEntry, formatHeader, sha256Hex, type DetectedFace, type DetectionsEntry } from '../lib/detectionsFile.ts';
import { SPHEREFACE_OUTPUT_SIZE, SPHEREFACE_TEMPLATE } from '../lib/cp2tform.ts';
import { log } from '../lib/log.ts';
import { initBackend, type BackendInfo, type BackendName } from '../model/backend.ts';
import { loadMtcnn } from '../model/mtcnn.ts';
import { resolveMtcnnOptions, type MtcnnOptions } from '../model/mtcnnDetect.ts';
import { detectFaces, type FaceImage, type FacePolicy, type NoFacePolicy } from '../operators/detectFaces.ts';
import { flowControl } from '../operators/flowControl.ts';
import { progress } from '../operators/progress.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, type AlignedFace, type ImageRef, type Maybe, type Rejected } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';

export interface PreprocessOptions {
  readonly images: readonly ImageRef[];
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
  return path.join(out, `${base}${match[2] === undefined ? '' : `_${match[2]}`}.png`);
}

/** Strips the face number from a record id (`Name_0001.jpg#2` → `Name_0001.jpg`). */
function imageIdOf(faceId: string): string {
  return faceId.replace(/#\d+$/, '');
}

function toDetectedFace(face: FaceImage): DetectedFace | undefined {
  if (face.substituted) return undefined;
  const { box, score, landmarks } = face.detection;
  return { box: [...box], score, landmarks: landmarks.points.map(([x, y]) => [x, y]) as unknown as DetectedFace['landmarks'] };
}

export async function runPreprocess(options: PreprocessOptions): Promise<PreprocessSummary> {
  const started = performance.now();
  const backend = await initBackend(options.backend);
  log.info({ backend: backend.name, threads: backend.threads }, 'tensor backend selected');

  const mtcnn = resolveMtcnnOptions(options.mtcnn);
  const nets = await loadMtcnn(options.mtcnnDir, { lnet: mtcnn.landmarkRefinement === 'lnet' });
  const detectionsFile = path.resolve(options.detections ?? path.join(options.out, 'detections.jsonl'));
  await mkdir(path.dirname(detectionsFile), { recursive: true });
  const writer = createWriteStream(detectionsFile);
  writer.write(`${formatHeader({ name: 'mtcnn', ...mtcnn, policy: options.policy ?? 'center', onNoFace: options.onNoFace ?? 'reject' })}\n`);

  const byId = new Map(options.images.map((ref) => [ref.id, ref]));
  const hashes = new Map<string, string>();
  const hashOf = async (ref: ImageRef): Promise<string> => {
    const known = hashes.get(ref.id);
    if (known !== undefined) return known;
    const digest = await readFile(ref.path).then(sha256Hex, () => '0'.repeat(64));
    hashes.set(ref.id, digest);
    return digest;
  };

  // Faces of one image arrive one after another; an entry is written when the next image starts.
  let pending: { entry: DetectionsEntry; faces: DetectedFace[] } | undefined;
  const flush = (): void => {
    if (pending === undefined) return;
    writer.write(`${formatEntry({ ...pending.entry, faces: pending.faces })}\n`);
    pending = undefined;
  };

  let withFace = 0;
  let crops = 0;
  let substituted = 0;
  const rejected: Rejected[] = [];
  const flow = flowControl(64);

  const record = async (face: Maybe<FaceImage>): Promise<Maybe<FaceImage>> => {
    const imageId = isRejected(face) ? imageIdOf(face.id) : face.imageId;
    const sha256 = await hashOf(byId.get(imageId) ?? { id: imageId, path: face.path });
    if (pending?.entry.id !== imageId) {
      flush();
      const size = isRejected(face) ? {} : { width: face.width, height: face.height };
      pending = { entry: { id: imageId, sha256, ...size, faces: [] }, faces: [] };
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
    // Logged only now, because log lines written while a progress bar is drawn garble it.
    for (const record of rejected) log.warn({ id: record.id, stage: record.stage, reason: record.reason }, 'image rejected');
  } finally {
    nets.dispose();
    writer.end();
    await finished(writer);
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
