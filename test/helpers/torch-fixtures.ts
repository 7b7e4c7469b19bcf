/**
 * Writes small PyTorch checkpoints byte by byte, in both `torch.save` formats, so the importer
 * can be tested without Python. The pickles use protocol-2 opcodes the way `torch.save` emits
 * them: a state dict is an OrderedDict built with REDUCE and SETITEMS, and each tensor is
 * `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` with the
 * storage given as a BINPERSID persistent id.
 */
import { zipSync } from 'fflate';

export type FixtureStorageType = 'FloatStorage' | 'DoubleStorage' | 'HalfStorage' | 'LongStorage' | 'IntStorage' | 'ComplexFloatStorage';

export interface FixtureStorage {
  readonly key: string;
  readonly type: FixtureStorageType;
  /** Element count as written in the persistent id and the legacy size header. */
  readonly numel: number;
  /** Raw little-endian element bytes. */
  readonly bytes: Uint8Array;
}

export interface FixtureTensor {
  readonly name: string;
  readonly storage: string;
  readonly offset: number;
  readonly shape: readonly number[];
  readonly stride: readonly number[];
  /**
   * Legacy format only: the tensor's storage is a slice of `storage`, written as the persistent
   * id's view metadata (view key, element offset, element count), as PyTorch before 0.4 did.
   */
  readonly view?: { readonly key: string; readonly offset: number; readonly numel: number };
}

export interface FixtureCheckpoint {
  readonly storages: readonly FixtureStorage[];
  readonly tensors: readonly FixtureTensor[];
  /** When set, the state dict is saved as `{ [wrapKey]: state_dict, epoch: 3 }`, as training scripts do. */
  readonly wrapKey?: string;
}

/** Packs numbers as little-endian storage bytes of the given type. */
export function storageBytes(type: FixtureStorageType, values: readonly number[]): Uint8Array {
  const size = { FloatStorage: 4, DoubleStorage: 8, HalfStorage: 2, LongStorage: 8, IntStorage: 4, ComplexFloatStorage: 8 }[type];
  const view = new DataView(new ArrayBuffer(values.length * size));
  values.forEach((v, i) => {
    if (type === 'FloatStorage') view.setFloat32(i * 4, v, true);
    else if (type === 'DoubleStorage') view.setFloat64(i * 8, v, true);
    else if (type === 'LongStorage') view.setBigInt64(i * 8, BigInt(v), true);
    else if (type === 'IntStorage') view.setInt32(i * 4, v, true);
    else if (type === 'HalfStorage') view.setUint16(i * 2, v, true); // values are given as raw binary16 bits
    else view.setFloat32(i * 8, v, true);
  });
  return new Uint8Array(view.buffer);
}

/** Protocol-2 pickle opcodes, written one by one. */
class PickleWriter {
  private readonly bytes: number[] = [];

  private raw(...values: number[]): this {
    this.bytes.push(...values);
    return this;
  }

  private uint32(value: number): this {
    return this.raw(value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff);
  }

  proto(): this {
    return this.raw(0x80, 2);
  }

  global(module: string, name: string): this {
    this.raw(0x63);
    for (const ch of `${module}\n${name}\n`) this.raw(ch.charCodeAt(0));
    return this;
  }

  string(value: string): this {
    const encoded = new TextEncoder().encode(value);
    this.raw(0x58).uint32(encoded.length);
    return this.raw(...encoded);
  }

  int(value: number): this {
    if (value >= 0 && value < 256) return this.raw(0x4b, value);
    if (value >= 0 && value < 65536) return this.raw(0x4d, value & 0xff, value >>> 8);
    return this.raw(0x4a).uint32(value);
  }

  mark = () => this.raw(0x28);
  tuple = () => this.raw(0x74);
  emptyTuple = () => this.raw(0x29);
  emptyDict = () => this.raw(0x7d);
  emptyList = () => this.raw(0x5d);
  appends = () => this.raw(0x65);
  setItems = () => this.raw(0x75);
  reduce = () => this.raw(0x52);
  none = () => this.raw(0x4e);
  newTrue = () => this.raw(0x88);
  newFalse = () => this.raw(0x89);
  persistentId = () => this.raw(0x51);
  stop = () => this.raw(0x2e);

  intTuple(values: readonly number[]): this {
    this.mark();
    for (const v of values) this.int(v);
    return this.tuple();
  }

  orderedDict(): this {
    return this.global('collections', 'OrderedDict').emptyTuple().reduce();
  }

  toBytes(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

function pickleSavedObject(checkpoint: FixtureCheckpoint, legacy: boolean): Uint8Array {
  const w = new PickleWriter().proto();
  const types = new Map(checkpoint.storages.map((s) => [s.key, s]));
  if (checkpoint.wrapKey !== undefined) w.emptyDict().mark().string('epoch').int(3).string(checkpoint.wrapKey);

  w.orderedDict().mark();
  for (const tensor of checkpoint.tensors) {
    const storage = types.get(tensor.storage);
    if (storage === undefined) throw new Error(`fixture tensor ${tensor.name} names unknown storage ${tensor.storage}`);
    w.string(tensor.name).global('torch._utils', '_rebuild_tensor_v2').mark();
    w.mark().string('storage').global('torch', storage.type).string(storage.key).string('cpu').int(storage.numel);
    if (legacy && tensor.view !== undefined) w.mark().string(tensor.view.key).int(tensor.view.offset).int(tensor.view.numel).tuple();
    else if (legacy) w.none();
    w.tuple().persistentId();
    w.int(tensor.offset).intTuple(tensor.shape).intTuple(tensor.stride).newFalse().orderedDict();
    w.tuple().reduce();
  }
  w.setItems();

  if (checkpoint.wrapKey !== undefined) w.setItems();
  return w.stop().toBytes();
}

/** Builds a zip-format checkpoint (`torch.save` since PyTorch 1.6) under the archive folder `prefix`. */
export function zipCheckpoint(checkpoint: FixtureCheckpoint, prefix = 'archive'): Uint8Array {
  const files: Record<string, Uint8Array> = {
    [`${prefix}/data.pkl`]: pickleSavedObject(checkpoint, false),
    [`${prefix}/byteorder`]: new TextEncoder().encode('little'),
    [`${prefix}/version`]: new TextEncoder().encode('3\n'),
  };
  for (const s of checkpoint.storages) files[`${prefix}/data/${s.key}`] = s.bytes;
  return zipSync(files, { level: 0 });
}

/** Builds a legacy-format checkpoint: five pickles, then each storage as int64 count + bytes. */
export function legacyCheckpoint(checkpoint: FixtureCheckpoint): Uint8Array {
  const magic = Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);
  const protocol = new PickleWriter().proto().int(1001).stop().toBytes();
  const systemInfo = new PickleWriter()
    .proto()
    .emptyDict()
    .mark()
    .string('protocol_version')
    .int(1001)
    .string('little_endian')
    .newTrue()
    .string('type_sizes')
    .emptyDict()
    .mark()
    .string('short')
    .int(2)
    .string('int')
    .int(4)
    .string('long')
    .int(8)
    .setItems()
    .setItems()
    .stop()
    .toBytes();
  const keys = new PickleWriter().proto().emptyList().mark();
  for (const s of checkpoint.storages) keys.string(s.key);
  const keyList = keys.appends().stop().toBytes();

  const parts: Uint8Array[] = [magic, protocol, systemInfo, pickleSavedObject(checkpoint, true), keyList];
  for (const s of checkpoint.storages) {
    const header = new DataView(new ArrayBuffer(8));
    header.setBigInt64(0, BigInt(s.numel), true);
    parts.push(new Uint8Array(header.buffer), s.bytes);
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let position = 0;
  for (const p of parts) {
    out.set(p, position);
    position += p.length;
  }
  return out;
}
