/**
 * Exact resumption: a training run killed with SIGKILL after its checkpoint at iteration K, then
 * resumed, ends with the same weights, bit for bit, as a run of 2K iterations straight through.
 * Both runs are separate `sphereface train` processes on the cpu backend, training SphereFace-4
 * at 28×24 on 16 real aligned LFW faces, with gradient accumulation and the mirror on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import t from 'tap';

import { listCheckpoints, loadCheckpoint } from '../model/checkpoint.ts';
import { writeAlignedFolder } from './helpers/alignedFolder.ts';

const CLI = path.resolve('bin/sphereface.js');
const K = 6;
const KILL_AFTER = K + 2;

function trainArgs(data: string, out: string, extra: readonly string[] = []): string[] {
  return [
    CLI, 'train', '--data', data, '--out', out,
    '--model', 'sphereface4', '--input', '28x24', '--backend', 'cpu',
    '--batch', '4', '--accumulate', '2', '--iterations', String(2 * K),
    '--lr', '0.01', '--lr-steps', String(K + 2), '--checkpoint-every', String(K), '--keep', '5',
    '--seed', '7', '--display', '1000', '--no-progress',
    ...extra,
  ];
}

function run(args: readonly string[]): ChildProcess {
  return spawn(process.execPath, args, { env: { ...process.env, SPHEREFACE_LOG_FORMAT: 'json' }, stdio: ['ignore', 'pipe', 'pipe'] });
}

async function finish(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

async function logIterations(file: string): Promise<Array<{ iteration: number; loss: number; lambda: number; learningRate: number }>> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as { iteration: number; loss: number; lambda: number; learningRate: number });
}

const work = await mkdtemp(path.join(os.tmpdir(), 'sphereface-resume-'));
t.teardown(() => rm(work, { recursive: true, force: true }));
const data = path.join(work, 'faces');
await writeAlignedFolder(data);

t.test('a run killed after its checkpoint resumes to bit-identical weights', async (t) => {
  const straight = path.join(work, 'straight');
  const resumed = path.join(work, 'resumed');

  const whole = await finish(run(trainArgs(data, straight)));
  t.equal(whole.code, 0, 'the straight run exits 0', { stderr: whole.stderr });

  // Start the second run and kill it once the log shows a few iterations past the checkpoint.
  const child = run(trainArgs(data, resumed));
  const ended = finish(child);
  const logFile = path.join(resumed, 'train-log.jsonl');
  let seen = 0;
  for (let attempt = 0; attempt < 6000 && seen < KILL_AFTER; attempt++) {
    await new Promise((r) => setTimeout(r, 10));
    const entries = await logIterations(logFile);
    seen = entries.length === 0 ? 0 : (entries[entries.length - 1] as { iteration: number }).iteration;
  }
  child.kill('SIGKILL');
  const killed = await ended;
  t.equal(killed.signal, 'SIGKILL', 'the second run was killed, not finished');
  const before = await listCheckpoints(resumed);
  t.same(before.map((c) => c.iteration), [K], `only the checkpoint at iteration ${K} exists when killed at iteration ${seen}`);
  t.ok(seen >= KILL_AFTER && seen < 2 * K, `killed at iteration ${seen}, between ${KILL_AFTER} and ${2 * K}`);

  // Without --resume, a folder with checkpoints is refused.
  const refused = await finish(run(trainArgs(data, resumed)));
  t.equal(refused.code, 1, 'a second start without --resume fails');
  t.match(refused.stderr, /already holds checkpoints/);

  const again = await finish(run(trainArgs(data, resumed, ['--resume'])));
  t.equal(again.code, 0, 'the resumed run exits 0', { stderr: again.stderr });
  t.match(again.stderr, new RegExp(`resuming from iteration ${K}`));

  const a = await loadCheckpoint((await listCheckpoints(straight)).at(-1)!.path);
  const b = await loadCheckpoint((await listCheckpoints(resumed)).at(-1)!.path);
  t.equal(a.state.iteration, 2 * K);
  t.equal(b.state.iteration, 2 * K);
  t.same(a.tensors.map((x) => x.name), b.tensors.map((x) => x.name), 'same tensors');
  t.ok(a.tensors.some((x) => x.name.startsWith('momentum/')), 'momentum slots are saved');
  const different = a.tensors.filter((x, i) => Buffer.compare(Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength), Buffer.from(b.tensors[i]!.data.buffer, b.tensors[i]!.data.byteOffset, b.tensors[i]!.data.byteLength)) !== 0);
  t.same(different.map((x) => x.name), [], 'every tensor is bit-identical');

  // The logs agree line for line, and the killed run's lines past the checkpoint were replaced.
  const logA = await logIterations(path.join(straight, 'train-log.jsonl'));
  const logB = await logIterations(logFile);
  t.same(logB.map((e) => e.iteration), Array.from({ length: 2 * K }, (_, i) => i + 1), 'one log line per iteration after the resume');
  t.same(logB.map((e) => e.loss), logA.map((e) => e.loss), 'the same loss at every iteration');
  t.same(logB.map((e) => e.learningRate), logA.map((e) => e.learningRate));
  t.equal(logA[K + 1]!.learningRate, 0.01, `iteration ${K + 2} still uses the base rate`);
  t.equal(logA[K + 2]!.learningRate, 0.001, `iteration ${K + 3} uses the stepped rate`);
  const mean = (entries: typeof logA) => entries.reduce((sum, e) => sum + e.loss, 0) / entries.length;
  t.ok(mean(logA.slice(-3)) < mean(logA.slice(0, 3)), `the loss falls (${mean(logA.slice(0, 3))} → ${mean(logA.slice(-3))})`);
  t.same(
    (await readdir(resumed)).filter((f) => f.includes('.tmp')),
    [],
    'no temp files remain',
  );
});
