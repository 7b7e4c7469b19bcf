/**
 * The task of the `detectFacesInWorkers` pool: MTCNN on one decoded image, in a worker thread
 * with its own TensorFlow.js backend and its own copy of the networks. The settings arrive once
 * per worker as `workerData` (see `DetectWorkerData`).
 */
import { workerData } from 'node:worker_threads';

import { initBackend, type BackendName } from '../../model/backend.ts';
import type { EngineName } from '../../model/engine.ts';
import { loadMtcnnEngine } from '../../model/mtcnnEngine.ts';
import { detectFacesIn, type DetectFacesOptions, type FaceImage } from '../detectFaces.ts';
import { isRejected, type DecodedImage, type Rejected } from '../records.ts';

/** The settings every task of one pool shares. */
export interface DetectWorkerData {
  /** Folder with det1–det3.caffemodel (and det4 for L-Net). */
  readonly modelsDir: string;
  readonly options: DetectFacesOptions;
  readonly backend?: BackendName;
  /** Engine of the networks; by default `loadMtcnnEngine`'s. */
  readonly engine?: EngineName;
}

/** A face record without the image pixels, which stay on the calling thread. */
export type FaceFieldsOnly = Omit<FaceImage, 'rgb'>;

const settings = workerData as DetectWorkerData;
const nets = (async () => {
  // One tensor thread and one ONNX Runtime thread per worker: the pool already runs one worker per core.
  await initBackend(settings.backend, { wasmThreads: 1 });
  return loadMtcnnEngine(settings.modelsDir, {
    lnet: settings.options.landmarkRefinement === 'lnet',
    intraOpNumThreads: 1,
    ...(settings.engine === undefined ? {} : { engine: settings.engine }),
  });
})();

/**
 * Detects the faces of one image and returns the records `detectFaces` would emit, without
 * their pixel buffers. The promise rejects only for faults of the whole run (a network that
 * fails), as `detectFaces` errors its stream.
 */
export default async function detectInWorker(image: DecodedImage): Promise<Array<FaceFieldsOnly | Rejected>> {
  const records = await detectFacesIn(await nets, image, settings.options);
  return records.map((record) => {
    if (isRejected(record)) return record;
    const { rgb: _rgb, ...fields } = record;
    return fields;
  });
}
