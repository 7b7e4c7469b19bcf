import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import Database from 'better-sqlite3';
import sharp from 'sharp';
import t from 'tap';

import { ArtifactCache, sha256Hex } from '../lib/artifactCache.ts';
import { lfwPaths } from '../lib/paths.ts';

const cli = path.resolve('bin/sphereface.js');
const [IMAGE_A, IMAGE_B, IMAGE_C] = ['Aaron_Eckhart/Aaron_Eckhart_0001.jpg', 'Abel_Pacheco/Abel_Pacheco_0001.jpg', 'Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg'] as const;
const DETECTION = Buffer.from('{"faces":1}');

interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function runCli(...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { env: process.env }, (error, stdout, stderr) => {
      let code: number | null = 0;
      if (error !== null) code = typeof error.code === 'number' ? error.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Builds a cache as a preprocessing run over three LFW images A, B and C would. It stores the
 * photos of A and B under readImages, and equal detections of A and B (one shared blob) and a
 * failure for C under detectFaces. It stores a PNG crop of A under similarityAlign. Returns the
 * sizes stored.
 */
async function buildCache(dir: string): Promise<{ photoA: number; photoB: number; crop: number }> {
  const cache = ArtifactCache.open(dir);
  const photo = (id: string): Buffer => fs.readFileSync(path.join(lfwPaths().images, id));
  const key = (stage: string, id: string): string => ArtifactCache.key({ stage, version: 1, params: {}, input: sha256Hex(photo(id)) });

  cache.put(key('readImages', IMAGE_A), photo(IMAGE_A), { stage: 'readImages' });
  cache.put(key('readImages', IMAGE_B), photo(IMAGE_B), { stage: 'readImages' });
  cache.put(key('detectFaces', IMAGE_A), DETECTION, { stage: 'detectFaces' });
  cache.put(key('detectFaces', IMAGE_B), DETECTION, { stage: 'detectFaces' });
  cache.putFailure(key('detectFaces', IMAGE_C), 'no face found', { stage: 'detectFaces' });
  const crop = await sharp(photo(IMAGE_A)).resize(96, 112).png().toBuffer();
  cache.put(key('similarityAlign', IMAGE_A), crop, { stage: 'similarityAlign' });
  cache.close();
  return { photoA: photo(IMAGE_A).length, photoB: photo(IMAGE_B).length, crop: crop.length };
}

function listEntries(dir: string): Array<{ stage: string; kind: string }> {
  const cache = ArtifactCache.open(dir);
  try {
    return cache.list().map(({ stage, kind }) => ({ stage, kind }));
  } finally {
    cache.close();
  }
}

/** Lists the blob files of a cache, temp files aside. */
function blobFiles(dir: string): string[] {
  return (fs.readdirSync(path.join(dir, 'blobs'), { recursive: true }) as string[]).filter(
    (name) => fs.statSync(path.join(dir, 'blobs', name)).isFile() && !path.basename(name).startsWith('.tmp-'),
  );
}

t.test('cache stats prints per-stage counts', async (t) => {
  const dir = path.join(t.testdir({}), 'cache');
  const sizes = await buildCache(dir);

  const json = await runCli('cache', 'stats', dir, '--json');
  t.equal(json.code, 0, 'stats --json exits with 0', { stderr: json.stderr });
  t.same(JSON.parse(json.stdout), {
    dir,
    entries: 6,
    failures: 1,
    blobs: 4,
    blobBytes: sizes.photoA + sizes.photoB + DETECTION.length + sizes.crop,
    stages: {
      detectFaces: { artifacts: 2, artifactBytes: 2 * DETECTION.length, failures: 1, blobs: 1, blobBytes: DETECTION.length },
      readImages: { artifacts: 2, artifactBytes: sizes.photoA + sizes.photoB, failures: 0, blobs: 2, blobBytes: sizes.photoA + sizes.photoB },
      similarityAlign: { artifacts: 1, artifactBytes: sizes.crop, failures: 0, blobs: 1, blobBytes: sizes.crop },
    },
  });

  const table = await runCli('cache', 'stats', dir);
  t.equal(table.code, 0, 'stats exits with 0', { stderr: table.stderr });
  t.match(table.stdout, `artifact cache ${dir}: 6 entries`);
  t.match(table.stdout, /^stage +artifacts +bytes +failures +blobs +blob bytes$/m);
  t.match(table.stdout, /^detectFaces +2 +22 B +1 +1 +11 B$/m, 'two equal detections share one blob');
  t.match(table.stdout, /^readImages +2 +\d+\.\d KiB +0 +2 +\d+\.\d KiB$/m);
  t.match(table.stdout, /^similarityAlign +1 +\d+\.\d KiB +0 +1 +\d+\.\d KiB$/m);
  t.match(table.stdout, /^total +5 +\d+\.\d KiB +1 +4 +\d+\.\d KiB$/m);
});

t.test('cache stats rejects a folder that is not a cache', async (t) => {
  const root = t.testdir({ plain: { 'notes.txt': 'x' }, 'file.txt': 'x', broken: { 'index.sqlite': 'not a database' } });

  const missing = path.join(root, 'missing');
  const notFound = await runCli('cache', 'stats', missing);
  t.equal(notFound.code, 1, 'missing folder: exit code 1');
  t.match(notFound.stderr, `cache folder ${missing} not found`);
  t.notOk(fs.existsSync(missing), 'no cache created');

  const plain = await runCli('cache', 'stats', path.join(root, 'plain'));
  t.equal(plain.code, 1, 'plain folder: exit code 1');
  t.match(plain.stderr, 'is not an artifact cache: it has no index.sqlite');
  t.notOk(fs.existsSync(path.join(root, 'plain', 'index.sqlite')), 'no index created');

  const file = await runCli('cache', 'stats', path.join(root, 'file.txt'));
  t.equal(file.code, 1, 'file: exit code 1');
  t.match(file.stderr, 'is a file; expected an artifact cache folder');

  const broken = await runCli('cache', 'stats', path.join(root, 'broken'));
  t.equal(broken.code, 1, 'damaged index: exit code 1');
  t.match(broken.stderr, /cannot open artifact cache index .*index\.sqlite/);
});

t.test('cache prune removes what its filters select', async (t) => {
  const root = t.testdir({});
  const original = path.join(root, 'original');
  const sizes = await buildCache(original);
  // An entry deleted after its put leaves an unreferenced blob, as a crash between rename and
  // commit would.
  const orphan = Buffer.from('renamed into place, never indexed');
  const cache = ArtifactCache.open(original);
  const orphanKey = ArtifactCache.key({ stage: 'detectFaces', version: 1, params: {}, input: sha256Hex(orphan) });
  cache.put(orphanKey, orphan, { stage: 'detectFaces' });
  cache.delete(orphanKey);
  cache.close();

  const copy = (name: string): string => {
    const dir = path.join(root, name);
    fs.cpSync(original, dir, { recursive: true });
    return dir;
  };
  const prune = async (dir: string, ...flags: string[]) => {
    const result = await runCli('cache', 'prune', dir, '--json', ...flags);
    t.equal(result.code, 0, `prune ${flags.join(' ') || 'without filters'} exits with 0`, { stderr: result.stderr });
    return (JSON.parse(result.stdout) as { removed: { entries: number; blobs: number; bytes: number } }).removed;
  };

  const [unreferenced, failures, stage, stageFailures, all] = [copy('unreferenced'), copy('failures'), copy('stage'), copy('stage-failures'), copy('all')];
  const removed = await Promise.all([
    prune(unreferenced),
    prune(failures, '--failures'),
    prune(stage, '--stage', 'readImages'),
    prune(stageFailures, '--stage', 'similarityAlign', '--failures'),
    prune(all, '--all'),
  ]);

  t.same(removed[0], { entries: 0, blobs: 1, bytes: orphan.length }, 'no filter: only the unreferenced blob');
  t.equal(listEntries(unreferenced).length, 6, 'every entry stays');

  t.same(removed[1], { entries: 1, blobs: 1, bytes: orphan.length }, '--failures: the failure, then the unreferenced blob');
  t.notOk(listEntries(failures).some((entry) => entry.kind === 'failure'), 'no failure left');
  t.equal(listEntries(failures).length, 5, 'every artifact stays');

  t.same(removed[2], { entries: 2, blobs: 3, bytes: sizes.photoA + sizes.photoB + orphan.length }, '--stage: its entries and blobs');
  t.notOk(listEntries(stage).some((entry) => entry.stage === 'readImages'), 'no readImages entry left');
  t.equal(blobFiles(stage).length, 2, 'the detection and the crop blobs stay');

  t.same(removed[3], { entries: 0, blobs: 1, bytes: orphan.length }, 'filters combine: similarityAlign has no failure');
  t.equal(listEntries(stageFailures).length, 6, 'every entry stays');

  t.same(removed[4], { entries: 6, blobs: 5, bytes: sizes.photoA + sizes.photoB + DETECTION.length + sizes.crop + orphan.length }, '--all: everything');
  t.same(listEntries(all), [], 'no entry left');
  t.same(blobFiles(all), [], 'no blob left');

  const sentence = await runCli('cache', 'prune', copy('sentence'), '--stage', 'detectFace');
  t.equal(sentence.code, 0, 'prune without --json exits with 0', { stderr: sentence.stderr });
  t.match(sentence.stdout, /^removed 0 entries and 1 blob files \(\d+ B\) from /);
  t.match(sentence.stdout, 'the cache has no stage "detectFace"; its stages are: detectFaces, readImages, similarityAlign');
});

t.test('cache prune by age keeps newer entries', async (t) => {
  const dir = path.join(t.testdir({}), 'cache');
  const cache = ArtifactCache.open(dir);
  const keyOf = (input: string): string => ArtifactCache.key({ stage: 'detectFaces', version: 1, params: {}, input });
  for (const text of ['written ten days ago', 'written today']) cache.put(keyOf(sha256Hex(text)), Buffer.from(text), { stage: 'detectFaces' });
  cache.putFailure(keyOf('c'), 'no face found', { stage: 'detectFaces' });
  cache.close();
  // Backdates two entries, as if written ten days ago.
  const db = new Database(path.join(dir, 'index.sqlite'));
  const backdated = db
    .prepare('UPDATE entries SET created_at = created_at - ? WHERE key IN (?, ?)')
    .run(10 * 86_400_000, keyOf(sha256Hex('written ten days ago')), keyOf('c')).changes;
  db.close();
  t.equal(backdated, 2, 'two entries backdated');

  const result = await runCli('cache', 'prune', dir, '--older-than', '7', '--json');
  t.equal(result.code, 0, 'prune --older-than exits with 0', { stderr: result.stderr });
  t.same(JSON.parse(result.stdout).removed, { entries: 2, blobs: 1, bytes: 'written ten days ago'.length }, 'the backdated entries and their blob');
  t.same(listEntries(dir), [{ stage: 'detectFaces', kind: 'artifact' }], 'the entry of today stays');

  const failuresOnly = await runCli('cache', 'prune', dir, '--older-than', '0.5', '--failures', '--json');
  t.same(JSON.parse(failuresOnly.stdout).removed, { entries: 0, blobs: 0, bytes: 0 }, 'no failure is older than half a day');
});

t.test('cache prune rejects invalid options', async (t) => {
  const dir = path.join(t.testdir({}), 'cache');
  await buildCache(dir);

  const both = await runCli('cache', 'prune', dir, '--all', '--stage', 'readImages');
  t.equal(both.code, 1, '--all with a filter: exit code 1');
  t.match(both.stderr, '--all removes every entry and takes no --stage, --failures or --older-than');
  t.equal(listEntries(dir).length, 6, 'nothing removed');

  for (const days of ['0', '-1', 'week']) {
    const result = await runCli('cache', 'prune', dir, '--older-than', days);
    t.not(result.code, 0, `--older-than ${days} rejected`);
    t.match(result.stderr, `expected a number of days greater than 0, such as 30 or 0.5, got "${days}"`);
  }
});
