// Mistakes a user or a plugin author can make with pipeline specs, and the behaviour
// docs/PIPELINES.md promises for each: a clear error, never a wrong result or a stalled run.
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { Schema } from 'effect';
import { map, mergeMap, timer } from 'rxjs';
import sharp from 'sharp';

import { lfwPaths } from '../lib/paths.ts';
import { isRejected, type LandmarkedImage, type Maybe } from '../operators/records.ts';
import { defineStage, type OpenedStage } from '../pipelines/operatorDefinition.ts';
import { runPipeline } from '../pipelines/runPipeline.ts';
import { SpecError, validatePipeline, type PipelineSpec } from '../pipelines/spec.ts';

const lfw = lfwPaths();
const IDS = [
  'Aaron_Eckhart/Aaron_Eckhart_0001.jpg',
  'Abel_Pacheco/Abel_Pacheco_0001.jpg',
  'Abel_Pacheco/Abel_Pacheco_0002.jpg',
  'Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg',
];

/** Returns the issues of a spec that fails validation, or an empty list when it passes. */
async function issuesOf(spec: unknown, options: Parameters<typeof validatePipeline>[1]): Promise<Array<{ path: string; message: string }>> {
  try {
    await validatePipeline(spec, options);
    return [];
  } catch (error) {
    if (!(error instanceof SpecError)) throw error;
    return error.issues.map((issue) => ({ ...issue }));
  }
}

function cropSpec(dir: string, out: string, vars: Record<string, string> = { out: path.join(dir, 'default-out') }): PipelineSpec {
  return {
    version: 1,
    vars,
    stages: [
      { op: 'imageList', params: { list: path.join(dir, 'list.txt'), root: lfw.images } },
      { op: 'readImages' },
      { op: 'landmarks', params: { file: lfw.landmarks } },
      { op: 'similarityAlign' },
      { op: 'writeCrops', params: { out } },
    ],
  };
}

t.test('--set value reaches variables built on it', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS[0]}\n` });
  const target = path.join(dir, 'chosen');
  const vars = { out: path.join(dir, 'default-out'), crops: '${out}/crops' };
  const issues = await issuesOf(cropSpec(dir, '${crops}', vars), { specDir: dir, set: { out: target } });
  t.same(issues, [], 'no "unknown variable ${out}" although --set out was given');
  const pipeline = await validatePipeline(cropSpec(dir, '${crops}', vars), { specDir: dir, set: { out: target } }).catch(() => undefined);
  t.equal((pipeline?.stages[4]?.params as { out?: string } | undefined)?.out, path.join(target, 'crops'));
});

t.test('--set relative folder name resolves from the working directory', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS[0]}\n`, spec: {} });
  const pipeline = await validatePipeline(cropSpec(dir, '${out}'), { specDir: path.join(dir, 'spec'), set: { out: 'bright' } });
  t.equal((pipeline.stages[4]?.params as { out: string }).out, path.resolve('bright'), 'docs: a relative path given with --set is taken from the working directory');
});

t.test('--set with an empty value is rejected', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS[0]}\n`, spec: {} });
  const issues = await issuesOf(cropSpec(dir, '${out}'), { specDir: path.join(dir, 'spec'), set: { out: '' } });
  t.ok(issues.length > 0, 'an empty out would write crops into the spec folder');
});

t.test('unknown variable issue path has no leading dot', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS[0]}\n` });
  const issues = await issuesOf(cropSpec(dir, '${nope}'), { specDir: dir });
  const paths = issues.map((issue) => issue.path);
  t.ok(paths.includes('stages[4].params.out'), `issue paths: ${paths.join(', ')}`);
  t.notOk(paths.some((p) => p.startsWith('.')), 'no path starts with a dot');
});

t.test('nested type error gives no "Expected undefined" line', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS[0]}\n` });
  const spec = cropSpec(dir, path.join(dir, 'out'));
  (spec.stages as unknown as Array<Record<string, unknown>>)[3] = { op: 'detectFaces', params: { thresholds: [0.6, 0.7] } };
  const issues = await issuesOf(spec, { specDir: dir });
  t.notOk(
    issues.some((issue) => issue.message.startsWith('Expected undefined')),
    issues.map((issue) => `${issue.path}: ${issue.message}`).join('\n'),
  );
});

t.test('plugin cannot replace a built-in operator', async (t) => {
  const dir = t.testdir({
    'list.txt': `${IDS[0]}\n`,
    'plugin.ts': [
      "import { BUILTIN_OPERATORS } from '../../../pipelines/builtinOperators.ts';",
      "export const operators = [{ ...BUILTIN_OPERATORS.find((d) => d.name === 'similarityAlign') }];",
      '',
    ].join('\n'),
  });
  t.equal(path.relative(path.resolve('.'), dir).split(path.sep).length, 3, 'fixture sits three folders below the repository');
  const spec = { ...cropSpec(dir, path.join(dir, 'out')), plugins: ['./plugin.ts'] };
  const issues = await issuesOf(spec, { specDir: dir });
  t.ok(
    issues.some((issue) => issue.path.startsWith('plugins[0]')),
    'a plugin operator under a built-in name would share its cache keys and poison its cached results',
  );
});

t.test('malformed plugin entry is a spec issue', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS[0]}\n`, 'plugin.ts': 'export const operators = [null, 42];\n' });
  const spec = { ...cropSpec(dir, path.join(dir, 'out')), plugins: ['./plugin.ts'] };
  const error = await validatePipeline(spec, { specDir: dir }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.type(error, SpecError, `got ${String(error)}`);
});

t.test('reordering stage cannot poison the cache', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS.join('\n')}\n` });
  // An asynchronous per-item stage that finishes its inputs out of order, as mergeMap does.
  let calls = 0;
  const lookup = defineStage({
    name: 'slowLookup',
    description: 'passes each image on after a delay that alternates between 40 ms and 0',
    params: Schema.Struct({}),
    input: 'LandmarkedImage',
    output: 'LandmarkedImage',
    version: 1,
    shape: 'per-item',
    open: async () => ({
      operator: mergeMap((image: Maybe<LandmarkedImage>) => timer(calls++ % 2 === 0 ? 40 : 0).pipe(map(() => image)), 4) as OpenedStage['operator'],
    }),
  });
  const spec = (out: string): PipelineSpec => ({
    version: 1,
    cache: path.join(dir, 'cache'),
    stages: [
      { op: 'imageList', params: { list: path.join(dir, 'list.txt'), root: lfw.images } },
      { op: 'readImages' },
      { op: 'landmarks', params: { file: lfw.landmarks } },
      { op: 'slowLookup' },
      { op: 'similarityAlign' },
      { op: 'writeCrops', params: { out: path.join(dir, out) } },
    ],
  });

  const first = await runPipeline(await validatePipeline(spec('first'), { operators: [lookup] }), { progress: false }).catch((error: unknown) => error);
  if (first instanceof Error) {
    t.pass(`the run refuses the out-of-order stage: ${first.message}`);
    return;
  }
  await runPipeline(await validatePipeline(spec('second'), { operators: [lookup] }), { progress: false });
  for (const id of IDS) {
    const png = id.replace(/\.jpg$/, '.png');
    const fresh = await sharp(path.join(dir, 'first', png)).raw().toBuffer();
    const cached = await sharp(path.join(dir, 'second', png)).raw().toBuffer();
    t.ok(fresh.equals(cached), `${id}: the crop served from the cache is that image's face`);
  }
});

t.test('writeCrops never overwrites an input image', async (t) => {
  const dir = t.testdir({ images: { Person: {} } });
  const input = path.join(dir, 'images', 'Person', 'face.png');
  await sharp(path.join(lfw.images, IDS[0] as string)).png().toFile(input);
  const before = createHash('sha256').update(await readFile(input)).digest('hex');
  const spec: PipelineSpec = {
    version: 1,
    stages: [
      { op: 'imageFolder', params: { root: path.join(dir, 'images') } },
      { op: 'readImages' },
      { op: 'detectFaces', params: { workers: 1 } },
      { op: 'similarityAlign' },
      { op: 'writeCrops', params: { out: path.join(dir, 'images') } },
    ],
  };
  // Either validation rejects an output folder that is the images folder, or the run does not
  // write over the input: both keep the photo.
  await validatePipeline(spec)
    .then((pipeline) => runPipeline(pipeline, { progress: false, cacheDir: null }))
    .catch((error: unknown) => t.comment(`rejected: ${(error as Error).message.split('\n')[0] ?? ''}`));
  const after = createHash('sha256').update(await readFile(input)).digest('hex');
  t.equal(after, before, 'the source photo is unchanged');
});

t.test('stage that drops records errors instead of hanging', async (t) => {
  const dir = t.testdir({ 'list.txt': `${IDS.join('\n')}\n` });
  const dropping = defineStage({
    name: 'dropAbel',
    description: 'drops Abel_Pacheco images instead of rejecting them',
    params: Schema.Struct({}),
    input: 'AlignedFace',
    output: 'AlignedFace',
    version: 1,
    shape: 'per-item',
    open: async () => ({
      operator: mergeMap((face: Maybe<{ id: string }>) => (!isRejected(face) && face.id.startsWith('Abel') ? [] : [face])) as OpenedStage['operator'],
    }),
  });
  const spec: PipelineSpec = {
    version: 1,
    maxInFlight: 1,
    stallTimeoutSeconds: 2,
    stages: [
      { op: 'imageList', params: { list: path.join(dir, 'list.txt'), root: lfw.images } },
      { op: 'readImages' },
      { op: 'landmarks', params: { file: lfw.landmarks } },
      { op: 'similarityAlign' },
      { op: 'dropAbel' },
    ],
  };
  const pipeline = await validatePipeline(spec, { operators: [dropping] });
  // Keeps the event loop alive, so that a stalled run shows as a timeout here rather than as
  // Node exiting with code 13 (unsettled top-level await), which is what the CLI does.
  let timeout: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    runPipeline(pipeline, { progress: false, cacheDir: null }).then(
      () => 'completed',
      (error: unknown) => `failed: ${(error as Error).message}`,
    ),
    new Promise<string>((resolve) => {
      timeout = setTimeout(() => resolve('stalled'), 20_000);
    }),
  ]);
  clearTimeout(timeout);
  t.match(outcome, /^failed: .*dropAbel/, `outcome: ${outcome}`);
});
