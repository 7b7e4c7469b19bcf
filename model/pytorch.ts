/**
 * Reads PyTorch checkpoints without Python, and maps a state dict onto a network's parameters.
 *
 * Two `torch.save` formats are read:
 *
 * - **legacy** (before PyTorch 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a
 *   row, then the raw storages in key order. The pickles are the magic number
 *   0x1950a86a20f9469cfc6c, the protocol version 1001, the system info, the saved object, and the
 *   list of storage keys. Each raw storage is an int64 element count followed by the elements.
 * - **zip** (PyTorch 1.6 and later): `PREFIX/data.pkl` is the saved object, and each storage is
 *   the raw little-endian file `PREFIX/data/KEY`.
 *
 * In both, the saved object refers to storages through persistent ids
 * `('storage', StorageClass, key, location, numel[, view_metadata])`, and tensors are rebuilt by
 * `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`.
 * Pickles are decoded with `pickleparser`. Its version 0.2.1 throws on integers wider than 8 bytes,
 * so the magic number (a 10-byte integer) is decoded here.
 *
 * This module contains no TensorFlow.js code. It returns typed arrays in PyTorch's own layouts, and
 * `mapStateDict` converts them to the layouts TensorFlow.js expects.
 */
import { readFile } from 'node:fs/promises';
import { unzipSync } from 'fflate';
import { BufferReader, Parser } from 'pickleparser';

/** Element types of PyTorch storages that this reader decodes. */
export type TorchDtype = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

/**
 * Tensor elements. Each dtype keeps its natural JavaScript array, except float16 and bfloat16,
 * which Node 20 has no typed array for and are widened to Float32Array (exactly), and bool, which
 * is a Uint8Array of 0 and 1.
 */
export type TorchTensorData = Float32Array | Float64Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

/** A tensor from a checkpoint: contiguous, row-major, in PyTorch's own dimension order. */
export interface TorchTensor {
  /** Key in a state dict, or path in the saved object (`net_state_dict.conv1.conv.weight`). */
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: TorchDtype;
  readonly data: TorchTensorData;
}

export interface TorchCheckpoint {
  /** The file the checkpoint was read from, for error messages. */
  readonly path: string;
  readonly format: 'legacy' | 'zip';
  /**
   * The saved object with every tensor in place as a `TorchTensor`. Python dicts and
   * OrderedDicts become `Map`s, tuples and lists become arrays, other classes opaque objects.
   */
  readonly root: unknown;
  /** Every tensor in `root`, by its path (keys joined with '.'). */
  readonly tensors: ReadonlyMap<string, TorchTensor>;
  /** The legacy format's system info, `undefined` for zip files. */
  readonly systemInfo?: { readonly littleEndian: boolean; readonly protocolVersion: number };
}

/** Error for a checkpoint that cannot be read. The message names the file and what was expected. */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
}

/** Error for a state dict that does not fit a network. The message lists every missing, extra or misshapen tensor. */
export class StateDictMismatchError extends Error {
  override readonly name = 'StateDictMismatchError';
}

const LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL_VERSION = 1001;

interface StorageKind {
  readonly dtype: TorchDtype | 'untyped';
  /** Bytes per element; 1 for untyped storages, whose count is in bytes. */
  readonly elementBytes: number;
}

const STORAGE_KINDS: Readonly<Record<string, StorageKind>> = {
  FloatStorage: { dtype: 'float32', elementBytes: 4 },
  DoubleStorage: { dtype: 'float64', elementBytes: 8 },
  HalfStorage: { dtype: 'float16', elementBytes: 2 },
  BFloat16Storage: { dtype: 'bfloat16', elementBytes: 2 },
  LongStorage: { dtype: 'int64', elementBytes: 8 },
  IntStorage: { dtype: 'int32', elementBytes: 4 },
  ShortStorage: { dtype: 'int16', elementBytes: 2 },
  CharStorage: { dtype: 'int8', elementBytes: 1 },
  ByteStorage: { dtype: 'uint8', elementBytes: 1 },
  BoolStorage: { dtype: 'bool', elementBytes: 1 },
  UntypedStorage: { dtype: 'untyped', elementBytes: 1 },
};

const DTYPE_BYTES: Readonly<Record<TorchDtype, number>> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

/** Names of `torch.<dtype>` globals, which `_rebuild_tensor_v3` passes for untyped storages. */
const TORCH_DTYPE_NAMES: Readonly<Record<string, TorchDtype>> = {
  float32: 'float32',
  float: 'float32',
  float64: 'float64',
  double: 'float64',
  float16: 'float16',
  half: 'float16',
  bfloat16: 'bfloat16',
  int64: 'int64',
  long: 'int64',
  int32: 'int32',
  int: 'int32',
  int16: 'int16',
  short: 'int16',
  int8: 'int8',
  uint8: 'uint8',
  bool: 'bool',
};

/** Looks a name read from a file up in a table, ignoring inherited properties such as `constructor`. */
function ownValue<T>(table: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

// ---------------------------------------------------------------------------------------------
// Unpickling: storages and tensors stay pending until the storage bytes have been located.

/** The value `pickleparser` pushes for the global `torch.XStorage`. */
class StorageClassRef {
  constructor(readonly className: string) {}
}

/** The value pushed for a global `torch.<dtype>`. */
class DtypeRef {
  constructor(readonly dtype: TorchDtype) {}
}

/** A storage named by a persistent id; `view` is set when the id names a slice of a root storage. */
class StorageRef {
  constructor(
    readonly className: string,
    readonly key: string,
    readonly location: string,
    readonly numel: number,
    readonly view: { readonly offset: number; readonly numel: number } | undefined,
  ) {}
}

/** A tensor rebuilt by `_rebuild_tensor*`, before its storage has been read. */
class PendingTensor {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
    readonly dtype: TorchDtype | undefined,
  ) {}
}

type PickleCallable = (...args: unknown[]) => unknown;

function toIntegerList(value: unknown, description: string): number[] {
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'number' && Number.isInteger(v))) {
    throw new Error(`expected ${description} to be a tuple of integers, found ${describeValue(value)}`);
  }
  return value as number[];
}

function rebuildTensor(storage: unknown, offset: unknown, size: unknown, stride: unknown, dtype?: unknown): PendingTensor {
  if (!(storage instanceof StorageRef)) {
    throw new Error(`expected a storage as the first argument of a tensor rebuild, found ${describeValue(storage)}`);
  }
  if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0) {
    throw new Error(`expected a non-negative integer storage offset, found ${describeValue(offset)}`);
  }
  const shape = toIntegerList(size, 'the tensor size');
  const strides = toIntegerList(stride, 'the tensor stride');
  if (shape.length !== strides.length) {
    throw new Error(`tensor size [${shape.join(', ')}] and stride [${strides.join(', ')}] differ in rank`);
  }
  return new PendingTensor(storage, offset, shape, strides, dtype instanceof DtypeRef ? dtype.dtype : undefined);
}

/** Resolves the globals a checkpoint names. Unknown ones become opaque stand-ins (see `createOpaqueGlobal`). */
class TorchNameResolver {
  resolve(module: string, name: string): PickleCallable {
    const qualified = `${module}.${name}`;
    switch (qualified) {
      case 'collections.OrderedDict':
        return (items?: unknown) => new Map(Array.isArray(items) ? (items as Array<[unknown, unknown]>) : []);
      case 'torch._utils._rebuild_tensor':
      case 'torch._utils._rebuild_tensor_v2':
        return (storage, offset, size, stride) => rebuildTensor(storage, offset, size, stride);
      case 'torch._utils._rebuild_tensor_v3':
        return (storage, offset, size, stride, _requiresGrad, _hooks, dtype) => rebuildTensor(storage, offset, size, stride, dtype);
      case 'torch._utils._rebuild_parameter':
      case 'torch._utils._rebuild_parameter_with_state':
        return (data) => data;
    }
    if ((module === 'torch' || module === 'torch.storage') && name.endsWith('Storage')) {
      return new StorageClassRef(name) as unknown as PickleCallable;
    }
    const dtype = ownValue(TORCH_DTYPE_NAMES, name);
    if (module === 'torch' && dtype !== undefined) {
      return new DtypeRef(dtype) as unknown as PickleCallable;
    }
    // NOTE: other rebuild functions (quantized, sparse, nested tensors) fall through to opaque
    // objects, so such a tensor is not listed in `tensors` and a state dict lookup rejects it.
    return createOpaqueGlobal(qualified);
  }
}

/** Creates a stand-in for a Python global that this reader does not model. Calling or constructing it records the arguments. */
function createOpaqueGlobal(qualifiedName: string): PickleCallable {
  const opaque = function (this: unknown, ...args: unknown[]) {
    return { pythonClass: qualifiedName, args };
  };
  return opaque;
}

function storageFromPersistentId(pid: unknown): StorageRef {
  if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) {
    throw new Error(`expected a persistent id ('storage', StorageClass, key, location, numel, ...), found ${describeValue(pid)}`);
  }
  const [, storageClass, key, location, numel, viewMetadata] = pid as unknown[];
  if (!(storageClass instanceof StorageClassRef)) {
    throw new Error(`expected a torch storage class in persistent id, found ${describeValue(storageClass)}`);
  }
  if (typeof key !== 'string' || typeof location !== 'string' || typeof numel !== 'number') {
    throw new Error(`expected (key: str, location: str, numel: int) in persistent id, found ${describeValue(pid)}`);
  }
  let view: StorageRef['view'];
  if (viewMetadata !== undefined && viewMetadata !== null) {
    const [viewKey, viewOffset, viewNumel] = Array.isArray(viewMetadata) ? (viewMetadata as unknown[]) : [];
    if (typeof viewKey !== 'string' || typeof viewOffset !== 'number' || typeof viewNumel !== 'number') {
      throw new Error(`expected view metadata (key, offset, size), found ${describeValue(viewMetadata)}`);
    }
    view = { offset: viewOffset, numel: viewNumel };
  }
  return new StorageRef(storageClass.className, key, location, numel, view);
}

function createParser(storages: StorageRef[]): Parser {
  return new Parser({
    nameResolver: new TorchNameResolver(),
    persistentResolver: {
      resolve: (pid: unknown) => {
        const storage = storageFromPersistentId(pid);
        storages.push(storage);
        return storage;
      },
    },
    unpicklingTypeOfDictionary: 'Map',
  });
}

function describeValue(value: unknown): string {
  if (value instanceof StorageClassRef) return `torch.${value.className}`;
  if (value instanceof DtypeRef) return `torch.${value.dtype}`;
  if (typeof value === 'bigint') return `${value}`;
  try {
    const text = JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? `${v}` : v));
    if (text !== undefined) return text.length > 120 ? `${text.slice(0, 117)}...` : text;
  } catch {
    // Fall through to String() for cyclic or exotic values.
  }
  return String(value);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------------------------
// Storage decoding and tensor materialisation.

function decodeElements(bytes: Uint8Array, dtype: TorchDtype, count: number): TorchTensorData {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'float32': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    }
    case 'float64': {
      const out = new Float64Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      return out;
    }
    case 'float16': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
      return out;
    }
    case 'bfloat16': {
      // bfloat16 is the upper half of a float32.
      const out = new Float32Array(count);
      const widened = new DataView(out.buffer);
      for (let i = 0; i < count; i++) widened.setUint32(4 * i, view.getUint16(2 * i, true) << 16, true);
      return out;
    }
    case 'int64': {
      const out = new BigInt64Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getBigInt64(8 * i, true);
      return out;
    }
    case 'int32': {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt32(4 * i, true);
      return out;
    }
    case 'int16': {
      const out = new Int16Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt16(2 * i, true);
      return out;
    }
    case 'int8':
      return new Int8Array(bytes.slice(0, count).buffer);
    case 'uint8':
      return bytes.slice(0, count);
    case 'bool': {
      const out = bytes.slice(0, count);
      for (let i = 0; i < count; i++) out[i] = out[i] === 0 ? 0 : 1;
      return out;
    }
  }
}

/** Converts IEEE 754 binary16 bits to a number. */
function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 0x1f) return fraction === 0 ? sign * Infinity : NaN;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

function allocateLike(data: TorchTensorData, length: number): TorchTensorData {
  const Constructor = data.constructor as new (length: number) => TorchTensorData;
  return new Constructor(length);
}

function productOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Copies the elements a (size, stride, offset) view selects out of its storage into a new
 * contiguous row-major array. A contiguous view that spans the whole storage is returned as is.
 */
function materialiseView(storage: TorchTensorData, offset: number, shape: readonly number[], stride: readonly number[]): TorchTensorData {
  const numel = productOf(shape);
  if (numel === 0) return allocateLike(storage, 0);

  let lastIndex = offset;
  for (let d = 0; d < shape.length; d++) lastIndex += ((shape[d] ?? 1) - 1) * (stride[d] ?? 0);
  if (lastIndex >= storage.length || stride.some((s) => s < 0)) {
    throw new Error(`the view reaches storage element ${lastIndex} but the storage has ${storage.length} elements`);
  }

  let contiguous = true;
  let expectedStride = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if ((shape[d] ?? 1) !== 1 && stride[d] !== expectedStride) contiguous = false;
    expectedStride *= shape[d] ?? 1;
  }
  if (contiguous) {
    return offset === 0 && numel === storage.length ? storage : storage.slice(offset, offset + numel);
  }

  const out = allocateLike(storage, numel);
  const index = new Array<number>(shape.length).fill(0);
  let source = offset;
  for (let i = 0; i < numel; i++) {
    (out as unknown as { [k: number]: number | bigint })[i] = storage[source] as number | bigint;
    // Advance the multi-index like an odometer, keeping the storage position in step.
    for (let d = shape.length - 1; d >= 0; d--) {
      const next = (index[d] ?? 0) + 1;
      if (next < (shape[d] ?? 1)) {
        index[d] = next;
        source += stride[d] ?? 0;
        break;
      }
      index[d] = 0;
      source -= ((shape[d] ?? 1) - 1) * (stride[d] ?? 0);
    }
  }
  return out;
}

/** Decoded storages by key, with the raw bytes for untyped ones that take their dtype from the tensor. */
type StorageTable = Map<string, { readonly kind: StorageKind; readonly bytes: Uint8Array; readonly count: number }>;

/** Replaces every `PendingTensor` in the object tree by a `TorchTensor` and lists them by path. */
function materialiseTree(root: unknown, table: StorageTable, path: string): { root: unknown; tensors: Map<string, TorchTensor> } {
  const tensors = new Map<string, TorchTensor>();
  const decoded = new Map<string, TorchTensorData>();
  const done = new Map<PendingTensor, TorchTensor>();

  const storageData = (ref: StorageRef, dtype: TorchDtype): TorchTensorData => {
    const cacheKey = `${ref.key}:${dtype}`;
    const cached = decoded.get(cacheKey);
    if (cached !== undefined) return cached;
    const entry = table.get(ref.key);
    if (entry === undefined) throw new CheckpointError(`${path}: storage "${ref.key}" is referenced but was not found in the file`);
    const count = entry.kind.dtype === 'untyped' ? Math.floor(entry.count / DTYPE_BYTES[dtype]) : entry.count;
    const data = decodeElements(entry.bytes, dtype, count);
    decoded.set(cacheKey, data);
    return data;
  };

  const convert = (pending: PendingTensor, name: string): TorchTensor => {
    const previous = done.get(pending);
    if (previous !== undefined) return previous;
    const kind = ownValue(STORAGE_KINDS, pending.storage.className);
    if (kind === undefined) {
      throw new CheckpointError(
        `${path}: tensor "${name}" uses unknown storage type torch.${pending.storage.className}; ` +
          `expected one of ${Object.keys(STORAGE_KINDS).map((k) => `torch.${k}`).join(', ')}`,
      );
    }
    // NOTE: untyped storages with `_rebuild_tensor_v3` follow the PyTorch 2.x source and have not
    // been tried on a real file; PyTorch 2.x still writes typed storage classes for tensors.
    const dtype = kind.dtype === 'untyped' ? pending.dtype : kind.dtype;
    if (dtype === undefined) {
      throw new CheckpointError(`${path}: tensor "${name}" is stored in an untyped storage but its rebuild call gives no dtype`);
    }
    let storage = storageData(pending.storage, dtype);
    if (pending.storage.view !== undefined) {
      storage = storage.subarray(pending.storage.view.offset, pending.storage.view.offset + pending.storage.view.numel);
    }
    let data: TorchTensorData;
    try {
      data = materialiseView(storage, pending.offset, pending.shape, pending.stride);
    } catch (error) {
      throw new CheckpointError(`${path}: tensor "${name}" (storage "${pending.storage.key}"): ${errorMessage(error)}`);
    }
    const tensor: TorchTensor = { name, shape: [...pending.shape], dtype, data };
    done.set(pending, tensor);
    tensors.set(name, tensor);
    return tensor;
  };

  const visit = (value: unknown, name: string, seen: Set<object>): unknown => {
    if (value instanceof PendingTensor) return convert(value, name);
    if (typeof value !== 'object' || value === null || seen.has(value)) return value;
    seen.add(value);
    const join = (key: unknown) => (name === '' ? String(key) : `${name}.${String(key)}`);
    if (value instanceof Map) {
      for (const [key, item] of value) value.set(key, visit(item, join(key), seen));
    } else if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) value[i] = visit(value[i], join(i), seen);
    } else if (!ArrayBuffer.isView(value)) {
      const record = value as Record<string, unknown>;
      for (const key of Object.keys(record)) record[key] = visit(record[key], join(key), seen);
    }
    return value;
  };

  return { root: visit(root, '', new Set()), tensors };
}

// ---------------------------------------------------------------------------------------------
// The two file formats.

function isZip(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04;
}

/**
 * Reads the legacy format's first pickle, an integer, and returns it. `pickleparser` 0.2.1 cannot
 * hold integers above 2^53, so the opcodes a Python pickler can use for it are decoded here:
 * an optional PROTO, then LONG1, LONG4, LONG (text), BININT or INT, then STOP.
 */
function readMagicNumber(reader: BufferReader): bigint {
  const take = (): number => reader.byte();
  let opcode = take();
  if (opcode === 0x80) {
    take(); // protocol version of this pickle
    opcode = take();
  }
  let value: bigint;
  if (opcode === 0x8a || opcode === 0x8b) {
    const length = opcode === 0x8a ? take() : reader.uint32();
    const bytes = reader.bytes(length);
    value = 0n;
    for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i] ?? 0);
    if (length > 0 && ((bytes[length - 1] ?? 0) & 0x80) !== 0) value -= 1n << BigInt(8 * length);
  } else if (opcode === 0x4c || opcode === 0x49) {
    value = BigInt(reader.line().replace(/L$/, ''));
  } else if (opcode === 0x4a) {
    value = BigInt(reader.int32());
  } else {
    throw new Error(`expected an integer opcode, found byte 0x${opcode.toString(16)}`);
  }
  const stop = take();
  if (stop !== 0x2e) throw new Error(`expected STOP after the magic number, found byte 0x${stop.toString(16)}`);
  return value;
}

function parseLegacy(bytes: Uint8Array, path: string): TorchCheckpoint {
  const reader = new BufferReader(bytes);

  let magic: bigint;
  try {
    magic = readMagicNumber(reader);
  } catch (error) {
    throw new CheckpointError(
      `${path}: not a PyTorch checkpoint: expected a zip archive or the legacy torch.save magic number 0x${LEGACY_MAGIC_NUMBER.toString(16)} (${errorMessage(error)})`,
    );
  }
  if (magic !== LEGACY_MAGIC_NUMBER) {
    throw new CheckpointError(
      `${path}: not a PyTorch checkpoint: the first pickle contains 0x${magic.toString(16)} but the legacy torch.save magic number is 0x${LEGACY_MAGIC_NUMBER.toString(16)}`,
    );
  }

  const storages: StorageRef[] = [];
  const readPickle = <T>(part: string): T => {
    try {
      return createParser(storages).read<T>(reader);
    } catch (error) {
      throw new CheckpointError(`${path}: invalid ${part} pickle at byte ${reader.position}: ${errorMessage(error)}`);
    }
  };

  const protocolVersion = readPickle<unknown>('protocol version');
  if (protocolVersion !== LEGACY_PROTOCOL_VERSION) {
    throw new CheckpointError(`${path}: legacy protocol version is ${describeValue(protocolVersion)}, expected ${LEGACY_PROTOCOL_VERSION}`);
  }
  const systemInfo = readPickle<unknown>('system info');
  const littleEndian = systemInfo instanceof Map ? systemInfo.get('little_endian') : undefined;
  if (littleEndian !== true) {
    throw new CheckpointError(`${path}: the system info gives little_endian = ${describeValue(littleEndian)}; only little-endian checkpoints are supported`);
  }
  const root = readPickle<unknown>('saved object');
  const keys = readPickle<unknown>('storage key list');
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) {
    throw new CheckpointError(`${path}: expected a list of storage keys after the saved object, found ${describeValue(keys)}`);
  }

  // Root storages by key. A persistent id with view metadata carries the root storage's numel.
  const rootKinds = new Map<string, StorageRef>();
  for (const ref of storages) rootKinds.set(ref.key, ref);

  const table: StorageTable = new Map();
  let position = reader.position;
  for (const key of keys as string[]) {
    const ref = rootKinds.get(key);
    const kind = ref === undefined ? undefined : ownValue(STORAGE_KINDS, ref.className);
    if (ref === undefined || kind === undefined) {
      throw new CheckpointError(
        `${path}: storage "${key}" has ${ref === undefined ? 'no persistent id in the saved object' : `unknown storage type torch.${ref.className}`}; ` +
          `expected one of ${Object.keys(STORAGE_KINDS).map((k) => `torch.${k}`).join(', ')}`,
      );
    }
    if (position + 8 > bytes.length) {
      throw new CheckpointError(`${path}: truncated: storage "${key}" should start at byte ${position} but the file has ${bytes.length} bytes`);
    }
    const count = Number(new DataView(bytes.buffer, bytes.byteOffset + position, 8).getBigInt64(0, true));
    const end = position + 8 + count * kind.elementBytes;
    if (end > bytes.length) {
      throw new CheckpointError(
        `${path}: truncated: storage "${key}" has ${count} ${kind.dtype} elements (bytes ${position + 8}..${end}) but the file has ${bytes.length} bytes`,
      );
    }
    table.set(key, { kind, bytes: bytes.subarray(position + 8, end), count });
    position = end;
  }

  const materialised = materialiseTree(root, table, path);
  return { path, format: 'legacy', root: materialised.root, tensors: materialised.tensors, systemInfo: { littleEndian, protocolVersion: LEGACY_PROTOCOL_VERSION } };
}

function parseZip(bytes: Uint8Array, path: string): TorchCheckpoint {
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(bytes);
  } catch (error) {
    throw new CheckpointError(`${path}: invalid zip archive: ${errorMessage(error)}`);
  }
  const pickleName = Object.keys(entries).find((name) => name === 'data.pkl' || name.endsWith('/data.pkl'));
  if (pickleName === undefined) {
    throw new CheckpointError(`${path}: the zip archive has no PREFIX/data.pkl, so it is not a torch.save checkpoint (entries: ${Object.keys(entries).slice(0, 10).join(', ')})`);
  }
  const prefix = pickleName.slice(0, -'data.pkl'.length);

  const byteOrder = entries[`${prefix}byteorder`];
  if (byteOrder !== undefined && new TextDecoder().decode(byteOrder).trim() !== 'little') {
    throw new CheckpointError(`${path}: ${prefix}byteorder is "${new TextDecoder().decode(byteOrder).trim()}"; only little-endian checkpoints are supported`);
  }

  const storages: StorageRef[] = [];
  let root: unknown;
  try {
    root = createParser(storages).parse(entries[pickleName] as Uint8Array);
  } catch (error) {
    throw new CheckpointError(`${path}: invalid pickle in ${pickleName}: ${errorMessage(error)}`);
  }

  const table: StorageTable = new Map();
  for (const ref of storages) {
    if (table.has(ref.key)) continue;
    const kind = ownValue(STORAGE_KINDS, ref.className);
    if (kind === undefined) {
      throw new CheckpointError(
        `${path}: storage "${ref.key}" has unknown storage type torch.${ref.className}; expected one of ${Object.keys(STORAGE_KINDS).map((k) => `torch.${k}`).join(', ')}`,
      );
    }
    const entryName = `${prefix}data/${ref.key}`;
    const data = entries[entryName];
    if (data === undefined) throw new CheckpointError(`${path}: storage file ${entryName} is missing from the zip archive`);
    const needed = ref.numel * kind.elementBytes;
    if (data.length < needed) {
      throw new CheckpointError(`${path}: truncated: ${entryName} has ${data.length} bytes but storage "${ref.key}" needs ${needed} (${ref.numel} × ${kind.elementBytes})`);
    }
    table.set(ref.key, { kind, bytes: data, count: ref.numel });
  }

  const materialised = materialiseTree(root, table, path);
  return { path, format: 'zip', root: materialised.root, tensors: materialised.tensors };
}

/**
 * Parses a checkpoint held in memory; `path` only names it in error messages.
 * @throws CheckpointError when the bytes are neither format, or a pickle or storage is invalid or truncated.
 */
export function parseTorchCheckpoint(bytes: Uint8Array, path: string): TorchCheckpoint {
  return isZip(bytes) ? parseZip(bytes, path) : parseLegacy(bytes, path);
}

/** Reads a `torch.save` file in either format; see `parseTorchCheckpoint`. */
export async function readTorchCheckpoint(path: string): Promise<TorchCheckpoint> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new CheckpointError(`${path}: cannot read the checkpoint: ${errorMessage(error)}`);
  }
  return parseTorchCheckpoint(bytes, path);
}

// ---------------------------------------------------------------------------------------------
// State dicts.

/** Keys under which training scripts commonly save the model's state dict, tried in this order. */
export const STATE_DICT_KEYS = ['state_dict', 'net_state_dict', 'model_state_dict', 'model'] as const;

export function isTorchTensor(value: unknown): value is TorchTensor {
  return typeof value === 'object' && value !== null && 'dtype' in value && 'shape' in value && 'data' in value && ArrayBuffer.isView((value as TorchTensor).data);
}

function asTensorMap(value: unknown): Map<unknown, TorchTensor> | undefined {
  if (!(value instanceof Map) || value.size === 0) return undefined;
  for (const item of value.values()) if (!isTorchTensor(item)) return undefined;
  return value as Map<unknown, TorchTensor>;
}

/**
 * Finds the state dict in a checkpoint: the dict under `key` when given, otherwise the saved
 * object itself when it is a dict of tensors, otherwise the first of `STATE_DICT_KEYS` whose
 * value is one. When every key starts with `module.` (a model wrapped in `nn.DataParallel`), that prefix is
 * removed. Each returned tensor is named by its key.
 */
export function stateDict(checkpoint: TorchCheckpoint, key?: string): Map<string, TorchTensor> {
  const root = checkpoint.root;
  let found: Map<unknown, TorchTensor> | undefined;
  if (key !== undefined) {
    const value = root instanceof Map ? root.get(key) : undefined;
    found = asTensorMap(value);
    if (found === undefined) {
      throw new CheckpointError(`${checkpoint.path}: "${key}" is ${value === undefined ? 'not a key of the saved object' : 'not a dict of tensors'}`);
    }
  } else {
    found = asTensorMap(root);
    for (const candidate of STATE_DICT_KEYS) {
      if (found !== undefined) break;
      if (root instanceof Map) found = asTensorMap(root.get(candidate));
    }
    if (found === undefined) {
      const keys = root instanceof Map ? [...root.keys()].map(String).join(', ') : describeValue(root);
      throw new CheckpointError(
        `${checkpoint.path}: no state dict found: expected a dict of tensors at the top level or under one of ${STATE_DICT_KEYS.join(', ')}; the saved object has keys ${keys}`,
      );
    }
  }

  const names = [...found.keys()].map(String);
  const stripModule = names.length > 0 && names.every((n) => n.startsWith('module.'));
  const result = new Map<string, TorchTensor>();
  for (const [rawName, tensor] of found) {
    const name = stripModule ? String(rawName).slice('module.'.length) : String(rawName);
    result.set(name, { ...tensor, name });
  }
  return result;
}

/** Returns the elements of a floating-point tensor as float32, copying unless they already are. */
export function toFloat32(tensor: TorchTensor): Float32Array {
  if (tensor.data instanceof Float32Array) return tensor.data;
  if (tensor.data instanceof BigInt64Array) return Float32Array.from(tensor.data, (v) => Number(v));
  return Float32Array.from(tensor.data);
}

// ---------------------------------------------------------------------------------------------
// Mapping a state dict onto a network's parameters.

/**
 * Layout of a PyTorch tensor relative to the TensorFlow.js parameter it fills:
 * - `conv2d`: PyTorch [out, in, kh, kw] (OIHW) → tfjs [kh, kw, in, out] (HWIO);
 * - `depthwise`: PyTorch [C·m, 1, kh, kw] (grouped conv, groups = C) → tfjs [kh, kw, C, m];
 * - `linear`: PyTorch [out, in] → tfjs [in, out];
 * - `linear-chw`: as `linear`, where `in` indexes a C×H×W feature map flattened in CHW order
 *   (PyTorch and Caffe) and the tfjs rows follow the NHWC flatten order (HWC);
 * - `vector`: the same shape on both sides (biases, BatchNorm statistics, PReLU slopes).
 */
export type TorchLayout =
  | 'conv2d'
  | 'depthwise'
  | 'linear'
  | 'vector'
  | { readonly kind: 'linear-chw'; readonly channels: number; readonly height: number; readonly width: number };

/** One parameter of a network, named as in the PyTorch state dict, with its TensorFlow.js shape. */
export interface ParameterSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly layout: TorchLayout;
}

/** A parameter's values in the TensorFlow.js layout of its spec. */
export interface MappedParameter {
  readonly name: string;
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** Returns the PyTorch shape that a parameter of the given TensorFlow.js shape and layout comes from. */
export function torchShapeOf(spec: ParameterSpec): number[] {
  const s = spec.shape;
  const dim = (i: number): number => {
    const value = s[i];
    if (value === undefined) throw new Error(`parameter "${spec.name}" has shape [${s.join(', ')}], too few dimensions for layout ${describeLayout(spec.layout)}`);
    return value;
  };
  if (typeof spec.layout === 'object') return [dim(1), dim(0)];
  switch (spec.layout) {
    case 'conv2d':
      return [dim(3), dim(2), dim(0), dim(1)];
    case 'depthwise':
      return [dim(2) * dim(3), 1, dim(0), dim(1)];
    case 'linear':
      return [dim(1), dim(0)];
    case 'vector':
      return [...s];
  }
}

function describeLayout(layout: TorchLayout): string {
  return typeof layout === 'object' ? `linear-chw(${layout.channels}×${layout.height}×${layout.width})` : layout;
}

/** Converts PyTorch [out, in, kh, kw] to tfjs [kh, kw, in, out]. */
export function oihwToHwio(data: Float32Array, out: number, inChannels: number, kh: number, kw: number): Float32Array {
  const result = new Float32Array(data.length);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inChannels; i++) {
      for (let y = 0; y < kh; y++) {
        for (let x = 0; x < kw; x++) {
          result[((y * kw + x) * inChannels + i) * out + o] = data[((o * inChannels + i) * kh + y) * kw + x] ?? 0;
        }
      }
    }
  }
  return result;
}

/** Converts a PyTorch Linear weight [out, in] to tfjs [in, out]. */
export function transposeLinear(data: Float32Array, out: number, inFeatures: number): Float32Array {
  const result = new Float32Array(data.length);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inFeatures; i++) result[i * out + o] = data[o * inFeatures + i] ?? 0;
  }
  return result;
}

/**
 * Converts a Linear weight [out, C·H·W] into tfjs [H·W·C, out]. The weight's inputs are a feature
 * map flattened in CHW order, as PyTorch's `view(N, -1)` of NCHW and Caffe's InnerProduct do. The
 * rows of the result follow the flatten order of an NHWC tensor, so input (c, y, x) moves from
 * column c·H·W + y·W + x to row (y·W + x)·C + c.
 */
export function linearChwToHwc(data: Float32Array, out: number, channels: number, height: number, width: number): Float32Array {
  const inFeatures = channels * height * width;
  if (data.length !== out * inFeatures) {
    throw new Error(`Linear weight has ${data.length} elements, expected ${out} × ${channels}·${height}·${width} = ${out * inFeatures}`);
  }
  const result = new Float32Array(data.length);
  for (let o = 0; o < out; o++) {
    for (let c = 0; c < channels; c++) {
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const chw = (c * height + y) * width + x;
          const hwc = (y * width + x) * channels + c;
          result[hwc * out + o] = data[o * inFeatures + chw] ?? 0;
        }
      }
    }
  }
  return result;
}

function convertLayout(data: Float32Array, spec: ParameterSpec, torchShape: readonly number[]): Float32Array {
  const [a = 1, b = 1, c = 1, d = 1] = torchShape;
  if (typeof spec.layout === 'object') {
    return linearChwToHwc(data, a, spec.layout.channels, spec.layout.height, spec.layout.width);
  }
  switch (spec.layout) {
    case 'conv2d':
      return oihwToHwio(data, a, b, c, d);
    case 'depthwise': {
      // [C·m, 1, kh, kw] → [kh, kw, C, m]: output channel C·m index k = ch·m + j lands at (ch, j),
      // which is the same flat index, so this is OIHW → HWIO with in = 1.
      return oihwToHwio(data, a, 1, c, d);
    }
    case 'linear':
      return transposeLinear(data, a, b);
    case 'vector':
      return data;
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

const FLOAT_DTYPES: ReadonlySet<TorchDtype> = new Set(['float32', 'float64', 'float16', 'bfloat16']);

/**
 * Fills a network's parameters from a state dict, converting each tensor to the TensorFlow.js
 * layout of its spec. Every problem is collected and reported in one `StateDictMismatchError`:
 * a parameter with no tensor, a tensor no parameter uses, a tensor of the wrong shape (both
 * shapes named) or a non-floating-point tensor. BatchNorm's `num_batches_tracked` counters are
 * always ignored because inference does not use them. `ignore` lists further keys, or key
 * prefixes ending in '.', that may be left unused, such as a training-only classifier head.
 */
export function mapStateDict(
  state: ReadonlyMap<string, TorchTensor>,
  specs: readonly ParameterSpec[],
  options: { readonly source: string; readonly ignore?: readonly string[] },
): Map<string, MappedParameter> {
  const problems: string[] = [];
  const result = new Map<string, MappedParameter>();
  const ignored = (key: string) =>
    key.endsWith('num_batches_tracked') || (options.ignore ?? []).some((p) => (p.endsWith('.') ? key.startsWith(p) : key === p));

  for (const spec of specs) {
    const expected = torchShapeOf(spec);
    const tensor = state.get(spec.name);
    if (tensor === undefined) {
      problems.push(`missing tensor "${spec.name}" (expected shape [${expected.join(', ')}])`);
      continue;
    }
    if (!sameShape(tensor.shape, expected)) {
      problems.push(`tensor "${spec.name}" has shape [${tensor.shape.join(', ')}] but the network expects [${expected.join(', ')}]`);
      continue;
    }
    if (!FLOAT_DTYPES.has(tensor.dtype)) {
      problems.push(`tensor "${spec.name}" has dtype ${tensor.dtype}, expected a floating-point dtype`);
      continue;
    }
    result.set(spec.name, { name: spec.name, shape: spec.shape, data: convertLayout(toFloat32(tensor), spec, expected) });
  }

  const parameterNames = new Set(specs.map((s) => s.name));
  for (const [key, tensor] of state) {
    if (!parameterNames.has(key) && !ignored(key)) problems.push(`unexpected tensor "${key}" with shape [${tensor.shape.join(', ')}] is not a parameter of the network`);
  }

  if (problems.length > 0) {
    const listed = problems.slice(0, 20);
    const more = problems.length > listed.length ? `\n  ... and ${problems.length - listed.length} more` : '';
    throw new StateDictMismatchError(`${options.source}: the state dict does not match the network:\n  ${listed.join('\n  ')}${more}`);
  }
  return result;
}
