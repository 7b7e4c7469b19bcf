import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import t, { type Test } from 'tap';

import {
  CheckpointError,
  listCheckpoints,
  loadCheckpoint,
  loadLatestCheckpoint,
  saveCheckpoint,
  type CheckpointContent,
  type CheckpointTensor,
  type TrainingState,
} from '../model/checkpoint.ts';

const MAGIC = [0x89, 0x53, 0x46, 0x43, 0x4b, 0x50, 0x54, 0x0a];

/** Float32 bit patterns that a value-level copy could change: -0, NaNs with payloads, infinities, a denormal. */
const SPECIAL_BITS = [0x80000000, 0x7fc00000, 0x7fc00001, 0xffc12345, 0x7f800001, 0x7f800000, 0xff800000, 0x00000001, 0x3f800000];

function state(iteration: number, extra: Partial<TrainingState> = {}): TrainingState {
  return {
    format: 'sphereface-ts/checkpoint',
    version: 1,
    iteration,
    epoch: 2,
    position: 17,
    seed: -7,
    lambdaIteration: iteration,
    learningRateStep: 1,
    dataset: { fingerprint: 'sha256:5f1c0e', samples: 455_594, classes: 10_575 },
    config: { network: 'sphereface20', solver: { baseLr: 0.1, momentum: 0.9, steps: [16_000, 24_000, 28_000] }, mirror: true, note: null },
    createdAt: '2026-12-05T10:00:00.000Z',
    metrics: { loss: 3.25, accuracy: 0.5 },
    ...extra,
  };
}

/** Builds a Float32Array from raw bit patterns, so no value passes through a JS number. */
function fromBits(bits: readonly number[]): Float32Array {
  return new Float32Array(Uint32Array.from(bits).buffer);
}

/** Returns `count` pseudo-random 32-bit patterns, of which about 1 in 256 is a NaN. */
function randomBits(count: number, seed: number): number[] {
  let x = seed >>> 0;
  return Array.from({ length: count }, () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  });
}

/** Builds a small checkpoint whose data depends on `iteration`, so a test can tell checkpoints apart. */
function smallContent(iteration: number): CheckpointContent {
  return {
    state: state(iteration),
    tensors: [
      { name: 'conv1.weight', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6], (v) => v + iteration) },
      { name: 'fc6.weight', shape: [3], data: Float32Array.from([iteration, -iteration, 0.5]) },
    ],
  };
}

function bitsOf(data: Float32Array): Uint32Array {
  return new Uint32Array(data.buffer, data.byteOffset, data.length);
}

/** Returns the first index where two arrays differ bit for bit, or -1. */
function firstBitDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  const left = bitsOf(a);
  const right = bitsOf(b);
  return left.findIndex((value, index) => value !== right[index]);
}

/** Encodes a checkpoint file from its parts, following the layout documented in model/checkpoint.ts. */
function encodeFile(headerText: string, payloadBits: readonly number[], version = 1): Buffer {
  const json = Buffer.from(headerText, 'utf8');
  const prefix = Buffer.alloc(16);
  Buffer.from(MAGIC).copy(prefix);
  prefix.writeUInt32LE(version, 8);
  prefix.writeUInt32LE(json.length, 12);
  const payload = Buffer.alloc(4 * payloadBits.length);
  payloadBits.forEach((bits, index) => payload.writeUInt32LE(bits >>> 0, 4 * index));
  const body = Buffer.concat([prefix, json, payload]);
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

async function expectInvalid(t: Test, file: string, problem: RegExp): Promise<void> {
  const error: unknown = await loadCheckpoint(file).then(
    () => undefined,
    (reason: unknown) => reason,
  );
  t.type(error, CheckpointError, 'a CheckpointError');
  if (!(error instanceof CheckpointError)) return;
  t.equal(error.file, file, 'error names the file');
  t.match(error.message, file, 'message names the file');
  t.match(error.problem, problem, 'problem says what is wrong');
}

async function iterationsIn(dir: string): Promise<number[]> {
  return (await listCheckpoints(dir)).map((entry) => entry.iteration);
}

t.test('round trip is bit-exact', async (t) => {
  const dir = t.testdir();
  const tensors: CheckpointTensor[] = [
    { name: 'conv1.weight', shape: [3, 5, 7], data: fromBits(randomBits(105, 1)) },
    { name: 'special', shape: [SPECIAL_BITS.length], data: fromBits(SPECIAL_BITS) },
    { name: 'odd', shape: [1, 13], data: fromBits(randomBits(13, 2)) },
    { name: 'empty', shape: [0], data: new Float32Array(0) },
    { name: 'empty.3d', shape: [4, 0, 2], data: new Float32Array(0) },
    { name: 'scalar', shape: [], data: fromBits([0x80000000]) },
    { name: 'conv1.weight.momentum', shape: [1001], data: fromBits(randomBits(1001, 3)) },
  ];
  // A tensor that views the middle of a larger buffer must be written from its own bytes only.
  const backing = fromBits(randomBits(40, 4));
  tensors.push({ name: 'view', shape: [5, 3], data: backing.subarray(7, 22) });

  const file = await saveCheckpoint(dir, { state: state(1234), tensors });
  t.equal(path.basename(file), 'ckpt-000001234.sfc');

  const loaded = await loadCheckpoint(file);
  t.strictSame(loaded.state, state(1234), 'state reads back equal');
  t.strictSame(
    loaded.tensors.map((tensor) => [tensor.name, [...tensor.shape]]),
    tensors.map((tensor) => [tensor.name, [...tensor.shape]]),
    'names and shapes read back in order',
  );
  for (const [index, tensor] of tensors.entries()) {
    const back = loaded.tensors[index];
    t.type(back?.data, Float32Array, `${tensor.name}: data is a Float32Array`);
    t.equal(firstBitDifference(back?.data ?? new Float32Array(), tensor.data), -1, `${tensor.name}: every bit equal`);
  }
  const special = loaded.tensors[1]?.data ?? new Float32Array();
  t.strictSame([...bitsOf(special)], SPECIAL_BITS, 'NaN payloads, -0 and infinities keep their bits');
  t.ok(Object.is(loaded.tensors[5]?.data[0], -0), 'scalar -0 stays -0');
});

t.test('file follows the documented layout', async (t) => {
  const dir = t.testdir();
  const content: CheckpointContent = {
    state: state(7),
    tensors: [
      { name: 'a', shape: [2], data: fromBits([0x3f800000, 0xc0000000]) },
      { name: 'b', shape: [3, 1], data: fromBits(SPECIAL_BITS.slice(0, 3)) },
    ],
  };
  const file = await saveCheckpoint(dir, content);
  const bytes = fs.readFileSync(file);

  t.strictSame([...bytes.subarray(0, 8)], MAGIC, 'magic');
  t.equal(bytes.readUInt32LE(8), 1, 'format version');
  const headerLength = bytes.readUInt32LE(12);
  const payloadStart = 16 + headerLength;
  t.equal(payloadStart % 8, 0, 'payload starts at a multiple of 8');

  const header = JSON.parse(bytes.subarray(16, payloadStart).toString('utf8')) as { state: unknown; tensors: unknown };
  t.strictSame(header.state, state(7), 'header state');
  t.strictSame(
    header.tensors,
    [
      { name: 'a', shape: [2], offset: 0, length: 2 },
      { name: 'b', shape: [3, 1], offset: 2, length: 3 },
    ],
    'tensor table counts float32 values from the payload start',
  );

  const payload = Array.from({ length: 5 }, (_, index) => bytes.readUInt32LE(payloadStart + 4 * index));
  t.strictSame(payload, [0x3f800000, 0xc0000000, ...SPECIAL_BITS.slice(0, 3)], 'payload is little-endian float32 in table order');
  t.equal(bytes.length, payloadStart + 5 * 4 + 32, 'file ends after a 32-byte trailer');
  const expectedHash = createHash('sha256').update(bytes.subarray(0, bytes.length - 32)).digest('hex');
  t.equal(bytes.subarray(bytes.length - 32).toString('hex'), expectedHash, 'trailer is the SHA-256 of the rest');
});

t.test('reader accepts an unpadded header', async (t) => {
  const dir = t.testdir();
  const header = { state: state(3), tensors: [{ name: 'w', shape: [3], offset: 0, length: 3 }] };
  const file = path.join(dir, 'ckpt-000000003.sfc');
  // The JSON length makes the payload start at 16 + an odd number, so the reader must not assume alignment.
  let text = JSON.stringify(header);
  if (text.length % 2 === 0) text += ' ';
  fs.writeFileSync(file, encodeFile(text, [0x7fc00001, 0x80000000, 0x40490fdb]));

  const loaded = await loadCheckpoint(file);
  t.strictSame([...bitsOf(loaded.tensors[0]?.data ?? new Float32Array())], [0x7fc00001, 0x80000000, 0x40490fdb]);
});

t.test('save rejects invalid content', async (t) => {
  const good = smallContent(5);
  const cases: Array<[string, CheckpointContent, RegExp]> = [
    ['negative iteration', { ...good, state: state(-1) }, /state\.iteration: Expected a non-negative number, actual -1/],
    ['fractional iteration', { ...good, state: state(1.5) }, /state\.iteration: Expected an integer, actual 1\.5/],
    ['NaN metric', { ...good, state: state(5, { metrics: { loss: Number.NaN } }) }, /state\.metrics\.loss: expected a finite number, actual NaN/],
    ['Date in config', { ...good, state: state(5, { config: { started: new Date(0) } }) }, /state\.config\.started: expected a JSON value .*actual a Date/],
    ['bad createdAt', { ...good, state: state(5, { createdAt: 'yesterday' }) }, /state\.createdAt: expected an ISO 8601 date-time/],
    ['wrong format', { ...good, state: { ...state(5), format: 'other' } as unknown as TrainingState }, /state\.format: Expected "sphereface-ts\/checkpoint"/],
    ['unknown field', { ...good, state: { ...state(5), lr: 0.1 } as unknown as TrainingState }, /state\.lr: is unexpected/],
    ['empty fingerprint', { ...good, state: state(5, { dataset: { fingerprint: '', samples: 1, classes: 1 } }) }, /state\.dataset\.fingerprint/],
    [
      'duplicate name',
      { ...good, tensors: [...good.tensors, { name: 'fc6.weight', shape: [1], data: new Float32Array(1) }] },
      /tensor "fc6\.weight" \(tensors\[2\]\) has the same name as an earlier tensor/,
    ],
    ['shape mismatch', { ...good, tensors: [{ name: 'w', shape: [2, 3], data: new Float32Array(5) }] }, /shape \[2, 3\] \(6 values\) but length 5/],
    ['negative dimension', { ...good, tensors: [{ name: 'w', shape: [-1], data: new Float32Array(0) }] }, /tensors\[0\]\.shape\[0\]: Expected a non-negative number/],
    ['empty name', { ...good, tensors: [{ name: '', shape: [1], data: new Float32Array(1) }] }, /tensors\[0\]\.name/],
    [
      'float64 data',
      { ...good, tensors: [{ name: 'w', shape: [2], data: new Float64Array(2) as unknown as Float32Array }] },
      /tensors\[0\] \("w"\) has data of type \[object Float64Array\]; expected a Float32Array/,
    ],
  ];
  const root = t.testdir();
  for (const [index, [name, content, problem]] of cases.entries()) {
    const dir = path.join(root, `case-${index}`);
    const error: unknown = await saveCheckpoint(dir, content).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    t.type(error, CheckpointError, `${name}: a CheckpointError`);
    t.match((error as Error).message, `cannot save a checkpoint in ${dir}`, `${name}: message names the folder`);
    t.match((error as CheckpointError).problem, problem, `${name}: problem`);
    t.notOk(fs.existsSync(dir), `${name}: nothing written, not even the folder`);
  }

  const dir = path.join(root, 'keep');
  await t.rejects(saveCheckpoint(dir, good, { keep: 0 }), { name: 'RangeError', message: /keep must be an integer ≥ 1, got 0/ });
  await t.rejects(saveCheckpoint(dir, good, { keep: 1.5 }), { name: 'RangeError' });
});

t.test('listCheckpoints sorts by iteration', async (t) => {
  const dir = t.testdir({ 'notes.txt': 'not a checkpoint', 'ckpt-12.sfc': 'name too short to be one' });
  for (const iteration of [1200, 5, 30, 1_000_000_000]) await saveCheckpoint(dir, smallContent(iteration), { keep: 10 });

  const listed = await listCheckpoints(dir);
  t.strictSame(
    listed.map((entry) => entry.iteration),
    [5, 30, 1200, 1_000_000_000],
  );
  t.strictSame(
    listed.map((entry) => path.basename(entry.path)),
    ['ckpt-000000005.sfc', 'ckpt-000000030.sfc', 'ckpt-000001200.sfc', 'ckpt-1000000000.sfc'],
  );
  t.strictSame(await listCheckpoints(path.join(dir, 'missing')), [], 'missing folder has none');
  t.equal(await loadLatestCheckpoint(path.join(dir, 'missing')), undefined, 'missing folder loads nothing');
});

t.test('keep prunes older checkpoints', async (t) => {
  const dir = t.testdir();
  for (let iteration = 1; iteration <= 6; iteration++) await saveCheckpoint(dir, smallContent(iteration), { keep: 2 });
  t.strictSame(await iterationsIn(dir), [5, 6], 'keep 2');

  for (let iteration = 7; iteration <= 10; iteration++) await saveCheckpoint(dir, smallContent(iteration));
  t.strictSame(await iterationsIn(dir), [8, 9, 10], 'default keeps 3');

  const latest = await loadLatestCheckpoint(dir);
  t.equal(latest?.content.state.iteration, 10, 'newest loads');
  t.strictSame([...(latest?.content.tensors[1]?.data ?? [])], [10, -10, 0.5], 'with its own data');
});

t.test('new checkpoint survives newer ones', async (t) => {
  const dir = t.testdir();
  await saveCheckpoint(dir, smallContent(100), { keep: 5 });
  await saveCheckpoint(dir, smallContent(200), { keep: 5 });
  const file = await saveCheckpoint(dir, smallContent(50), { keep: 1 });
  t.ok(fs.existsSync(file), 'the file just written stays');
  t.strictSame(await iterationsIn(dir), [50, 200], 'the newest by iteration stays, the one between goes');
});

t.test('stale temp files are removed and never loaded', async (t) => {
  const dir = t.testdir();
  await saveCheckpoint(dir, smallContent(1));
  await saveCheckpoint(dir, smallContent(2));

  const deadPid = await new Promise<number>((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', '']);
    child.on('error', reject);
    child.on('exit', () => resolve(child.pid ?? 0));
  });
  t.ok(deadPid > 0, 'a pid that has exited');

  // A complete, valid checkpoint under a temp name: a writer killed after its last write and
  // before the rename. It must still be ignored, because the rename is what publishes a file.
  const complete = fs.readFileSync(await saveCheckpoint(path.join(dir, 'elsewhere'), smallContent(3)));
  const deadTemp = path.join(dir, `.ckpt-000000003.sfc.${deadPid}-0a1b2c3d4e5f.tmp`);
  fs.writeFileSync(deadTemp, complete);
  // A half-written file with this process's pid that no save of this process is writing now:
  // an earlier process with the same pid, as happens when containers restart.
  const ownTemp = path.join(dir, `.ckpt-000000004.sfc.${process.pid}-aaaaaaaaaaaa.tmp`);
  fs.writeFileSync(ownTemp, complete.subarray(0, 40));
  // A file of a process that still runs (the test runner that started this one) may be a write in progress.
  const liveTemp = path.join(dir, `.ckpt-000000004.sfc.${process.ppid}-bbbbbbbbbbbb.tmp`);
  fs.writeFileSync(liveTemp, complete.subarray(0, 40));

  t.strictSame(await iterationsIn(dir), [1, 2], 'listing ignores temp files');
  const skipped: string[] = [];
  const latest = await loadLatestCheckpoint(dir, (file) => skipped.push(file));
  t.equal(latest?.content.state.iteration, 2, 'the newest published checkpoint loads');
  t.strictSame(skipped, [], 'temp files are not even tried');

  await saveCheckpoint(dir, smallContent(5));
  t.notOk(fs.existsSync(deadTemp), 'temp file of an exited process removed');
  t.notOk(fs.existsSync(ownTemp), 'temp file of an earlier process with this pid removed');
  t.ok(fs.existsSync(liveTemp), 'temp file of a running process kept');
  t.strictSame(await iterationsIn(dir), [1, 2, 5]);
});

interface Damage {
  readonly name: string;
  /** Changes the bytes of a valid checkpoint of iteration 2 (or replaces them). */
  readonly damage: (bytes: Buffer) => Buffer;
  readonly problem: RegExp;
}

/** Returns where the payload starts in a file that saveCheckpoint wrote. */
const payloadStart = (bytes: Buffer): number => 16 + bytes.readUInt32LE(12);

const handMade = (header: { state: unknown; tensors: unknown }, payloadBits: readonly number[]) => () => encodeFile(JSON.stringify(header), payloadBits);

const DAMAGES: Damage[] = [
  { name: 'empty file', damage: () => Buffer.alloc(0), problem: /the file has 0 bytes, fewer than the 48/ },
  { name: 'cut in the prefix', damage: (b) => b.subarray(0, 11), problem: /the file has 11 bytes, fewer than the 48/ },
  { name: 'cut in the header', damage: (b) => b.subarray(0, 60), problem: /the header length \d+ runs past the end of the file \(60 bytes\)/ },
  { name: 'cut in the payload', damage: (b) => b.subarray(0, payloadStart(b) + 10), problem: /bytes but its header describes \d+; it is truncated/ },
  { name: 'cut in the trailer', damage: (b) => b.subarray(0, b.length - 1), problem: /bytes but its header describes \d+; it is truncated/ },
  { name: 'trailer cut off', damage: (b) => b.subarray(0, b.length - 32), problem: /bytes but its header describes \d+; it is truncated/ },
  {
    name: 'flipped payload byte',
    damage: (b) => flip(b, payloadStart(b) + 5),
    problem: /SHA-256 check failed \(stored [0-9a-f]{64}, computed [0-9a-f]{64}\); the file is damaged/,
  },
  {
    // The byte is a digit of "createdAt", so the header still parses and describes the same size.
    name: 'flipped header byte',
    damage: (b) => flip(b, b.indexOf('2026-12-05') + 3),
    problem: /SHA-256 check failed/,
  },
  { name: 'flipped trailer byte', damage: (b) => flip(b, b.length - 3), problem: /SHA-256 check failed/ },
  { name: 'flipped magic byte', damage: (b) => flip(b, 1), problem: /starts with bytes 89 52 46 .*expected the checkpoint magic 89 53 46 43 4b 50 54 0a/ },
  {
    name: 'unknown version',
    damage: (b) => {
      const copy = Buffer.from(b);
      copy.writeUInt32LE(2, 8);
      return copy;
    },
    problem: /format version 2 is not supported; this build reads version 1/,
  },
  {
    name: 'schema failure',
    damage: handMade({ state: state(-1), tensors: [{ name: 'w', shape: [1], offset: 0, length: 1 }] }, [0]),
    problem: /invalid header: state\.iteration: Expected a non-negative number, actual -1/,
  },
  { name: 'header not JSON', damage: () => encodeFile('{"state": ', []), problem: /the header is not valid JSON/ },
  {
    name: 'shape and length differ',
    damage: handMade({ state: state(2), tensors: [{ name: 'w', shape: [2, 2], offset: 0, length: 3 }] }, [0, 0, 0]),
    problem: /tensor "w" \(tensors\[0\]\) has shape \[2, 2\] \(4 values\) but length 3/,
  },
  {
    name: 'duplicate names',
    damage: handMade(
      {
        state: state(2),
        tensors: [
          { name: 'w', shape: [1], offset: 0, length: 1 },
          { name: 'w', shape: [1], offset: 1, length: 1 },
        ],
      },
      [0, 0],
    ),
    problem: /tensor "w" \(tensors\[1\]\) has the same name as an earlier tensor/,
  },
  {
    name: 'offset out of place',
    damage: handMade({ state: state(2), tensors: [{ name: 'w', shape: [1], offset: 5, length: 1 }] }, [0]),
    problem: /tensor "w" \(tensors\[0\]\) starts at value 5; expected 0/,
  },
  {
    name: 'payload shorter than table',
    damage: handMade({ state: state(2), tensors: [{ name: 'w', shape: [4], offset: 0, length: 4 }] }, [0, 0, 0]),
    problem: /the payload has 12 bytes but the tensor table describes 4 float32 values \(16 bytes\)/,
  },
  {
    name: 'renamed file',
    damage: handMade({ state: state(7), tensors: [] }, []),
    problem: /the file name gives iteration 2 but the state has iteration 7/,
  },
];

function flip(bytes: Buffer, offset: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[offset] = (copy[offset] ?? 0) ^ 0x01;
  return copy;
}

t.test('damaged newest checkpoint falls back', async (t) => {
  for (const { name, damage, problem } of DAMAGES) {
    await t.test(name, async (t) => {
      const dir = t.testdir();
      await saveCheckpoint(dir, smallContent(1));
      const newest = await saveCheckpoint(dir, smallContent(2));
      fs.writeFileSync(newest, damage(fs.readFileSync(newest)));

      await expectInvalid(t, newest, problem);

      const skipped: Array<[string, string]> = [];
      const latest = await loadLatestCheckpoint(dir, (file, reason) => skipped.push([file, reason]));
      t.equal(latest?.path, path.join(dir, 'ckpt-000000001.sfc'), 'previous checkpoint used');
      t.equal(latest?.content.state.iteration, 1);
      t.strictSame([...(latest?.content.tensors[1]?.data ?? [])], [1, -1, 0.5], 'previous data loaded');
      t.equal(skipped.length, 1, 'onSkip called once');
      t.equal(skipped[0]?.[0], newest, 'onSkip names the file');
      t.match(skipped[0]?.[1] ?? '', problem, 'onSkip gives the reason');
    });
  }
});

t.test('unreadable checkpoint is skipped', async (t) => {
  const dir = t.testdir();
  await saveCheckpoint(dir, smallContent(1));
  const folder = path.join(dir, 'ckpt-000000002.sfc');
  fs.mkdirSync(folder);
  await expectInvalid(t, folder, /cannot read the file: EISDIR/);
  const latest = await loadLatestCheckpoint(dir);
  t.equal(latest?.content.state.iteration, 1);
});

t.test('no valid checkpoint loads nothing', async (t) => {
  const dir = t.testdir();
  const only = await saveCheckpoint(dir, smallContent(1));
  fs.truncateSync(only, 100);
  const skipped: string[] = [];
  t.equal(await loadLatestCheckpoint(dir, (file) => skipped.push(file)), undefined);
  t.strictSame(skipped, [only], 'the damaged file is reported');
});

const WRITER_SCRIPT = `
import { saveCheckpoint } from ${JSON.stringify(pathToFileURL(path.resolve('model/checkpoint.ts')).href)};
const [dir] = process.argv.slice(2);
const state = (iteration) => ({
  format: 'sphereface-ts/checkpoint', version: 1, iteration, epoch: 0, position: 0, seed: 1,
  dataset: { fingerprint: 'f', samples: 1, classes: 1 }, config: {}, createdAt: new Date().toISOString(),
});
await saveCheckpoint(dir, { state: state(1), tensors: [{ name: 'w', shape: [4], data: new Float32Array(4).fill(1) }] }, { keep: 100 });
process.stdout.write('ready\\n');
// 16 MiB per checkpoint, so that each write takes long enough to be caught in the middle.
const big = new Float32Array(4 * 1024 * 1024);
for (let iteration = 2; ; iteration++) {
  big.fill(iteration);
  await saveCheckpoint(dir, { state: state(iteration), tensors: [{ name: 'w', shape: [big.length], data: big }] }, { keep: 100 });
}
`;

t.test('SIGKILL during a save leaves the last checkpoint', async (t) => {
  const root = t.testdir({ 'writer.mjs': WRITER_SCRIPT });
  let killedMidWrite = 0;

  for (let round = 0; round < 3; round++) {
    const dir = path.join(root, `run-${round}`);
    fs.mkdirSync(dir);
    // node --import tsx runs the script in this process; `npx tsx` would fork a second one that
    // SIGKILL would not reach.
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'writer.mjs'), dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('ready')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`writer exited with ${code} before it was killed:\n${stderr}`)));
    });

    // Kills the writer as soon as a temp file appears, after one or more complete saves.
    const published = round === 0 ? 1 : 2;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`writer exited with ${child.exitCode} before it was killed:\n${stderr}`);
      const names = fs.readdirSync(dir);
      if (names.some((name) => name.endsWith('.tmp')) && names.filter((name) => name.endsWith('.sfc')).length >= published) break;
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    child.kill('SIGKILL');
    t.equal(await exited, 'SIGKILL', `round ${round}: writer killed`);

    const temps = fs.readdirSync(dir).filter((name) => name.endsWith('.tmp'));
    if (temps.length > 0) killedMidWrite++;
    const listed = await iterationsIn(dir);
    const skipped: string[] = [];
    const latest = await loadLatestCheckpoint(dir, (file, reason) => skipped.push(`${file}: ${reason}`));
    t.strictSame(skipped, [], `round ${round}: no published checkpoint is damaged`);
    t.equal(latest?.content.state.iteration, listed.at(-1), `round ${round}: the newest published checkpoint loads`);
    const data = latest?.content.tensors[0]?.data ?? new Float32Array();
    t.ok(
      data.every((value) => value === latest?.content.state.iteration),
      `round ${round}: its data is complete (${data.length} values)`,
    );
  }
  t.ok(killedMidWrite > 0, `a kill left a temp file in ${killedMidWrite} of 3 rounds`);
});
