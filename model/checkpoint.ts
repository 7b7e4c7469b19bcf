/**
 * Training checkpoints: named float32 tensors (network and classifier weights, optimizer
 * momentum) plus the JSON state a trainer needs to go on exactly where it stopped.
 *
 * A folder contains one file per checkpoint, `ckpt-<iteration, 9 digits zero-padded>.sfc`, so
 * names sort by iteration up to 999,999,999. File layout (all integers little-endian):
 *
 *     offset 0          8 bytes   magic 89 53 46 43 4B 50 54 0A ("\x89SFCKPT\n")
 *     offset 8          uint32    format version, 1
 *     offset 12         uint32    header length H in bytes
 *     offset 16         H bytes   header: UTF-8 JSON {"state": …, "tensors": [{name, shape, offset, length}, …]},
 *                                 padded with spaces so that the payload starts at a multiple of 8
 *     offset 16 + H     4·N bytes payload: the float32 values of every tensor, little-endian
 *     last 32 bytes               SHA-256 of every byte before it
 *
 * `offset` and `length` in the tensor table count float32 values from the start of the payload.
 * The tensors lie back to back in table order, so N is the sum of the lengths. The magic's first
 * byte has the high bit set and its last is a line feed, so a transfer that strips the eighth
 * bit or rewrites line ends damages the magic instead of passing unnoticed.
 *
 * A save writes a temporary file `.ckpt-<iteration>.sfc.<pid>-<random>.tmp` in the same folder,
 * fsyncs it, renames it over the final name and fsyncs the folder. A rename within one file
 * system is atomic, so a checkpoint name contains either nothing or a complete file. A writer
 * killed midway leaves only its temporary file, which readers ignore and the next save removes.
 *
 * This module uses plain typed arrays and no tfjs, so that it can be tested on its own.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';

import { Either, ParseResult, Schema } from 'effect';

import { processAlive, sha256Hex } from '../lib/artifactCache.ts';
import { log } from '../lib/log.ts';

export const CHECKPOINT_FORMAT = 'sphereface-ts/checkpoint';
export const CHECKPOINT_VERSION = 1;

/** Checkpoints that `saveCheckpoint` leaves in a folder when the caller gives no `keep`. */
export const DEFAULT_KEEP = 3;

const MAGIC = Uint8Array.from([0x89, 0x53, 0x46, 0x43, 0x4b, 0x50, 0x54, 0x0a]);
const PREFIX_BYTES = 16;
const HASH_BYTES = 32;
const PAYLOAD_ALIGNMENT = 8;
const CHECKPOINT_NAME = /^ckpt-(\d{9,})\.sfc$/;
const TEMP_NAME = /^\.ckpt-\d+\.sfc\.(\d+)-[0-9a-f]+\.tmp$/;
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;
const LITTLE_ENDIAN_HOST = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

// ---------------------------------------------------------------------------------------------
// Schemas of the header
// ---------------------------------------------------------------------------------------------

type JsonIssue = { readonly path: ReadonlyArray<PropertyKey>; readonly message: string };

/**
 * Finds the first value inside `value` that JSON cannot carry exactly (NaN, Infinity, bigint,
 * undefined in an array, a Date or typed array, a function). Object properties whose value is
 * undefined pass, because `JSON.stringify` drops them as an optional field would be.
 */
function findNonJsonValue(value: unknown, at: readonly PropertyKey[]): JsonIssue | undefined {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return undefined;
  if (typeof value === 'number') {
    return Number.isFinite(value) ? undefined : { path: at, message: `expected a finite number, actual ${value}` };
  }
  if (Array.isArray(value)) {
    for (let index = 0; index < value.length; index++) {
      const issue = findNonJsonValue(value[index], [...at, index]);
      if (issue !== undefined) return issue;
    }
    return undefined;
  }
  if (typeof value === 'object') {
    const prototype = Object.getPrototypeOf(value) as unknown;
    if (prototype === Object.prototype || prototype === null) {
      for (const [key, item] of Object.entries(value)) {
        if (item === undefined) continue;
        const issue = findNonJsonValue(item, [...at, key]);
        if (issue !== undefined) return issue;
      }
      return undefined;
    }
  }
  const kind = typeof value === 'object' ? ((value as { constructor?: { name?: string } }).constructor?.name ?? 'object') : typeof value;
  return { path: at, message: `expected a JSON value (null, boolean, finite number, string, array or plain object), actual a ${kind}` };
}

/** A JSON object: written into the header as it is and read back equal. */
const JsonRecord = Schema.Record({ key: Schema.String, value: Schema.Unknown }).pipe(
  Schema.filter((record) => findNonJsonValue(record, []) ?? true),
);

const NonNegativeInt = Schema.Int.pipe(Schema.nonNegative());

const IsoDateTime = Schema.String.pipe(
  Schema.filter((text) => (ISO_DATE_TIME.test(text) && !Number.isNaN(Date.parse(text))) || `expected an ISO 8601 date-time such as 2026-12-05T14:03:00.000Z, actual ${JSON.stringify(text)}`),
);

/** The JSON part of a checkpoint: the progress of training and the data and settings it runs with. */
export const TrainingState = Schema.Struct({
  format: Schema.Literal(CHECKPOINT_FORMAT),
  version: Schema.Literal(CHECKPOINT_VERSION),
  /** Optimizer steps completed. */
  iteration: NonNegativeInt,
  /** Data order: passes over the dataset completed, and samples of the current pass consumed. */
  epoch: NonNegativeInt,
  position: NonNegativeInt,
  /** Seed from which the trainer derives the shuffle order of every epoch. */
  seed: Schema.Int,
  /** Iteration count of the A-Softmax margin layer, which anneals λ. Absent when it equals `iteration`. */
  lambdaIteration: Schema.optional(NonNegativeInt),
  /** Learning-rate steps (drops) taken so far. Absent when the trainer derives it from `iteration`. */
  learningRateStep: Schema.optional(NonNegativeInt),
  dataset: Schema.Struct({
    /** Digest of the training list (file names and labels), so that a resume on other data is caught. */
    fingerprint: Schema.String.pipe(Schema.minLength(1)),
    samples: NonNegativeInt,
    classes: NonNegativeInt,
  }),
  /** The training configuration, as JSON. */
  config: JsonRecord,
  createdAt: IsoDateTime,
  /** Free JSON values the trainer records, such as the last loss and accuracy. */
  metrics: Schema.optional(JsonRecord),
});
export type TrainingState = typeof TrainingState.Type;

const TensorEntry = Schema.Struct({
  name: Schema.String.pipe(Schema.minLength(1)),
  shape: Schema.Array(NonNegativeInt),
  offset: NonNegativeInt,
  length: NonNegativeInt,
});
type TensorEntry = typeof TensorEntry.Type;

const CheckpointHeader = Schema.Struct({
  state: TrainingState,
  tensors: Schema.Array(TensorEntry),
});
type CheckpointHeader = typeof CheckpointHeader.Type;

const decodeHeader = Schema.decodeUnknownEither(CheckpointHeader, { errors: 'all', onExcessProperty: 'error' });

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

export interface CheckpointTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

export interface CheckpointContent {
  readonly state: TrainingState;
  readonly tensors: readonly CheckpointTensor[];
}

export interface SaveCheckpointOptions {
  /** Newest checkpoints (by iteration) to leave in the folder. Older ones are deleted. Default 3. */
  readonly keep?: number;
}

/**
 * A checkpoint that cannot be saved or read. `file` is its path (for a rejected save, the
 * folder) and `problem` is the reason without the path.
 */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
  constructor(
    message: string,
    readonly file: string,
    readonly problem: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }

  static invalid(file: string, problem: string, options?: ErrorOptions): CheckpointError {
    return new CheckpointError(`invalid checkpoint ${file}: ${problem}`, file, problem, options);
  }
}

// ---------------------------------------------------------------------------------------------
// Validation shared by save and load
// ---------------------------------------------------------------------------------------------

/** Formats an effect path (`['tensors', 2, 'shape']`) as `tensors[2].shape`. */
function formatFieldPath(segments: ReadonlyArray<PropertyKey>): string {
  return segments.map((segment, index) => (typeof segment === 'number' ? `[${segment}]` : `${index === 0 ? '' : '.'}${String(segment)}`)).join('');
}

/** Checks a header value against the schema and the tensor table rules, and returns it or the problem. */
function validateHeader(value: unknown): { header: CheckpointHeader } | { problem: string } {
  const result = decodeHeader(value);
  if (Either.isLeft(result)) {
    // An optional field fails as a union of its type and undefined, and the "Expected undefined"
    // branch only repeats the other issue at that field.
    const issues = ParseResult.ArrayFormatter.formatErrorSync(result.left).filter((issue) => !issue.message.startsWith('Expected undefined,'));
    return { problem: `${issues.map((issue) => `${formatFieldPath(issue.path)}: ${issue.message}`).join('; ')}` };
  }
  const problem = tensorTableProblem(result.right.tensors);
  return problem === undefined ? { header: result.right } : { problem };
}

/** Returns what is wrong with a tensor table, or undefined: names, shapes and back-to-back offsets. */
function tensorTableProblem(entries: readonly TensorEntry[]): string | undefined {
  const seen = new Set<string>();
  let next = 0;
  for (const [index, entry] of entries.entries()) {
    const label = `tensor ${JSON.stringify(entry.name)} (tensors[${index}])`;
    if (seen.has(entry.name)) return `${label} has the same name as an earlier tensor; names must be unique`;
    seen.add(entry.name);

    const elements = entry.shape.reduce((product, size) => product * size, 1);
    if (elements !== entry.length) return `${label} has shape [${entry.shape.join(', ')}] (${elements} values) but length ${entry.length}`;
    if (entry.offset !== next) return `${label} starts at value ${entry.offset}; expected ${next}, right after the previous tensor`;
    next += entry.length;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Byte order
// ---------------------------------------------------------------------------------------------

/** Reverses the byte order of each 4-byte group in place. */
function swapFloat32ByteOrder(bytes: Uint8Array): Uint8Array {
  for (let i = 0; i + 3 < bytes.length; i += 4) {
    const b0 = bytes[i] as number;
    const b1 = bytes[i + 1] as number;
    bytes[i] = bytes[i + 3] as number;
    bytes[i + 1] = bytes[i + 2] as number;
    bytes[i + 2] = b1;
    bytes[i + 3] = b0;
  }
  return bytes;
}

/**
 * Returns the little-endian bytes of `data`, bit for bit (NaN payloads and -0 included), as a
 * view on a little-endian host and as a swapped copy otherwise.
 */
function littleEndianBytes(data: Float32Array): Uint8Array {
  const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  // NOTE: the big-endian branches here and in `float32FromLittleEndian` do not run on the
  // x86 and ARM hosts that the tests run on.
  return LITTLE_ENDIAN_HOST ? view : swapFloat32ByteOrder(view.slice());
}

/** Copies little-endian float32 bytes into a new Float32Array, bit for bit. */
function float32FromLittleEndian(bytes: Uint8Array): Float32Array {
  const copy = bytes.slice();
  return new Float32Array(LITTLE_ENDIAN_HOST ? copy.buffer : swapFloat32ByteOrder(copy).buffer);
}

// ---------------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------------

/** Temporary files that this process is writing now, which a cleanup must not remove. */
const writesInProgress = new Set<string>();

export function checkpointFileName(iteration: number): string {
  return `ckpt-${String(iteration).padStart(9, '0')}.sfc`;
}

/**
 * Saves a checkpoint as `dir/ckpt-<iteration>.sfc` (creating `dir` if missing) and returns its
 * path. The state and tensors are checked first by the same rules `loadCheckpoint` applies, so
 * an invalid checkpoint is rejected here (CheckpointError) and never written. After the write,
 * all but the newest `keep` checkpoints are deleted, as are temporary files of killed writers.
 * The new file is never deleted, even when `keep` newer ones exist.
 *
 * The tensor data is written from the caller's arrays without a copy, so the caller must not
 * change them until the returned promise settles. A change during the write makes the file
 * fail its SHA-256 check when loaded.
 */
export async function saveCheckpoint(dir: string, content: CheckpointContent, options: SaveCheckpointOptions = {}): Promise<string> {
  const keep = options.keep ?? DEFAULT_KEEP;
  if (!Number.isInteger(keep) || keep < 1) throw new RangeError(`saveCheckpoint: keep must be an integer ≥ 1, got ${keep}`);

  const { iteration, headerBytes, tensorBytes } = encodeCheckpoint(dir, content);
  const file = path.join(dir, checkpointFileName(iteration));

  await mkdir(dir, { recursive: true });
  const temp = path.join(dir, `.${path.basename(file)}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
  writesInProgress.add(temp);
  try {
    await writeSynced(temp, headerBytes, tensorBytes);
    await rename(temp, file);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  } finally {
    writesInProgress.delete(temp);
  }
  // Fsyncing the folder makes the rename durable, because a power loss may otherwise lose the new name.
  await fsyncDirectory(dir);

  await removeOldCheckpoints(dir, keep, file);
  await removeStaleTempFiles(dir);
  return file;
}

/** Validates content and encodes the prefix and header. The tensor bytes stay views where the byte order allows. */
function encodeCheckpoint(dir: string, content: CheckpointContent): { iteration: number; headerBytes: Uint8Array; tensorBytes: Uint8Array[] } {
  const rejectSave = (problem: string): CheckpointError => new CheckpointError(`cannot save a checkpoint in ${dir}: ${problem}`, dir, problem);

  const entries: TensorEntry[] = [];
  let offset = 0;
  for (const [index, tensor] of content.tensors.entries()) {
    if (!(tensor.data instanceof Float32Array)) {
      throw rejectSave(`tensors[${index}] (${JSON.stringify(tensor.name)}) has data of type ${Object.prototype.toString.call(tensor.data)}; expected a Float32Array`);
    }
    entries.push({ name: tensor.name, shape: [...tensor.shape], offset, length: tensor.data.length });
    offset += tensor.data.length;
  }
  const checked = validateHeader({ state: content.state, tensors: entries });
  if ('problem' in checked) throw rejectSave(`invalid state or tensors: ${checked.problem}`);

  const json = Buffer.from(JSON.stringify(checked.header), 'utf8');
  const padding = (PAYLOAD_ALIGNMENT - ((PREFIX_BYTES + json.length) % PAYLOAD_ALIGNMENT)) % PAYLOAD_ALIGNMENT;
  const headerBytes = new Uint8Array(PREFIX_BYTES + json.length + padding).fill(0x20);
  headerBytes.set(MAGIC, 0);
  const prefix = new DataView(headerBytes.buffer);
  prefix.setUint32(8, CHECKPOINT_VERSION, true);
  prefix.setUint32(12, json.length + padding, true);
  headerBytes.set(json, PREFIX_BYTES);

  return { iteration: checked.header.state.iteration, headerBytes, tensorBytes: content.tensors.map((tensor) => littleEndianBytes(tensor.data)) };
}

/** Writes the parts and their SHA-256 to a new file and fsyncs it. */
async function writeSynced(file: string, headerBytes: Uint8Array, tensorBytes: readonly Uint8Array[]): Promise<void> {
  const handle = await open(file, 'wx');
  try {
    const hash = createHash('sha256');
    for (const part of [headerBytes, ...tensorBytes]) {
      hash.update(part);
      await writeAll(handle, part);
    }
    await writeAll(handle, hash.digest());
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function writeAll(handle: Awaited<ReturnType<typeof open>>, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.byteLength) {
    const result = await handle.write(bytes, written, bytes.byteLength - written);
    written += result.bytesWritten;
  }
}

async function fsyncDirectory(dir: string): Promise<void> {
  // NOTE: Linux and macOS allow fsync on a folder opened read-only; Windows rejects it, and
  // there the rename is left to the file system's own ordering.
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch (error) {
    if (process.platform !== 'win32') throw error;
  } finally {
    await handle?.close();
  }
}

/** Deletes all but the newest `keep` checkpoints of `dir`, never `justWritten`. */
async function removeOldCheckpoints(dir: string, keep: number, justWritten: string): Promise<void> {
  const newestFirst = (await listCheckpoints(dir)).reverse();
  for (const { path: file } of newestFirst.slice(keep)) {
    if (file === justWritten) continue;
    try {
      await rm(file, { force: true });
    } catch (error) {
      log.warn({ err: error, file }, 'checkpoint: could not delete an old checkpoint; it stays in the folder');
    }
  }
}

/** Deletes temporary files whose writer has exited: another process, or an earlier process with this pid. */
async function removeStaleTempFiles(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const match = TEMP_NAME.exec(name);
    if (match === null) continue;
    const file = path.join(dir, name);
    const pid = Number(match[1]);
    // NOTE: when a live process has reused a dead writer's pid, the writer's file stays until
    // that pid is free again. Readers ignore it meanwhile.
    const writerMayRun = pid === process.pid ? writesInProgress.has(file) : processAlive(pid);
    if (writerMayRun) continue;
    try {
      await rm(file, { force: true });
      log.info({ file, pid }, 'checkpoint: removed a temporary file left by a killed writer');
    } catch (error) {
      log.warn({ err: error, file }, 'checkpoint: could not delete a temporary file left by a killed writer');
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/**
 * Lists the checkpoints of `dir` by iteration, oldest first. A missing folder has none.
 * Temporary files and other names are left out. The files themselves are not read.
 */
export async function listCheckpoints(dir: string): Promise<Array<{ path: string; iteration: number }>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const found: Array<{ path: string; iteration: number }> = [];
  for (const name of names) {
    const match = CHECKPOINT_NAME.exec(name);
    if (match !== null) found.push({ path: path.join(dir, name), iteration: Number(match[1]) });
  }
  return found.sort((a, b) => a.iteration - b.iteration);
}

/**
 * Reads and verifies a checkpoint. Throws a CheckpointError naming the file when it cannot be
 * read, is truncated, fails its SHA-256 check, or has a header that breaks the format.
 */
export async function loadCheckpoint(file: string): Promise<CheckpointContent> {
  let bytes: Buffer;
  try {
    // NOTE: readFile rejects files over 2 GiB, so larger checkpoints cannot be loaded.
    bytes = await readFile(file);
  } catch (error) {
    throw CheckpointError.invalid(file, `cannot read the file: ${(error as Error).message}`, { cause: error });
  }
  return decodeCheckpoint(file, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

function decodeCheckpoint(file: string, bytes: Uint8Array): CheckpointContent {
  const fail = (problem: string): CheckpointError => CheckpointError.invalid(file, problem);
  const size = bytes.byteLength;

  if (size < PREFIX_BYTES + HASH_BYTES) {
    throw fail(`the file has ${size} bytes, fewer than the ${PREFIX_BYTES + HASH_BYTES} that even an empty checkpoint has; it is truncated`);
  }
  if (!MAGIC.every((byte, index) => bytes[index] === byte)) {
    throw fail(`the file starts with bytes ${hexBytes(bytes.subarray(0, MAGIC.length))}; expected the checkpoint magic ${hexBytes(MAGIC)}`);
  }
  const prefix = new DataView(bytes.buffer, bytes.byteOffset, PREFIX_BYTES);
  const version = prefix.getUint32(8, true);
  if (version !== CHECKPOINT_VERSION) throw fail(`format version ${version} is not supported; this build reads version ${CHECKPOINT_VERSION}, so load it with the build that wrote it`);
  const headerLength = prefix.getUint32(12, true);
  const payloadStart = PREFIX_BYTES + headerLength;
  if (payloadStart > size) {
    throw fail(`the header length ${headerLength} runs past the end of the file (${size} bytes); the file is truncated or damaged`);
  }

  const headerText = Buffer.from(bytes.buffer, bytes.byteOffset + PREFIX_BYTES, headerLength).toString('utf8');
  const hashProblem = checkHash(bytes, payloadStart);
  if (hashProblem !== undefined) {
    // A size that differs from what the header describes is the likelier cause, and the more
    // useful message, although the header itself has not passed the hash check.
    const expectedSize = declaredFileSize(headerText, payloadStart);
    if (expectedSize !== undefined && expectedSize !== size) {
      throw fail(`the file has ${size} bytes but its header describes ${expectedSize}; it is truncated or damaged`);
    }
    throw fail(hashProblem);
  }

  let headerJson: unknown;
  try {
    headerJson = JSON.parse(headerText);
  } catch (error) {
    throw fail(`the header is not valid JSON: ${(error as Error).message}`);
  }
  const checked = validateHeader(headerJson);
  if ('problem' in checked) throw fail(`invalid header: ${checked.problem}`);
  const { state, tensors: entries } = checked.header;

  const payloadBytes = size - HASH_BYTES - payloadStart;
  const tableValues = entries.reduce((sum, entry) => sum + entry.length, 0);
  if (payloadBytes !== 4 * tableValues) {
    throw fail(`the payload has ${payloadBytes} bytes but the tensor table describes ${tableValues} float32 values (${4 * tableValues} bytes)`);
  }
  const nameMatch = CHECKPOINT_NAME.exec(path.basename(file));
  if (nameMatch !== null && Number(nameMatch[1]) !== state.iteration) {
    throw fail(`the file name gives iteration ${Number(nameMatch[1])} but the state has iteration ${state.iteration}, so the file was renamed or copied over`);
  }

  const tensors = entries.map((entry) => {
    const start = payloadStart + 4 * entry.offset;
    return { name: entry.name, shape: entry.shape, data: float32FromLittleEndian(bytes.subarray(start, start + 4 * entry.length)) };
  });
  return { state, tensors };
}

/** Compares the SHA-256 trailer with the bytes before it, and returns the problem or undefined when they match. */
function checkHash(bytes: Uint8Array, payloadStart: number): string | undefined {
  const size = bytes.byteLength;
  if (size < payloadStart + HASH_BYTES) return `the file ends ${size - payloadStart} bytes after the header, too short for the ${HASH_BYTES}-byte SHA-256 trailer; it is truncated`;
  const stored = Buffer.from(bytes.buffer, bytes.byteOffset + size - HASH_BYTES, HASH_BYTES).toString('hex');
  const computed = sha256Hex(bytes.subarray(0, size - HASH_BYTES));
  return computed === stored ? undefined : `SHA-256 check failed (stored ${stored}, computed ${computed}); the file is damaged`;
}

/** Computes the file size a header describes, or undefined when the header does not parse. */
function declaredFileSize(headerText: string, payloadStart: number): number | undefined {
  try {
    const header = JSON.parse(headerText) as { tensors?: Array<{ length?: unknown }> };
    if (!Array.isArray(header.tensors)) return undefined;
    const values = header.tensors.reduce((sum, entry) => sum + (typeof entry?.length === 'number' ? entry.length : Number.NaN), 0);
    return Number.isFinite(values) ? payloadStart + 4 * values + HASH_BYTES : undefined;
  } catch {
    return undefined;
  }
}

function hexBytes(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join(' ');
}

/**
 * Loads the newest checkpoint of `dir` that verifies. Each newer one that fails is reported
 * through `onSkip` with the reason, and the next older one is tried. Returns undefined when
 * the folder has no checkpoint that loads (every failure reported). Temporary files of
 * unfinished writes are never considered.
 */
export async function loadLatestCheckpoint(
  dir: string,
  onSkip?: (file: string, reason: string) => void,
): Promise<{ path: string; content: CheckpointContent } | undefined> {
  const newestFirst = (await listCheckpoints(dir)).reverse();
  for (const { path: file } of newestFirst) {
    try {
      return { path: file, content: await loadCheckpoint(file) };
    } catch (error) {
      if (!(error instanceof CheckpointError)) throw error;
      onSkip?.(file, error.problem);
    }
  }
  return undefined;
}
