import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

import fg from 'fast-glob';

import { lfwPaths } from '../lib/paths.ts';
import { loadPipeline, SpecError, validatePipeline, type PipelineSpec } from '../pipelines/spec.ts';

const run = promisify(execFile);
const cli = path.resolve('bin/sphereface.js');
const lfw = lfwPaths();

/** A valid preprocessing spec over one LFW image, to be broken one field at a time. */
function preprocessSpec(dir: string): PipelineSpec {
  return {
    version: 1,
    stages: [
      { op: 'imageList', params: { list: path.join(dir, 'list.txt'), root: lfw.images } },
      { op: 'readImages' },
      { op: 'detectFaces', params: { minSize: 20 } },
      { op: 'similarityAlign' },
      { op: 'writeCrops', params: { out: path.join(dir, 'out') } },
    ],
  };
}

/** Returns the issues of a spec that must fail validation. */
async function issuesOf(t: Test, spec: unknown, dir: string): Promise<Array<{ path: string; message: string }>> {
  const error = await validatePipeline(spec, { specDir: dir }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.type(error, SpecError, 'validation throws SpecError');
  return (error as SpecError).issues.map((issue) => ({ ...issue }));
}

t.test('valid spec passes validation', async (t) => {
  const dir = t.testdir({ 'list.txt': 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg\n' });
  const pipeline = await validatePipeline(preprocessSpec(dir), { specDir: dir });
  t.same(
    pipeline.stages.map((stage) => stage.definition.name),
    ['imageList', 'readImages', 'detectFaces', 'similarityAlign', 'writeCrops'],
  );
  t.equal((pipeline.stages[1]?.params as { concurrency: number }).concurrency, 2, 'defaults filled in');
  t.equal(pipeline.maxInFlight, 64);
});

t.test('unknown operator names its field', async (t) => {
  const dir = t.testdir({ 'list.txt': 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg\n' });
  const spec = preprocessSpec(dir);
  (spec.stages as unknown as Array<{ op: string }>)[2] = { op: 'detectFacez' };
  const issues = await issuesOf(t, spec, dir);
  const issue = issues.find((i) => i.path === 'stages[2].op');
  t.ok(issue, 'issue at stages[2].op');
  t.match(issue?.message, /unknown operator "detectFacez"/);
  t.match(issue?.message, /detectFaces/, 'lists the known operators');
});

t.test('wrongly typed parameter names its field', async (t) => {
  const dir = t.testdir({ 'list.txt': 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg\n' });
  const spec = preprocessSpec(dir);
  (spec.stages as unknown as Array<{ op: string; params?: unknown }>)[2] = { op: 'detectFaces', params: { minSize: 'twenty' } };
  const issues = await issuesOf(t, spec, dir);
  t.equal(issues.length, 1);
  t.equal(issues[0]?.path, 'stages[2].params.minSize');
  t.match(issues[0]?.message, /Expected number, actual "twenty"/);
});

t.test('misspelt parameter is rejected', async (t) => {
  const dir = t.testdir({ 'list.txt': 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg\n' });
  const spec = preprocessSpec(dir);
  (spec.stages as unknown as Array<{ op: string; params?: unknown }>)[1] = { op: 'readImages', params: { maxPixel: 100 } };
  const issues = await issuesOf(t, spec, dir);
  t.equal(issues[0]?.path, 'stages[1].params.maxPixel');
  t.match(issues[0]?.message, /unexpected/i);
});

t.test('invalid parameter value is rejected by the stage check', async (t) => {
  const dir = t.testdir({ 'list.txt': 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg\n' });
  const spec = preprocessSpec(dir);
  (spec.stages as unknown as Array<{ op: string; params?: unknown }>)[2] = { op: 'detectFaces', params: { factor: 1.5 } };
  const issues = await issuesOf(t, spec, dir);
  t.equal(issues[0]?.path, 'stages[2].params');
  t.match(issues[0]?.message, /factor/);
});

t.test('mismatched stage pair names both stages', async (t) => {
  const dir = t.testdir({ 'list.txt': 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg\n' });
  const spec: PipelineSpec = {
    version: 1,
    stages: [
      { op: 'imageList', params: { list: path.join(dir, 'list.txt'), root: lfw.images } },
      { op: 'readImages' },
      { op: 'similarityAlign' },
    ],
  };
  const issues = await issuesOf(t, spec, dir);
  t.equal(issues.length, 1);
  t.equal(issues[0]?.path, 'stages[2].op');
  t.match(issues[0]?.message, /similarityAlign takes LandmarkedImage records, but stages\[1\] \(readImages\) gives DecodedImage/);
  t.match(issues[0]?.message, /insert a stage such as (landmarks|detectFaces)/, 'suggests a stage that fits');
});

t.test('features without a batch stage get a hint', async (t) => {
  const dir = t.testdir({ 'list.txt': 'x.jpg\n' });
  const spec: PipelineSpec = {
    version: 1,
    stages: [
      { op: 'lfw' },
      { op: 'readImages' },
      { op: 'landmarks', params: { file: lfw.landmarks } },
      { op: 'similarityAlign' },
      { op: 'extractFeatures', params: { model: 'sphereface20:random' } },
      { op: 'kFoldVerify' },
    ],
  };
  const issues = await issuesOf(t, spec, dir);
  t.equal(issues[0]?.path, 'stages[4].op');
  t.match(issues[0]?.message, /takes FaceBatch.*gives AlignedFace.*such as batch/);
});

t.test('missing files name the parameter', async (t) => {
  const dir = t.testdir({});
  const spec: PipelineSpec = {
    version: 1,
    stages: [
      { op: 'imageList', params: { list: 'no-such-list.txt', root: lfw.images } },
      { op: 'readImages' },
      { op: 'landmarks', params: { file: 'landmarks-missing.txt' } },
      { op: 'similarityAlign' },
      { op: 'batch' },
      { op: 'extractFeatures', params: { model: 'mobilefacenet:missing.ckpt' } },
    ],
  };
  const issues = await issuesOf(t, spec, dir);
  const byPath = new Map(issues.map((issue) => [issue.path, issue.message]));
  t.match(byPath.get('stages[0].params.list'), `file not found: ${path.join(dir, 'no-such-list.txt')}`, 'relative path resolved against the spec folder');
  t.match(byPath.get('stages[2].params.file'), /file not found: .*landmarks-missing\.txt/);
  t.match(byPath.get('stages[5].params.model'), /model file not found: .*missing\.ckpt/);
});

t.test('structure errors name the field', async (t) => {
  const dir = t.testdir({});
  t.match(await issuesOf(t, { version: 2, stages: [{ op: 'lfw' }] }, dir), [{ path: 'version' }]);
  t.match(await issuesOf(t, { version: 1, stages: [] }, dir), [{ path: 'stages', message: /expected at least a source stage/ }]);
  t.match(await issuesOf(t, { version: 1, stages: [{ params: {} }] }, dir), [{ path: 'stages[0].op', message: /missing/i }]);
  t.match(await issuesOf(t, { version: 1, stages: [{ op: 'lfw' }], extra: true }, dir), [{ path: 'extra' }]);
});

t.test('stage order errors', async (t) => {
  const dir = t.testdir({});
  t.match(await issuesOf(t, { version: 1, stages: [{ op: 'readImages' }] }, dir), [{ path: 'stages[0].op', message: /first stage must be a source/ }]);
  t.match(await issuesOf(t, { version: 1, stages: [{ op: 'lfw' }, { op: 'lfw' }] }, dir), [{ path: 'stages[1].op', message: /source and can only be the first/ }]);
  const terminalFirst = {
    version: 1,
    stages: [{ op: 'lfw' }, { op: 'readImages' }, { op: 'landmarks', params: { file: lfw.landmarks } }, { op: 'similarityAlign' }, { op: 'batch' }, { op: 'extractFeatures', params: { model: 'sphereface20:random' } }, { op: 'kFoldVerify' }, { op: 'kFoldVerify' }],
  };
  const issues = await issuesOf(t, terminalFirst, dir);
  t.ok(issues.some((issue) => issue.path === 'stages[6].op' && /must be the last stage/.test(issue.message)));
});

t.test('unknown variable names its field', async (t) => {
  const dir = t.testdir({});
  const issues = await issuesOf(t, { version: 1, stages: [{ op: 'imageFolder', params: { root: '${photos}' } }] }, dir);
  t.equal(issues[0]?.path, 'stages[0].params.root');
  t.match(issues[0]?.message, /unknown variable \$\{photos\}.*--set photos=VALUE/);
});

t.test('variables from vars and --set', async (t) => {
  const dir = t.testdir({ photos: { A: { 'a.jpg': 'x' } } });
  const spec = { version: 1, vars: { photos: 'nowhere' }, stages: [{ op: 'imageFolder', params: { root: '${photos}' } }] };
  const pipeline = await validatePipeline(spec, { specDir: dir, set: { photos: path.join(dir, 'photos') } });
  t.equal((pipeline.stages[0]?.params as { root: string }).root, path.join(dir, 'photos'), '--set overrides vars');
});

t.test('spec files: YAML errors give the line, formats checked', async (t) => {
  const dir = t.testdir({
    'broken.yaml': 'version: 1\nstages:\n  - op: lfw\n    params: { root: [unclosed\n',
    'spec.txt': 'version: 1',
    'bad.json': '{ "version": 1, ',
  });
  const errorOf = (file: string): Promise<SpecError> =>
    loadPipeline(path.join(dir, file)).then(
      () => {
        throw new Error('expected a SpecError');
      },
      (error: SpecError) => error,
    );
  t.match((await errorOf('broken.yaml')).issues[0], { path: /^line \d+$/, message: /invalid YAML/ });
  t.match((await errorOf('spec.txt')).issues[0], { message: /expected a \.json, \.yaml or \.yml file/ });
  t.match((await errorOf('bad.json')).issues[0], { message: /invalid JSON/ });
  t.match((await errorOf('missing.yaml')).issues[0], { message: 'spec file not found' });
});

t.test('all problems reported together', async (t) => {
  const dir = t.testdir({});
  const issues = await issuesOf(
    t,
    {
      version: 1,
      stages: [{ op: 'imageList', params: { list: 'nope.txt' } }, { op: 'readImages', params: { concurrency: 0 } }, { op: 'warp' }],
    },
    dir,
  );
  t.same(
    issues.map((issue) => issue.path),
    ['stages[0].params.list', 'stages[1].params.concurrency', 'stages[2].op'],
  );
});

t.test('plugin without operators export is reported', async (t) => {
  const dir = t.testdir({ 'plugin.mjs': 'export const nothing = 1;\n' });
  const issues = await issuesOf(t, { version: 1, plugins: ['./plugin.mjs'], stages: [{ op: 'lfw' }] }, dir);
  t.match(issues, [{ path: 'plugins[0]', message: /exports no "operators" array/ }]);
});

t.test('shipped examples validate', async (t) => {
  const examples = await fg('pipelines/examples/*.yaml');
  t.ok(examples.length >= 4, 'at least four examples');
  for (const file of examples) {
    const text = await readFile(file, 'utf8');
    const candidates: Record<string, string> = { images: lfw.images, out: t.testdir({}) };
    const set = Object.fromEntries(Object.entries(candidates).filter(([name]) => text.includes(`\${${name}}`)));
    const pipeline = await loadPipeline(file, { set });
    t.ok(pipeline.stages.length >= 3, `${file} validates`);
  }
});

t.test('run command reports a bad spec with its path and exit 1', async (t) => {
  const dir = t.testdir({});
  const file = path.join(dir, 'bad.yaml');
  await writeFile(file, 'version: 1\nstages:\n  - op: imageFolder\n    params: { root: 5 }\n');
  const result = await run(process.execPath, [cli, 'run', file], { env: { ...process.env, SPHEREFACE_LOG_FORMAT: 'pretty' } }).catch(
    (error: { code: number; stderr: string }) => error,
  );
  t.equal((result as { code: number }).code, 1, 'exit status 1');
  t.match((result as { stderr: string }).stderr, /stages\[0\]\.params\.root: Expected string, actual 5/);
});
