/**
 * The wasm backend on several threads under Node.
 *
 * TensorFlow.js 4.22 ships a threaded SIMD build of its wasm backend but never uses it in Node,
 * where its `WASM_HAS_MULTITHREAD_SUPPORT` flag is false. Forced, the threaded build would start
 * its Emscripten workers from `blob:` URLs, which Node's `Worker` cannot load. Its
 * C++ side also sizes XNNPACK's thread pool once, as it starts, from half the logical core
 * count (it assumes two hyper-threads per core) and at most 4, so a 2-core machine gets one
 * thread.
 *
 * `registerThreadedWasm` replaces the `wasm` backend's factory with one that starts the
 * threaded build itself:
 *
 * - the Emscripten worker script, which the package ships only as a string, is written to a
 *   real file, and the main script is passed as a file path, so that Node can start both;
 * - while the module starts, `os.cpus()` reports twice the requested thread count, so that the
 *   C++ side sizes its pool to that count.
 *
 * Kernels stay registered under the name `wasm`, so every kernel of the package and our own
 * training kernels (`registerWasmTrainingKernels`) work unchanged.
 *
 * NOTE: this reaches into the package's internals: the layout of `wasm-out/`, the shape of the
 * `module.tfjs` bridge that `BackendWasm` expects, and the core count read at start. It is
 * written for @tensorflow/tfjs-backend-wasm 4.22.0, which package.json pins exactly, and it
 * checks the version before it replaces anything.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import { BackendWasm, version_wasm as wasmVersion } from '@tensorflow/tfjs-backend-wasm';

/** The package version this code was written and tested against. */
export const THREADED_WASM_VERSION = '4.22.0';
/** Largest thread count of XNNPACK's thread pool in this build. */
export const MAX_WASM_THREADS = 4;

const require = createRequire(import.meta.url);

/** The bridge object that `BackendWasm` reads from the Emscripten module as `module.tfjs`. */
interface EmscriptenModule {
  cwrap(name: string, returnType: string | null, argTypes: string[]): (...args: number[]) => unknown;
  tfjs?: Record<string, (...args: number[]) => unknown>;
}
type ModuleFactory = (config: Record<string, unknown>) => Promise<EmscriptenModule>;

/**
 * Checks a wasm thread count: an integer from 1 to `MAX_WASM_THREADS`. `source` names where the
 * value came from, for the error message.
 */
export function checkWasmThreads(value: number, source: string): number {
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_WASM_THREADS) {
    throw new RangeError(`${source}: wasm threads must be an integer from 1 to ${MAX_WASM_THREADS}, got ${String(value)}`);
  }
  return value;
}

/**
 * Returns the wasm thread count to use: `requested` when given, else the `SPHEREFACE_WASM_THREADS`
 * environment variable, else one per core up to `MAX_WASM_THREADS`.
 */
export function wasmThreadsSetting(requested?: number, env: NodeJS.ProcessEnv = process.env): number {
  if (requested !== undefined) return checkWasmThreads(requested, 'wasmThreads option');
  const fromEnv = env.SPHEREFACE_WASM_THREADS;
  if (fromEnv !== undefined && fromEnv.trim() !== '') {
    return checkWasmThreads(Number(fromEnv), `SPHEREFACE_WASM_THREADS='${fromEnv}'`);
  }
  return Math.min(MAX_WASM_THREADS, Math.max(1, os.availableParallelism()));
}

/** Returns the paths of the threaded build's files inside the installed package. */
function packageFiles(): { dir: string; mainScript: string; workerModule: string } {
  const entry = require.resolve('@tensorflow/tfjs-backend-wasm');
  const dir = path.join(path.dirname(entry), '..', 'wasm-out');
  return {
    dir,
    mainScript: path.join(dir, 'tfjs-backend-wasm-threaded-simd.js'),
    workerModule: path.join(dir, 'tfjs-backend-wasm-threaded-simd.worker.js'),
  };
}

/**
 * Writes the Emscripten worker script to a file named by its hash, once per machine, and
 * returns the path. The write goes to a temporary name first and is renamed into place, so two
 * processes that start at once never see half a file.
 */
function writeWorkerScript(workerModule: string): string {
  const exported = (require(workerModule) as { wasmWorkerContents?: unknown }).wasmWorkerContents;
  if (typeof exported !== 'string') {
    throw new Error(`${workerModule} exports no wasmWorkerContents string; the threaded wasm backend needs @tensorflow/tfjs-backend-wasm ${THREADED_WASM_VERSION}`);
  }
  // The package's own loader escapes the newlines before it turns the string into a script:
  // the string contains `"\n"` escapes that became real line breaks inside a string literal.
  const script = exported.replace(/\n/g, '\\n');
  const hash = createHash('sha256').update(script).digest('hex').slice(0, 16);
  // One folder per user, readable only by that user: the script runs inside our process, so no
  // one else may be able to replace it.
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
  const dir = path.join(os.tmpdir(), uid === undefined ? 'sphereface-ts' : `sphereface-ts-${uid}`);
  // `.cjs`, because the script uses `require` and a `type: module` package.json above the
  // temporary folder would otherwise make Node load it as ESM.
  const file = path.join(dir, `tfjs-wasm-${wasmVersion}-${hash}.worker.cjs`);
  try {
    if (readFileSync(file, 'utf8') === script) return file;
  } catch {
    // Missing or unreadable: write it below.
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const owner = statSync(dir);
  if (uid !== undefined && (owner.uid !== uid || (owner.mode & 0o022) !== 0)) {
    throw new Error(`${dir} belongs to another user or others can write to it; remove it or set TMPDIR to a private folder`);
  }
  const temporary = `${file}.${process.pid}.${Date.now()}.tmp`;
  try {
    writeFileSync(temporary, script, { mode: 0o600 });
    renameSync(temporary, file);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
  return file;
}

/**
 * Runs `start` while `os.cpus()` reports `2 × threads` entries, the count from which the C++
 * side of the backend sizes its thread pool, then restores it.
 */
async function withReportedCores<T>(threads: number, start: () => Promise<T>): Promise<T> {
  const original = os.cpus;
  os.cpus = () => {
    const cpus = original();
    const reported = threads * 2;
    return Array.from({ length: reported }, (_, i) => cpus[i % cpus.length]!);
  };
  try {
    return await start();
  } finally {
    os.cpus = original;
  }
}

/** The part of Emscripten's pthread runtime that `keepWorkersFromHoldingProcess` touches. */
interface PThreadRuntime {
  unusedWorkers: Worker[];
  runningWorkers: Worker[];
  allocateUnusedWorker: () => void;
}
interface Worker {
  ref: () => unknown;
  unref: () => unknown;
}

/**
 * Stops the backend's Emscripten workers from keeping the process alive. Emscripten `ref`s a
 * worker while it runs a thread, and XNNPACK's pool threads run until the process ends, so a
 * finished command would otherwise never exit. Every call into the backend is synchronous on
 * the main thread, which waits for the pool threads itself, so no pending work depends on them
 * when the event loop runs dry.
 */
function keepWorkersFromHoldingProcess(module: EmscriptenModule): void {
  const runtime = (module as unknown as { PThread?: PThreadRuntime }).PThread;
  if (runtime === undefined) throw new Error('the threaded wasm module has no PThread runtime');
  const release = (worker: Worker): void => {
    worker.unref();
    worker.ref = () => worker;
  };
  for (const worker of [...runtime.unusedWorkers, ...runtime.runningWorkers]) release(worker);
  const allocate = runtime.allocateUnusedWorker.bind(runtime);
  runtime.allocateUnusedWorker = () => {
    allocate();
    const added = runtime.unusedWorkers.at(-1);
    if (added !== undefined) release(added);
  };
}

/**
 * Replaces the `wasm` backend's factory with one that starts the threaded SIMD build on
 * `threads` threads. Call it before the backend is first used; `tf.setBackend('wasm')` then
 * starts the threaded build. Returns a function that puts the package's own factory back, for
 * a caller whose start failed.
 *
 * @throws Error when the installed package is not version `THREADED_WASM_VERSION`, or when the
 *   wasm backend has already started.
 */
export function registerThreadedWasm(threads: number): () => void {
  checkWasmThreads(threads, 'registerThreadedWasm');
  if (wasmVersion !== THREADED_WASM_VERSION) {
    throw new Error(
      `the threaded wasm backend is written for @tensorflow/tfjs-backend-wasm ${THREADED_WASM_VERSION}, found ${wasmVersion}`,
    );
  }
  const original = tf.findBackendFactory('wasm');
  if (original === null) throw new Error('no wasm backend is registered; import @tensorflow/tfjs-backend-wasm first');
  if (tf.findBackend('wasm') !== null) throw new Error('the wasm backend has already started; wasm threads must be chosen before its first use');

  const files = packageFiles();
  lastStartError = undefined;
  const factory = async (): Promise<BackendWasm> => {
    try {
      return await startThreaded();
    } catch (error) {
      // tf.setBackend only returns false for a failed factory, so keep the reason here.
      lastStartError = error instanceof Error ? error.message : String(error);
      throw error;
    }
  };
  const startThreaded = async (): Promise<BackendWasm> => {
    const workerScript = writeWorkerScript(files.workerModule);
    const createModule = require(files.mainScript) as ModuleFactory;
    const module = await withReportedCores(threads, () =>
      createModule({
        locateFile: (file: string) => (file.endsWith('.worker.js') ? workerScript : path.join(files.dir, file)),
        mainScriptUrlOrBlob: files.mainScript,
      }),
    );
    keepWorkersFromHoldingProcess(module);
    module.tfjs = {
      init: module.cwrap('init', null, []),
      initWithThreadsCount: module.cwrap('init_with_threads_count', null, ['number']),
      getThreadsCount: module.cwrap('get_threads_count', 'number', []),
      registerTensor: module.cwrap('register_tensor', null, ['number', 'number', 'number']),
      disposeData: module.cwrap('dispose_data', null, ['number']),
      dispose: module.cwrap('dispose', null, []),
    };
    // BackendWasm's constructor calls `init_with_threads_count` with the package's own setting,
    // which is -1 (no choice) unless `setThreadsCount` was called. The pool size is fixed at
    // start, so report the cores once more while the constructor runs.
    return withReportedCores(threads, async () => new BackendWasm(module as never));
  };

  tf.removeBackend('wasm');
  tf.registerBackend('wasm', factory, 2);
  return () => {
    tf.removeBackend('wasm');
    tf.registerBackend('wasm', original, 2);
  };
}

let lastStartError: string | undefined;

/** Returns why the last threaded start failed, or undefined when it did not fail. */
export function threadedStartError(): string | undefined {
  return lastStartError;
}

/** Returns the thread count of the started wasm backend, as its C++ side reports it. */
export function wasmThreadsInUse(): number {
  const backend = tf.findBackend('wasm') as unknown as { wasm?: EmscriptenModule } | null;
  const getThreadsCount = backend?.wasm?.tfjs?.getThreadsCount;
  if (getThreadsCount === undefined) throw new Error('the wasm backend has not started');
  return Number(getThreadsCount());
}
