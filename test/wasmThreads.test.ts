import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import t from 'tap';

import { BackendError, initBackend } from '../model/backend.ts';
import { MAX_WASM_THREADS, wasmThreadsSetting } from '../model/wasmThreads.ts';

const CHILD = fileURLToPath(new URL('./helpers/wasmThreadsChild.ts', import.meta.url));

t.test('wasmThreadsSetting: option, then environment, then one per core', async (t) => {
  t.equal(wasmThreadsSetting(3, { SPHEREFACE_WASM_THREADS: '1' }), 3, 'the option wins over the environment');
  t.equal(wasmThreadsSetting(undefined, { SPHEREFACE_WASM_THREADS: '2' }), 2, 'the environment is read');
  t.equal(wasmThreadsSetting(undefined, { SPHEREFACE_WASM_THREADS: ' ' }), Math.min(MAX_WASM_THREADS, os.availableParallelism()), 'a blank value means the default');
  t.equal(wasmThreadsSetting(undefined, {}), Math.min(MAX_WASM_THREADS, os.availableParallelism()), 'default: one per core, at most 4');
});

t.test('wasmThreadsSetting rejects impossible counts and names the value', async (t) => {
  for (const bad of [0, 5, 1.5, Number.NaN, -1]) {
    t.throws(() => wasmThreadsSetting(bad, {}), { name: 'RangeError', message: new RegExp(`wasmThreads option: .*from 1 to 4, got ${String(bad)}`) }, `option ${bad}`);
  }
  t.throws(
    () => wasmThreadsSetting(undefined, { SPHEREFACE_WASM_THREADS: 'two' }),
    { message: /SPHEREFACE_WASM_THREADS='two': wasm threads must be an integer from 1 to 4, got NaN/ },
    'a word in the environment',
  );
});

t.test('initBackend turns a bad thread count into a BackendError before starting anything', async (t) => {
  await t.rejects(initBackend('wasm', { wasmThreads: 9 }), BackendError);
  await t.rejects(initBackend(undefined, { wasmThreads: 0 }), { message: /got 0/ });
});

function runChild(threads: string, extraEnv: NodeJS.ProcessEnv = {}): { status: number | null; signal: NodeJS.Signals | null; line: Record<string, unknown>; stderr: string } {
  const result = spawnSync(process.execPath, ['--import=tsx', CHILD], {
    env: { ...process.env, SPHEREFACE_WASM_THREADS: threads, ...extraEnv },
    encoding: 'utf8',
    // A process held open by the backend's workers would never end; the timeout turns that into
    // a failure with a signal instead of a hung test.
    timeout: 90_000,
  });
  const last = result.stdout.trim().split('\n').at(-1) ?? '';
  let line: Record<string, unknown> = {};
  try {
    line = JSON.parse(last) as Record<string, unknown>;
  } catch {
    // Left empty; the assertions below report it.
  }
  return { status: result.status, signal: result.signal, line, stderr: result.stderr };
}

t.test('a process on the threaded backend computes what one thread does and exits by itself', async (t) => {
  const two = runChild('2');
  t.equal(two.signal, null, 'two threads: the process ended without being killed');
  t.equal(two.status, 0, `two threads: exit code 0 ${two.stderr.slice(-400)}`);
  t.equal(two.line['threads'], 2, 'two threads: initBackend reports 2');
  t.equal(two.line['inUse'], 2, 'two threads: the backend reports 2');
  t.equal(two.line['note'], null, 'two threads: no fallback note');

  const one = runChild('1');
  t.equal(one.status, 0, `one thread: exit code 0 ${one.stderr.slice(-400)}`);
  t.equal(one.line['threads'], 1, 'one thread: initBackend reports 1');
  const a = Number(two.line['sumOfSquares']);
  const b = Number(one.line['sumOfSquares']);
  t.ok(Number.isFinite(a) && a > 0, `sum of squares is a positive number: ${a}`);
  t.ok(Math.abs(a - b) <= 1e-5 * b, `same convolution on 1 and 2 threads: ${a} vs ${b}`);
});

t.test('when the threaded build cannot start, one thread runs and the log says why', async (t) => {
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'wasm-threads-'));
  t.teardown(() => rm(tmp, { recursive: true, force: true }));
  // A file where the worker script's folder should go.
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
  await writeFile(path.join(tmp, uid === undefined ? 'sphereface-ts' : `sphereface-ts-${uid}`), 'not a folder');
  const run = runChild('2', { TMPDIR: tmp });
  t.equal(run.status, 0, `exit code 0 ${run.stderr.slice(-300)}`);
  t.equal(run.line['threads'], 1, 'falls back to 1 thread');
  t.match(String(run.line['note']), /threaded wasm build did not start \(.*(EEXIST|ENOTDIR)/, 'the note keeps the cause');
  t.match(run.stderr, /the threaded build did not start/, 'a warning is logged');
  t.notMatch(run.stderr, /Initialization of backend wasm failed/, "tfjs's own stack trace is not printed");
  t.same((await readdir(tmp)).filter((name) => name.endsWith('.tmp')), [], 'no temporary file is left');
});
