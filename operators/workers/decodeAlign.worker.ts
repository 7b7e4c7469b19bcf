/**
 * The task of the `decodeAndAlignInWorkers` pool: decode and align a few images, in a worker
 * thread. The options arrive once per worker as `workerData` (see `DecodeAlignWorkerData`).
 *
 * This module and its imports leave out rxjs and fast-glob, which the stream operators need but
 * a worker does not. Loading them cost each worker about 0.1 to 0.15 CPU-seconds of its start-up
 * (2-core machine, Node 20).
 */
import { workerData } from 'node:worker_threads';

import { move, transferableSymbol, valueSymbol } from 'piscina';

import { alignOrReject, resolveAlignSettings, type SimilarityAlignOptions } from '../../lib/alignFace.ts';
import { decodeWithSettings, resolveReadSettings } from '../../lib/decodeImage.ts';
import { isRejected, type AlignedFace, type ImageRef, type Landmarks, type Rejected } from '../records.ts';

/** The options every task of one pool shares, passed to the workers as `workerData`. */
export interface DecodeAlignWorkerData {
  readonly align: SimilarityAlignOptions;
  readonly maxPixels?: number;
}

/** One image of a task: the file to read and the landmarks to align it with. */
export interface DecodeAlignImage {
  readonly ref: ImageRef;
  readonly landmarks: Landmarks;
}

/** One task: the images to decode and align, at least one. */
export type DecodeAlignTask = readonly DecodeAlignImage[];

const settings = workerData as DecodeAlignWorkerData;
const readSettings = resolveReadSettings(settings.maxPixels === undefined ? {} : { maxPixels: settings.maxPixels }, 'decodeImage');
const alignSettings = resolveAlignSettings(settings.align);

/**
 * Decodes and aligns the images of one task, all at once, and returns one record per image in
 * task order. The pixel buffers of the aligned faces are transferred to the calling thread, not
 * copied. The promise rejects only for faults of the whole run, as `decodeImage` does.
 */
export default async function decodeAndAlign(task: DecodeAlignTask): Promise<Array<AlignedFace | Rejected>> {
  const results = await Promise.all(task.map(decodeAndAlignOne));
  // `warpBilinear` allocates each face's buffer, so the buffer holds only that face.
  const buffers = results.flatMap((result) => (isRejected(result) ? [] : [result.rgb.buffer]));
  // `move` hands piscina the value and the buffers to transfer, and the main thread receives the
  // plain value.
  return move({ [transferableSymbol]: buffers, [valueSymbol]: results }) as unknown as Array<AlignedFace | Rejected>;
}

async function decodeAndAlignOne(image: DecodeAlignImage): Promise<AlignedFace | Rejected> {
  const decoded = await decodeWithSettings(image.ref, readSettings);
  if (isRejected(decoded)) return decoded;
  // `alignOrReject`, not `alignFace`, so that a face that cannot be aligned becomes the same
  // `Rejected` record, with the same reason text, as in a single-thread `similarityAlign` stage.
  return alignOrReject({ ...decoded, landmarks: image.landmarks }, alignSettings);
}
