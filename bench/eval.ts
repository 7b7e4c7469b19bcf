/**
 * Wall time of the whole LFW evaluation (`sphereface eval`) on each inference engine, with the
 * imported MobileFaceNet (068.ckpt) and the landmark file. Each run is a fresh process without
 * the artifact cache, so it decodes, aligns and embeds all 7,701 images of the 6,000 pairs.
 * The bench prints one JSON line per run and a summary with the median wall time per engine,
 * and checks that every run gave the same per-fold table (it exits with status 1 otherwise).
 *
 * Usage: `npx tsx bench/eval.ts [RUNS] [ENGINES]` (default 1 run, engines `onnx,tfjs`, taken in
 * turn within each round). `npm run bench:eval` runs the defaults.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { mobileFaceNetCheckpoint } from '../lib/paths.ts';

const runs = Number(process.argv[2] ?? 1);
if (!Number.isInteger(runs) || runs < 1) throw new Error(`RUNS is ${process.argv[2]}, expected an integer ≥ 1`);
const engines = (process.argv[3] ?? 'onnx,tfjs').split(',');
for (const engine of engines) {
  if (engine !== 'onnx' && engine !== 'tfjs') throw new Error(`engine "${engine}" is unknown, expected onnx or tfjs`);
}

const cli = fileURLToPath(new URL('../bin/sphereface.js', import.meta.url));
const model = `mobilefacenet:${mobileFaceNetCheckpoint()}`;
const scratch = await mkdtemp(path.join(os.tmpdir(), 'bench-eval-'));

interface Run {
  readonly engine: string;
  readonly wallSeconds: number;
  readonly mean: number;
  readonly folds: string;
  readonly backend: { readonly name: string; readonly threads: number };
}

function runEval(engine: string, report: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [cli, 'eval', '--model', model, '--engine', engine, '--no-progress', '--report', report], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4000);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve((performance.now() - started) / 1000);
      else reject(new Error(`sphereface eval --engine ${engine} exited with ${String(code)}:\n${stderr}`));
    });
  });
}

const results: Run[] = [];
try {
  for (let round = 0; round < runs; round++) {
    for (const engine of engines) {
      const report = path.join(scratch, `${engine}-${round}.json`);
      const wallSeconds = await runEval(engine, report);
      const json = JSON.parse(await readFile(report, 'utf8')) as {
        mean: number;
        folds: Array<{ accuracy: number; threshold: number }>;
        backend: { name: string; threads: number };
      };
      const run: Run = {
        engine,
        wallSeconds: Number(wallSeconds.toFixed(1)),
        mean: json.mean,
        folds: json.folds.map((fold) => `${(100 * fold.accuracy).toFixed(2)}@${fold.threshold.toFixed(4)}`).join(' '),
        backend: json.backend,
      };
      results.push(run);
      console.log(JSON.stringify({ round, ...run }));
    }
  }
} finally {
  await rm(scratch, { recursive: true, force: true });
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
};
const tables = new Set(results.map((run) => run.folds));
console.log(
  JSON.stringify({
    pairs: 6000,
    model: 'mobilefacenet 068.ckpt',
    wallSecondsMedian: Object.fromEntries(engines.map((engine) => [engine, median(results.filter((run) => run.engine === engine).map((run) => run.wallSeconds))])),
    meanAccuracy: results[0]?.mean,
    sameFoldTable: tables.size === 1,
  }),
);
if (tables.size !== 1) {
  console.error(`the fold tables differ between runs:\n${[...tables].join('\n')}`);
  process.exitCode = 1;
}
