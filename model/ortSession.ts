/**
 * Creates every ONNX Runtime session of the toolkit, so that all of them use the same thread
 * settings and the same choice of execution provider.
 *
 * The CUDA provider is tried first where onnxruntime-node lists it and its provider library is
 * installed. Its libraries do not ship in the npm package: the package's install script
 * downloads them, and the project's `.npmrc` skips that download where there is no internet.
 * When CUDA cannot start, the session runs on the CPU provider. The first such fallback is
 * logged with its reason, and later sessions of the process go straight to the CPU.
 * `SPHEREFACE_ORT_CUDA=0` skips CUDA.
 */
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

import * as ort from 'onnxruntime-node';

import { log } from '../lib/log.ts';

export type OrtProvider = 'cuda' | 'cpu';

export interface OrtSessionOptions {
  /** Threads for one operator. Default: `os.availableParallelism()`. */
  readonly intraOpNumThreads?: number;
}

const require = createRequire(import.meta.url);

let cudaUnavailable: string | undefined;

/**
 * Returns whether to try CUDA: onnxruntime-node lists it, and its provider library is installed
 * beside the binding. Without the library ONNX Runtime prints an error of its own for every attempt.
 */
function cudaListed(): boolean {
  if (process.env['SPHEREFACE_ORT_CUDA'] === '0') return false;
  const list = (ort as unknown as { listSupportedBackends?: () => ReadonlyArray<{ name: string }> }).listSupportedBackends;
  if (typeof list !== 'function' || !list().some((backend) => backend.name === 'cuda')) return false;
  try {
    const binaries = path.join(path.dirname(require.resolve('onnxruntime-node')), '..', 'bin');
    return readdirSync(binaries, { recursive: true }).some((name) => String(name).includes('libonnxruntime_providers_cuda'));
  } catch {
    return false;
  }
}

/**
 * Creates a session for the model `bytes` with every graph optimisation, one operator at a time,
 * on CUDA where it starts and on the CPU otherwise. Returns the session and the provider it
 * runs on. Errors of the CPU attempt (an invalid model, say) propagate unchanged.
 */
export async function createOrtSession(bytes: Uint8Array, options: OrtSessionOptions = {}): Promise<{ session: ort.InferenceSession; provider: OrtProvider }> {
  const threads = options.intraOpNumThreads ?? os.availableParallelism();
  const base: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  };
  if (cudaUnavailable === undefined && cudaListed()) {
    try {
      return { session: await ort.InferenceSession.create(bytes, { ...base, executionProviders: ['cuda', 'cpu'] }), provider: 'cuda' };
    } catch (error) {
      cudaUnavailable = (error as Error).message.split('\n')[0] ?? String(error);
      log.info({ reason: cudaUnavailable }, 'ONNX Runtime: the CUDA provider did not start; using the CPU provider');
    }
  }
  return { session: await ort.InferenceSession.create(bytes, { ...base, executionProviders: ['cpu'] }), provider: 'cpu' };
}
