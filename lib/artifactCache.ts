/**
 * A content-addressed artifact cache: the results of pipeline stages, stored on disk so that a
 * rerun recomputes nothing and a run killed at any moment resumes where it stopped.
 *
 * Layout of a cache folder:
 *
 *     index.sqlite          SQLite index (WAL mode): cache key → blob hash, stage, size, meta
 *     blobs/ab/cdef…        one file per distinct content, named by the SHA-256 of its bytes
 *     blobs/ab/.tmp-<pid>-… a blob being written; renamed into place once complete
 *
 * A cache key is the SHA-256 of a canonical JSON encoding of what determines an artifact: the
 * stage name, the stage's code version, its parameters, the content hash of its input and the
 * keys of upstream artifacts. Two entries with equal bytes share one blob file.
 *
 * Crash safety rests on write order. `put` writes the blob to a temporary file in the blob's own
 * folder, fsyncs it and renames it into place, and only then commits the index row. A rename
 * within one file system is atomic, so a blob path contains either nothing or complete bytes. The
 * index row is committed after that, so a committed row never points at a blob still being
 * written. A crash between the two steps leaves an unreferenced blob, which `prune` removes,
 * and temporary files of dead writers, which `open` removes. `get` still hashes every blob it
 * reads, so damage from outside (a flipped bit, a truncated copy) turns into a recomputation.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import Database from 'better-sqlite3';
import { Either, ParseResult, Schema } from 'effect';

import { log } from './log.ts';

/** Version of the on-disk layout; `open` rejects a cache written with any other. */
export const CACHE_FORMAT_VERSION = 1;

const INDEX_FILE = 'index.sqlite';
const BLOB_DIR = 'blobs';
const TEMP_PREFIX = '.tmp-';
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** The inputs that determine an artifact. Any change to a field gives a different key. */
export interface KeyParts {
  readonly stage: string;
  /** Version of the stage's code; bump it when the stage's output changes for the same input. */
  readonly version: string | number;
  /** Stage parameters: JSON values only (plain objects, arrays, strings, finite numbers, booleans, null). */
  readonly params: unknown;
  /** Content hash of the input (for an image, the SHA-256 of its file bytes). */
  readonly input: string;
  /** Keys of the artifacts this one was computed from, in a fixed order. */
  readonly upstream?: readonly string[];
}

export type CacheEntry =
  | { readonly kind: 'artifact'; readonly bytes: Uint8Array; readonly meta: unknown }
  | { readonly kind: 'failure'; readonly reason: string; readonly meta?: unknown };

export interface PutOptions {
  /** Stage that produced the entry; `stats` and `prune` group by it. */
  readonly stage: string;
  /** Small JSON value stored in the index beside the blob (dimensions, a format tag). */
  readonly meta?: unknown;
}

export interface StageStats {
  readonly artifacts: number;
  /** Sum of artifact sizes in bytes, counting a shared blob once per entry. */
  readonly artifactBytes: number;
  readonly failures: number;
}

export interface CacheStats {
  readonly byStage: Readonly<Record<string, StageStats>>;
  readonly entries: number;
  readonly failures: number;
  /** Distinct blobs referenced by the index and their total size in bytes (space on disk). */
  readonly blobs: number;
  readonly blobBytes: number;
}

export interface PruneOptions {
  /** Remove entries written before this time. */
  readonly olderThan?: Date;
  /** Remove entries of this stage only. */
  readonly stage?: string;
}

export interface PruneResult {
  readonly entries: number;
  readonly blobs: number;
  readonly bytes: number;
}

/** One row of the index, as `list` returns it. */
export interface IndexedEntry {
  readonly key: string;
  readonly stage: string;
  readonly kind: 'artifact' | 'failure';
  /** SHA-256 of the blob; undefined for a failure. */
  readonly blob: string | undefined;
  readonly size: number;
  /** Time of writing, in milliseconds since the Unix epoch. */
  readonly createdAt: number;
}

const IndexRow = Schema.Struct({
  key: Schema.String,
  stage: Schema.String,
  kind: Schema.Literal('artifact', 'failure'),
  blob: Schema.NullOr(Schema.String),
  size: Schema.Number,
  meta: Schema.NullOr(Schema.String),
  reason: Schema.NullOr(Schema.String),
  created_at: Schema.Number,
});
type IndexRow = typeof IndexRow.Type;

const decodeIndexRow = Schema.decodeUnknownEither(IndexRow);

/**
 * Encodes a JSON value with object keys sorted by code unit, so equal values give equal text
 * whatever order their keys were written in. Throws on anything JSON cannot carry exactly
 * (undefined in an array, NaN, Infinity, bigint, functions, class instances such as Date or
 * typed arrays), naming the path of the value. Object properties whose value is undefined are
 * left out, as `JSON.stringify` does.
 */
export function canonicalJson(value: unknown, where = '$'): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError(`cannot encode ${where} = ${value} in a cache key; expected a finite number`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) {
    const items = value.map((item: unknown, index) => {
      if (item === undefined) throw new TypeError(`cannot encode ${where}[${index}] = undefined in a cache key; use null`);
      return canonicalJson(item, `${where}[${index}]`);
    });
    return `[${items.join(',')}]`;
  }
  if (typeof value === 'object') {
    const prototype = Object.getPrototypeOf(value) as unknown;
    if (prototype !== Object.prototype && prototype !== null) {
      const name = (value as { constructor?: { name?: string } }).constructor?.name ?? 'object';
      throw new TypeError(`cannot encode ${where} (a ${name}) in a cache key; expected a plain object, array or JSON primitive`);
    }
    const record = value as Record<string, unknown>;
    const fields = Object.keys(record)
      .sort()
      .filter((name) => record[name] !== undefined)
      .map((name) => `${JSON.stringify(name)}:${canonicalJson(record[name], `${where}.${name}`)}`);
    return `{${fields.join(',')}}`;
  }
  throw new TypeError(`cannot encode ${where} (a ${typeof value}) in a cache key; expected a JSON value`);
}

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Hashes a file's bytes with SHA-256, streaming, so large inputs are not held in memory. */
export async function hashFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Returns true unless a process with this id is known not to exist. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

function fsyncDirectory(dir: string): void {
  // NOTE: Linux and macOS allow fsync on a directory opened read-only; Windows rejects it, and
  // there the rename is left to the file system's own ordering.
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch (error) {
    if (process.platform !== 'win32') throw error;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * The cache of one folder. All methods are synchronous, because a per-item lookup is a single
 * indexed SQLite read and better-sqlite3 runs it without a round trip through the event loop.
 *
 * Several processes may read one cache at once (WAL mode). Writers from several processes are
 * safe for the index, but `prune` in one process can remove a blob that another process has
 * written and not yet indexed. That entry then reads as missing and is recomputed.
 */
export class ArtifactCache {
  readonly dir: string;
  readonly #db: Database.Database;
  readonly #blobRoot: string;
  readonly #statements: ReturnType<typeof prepareStatements>;

  private constructor(dir: string, db: Database.Database) {
    this.dir = dir;
    this.#db = db;
    this.#blobRoot = path.join(dir, BLOB_DIR);
    this.#statements = prepareStatements(db);
  }

  /**
   * Opens the cache in `dir`, creating the folder and an empty index if missing, and removes
   * temporary blob files left by writers that no longer run. Throws if the index is not an
   * SQLite database or was written with another format version.
   */
  static open(dir: string): ArtifactCache {
    const root = path.resolve(dir);
    const existing = fs.statSync(root, { throwIfNoEntry: false });
    if (existing !== undefined && !existing.isDirectory()) {
      throw new Error(`artifact cache ${root} is a file; expected a folder (it is created if missing)`);
    }
    fs.mkdirSync(path.join(root, BLOB_DIR), { recursive: true });

    const indexFile = path.join(root, INDEX_FILE);
    let db: Database.Database;
    try {
      db = new Database(indexFile);
      db.pragma('journal_mode = WAL');
      // In WAL mode, NORMAL keeps the database consistent after a process crash or power loss.
      // A power loss may drop the last commits, which only means recomputing those artifacts.
      db.pragma('synchronous = NORMAL');
      db.pragma('busy_timeout = 5000');
      migrate(db, indexFile);
    } catch (error) {
      const message = (error as Error).message;
      throw new Error(`cannot open artifact cache index ${indexFile}: ${message}`, { cause: error });
    }

    const cache = new ArtifactCache(root, db);
    const removed = cache.#removeStaleTempFiles();
    if (removed > 0) log.info({ cache: root, removed }, 'artifact cache: removed temporary files left by a crashed writer');
    return cache;
  }

  /** Computes the cache key of an artifact: the SHA-256 (hex) of the canonical JSON of `parts`. */
  static key(parts: KeyParts): string {
    if (typeof parts.stage !== 'string' || parts.stage === '') {
      throw new TypeError(`cache key needs a non-empty stage name, got ${JSON.stringify(parts.stage)}`);
    }
    if (typeof parts.input !== 'string' || parts.input === '') {
      throw new TypeError(`cache key of stage "${parts.stage}" needs the input's content hash, got ${JSON.stringify(parts.input)}`);
    }
    const document = {
      format: 'sphereface-cache-key',
      formatVersion: CACHE_FORMAT_VERSION,
      stage: parts.stage,
      version: parts.version,
      params: parts.params ?? null,
      input: parts.input,
      upstream: parts.upstream ?? [],
    };
    return sha256Hex(canonicalJson(document));
  }

  /** Same as `ArtifactCache.key`. */
  key(parts: KeyParts): string {
    return ArtifactCache.key(parts);
  }

  /**
   * Looks up a key. Returns undefined on a miss, and also when the entry's blob is missing,
   * shorter or longer than indexed, or fails its SHA-256 check. Such an entry is dropped (and a
   * damaged blob deleted) with a warning, so the caller recomputes it.
   */
  get(key: string): CacheEntry | undefined {
    const row = this.#row(key);
    if (row === undefined) return undefined;
    if (row.kind === 'failure') {
      return row.meta === null ? { kind: 'failure', reason: row.reason ?? '' } : { kind: 'failure', reason: row.reason ?? '', meta: JSON.parse(row.meta) as unknown };
    }

    const blob = row.blob ?? '';
    const file = this.blobPath(blob);
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      this.#drop(row, file, 'blob file is missing', false);
      return undefined;
    }
    if (bytes.length !== row.size) {
      this.#drop(row, file, `blob file has ${bytes.length} bytes; the index says ${row.size}`, true);
      return undefined;
    }
    const actual = sha256Hex(bytes);
    if (actual !== blob) {
      this.#drop(row, file, `blob content hashes to ${actual}`, true);
      return undefined;
    }

    const bytesView = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return { kind: 'artifact', bytes: bytesView, meta: row.meta === null ? undefined : (JSON.parse(row.meta) as unknown) };
  }

  /** Returns the kind of the key's entry without reading its blob, or undefined when there is none. */
  kindOf(key: string): CacheEntry['kind'] | undefined {
    return this.#row(key)?.kind;
  }

  /** Returns true if the key has an entry (artifact or failure), without reading the blob. */
  has(key: string): boolean {
    return this.#statements.select.get(key) !== undefined;
  }

  /**
   * Stores an artifact: the blob first (temporary file, fsync, rename, skipped when a blob with
   * the same content exists), then the index row in a transaction, replacing any entry of `key`.
   */
  put(key: string, bytes: Uint8Array, options: PutOptions): void {
    const metaJson = options.meta === undefined ? null : canonicalJson(options.meta, 'meta');
    const blob = sha256Hex(bytes);
    this.#writeBlob(blob, bytes);
    this.#statements.upsert.run({
      key,
      stage: options.stage,
      kind: 'artifact',
      blob,
      size: bytes.byteLength,
      meta: metaJson,
      reason: null,
      created_at: Date.now(),
    });
  }

  /** Records that computing `key` failed for this input (for example, no face found). */
  putFailure(key: string, reason: string, options: PutOptions): void {
    this.#statements.upsert.run({
      key,
      stage: options.stage,
      kind: 'failure',
      blob: null,
      size: 0,
      meta: options.meta === undefined ? null : canonicalJson(options.meta, 'meta'),
      reason,
      created_at: Date.now(),
    });
  }

  /** Removes one entry; its blob stays until `prune` finds it unreferenced. */
  delete(key: string): boolean {
    return this.#statements.delete.run(key).changes > 0;
  }

  /** Lists index rows, optionally of one stage, in key order. */
  list(filter: { readonly stage?: string } = {}): IndexedEntry[] {
    const rows = filter.stage === undefined ? this.#statements.listAll.all() : this.#statements.listStage.all(filter.stage);
    return rows.map((raw) => {
      const row = this.#decodeRow(raw);
      return { key: row.key, stage: row.stage, kind: row.kind, blob: row.blob ?? undefined, size: row.size, createdAt: row.created_at };
    });
  }

  stats(): CacheStats {
    const byStage: Record<string, StageStats> = {};
    let entries = 0;
    let failures = 0;
    const groups = this.#db
      .prepare('SELECT stage, kind, COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM entries GROUP BY stage, kind')
      .all() as Array<{ stage: string; kind: 'artifact' | 'failure'; n: number; bytes: number }>;
    for (const group of groups) {
      const current = byStage[group.stage] ?? { artifacts: 0, artifactBytes: 0, failures: 0 };
      byStage[group.stage] =
        group.kind === 'artifact'
          ? { ...current, artifacts: current.artifacts + group.n, artifactBytes: current.artifactBytes + group.bytes }
          : { ...current, failures: current.failures + group.n };
      entries += group.n;
      if (group.kind === 'failure') failures += group.n;
    }
    const blobs = this.#db
      .prepare('SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM (SELECT blob, MAX(size) AS size FROM entries WHERE blob IS NOT NULL GROUP BY blob)')
      .get() as { n: number; bytes: number };
    return { byStage, entries, failures, blobs: blobs.n, blobBytes: blobs.bytes };
  }

  /**
   * Removes the index rows that match every given filter (all rows when none is given), then
   * every blob file that no row references, including blobs orphaned by an earlier crash.
   */
  prune(options: PruneOptions = {}): PruneResult {
    const conditions: string[] = [];
    const values: Array<string | number> = [];
    if (options.olderThan !== undefined) {
      const time = options.olderThan.getTime();
      if (!Number.isFinite(time)) throw new RangeError(`prune: olderThan is an invalid Date`);
      conditions.push('created_at < ?');
      values.push(time);
    }
    if (options.stage !== undefined) {
      conditions.push('stage = ?');
      values.push(options.stage);
    }
    const where = conditions.length === 0 ? '' : ` WHERE ${conditions.join(' AND ')}`;
    const entries = this.#db.prepare(`DELETE FROM entries${where}`).run(...values).changes;

    let blobs = 0;
    let bytes = 0;
    const referenced = this.#db.prepare('SELECT 1 FROM entries WHERE blob = ? LIMIT 1');
    for (const { blob, file } of this.#blobFiles()) {
      if (referenced.get(blob) !== undefined) continue;
      const size = fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0;
      fs.rmSync(file, { force: true });
      blobs++;
      bytes += size;
    }
    return { entries, blobs, bytes };
  }

  /** Returns the path of the blob with this SHA-256. */
  blobPath(hash: string): string {
    if (!SHA256_HEX.test(hash)) throw new Error(`invalid blob hash ${JSON.stringify(hash)}; expected 64 lower-case hex digits`);
    return path.join(this.#blobRoot, hash.slice(0, 2), hash.slice(2));
  }

  close(): void {
    this.#db.close();
  }

  #row(key: string): IndexRow | undefined {
    const raw = this.#statements.select.get(key);
    return raw === undefined ? undefined : this.#decodeRow(raw);
  }

  #decodeRow(raw: unknown): IndexRow {
    const result = decodeIndexRow(raw);
    if (Either.isLeft(result)) {
      const detail = ParseResult.TreeFormatter.formatErrorSync(result.left);
      throw new Error(`artifact cache index ${path.join(this.dir, INDEX_FILE)} has an invalid row: ${detail}`);
    }
    return result.right;
  }

  #drop(row: IndexRow, file: string, problem: string, deleteBlob: boolean): void {
    log.warn({ cache: this.dir, key: row.key, stage: row.stage, blob: row.blob }, `artifact cache: ${problem}; dropped the entry, it will be recomputed`);
    // Another entry may share the damaged blob; deleting it makes the next put write it afresh
    // instead of skipping an existing file.
    this.#statements.deleteBlobRows.run(row.blob);
    if (deleteBlob) fs.rmSync(file, { force: true });
  }

  #writeBlob(hash: string, bytes: Uint8Array): void {
    const file = this.blobPath(hash);
    const existing = fs.statSync(file, { throwIfNoEntry: false });
    if (existing !== undefined && existing.size === bytes.byteLength) return;

    const folder = path.dirname(file);
    fs.mkdirSync(folder, { recursive: true });
    const temp = path.join(folder, `${TEMP_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
    const fd = fs.openSync(temp, 'wx');
    try {
      let written = 0;
      while (written < bytes.byteLength) written += fs.writeSync(fd, bytes, written, bytes.byteLength - written);
      fs.fsyncSync(fd);
    } catch (error) {
      fs.closeSync(fd);
      fs.rmSync(temp, { force: true });
      throw error;
    }
    fs.closeSync(fd);
    fs.renameSync(temp, file);
    // Makes the rename itself durable before the index row that refers to it is committed.
    fsyncDirectory(folder);
  }

  *#blobFiles(): Generator<{ blob: string; file: string }> {
    for (const prefix of fs.readdirSync(this.#blobRoot)) {
      const folder = path.join(this.#blobRoot, prefix);
      if (!/^[0-9a-f]{2}$/.test(prefix) || !fs.statSync(folder).isDirectory()) continue;
      for (const name of fs.readdirSync(folder)) {
        const blob = prefix + name;
        if (SHA256_HEX.test(blob)) yield { blob, file: path.join(folder, name) };
      }
    }
  }

  /** Removes temporary blob files whose writer process has exited; returns how many. */
  #removeStaleTempFiles(): number {
    let removed = 0;
    for (const prefix of fs.readdirSync(this.#blobRoot)) {
      const folder = path.join(this.#blobRoot, prefix);
      if (!fs.statSync(folder).isDirectory()) continue;
      for (const name of fs.readdirSync(folder)) {
        if (!name.startsWith(TEMP_PREFIX)) continue;
        const pid = Number.parseInt(name.slice(TEMP_PREFIX.length), 10);
        // A temp file of this process or of a live one may be a write in progress.
        if (Number.isInteger(pid) && pid > 0 && (pid === process.pid || processAlive(pid))) continue;
        fs.rmSync(path.join(folder, name), { force: true });
        removed++;
      }
    }
    return removed;
  }
}

/** Creates the tables of a new index, or checks the format version of an existing one. */
function migrate(db: Database.Database, indexFile: string): void {
  db.transaction(() => {
    db.exec('CREATE TABLE IF NOT EXISTS cache_info (name TEXT PRIMARY KEY, value TEXT NOT NULL)');
    const row = db.prepare("SELECT value FROM cache_info WHERE name = 'format_version'").get() as { value: string } | undefined;
    if (row === undefined) {
      const tables = db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name <> 'cache_info'").get() as { n: number };
      if (tables.n > 0) {
        throw new Error(`${indexFile} is an SQLite database without an artifact cache format version; expected a folder created by ArtifactCache.open`);
      }
      db.exec(`
        CREATE TABLE entries (
          key TEXT PRIMARY KEY,
          stage TEXT NOT NULL,
          kind TEXT NOT NULL CHECK (kind IN ('artifact', 'failure')),
          blob TEXT,
          size INTEGER NOT NULL,
          meta TEXT,
          reason TEXT,
          created_at INTEGER NOT NULL
        );
        CREATE INDEX entries_blob ON entries (blob);
        CREATE INDEX entries_stage ON entries (stage);
      `);
      db.prepare("INSERT INTO cache_info (name, value) VALUES ('format_version', ?)").run(String(CACHE_FORMAT_VERSION));
      return;
    }
    if (row.value !== String(CACHE_FORMAT_VERSION)) {
      throw new Error(
        `${indexFile} uses artifact cache format version ${row.value}, but this build reads version ${CACHE_FORMAT_VERSION}; ` +
          'delete the cache folder (its contents are recomputed) or run the build that wrote it',
      );
    }
  }).immediate();
}

function prepareStatements(db: Database.Database) {
  return {
    select: db.prepare('SELECT key, stage, kind, blob, size, meta, reason, created_at FROM entries WHERE key = ?'),
    upsert: db.prepare(
      'INSERT OR REPLACE INTO entries (key, stage, kind, blob, size, meta, reason, created_at) VALUES (@key, @stage, @kind, @blob, @size, @meta, @reason, @created_at)',
    ),
    delete: db.prepare('DELETE FROM entries WHERE key = ?'),
    deleteBlobRows: db.prepare('DELETE FROM entries WHERE blob = ?'),
    listAll: db.prepare('SELECT key, stage, kind, blob, size, meta, reason, created_at FROM entries ORDER BY key'),
    listStage: db.prepare('SELECT key, stage, kind, blob, size, meta, reason, created_at FROM entries WHERE stage = ? ORDER BY key'),
  };
}
