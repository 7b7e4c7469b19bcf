/**
 * Resident memory over a whole pipeline run: runs bench/specs/lfw-all-features.yaml (every LFW
 * image through decoding, alignment and MobileFaceNet, with a fresh artifact cache) and prints
 * the resident set size the runner sampled after every 1,000 images, its peak, and the change
 * from the first sample to the last.
 * Usage: `npx tsx bench/memory.ts [SPEC]`.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import type { PipelineReport } from '../pipelines/runPipeline.ts';

const spec = process.argv[2] ?? 'bench/specs/lfw-all-features.yaml';
const work = await mkdtemp(path.join(os.tmpdir(), 'sphereface-memory-'));
const reportFile = path.join(work, 'report.json');
const mib = (bytes: number): number => Number((bytes / 2 ** 20).toFixed(1));

try {
  await promisify(execFile)(
    process.execPath,
    ['bin/sphereface.js', 'run', spec, '--no-progress', '--set', `cacheDir=${path.join(work, 'cache')}`, '--report', reportFile],
    { maxBuffer: 64 * 2 ** 20 },
  );
  const report = JSON.parse(await readFile(reportFile, 'utf8')) as PipelineReport;
  const samples = report.memory.samples;
  const first = samples[0];
  const last = samples.at(-1);
  console.log(JSON.stringify({ images: report.images, seconds: Number(report.seconds.toFixed(1)), rejected: report.rejected.length }));
  for (const sample of samples) console.log(`${String(sample.images).padStart(6)} images  ${mib(sample.rssBytes)} MiB`);
  console.log(
    JSON.stringify({
      peakRssMiB: mib(report.memory.peakRssBytes),
      firstSampleMiB: first === undefined ? null : mib(first.rssBytes),
      lastSampleMiB: last === undefined ? null : mib(last.rssBytes),
      changeMiB: first === undefined || last === undefined ? null : mib(last.rssBytes - first.rssBytes),
    }),
  );
} finally {
  await rm(work, { recursive: true, force: true });
}
