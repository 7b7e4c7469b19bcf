/**
 * The one place that chooses the TensorFlow.js backend.
 *
 * The order of preference is `tensorflow` from `@tensorflow/tfjs-node-gpu`, then `tensorflow`
 * from `@tensorflow/tfjs-node`, then `wasm`, then the pure-JavaScript `cpu`. The two native
 * packages are optional dependencies because their install step downloads libtensorflow, which
 * fails on machines without internet access.
 */
import os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';

import { log } from '../lib/log.ts';
import { registerThreadedWasm, threadedStartError, wasmThreadsInUse, wasmThreadsSetting } from './wasmThreads.ts';

export const BACKEND_NAMES = ['tfjs-node-gpu', 'tfjs-node', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

export interface BackendInfo {
  /** Our name for the backend, one of `BACKEND_NAMES`. */
  readonly name: BackendName;
  /** The name TensorFlow.js registered it under (`tensorflow`, `wasm` or `cpu`). */
  readonly tfBackend: string;
  /** Threads the backend computes on. */
  readonly threads: number;
  /** Reasons the backends preferred over the chosen one did not load. */
  readonly skipped: ReadonlyArray<{ readonly name: BackendName; readonly reason: string }>;
  /** Reason the wasm backend runs on fewer threads than requested, when it does. */
  readonly threadsNote?: string;
}

/** Options of `initBackend`. */
export interface BackendOptions {
  /**
   * Threads for the wasm backend, 1 to 4. Default: the `SPHEREFACE_WASM_THREADS` environment
   * variable, else one per core up to 4. Worker threads that each run their own backend should
   * ask for 1. Only the first start of the wasm backend in a process can choose it.
   */
  readonly wasmThreads?: number;
}

export class BackendError extends Error {
  override readonly name = 'BackendError';
}

let active: BackendInfo | undefined;

async function loadNative(packageName: '@tensorflow/tfjs-node-gpu' | '@tensorflow/tfjs-node'): Promise<void> {
  // The native package registers the `tensorflow` backend on import. It must share our
  // tfjs-core instance, which is true as long as both resolve the same tfjs-core version.
  await import(packageName);
  if (tf.findBackendFactory('tensorflow') === null) {
    throw new Error(`${packageName} loaded but registered no "tensorflow" backend`);
  }
}

/** Result of starting the wasm backend: its thread count and, if fewer than requested, the reason. */
let wasmStart: { threads: number; note?: string } | undefined;

async function activate(name: BackendName, wasmThreads: number): Promise<BackendInfo['tfBackend']> {
  if (name === 'wasm') return activateWasm(wasmThreads);
  switch (name) {
    case 'tfjs-node-gpu':
      await loadNative('@tensorflow/tfjs-node-gpu');
      break;
    case 'tfjs-node':
      await loadNative('@tensorflow/tfjs-node');
      break;
    case 'cpu':
      break;
  }
  const tfName = name === 'tfjs-node-gpu' || name === 'tfjs-node' ? 'tensorflow' : name;
  await setBackendQuietly(tfName);
  return tfName;
}

/**
 * Starts the wasm backend, on several threads when asked (see `model/wasmThreads.ts`). If the
 * threaded build fails to start, the package's single-thread build starts instead and
 * `wasmStart.note` gives the reason.
 */
async function activateWasm(threads: number): Promise<'wasm'> {
  if (wasmStart !== undefined || tf.findBackend('wasm') !== null) {
    await setBackendQuietly('wasm');
    wasmStart ??= { threads: 1 };
    return 'wasm';
  }
  if (threads > 1) {
    let restore: (() => void) | undefined;
    try {
      restore = registerThreadedWasm(threads);
      await withoutConsoleWarnings(() => setBackendQuietly('wasm'));
      wasmStart = { threads: wasmThreadsInUse() };
      return 'wasm';
    } catch (error) {
      restore?.();
      const reason = threadedStartError() ?? describe(error);
      wasmStart = { threads: 1, note: `the threaded wasm build did not start (${reason}); running on 1 thread` };
      log.warn({ threads, reason }, 'wasm backend: the threaded build did not start; running on 1 thread');
    }
  }
  await setBackendQuietly('wasm');
  wasmStart ??= { threads: 1 };
  return 'wasm';
}

/**
 * Runs `body` with `console.warn` silenced. tfjs prints a failed backend's whole stack there;
 * `activateWasm` logs the reason itself, once.
 */
async function withoutConsoleWarnings<T>(body: () => Promise<T>): Promise<T> {
  const warn = console.warn;
  console.warn = () => undefined;
  try {
    return await body();
  } finally {
    console.warn = warn;
  }
}

async function setBackendQuietly(tfName: string): Promise<void> {
  const before = {
    uncaughtException: process.listeners('uncaughtException'),
    unhandledRejection: process.listeners('unhandledRejection'),
  };
  try {
    const ok = await tf.setBackend(tfName);
    if (!ok) throw new Error(`tf.setBackend('${tfName}') returned false`);
    await tf.ready();
  } finally {
    removeListenersAddedSince(before);
  }
}

/**
 * Removes the process-wide error handlers that a backend installed while it started. The
 * Emscripten runtime of the wasm backend (tfjs 4.22) adds `uncaughtException` and
 * `unhandledRejection` handlers that rethrow, and Node then prints the whole minified line of
 * the wasm glue code above every unrelated error. Without them Node reports errors itself.
 */
function removeListenersAddedSince(before: {
  uncaughtException: Function[];
  unhandledRejection: Function[];
}): void {
  for (const listener of process.listeners('uncaughtException')) {
    if (!before.uncaughtException.includes(listener)) process.removeListener('uncaughtException', listener);
  }
  for (const listener of process.listeners('unhandledRejection')) {
    if (!before.unhandledRejection.includes(listener)) process.removeListener('unhandledRejection', listener);
  }
}

function infoOf(name: BackendName, tfBackend: string, skipped: BackendInfo['skipped']): BackendInfo {
  // NOTE: the native backends use TensorFlow's default intra-op pool, one thread per core. The
  // wasm backend runs on the threads `activateWasm` started it with.
  if (name === 'wasm') {
    const start = wasmStart ?? { threads: 1 };
    return { name, tfBackend, threads: start.threads, skipped, ...(start.note === undefined ? {} : { threadsNote: start.note }) };
  }
  return { name, tfBackend, threads: name === 'cpu' ? 1 : os.availableParallelism(), skipped };
}

function describe(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0] ?? message;
}

/**
 * Chooses and activates a backend. With `forced`, only that backend is tried and a failure
 * throws a `BackendError` with the reason it did not load. Calling it again with the same
 * request returns the active backend.
 */
export async function initBackend(forced?: BackendName, options: BackendOptions = {}): Promise<BackendInfo> {
  if (active !== undefined && (forced === undefined || forced === active.name)) return active;
  let wasmThreads: number;
  try {
    wasmThreads = wasmThreadsSetting(options.wasmThreads);
  } catch (error) {
    throw new BackendError(describe(error));
  }

  if (forced !== undefined) {
    if (!BACKEND_NAMES.includes(forced)) {
      throw new BackendError(`unknown backend "${String(forced)}"; expected one of ${BACKEND_NAMES.join(', ')}`);
    }
    try {
      const tfBackend = await activate(forced, wasmThreads);
      active = infoOf(forced, tfBackend, []);
      return active;
    } catch (error) {
      throw new BackendError(
        `backend "${forced}" could not be loaded: ${describe(error)}. ` +
          `Run without --backend to fall back automatically, or install the package it needs.`,
      );
    }
  }

  const skipped: Array<{ name: BackendName; reason: string }> = [];
  for (const name of BACKEND_NAMES) {
    try {
      const tfBackend = await activate(name, wasmThreads);
      active = infoOf(name, tfBackend, skipped);
      return active;
    } catch (error) {
      skipped.push({ name, reason: describe(error) });
    }
  }
  throw new BackendError(
    `no TensorFlow.js backend could be loaded: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`,
  );
}

/**
 * Readies the active backend for gradients: registers the gradient functions of tfjs and, on
 * wasm, the training kernels that backend lacks (`registerWasmTrainingKernels`), on cpu the fast
 * filter gradient (`registerCpuTrainingKernels`). The native backends have every kernel. Loaded
 * on demand, because inference needs none of it. Returns the kernel names it registered.
 */
export async function prepareTraining(info: BackendInfo): Promise<string[]> {
  const kernels = await import('./wasmKernels.ts');
  if (info.name === 'wasm') return kernels.registerWasmTrainingKernels();
  if (info.name === 'cpu') return kernels.registerCpuTrainingKernels();
  return [];
}

/** Returns the active backend, or undefined before `initBackend` has run. */
export function activeBackend(): BackendInfo | undefined {
  return active;
}

export function parseBackendName(value: string): BackendName {
  if ((BACKEND_NAMES as readonly string[]).includes(value)) return value as BackendName;
  throw new BackendError(`unknown backend "${value}"; expected one of ${BACKEND_NAMES.join(', ')}`);
}
