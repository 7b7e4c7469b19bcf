import t from 'tap';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../model/backend.ts';
import { linearChwToHwc, type TorchTensor } from '../model/pytorch.ts';
import { loadEmbeddingModel } from '../model/registry.ts';
import {
  SphereFace20,
  convPrelu,
  createSphereFace20,
  fc5WeightToHwc,
  initialSphereFace20Parameters,
  randomSphereFace20,
  sphereFace20ParameterSpecs,
} from '../model/sphereface20.ts';

await initBackend();

const CONV_LAYERS = [
  'conv1_1', 'conv1_2', 'conv1_3',
  'conv2_1', 'conv2_2', 'conv2_3', 'conv2_4', 'conv2_5',
  'conv3_1', 'conv3_2', 'conv3_3', 'conv3_4', 'conv3_5', 'conv3_6', 'conv3_7', 'conv3_8', 'conv3_9',
  'conv4_1', 'conv4_2', 'conv4_3',
];

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

t.test('layer and parameter names', async (t) => {
  const expected = CONV_LAYERS.flatMap((conv) => [`${conv}.weight`, `${conv}.bias`, `${conv.replace('conv', 'relu')}.weight`]);
  expected.push('fc5.weight', 'fc5.bias');
  const specs = sphereFace20ParameterSpecs();
  t.same(specs.map((s) => s.name), expected, '20 convs, each with bias and PReLU, then fc5');
  t.same(specs.find((s) => s.name === 'conv1_1.weight')?.shape, [3, 3, 3, 64], 'conv weights are HWIO');
  t.same(specs.find((s) => s.name === 'conv3_5.weight')?.shape, [3, 3, 256, 256]);
  t.same(specs.find((s) => s.name === 'conv4_1.weight')?.shape, [3, 3, 256, 512]);
  t.same(specs.find((s) => s.name === 'fc5.weight')?.shape, [21504, 512]);
});

t.test('parameter count', async (t) => {
  const specs = sphereFace20ParameterSpecs();
  t.equal(specs.reduce((n, s) => n + size(s.shape), 0), 22_670_656, 'from the specs');
  const model = randomSphereFace20(1);
  t.equal([...model.parameters.values()].reduce((n, p) => n + p.size, 0), 22_670_656, 'from the built model, zero biases included');
  model.dispose();
});

t.test('random initialisation', async (t) => {
  const first = initialSphereFace20Parameters(5);
  const again = initialSphereFace20Parameters(5);
  const other = initialSphereFace20Parameters(6);
  const data = (name: string) => first.get(name)?.data ?? new Float32Array();

  const maxAbs = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const std = (a: Float32Array) => Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);

  // Caffe xavier: uniform in ±√(3 / fan_in); conv1_1 fan_in = 3·3·3 = 27, fc5 fan_in = 21504.
  t.ok(maxAbs(data('conv1_1.weight')) <= 1 / 3 && maxAbs(data('conv1_1.weight')) > 0.3, 'conv1_1 within ±1/3 and reaching near it');
  t.ok(maxAbs(data('conv4_1.weight')) <= Math.sqrt(3 / 2304) && maxAbs(data('conv4_1.weight')) > 0.99 * Math.sqrt(3 / 2304), 'conv4_1 within ±√(3/2304)');
  t.ok(maxAbs(data('fc5.weight')) <= 0.011812 && maxAbs(data('fc5.weight')) > 0.0118, 'fc5 within ±0.011811');
  // Gaussian std 0.01 for stride-1 convs: 36,864 samples give a standard error of about 0.4 %.
  t.ok(Math.abs(std(data('conv1_2.weight')) - 0.01) < 0.0003, `conv1_2 std ${std(data('conv1_2.weight')).toFixed(5)} ≈ 0.01`);
  t.ok(Math.abs(std(data('conv3_9.weight')) - 0.01) < 0.0001, `conv3_9 std ${std(data('conv3_9.weight')).toFixed(5)} ≈ 0.01`);
  t.equal(maxAbs(data('conv2_1.bias')), 0, 'biases start at 0');
  t.equal(maxAbs(data('conv2_2.bias')), 0);
  t.equal(maxAbs(data('fc5.bias')), 0);
  t.ok(data('relu3_4.weight').every((v) => v === 0.25), 'PReLU slopes start at 0.25');
  const fc5 = data('fc5.weight');
  const repeated = again.get('fc5.weight')?.data ?? new Float32Array();
  t.ok(repeated.length === 21504 * 512 && repeated.every((v, i) => v === fc5[i]), 'same seed, same values');
  t.not(other.get('conv1_2.weight')?.data[0], data('conv1_2.weight')[0], 'another seed, other values');
});

t.test('fc5 CHW to HWC permutation', async (t) => {
  t.test('tiny example by hand', async (t) => {
    // 2 outputs over a 2-channel 1×3 map. PyTorch column c·3 + x is the weight of input (c, x).
    const torchWeight = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    // tfjs row (x·2 + c) = [w_out0, w_out1] for input (c, x):
    // (x0,c0)=col0, (x0,c1)=col3, (x1,c0)=col1, (x1,c1)=col4, (x2,c0)=col2, (x2,c1)=col5.
    t.same(Array.from(linearChwToHwc(torchWeight, 2, 2, 1, 3)), [1, 7, 4, 10, 2, 8, 5, 11, 3, 9, 6, 12]);
    t.throws(() => linearChwToHwc(torchWeight, 2, 2, 2, 3), /has 12 elements, expected 2 × 2·2·3 = 24/);
  });

  t.test('same product as the CHW layer', async (t) => {
    const [out, channels, height, width] = [3, 4, 3, 2];
    const inFeatures = channels * height * width;
    const weight = Float32Array.from({ length: out * inFeatures }, (_, i) => Math.sin(i + 1));
    const feature = Float32Array.from({ length: inFeatures }, (_, i) => Math.cos(3 * i));
    const permuted = linearChwToHwc(weight, out, channels, height, width);
    for (let o = 0; o < out; o++) {
      let chwProduct = 0;
      let hwcProduct = 0;
      for (let c = 0; c < channels; c++) {
        for (let y = 0; y < height; y++) {
          for (let x = 0; x < width; x++) {
            const value = feature[(c * height + y) * width + x] ?? NaN; // the same feature value, read at (c, y, x)
            chwProduct += (weight[o * inFeatures + (c * height + y) * width + x] ?? NaN) * value;
            hwcProduct += (permuted[((y * width + x) * channels + c) * out + o] ?? NaN) * value;
          }
        }
      }
      t.ok(Math.abs(chwProduct - hwcProduct) < 1e-5, `output ${o}: ${chwProduct.toFixed(6)} = ${hwcProduct.toFixed(6)}`);
    }
  });

  t.test('fc5 sizes', async (t) => {
    const weight = Float32Array.from({ length: 512 * 21504 }, (_, i) => i % 9973);
    const permuted = fc5WeightToHwc(weight);
    // PyTorch (o, c, y, x) at column c·42 + y·6 + x; tfjs row (y·6 + x)·512 + c, column o.
    for (const [o, c, y, x] of [[0, 0, 0, 0], [511, 511, 6, 5], [17, 300, 3, 2], [200, 5, 6, 0]] as const) {
      t.equal(permuted[((y * 6 + x) * 512 + c) * 512 + o], weight[o * 21504 + c * 42 + y * 6 + x], `(o ${o}, c ${c}, y ${y}, x ${x})`);
    }
  });
});

t.test('conv + PReLU unit with known weights', async (t) => {
  // Input channel 0 = 1..16 row by row over 4×4, channel 1 = its negation.
  const input = tf.tensor4d(Array.from({ length: 16 }, (_, i) => [i + 1, -(i + 1)]).flat(), [1, 4, 4, 2]);
  // HWIO filter: out 0 takes the top-left tap of in 0; out 1 takes 2 × the bottom-centre tap of in 1
  // and −3 × the centre tap of in 0.
  const filterValues = new Float32Array(3 * 3 * 2 * 2);
  const at = (ky: number, kx: number, i: number, o: number) => ((ky * 3 + kx) * 2 + i) * 2 + o;
  filterValues[at(0, 0, 0, 0)] = 1;
  filterValues[at(2, 1, 1, 1)] = 2;
  filterValues[at(1, 1, 0, 1)] = -3;
  const filter = tf.tensor4d(filterValues, [3, 3, 2, 2]);
  const bias = tf.tensor1d([-2, 3]);
  const slopes = tf.tensor1d([0.25, 0.1]);

  // Stride 2, padding 1: output (y, x) is centred on input (2y, 2x).
  //   out0 = in0(2y − 1, 2x − 1) − 2 → (0,0),(0,1),(1,0) read the padding: −2 → −0.5; (1,1): 6 − 2 = 4
  //   out1 = 2·in1(2y + 1, 2x) − 3·in0(2y, 2x) + 3 = −2·in0(2y + 1, 2x) − 3·in0(2y, 2x) + 3
  //        (0,0): −10 − 3 + 3 = −10 → −1; (0,1): −14 − 9 + 3 = −20 → −2; (1,0): −26 − 27 + 3 = −50 → −5; (1,1): −30 − 33 + 3 = −60 → −6
  const stride2 = convPrelu(input, filter, bias, slopes, 2);
  t.same(stride2.shape, [1, 2, 2, 2]);
  t.same(Array.from(stride2.dataSync()), [-0.5, -1, -0.5, -2, -0.5, -5, 4, -6], 'stride 2');

  // Stride 1, spot checks. (0, 0): out0 = 0 − 2 → −0.5; out1 = 2·in1(1, 0) − 3·in0(0, 0) + 3 = −10 − 3 + 3 = −10 → −1.
  // (3, 3): out0 = in0(2, 2) − 2 = 9; out1 = 2·in1(4, 3) [padding, 0] − 3·16 + 3 = −45 → −4.5.
  const stride1 = convPrelu(input, filter, bias, slopes, 1);
  const values = stride1.dataSync();
  t.same(stride1.shape, [1, 4, 4, 2]);
  t.same([values[0], values[1]], [-0.5, -1], 'stride 1 at (0, 0)');
  t.same([values[30], values[31]], [9, -4.5], 'stride 1 at (3, 3)');
  tf.dispose([input, filter, bias, slopes, stride2, stride1]);
});

/** Builds a PyTorch-port state dict (OIHW convs, fc5 [512, 21504] over CHW) whose conv weights are zero except conv1_1. */
function pytorchStateDict(fc5Column: (column: number) => number): Map<string, TorchTensor> {
  const state = new Map<string, TorchTensor>();
  const put = (name: string, shape: number[], fill: (i: number) => number = () => 0) =>
    state.set(name, { name, shape, dtype: 'float32', data: Float32Array.from({ length: size(shape) }, (_, i) => fill(i)) });
  let inChannels = 3;
  for (const conv of CONV_LAYERS) {
    const stage = Number(conv[4]);
    const out = [64, 128, 256, 512][stage - 1] ?? 0;
    // conv1_1 gets non-zero weights to check the OIHW → HWIO conversion; zero stage-2 weights stop them downstream.
    put(`${conv}.weight`, [out, inChannels, 3, 3], conv === 'conv1_1' ? (i) => i + 1 : undefined);
    inChannels = out;
    // conv4_1: bias +1 on even channels, −2 on odd ones; conv4_3: bias +1. Other biases 0.
    let bias: ((c: number) => number) | undefined;
    if (conv === 'conv4_1') bias = (c) => (c % 2 === 0 ? 1 : -2);
    if (conv === 'conv4_3') bias = () => 1;
    put(`${conv}.bias`, [out], bias);
    put(`${conv.replace('conv', 'relu')}.weight`, [out], () => 0.25);
  }
  put('fc5.weight', [512, 21504], (i) => (i < 21504 ? fc5Column(i) : 0));
  put('fc5.bias', [512], (o) => o);
  put('fc6.weight', [512, 10572]);
  return state;
}

t.test('network with known weights from a PyTorch state dict', async (t) => {
  // res4_3 = PReLU(conv4_1) + PReLU(conv4_3) = PReLU(b) + 1 at every position: 2 on even channels,
  // −0.5 + 1 = 0.5 on odd ones. fc5 output 0 weights only the even channels (PyTorch column
  // c·42 + position, so c = ⌊column / 42⌋): 42 positions × 256 channels × 2 = 21504, plus bias 0.
  // A transpose without the CHW → HWC permutation would weight channel (row mod 512) instead.
  const model = createSphereFace20(pytorchStateDict((column) => (Math.floor(column / 42) % 2 === 0 ? 1 : 0)), 'hand-made state dict');
  t.teardown(() => model.dispose());

  const stem = model.parameters.get('conv1_1.weight') as tf.Tensor4D;
  const stemValues = stem.dataSync();
  // HWIO (ky, kx, i, o) comes from OIHW element ((o·3 + i)·3 + ky)·3 + kx, filled with index + 1.
  for (const [ky, kx, i, o] of [[0, 0, 0, 0], [2, 1, 2, 63], [1, 2, 1, 7]] as const) {
    t.equal(stemValues[((ky * 3 + kx) * 3 + i) * 64 + o], ((o * 3 + i) * 3 + ky) * 3 + kx + 1, `conv1_1 weight (ky ${ky}, kx ${kx}, i ${i}, o ${o})`);
  }

  const input = tf.randomUniform([1, 112, 96, 3], -1, 1, 'float32', 3) as tf.Tensor4D;
  const output = model.predict(input);
  const values = output.dataSync();
  t.equal(values[0], 21504, 'fc5 output 0 by hand');
  // Outputs 1..511 have zero weights, so they equal their bias o.
  t.same(Array.from(values.subarray(1, 6)), [1, 2, 3, 4, 5], 'other outputs are their biases');
  t.equal(values[511], 511);
  tf.dispose([input, output]);
});

t.test('spatial sizes and output shape', async (t) => {
  const model = randomSphereFace20(2);
  t.teardown(() => model.dispose());
  const input = tf.randomUniform([2, 112, 96, 3], -1, 1, 'float32', 4) as tf.Tensor4D;

  const output = model.predict(input);
  t.same(output.shape, [2, 512], 'predict output');
  t.ok(output.dataSync().every(Number.isFinite), 'finite values');

  const blobs = model.activations(input);
  const shapes = Object.fromEntries([...blobs].map(([name, tensor]) => [name, tensor.shape]));
  t.same(shapes['conv1_1'], [2, 56, 48, 64]);
  t.same(shapes['res1_3'], [2, 56, 48, 64]);
  t.same(shapes['conv2_1'], [2, 28, 24, 128]);
  t.same(shapes['res2_5'], [2, 28, 24, 128]);
  t.same(shapes['conv3_1'], [2, 14, 12, 256]);
  t.same(shapes['res3_9'], [2, 14, 12, 256]);
  t.same(shapes['conv4_1'], [2, 7, 6, 512]);
  t.same(shapes['res4_3'], [2, 7, 6, 512]);
  t.same(shapes['fc5'], [2, 512]);
  t.same([...blobs.keys()].filter((name) => name.startsWith('res')), ['res1_3', 'res2_3', 'res2_5', 'res3_3', 'res3_5', 'res3_7', 'res3_9', 'res4_3'], '8 residual sums');
  t.equal([...blobs.keys()].filter((name) => name.startsWith('conv')).length, 20, '20 conv blobs');

  // res1_3 = conv1_1 + conv1_3, element by element.
  const sum = tf.add(blobs.get('conv1_1') as tf.Tensor, blobs.get('conv1_3') as tf.Tensor);
  t.equal(tf.max(tf.abs(tf.sub(sum, blobs.get('res1_3') as tf.Tensor))).dataSync()[0], 0, 'res1_3 is the sum of conv1_1 and conv1_3');
  t.same(Array.from(output.dataSync()), Array.from((blobs.get('fc5') as tf.Tensor).dataSync()), 'fc5 blob equals predict output');

  tf.dispose([sum, input, output, ...blobs.values()]);
});

t.test('no tensors leak from predict', async (t) => {
  const model = randomSphereFace20(3);
  const input = tf.zeros([1, 112, 96, 3]) as tf.Tensor4D;
  const baseline = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) model.predict(input).dispose();
  t.equal(tf.memory().numTensors, baseline);
  input.dispose();
  model.dispose();
  t.equal(tf.memory().numTensors, baseline - 1 - model.parameters.size, 'dispose frees the 62 parameters');
});

t.test('mismatched parameters', async (t) => {
  const lone = tf.zeros([3, 3, 3, 64]);
  t.throws(() => new SphereFace20(new Map([['conv1_1.weight', lone]])), /SphereFace-20 parameters do not match the network: missing "conv1_1\.bias" \[64\]/);
  lone.dispose();
  const state = pytorchStateDict(() => 0);
  state.set('conv2_2.weight', { name: 'conv2_2.weight', shape: [128, 64, 3, 3], dtype: 'float32', data: new Float32Array(128 * 64 * 9) });
  t.throws(() => createSphereFace20(state, 'wrong.pth'), { name: 'StateDictMismatchError', message: /wrong\.pth: .*tensor "conv2_2\.weight" has shape \[128, 64, 3, 3\] but the network expects \[128, 128, 3, 3\]/s });
});

t.test('registry', async (t) => {
  const model = await loadEmbeddingModel('sphereface20:random');
  t.ok(model instanceof SphereFace20);
  t.equal(model.channelOrder, 'BGR');
  t.same(model.normalization, { mean: 127.5, scale: 0.0078125 });
  t.equal(model.embeddingSize, 512);
  const seeded = await loadEmbeddingModel('sphereface20:random:7');
  const stem = (m: unknown) => ((m as SphereFace20).parameters.get('conv1_1.weight') as tf.Tensor).dataSync();
  t.same(stem(model), initialSphereFace20Parameters(0).get('conv1_1.weight')?.data, 'random means seed 0');
  t.same(stem(seeded), initialSphereFace20Parameters(7).get('conv1_1.weight')?.data, 'random:7 means seed 7');
  model.dispose();
  seeded.dispose();
  await t.rejects(loadEmbeddingModel('sphereface20:/nonexistent/sphere20a.pth'), { name: 'ModelSpecError', message: /model file not found: "\/nonexistent\/sphere20a\.pth"/ });
});
