import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';

import { pino, type Logger } from 'pino';
import t, { type Test } from 'tap';
import { create as createTar, Header } from 'tar';

import { formatFetchResult } from '../commands/fetch.ts';
import { fetchDataset, LFW_FILES, UNPACK_RECORD, type ExpectedFile } from '../datasets/fetch.ts';
import { lfwPaths } from '../lib/paths.ts';

const cli = path.resolve('bin/sphereface.js');
const IMAGES = ['Aaron_Eckhart/Aaron_Eckhart_0001.jpg', 'Abel_Pacheco/Abel_Pacheco_0001.jpg', 'Abel_Pacheco/Abel_Pacheco_0002.jpg', 'Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg'];
const PAIRS = Buffer.from('1\t2\nAbel_Pacheco\t1\t2\nAaron_Eckhart\t1\tAkhmed_Zakayev\t1\n');
/** Where the test server drops the connection in the first response for the archive. */
const DROP_AT = 15_000;

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function readImage(id: string): Buffer {
  return fs.readFileSync(path.join(lfwPaths().images, id));
}

/** Packs the real LFW JPEGs of `IMAGES` into a gzipped tar with the layout of lfw.tgz. */
async function buildArchive(dir: string): Promise<Buffer> {
  const stage = path.join(dir, 'stage');
  for (const id of IMAGES) {
    fs.mkdirSync(path.join(stage, 'lfw', path.dirname(id)), { recursive: true });
    fs.writeFileSync(path.join(stage, 'lfw', id), readImage(id));
  }
  const file = path.join(dir, 'lfw.tgz');
  await createTar({ gzip: true, file, cwd: stage, portable: true }, ['lfw']);
  return fs.readFileSync(file);
}

interface RawEntry {
  readonly path: string;
  readonly type?: 'File' | 'SymbolicLink';
  readonly body?: Buffer;
  readonly linkpath?: string;
}

/** Writes tar blocks by hand, so that entries can have paths that the tar package would refuse to pack. */
function buildRawArchive(entries: readonly RawEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const body = entry.body ?? Buffer.alloc(0);
    const header = new Header({
      path: entry.path,
      type: entry.type ?? 'File',
      size: body.length,
      mode: 0o644,
      mtime: new Date(0),
      ...(entry.linkpath === undefined ? {} : { linkpath: entry.linkpath }),
    });
    const block = Buffer.alloc(512);
    header.encode(block, 0);
    blocks.push(block, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

interface RequestRecord {
  readonly path: string;
  readonly range: string | undefined;
  readonly status: number;
}

interface ServerOptions {
  /** Bodies by URL path. */
  readonly files: ReadonlyMap<string, Buffer>;
  /** Destroy the socket after `bytes` body bytes in the first `times` responses for `path`. */
  readonly drop?: { readonly path: string; readonly bytes: number; times: number };
  /** Respond to every request with 200 and the whole body, as a server without Range support does. */
  readonly ignoreRange?: boolean;
  /** Redirect every path under this prefix to the same path under /mirror/. */
  readonly redirectFrom?: string;
}

interface TestServer {
  readonly url: string;
  readonly requests: RequestRecord[];
}

/** Starts an HTTP server on 127.0.0.1 with a free port. The test closes it at teardown. */
async function startServer(t: Test, options: ServerOptions): Promise<TestServer> {
  const requests: RequestRecord[] = [];
  const server = http.createServer((request, response) => {
    const urlPath = new URL(request.url ?? '/', 'http://127.0.0.1').pathname;
    const range = request.headers.range;
    if (options.redirectFrom !== undefined && urlPath.startsWith(options.redirectFrom)) {
      requests.push({ path: urlPath, range, status: 301 });
      response.writeHead(301, { Location: `/mirror/${urlPath.slice(options.redirectFrom.length)}` }).end();
      return;
    }
    const body = options.files.get(urlPath);
    if (body === undefined) {
      requests.push({ path: urlPath, range, status: 404 });
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
      return;
    }

    let start = 0;
    const match = /^bytes=(\d+)-$/.exec(range ?? '');
    if (match !== null && options.ignoreRange !== true) start = Number(match[1]);
    if (start >= body.length && start > 0) {
      requests.push({ path: urlPath, range, status: 416 });
      response.writeHead(416, { 'Content-Range': `bytes */${body.length}` }).end();
      return;
    }
    const status = start > 0 ? 206 : 200;
    requests.push({ path: urlPath, range, status });
    const slice = body.subarray(start);
    response.writeHead(status, {
      'Content-Length': slice.length,
      'Accept-Ranges': options.ignoreRange === true ? 'none' : 'bytes',
      ...(status === 206 ? { 'Content-Range': `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
    });

    const drop = options.drop;
    if (drop !== undefined && drop.path === urlPath && drop.times > 0) {
      drop.times--;
      // Give the client time to read the bytes before the connection goes away.
      response.write(slice.subarray(0, drop.bytes), () => setTimeout(() => response.socket?.destroy(), 100));
      return;
    }
    response.end(slice);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/mirror/lfw/`, requests };
}

interface CapturedLog {
  readonly logger: Logger;
  readonly lines: Array<Record<string, unknown>>;
}

function captureLog(): CapturedLog {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of String(chunk).split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  return { logger: pino({ level: 'debug', base: undefined }, sink), lines };
}

interface Fixture {
  readonly archive: Buffer;
  readonly checksums: Record<string, ExpectedFile>;
  readonly files: Map<string, Buffer>;
}

async function fixture(t: Test): Promise<Fixture> {
  const archive = await buildArchive(t.testdir({}));
  return {
    archive,
    checksums: { 'lfw.tgz': { sha256: sha256(archive) }, 'pairs.txt': { sha256: sha256(PAIRS) } },
    files: new Map([
      ['/mirror/lfw/lfw.tgz', archive],
      ['/mirror/lfw/pairs.txt', PAIRS],
    ]),
  };
}

function archiveRequests(server: TestServer): RequestRecord[] {
  return server.requests.filter((request) => request.path.endsWith('/lfw.tgz'));
}

/** Lists what a fetch may leave behind besides lfw/ and lfw-meta/: part files, the archive, unpack folders. */
function leftovers(dataDir: string): string[] {
  if (!fs.existsSync(dataDir)) return [];
  const names = [...fs.readdirSync(dataDir), ...(fs.existsSync(path.join(dataDir, 'lfw-meta')) ? fs.readdirSync(path.join(dataDir, 'lfw-meta')) : [])];
  return names.filter((name) => name.endsWith('.part') || name === 'lfw.tgz' || name.includes('-unpack-')).sort();
}

function assertImagesInstalled(t: Test, dataDir: string): void {
  for (const id of IMAGES) {
    const installed = path.join(dataDir, 'lfw', id);
    t.ok(fs.existsSync(installed), `${id} is installed`);
    if (fs.existsSync(installed)) t.ok(fs.readFileSync(installed).equals(readImage(id)), `${id} is byte-identical to the original`);
  }
}

t.test('fetch installs images and pairs', async (t) => {
  const { archive, checksums, files } = await fixture(t);
  const server = await startServer(t, { files });
  const dataDir = path.join(t.testdir({}), 'data');
  const { logger, lines } = captureLog();

  const result = await fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, logger });

  t.equal(result.upToDate, false);
  t.same(
    result.items.map(({ name, status, bytesReceived }) => ({ name, status, bytesReceived })),
    [
      { name: 'pairs.txt', status: 'installed', bytesReceived: PAIRS.length },
      { name: 'lfw.tgz', status: 'installed', bytesReceived: archive.length },
    ],
  );
  assertImagesInstalled(t, dataDir);
  t.ok(fs.readFileSync(path.join(dataDir, 'lfw-meta', 'pairs.txt')).equals(PAIRS), 'pairs.txt is byte-identical to the served file');
  t.same(leftovers(dataDir), [], 'no archive, part file or unpack folder is left');

  const record = JSON.parse(fs.readFileSync(path.join(dataDir, 'lfw', UNPACK_RECORD), 'utf8')) as Record<string, unknown>;
  const imageBytes = IMAGES.reduce((sum, id) => sum + readImage(id).length, 0);
  t.same(record, { archive: 'lfw.tgz', sha256: sha256(archive), files: IMAGES.length, bytes: imageBytes });

  const progress = lines.filter((line) => line['file'] === 'lfw.tgz' && typeof line['percent'] === 'number');
  t.equal(progress.at(-1)?.['percent'], 100, 'the last progress line of the archive reports 100 %');
  t.equal(progress.at(-1)?.['total'], archive.length);
  t.equal(
    formatFetchResult(result),
    [
      `lfw: installed in ${dataDir}`,
      `pairs.txt: downloaded 0.0 MiB, verified and installed (${path.join(dataDir, 'lfw-meta', 'pairs.txt')})`,
      `lfw.tgz: downloaded ${(archive.length / 2 ** 20).toFixed(1)} MiB, verified and installed (${path.join(dataDir, 'lfw')})`,
    ].join('\n'),
  );
});

t.test('rerun downloads nothing', async (t) => {
  const { checksums, files } = await fixture(t);
  const server = await startServer(t, { files });
  const dataDir = path.join(t.testdir({}), 'data');
  await fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums });
  const requestsBefore = server.requests.length;
  const { logger, lines } = captureLog();

  const result = await fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, logger });

  t.equal(result.upToDate, true);
  t.same(result.items.map((item) => item.status), ['present', 'present']);
  t.equal(server.requests.length, requestsBefore, 'the server sees no request');
  t.equal(formatFetchResult(result), `lfw: already installed and verified in ${dataDir}; nothing to do`);
  t.equal(archiveRequests(server).length, 1, 'the archive was requested once, by the first run');
  t.ok(lines.some((line) => String(line['msg']).includes('nothing to do')), 'the log says that there is nothing to do');
  assertImagesInstalled(t, dataDir);
});

t.test('rerun after a deleted image fetches again', async (t) => {
  const { checksums, files } = await fixture(t);
  const server = await startServer(t, { files });
  const dataDir = path.join(t.testdir({}), 'data');
  await fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums });
  fs.rmSync(path.join(dataDir, 'lfw', IMAGES[0] as string));

  const result = await fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, logger: captureLog().logger });

  t.same(result.items.map((item) => item.status), ['present', 'installed']);
  t.equal(archiveRequests(server).length, 2);
  assertImagesInstalled(t, dataDir);
});

t.test('bad checksum is rejected', async (t) => {
  const { archive, checksums, files } = await fixture(t);
  const server = await startServer(t, { files });
  const dataDir = path.join(t.testdir({}), 'data');
  const wrong = sha256(Buffer.from('not the archive'));

  await t.rejects(
    fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums: { ...checksums, 'lfw.tgz': { sha256: wrong } }, logger: captureLog().logger }),
    { message: new RegExp(`checksum mismatch for lfw\\.tgz downloaded from ${server.url}lfw\\.tgz: expected SHA-256 ${wrong}, got ${sha256(archive)}`) },
  );
  t.notOk(fs.existsSync(path.join(dataDir, 'lfw.tgz.part')), 'the part file is deleted');
  t.notOk(fs.existsSync(path.join(dataDir, 'lfw')), 'nothing is unpacked');
  t.same(leftovers(dataDir), []);
});

t.test('wrong size is rejected', async (t) => {
  const { archive, checksums, files } = await fixture(t);
  const server = await startServer(t, { files });
  const dataDir = path.join(t.testdir({}), 'data');
  const expected = { sha256: sha256(archive), bytes: archive.length - 1 };

  await t.rejects(fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums: { ...checksums, 'lfw.tgz': expected }, logger: captureLog().logger }), {
    message: new RegExp(`^checksum mismatch for lfw\\.tgz .*: expected ${expected.bytes} bytes, got ${archive.length}\\. `),
  });
  t.same(leftovers(dataDir), []);
  t.notOk(fs.existsSync(path.join(dataDir, 'lfw')));
});

t.test('dropped connection leaves a part file that a rerun resumes', async (t) => {
  const { archive, checksums, files } = await fixture(t);
  const server = await startServer(t, { files, drop: { path: '/mirror/lfw/lfw.tgz', bytes: DROP_AT, times: 1 } });
  const dataDir = path.join(t.testdir({}), 'data');
  const part = path.join(dataDir, 'lfw.tgz.part');

  await t.rejects(fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, retries: 0, logger: captureLog().logger }), {
    message: new RegExp(`download of ${server.url}lfw\\.tgz failed after 1 attempt: .*${DROP_AT} bytes are kept in ${part}`),
  });
  t.equal(fs.statSync(part).size, DROP_AT, 'the part file holds the bytes received');
  t.ok(fs.readFileSync(part).equals(archive.subarray(0, DROP_AT)), 'the part file is the start of the archive');
  t.notOk(fs.existsSync(path.join(dataDir, 'lfw')));

  const result = await fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, logger: captureLog().logger });

  const requests = archiveRequests(server);
  t.equal(requests.length, 2);
  t.equal(requests[1]?.range, `bytes=${DROP_AT}-`, 'the rerun asks for the remaining bytes');
  t.equal(requests[1]?.status, 206);
  t.equal(result.items[1]?.bytesReceived, archive.length - DROP_AT);
  assertImagesInstalled(t, dataDir);
  t.same(leftovers(dataDir), []);
});

t.test('dropped connection is retried within a run', async (t) => {
  const { archive, checksums, files } = await fixture(t);
  const server = await startServer(t, { files, drop: { path: '/mirror/lfw/lfw.tgz', bytes: DROP_AT, times: 2 } });
  const dataDir = path.join(t.testdir({}), 'data');
  const { logger, lines } = captureLog();

  const result = await fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, retries: 2, retryDelayMs: 0, logger });

  const requests = archiveRequests(server);
  t.same(
    requests.map((request) => request.range),
    [undefined, `bytes=${DROP_AT}-`, `bytes=${2 * DROP_AT}-`],
    'each retry resumes after the bytes on disk',
  );
  t.equal(result.items[1]?.bytesReceived, archive.length);
  const retries = lines.filter((line) => line['level'] === 40 && String(line['msg']).includes('connection dropped'));
  t.same(
    retries.map((line) => ({ attempt: line['attempt'], bytesOnDisk: line['bytesOnDisk'], url: line['url'] })),
    [
      { attempt: 1, bytesOnDisk: DROP_AT, url: `${server.url}lfw.tgz` },
      { attempt: 2, bytesOnDisk: 2 * DROP_AT, url: `${server.url}lfw.tgz` },
    ],
    'each retry is logged as a warning with the attempt and the bytes on disk',
  );
  assertImagesInstalled(t, dataDir);
});

t.test('server that ignores Range gets a full download', async (t) => {
  const { archive, checksums, files } = await fixture(t);
  const server = await startServer(t, { files, ignoreRange: true, drop: { path: '/mirror/lfw/lfw.tgz', bytes: DROP_AT, times: 1 } });
  const dataDir = path.join(t.testdir({}), 'data');

  const result = await fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, retryDelayMs: 0, logger: captureLog().logger });

  const requests = archiveRequests(server);
  t.same(
    requests.map(({ range, status }) => ({ range, status })),
    [
      { range: undefined, status: 200 },
      { range: `bytes=${DROP_AT}-`, status: 200 },
    ],
  );
  t.equal(result.items[1]?.bytesReceived, DROP_AT + archive.length);
  assertImagesInstalled(t, dataDir);
  t.same(leftovers(dataDir), []);
});

t.test('complete part file is verified without a body', async (t) => {
  const { archive, checksums, files } = await fixture(t);
  const server = await startServer(t, { files });
  const dataDir = path.join(t.testdir({}), 'data');
  fs.mkdirSync(dataDir);
  fs.writeFileSync(path.join(dataDir, 'lfw.tgz.part'), archive);

  const result = await fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, logger: captureLog().logger });

  t.same(archiveRequests(server).map(({ range, status }) => ({ range, status })), [{ range: `bytes=${archive.length}-`, status: 416 }]);
  t.equal(result.items[1]?.bytesReceived, 0);
  assertImagesInstalled(t, dataDir);
});

t.test('redirect is followed', async (t) => {
  const { checksums, files } = await fixture(t);
  const server = await startServer(t, { files, redirectFrom: '/old/' });
  const dataDir = path.join(t.testdir({}), 'data');

  await fetchDataset('lfw', { dataDir, baseUrl: server.url.replace('/mirror/', '/old/'), checksums, logger: captureLog().logger });

  t.same(
    server.requests.map(({ path: requested, status }) => ({ path: requested, status })),
    [
      { path: '/old/lfw/pairs.txt', status: 301 },
      { path: '/mirror/lfw/pairs.txt', status: 200 },
      { path: '/old/lfw/lfw.tgz', status: 301 },
      { path: '/mirror/lfw/lfw.tgz', status: 200 },
    ],
  );
  assertImagesInstalled(t, dataDir);
});

t.test('HTTP 404 names the URL', async (t) => {
  const { checksums } = await fixture(t);
  const server = await startServer(t, { files: new Map() });
  const dataDir = path.join(t.testdir({}), 'data');

  await t.rejects(fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, logger: captureLog().logger }), {
    message: `GET ${server.url}pairs.txt failed with HTTP 404 Not Found`,
  });
  t.same(leftovers(dataDir), []);
});

t.test('unsafe archive entries are rejected', async (t) => {
  const root = t.testdir({});
  const jpeg = readImage(IMAGES[0] as string);
  const cases: Array<{ name: string; entry: RawEntry; reason: string }> = [
    { name: 'parent folder', entry: { path: '../escape.txt', body: Buffer.from('x') }, reason: 'contains ".."' },
    { name: 'parent inside lfw', entry: { path: 'lfw/../../escape.txt', body: Buffer.from('x') }, reason: 'contains ".."' },
    { name: 'absolute path', entry: { path: path.join(root, 'absolute-escape.txt'), body: Buffer.from('x') }, reason: 'is an absolute path' },
    { name: 'symbolic link', entry: { path: 'lfw/Link', type: 'SymbolicLink', linkpath: '/etc' }, reason: 'is a SymbolicLink entry' },
  ];

  for (const { name, entry, reason } of cases) {
    const archive = buildRawArchive([{ path: `lfw/${IMAGES[0]}`, body: jpeg }, entry, { path: `lfw/${IMAGES[1]}`, body: readImage(IMAGES[1] as string) }]);
    const server = await startServer(t, {
      files: new Map([
        ['/mirror/lfw/lfw.tgz', archive],
        ['/mirror/lfw/pairs.txt', PAIRS],
      ]),
    });
    const dataDir = path.join(root, name.replaceAll(' ', '-'), 'data');
    const checksums = { 'lfw.tgz': { sha256: sha256(archive) }, 'pairs.txt': { sha256: sha256(PAIRS) } };

    await t.rejects(
      fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, logger: captureLog().logger }),
      { message: new RegExp(`^${escapeRegExp(`${path.join(dataDir, 'lfw.tgz')}: entry "${entry.path}" ${reason}`)}.*nothing was unpacked$`) },
      `${name}: the archive is rejected`,
    );
    t.notOk(fs.existsSync(path.join(dataDir, 'lfw')), `${name}: no lfw/ folder`);
    t.notOk(fs.existsSync(path.join(dataDir, 'escape.txt')), `${name}: nothing written beside the data folder's contents`);
    t.notOk(fs.existsSync(path.join(path.dirname(dataDir), 'escape.txt')), `${name}: nothing written outside the data folder`);
    t.notOk(fs.existsSync(path.join(root, 'absolute-escape.txt')), `${name}: nothing written at the absolute path`);
    t.same(
      leftovers(dataDir).filter((file) => file !== 'lfw.tgz'),
      [],
      `${name}: no unpack folder is left`,
    );
  }
});

t.test('existing folder without a record is kept', async (t) => {
  const { checksums, files } = await fixture(t);
  const server = await startServer(t, { files });
  const dataDir = path.join(t.testdir({}), 'data');
  fs.mkdirSync(path.join(dataDir, 'lfw', 'Someone'), { recursive: true });
  fs.writeFileSync(path.join(dataDir, 'lfw', 'Someone', 'Someone_0001.jpg'), 'own image');

  await t.rejects(fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, logger: captureLog().logger }), {
    message: `${path.join(dataDir, 'lfw')} exists but was not unpacked by this command (it has no ${UNPACK_RECORD}). Run with --force to replace it, or pass another data folder`,
  });
  t.equal(archiveRequests(server).length, 0, 'the archive is not downloaded');
  t.ok(fs.existsSync(path.join(dataDir, 'lfw', 'Someone', 'Someone_0001.jpg')), 'the folder is untouched');

  const result = await fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, force: true, logger: captureLog().logger });

  t.same(result.items.map((item) => item.status), ['installed', 'installed'], 'force downloads both files again');
  t.notOk(fs.existsSync(path.join(dataDir, 'lfw', 'Someone')), 'force replaces the folder');
  assertImagesInstalled(t, dataDir);
  t.same(leftovers(dataDir), []);
});

t.test('existing pairs file with other content is kept', async (t) => {
  const { checksums, files } = await fixture(t);
  const server = await startServer(t, { files });
  const dataDir = path.join(t.testdir({}), 'data');
  const pairsFile = path.join(dataDir, 'lfw-meta', 'pairs.txt');
  fs.mkdirSync(path.dirname(pairsFile), { recursive: true });
  fs.writeFileSync(pairsFile, 'edited\n');

  await t.rejects(fetchDataset('lfw', { dataDir, baseUrl: server.url, checksums, logger: captureLog().logger }), {
    message: new RegExp(`${pairsFile} exists but is not the expected pairs\\.txt: expected SHA-256 ${sha256(PAIRS)}, got ${sha256(Buffer.from('edited\n'))}\\. Run with --force`),
  });
  t.equal(fs.readFileSync(pairsFile, 'utf8'), 'edited\n');
});

interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function runCli(...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { env: { ...process.env, SPHEREFACE_LOG_FORMAT: 'json' } }, (error, stdout, stderr) => {
      let code: number | null = 0;
      if (error !== null) code = typeof error.code === 'number' ? error.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

t.test('fetch command checks the official checksums', async (t) => {
  // The real pairs.txt verifies against the official table, but a small test archive cannot.
  const realPairs = fs.readFileSync(lfwPaths().pairs);
  const { archive, files } = await fixture(t);
  files.set('/mirror/lfw/pairs.txt', realPairs);
  const server = await startServer(t, { files });
  const dataDir = path.join(t.testdir({}), 'data');

  const run = await runCli('fetch', 'lfw', '--data', dataDir, '--base-url', server.url);

  t.equal(run.code, 1, 'exits with 1', { stderr: run.stderr });
  t.equal(run.stdout, '');
  t.match(run.stderr, `checksum mismatch for lfw.tgz downloaded from ${server.url}lfw.tgz`);
  t.match(run.stderr, `expected SHA-256 ${LFW_FILES['lfw.tgz']?.sha256}, got ${sha256(archive)}`);
  t.match(run.stderr, 'pairs.txt downloaded and verified');
  t.ok(fs.readFileSync(path.join(dataDir, 'lfw-meta', 'pairs.txt')).equals(realPairs), 'the real pairs.txt is installed');
  t.same(leftovers(dataDir), []);
  t.notOk(fs.existsSync(path.join(dataDir, 'lfw')));
});

t.test('fetch command reports HTTP 404', async (t) => {
  const server = await startServer(t, { files: new Map() });
  const dataDir = path.join(t.testdir({}), 'data');

  const run = await runCli('fetch', 'lfw', '--data', dataDir, '--base-url', server.url);

  t.equal(run.code, 1);
  t.match(run.stderr, `GET ${server.url}pairs.txt failed with HTTP 404 Not Found`);
});
