/**
 * The task of the `decodeAndAlignInWorkers` pool: decode one image and align it, in a worker
 * thread. The options arrive once per worker as `workerData` (see `DecodeAlignWorkerData`).
 */
import { workerData } from 'node:worker_threads';

import { move, transferableSymbol, valueSymbol } from 'piscina';
import { lastValueFrom, of } from 'rxjs';

import { decodeImage } from '../readImages.ts';
import { isRejected, type AlignedFace, type ImageRef, type Landmarks, type Rejected } from '../records.ts';
import { similarityAlign, type SimilarityAlignOptions } from '../similarityAlign.ts';

/** The options every task of one pool shares, passed to the workers as `workerData`. */
export interface DecodeAlignWorkerData {
  readonly align: SimilarityAlignOptions;
  readonly maxPixels?: number;
}

/** One task: the image to read and the landmarks to align it with. */
export interface DecodeAlignTask {
  readonly ref: ImageRef;
  readonly landmarks: Landmarks;
}

const settings = workerData as DecodeAlignWorkerData;
const decodeOptions = settings.maxPixels === undefined ? {} : { maxPixels: settings.maxPixels };
// The operator, not `alignFace`, so that a face that cannot be aligned becomes the same
// `Rejected` record, with the same reason text, as in a single-thread `similarityAlign` stage.
const align = similarityAlign(settings.align);

/**
 * Decodes and aligns one image. An aligned face comes back with its pixel buffer transferred to
 * the calling thread, not copied. The promise rejects only for faults of the whole run, as
 * `decodeImage` and `similarityAlign` do.
 */
export default async function decodeAndAlign(task: DecodeAlignTask): Promise<AlignedFace | Rejected> {
  const decoded = await decodeImage(task.ref, decodeOptions);
  if (isRejected(decoded)) return decoded;

  const aligned = await lastValueFrom(of({ ...decoded, landmarks: task.landmarks }).pipe(align));
  if (isRejected(aligned)) return aligned;
  // `move` hands piscina the value and the buffers to transfer, and the main thread receives the
  // plain value. The buffer holds only this face, because `warpBilinear` allocates it.
  return move({ [transferableSymbol]: [aligned.rgb.buffer], [valueSymbol]: aligned }) as unknown as AlignedFace;
}
