/**
 * Downloads a dataset's files from their official addresses, verifies them against known
 * checksums and installs them into the data folder. For LFW that is `lfw/Name/Name_0001.jpg`
 * (from `lfw.tgz`) and `lfw-meta/pairs.txt`, the layout that `lib/paths.ts` describes.
 *
 * A download goes to `FILE.part`. A dropped connection leaves that file in place, and the next
 * attempt (in the same run or a later one) requests the remaining bytes with an HTTP Range
 * request. Only a file whose checksum matches is renamed into place. The archive is unpacked
 * into a temporary folder beside the target and then renamed into place, so a failed unpack
 * leaves nothing half-written.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { makeDirectory } from '../lib/makeDirectory.ts';
import { mkdir, mkdtemp, opendir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import type { Logger } from 'pino';
import { extract, type ReadEntry } from 'tar';

import { log } from '../lib/log.ts';
import { dataRoot, lfwPaths } from '../lib/paths.ts';

/** Expected content of a downloaded file. */
export interface ExpectedFile {
  /** SHA-256 of the whole file, lowercase hex. */
  readonly sha256: string;
  /** MD5 of the whole file, lowercase hex. It is checked as well when given. */
  readonly md5?: string;
  /** Size in bytes. When given, a longer `.part` file is discarded, and a shorter download is resumed. */
  readonly bytes?: number;
}

/**
 * Folder of the official LFW files at the University of Massachusetts, Amherst.
 *
 * NOTE: since early 2025 users of torchvision and TensorFlow Datasets report that this host no
 * longer resolves. `baseUrl` (`--base-url`) points the download at a mirror of the same two
 * files, and the checksums below still apply to them.
 */
export const LFW_BASE_URL = 'http://vis-www.cs.umass.edu/lfw/';

export const LFW_ARCHIVE = 'lfw.tgz';
export const LFW_PAIRS = 'pairs.txt';

/** Checksums of the official LFW files, by file name on the server. */
export const LFW_FILES: Readonly<Record<string, ExpectedFile>> = {
  [LFW_ARCHIVE]: {
    // SHA-256 and size: TensorFlow Datasets, tensorflow_datasets/url_checksums/lfw.txt.
    sha256: '055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0',
    bytes: 180_566_744,
    // MD5: torchvision, torchvision/datasets/lfw.py (file_dict["original"]).
    md5: 'a17d05bd522c52d84eca14327a23d494',
  },
  [LFW_PAIRS]: {
    // SHA-256 and size: computed from a copy of pairs.txt whose MD5 is the one below.
    sha256: 'ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592',
    bytes: 155_335,
    // MD5: torchvision, torchvision/datasets/lfw.py (checksums["pairs.txt"]).
    md5: '9f1ba174e4e1c508ff7cdf10ac338a7d',
  },
};

export const DATASET_NAMES = ['lfw'] as const;
export type DatasetName = (typeof DATASET_NAMES)[number];

/** Defaults of the tuning options of `fetchDataset`. */
export const FETCH_DEFAULTS = {
  /** Further attempts after a dropped connection, per file. Each one resumes from the bytes on disk. */
  retries: 3,
  /** Wait before retry n: n times this, in milliseconds. */
  retryDelayMs: 2_000,
  /** A connection that sends nothing for this long counts as dropped, in milliseconds. */
  idleTimeoutMs: 60_000,
  /** Time between two progress lines of one download, in milliseconds. */
  progressIntervalMs: 5_000,
} as const;

export interface FetchOptions {
  /** Data folder to install into. Default: `$SPHEREFACE_DATA`, else `./data`. */
  readonly dataDir?: string;
  /** URL of the folder that serves the files. Default: the official one (`LFW_BASE_URL`). */
  readonly baseUrl?: string;
  /**
   * Download and unpack again, and replace the installed files and folders even when they are
   * verified or were not installed by this function. Default false.
   */
  readonly force?: boolean;
  /** Expected checksums by file name on the server. An entry replaces that file's official checksums. */
  readonly checksums?: Readonly<Record<string, ExpectedFile>>;
  readonly retries?: number;
  readonly retryDelayMs?: number;
  readonly idleTimeoutMs?: number;
  readonly progressIntervalMs?: number;
  /** Logger for progress, retries and skipped steps. Default: the project's logger. */
  readonly logger?: Logger;
}

/** Outcome for one downloaded file. */
export interface FetchedItem {
  /** File name on the server. */
  readonly name: string;
  readonly url: string;
  /** The installed file or folder. */
  readonly target: string;
  /** `present`: already installed and verified, so nothing was downloaded or written. */
  readonly status: 'present' | 'installed';
  /** Bytes received over HTTP in this run, over all attempts. */
  readonly bytesReceived: number;
}

export interface FetchResult {
  readonly dataset: DatasetName;
  readonly dataDir: string;
  readonly items: readonly FetchedItem[];
  /** True when every item was present and verified, so the run changed nothing. */
  readonly upToDate: boolean;
}

/** Settings that every download of one run shares. */
interface DownloadSettings {
  readonly retries: number;
  readonly retryDelayMs: number;
  readonly idleTimeoutMs: number;
  readonly progressIntervalMs: number;
  readonly logger: Logger;
}

/**
 * Downloads, verifies and installs a dataset into the data folder. A rerun with everything
 * installed and verified downloads nothing and returns `upToDate: true`.
 */
export async function fetchDataset(name: string, options: FetchOptions = {}): Promise<FetchResult> {
  if (!(DATASET_NAMES as readonly string[]).includes(name)) {
    throw new Error(`unknown dataset "${name}"; expected one of: ${DATASET_NAMES.join(', ')}`);
  }
  const settings: DownloadSettings = {
    retries: nonNegativeInteger('retries', options.retries ?? FETCH_DEFAULTS.retries),
    retryDelayMs: nonNegativeInteger('retryDelayMs', options.retryDelayMs ?? FETCH_DEFAULTS.retryDelayMs),
    idleTimeoutMs: nonNegativeInteger('idleTimeoutMs', options.idleTimeoutMs ?? FETCH_DEFAULTS.idleTimeoutMs),
    progressIntervalMs: nonNegativeInteger('progressIntervalMs', options.progressIntervalMs ?? FETCH_DEFAULTS.progressIntervalMs),
    logger: options.logger ?? log,
  };
  const baseUrl = parseBaseUrl(options.baseUrl ?? LFW_BASE_URL);
  const dataDir = path.resolve(options.dataDir ?? dataRoot());
  const expected = { ...LFW_FILES, ...options.checksums };
  return fetchLfw(dataDir, baseUrl, expected, options.force === true, settings);
}

async function fetchLfw(
  dataDir: string,
  baseUrl: URL,
  expected: Readonly<Record<string, ExpectedFile>>,
  force: boolean,
  settings: DownloadSettings,
): Promise<FetchResult> {
  const paths = lfwPaths(dataDir);
  const expectedFile = (name: string): ExpectedFile => {
    const file = expected[name];
    if (file === undefined) throw new Error(`no checksum known for ${name}`);
    return file;
  };
  await makeDirectory(dataDir, '--data');

  const pairs = await installFile({
    name: LFW_PAIRS,
    url: new URL(LFW_PAIRS, baseUrl),
    target: paths.pairs,
    expected: expectedFile(LFW_PAIRS),
    force,
    settings,
  });
  const images = await installArchive({
    name: LFW_ARCHIVE,
    url: new URL(LFW_ARCHIVE, baseUrl),
    archive: path.join(dataDir, LFW_ARCHIVE),
    folder: path.basename(paths.images),
    target: paths.images,
    expected: expectedFile(LFW_ARCHIVE),
    force,
    settings,
  });

  const items = [pairs, images];
  const upToDate = items.every((item) => item.status === 'present');
  if (upToDate) settings.logger.info({ dataDir }, 'LFW is already installed and verified; nothing to do');
  return { dataset: 'lfw', dataDir, items, upToDate };
}

function nonNegativeInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`invalid ${name}: expected an integer ≥ 0, got ${value}`);
  return value;
}

/** Parses the base URL and adds the trailing slash that resolving file names against it needs. */
export function parseBaseUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`invalid base URL "${value}": expected an http:// or https:// URL of the folder that serves ${LFW_ARCHIVE} and ${LFW_PAIRS}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`invalid base URL "${value}": expected http:// or https://, got ${url.protocol}`);
  }
  if (!url.pathname.endsWith('/')) url.pathname = `${url.pathname}/`;
  return url;
}

// ---------------------------------------------------------------------------------------------
// Installing a single file and an archive

interface FileInstall {
  readonly name: string;
  readonly url: URL;
  readonly target: string;
  readonly expected: ExpectedFile;
  readonly force: boolean;
  readonly settings: DownloadSettings;
}

/** Downloads a single file to `target`, unless a file with the expected checksum is there. */
async function installFile(install: FileInstall): Promise<FetchedItem> {
  const { name, url, target, expected, force, settings } = install;
  const item = { name, url: url.href, target };

  if (!force && (await pathExists(target))) {
    const actual = await hashFile(target, expected.md5 !== undefined);
    const mismatches = describeMismatches(expected, actual);
    if (mismatches.length === 0) {
      settings.logger.info({ file: target }, `${name} is already installed and verified`);
      return { ...item, status: 'present', bytesReceived: 0 };
    }
    throw new Error(`${target} exists but is not the expected ${name}: ${mismatches.join('; ')}. Run with --force to replace it`);
  }

  await mkdir(path.dirname(target), { recursive: true });
  if (force) await rm(`${target}.part`, { force: true });
  const bytesReceived = await downloadVerified(name, url, target, expected, settings);
  return { ...item, status: 'installed', bytesReceived };
}

interface ArchiveInstall {
  readonly name: string;
  readonly url: URL;
  /** Path of the verified archive until it is unpacked. */
  readonly archive: string;
  /** The folder inside the archive that becomes `target`. */
  readonly folder: string;
  readonly target: string;
  readonly expected: ExpectedFile;
  readonly force: boolean;
  readonly settings: DownloadSettings;
}

/** Name of the record, inside an unpacked folder, of the archive it came from. */
export const UNPACK_RECORD = '.sphereface-fetch.json';

/** Contents of `UNPACK_RECORD`. */
interface UnpackRecord {
  readonly archive: string;
  readonly sha256: string;
  /** Regular files unpacked and their total size, the record itself excluded. */
  readonly files: number;
  readonly bytes: number;
}

/**
 * Downloads an archive and unpacks its `folder` into `target`, unless `target` contains a record
 * of an unpack of the expected archive and the files that the record counts. The archive is
 * deleted once unpacked.
 */
async function installArchive(install: ArchiveInstall): Promise<FetchedItem> {
  const { name, url, archive, folder, target, expected, force, settings } = install;
  const item = { name, url: url.href, target };

  if (!force && (await pathExists(target))) {
    const state = await checkUnpackedFolder(target, expected);
    if (state.kind === 'verified') {
      settings.logger.info({ folder: target, files: state.record.files }, `${folder}/ is already unpacked from a verified ${name}`);
      return { ...item, status: 'present', bytesReceived: 0 };
    }
    if (state.kind === 'foreign') {
      throw new Error(
        `${target} exists but was not unpacked by this command (it has no ${UNPACK_RECORD}). ` +
          'Run with --force to replace it, or pass another data folder',
      );
    }
    settings.logger.warn({ folder: target, reason: state.reason }, `${folder}/ differs from its unpack record; downloading ${name} again`);
  }

  if (force) {
    await rm(`${archive}.part`, { force: true });
    await rm(archive, { force: true });
  }
  let bytesReceived = 0;
  const kept = (await pathExists(archive)) ? describeMismatches(expected, await hashFile(archive, expected.md5 !== undefined)) : undefined;
  if (kept !== undefined && kept.length === 0) {
    settings.logger.info({ file: archive }, `${name} is already downloaded and verified`);
  } else {
    if (kept !== undefined) {
      settings.logger.warn({ file: archive, mismatches: kept }, `${archive} is not the expected ${name}; downloading it again`);
      await unlink(archive);
    }
    bytesReceived = await downloadVerified(name, url, archive, expected, settings);
  }

  await unpackInto(archive, folder, target, expected.sha256, settings.logger);
  await unlink(archive);
  return { ...item, status: 'installed', bytesReceived };
}

type FolderState =
  | { readonly kind: 'verified'; readonly record: UnpackRecord }
  | { readonly kind: 'foreign' }
  | { readonly kind: 'changed'; readonly reason: string };

/**
 * Compares an unpacked folder with its record: the archive checksum must be the expected one,
 * and the number and total size of the files must be those unpacked. File contents are not
 * hashed again, so an edit that keeps the size goes unnoticed.
 */
async function checkUnpackedFolder(folder: string, expected: ExpectedFile): Promise<FolderState> {
  const recordFile = path.join(folder, UNPACK_RECORD);
  let record: UnpackRecord;
  try {
    record = JSON.parse(await readFile(recordFile, 'utf8')) as UnpackRecord;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return { kind: 'foreign' };
    return { kind: 'changed', reason: `${recordFile} cannot be read: ${(error as Error).message}` };
  }
  if (String(record.sha256).toLowerCase() !== expected.sha256.toLowerCase()) {
    return { kind: 'changed', reason: `unpacked from an archive with SHA-256 ${String(record.sha256)}, expected ${expected.sha256}` };
  }
  const actual = await summarizeFiles(folder);
  if (actual.files !== record.files || actual.bytes !== record.bytes) {
    return { kind: 'changed', reason: `${actual.files} files of ${actual.bytes} bytes found, ${record.files} files of ${record.bytes} bytes unpacked` };
  }
  return { kind: 'verified', record };
}

/** Counts the regular files below `root` and their total size, leaving out `UNPACK_RECORD`. */
async function summarizeFiles(root: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const pending = [root];
  for (let folder = pending.pop(); folder !== undefined; folder = pending.pop()) {
    for await (const entry of await opendir(folder)) {
      const entryPath = path.join(folder, entry.name);
      if (entry.isDirectory()) {
        pending.push(entryPath);
      } else if (entry.isFile() && !(folder === root && entry.name === UNPACK_RECORD)) {
        files++;
        bytes += (await stat(entryPath)).size;
      }
    }
  }
  return { files, bytes };
}

// ---------------------------------------------------------------------------------------------
// Unpacking

const UNPACKED_TYPES = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory']);

/** Returns why an archive entry may not be unpacked, or undefined when it may. */
function unsafeEntryReason(entryPath: string, type: string): string | undefined {
  if (entryPath.startsWith('/') || entryPath.startsWith('\\') || /^[A-Za-z]:/.test(entryPath)) return 'is an absolute path';
  if (entryPath.split(/[\\/]/).includes('..')) return 'contains ".."';
  if (!UNPACKED_TYPES.has(type)) return `is a ${type} entry; only files and folders are unpacked`;
  return undefined;
}

/**
 * Unpacks `folder/` of the archive into a temporary folder beside `target`, writes the unpack
 * record into it, and renames it to `target`, replacing what was there. Entries outside
 * `folder/` are skipped. An absolute path, a ".." segment or a link rejects the whole archive.
 */
async function unpackInto(archive: string, folder: string, target: string, sha256: string, logger: Logger): Promise<void> {
  const parent = path.dirname(target);
  const prefix = `.${folder}-unpack-`;
  await removeLeftovers(parent, prefix, logger);
  const temporary = await mkdtemp(path.join(parent, prefix));
  try {
    logger.info({ archive, folder: target }, `unpacking ${path.basename(archive)}`);
    const started = Date.now();
    let rejection: string | undefined;
    let skipped = 0;
    await extract({
      file: archive,
      cwd: temporary,
      strict: true,
      preserveOwner: false,
      filter: (entryPath, entry) => {
        // After the first unsafe entry nothing more is written; the archive is rejected below.
        if (rejection !== undefined) return false;
        const reason = unsafeEntryReason(entryPath, (entry as ReadEntry).type);
        if (reason !== undefined) {
          rejection = `entry "${entryPath}" ${reason}`;
          return false;
        }
        const normalized = path.posix.normalize(entryPath);
        if (normalized === folder || normalized === `${folder}/` || normalized.startsWith(`${folder}/`)) return true;
        skipped++;
        return false;
      },
    });
    if (rejection !== undefined) {
      throw new Error(`${archive}: ${rejection}, which could write outside ${target}. The archive was rejected and nothing was unpacked`);
    }
    if (skipped > 0) logger.warn({ archive, skipped }, `skipped ${skipped} archive entries outside ${folder}/`);

    const unpacked = path.join(temporary, folder);
    if (!(await stat(unpacked).catch(() => undefined))?.isDirectory()) {
      throw new Error(`${archive} has no ${folder}/ folder; expected entries such as ${folder}/Name/Name_0001.jpg`);
    }
    const { files, bytes } = await summarizeFiles(unpacked);
    const record: UnpackRecord = { archive: path.basename(archive), sha256, files, bytes };
    await writeFile(path.join(unpacked, UNPACK_RECORD), `${JSON.stringify(record, null, 2)}\n`);
    await replaceFolder(unpacked, target, temporary);
    logger.info({ folder: target, files, bytes, seconds: Number(((Date.now() - started) / 1000).toFixed(1)) }, `unpacked ${files} files`);
  } finally {
    await rm(temporary, { recursive: true, force: true });
  }
}

/**
 * Deletes temporary unpack folders that a killed run left behind.
 *
 * NOTE: this assumes one fetch per data folder at a time. Two concurrent runs would also
 * write the same `.part` files; nothing locks against that.
 */
async function removeLeftovers(parent: string, prefix: string, logger: Logger): Promise<void> {
  for await (const entry of await opendir(parent)) {
    if (!entry.isDirectory() || !entry.name.startsWith(prefix)) continue;
    const leftover = path.join(parent, entry.name);
    logger.info({ folder: leftover }, 'removing the temporary folder of an interrupted unpack');
    await rm(leftover, { recursive: true, force: true });
  }
}

/**
 * Renames `source` to `target`. An existing `target` is first moved into `scratch` (deleted by
 * the caller), and moved back if the second rename fails.
 */
async function replaceFolder(source: string, target: string, scratch: string): Promise<void> {
  const previous = path.join(scratch, 'previous');
  const hadPrevious = await pathExists(target);
  if (hadPrevious) await rename(target, previous);
  try {
    await rename(source, target);
  } catch (error) {
    if (hadPrevious) await rename(previous, target);
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Downloading

/** A connection that closed or stalled before the whole response arrived, so the download can resume. */
class DroppedConnectionError extends Error {}

/** Error codes of a connection that broke or timed out, after which a retry can succeed. */
const RETRYABLE_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'ERR_STREAM_PREMATURE_CLOSE']);

/** Error codes for a host that cannot be reached at all, which a retry within seconds does not fix. */
const UNREACHABLE_CODES = new Set(['ENOTFOUND', 'ECONNREFUSED', 'ENETUNREACH', 'EHOSTUNREACH']);

function classifyNetworkError(error: Error, url: URL): Error {
  if (error instanceof DroppedConnectionError) return error;
  const code = (error as NodeJS.ErrnoException).code ?? '';
  if (RETRYABLE_CODES.has(code)) return new DroppedConnectionError(`${error.message} (${code})`);
  if (UNREACHABLE_CODES.has(code)) {
    return new Error(
      `failed to connect to ${url.host} for ${url.href} (${code}). Check the network, or pass --base-url with a mirror that serves ${LFW_ARCHIVE} and ${LFW_PAIRS}`,
    );
  }
  return new Error(`GET ${url.href} failed: ${error.message}`);
}

/**
 * Downloads `url` into `file` via `file.part`, resuming after dropped connections, verifies the
 * whole file and renames it into place. Returns the bytes received over all attempts.
 */
async function downloadVerified(name: string, url: URL, file: string, expected: ExpectedFile, settings: DownloadSettings): Promise<number> {
  const part = `${file}.part`;
  const received = { bytes: 0 };
  for (let attempt = 1; ; attempt++) {
    try {
      await transferOnce(name, url, part, expected, settings, received);
      break;
    } catch (error) {
      if (!(error instanceof DroppedConnectionError)) throw error;
      const bytesOnDisk = await fileSize(part);
      if (attempt > settings.retries) {
        throw new Error(
          `download of ${url.href} failed after ${attempt} ${attempt === 1 ? 'attempt' : 'attempts'}: ${error.message}. ` +
            `${bytesOnDisk} bytes are kept in ${part}; run the command again to resume`,
        );
      }
      const delayMs = settings.retryDelayMs * attempt;
      settings.logger.warn(
        { url: url.href, attempt, retries: settings.retries, bytesOnDisk, delayMs, error: error.message },
        `connection dropped while downloading ${name}; resuming from byte ${bytesOnDisk}`,
      );
      await sleep(delayMs);
    }
  }
  await verifyDownload(name, url, part, expected);
  await rename(part, file);
  settings.logger.info({ file, bytesReceived: received.bytes }, `${name} downloaded and verified`);
  return received.bytes;
}

/**
 * Makes one request for the bytes of `url` that `part` lacks and appends them, adding the bytes
 * received to `received` as they arrive. Throws DroppedConnectionError when the response ends early.
 */
async function transferOnce(
  name: string,
  url: URL,
  part: string,
  expected: ExpectedFile,
  settings: DownloadSettings,
  received: { bytes: number },
): Promise<void> {
  let offset = await fileSize(part);
  if (expected.bytes !== undefined && offset > expected.bytes) {
    settings.logger.warn({ file: part, bytesOnDisk: offset, expectedBytes: expected.bytes }, `${part} is longer than ${name}; downloading it again`);
    await unlink(part);
    offset = 0;
  }
  if (expected.bytes !== undefined && offset === expected.bytes) return;

  const { response, finalUrl } = await openResponse(url, offset > 0 ? { Range: `bytes=${offset}-` } : {}, settings.idleTimeoutMs);
  const status = response.statusCode ?? 0;

  if (status === 416 && offset > 0) {
    // Range Not Satisfiable: the part file is complete when its size is the size the server names.
    response.resume();
    const total = /^bytes \*\/(\d+)$/.exec(response.headers['content-range'] ?? '')?.[1];
    if (total !== undefined && Number(total) === offset) return;
    settings.logger.warn({ url: finalUrl.href, bytesOnDisk: offset, contentRange: response.headers['content-range'] }, `the server rejected the resume of ${name}; downloading it again`);
    await unlink(part);
    return transferOnce(name, url, part, expected, settings, received);
  }

  let append = false;
  if (status === 206 && offset > 0) {
    const start = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(response.headers['content-range'] ?? '')?.[1];
    if (start === undefined || Number(start) !== offset) {
      response.destroy();
      settings.logger.warn({ url: finalUrl.href, bytesOnDisk: offset, contentRange: response.headers['content-range'] }, `the server resumed ${name} at another byte; downloading it again`);
      await unlink(part);
      return transferOnce(name, url, part, expected, settings, received);
    }
    append = true;
    settings.logger.info({ url: finalUrl.href, offset }, `resuming ${name} from byte ${offset}`);
  } else if (status === 200) {
    if (offset > 0) settings.logger.info({ url: finalUrl.href, bytesOnDisk: offset }, `the server ignored the Range request (HTTP 200); downloading all of ${name}`);
    else settings.logger.info({ url: finalUrl.href, file: part }, `downloading ${name}`);
  } else {
    response.resume();
    throw new Error(`GET ${finalUrl.href} failed with HTTP ${status}${response.statusMessage ? ` ${response.statusMessage}` : ''}`);
  }

  const start = append ? offset : 0;
  const contentLength = Number(response.headers['content-length']);
  const total = Number.isFinite(contentLength) ? start + contentLength : expected.bytes;
  const bodyBytes = await receiveBody(response, part, append, received, { name, start, total, intervalMs: settings.progressIntervalMs, logger: settings.logger });

  const onDisk = start + bodyBytes;
  if (total !== undefined && onDisk < total) {
    throw new DroppedConnectionError(`the response ended after ${onDisk} of ${total} bytes`);
  }
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;

/** Sends a GET request, following redirects, and resolves with the response once its headers arrive. */
function openResponse(
  url: URL,
  headers: Record<string, string>,
  idleTimeoutMs: number,
  redirects = 0,
): Promise<{ response: IncomingMessage; finalUrl: URL }> {
  const client = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const request = client.get(url, { headers, agent: false }, (response) => {
      const status = response.statusCode ?? 0;
      const location = response.headers.location;
      if (!REDIRECT_STATUSES.has(status) || location === undefined) {
        resolve({ response, finalUrl: url });
        return;
      }
      response.resume();
      const next = new URL(location, url);
      if (redirects >= MAX_REDIRECTS) {
        reject(new Error(`GET ${url.href} failed: more than ${MAX_REDIRECTS} redirects`));
      } else if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        reject(new Error(`GET ${url.href} failed: redirect to unsupported URL ${next.href}`));
      } else {
        resolve(openResponse(next, headers, idleTimeoutMs, redirects + 1));
      }
    });
    // The socket timeout fires after this long without traffic, while connecting or mid-body.
    if (idleTimeoutMs > 0) {
      request.setTimeout(idleTimeoutMs, () => {
        request.destroy(new DroppedConnectionError(`no data from ${url.host} for ${idleTimeoutMs / 1000} s`));
      });
    }
    request.on('error', (error) => reject(classifyNetworkError(error, url)));
  });
}

interface ProgressSettings {
  readonly name: string;
  /** Bytes already on disk before this response. */
  readonly start: number;
  /** Size of the whole file, when known. */
  readonly total: number | undefined;
  readonly intervalMs: number;
  readonly logger: Logger;
}

/**
 * Writes the response body to `part` (appending or from the start) and resolves with the bytes
 * of this body, which it also adds to `counter`. Every chunk received is written before the
 * promise settles, also when the connection drops, so the next attempt resumes after the last
 * byte that arrived.
 */
function receiveBody(response: IncomingMessage, part: string, append: boolean, counter: { bytes: number }, progress: ProgressSettings): Promise<number> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(part, { flags: append ? 'a' : 'w' });
    let received = 0;
    let lastReport = Date.now();
    let settled = false;
    const settle = (error?: Error): void => {
      if (settled) return;
      settled = true;
      response.removeAllListeners('data');
      out.end(() => (error === undefined ? resolve(received) : reject(error)));
    };

    out.on('error', (error) => {
      settled = true;
      response.destroy();
      reject(new Error(`writing ${part} failed: ${error.message}`));
    });
    response.on('data', (chunk: Buffer) => {
      received += chunk.length;
      counter.bytes += chunk.length;
      if (!out.write(chunk)) {
        response.pause();
        out.once('drain', () => response.resume());
      }
      const now = Date.now();
      if (now - lastReport >= progress.intervalMs) {
        lastReport = now;
        logProgress(progress, progress.start + received);
      }
    });
    response.on('end', () => {
      if (!response.complete) settle(new DroppedConnectionError('the connection closed before the response was complete'));
      else {
        logProgress(progress, progress.start + received);
        settle();
      }
    });
    response.on('error', (error) => settle(error instanceof DroppedConnectionError ? error : new DroppedConnectionError(error.message)));
    response.on('close', () => {
      if (!response.complete) settle(new DroppedConnectionError('the connection closed before the response was complete'));
    });
  });
}

function logProgress(progress: ProgressSettings, bytes: number): void {
  const { name, total, logger } = progress;
  if (total === undefined || total === 0) {
    logger.info({ file: name, bytes }, `${name}: ${formatMebibytes(bytes)}`);
    return;
  }
  const percent = Number(((100 * bytes) / total).toFixed(1));
  logger.info({ file: name, bytes, total, percent }, `${name}: ${formatMebibytes(bytes)} of ${formatMebibytes(total)} (${percent} %)`);
}

function formatMebibytes(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

// ---------------------------------------------------------------------------------------------
// Checksums

interface FileDigest {
  readonly sha256: string;
  readonly md5?: string;
  readonly bytes: number;
}

async function hashFile(file: string, withMd5: boolean): Promise<FileDigest> {
  const sha256 = createHash('sha256');
  const md5 = withMd5 ? createHash('md5') : undefined;
  let bytes = 0;
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
    sha256.update(chunk);
    md5?.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: sha256.digest('hex'), bytes, ...(md5 === undefined ? {} : { md5: md5.digest('hex') }) };
}

/** Lists each way in which the file differs from the expected one, or returns an empty list when it matches. */
function describeMismatches(expected: ExpectedFile, actual: FileDigest): string[] {
  const mismatches: string[] = [];
  if (expected.bytes !== undefined && expected.bytes !== actual.bytes) mismatches.push(`expected ${expected.bytes} bytes, got ${actual.bytes}`);
  if (expected.sha256.toLowerCase() !== actual.sha256) mismatches.push(`expected SHA-256 ${expected.sha256}, got ${actual.sha256}`);
  if (expected.md5 !== undefined && expected.md5.toLowerCase() !== actual.md5) mismatches.push(`expected MD5 ${expected.md5}, got ${actual.md5 ?? 'none'}`);
  return mismatches;
}

/** Checks a downloaded file against its checksums. On a mismatch it deletes the file and throws. */
async function verifyDownload(name: string, url: URL, file: string, expected: ExpectedFile): Promise<void> {
  const mismatches = describeMismatches(expected, await hashFile(file, expected.md5 !== undefined));
  if (mismatches.length === 0) return;
  await rm(file, { force: true });
  throw new Error(
    `checksum mismatch for ${name} downloaded from ${url.href}: ${mismatches.join('; ')}. ` +
      `${file} was deleted; check the base URL, then run the command again to download it anew`,
  );
}

// ---------------------------------------------------------------------------------------------
// Small file helpers

async function fileSize(file: string): Promise<number> {
  return (await stat(file).catch(() => undefined))?.size ?? 0;
}

async function pathExists(file: string): Promise<boolean> {
  return (await stat(file).catch(() => undefined)) !== undefined;
}
