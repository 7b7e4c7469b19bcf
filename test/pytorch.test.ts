import path from 'node:path';
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import t, { type Test } from 'tap';
import { mobileFaceNetCheckpoint } from '../lib/paths.ts';
import {
  CheckpointError,
  StateDictMismatchError,
  mapStateDict,
  parseTorchCheckpoint,
  readTorchCheckpoint,
  stateDict,
  type ParameterSpec,
  type TorchTensor,
} from '../model/pytorch.ts';
import { legacyCheckpoint, storageBytes, zipCheckpoint, type FixtureCheckpoint, type FixtureStorage, type FixtureTensor } from './helpers/torch-fixtures.ts';

const checkpointPath = mobileFaceNetCheckpoint();

/** Facts about 068.ckpt read off its bytes (hexdump), not from the importer. */
const FILE_BYTES = 4_130_855;
const RAW_STORAGES_START = 51_247;

// ---------------------------------------------------------------------------------------------
// An independent reading of the legacy file: a byte scan that uses only the file's layout.

/** Reads the storage key list, the last pickle: PROTO 2, EMPTY_LIST, MARK, BINUNICODE keys, APPENDS, STOP. */
function scanKeyList(bytes: Buffer): { keys: string[]; end: number } {
  // The first ".\x80\x02]" is the STOP of the saved object followed by the list's PROTO and EMPTY_LIST.
  let p = bytes.indexOf(Buffer.from([0x2e, 0x80, 0x02, 0x5d])) + 4;
  const skipMemo = () => {
    if (bytes[p] === 0x71) p += 2; // BINPUT
    else if (bytes[p] === 0x72) p += 5; // LONG_BINPUT
  };
  skipMemo();
  if (bytes[p++] !== 0x28) throw new Error('key list: expected MARK');
  const keys: string[] = [];
  while (bytes[p] === 0x58) {
    const length = bytes.readUInt32LE(p + 1);
    keys.push(bytes.toString('ascii', p + 5, p + 5 + length));
    p += 5 + length;
    skipMemo();
  }
  if (bytes[p] !== 0x65 || bytes[p + 1] !== 0x2e) throw new Error(`key list: expected APPENDS STOP at byte ${p}`);
  return { keys, end: p + 2 };
}

/** Finds the storage key of a state-dict entry: the first all-digit BINUNICODE string after its name. */
function scanStorageKey(bytes: Buffer, name: string): string {
  const needle = Buffer.alloc(5 + name.length);
  needle[0] = 0x58;
  needle.writeUInt32LE(name.length, 1);
  needle.write(name, 5, 'ascii');
  let p = bytes.indexOf(needle);
  if (p < 0) throw new Error(`name ${name} not found`);
  p += needle.length;
  for (; p < RAW_STORAGES_START; p++) {
    if (bytes[p] !== 0x58) continue;
    const length = bytes.readUInt32LE(p + 1);
    if (length === 0 || length > 20) continue;
    const text = bytes.toString('latin1', p + 5, p + 5 + length);
    if ([...text].every((ch) => ch >= '0' && ch <= '9')) return text;
  }
  throw new Error(`no storage key after ${name}`);
}

interface RawStorage {
  readonly count: number;
  readonly dataStart: number;
  readonly elementBytes: number;
}

/**
 * Walks the raw storages in key order. Every storage of this network has at least 64 floats
 * except the BatchNorm counters, one int64 each, so a count of 1 means 8-byte elements. The walk
 * has to end exactly at the end of the file, which checks that rule.
 */
function walkStorages(bytes: Buffer, keys: readonly string[], start: number): Map<string, RawStorage> {
  const storages = new Map<string, RawStorage>();
  let p = start;
  for (const key of keys) {
    const count = Number(bytes.readBigInt64LE(p));
    const elementBytes = count === 1 ? 8 : 4;
    storages.set(key, { count, dataStart: p + 8, elementBytes });
    p += 8 + count * elementBytes;
  }
  if (p !== bytes.length) throw new Error(`storage walk ended at ${p}, file has ${bytes.length} bytes`);
  return storages;
}

t.test('legacy checkpoint', async (t) => {
  const bytes = await readFile(checkpointPath);
  const checkpoint = await readTorchCheckpoint(checkpointPath);
  const state = stateDict(checkpoint);

  t.test('structure', async (t) => {
    t.equal(bytes.length, FILE_BYTES, 'file size');
    t.equal(checkpoint.format, 'legacy');
    t.equal(checkpoint.tensors.size, 333, 'tensors in the file');
    t.equal(state.size, 333, 'tensors in net_state_dict');
    t.equal((checkpoint.root as Map<string, unknown>).get('epoch'), 68, 'epoch');
    t.same(state.get('conv1.conv.weight')?.shape, [64, 3, 3, 3]);
    t.equal(state.get('conv1.conv.weight')?.dtype, 'float32');
    t.same(state.get('linear7.conv.weight')?.shape, [512, 1, 7, 6]);
    t.same(state.get('linear1.conv.weight')?.shape, [128, 512, 1, 1]);
    const counter = state.get('conv1.bn.num_batches_tracked');
    t.equal(counter?.dtype, 'int64', 'num_batches_tracked is a LongStorage');
    t.same(counter?.shape, [], 'num_batches_tracked is a scalar');
  });

  t.test('values match an independent byte scan', async (t) => {
    const { keys, end } = scanKeyList(bytes);
    t.equal(end, RAW_STORAGES_START, 'raw storages start right after the key list');
    t.equal(keys.length, 333);
    const raw = walkStorages(bytes, keys, end);

    // The stem weight's storage is the last in the key order, so its floats are the file's last 6912 bytes.
    const stemKey = scanStorageKey(bytes, 'conv1.conv.weight');
    t.equal(keys[keys.length - 1], stemKey, 'stem weight storage comes last');
    t.equal(raw.get(stemKey)?.dataStart, FILE_BYTES - 64 * 27 * 4);

    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let compared = 0;
    let mismatches = 0;
    for (const [name, tensor] of state) {
      const key = scanStorageKey(bytes, name);
      const storage = raw.get(key);
      if (storage === undefined) {
        t.fail(`no raw storage for ${name}`);
        continue;
      }
      const numel = tensor.shape.reduce((a, b) => a * b, 1);
      if (storage.count !== numel) t.fail(`${name}: storage holds ${storage.count}, tensor has ${numel}`);
      for (let i = 0; i < numel; i++) {
        const expected = storage.elementBytes === 8 ? view.getBigInt64(storage.dataStart + 8 * i, true) : view.getFloat32(storage.dataStart + 4 * i, true);
        if (!Object.is(tensor.data[i], expected)) mismatches++;
        compared++;
      }
    }
    t.equal(compared, 1_019_186, 'every element of every tensor compared');
    t.equal(mismatches, 0, 'importer values equal the raw bytes exactly');

    const stem = state.get('conv1.conv.weight');
    const firstFloats = [0, 1, 2, 1727].map((i) => view.getFloat32(FILE_BYTES - 6912 + 4 * i, true));
    t.same([0, 1, 2, 1727].map((i) => stem?.data[i]), firstFloats, 'stem weight elements 0, 1, 2 and 1727');
  });

  t.test('parameter counts', async (t) => {
    let learnable = 0;
    let withStatistics = 0;
    for (const [name, tensor] of state) {
      const numel = tensor.shape.reduce((a, b) => a * b, 1);
      if (name.endsWith('num_batches_tracked')) continue;
      withStatistics += numel;
      if (!name.endsWith('running_mean') && !name.endsWith('running_var')) learnable += numel;
    }
    t.equal(learnable, 999_552, 'learnable parameters (conv, BN affine, PReLU)');
    t.equal(withStatistics, 1_019_136, 'with BatchNorm running statistics');
  });
});

t.test('broken files', async (t) => {
  const bytes = new Uint8Array(await readFile(checkpointPath));

  t.test('bad magic number', async (t) => {
    const copy = bytes.slice();
    copy[6] = (copy[6] ?? 0) ^ 0xff;
    t.throws(() => parseTorchCheckpoint(copy, 'bad-magic.ckpt'), { name: 'CheckpointError', message: /bad-magic\.ckpt.*magic number/ });
  });

  t.test('not a pickle at all', async (t) => {
    const text = new TextEncoder().encode('epoch,loss\n1,0.5\n');
    t.throws(() => parseTorchCheckpoint(text, 'notes.csv'), { name: 'CheckpointError', message: /notes\.csv: not a PyTorch checkpoint/ });
  });

  t.test('truncated storage', async (t) => {
    const truncated = bytes.slice(0, 2_000_000);
    const error = t.throws(() => parseTorchCheckpoint(truncated, 'short.ckpt'));
    t.ok(error instanceof CheckpointError);
    t.match((error as Error).message, /short\.ckpt: truncated: storage "\d+" has \d+ float32 elements .* but the file has 2000000 bytes/);
  });

  t.test('truncated pickle', async (t) => {
    t.throws(() => parseTorchCheckpoint(bytes.slice(0, 30_000), 'cut.ckpt'), { name: 'CheckpointError', message: /cut\.ckpt: invalid saved object pickle/ });
  });

  t.test('missing file', async (t) => {
    await t.rejects(readTorchCheckpoint('/nonexistent/model.ckpt'), { name: 'CheckpointError', message: /\/nonexistent\/model\.ckpt: cannot read/ });
  });
});

// ---------------------------------------------------------------------------------------------
// Hand-built checkpoints in both formats.

const s0: FixtureStorage = { key: '0', type: 'FloatStorage', numel: 12, bytes: storageBytes('FloatStorage', Array.from({ length: 12 }, (_, i) => i * 0.5)) };
const FIXTURE: FixtureCheckpoint = {
  wrapKey: 'state_dict',
  storages: [
    s0,
    { key: '1', type: 'LongStorage', numel: 1, bytes: storageBytes('LongStorage', [42]) },
    { key: '2', type: 'DoubleStorage', numel: 3, bytes: storageBytes('DoubleStorage', [1.5, -2.25, 1e-300]) },
    // binary16 bits of 1, −2 and 0.333251953125
    { key: '3', type: 'HalfStorage', numel: 3, bytes: storageBytes('HalfStorage', [0x3c00, 0xc000, 0x3555]) },
    { key: '4', type: 'IntStorage', numel: 2, bytes: storageBytes('IntStorage', [7, -8]) },
  ],
  tensors: [
    { name: 'module.a', storage: '0', offset: 0, shape: [3, 4], stride: [4, 1] },
    { name: 'module.aT', storage: '0', offset: 0, shape: [4, 3], stride: [1, 4] },
    { name: 'module.tail', storage: '0', offset: 8, shape: [2, 2], stride: [2, 1] },
    { name: 'module.step', storage: '0', offset: 1, shape: [3], stride: [4] },
    { name: 'module.bn.num_batches_tracked', storage: '1', offset: 0, shape: [], stride: [] },
    { name: 'module.d', storage: '2', offset: 0, shape: [3], stride: [1] },
    { name: 'module.h', storage: '3', offset: 0, shape: [3], stride: [1] },
    { name: 'module.i', storage: '4', offset: 0, shape: [2], stride: [1] },
  ],
};

/** Returns the elements of a tensor as numbers, or [] when it is absent. */
function numbers(tensor: { readonly data: TorchTensor['data'] } | undefined): number[] {
  if (tensor === undefined) return [];
  const data = tensor.data;
  return Array.from({ length: data.length }, (_, i) => Number(data[i]));
}

function checkFixture(t: Test, state: Map<string, TorchTensor>): void {
  t.same([...state.keys()], ['a', 'aT', 'tail', 'step', 'bn.num_batches_tracked', 'd', 'h', 'i'], 'keys in order, "module." removed');
  t.same(numbers(state.get('a')), [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5], 'contiguous');
  // aT[i][j] = storage[i + 4j], the transpose of a
  t.same(numbers(state.get('aT')), [0, 2, 4, 0.5, 2.5, 4.5, 1, 3, 5, 1.5, 3.5, 5.5], 'transposed strides');
  t.same(numbers(state.get('tail')), [4, 4.5, 5, 5.5], 'storage offset 8');
  t.same(numbers(state.get('step')), [0.5, 2.5, 4.5], 'offset 1, stride 4');
  t.same(state.get('bn.num_batches_tracked')?.shape, []);
  t.same(Array.from(state.get('bn.num_batches_tracked')?.data as BigInt64Array), [42n], 'int64 scalar');
  t.equal(state.get('d')?.dtype, 'float64');
  t.same(numbers(state.get('d')), [1.5, -2.25, 1e-300], 'float64 kept exactly');
  t.equal(state.get('h')?.dtype, 'float16');
  t.same(numbers(state.get('h')), [1, -2, 0.333251953125], 'float16 widened');
  t.same(numbers(state.get('i')), [7, -8], 'int32');
}

t.test('zip format', async (t) => {
  const checkpoint = parseTorchCheckpoint(zipCheckpoint(FIXTURE), 'fixture.pt');
  t.equal(checkpoint.format, 'zip');
  t.equal((checkpoint.root as Map<string, unknown>).get('epoch'), 3);
  checkFixture(t, stateDict(checkpoint));
  checkFixture(t, stateDict(checkpoint, 'state_dict'));
});

t.test('zip format with another archive prefix, read from disk', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pytorch-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'model.pt');
  await writeFile(file, zipCheckpoint(FIXTURE, 'model'));
  checkFixture(t, stateDict(await readTorchCheckpoint(file)));
});

t.test('legacy format built by hand', async (t) => {
  const checkpoint = parseTorchCheckpoint(legacyCheckpoint(FIXTURE), 'fixture.ckpt');
  t.equal(checkpoint.format, 'legacy');
  checkFixture(t, stateDict(checkpoint));
});

t.test('legacy storage views', async (t) => {
  // A view of elements 4..11 of storage 0; the tensor then starts at offset 2 of the view.
  const checkpoint: FixtureCheckpoint = {
    storages: [s0],
    tensors: [{ name: 'v', storage: '0', offset: 2, shape: [2, 3], stride: [3, 1], view: { key: '9', offset: 4, numel: 8 } }],
  };
  const state = stateDict(parseTorchCheckpoint(legacyCheckpoint(checkpoint), 'views.ckpt'));
  t.same(numbers(state.get('v')), [3, 3.5, 4, 4.5, 5, 5.5], 'storage elements 6..11');

  const beyond: FixtureCheckpoint = { storages: [s0], tensors: [{ ...checkpoint.tensors[0] as FixtureTensor, offset: 3 }] };
  t.throws(() => parseTorchCheckpoint(legacyCheckpoint(beyond), 'views.ckpt'), { message: /tensor "v" \(storage "0"\): the view reaches storage element 8 but the storage has 8 elements/ });
});

t.test('zip round trip of the real weights', async (t) => {
  const legacy = stateDict(await readTorchCheckpoint(checkpointPath));
  const storages: FixtureStorage[] = [];
  const tensors: FixtureTensor[] = [];
  for (const [name, tensor] of legacy) {
    const key = String(storages.length);
    const isLong = tensor.dtype === 'int64';
    const values = numbers(tensor);
    storages.push({ key, type: isLong ? 'LongStorage' : 'FloatStorage', numel: values.length, bytes: storageBytes(isLong ? 'LongStorage' : 'FloatStorage', values) });
    const stride = tensor.shape.map((_, d) => tensor.shape.slice(d + 1).reduce((a, b) => a * b, 1));
    tensors.push({ name, storage: key, offset: 0, shape: tensor.shape, stride });
  }
  const zipped = stateDict(parseTorchCheckpoint(zipCheckpoint({ storages, tensors, wrapKey: 'net_state_dict' }), 'roundtrip.pt'));
  t.equal(zipped.size, 333);
  let different = 0;
  for (const [name, tensor] of legacy) {
    const other = zipped.get(name);
    if (other === undefined || other.shape.join() !== tensor.shape.join() || other.data.some((v, i) => !Object.is(v, tensor.data[i]))) different++;
  }
  t.equal(different, 0, 'every tensor identical after the round trip');
});

t.test('invalid checkpoints built by hand', async (t) => {
  t.test('unknown storage type', async (t) => {
    const bad: FixtureCheckpoint = {
      storages: [{ key: '0', type: 'ComplexFloatStorage', numel: 1, bytes: storageBytes('ComplexFloatStorage', [1]) }],
      tensors: [{ name: 'z', storage: '0', offset: 0, shape: [1], stride: [1] }],
    };
    t.throws(() => parseTorchCheckpoint(zipCheckpoint(bad), 'complex.pt'), { name: 'CheckpointError', message: /complex\.pt: storage "0" has unknown storage type torch\.ComplexFloatStorage/ });
    t.throws(() => parseTorchCheckpoint(legacyCheckpoint(bad), 'complex.ckpt'), { name: 'CheckpointError', message: /complex\.ckpt: storage "0" has unknown storage type torch\.ComplexFloatStorage/ });
  });

  t.test('view beyond its storage', async (t) => {
    const bad: FixtureCheckpoint = { storages: [s0], tensors: [{ name: 'w', storage: '0', offset: 6, shape: [2, 4], stride: [4, 1] }] };
    t.throws(() => parseTorchCheckpoint(zipCheckpoint(bad), 'view.pt'), {
      name: 'CheckpointError',
      message: /view\.pt: tensor "w" \(storage "0"\): the view reaches storage element 13 but the storage has 12 elements/,
    });
  });

  t.test('storage file missing from the zip', async (t) => {
    const bad: FixtureCheckpoint = { storages: [s0], tensors: [{ name: 'w', storage: '7', offset: 0, shape: [1], stride: [1] }] };
    t.throws(() => zipCheckpoint(bad), /unknown storage 7/, 'the fixture writer itself refuses');
    const zipped = zipCheckpoint({ storages: [{ ...s0, key: '7' }], tensors: [{ name: 'w', storage: '7', offset: 0, shape: [1], stride: [1] }] });
    const { unzipSync, zipSync } = await import('fflate');
    const files = unzipSync(zipped);
    delete files['archive/data/7'];
    t.throws(() => parseTorchCheckpoint(zipSync(files, { level: 0 }), 'gap.pt'), { name: 'CheckpointError', message: /gap\.pt: storage file archive\/data\/7 is missing/ });
  });

  t.test('no state dict', async (t) => {
    const checkpoint = parseTorchCheckpoint(zipCheckpoint(FIXTURE), 'fixture.pt');
    t.throws(() => stateDict(checkpoint, 'optimizer'), { name: 'CheckpointError', message: /fixture\.pt: "optimizer" is not a key/ });
    t.throws(() => stateDict(checkpoint, 'epoch'), { message: /"epoch" is not a dict of tensors/ });
  });
});

// ---------------------------------------------------------------------------------------------
// Mapping onto network parameters.

function floatTensor(name: string, shape: number[], values: number[]): TorchTensor {
  return { name, shape, dtype: 'float32', data: Float32Array.from(values) };
}

t.test('mapStateDict', async (t) => {
  const specs: ParameterSpec[] = [
    { name: 'conv.weight', shape: [1, 2, 1, 2], layout: 'conv2d' }, // torch [out 2, in 1, kh 1, kw 2]
    { name: 'dw.weight', shape: [1, 2, 2, 1], layout: 'depthwise' }, // torch [C 2, 1, kh 1, kw 2]
    { name: 'fc.weight', shape: [3, 2], layout: 'linear' }, // torch [out 2, in 3]
    { name: 'bn.running_var', shape: [2], layout: 'vector' },
  ];
  const state = new Map<string, TorchTensor>([
    ['conv.weight', floatTensor('conv.weight', [2, 1, 1, 2], [1, 2, 3, 4])],
    ['dw.weight', floatTensor('dw.weight', [2, 1, 1, 2], [1, 2, 3, 4])],
    ['fc.weight', floatTensor('fc.weight', [2, 3], [1, 2, 3, 4, 5, 6])],
    ['bn.running_var', floatTensor('bn.running_var', [2], [0.5, 2])],
    ['bn.num_batches_tracked', { name: 'bn.num_batches_tracked', shape: [], dtype: 'int64', data: BigInt64Array.from([5n]) }],
  ]);

  t.test('layouts', async (t) => {
    const mapped = mapStateDict(state, specs, { source: 'tiny' });
    // conv: tfjs [kh, kw, in, out] element (x, o) = torch[o][0][0][x]
    t.same(numbers(mapped.get('conv.weight')), [1, 3, 2, 4], 'OIHW → HWIO');
    t.same(numbers(mapped.get('dw.weight')), [1, 3, 2, 4], '[C,1,kh,kw] → [kh,kw,C,1]');
    t.same(numbers(mapped.get('fc.weight')), [1, 4, 2, 5, 3, 6], '[out,in] → [in,out]');
    t.same(numbers(mapped.get('bn.running_var')), [0.5, 2], 'vector unchanged');
    t.same(mapped.get('conv.weight')?.shape, [1, 2, 1, 2]);
    t.notOk(mapped.has('bn.num_batches_tracked'), 'num_batches_tracked ignored');
  });

  t.test('missing tensor', async (t) => {
    const partial = new Map(state);
    partial.delete('dw.weight');
    const error = t.throws(() => mapStateDict(partial, specs, { source: 'partial.ckpt' }));
    t.ok(error instanceof StateDictMismatchError);
    t.match((error as Error).message, /partial\.ckpt: .*missing tensor "dw\.weight" \(expected shape \[2, 1, 1, 2\]\)/s);
  });

  t.test('extra tensor', async (t) => {
    const extra = new Map(state);
    extra.set('fc6.weight', floatTensor('fc6.weight', [4, 2], [0, 0, 0, 0, 0, 0, 0, 0]));
    t.throws(() => mapStateDict(extra, specs, { source: 'extra.ckpt' }), {
      name: 'StateDictMismatchError',
      message: /unexpected tensor "fc6\.weight" with shape \[4, 2\] is not a parameter of the network/,
    });
    t.doesNotThrow(() => mapStateDict(extra, specs, { source: 'extra.ckpt', ignore: ['fc6.'] }), 'ignored by prefix');
  });

  t.test('misshapen tensor', async (t) => {
    const wrong = new Map(state);
    wrong.set('fc.weight', floatTensor('fc.weight', [3, 2], [1, 2, 3, 4, 5, 6]));
    t.throws(() => mapStateDict(wrong, specs, { source: 'wrong.ckpt' }), {
      name: 'StateDictMismatchError',
      message: /tensor "fc\.weight" has shape \[3, 2\] but the network expects \[2, 3\]/,
    });
  });

  t.test('integer tensor for a weight', async (t) => {
    const wrong = new Map(state);
    wrong.set('bn.running_var', { name: 'bn.running_var', shape: [2], dtype: 'int64', data: BigInt64Array.from([1n, 2n]) });
    t.throws(() => mapStateDict(wrong, specs, { source: 'int.ckpt' }), { message: /tensor "bn\.running_var" has dtype int64, expected a floating-point dtype/ });
  });

  t.test('every problem in one message', async (t) => {
    const wrong = new Map(state);
    wrong.delete('conv.weight');
    wrong.set('extra', floatTensor('extra', [1], [0]));
    const error = t.throws(() => mapStateDict(wrong, specs, { source: 'both.ckpt' })) as Error;
    t.match(error.message, /missing tensor "conv\.weight"/);
    t.match(error.message, /unexpected tensor "extra"/);
  });
});
