/**
 * The `train` stage of a pipeline spec. 16 real LFW photos of 4 people are decoded, aligned from
 * the landmark file and trained on. A second run takes the crops from the cache and resumes from
 * the checkpoint instead of starting again.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import t from 'tap';

import { lfwPaths } from '../lib/paths.ts';
import { listCheckpoints } from '../model/checkpoint.ts';
import { runPipeline } from '../pipelines/runPipeline.ts';
import type { TrainingSummary } from '../pipelines/train.ts';
import { loadPipeline } from '../pipelines/spec.ts';
import { ALIGNED_PEOPLE } from './helpers/alignedFolder.ts';

const work = await mkdtemp(path.join(os.tmpdir(), 'sphereface-train-spec-'));
t.teardown(() => rm(work, { recursive: true, force: true }));
const lfw = lfwPaths();

const list = path.join(work, 'images.txt');
await writeFile(
  list,
  Object.entries(ALIGNED_PEOPLE)
    .flatMap(([name, numbers]) => numbers.map((n) => `${name}/${name}_${n}.jpg`))
    .join('\n') + '\n',
);
const spec = path.join(work, 'train.yaml');
await writeFile(
  spec,
  `version: 1
name: train-small
vars:
  iterations: "2"
cache: ${path.join(work, 'cache')}
stages:
  - op: imageList
    params: { list: "${list}", root: "${lfw.images}" }
  - op: readImages
  - op: landmarks
    params: { file: "${lfw.landmarks}" }
  - op: similarityAlign
  - op: train
    params: { out: "${path.join(work, 'run')}", model: sphereface4, input: [28, 24], batchSize: 4, accumulate: 1, lr: 0.01, iterations: "\${iterations}", checkpointEvery: 1 }
`,
);

t.test('trains from a spec, then resumes with the crops from the cache', async (t) => {
  const first = await runPipeline(await loadPipeline(spec), { backend: 'cpu', progress: false });
  const summary = first.result as TrainingSummary;
  t.equal(summary.samples, 16);
  t.equal(summary.classes, 4);
  t.equal(summary.iteration, 2);
  t.equal(first.stages.find((s) => s.label === 'similarityAlign')?.stored, 16, 'the 16 crops are stored in the cache');

  const second = await runPipeline(await loadPipeline(spec, { set: { iterations: '4' } }), { backend: 'cpu', progress: false });
  const resumed = second.result as TrainingSummary;
  t.equal(resumed.startIteration, 2, 'the second run starts from the checkpoint at iteration 2');
  t.equal(resumed.iteration, 4);
  t.equal(second.stages.find((s) => s.label === 'similarityAlign')?.cacheHits, 16, 'every crop comes from the cache');
  t.equal(second.stages.find((s) => s.label === 'readImages')?.inputs, 0, 'no image is decoded again');
  t.same((await listCheckpoints(path.join(work, 'run'))).map((c) => c.iteration), [2, 3, 4]);
  const log = (await readFile(path.join(work, 'run', 'train-log.jsonl'), 'utf8')).trim().split('\n');
  t.same(log.map((line) => (JSON.parse(line) as { iteration: number }).iteration), [1, 2, 3, 4]);
});
