import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import t from 'tap';

import { readLandmarks } from '../datasets/lfw.ts';
import { hashFile } from '../lib/artifactCache.ts';
import { lfwPaths, modelsRoot } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { saveCheckpoint } from '../model/checkpoint.ts';
import { loadModel, loadNetwork } from '../model/loadModel.ts';
import { ModelSpecError } from '../model/registry.ts';
import { SavedModelError, decodeManifest, saveModel, type ModelManifest } from '../model/savedModel.ts';
import { SphereFace, initialSphereFaceParameters, randomSphereFace } from '../model/sphereface.ts';
import { embedBatch } from '../operators/extractFeatures.ts';
import { decodeImage } from '../operators/readImages.ts';
import { isRejected, type AlignedFace } from '../operators/records.ts';
import { alignFace } from '../operators/similarityAlign.ts';
import { bytesField, lengthDelimitedBytes, packedFloat32Bytes, packedVarints } from './helpers/caffe-wire.ts';
import { writeSmallPairsFile } from './helpers/smallPairs.ts';

await initBackend();

const cli = path.resolve('bin/sphereface.js');
const root = await mkdtemp(path.join(os.tmpdir(), 'saved-model-'));
t.teardown(() => rm(root, { recursive: true, force: true }));

const MOBILEFACENET_SPEC = `mobilefacenet:${path.join(modelsRoot(), 'mobilefacenet-casia', '068.ckpt')}`;
const FACE_IDS = ['Colin_Powell/Colin_Powell_0038.jpg', 'Tony_Blair/Tony_Blair_0006.jpg'] as const;

/** Aligns real LFW images onto the 112×96 template with the landmarks of lfw_landmark.txt. */
async function alignedFaces(ids: readonly string[]): Promise<AlignedFace[]> {
  const paths = lfwPaths();
  const landmarks = await readLandmarks(paths.landmarks);
  const faces: AlignedFace[] = [];
  for (const id of ids) {
    const points = landmarks.get(id);
    if (points === undefined) throw new Error(`no landmarks for ${id}`);
    const decoded = await decodeImage({ id, path: path.join(paths.images, id) });
    if (isRejected(decoded)) throw new Error(`cannot read ${id}: ${decoded.reason}`);
    faces.push(alignFace({ ...decoded, landmarks: points }));
  }
  return faces;
}

function maxAbsDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

async function readJsonFile(file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
}

async function writeJsonFile(file: string, value: unknown): Promise<void> {
  await writeFile(file, JSON.stringify(value, null, 2));
}

interface CliResult {
  readonly code: number | null;
  readonly output: string;
}

function runCli(...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { env: process.env }, (error, stdout, stderr) => {
      let code: number | null = 0;
      if (error !== null) code = typeof error.code === 'number' ? error.code : null;
      resolve({ code, output: `${stdout}\n${stderr}` });
    });
  });
}

const faces = await alignedFaces(FACE_IDS);
const sphereFace4Dir = path.join(root, 'sphereface4');

// ---------------------------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------------------------

for (const [spec, dir, source] of [
  [MOBILEFACENET_SPEC, path.join(root, 'mobilefacenet'), { kind: 'pytorch', file: '068.ckpt', sha256: await hashFile(MOBILEFACENET_SPEC.slice('mobilefacenet:'.length)) }],
  ['sphereface4:random:3', sphereFace4Dir, { kind: 'random', seed: 3 }],
] as const) {
  t.test(`round trip of ${spec.split(':')[0]}`, async (t) => {
    const { network: original } = await loadNetwork(spec);
    t.teardown(() => original.dispose());
    const threshold = { value: 0.31, protocol: 'test value' };
    const written = await saveModel(dir, original, { alignment: 'sphereface-112x96', source, threshold });

    const { model, manifest } = await loadModel(dir, { engine: 'tfjs' });
    t.teardown(() => model.dispose());
    t.same(manifest, written, 'loadModel returns the manifest that was written');
    t.equal(manifest?.threshold?.value, 0.31);
    t.equal(manifest?.architecture, original.name);
    t.equal(model.name, original.name);
    t.same(model.inputSize, original.inputSize);
    t.equal(model.channelOrder, original.channelOrder);

    const { network: reloaded } = await loadNetwork(dir);
    t.teardown(() => reloaded.dispose());
    t.equal(reloaded.parameters.size, original.parameters.size);
    const changed = [...original.parameters].filter(([name, tensor]) => {
      const copy = reloaded.parameters.get(name);
      return copy === undefined || maxAbsDifference(tensor.dataSync() as Float32Array, copy.dataSync() as Float32Array) !== 0;
    });
    t.same(changed.map(([name]) => name), [], 'every parameter reloads bit for bit');

    const expected = await embedBatch(original, faces);
    const actual = await embedBatch(model, faces);
    for (const [index, id] of FACE_IDS.entries()) {
      const difference = maxAbsDifference(expected[index] as Float32Array, actual[index] as Float32Array);
      t.ok(difference <= 1e-6, `features of ${id} agree (max abs difference ${difference})`);
    }
    // The two faces are different people, so a loader that returned a constant would fail above.
    t.ok(maxAbsDifference(expected[0] as Float32Array, expected[1] as Float32Array) > 1e-3, 'features of different faces differ');
  });
}

t.test('model.json lists the shards in tfjs weight format', async (t) => {
  const modelJson = (await readJsonFile(path.join(sphereFace4Dir, 'model.json'))) as {
    modelTopology: unknown;
    weightsManifest: Array<{ paths: string[]; weights: Array<{ name: string; shape: number[]; dtype: string }> }>;
  };
  t.same(modelJson.modelTopology, { architecture: 'sphereface4', depth: 4, inputSize: { height: 112, width: 96 } });
  const group = modelJson.weightsManifest[0];
  t.ok(group !== undefined);
  const shards = await Promise.all((group?.paths ?? []).map((name) => readFile(path.join(sphereFace4Dir, name))));
  const bytes = Buffer.concat(shards);
  const decoded = tf.io.decodeWeights(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length), group?.weights.map((w) => ({ ...w, dtype: 'float32' as const })) ?? []);
  t.same(decoded['conv1_1.weight']?.shape, [3, 3, 3, 64]);
  t.same(decoded['fc5.weight']?.shape, [21504, 512]);
  t.equal(Object.keys(decoded).length, 14, 'SphereFace-4 has 4 convs × 3 parameters + fc5 weight and bias');
  tf.dispose(Object.values(decoded));
});

t.test('arcface alignment reaches the model', async (t) => {
  const network = randomSphereFace({ depth: 4, inputSize: { height: 112, width: 112 } }, 5);
  t.teardown(() => network.dispose());
  const dir = path.join(root, 'arcface');
  await saveModel(dir, network, { alignment: 'arcface-112x112', source: { kind: 'random', seed: 5 } });

  const { model, manifest } = await loadModel(dir, { engine: 'tfjs' });
  t.teardown(() => model.dispose());
  t.equal(manifest?.alignment, 'arcface-112x112');
  t.equal(model.alignment, 'arcface-112x112', 'feature extraction aligns with the manifest template');
  t.same(model.inputSize, { height: 112, width: 112 });

  await t.rejects(saveModel(path.join(root, 'arcface-wrong'), network, { alignment: 'sphereface-112x96', source: { kind: 'random', seed: 5 } }), {
    message: /field "inputSize" is 112×112, but alignment "sphereface-112x96" gives 112×96 crops/,
  });
});

t.test('loadModel without engine runs SphereFace-4 on TensorFlow.js', async (t) => {
  const { model } = await loadModel(sphereFace4Dir);
  t.teardown(() => model.dispose());
  t.equal(model.engine, 'tfjs', 'SphereFace-4 has no ONNX export');
});

// ---------------------------------------------------------------------------------------------
// Path rule
// ---------------------------------------------------------------------------------------------

/** Writes a folder with a copy of the SphereFace-4 manifest and model.json, changed by `edit`. */
async function brokenFolder(name: string, edit: (manifest: Record<string, unknown>, modelJson: { weightsManifest: Array<{ paths: string[] }> }) => void): Promise<string> {
  const dir = path.join(root, name);
  await mkdir(dir, { recursive: true });
  const manifest = await readJsonFile(path.join(sphereFace4Dir, 'manifest.json'));
  const modelJson = (await readJsonFile(path.join(sphereFace4Dir, 'model.json'))) as unknown as { weightsManifest: Array<{ paths: string[] }> };
  edit(manifest, modelJson);
  await writeJsonFile(path.join(dir, 'manifest.json'), manifest);
  await writeJsonFile(path.join(dir, 'model.json'), modelJson);
  return dir;
}

t.test('path rule rejects ../x.json as weights', async (t) => {
  await writeJsonFile(path.join(root, 'x.json'), {});
  const dir = await brokenFolder('parent-weights', (manifest) => (manifest['weights'] = '../x.json'));
  await t.rejects(loadModel(dir), { name: 'SavedModelError', message: /field "weights" has path "\.\.\/x\.json".*"\.\." segment/ });
});

t.test('path rule rejects an absolute weights path', async (t) => {
  const absolute = path.join(sphereFace4Dir, 'model.json');
  const dir = await brokenFolder('absolute-weights', (manifest) => (manifest['weights'] = absolute));
  const error = await loadModel(dir).catch((caught: unknown) => caught);
  t.ok(error instanceof SavedModelError);
  t.match((error as Error).message, `field "weights" has path "${absolute}", an absolute path`);
});

t.test('path rule rejects a shard path with ..', async (t) => {
  const dir = await brokenFolder('parent-shard', (_manifest, modelJson) => {
    const group = modelJson.weightsManifest[0] as { paths: string[] };
    group.paths[1] = '../sphereface4/group1-shard2of12.bin';
  });
  await t.rejects(loadModel(dir), { name: 'SavedModelError', message: /field "weightsManifest\[0\]\.paths\[1\]" has path "\.\.\/sphereface4\/group1-shard2of12\.bin"/ });
});

t.test('path rule rejects a symlink out of the folder', async (t) => {
  const dir = await brokenFolder('symlink-shard', () => {});
  const names = await readdir(sphereFace4Dir);
  // Every shard but the first is a plain copy, so only the link can be the problem.
  for (const name of names.filter((n) => n.endsWith('.bin') && n !== 'group1-shard1of12.bin')) {
    await writeFile(path.join(dir, name), await readFile(path.join(sphereFace4Dir, name)));
  }
  await symlink(path.join(sphereFace4Dir, 'group1-shard1of12.bin'), path.join(dir, 'group1-shard1of12.bin'));
  const error = await loadModel(dir).catch((caught: unknown) => caught);
  t.ok(error instanceof SavedModelError);
  t.match((error as Error).message, 'field "weightsManifest[0].paths[0]" has path "group1-shard1of12.bin", a symbolic link to');
  t.match((error as Error).message, path.join(sphereFace4Dir, 'group1-shard1of12.bin'));
});

t.test('symlink inside the folder loads', async (t) => {
  const dir = path.join(root, 'symlink-inside');
  await mkdir(dir);
  for (const name of await readdir(sphereFace4Dir)) {
    await writeFile(path.join(dir, name === 'model.json' ? 'real-model.json' : name), await readFile(path.join(sphereFace4Dir, name)));
  }
  await symlink('real-model.json', path.join(dir, 'model.json'));
  const { model } = await loadModel(dir, { engine: 'tfjs' });
  t.equal(model.name, 'sphereface4');
  model.dispose();
});

// ---------------------------------------------------------------------------------------------
// Schema errors
// ---------------------------------------------------------------------------------------------

t.test('schema error names a missing field', async (t) => {
  const dir = await brokenFolder('missing-field', (manifest) => delete manifest['embeddingSize']);
  const error = await loadModel(dir).catch((caught: unknown) => caught);
  t.ok(error instanceof SavedModelError);
  t.match((error as Error).message, /field "embeddingSize": is missing/);
});

t.test('schema error names a field of the wrong type', async (t) => {
  const manifest = await readJsonFile(path.join(sphereFace4Dir, 'manifest.json'));
  const wrong = { ...manifest, inputSize: { height: '112', width: 96 } };
  t.throws(() => decodeManifest(wrong, 'manifest.json'), { message: /field "inputSize\.height": Expected number, actual "112"/ });
});

t.test('schema error names an unknown alignment', async (t) => {
  const manifest = await readJsonFile(path.join(sphereFace4Dir, 'manifest.json'));
  t.throws(() => decodeManifest({ ...manifest, alignment: 'dlib-150x150' }, 'manifest.json'), { message: /field "alignment": Expected "sphereface-112x96" or "arcface-112x112", actual "dlib-150x150"/ });
});

t.test('schema error names a source without its file', async (t) => {
  const manifest = await readJsonFile(path.join(sphereFace4Dir, 'manifest.json'));
  t.throws(() => decodeManifest({ ...manifest, source: { kind: 'caffe', sha256: 'a'.repeat(64) } }, 'manifest.json'), { message: /field "source\.file": expected the file name of the caffe weights/ });
});

t.test('manifest that contradicts the network is rejected', async (t) => {
  const dir = await brokenFolder('wrong-channels', (manifest) => (manifest['channelOrder'] = 'RGB'));
  for (const name of (await readdir(sphereFace4Dir)).filter((n) => n.endsWith('.bin'))) {
    await writeFile(path.join(dir, name), await readFile(path.join(sphereFace4Dir, name)));
  }
  await t.rejects(loadModel(dir), { message: /field "channelOrder" is RGB, but sphereface4 takes BGR/ });
});

t.test('weight shape that differs from the architecture is rejected', async (t) => {
  const dir = path.join(root, 'wrong-shape');
  await mkdir(dir);
  for (const name of await readdir(sphereFace4Dir)) await writeFile(path.join(dir, name), await readFile(path.join(sphereFace4Dir, name)));
  const modelJson = (await readJsonFile(path.join(dir, 'model.json'))) as { weightsManifest: Array<{ weights: Array<{ name: string; shape: number[] }> }> };
  const entry = modelJson.weightsManifest[0]?.weights.find((w) => w.name === 'conv1_1.weight');
  if (entry !== undefined) entry.shape = [3, 3, 64, 3];
  await writeJsonFile(path.join(dir, 'model.json'), modelJson);
  await t.rejects(loadModel(dir), { name: 'SavedModelError', message: /"conv1_1\.weight" has shape \[3, 3, 64, 3\], expected \[3, 3, 3, 64\]/ });
});

// ---------------------------------------------------------------------------------------------
// Caffe weights
// ---------------------------------------------------------------------------------------------

/** Distinct values that float32 stores exactly: multiples of 1/1024 below 100. */
function knownValues(length: number, offset: number): Float32Array {
  const values = new Float32Array(length);
  for (let i = 0; i < length; i++) values[i] = (((i + offset) * 7919) % 100_003) / 1024;
  return values;
}

function blob(shape: readonly number[], data: Float32Array): Uint8Array {
  return lengthDelimitedBytes(7, [bytesField(7, packedVarints(1, shape)), packedFloat32Bytes(5, data)]);
}

function layer(name: string, type: string, blobs: readonly Uint8Array[]): Uint8Array {
  return lengthDelimitedBytes(100, [bytesField(1, name), bytesField(2, type), ...blobs]);
}

/** Caffe blobs of a SphereFace-4 (four stride-2 convs with PReLU, then fc5) and a training-only fc6. */
const CAFFE_LAYERS = [
  { conv: 'conv1_1', relu: 'relu1_1', in: 3, out: 64 },
  { conv: 'conv2_1', relu: 'relu2_1', in: 64, out: 128 },
  { conv: 'conv3_1', relu: 'relu3_1', in: 128, out: 256 },
  { conv: 'conv4_1', relu: 'relu4_1', in: 256, out: 512 },
] as const;

t.test('caffemodel loads into SphereFace-4', async (t) => {
  const caffeBlobs = new Map<string, Float32Array>();
  const layers: Uint8Array[] = [layer('data', 'Input', [])];
  CAFFE_LAYERS.forEach((l, index) => {
    const weight = knownValues(l.out * l.in * 9, 1000 * index);
    const bias = knownValues(l.out, 1000 * index + 1);
    const slopes = knownValues(l.out, 1000 * index + 2);
    caffeBlobs.set(`${l.conv}.weight`, weight).set(`${l.conv}.bias`, bias).set(`${l.relu}.weight`, slopes);
    layers.push(layer(l.conv, 'Convolution', [blob([l.out, l.in, 3, 3], weight), blob([l.out], bias)]));
    layers.push(layer(l.relu, 'PReLU', [blob([l.out], slopes)]));
  });
  const fc5Weight = knownValues(512 * 512 * 7 * 6, 7);
  const fc5Bias = knownValues(512, 8);
  layers.push(layer('fc5', 'InnerProduct', [blob([512, 21504], fc5Weight), blob([512], fc5Bias)]));
  layers.push(layer('fc6', 'MarginInnerProduct', [blob([10, 512], knownValues(5120, 9))]));
  const file = path.join(root, 'sphereface4.caffemodel');
  await writeFile(file, Buffer.concat([Buffer.from(bytesField(1, 'SpherefaceNet-4')), ...layers]));

  const { model, manifest } = await loadModel(`sphereface4:${file}`, { engine: 'tfjs' });
  t.teardown(() => model.dispose());
  t.equal(manifest, undefined, 'a NAME:SOURCE spec has no manifest');
  const { network } = await loadNetwork(`sphereface4:${file}`);
  t.teardown(() => network.dispose());
  t.ok(network instanceof SphereFace);

  // conv1_1: Caffe [out 64, in 3, kh 3, kw 3] → HWIO [3, 3, 3, 64].
  const caffeConv = caffeBlobs.get('conv1_1.weight') as Float32Array;
  const filter = network.parameters.get('conv1_1.weight') as tf.Tensor;
  t.same(filter.shape, [3, 3, 3, 64]);
  const hwio = filter.dataSync();
  let convMismatches = 0;
  for (let o = 0; o < 64; o++) {
    for (let i = 0; i < 3; i++) {
      for (let y = 0; y < 3; y++) {
        for (let x = 0; x < 3; x++) {
          if (hwio[((y * 3 + x) * 3 + i) * 64 + o] !== caffeConv[((o * 3 + i) * 3 + y) * 3 + x]) convMismatches++;
        }
      }
    }
  }
  t.equal(convMismatches, 0, 'every conv1_1 filter value sits at its HWIO position');
  t.equal(hwio[1 * 64 + 5], caffeConv[(5 * 3 + 1) * 9], 'HWIO [0, 0, 1, 5] is Caffe [5, 1, 0, 0]');

  for (const name of ['conv4_1.bias', 'relu1_1.weight', 'relu4_1.weight']) {
    t.same(Array.from(network.parameters.get(name)?.dataSync() ?? []), Array.from(caffeBlobs.get(name) ?? []), `${name} is copied unchanged`);
  }

  // fc5: Caffe [out 512, in (c, y, x) over 512×7×6] → [(y, x, c), out].
  const fc5 = (network.parameters.get('fc5.weight') as tf.Tensor).dataSync();
  let fc5Mismatches = 0;
  for (let o = 0; o < 512; o++) {
    for (let c = 0; c < 512; c++) {
      for (let y = 0; y < 7; y++) {
        for (let x = 0; x < 6; x++) {
          if (fc5[((y * 6 + x) * 512 + c) * 512 + o] !== fc5Weight[o * 21504 + (c * 7 + y) * 6 + x]) fc5Mismatches++;
        }
      }
    }
  }
  t.equal(fc5Mismatches, 0, 'every fc5 weight sits at its HWC row');
  t.same(Array.from(network.parameters.get('fc5.bias')?.dataSync() ?? []), Array.from(fc5Bias));
});

t.test('caffemodel for MobileFaceNet is rejected', async (t) => {
  const error = await loadModel(`mobilefacenet:${path.join(root, 'sphereface4.caffemodel')}`).catch((caught: unknown) => caught);
  t.ok(error instanceof ModelSpecError);
  t.match((error as Error).message, 'Caffe weights load only into the SphereFace networks');
});

// ---------------------------------------------------------------------------------------------
// Training checkpoint
// ---------------------------------------------------------------------------------------------

t.test('training checkpoint loads its network tensors', async (t) => {
  const options = { depth: 4 as const, inputSize: { height: 56, width: 48 } };
  const values = initialSphereFaceParameters(options, 11);
  const tensors = [...values].map(([name, p]) => ({ name, shape: p.shape, data: p.data }));
  tensors.push({ name: 'fc6.weight', shape: [512, 10], data: new Float32Array(5120).fill(1) });
  tensors.push({ name: 'momentum/conv1_1.weight', shape: [3, 3, 3, 64], data: new Float32Array(1728).fill(2) });
  const dir = path.join(root, 'checkpoints');
  const file = await saveCheckpoint(dir, {
    state: {
      format: 'sphereface-ts/checkpoint',
      version: 1,
      iteration: 5,
      epoch: 0,
      position: 5,
      seed: 11,
      dataset: { fingerprint: 'test', samples: 10, classes: 10 },
      config: { network: options },
      createdAt: '2026-12-05T10:00:00.000Z',
    },
    tensors,
  });

  const { network, origin } = await loadNetwork(`sphereface4:${file}`);
  t.teardown(() => network.dispose());
  t.same(origin, { kind: 'training-checkpoint', file });
  t.same(network.inputSize, { height: 56, width: 48 }, 'the input size comes from the checkpoint config');
  t.same(Array.from(network.parameters.get('conv2_1.weight')?.dataSync() ?? []), Array.from(values.get('conv2_1.weight')?.data ?? []));

  await t.rejects(loadNetwork(`sphereface10:${file}`), { name: 'ModelSpecError', message: /is a SphereFace-4 checkpoint, but model spec "sphereface10:.*" asks for sphereface10/ });
});

// ---------------------------------------------------------------------------------------------
// The export command
// ---------------------------------------------------------------------------------------------

t.test('export command writes a saved model', async (t) => {
  const out = path.join(root, 'cli-export');
  const result = await runCli('export', '--model', 'sphereface4:random:1', '--out', out, '--note', 'test export');
  t.equal(result.code, 0, result.output);
  const manifest = (await readJsonFile(path.join(out, 'manifest.json'))) as ModelManifest;
  t.same(manifest.source, { kind: 'random', seed: 1, note: 'test export' });
  t.equal(manifest.architecture, 'sphereface4');
  const modelJson = (await readJsonFile(path.join(out, manifest.weights))) as { weightsManifest: Array<{ paths: string[] }> };
  const shards = modelJson.weightsManifest.flatMap((group) => group.paths);
  t.ok(shards.length > 0);
  const present = await readdir(out);
  for (const shard of shards) t.ok(present.includes(shard), `shard ${shard} exists`);

  const again = await runCli('export', '--model', 'sphereface4:random:1', '--out', out);
  t.equal(again.code, 1, 'a folder that has files is not overwritten');
  t.match(again.output, /is not empty/);
});

/** Builds an eval report with the fields that `sphereface eval --report` writes and the export reads. */
function evalReport(subtractMean: boolean): Record<string, unknown> {
  return {
    mean: 0.875,
    std: 0.01,
    folds: [],
    meanThreshold: 0.4125,
    counts: { pairs: 6000, images: 7701 },
    settings: { model: 'sphereface4:random:1', modelName: 'sphereface4', protocol: { folds: 10, subtractMean, thresholdGrid: '-1:1e-4:1' } },
  };
}

t.test('export rejects a mean-subtracted threshold', async (t) => {
  const report = path.join(root, 'report-mean.json');
  await writeJsonFile(report, evalReport(true));
  const out = path.join(root, 'cli-mean');
  const result = await runCli('export', '--model', 'sphereface4:random:1', '--out', out, '--threshold-from', report);
  t.equal(result.code, 1);
  t.match(result.output, `eval report ${report} was computed with mean subtraction`);
  t.match(result.output, '--no-subtract-mean');
  t.equal(await readdir(out).catch(() => 'absent'), 'absent', 'nothing is written');
});

t.test('export records a plain-cosine threshold', async (t) => {
  const report = path.join(root, 'report-plain.json');
  await writeJsonFile(report, evalReport(false));
  const out = path.join(root, 'cli-plain');
  const result = await runCli('export', '--model', 'sphereface4:random:1', '--out', out, '--threshold-from', report);
  t.equal(result.code, 0, result.output);
  const manifest = (await readJsonFile(path.join(out, 'manifest.json'))) as ModelManifest;
  t.same(manifest.threshold, {
    value: 0.4125,
    protocol: 'LFW View 2, 10-fold, cosine of image+mirror features without mean subtraction',
    lfwAccuracy: 0.875,
  });
});

t.test('export takes the threshold of a real eval', async (t) => {
  const { file: pairs } = await writeSmallPairsFile(root, 1);
  const report = path.join(root, 'report-eval.json');
  const evaluation = await runCli('eval', '--model', MOBILEFACENET_SPEC, '--pairs', pairs, '--report', report, '--batch-size', '8', '--engine', 'tfjs', '--no-subtract-mean', '--no-progress');
  t.equal(evaluation.code, 0, evaluation.output);
  const json = (await readJsonFile(report)) as { meanThreshold: number; mean: number; settings: { protocol: { subtractMean: boolean } } };
  t.equal(json.settings.protocol.subtractMean, false, 'the report records the plain cosine');

  // 20 pairs are not LFW's protocol: their threshold is refused.
  const refused = await runCli('export', '--model', MOBILEFACENET_SPEC, '--out', path.join(root, 'cli-eval-small'), '--threshold-from', report);
  t.equal(refused.code, 1);
  t.match(refused.output, 'scored 20 pairs, not the 6000 pairs of LFW View 2');

  // The same report as if it had covered all of View 2 is taken.
  const full = path.join(root, 'report-eval-full.json');
  await writeJsonFile(full, { ...json, counts: { pairs: 6000, images: 7701 } });
  const out = path.join(root, 'cli-eval');
  const result = await runCli('export', '--model', MOBILEFACENET_SPEC, '--out', out, '--threshold-from', full);
  t.equal(result.code, 0, result.output);
  const manifest = (await readJsonFile(path.join(out, 'manifest.json'))) as ModelManifest;
  t.equal(manifest.threshold?.value, json.meanThreshold);
  t.equal(manifest.threshold?.lfwAccuracy, json.mean);
  t.equal(manifest.source.kind, 'pytorch');
  t.equal(manifest.source.sha256, await hashFile(MOBILEFACENET_SPEC.slice('mobilefacenet:'.length)));

  // Without a threshold option, the published checkpoint keeps the LFW threshold measured for it.
  const plain = path.join(root, 'cli-known');
  const exported = await runCli('export', '--model', MOBILEFACENET_SPEC, '--out', plain);
  t.equal(exported.code, 0, exported.output);
  const known = (await readJsonFile(path.join(plain, 'manifest.json'))) as ModelManifest;
  t.equal(known.threshold?.value, 0.2956, 'the known threshold of 068.ckpt');
});
