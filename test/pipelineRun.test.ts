import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

import { Schema } from 'effect';
import fg from 'fast-glob';
import { from, lastValueFrom, map, tap as tapRx, toArray } from 'rxjs';
import sharp from 'sharp';

import { readLandmarks } from '../datasets/lfw.ts';
import { ArtifactCache } from '../lib/artifactCache.ts';
import { lfwPaths, mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, type AlignedFace, type Feature, type LandmarkedImage, type Maybe } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';
import { defineStage, type OpenedStage } from '../pipelines/operatorDefinition.ts';
import { runPipeline, planPipeline, type PipelineReport, type StageCounts } from '../pipelines/runPipeline.ts';
import { validatePipeline, type PipelineSpec } from '../pipelines/spec.ts';

const run = promisify(execFile);
const cli = path.resolve('bin/sphereface.js');
const lfw = lfwPaths();
const IDS = [
  'Aaron_Eckhart/Aaron_Eckhart_0001.jpg',
  'Abel_Pacheco/Abel_Pacheco_0001.jpg',
  'Abel_Pacheco/Abel_Pacheco_0002.jpg',
  'Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg',
];

function stage(report: PipelineReport, label: string): StageCounts {
  const found = report.stages.find((s) => s.label === label);
  if (found === undefined) throw new Error(`no stage ${label} in the report`);
  return found;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Returns relative path → SHA-256 of every file under `dir`. */
async function fileHashes(dir: string): Promise<Map<string, string>> {
  const files = (await fg('**/*', { cwd: dir, dot: true })).sort();
  return new Map(await Promise.all(files.map(async (file) => [file, sha256(await readFile(path.join(dir, file)))] as const)));
}

/** Aligns the images with the operators directly, outside the runner. */
async function alignDirectly(ids: readonly string[]): Promise<Map<string, AlignedFace>> {
  const landmarks = await readLandmarks(lfw.landmarks);
  const faces = await lastValueFrom(
    from(ids.map((id) => ({ id, path: path.join(lfw.images, id) }))).pipe(
      readImages(),
      map((image) => (isRejected(image) ? image : ({ ...image, landmarks: landmarks.get(image.id) } as LandmarkedImage))),
      similarityAlign(),
      toArray(),
    ),
  );
  return new Map(faces.filter((face): face is AlignedFace => !isRejected(face)).map((face) => [face.id, face]));
}

function landmarkSpec(dir: string, list: string, extra: PipelineSpec['stages'][number][] = []): PipelineSpec {
  return {
    version: 1,
    cache: path.join(dir, 'cache'),
    stages: [
      { op: 'imageList', params: { list, root: lfw.images } },
      { op: 'readImages' },
      { op: 'landmarks', params: { file: lfw.landmarks } },
      { op: 'similarityAlign' },
      ...extra,
      { op: 'writeCrops', params: { out: path.join(dir, 'out') } },
    ],
  };
}

t.test('crops equal the operators run directly; rerun computes nothing', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS.join('\n')}\n` });
  const spec = landmarkSpec(dir, path.join(dir, 'list.txt'));
  const first = await runPipeline(await validatePipeline(spec), { progress: false });

  t.equal(first.images, 4);
  t.equal(first.rejected.length, 0);
  t.match(stage(first, 'readImages'), { inputs: 4, outputs: 4 });
  t.match(stage(first, 'similarityAlign'), { inputs: 4, outputs: 4, stored: 4, cacheHits: 0 });
  t.match(stage(first, 'writeCrops'), { inputs: 4, outputs: 4 });

  const expected = await alignDirectly(IDS);
  for (const id of IDS) {
    const png = path.join(dir, 'out', id.replace(/\.jpg$/, '.png'));
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    const face = expected.get(id) as AlignedFace;
    t.same([info.width, info.height, info.channels], [96, 112, 3], `${id} is 96×112 RGB`);
    t.ok(Buffer.from(face.rgb).equals(data), `${id} crop equals similarityAlign's output`);
  }
  const before = await fileHashes(path.join(dir, 'out'));

  const second = await runPipeline(await validatePipeline(spec), { progress: false });
  t.match(stage(second, 'readImages'), { inputs: 0, skipped: 4 }, 'no image decoded on the rerun');
  t.match(stage(second, 'landmarks'), { inputs: 0, skipped: 4 });
  t.match(stage(second, 'similarityAlign'), { inputs: 0, cacheHits: 4, stored: 0 });
  t.same(await fileHashes(path.join(dir, 'out')), before, 'crops byte-identical after the rerun');
});

t.test('changed parameter recomputes its stage and later ones only', async (t) => {
  const ids = IDS.slice(0, 2);
  const dir = t.testdir({ 'list.txt': `${ids.join('\n')}\n` });
  const base = (align: Record<string, unknown>, detect: Record<string, unknown>): PipelineSpec => ({
    version: 1,
    cache: path.join(dir, 'cache'),
    stages: [
      { op: 'imageList', params: { list: path.join(dir, 'list.txt'), root: lfw.images } },
      { op: 'readImages' },
      { op: 'detectFaces', params: detect },
      { op: 'similarityAlign', params: align },
      { op: 'writeCrops', params: { out: path.join(dir, 'out') } },
    ],
  });
  const first = await runPipeline(await validatePipeline(base({}, {})), { progress: false });
  t.match(stage(first, 'detectFaces'), { inputs: 2, stored: 2 });

  const square = { outputSize: { width: 112, height: 112 } };
  const second = await runPipeline(await validatePipeline(base(square, {})), { progress: false });
  t.match(stage(second, 'readImages'), { inputs: 2 }, 'images decoded again for the new alignment');
  t.match(stage(second, 'detectFaces'), { inputs: 0, cacheHits: 2 }, 'detections come from the cache');
  t.match(stage(second, 'similarityAlign'), { inputs: 2, stored: 2, cacheHits: 0 }, 'alignment recomputed');

  const third = await runPipeline(await validatePipeline(base(square, { minSize: 30 })), { progress: false });
  t.match(stage(third, 'detectFaces'), { inputs: 2, stored: 2, cacheHits: 0 }, 'detection recomputed');
  t.match(stage(third, 'similarityAlign'), { inputs: 2, stored: 2, cacheHits: 0 }, 'and alignment after it');

  const plan = await planPipeline(await validatePipeline(base(square, { minSize: 30 })));
  t.match(plan.stages[2], { op: 'detectFaces', cache: { artifacts: 2, missing: 0 } });
  t.match(plan.stages[3], { op: 'similarityAlign', cache: { artifacts: 2, missing: 0, skipsEarlierStages: true } });
  t.match(plan.stages[1], { op: 'readImages', cache: 'off' });
});

t.test('failures are stored and not retried unless asked', async (t) => {
  const dir = t.testdir({});
  const whole = await readFile(path.join(lfw.images, IDS[0] as string));
  await writeFile(path.join(dir, 'cut.jpg'), whole.subarray(0, Math.floor(whole.length / 2)));
  await writeFile(path.join(dir, 'list.txt'), `${path.join(dir, 'cut.jpg')}\n${path.join(lfw.images, IDS[1] as string)}\n`);
  const spec: PipelineSpec = {
    version: 1,
    cache: path.join(dir, 'cache'),
    stages: [
      { op: 'imageList', params: { list: path.join(dir, 'list.txt'), root: '/' } },
      { op: 'readImages' },
      { op: 'detectFaces' },
      { op: 'similarityAlign' },
    ],
  };
  const first = await runPipeline(await validatePipeline(spec), { progress: false });
  t.equal(first.rejected.length, 1);
  t.equal(first.rejected[0]?.stage, 'readImages');
  t.same(Object.values(stage(first, 'readImages').rejected), [1], 'counted once under readImages');

  const second = await runPipeline(await validatePipeline(spec), { progress: false });
  t.equal(second.rejected.length, 1, 'still rejected');
  t.equal(second.rejected[0]?.stage, 'readImages', 'with the stage that failed');
  t.equal(second.rejected[0]?.reason, first.rejected[0]?.reason, 'and the same reason');
  t.match(stage(second, 'readImages'), { inputs: 0 }, 'the broken file is not read again');
  t.equal(stage(second, 'similarityAlign').cachedFailures, 1);
  t.same(Object.values(stage(second, 'readImages').rejected), [1], 'the cached failure is counted under readImages');

  const retried = await runPipeline(await validatePipeline(spec), { progress: false, retryFailed: true });
  t.match(stage(retried, 'readImages'), { inputs: 1 }, '--retry-failed reads it again');
  t.equal(retried.rejected.length, 1);
});

t.test('damaged artifact is detected and recomputed', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS[0]}\n` });
  const spec = landmarkSpec(dir, path.join(dir, 'list.txt'));
  await runPipeline(await validatePipeline(spec), { progress: false });
  const cache = ArtifactCache.open(path.join(dir, 'cache'));
  const [entry] = cache.list({ stage: 'similarityAlign' });
  const blob = cache.blobPath(entry?.blob as string);
  cache.close();
  const bytes = await readFile(blob);
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
  await writeFile(blob, bytes);

  const again = await runPipeline(await validatePipeline(spec), { progress: false });
  t.match(stage(again, 'similarityAlign'), { cacheHits: 0, inputs: 1, stored: 1 }, 'recomputed');
  const face = (await alignDirectly([IDS[0] as string])).get(IDS[0] as string) as AlignedFace;
  const { data } = await sharp(path.join(dir, 'out', (IDS[0] as string).replace(/\.jpg$/, '.png'))).raw().toBuffer({ resolveWithObject: true });
  t.ok(Buffer.from(face.rgb).equals(data), 'crop written from the recomputed face is correct');
});

t.test('crop read from the cache gives the same feature as a fresh one', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS.join('\n')}\n` });
  const collected: Feature[] = [];
  const collect = defineStage({
    name: 'collectFeatures',
    description: 'test sink',
    params: Schema.Struct({}),
    input: 'Feature',
    output: 'Feature',
    version: 1,
    shape: 'per-item',
    open: async () => ({
      operator: tapRx((feature: Maybe<Feature>) => {
        if (!isRejected(feature)) collected.push(feature);
      }) as OpenedStage['operator'],
    }),
  });
  const spec: PipelineSpec = {
    version: 1,
    cache: path.join(dir, 'cache'),
    stages: [
      { op: 'imageList', params: { list: path.join(dir, 'list.txt'), root: lfw.images } },
      { op: 'readImages' },
      { op: 'landmarks', params: { file: lfw.landmarks } },
      { op: 'similarityAlign' },
      { op: 'batch', params: { size: 3 } },
      { op: 'extractFeatures', params: { model: `mobilefacenet:${mobileFaceNetCheckpoint()}` }, cache: false },
      { op: 'collectFeatures' },
    ],
  };
  const fresh = await runPipeline(await validatePipeline(spec, { operators: [collect] }), { progress: false });
  t.equal(stage(fresh, 'similarityAlign').stored, 4);
  const freshFeatures = collected.splice(0);
  const reread = await runPipeline(await validatePipeline(spec, { operators: [collect] }), { progress: false });
  t.equal(stage(reread, 'similarityAlign').cacheHits, 4, 'crops from the cache');
  t.equal(stage(reread, 'extractFeatures').inputs, 4, 'features computed again');
  t.equal(collected.length, 4);
  for (const [i, feature] of collected.entries()) {
    const before = freshFeatures[i] as Feature;
    t.equal(feature.id, before.id);
    t.equal(feature.vector.length, before.vector.length);
    t.ok(Buffer.from(feature.vector.buffer).equals(Buffer.from(before.vector.buffer)), `${feature.id}: identical feature`);
  }
});

t.test('custom operator example rejects the dark faces', async (t) => {
  const dir = t.testdir({});
  const example = path.resolve('pipelines/examples/custom-operator.yaml');
  const reportFile = path.join(dir, 'report.json');
  await run(process.execPath, [cli, 'run', example, '--set', `out=${path.join(dir, 'out')}`, '--no-progress', '--report', reportFile]);
  const report = JSON.parse(await readFile(reportFile, 'utf8')) as PipelineReport;

  // Mean luma recomputed here, with BT.601 weights, from crops aligned outside the runner.
  const list = (await readFile('pipelines/examples/lfw-sample.txt', 'utf8')).split('\n').filter((line) => line !== '' && !line.startsWith('#'));
  const faces = await alignDirectly(list);
  const dark = [...faces.values()]
    .filter((face) => {
      let sum = 0;
      for (let i = 0; i < face.rgb.length; i += 3) sum += 0.299 * (face.rgb[i] ?? 0) + 0.587 * (face.rgb[i + 1] ?? 0) + 0.114 * (face.rgb[i + 2] ?? 0);
      return sum / (face.rgb.length / 3) < 100;
    })
    .map((face) => face.id)
    .sort();
  t.ok(dark.length > 0 && dark.length < list.length, 'the sample has dark and bright faces');
  t.same(report.rejected.map((r) => r.id).sort(), dark, 'exactly the dark faces are rejected');
  t.same(stage(report, 'rejectDarkFaces').rejected, { 'too dark: mean luma below 100': dark.length });
  const written = await fg('**/*.png', { cwd: path.join(dir, 'out') });
  t.equal(written.length, list.length - dark.length, 'the others are written');
});

t.test('dry run prints the stage graph with the cache state', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS.slice(0, 2).join('\n')}\n` });
  const specFile = path.join(dir, 'spec.json');
  const spec = landmarkSpec(dir, path.join(dir, 'list.txt'));
  await writeFile(specFile, JSON.stringify(spec));
  const before = await run(process.execPath, [cli, 'run', specFile, '--dry-run']);
  t.match(before.stdout, /2 images/);
  t.match(before.stdout, /similarityAlign .*0 stored, 0 failed, 2 to compute/);
  t.notOk(await fg('**/*.png', { cwd: dir }).then((files) => files.length), 'a dry run writes no crops');

  await run(process.execPath, [cli, 'run', specFile, '--no-progress']);
  const after = await run(process.execPath, [cli, 'run', specFile, '--dry-run']);
  t.match(after.stdout, /similarityAlign .*2 stored, 0 failed, 0 to compute/);
});
