import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import Database from 'better-sqlite3';
import t from 'tap';

import { ArtifactCache, canonicalJson, type KeyParts } from '../lib/artifactCache.ts';
import { log } from '../lib/log.ts';

const sha256 = (bytes: Uint8Array | string): string => createHash('sha256').update(bytes).digest('hex');

/** Lists every file under `dir`, as sorted relative paths. */
function listFiles(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((name) => fs.statSync(path.join(dir, name)).isFile())
    .sort();
}

const tempFiles = (dir: string): string[] => listFiles(path.join(dir, 'blobs')).filter((name) => path.basename(name).startsWith('.tmp-'));

const BASE: KeyParts = { stage: 'align', version: 1, params: { size: [112, 96], scale: 1 }, input: sha256('image'), upstream: ['u1', 'u2'] };

t.test('canonical JSON sorts keys at every depth', async (t) => {
  t.equal(canonicalJson({ b: [1, { d: 1, c: 'x' }], a: null, e: undefined }), '{"a":null,"b":[1,{"c":"x","d":1}]}');
  t.equal(canonicalJson({ x: 1, y: 2 }), canonicalJson({ y: 2, x: 1 }));
});

t.test('canonical JSON rejects non-JSON values', async (t) => {
  t.throws(() => canonicalJson({ a: Number.NaN }), /\$\.a = NaN.*finite number/);
  t.throws(() => canonicalJson({ when: new Date(0) }), /\$\.when \(a Date\)/);
  t.throws(() => canonicalJson([1, undefined]), /\$\[1\] = undefined/);
  t.throws(() => canonicalJson({ n: 1n }), /bigint/);
  t.throws(() => canonicalJson({ v: new Float32Array(2) }), /Float32Array/);
});

t.test('key ignores object key order', async (t) => {
  const reordered: KeyParts = { upstream: ['u1', 'u2'], input: BASE.input, params: { scale: 1, size: [112, 96] }, version: 1, stage: 'align' };
  t.equal(ArtifactCache.key(reordered), ArtifactCache.key(BASE));
  t.match(ArtifactCache.key(BASE), /^[0-9a-f]{64}$/);
});

t.test('key changes with every part', async (t) => {
  const base = ArtifactCache.key(BASE);
  const variants: Array<[string, KeyParts]> = [
    ['stage', { ...BASE, stage: 'detect' }],
    ['version', { ...BASE, version: 2 }],
    ['version type', { ...BASE, version: '1' }],
    ['params value', { ...BASE, params: { size: [112, 96], scale: 2 } }],
    ['params nested', { ...BASE, params: { size: [96, 112], scale: 1 } }],
    ['input', { ...BASE, input: sha256('other image') }],
    ['upstream order', { ...BASE, upstream: ['u2', 'u1'] }],
    ['upstream missing', { ...BASE, upstream: undefined }],
  ];
  const seen = new Set([base]);
  for (const [name, parts] of variants) {
    const key = ArtifactCache.key(parts);
    t.not(key, base, name);
    seen.add(key);
  }
  t.equal(seen.size, variants.length + 1, 'all variants give distinct keys');
});

t.test('key rejects an empty stage or input', async (t) => {
  t.throws(() => ArtifactCache.key({ ...BASE, stage: '' }), /non-empty stage name/);
  t.throws(() => ArtifactCache.key({ ...BASE, input: '' }), /content hash/);
});

t.test('put and get round trip', async (t) => {
  const dir = t.testdir();
  const cache = ArtifactCache.open(dir);
  t.teardown(() => cache.close());

  const bytes = new Uint8Array([0, 1, 2, 250, 255, 7]);
  const key = ArtifactCache.key(BASE);
  t.equal(cache.get(key), undefined, 'miss before put');
  cache.put(key, bytes, { stage: 'align', meta: { width: 96, height: 112 } });

  const entry = cache.get(key);
  t.equal(entry?.kind, 'artifact');
  if (entry?.kind !== 'artifact') return;
  t.same([...entry.bytes], [...bytes]);
  t.same(entry.meta, { width: 96, height: 112 });

  const hash = sha256(bytes);
  t.ok(fs.existsSync(path.join(dir, 'blobs', hash.slice(0, 2), hash.slice(2))), 'blob named by its SHA-256');
  t.ok(fs.existsSync(path.join(dir, 'index.sqlite')));
  t.equal(tempFiles(dir).length, 0, 'no temporary file left');

  cache.close();
  const reopened = ArtifactCache.open(dir);
  const again = reopened.get(key);
  t.equal(again?.kind, 'artifact', 'survives reopening');
  reopened.close();
});

t.test('index uses WAL mode', async (t) => {
  const dir = t.testdir();
  ArtifactCache.open(dir).close();
  const db = new Database(path.join(dir, 'index.sqlite'), { readonly: true });
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  db.close();
});

t.test('equal bytes share one blob', async (t) => {
  const dir = t.testdir();
  const cache = ArtifactCache.open(dir);
  t.teardown(() => cache.close());

  const bytes = new TextEncoder().encode('same content');
  cache.put('k1', bytes, { stage: 'a' });
  cache.put('k2', bytes, { stage: 'b' });
  cache.put('k3', new TextEncoder().encode('other'), { stage: 'b' });
  t.equal(listFiles(path.join(dir, 'blobs')).length, 2);

  const stats = cache.stats();
  t.equal(stats.entries, 3);
  t.equal(stats.blobs, 2);
  t.equal(stats.blobBytes, 12 + 5);
  t.same(stats.byStage['a'], { artifacts: 1, artifactBytes: 12, failures: 0 });
  t.same(stats.byStage['b'], { artifacts: 2, artifactBytes: 17, failures: 0 });
});

t.test('put replaces an entry', async (t) => {
  const dir = t.testdir();
  const cache = ArtifactCache.open(dir);
  t.teardown(() => cache.close());

  cache.put('k', new Uint8Array([1]), { stage: 's' });
  cache.put('k', new Uint8Array([2, 3]), { stage: 's', meta: 'v2' });
  const entry = cache.get('k');
  t.same(entry?.kind === 'artifact' ? [...entry.bytes] : undefined, [2, 3]);
  t.equal(cache.stats().entries, 1);

  cache.putFailure('k', 'no face found', { stage: 's' });
  t.same(cache.get('k'), { kind: 'failure', reason: 'no face found' });
});

/** Stores one artifact and returns the path of its blob. */
function storeOne(cache: ArtifactCache, key: string, text: string): string {
  const bytes = new TextEncoder().encode(text);
  cache.put(key, bytes, { stage: 's' });
  return cache.blobPath(sha256(bytes));
}

t.test('corrupt blob is detected and dropped', async (t) => {
  const dir = t.testdir();
  const cache = ArtifactCache.open(dir);
  t.teardown(() => cache.close());
  const warnings = t.capture(log, 'warn');

  const file = storeOne(cache, 'k', 'payload of the artifact');
  cache.put('shares-blob', fs.readFileSync(file), { stage: 's' });
  const bytes = fs.readFileSync(file);
  bytes[5] = (bytes[5] as number) ^ 0x01;
  fs.writeFileSync(file, bytes);

  t.equal(cache.get('k'), undefined, 'reads as a miss');
  t.equal(cache.has('k'), false, 'entry dropped');
  t.equal(cache.has('shares-blob'), false, 'entry sharing the blob dropped too');
  t.notOk(fs.existsSync(file), 'damaged blob deleted');
  const logged = warnings();
  t.equal(logged.length, 1, 'one warning logged');
  t.match(String(logged[0]?.args[1]), /hashes to/);

  storeOne(cache, 'k', 'payload of the artifact');
  const entry = cache.get('k');
  t.equal(entry?.kind === 'artifact' ? new TextDecoder().decode(entry.bytes) : undefined, 'payload of the artifact', 'recomputed value reads back');
});

t.test('truncated blob is detected and dropped', async (t) => {
  const dir = t.testdir();
  const cache = ArtifactCache.open(dir);
  t.teardown(() => cache.close());
  const warnings = t.capture(log, 'warn');

  const file = storeOne(cache, 'k', 'a longer payload that gets cut');
  fs.truncateSync(file, 10);
  t.equal(cache.get('k'), undefined);
  t.equal(cache.has('k'), false);
  t.match(String(warnings()[0]?.args[1]), /10 bytes; the index says 30/);
});

t.test('missing blob is detected and dropped', async (t) => {
  const dir = t.testdir();
  const cache = ArtifactCache.open(dir);
  t.teardown(() => cache.close());
  const warnings = t.capture(log, 'warn');

  const file = storeOne(cache, 'k', 'payload');
  fs.rmSync(file);
  t.equal(cache.get('k'), undefined);
  t.equal(cache.has('k'), false);
  t.match(String(warnings()[0]?.args[1]), /missing/);

  storeOne(cache, 'k', 'payload');
  t.ok(fs.existsSync(file), 'put writes the blob again');
  t.equal(cache.get('k')?.kind, 'artifact');
});

t.test('open removes temporary files of dead writers', async (t) => {
  const dir = t.testdir();
  ArtifactCache.open(dir).close();
  const folder = path.join(dir, 'blobs', 'ab');
  fs.mkdirSync(folder, { recursive: true });
  // Linux pids stay below 2^22, so 999999999 names no running process.
  fs.writeFileSync(path.join(folder, '.tmp-999999999-0a0b0c'), 'half a blob');
  fs.writeFileSync(path.join(folder, '.tmp-garbage'), 'half a blob');
  const ownTemp = path.join(folder, `.tmp-${process.pid}-0d0e0f`);
  fs.writeFileSync(ownTemp, 'a write in progress');

  ArtifactCache.open(dir).close();
  t.same(tempFiles(dir), [path.join('ab', `.tmp-${process.pid}-0d0e0f`)], 'only the live writer’s file remains');
});

t.test('failure records', async (t) => {
  const dir = t.testdir();
  const cache = ArtifactCache.open(dir);
  t.teardown(() => cache.close());

  cache.putFailure('f1', 'no face found', { stage: 'detect' });
  cache.putFailure('f2', 'image too large', { stage: 'read' });
  t.same(cache.get('f1'), { kind: 'failure', reason: 'no face found' });
  t.same(cache.get('f2'), { kind: 'failure', reason: 'image too large' });
  t.equal(listFiles(path.join(dir, 'blobs')).length, 0, 'failures need no blob');

  const stats = cache.stats();
  t.equal(stats.failures, 2);
  t.same(stats.byStage['detect'], { artifacts: 0, artifactBytes: 0, failures: 1 });
});

t.test('prune by stage removes rows and orphaned blobs', async (t) => {
  const dir = t.testdir();
  const cache = ArtifactCache.open(dir);
  t.teardown(() => cache.close());

  const shared = new TextEncoder().encode('shared');
  const onlyA = new TextEncoder().encode('only in a');
  cache.put('a1', shared, { stage: 'a' });
  cache.put('a2', onlyA, { stage: 'a' });
  cache.put('b1', shared, { stage: 'b' });
  cache.putFailure('a3', 'bad', { stage: 'a' });

  const result = cache.prune({ stage: 'a' });
  t.same(result, { entries: 3, blobs: 1, bytes: onlyA.length });
  t.same(cache.list().map((e) => e.key), ['b1']);
  t.ok(fs.existsSync(cache.blobPath(sha256(shared))), 'blob still referenced by stage b kept');
  t.notOk(fs.existsSync(cache.blobPath(sha256(onlyA))));
});

t.test('prune by age', async (t) => {
  const dir = t.testdir();
  const cache = ArtifactCache.open(dir);
  t.teardown(() => cache.close());

  cache.put('k1', new Uint8Array([1, 2, 3]), { stage: 's' });
  cache.put('k2', new Uint8Array([4]), { stage: 's' });
  t.same(cache.prune({ olderThan: new Date(Date.now() - 60_000) }), { entries: 0, blobs: 0, bytes: 0 }, 'nothing older than a minute');
  t.same(cache.prune({ olderThan: new Date(Date.now() + 60_000), stage: 'other' }), { entries: 0, blobs: 0, bytes: 0 }, 'filters combine');
  t.same(cache.prune({ olderThan: new Date(Date.now() + 60_000) }), { entries: 2, blobs: 2, bytes: 4 });
  t.same(cache.stats(), { byStage: {}, entries: 0, failures: 0, blobs: 0, blobBytes: 0 });
  t.throws(() => cache.prune({ olderThan: new Date(Number.NaN) }), /invalid Date/);
});

t.test('prune removes a blob a crash left unindexed', async (t) => {
  const dir = t.testdir();
  const cache = ArtifactCache.open(dir);
  t.teardown(() => cache.close());

  cache.put('k', new Uint8Array([9]), { stage: 's' });
  const orphan = new TextEncoder().encode('written, never indexed');
  const file = cache.blobPath(sha256(orphan));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, orphan);

  t.same(cache.prune({ stage: 'none' }), { entries: 0, blobs: 1, bytes: orphan.length });
  t.notOk(fs.existsSync(file));
  t.equal(cache.get('k')?.kind, 'artifact');
});

t.test('open rejects another format version', async (t) => {
  const dir = t.testdir();
  ArtifactCache.open(dir).close();
  const db = new Database(path.join(dir, 'index.sqlite'));
  db.prepare("UPDATE cache_info SET value = '2' WHERE name = 'format_version'").run();
  db.close();
  t.throws(() => ArtifactCache.open(dir), /uses artifact cache format version 2, but this build reads version 1/);
});

t.test('open rejects a bad index or folder', async (t) => {
  const dir = t.testdir({ 'not-a-folder': 'text', bad: { 'index.sqlite': 'this is not SQLite' }, foreign: {} });
  t.throws(() => ArtifactCache.open(path.join(dir, 'not-a-folder')), /is a file; expected a folder/);
  t.throws(() => ArtifactCache.open(path.join(dir, 'bad')), /cannot open artifact cache index .*bad.index\.sqlite/);

  const db = new Database(path.join(dir, 'foreign', 'index.sqlite'));
  db.exec('CREATE TABLE something (x)');
  db.close();
  t.throws(() => ArtifactCache.open(path.join(dir, 'foreign')), /without an artifact cache format version/);
});

/** Content of artifact `i` in the crash test; the child script builds the same bytes. */
function crashContent(i: number): Buffer {
  const words = 250 + ((i * 7919) % 15_000);
  const bytes = Buffer.alloc(words * 4);
  for (let w = 0; w < words; w++) bytes.writeUInt32LE((Math.imul(i + 1, 2654435761) + w) >>> 0, w * 4);
  return bytes;
}

const CHILD_SCRIPT = `
import { ArtifactCache } from ${JSON.stringify(pathToFileURL(path.resolve('lib/artifactCache.ts')).href)};
${crashContent.toString()}
const [dir, start] = process.argv.slice(2);
const cache = ArtifactCache.open(dir);
for (let i = Number(start); ; i++) {
  // Every fifth artifact repeats the previous content, so shared blobs are written under load too.
  const content = crashContent(i % 5 === 4 ? i - 1 : i);
  const key = ArtifactCache.key({ stage: 'crash', version: 1, params: {}, input: String(i) });
  cache.put(key, content, { stage: 'crash', meta: { i: i % 5 === 4 ? i - 1 : i, n: i } });
  if (i === Number(start) + 20) process.stdout.write('ready\\n');
}
`;

t.test('SIGKILL during puts leaves a valid cache', async (t) => {
  const dir = t.testdir({ 'writer.ts': CHILD_SCRIPT });
  const cacheDir = path.join(dir, 'cache');
  const rounds = 4;
  let leftoverTemps = 0;

  for (let round = 0; round < rounds; round++) {
    // node --import tsx runs the script in this one process. `npx tsx` would start a wrapper
    // that forks the real writer, and a SIGKILL to the wrapper would leave the writer running.
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(dir, 'writer.ts'), cacheDir, String(round * 100_000)], {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('ready')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`writer exited with ${code} before it was killed:\n${stderr}`)));
    });
    await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 500));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    child.kill('SIGKILL');
    t.equal(await exited, 'SIGKILL', `round ${round}: writer killed`);
    leftoverTemps += tempFiles(cacheDir).length;

    const cache = ArtifactCache.open(cacheDir);
    t.same(tempFiles(cacheDir), [], `round ${round}: no temporary file after open`);
    const entries = cache.list();
    let valid = 0;
    for (const entry of entries) {
      const read = cache.get(entry.key);
      if (read?.kind !== 'artifact') continue;
      const { i, n } = read.meta as { i: number; n: number };
      const expectedKey = ArtifactCache.key({ stage: 'crash', version: 1, params: {}, input: String(n) });
      if (entry.key === expectedKey && Buffer.compare(Buffer.from(read.bytes), crashContent(i)) === 0) valid++;
    }
    t.ok(entries.length > 20, `round ${round}: ${entries.length} entries indexed`);
    t.equal(valid, entries.length, `round ${round}: every indexed entry reads back with its content`);
    const pruned = cache.prune({ stage: 'no-such-stage' });
    t.equal(cache.list().length, entries.length, `round ${round}: prune of orphans keeps every entry (${pruned.blobs} orphaned blobs removed)`);
    cache.close();
  }
  t.comment(`temporary files found right after the kills: ${leftoverTemps}`);
});
