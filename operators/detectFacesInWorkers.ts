/**
 * MTCNN detection in a pool of worker threads, one TensorFlow.js backend and one copy of the
 * networks per thread, so that detection, the slowest image stage, uses every core.
 */
import os from 'node:os';

import { Piscina } from 'piscina';
import { Observable, type OperatorFunction } from 'rxjs';

import type { BackendName } from '../model/backend.ts';
import type { EngineName } from '../model/engine.ts';
import { parseEngineName } from '../model/mtcnnEngine.ts';
import { resolveMtcnnOptions } from '../model/mtcnnDetect.ts';
import { orderedMergeMap } from '../lib/orderedMergeMap.ts';
import type { DetectFacesOptions, FaceImage } from './detectFaces.ts';
import { isRejected, type DecodedImage, type Maybe, type Rejected } from './records.ts';
import type { DetectWorkerData, FaceFieldsOnly } from './workers/detect.worker.ts';

const WORKER_FILE = new URL('./workers/detect.worker.mjs', import.meta.url);

export interface DetectInWorkersOptions extends DetectFacesOptions {
  /** Folder with det1–det3.caffemodel (and det4 for L-Net). */
  readonly modelsDir: string;
  /** Worker threads, default `os.availableParallelism()`. */
  readonly threads?: number;
  /** Backend each worker selects; by default the fastest that loads. */
  readonly backend?: BackendName;
  /** Engine of the networks in each worker; by default `loadMtcnnEngine`'s. */
  readonly engine?: EngineName;
}

/**
 * Emits the same records as `detectFaces(await loadMtcnnEngine(modelsDir, { engine }), options)`,
 * in input order, with each image's detection run in a worker thread. The pixels are copied to
 * the worker and the records come back without them, so each image crosses threads once.
 *
 * At most twice `threads` images are in the pool or waiting to be emitted. The pool starts on
 * subscription and is destroyed on completion, error or unsubscription. A worker that fails to
 * load the networks, or a network failure, errors the output.
 *
 * @throws RangeError at call time when an option is invalid, and Error naming the value when
 *   `engine` is not an engine name.
 */
export function detectFacesInWorkers(options: DetectInWorkersOptions): OperatorFunction<Maybe<DecodedImage>, Maybe<FaceImage>> {
  const threads = options.threads ?? os.availableParallelism();
  if (!Number.isSafeInteger(threads) || threads < 1) {
    throw new RangeError(`detectFacesInWorkers: threads must be a positive integer, got ${String(threads)}`);
  }
  if (options.policy === 'all') {
    // NOTE: the records of one image would need their own ordering; no caller needs it yet.
    throw new RangeError('detectFacesInWorkers: policy "all" is not supported; use detectFaces');
  }
  const { modelsDir, threads: _threads, backend, engine, ...detectOptions } = options;
  resolveMtcnnOptions(detectOptions);
  const workerData: DetectWorkerData = {
    modelsDir,
    options: detectOptions,
    ...(backend === undefined ? {} : { backend }),
    ...(engine === undefined ? {} : { engine: parseEngineName(engine) }),
  };

  return (source) =>
    new Observable<Maybe<FaceImage>>((subscriber) => {
      const pool = new Piscina<DecodedImage, Array<FaceFieldsOnly | Rejected>>({
        filename: WORKER_FILE.href,
        minThreads: threads,
        maxThreads: threads,
        workerData,
      });
      const dispatch = async (record: Maybe<DecodedImage>): Promise<Maybe<FaceImage>> => {
        if (isRejected(record)) return record;
        const [face] = await pool.run({ id: record.id, path: record.path, width: record.width, height: record.height, rgb: record.rgb });
        if (face === undefined) throw new Error(`detection worker returned no record for ${record.id}`);
        return isRejected(face) ? face : ({ ...face, rgb: record.rgb } as FaceImage);
      };
      const subscription = source.pipe(orderedMergeMap(dispatch, 2 * threads)).subscribe(subscriber);
      return () => {
        subscription.unsubscribe();
        pool.destroy().catch(() => undefined);
      };
    });
}
