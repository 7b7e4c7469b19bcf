import path from 'node:path';
import os from 'node:os';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import t from 'tap';
import { blobAddress, mapCaffeBlobs, parseCaffeModel, readCaffeModel, type CaffeNet } from '../model/caffe.ts';
import { pnetParameterSpecs, rnetParameterSpecs } from '../model/mtcnn.ts';
import type { ParameterSpec } from '../model/pytorch.ts';
import { lfwPaths, modelsRoot } from '../lib/paths.ts';
import { bytesField, floatField, packedDoubles, packedFloats, packedVarints, varintField, walkNetParameter } from './helpers/caffe-wire.ts';

const MODEL_DIR = path.join(modelsRoot(), 'mtcnn');
const modelPath = (name: string) => path.join(MODEL_DIR, `${name}.caffemodel`);

/** Learnable layers, their types and blob shapes, from det1/det2/det3.prototxt (num_output, kernel_size, input channels). */
const LEARNABLE: Record<string, Array<[name: string, type: string, shapes: number[][]]>> = {
  det1: [
    ['conv1', 'Convolution', [[10, 3, 3, 3], [10]]],
    ['PReLU1', 'PReLU', [[10]]],
    ['conv2', 'Convolution', [[16, 10, 3, 3], [16]]],
    ['PReLU2', 'PReLU', [[16]]],
    ['conv3', 'Convolution', [[32, 16, 3, 3], [32]]],
    ['PReLU3', 'PReLU', [[32]]],
    ['conv4-1', 'Convolution', [[2, 32, 1, 1], [2]]],
    ['conv4-2', 'Convolution', [[4, 32, 1, 1], [4]]],
  ],
  det2: [
    ['conv1', 'Convolution', [[28, 3, 3, 3], [28]]],
    ['prelu1', 'PReLU', [[28]]],
    ['conv2', 'Convolution', [[48, 28, 3, 3], [48]]],
    ['prelu2', 'PReLU', [[48]]],
    ['conv3', 'Convolution', [[64, 48, 2, 2], [64]]],
    ['prelu3', 'PReLU', [[64]]],
    ['conv4', 'InnerProduct', [[128, 576], [128]]],
    ['prelu4', 'PReLU', [[128]]],
    ['conv5-1', 'InnerProduct', [[2, 128], [2]]],
    ['conv5-2', 'InnerProduct', [[4, 128], [4]]],
    // Not in det2.prototxt: the training net's landmark head, saved with the weights.
    ['conv5-3', 'InnerProduct', [[10, 128], [10]]],
  ],
  det3: [
    ['conv1', 'Convolution', [[32, 3, 3, 3], [32]]],
    ['prelu1', 'PReLU', [[32]]],
    ['conv2', 'Convolution', [[64, 32, 3, 3], [64]]],
    ['prelu2', 'PReLU', [[64]]],
    ['conv3', 'Convolution', [[64, 64, 3, 3], [64]]],
    ['prelu3', 'PReLU', [[64]]],
    ['conv4', 'Convolution', [[128, 64, 2, 2], [128]]],
    ['prelu4', 'PReLU', [[128]]],
    ['conv5', 'InnerProduct', [[256, 1152], [256]]],
    ['prelu5', 'PReLU', [[256]]],
    ['conv6-1', 'InnerProduct', [[2, 256], [2]]],
    ['conv6-2', 'InnerProduct', [[4, 256], [4]]],
    ['conv6-3', 'InnerProduct', [[10, 256], [10]]],
  ],
};

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

const nets = new Map<string, CaffeNet>();
for (const name of ['det1', 'det2', 'det3']) nets.set(name, await readCaffeModel(modelPath(name)));
const netOf = (name: string): CaffeNet => {
  const net = nets.get(name);
  if (net === undefined) throw new Error(`${name} not loaded`);
  return net;
};

t.test('det1 layers and blobs', async (t) => {
  const net = netOf('det1');
  t.equal(net.path, modelPath('det1'));
  t.equal(net.format, 'layer');
  t.equal(net.name, '12Net');
  const learnable = net.layers.filter((l) => l.blobs.length > 0).map((l) => [l.name, l.type, l.blobs.map((b) => [...b.shape])]);
  t.same(learnable, LEARNABLE['det1']);
  t.same(
    net.layers.filter((l) => l.blobs.length === 0).map((l) => l.type),
    ['HDF5Data', 'Slice', 'Split', 'Silence', 'Pooling', 'Split', 'Split', 'SoftmaxWithLoss', 'EuclideanLoss', 'Accuracy'],
    'the training layers without blobs are kept, in file order',
  );
});

t.test('det2 and det3 learnable layers', async (t) => {
  for (const name of ['det2', 'det3']) {
    const learnable = netOf(name).layers.filter((l) => l.blobs.length > 0).map((l) => [l.name, l.type, l.blobs.map((b) => [...b.shape])]);
    t.same(learnable, LEARNABLE[name], name);
  }
  t.equal(netOf('det2').name, '24Net');
  t.equal(netOf('det3').name, '48Net');
});

t.test('values match an independent wire-format walk', async (t) => {
  for (const name of ['det1', 'det2', 'det3']) {
    const bytes = await readFile(modelPath(name));
    const walked = walkNetParameter(bytes);
    const net = netOf(name);
    t.equal(net.name, walked.name, `${name}: net name`);
    t.same(net.layers.map((l) => [l.name, l.type]), walked.layers.map((l) => [l.name, l.type]), `${name}: layer names and types`);
    for (const [i, layer] of walked.layers.entries()) {
      layer.blobs.forEach((blob, b) => {
        const imported = net.layers[i]?.blobs[b];
        t.same(imported?.shape, blob.shape, `${name} ${layer.name} blob ${b}: shape`);
        t.ok(imported !== undefined && sameBits(imported.data, blob.data), `${name} ${layer.name} blob ${b}: ${blob.data.length} values bit-identical`);
      });
    }
  }

  // The first floats of det1 conv1's weight, read straight off the bytes with DataView.
  const bytes = await readFile(modelPath('det1'));
  const conv1 = walkNetParameter(bytes).layers.find((l) => l.name === 'conv1');
  const first = Array.from(conv1?.blobs[0]?.data.subarray(0, 4) ?? []);
  t.equal(first.length, 4);
  t.same(Array.from(netOf('det1').layers.find((l) => l.name === 'conv1')?.blobs[0]?.data.subarray(0, 4) ?? []), first);
});

t.test('invalid files name the file', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'caffe-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  const jpeg = path.join(lfwPaths().images, 'Aaron_Eckhart', 'Aaron_Eckhart_0001.jpg');
  await t.rejects(readCaffeModel(jpeg), { name: 'CaffeModelError', message: new RegExp(`^${escape(jpeg)}: not a Caffe model: protobuf decoding .* failed`) }, 'a JPEG');

  const empty = path.join(dir, 'empty.caffemodel');
  await writeFile(empty, new Uint8Array(0));
  await t.rejects(readCaffeModel(empty), { name: 'CaffeModelError', message: new RegExp(`^${escape(empty)}: no layers found in 0 bytes`) }, 'an empty file');

  const full = await readFile(modelPath('det3'));
  const truncated = path.join(dir, 'truncated.caffemodel');
  await writeFile(truncated, full.subarray(0, Math.floor(full.length / 2)));
  await t.rejects(readCaffeModel(truncated), { name: 'CaffeModelError', message: new RegExp(`^${escape(truncated)}: not a Caffe model: .*truncated`) }, 'det3 cut at 50 %');

  const missing = path.join(dir, 'missing.caffemodel');
  await t.rejects(readCaffeModel(missing), { name: 'CaffeModelError', message: new RegExp(`^${escape(missing)}: cannot read the Caffe model \\(ENOENT`) }, 'a missing file');
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---------------------------------------------------------------------------------------------
// A legacy V1 net written by hand.

/** Encodes a legacy BlobProto: num/channels/height/width, then the values. */
function legacyBlob(dims: readonly [number, number, number, number], values: number[]): number[] {
  return [...varintField(1, dims[0]), ...varintField(2, dims[1]), ...varintField(3, dims[2]), ...varintField(4, dims[3]), ...packedFloats(5, values)];
}

function v1Layer(name: string, type: number, blobs: readonly number[][], extra: number[] = []): number[] {
  return bytesField(2, [...bytesField(2, 'bottom'), ...varintField(5, type), ...bytesField(4, name), ...blobs.flatMap((b) => bytesField(6, b)), ...extra]);
}

const CONV_WEIGHT = [0.5, -1, 2, 0.25, -0.75, 3]; // [2 out, 3 in, 1, 1]
const FC_WEIGHT = [0.1, -0.2, 0.3, 1.5, -2.5, 4]; // [3 out, 2 in], stored as doubles

function v1NetBytes(): Uint8Array {
  const convWeight = legacyBlob([2, 3, 1, 1], CONV_WEIGHT);
  // An unpacked repeated float, as some writers produce.
  const convBias = [...varintField(1, 1), ...varintField(2, 1), ...varintField(3, 1), ...varintField(4, 2), ...floatField(5, 7), ...floatField(5, -8)];
  const fcWeight = [...varintField(1, 1), ...varintField(2, 1), ...varintField(3, 3), ...varintField(4, 2), ...packedDoubles(8, FC_WEIGHT)];
  const fcBias = [...bytesField(7, packedVarints(1, [3])), ...packedFloats(5, [1, 2, 3])];
  return Uint8Array.from([
    ...bytesField(1, 'HandMade'),
    ...bytesField(3, 'data'), // NetParameter.input, which the reader skips
    ...packedVarints(4, [1, 3, 1, 1]), // NetParameter.input_dim, skipped
    // blobs_lr (7) and param (1001) are V1 fields the reader skips.
    ...v1Layer('conv', 4, [convWeight, convBias], [...floatField(7, 1), ...floatField(7, 2), ...bytesField(1001, 'shared')]),
    ...v1Layer('relu', 18, []),
    ...v1Layer('fc', 14, [fcWeight, fcBias]),
    ...v1Layer('odd', 99, []),
  ]);
}

t.test('V1 net written by hand', async (t) => {
  const net = parseCaffeModel(v1NetBytes(), 'hand-made V1 net');
  t.equal(net.format, 'v1');
  t.equal(net.name, 'HandMade');
  t.same(net.layers.map((l) => [l.name, l.type]), [['conv', 'Convolution'], ['relu', 'ReLU'], ['fc', 'InnerProduct'], ['odd', 'V1 type 99']]);
  const [conv, , fc] = net.layers;
  t.same(conv?.blobs.map((b) => [...b.shape]), [[2, 3, 1, 1], [1, 1, 1, 2]], 'legacy shapes are kept as stored');
  t.same(Array.from(conv?.blobs[0]?.data ?? []), CONV_WEIGHT);
  t.same(Array.from(conv?.blobs[1]?.data ?? []), [7, -8], 'unpacked floats');
  t.same(fc?.blobs.map((b) => [...b.shape]), [[1, 1, 3, 2], [3]]);
  t.same(Array.from(fc?.blobs[0]?.data ?? []), FC_WEIGHT.map(Math.fround), 'double_data rounded to float32');

  const specs: ParameterSpec[] = [
    { name: 'conv.weight', shape: [1, 1, 3, 2], layout: 'conv2d' },
    { name: 'conv.bias', shape: [2], layout: 'vector' },
    { name: 'fc.weight', shape: [2, 3], layout: 'linear' },
    { name: 'fc.bias', shape: [3], layout: 'vector' },
  ];
  const mapped = mapCaffeBlobs(net, specs);
  // HWIO [1, 1, in, out]: element (i, o) is Caffe's (o, i), i.e. CONV_WEIGHT[o·3 + i].
  t.same(Array.from(mapped.get('conv.weight')?.data ?? []), [0.5, 0.25, -1, -0.75, 2, 3]);
  t.same(Array.from(mapped.get('conv.bias')?.data ?? []), [7, -8], 'legacy [1, 1, 1, 2] bias fills a [2] parameter');
  // [in, out]: element (i, o) is Caffe's (o, i), i.e. FC_WEIGHT[o·2 + i].
  t.same(Array.from(mapped.get('fc.weight')?.data ?? []), [0.1, 0.3, -2.5, -0.2, 1.5, 4].map(Math.fround), 'legacy [1, 1, 3, 2] weight fills [2, 3]');
});

t.test('malformed nets', async (t) => {
  const layer = (name: string, blob: number[]) => bytesField(100, [...bytesField(1, name), ...bytesField(2, 'Convolution'), ...bytesField(7, blob)]);
  t.throws(
    () => parseCaffeModel(Uint8Array.from(layer('c', [...bytesField(7, packedVarints(1, [2, 2])), ...packedFloats(5, [1, 2, 3])])), 'short.caffemodel'),
    { name: 'CaffeModelError', message: 'short.caffemodel: blob 0 of layer 0 "c" has shape [2, 2] (4 elements) but contains 3 values' },
  );
  t.throws(
    () => parseCaffeModel(Uint8Array.from(layer('c', packedFloats(5, [1]))), 'shapeless.caffemodel'),
    { name: 'CaffeModelError', message: /shapeless\.caffemodel: blob 0 of layer 0 "c" has neither a shape nor the legacy num\/channels\/height\/width/ },
  );
  t.throws(
    () => parseCaffeModel(Uint8Array.from([...layer('a', [...bytesField(7, packedVarints(1, [1])), ...packedFloats(5, [1])]), ...v1Layer('b', 4, [])]), 'both.caffemodel'),
    { name: 'CaffeModelError', message: /both\.caffemodel: the net has both "layer" \(1\) and the legacy "layers" \(1\)/ },
  );
  // A V0 layer: its settings, here only a name (V0LayerParameter.name = 1), nested in V1 field 1.
  t.throws(
    () => parseCaffeModel(Uint8Array.from(bytesField(2, bytesField(1, bytesField(1, 'conv1')))), 'v0.caffemodel'),
    { name: 'CaffeModelError', message: /v0\.caffemodel: layer 0 uses the V0 layer format, which this reader does not support/ },
  );
});

// ---------------------------------------------------------------------------------------------
// Mapping.

t.test('blobAddress', async (t) => {
  t.same(blobAddress('conv1.weight'), { layer: 'conv1', blob: 0 });
  t.same(blobAddress('conv4-2.bias'), { layer: 'conv4-2', blob: 1 });
  t.same(blobAddress('bn.scale.2'), { layer: 'bn.scale', blob: 2 });
  t.throws(() => blobAddress('conv1'), /parameter name "conv1" does not name a Caffe blob/);
  t.throws(() => blobAddress('conv1.kernel'), /parameter name "conv1.kernel" does not name a Caffe blob/);
});

t.test('mapping converts layouts', async (t) => {
  const det1 = netOf('det1');
  const mapped = mapCaffeBlobs(det1, pnetParameterSpecs());
  const caffe = det1.layers.find((l) => l.name === 'conv2')?.blobs[0]?.data;
  const hwio = mapped.get('conv2.weight')?.data;
  t.same(mapped.get('conv2.weight')?.shape, [3, 3, 10, 16]);
  // Caffe [16 out, 10 in, 3, 3] at (o, i, y, x) = tfjs [3, 3, 10, 16] at (y, x, i, o).
  for (const [o, i, y, x] of [[0, 0, 0, 0], [15, 9, 2, 2], [3, 7, 1, 2], [11, 2, 2, 0]] as const) {
    t.equal(hwio?.[((y * 3 + x) * 10 + i) * 16 + o], caffe?.[((o * 10 + i) * 3 + y) * 3 + x], `conv2 (o ${o}, i ${i}, y ${y}, x ${x})`);
  }
  t.same(mapped.get('PReLU1.weight')?.data, det1.layers.find((l) => l.name === 'PReLU1')?.blobs[0]?.data, 'PReLU slopes unchanged');

  const det2 = netOf('det2');
  const rnet = mapCaffeBlobs(det2, rnetParameterSpecs(), { ignore: ['conv5-3'] });
  const fc = det2.layers.find((l) => l.name === 'conv4')?.blobs[0]?.data;
  const permuted = rnet.get('conv4.weight')?.data;
  t.same(rnet.get('conv4.weight')?.shape, [576, 128]);
  // Caffe column c·9 + y·3 + x (CHW of 64×3×3) becomes tfjs row (y·3 + x)·64 + c (HWC).
  for (const [o, c, y, x] of [[0, 0, 0, 0], [127, 63, 2, 2], [5, 17, 1, 2], [64, 40, 2, 0]] as const) {
    t.equal(permuted?.[((y * 3 + x) * 64 + c) * 128 + o], fc?.[o * 576 + (c * 3 + y) * 3 + x], `conv4 (o ${o}, c ${c}, y ${y}, x ${x})`);
  }
});

t.test('mapping errors name layer and shapes', async (t) => {
  const det1 = netOf('det1');
  const file = escape(modelPath('det1'));
  const specs = pnetParameterSpecs();

  const missing: ParameterSpec[] = [...specs, { name: 'conv9.weight', shape: [3, 3, 32, 8], layout: 'conv2d' }];
  t.throws(() => mapCaffeBlobs(det1, missing), {
    name: 'CaffeBlobMismatchError',
    message: new RegExp(`^${file}: the Caffe blobs do not match the network:\\n  layer "conv9" is missing; "conv9.weight" expects blob 0 \\(weight\\) of layer "conv9" with shape \\[8, 32, 3, 3\\]$`),
  });

  const misshapen = specs.map((s) => (s.name === 'conv2.weight' ? { ...s, shape: [3, 3, 10, 17] } : s));
  t.throws(() => mapCaffeBlobs(det1, misshapen), {
    message: /blob 0 \(weight\) of layer "conv2" \(Convolution\) has shape \[16, 10, 3, 3\] but "conv2.weight" expects \[17, 10, 3, 3\]/,
  });

  const unmapped = specs.filter((s) => s.name !== 'PReLU3.weight');
  t.throws(() => mapCaffeBlobs(det1, unmapped), {
    message: /blob 0 \(weight\) of layer "PReLU3" \(PReLU\) with shape \[32\] is not a parameter of the network/,
  });

  const extraBlob: ParameterSpec[] = [...specs, { name: 'PReLU1.bias', shape: [10], layout: 'vector' }];
  t.throws(() => mapCaffeBlobs(det1, extraBlob), { message: /layer "PReLU1" \(PReLU\) has 1 blob, but "PReLU1.bias" expects blob 1 \(bias\) of layer "PReLU1" with shape \[10\]/ });

  const noBlobs: ParameterSpec[] = [...specs, { name: 'pool1.weight', shape: [10], layout: 'vector' }];
  t.throws(() => mapCaffeBlobs(det1, noBlobs), { message: /layer "pool1" \(Pooling\) has no blobs; "pool1.weight" expects blob 0/ });

  t.throws(() => mapCaffeBlobs(netOf('det2'), rnetParameterSpecs()), {
    message: /blob 0 \(weight\) of layer "conv5-3" \(InnerProduct\) with shape \[10, 128\] is not a parameter of the network\n  blob 1 \(bias\) of layer "conv5-3"/,
  }, 'det2 has a head that R-Net does not use');
  t.equal(mapCaffeBlobs(netOf('det2'), rnetParameterSpecs(), { ignore: ['conv5-3'] }).size, rnetParameterSpecs().length, 'ignoring it maps every parameter');
});
