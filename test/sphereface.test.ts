import t from 'tap';
// The Node bundle of tfjs-core registers no gradient functions. @tensorflow/tfjs registers them on
// the same tfjs-core instance when it loads, as in a training run.
import '@tensorflow/tfjs';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../model/backend.ts';
import type { TorchTensor } from '../model/pytorch.ts';
import { knownModels, loadEmbeddingModel } from '../model/registry.ts';
import {
  SphereFace,
  createSphereFace,
  initialSphereFaceParameters,
  randomSphereFace,
  sphereFaceParameterRoles,
  sphereFaceParameterSpecs,
  type SphereFaceDepth,
} from '../model/sphereface.ts';
import { SphereFace20, sphereFace20ParameterSpecs } from '../model/sphereface20.ts';

await initBackend();

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

const CONV_WEIGHT = /^conv(\d)_(\d+)\.weight$/;
const CONV_BIAS = /^conv(\d)_(\d+)\.bias$/;

/** Stage and index within the stage of a `convS_K.*` parameter, or undefined for other names. */
function convPosition(name: string, pattern: RegExp): { stage: number; index: number } | undefined {
  const match = pattern.exec(name);
  return match === null ? undefined : { stage: Number(match[1]), index: Number(match[2]) };
}

t.test('SphereFace-20 parameter count', async (t) => {
  const specs = sphereFaceParameterSpecs({ depth: 20 });
  // Computed by hand: convs 11,655,424 including zero biases, PReLU 4,672, fc5 21504·512 + 512.
  t.equal(specs.reduce((n, s) => n + size(s.shape), 0), 22_670_656, 'without the fc6 classifier');
  t.same(specs, sphereFace20ParameterSpecs(), 'same specs as sphereface20.ts');
});

// Residual units per stage as in the authors' make_spherenet.py (github.com/wy1iu/sphereface).
// Each stage has 1 + 2 × units convs, and the network has one residual sum per unit.
const DEPTHS: ReadonlyArray<{ depth: SphereFaceDepth; convsPerStage: number[]; sums: number }> = [
  { depth: 4, convsPerStage: [1, 1, 1, 1], sums: 0 },
  { depth: 10, convsPerStage: [1, 3, 5, 1], sums: 3 },
  { depth: 20, convsPerStage: [3, 5, 9, 3], sums: 8 },
  { depth: 36, convsPerStage: [5, 9, 17, 5], sums: 16 },
  { depth: 64, convsPerStage: [7, 17, 33, 7], sums: 30 },
];

t.test('conv layers and residual sums per depth', async (t) => {
  for (const { depth, convsPerStage, sums } of DEPTHS) {
    const specs = sphereFaceParameterSpecs({ depth });
    const convs = specs.map((s) => convPosition(s.name, CONV_WEIGHT)).filter((p) => p !== undefined);
    t.equal(convs.length, depth, `SphereFace-${depth}: ${depth} conv layers in the specs`);
    t.same([1, 2, 3, 4].map((stage) => convs.filter((p) => p.stage === stage).length), convsPerStage, `SphereFace-${depth}: convs per stage`);
    t.equal(specs.filter((s) => s.name.startsWith('relu')).length, depth, `SphereFace-${depth}: one PReLU per conv`);

    // The blobs of a run at a 16×16 input (→ 8, 4, 2, 1) count the layers the graph really applies.
    const model = randomSphereFace({ depth, inputSize: { height: 16, width: 16 } }, 1);
    const input = tf.randomUniform([1, 16, 16, 3], -1, 1, 'float32', 2) as tf.Tensor4D;
    const blobs = model.activations(input);
    const names = [...blobs.keys()];
    t.equal(names.filter((name) => name.startsWith('conv')).length, depth, `SphereFace-${depth}: ${depth} conv blobs`);
    t.equal(names.filter((name) => name.startsWith('res')).length, sums, `SphereFace-${depth}: ${sums} residual sums`);
    t.same(blobs.get('fc5')?.shape, [1, 512], `SphereFace-${depth}: fc5 blob`);
    tf.dispose([input, ...blobs.values()]);
    model.dispose();
  }
});

t.test('residual sum names for SphereFace-10', async (t) => {
  const model = randomSphereFace({ depth: 10, inputSize: { height: 16, width: 16 } }, 1);
  t.teardown(() => model.dispose());
  const input = tf.randomUniform([1, 16, 16, 3], -1, 1, 'float32', 2) as tf.Tensor4D;
  const blobs = model.activations(input);
  t.same([...blobs.keys()], ['conv1_1', 'conv2_1', 'conv2_2', 'conv2_3', 'res2_3', 'conv3_1', 'conv3_2', 'conv3_3', 'res3_3', 'conv3_4', 'conv3_5', 'res3_5', 'conv4_1', 'fc5']);
  // res3_5 = res3_3 + conv3_5, element by element, with no activation after the sum.
  const sum = tf.add(blobs.get('res3_3') as tf.Tensor, blobs.get('conv3_5') as tf.Tensor);
  t.equal(tf.max(tf.abs(tf.sub(sum, blobs.get('res3_5') as tf.Tensor))).dataSync()[0], 0, 'res3_5 is the plain sum');
  tf.dispose([sum, input, ...blobs.values()]);
});

t.test('spatial sizes by the Caffe floor rule', async (t) => {
  // Each stride-2 conv maps n to ⌊(n − 1) / 2⌋ + 1. Worked out by hand, 112 → 56 → 28 → 14 → 7 and
  // 96 → 48 → 24 → 12 → 6. Odd sizes round up: 27 → 14 → 7 → 4 → 2 and 23 → 12 → 6 → 3 → 2.
  const cases = [
    { height: 112, width: 96, last: [7, 6] },
    { height: 56, width: 48, last: [4, 3] },
    { height: 28, width: 24, last: [2, 2] },
    { height: 27, width: 23, last: [2, 2] },
    { height: 1, width: 1, last: [1, 1] },
  ] as const;
  for (const { height, width, last } of cases) {
    const [h4, w4] = last;
    const fc5 = sphereFaceParameterSpecs({ depth: 4, inputSize: { height, width } }).find((s) => s.name === 'fc5.weight');
    t.same(fc5?.shape, [512 * h4 * w4, 512], `fc5.weight at ${height}×${width} has 512·${h4}·${w4} rows`);
    t.same(fc5?.layout, { kind: 'linear-chw', channels: 512, height: h4, width: w4 }, `fc5 layout at ${height}×${width}`);
  }

  const model = randomSphereFace({ depth: 4, inputSize: { height: 27, width: 23 } }, 3);
  t.teardown(() => model.dispose());
  const input = tf.randomUniform([2, 27, 23, 3], -1, 1, 'float32', 4) as tf.Tensor4D;
  const blobs = model.activations(input);
  t.same(blobs.get('conv1_1')?.shape, [2, 14, 12, 64]);
  t.same(blobs.get('conv2_1')?.shape, [2, 7, 6, 128]);
  t.same(blobs.get('conv3_1')?.shape, [2, 4, 3, 256]);
  t.same(blobs.get('conv4_1')?.shape, [2, 2, 2, 512]);
  t.same(blobs.get('fc5')?.shape, [2, 512]);
  tf.dispose([input, ...blobs.values()]);
});

t.test('invalid options', async (t) => {
  for (const inputSize of [{ height: 0, width: 96 }, { height: 112, width: -4 }, { height: 27.5, width: 24 }, { height: Number.NaN, width: 24 }]) {
    t.throws(() => sphereFaceParameterSpecs({ depth: 20, inputSize }), { name: 'RangeError', message: /invalid SphereFace input (height|width) .*: expected a positive integer number of pixels/ }, `${inputSize.height}×${inputSize.width}`);
  }
  t.throws(() => randomSphereFace({ depth: 18 as SphereFaceDepth }), { name: 'RangeError', message: 'invalid SphereFace depth 18: expected one of 4, 10, 20, 36, 64' });
  t.throws(() => sphereFaceParameterRoles({ depth: 20, inputSize: { height: 112, width: 0 } }), RangeError);
});

t.test('Caffe initialisation statistics', async (t) => {
  const values = initialSphereFaceParameters({ depth: 20 }, 11);
  const data = (name: string) => values.get(name)?.data ?? new Float32Array();
  const maxAbs = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const rms = (a: Float32Array) => Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);

  // Caffe xavier: uniform in ±√(3 / fan_in). conv1_1 has fan_in 3·3·3 = 27, so ±1/3, and fc5 has
  // fan_in 21504, so ±0.0118112. A uniform sample of this size reaches within 1 % of its bound.
  const conv1 = data('conv1_1.weight');
  t.ok(maxAbs(conv1) <= 1 / 3, `conv1_1 max |w| ${maxAbs(conv1).toFixed(5)} ≤ 1/3`);
  t.ok(maxAbs(conv1) > 0.99 / 3, 'conv1_1 reaches near its bound');
  const fc5 = data('fc5.weight');
  t.ok(maxAbs(fc5) <= 0.011812, `fc5 max |w| ${maxAbs(fc5).toFixed(7)} ≤ 0.011811`);
  t.ok(maxAbs(fc5) > 0.0118, 'fc5 reaches near its bound');
  // The variance of U(−a, a) is a²/3 = 1 / fan_in.
  t.ok(Math.abs(rms(fc5) - Math.sqrt(1 / 21504)) < 1e-5, `fc5 rms ${rms(fc5).toFixed(7)} ≈ √(1/21504) = 0.0068194`);

  // Gaussian std 0.01: the sample std of n normals has a standard error of about std / √(2n).
  for (const name of ['conv1_2.weight', 'conv2_5.weight', 'conv3_9.weight', 'conv4_3.weight']) {
    const weights = data(name);
    const tolerance = (5 * 0.01) / Math.sqrt(2 * weights.length);
    t.ok(Math.abs(rms(weights) - 0.01) < tolerance, `${name} std ${rms(weights).toFixed(6)} within ${tolerance.toExponential(2)} of 0.01`);
  }

  for (const [name, value] of values) {
    if (name.endsWith('.bias')) t.equal(maxAbs(value.data), 0, `${name} starts at 0`);
    if (name.startsWith('relu')) t.ok(value.data.every((v) => v === 0.25), `${name} slopes start at 0.25`);
  }

  const again = initialSphereFaceParameters({ depth: 20 }, 11);
  const other = initialSphereFaceParameters({ depth: 20 }, 12);
  t.ok([...values].every(([name, v]) => again.get(name)?.data.every((x, i) => x === v.data[i])), 'same seed, same values');
  t.not(other.get('conv1_2.weight')?.data[0], data('conv1_2.weight')[0], 'another seed, other values');
});

t.test('xavier bounds at other depths and inputs', async (t) => {
  const values = initialSphereFaceParameters({ depth: 36, inputSize: { height: 56, width: 48 } }, 2);
  const maxAbs = (name: string) => (values.get(name)?.data ?? new Float32Array()).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  // fan_in: conv2_1 64·9 = 576, conv4_1 256·9 = 2304, fc5 512·4·3 = 6144.
  for (const [name, fanIn] of [['conv2_1.weight', 576], ['conv4_1.weight', 2304], ['fc5.weight', 6144]] as const) {
    const bound = Math.sqrt(3 / fanIn);
    t.ok(maxAbs(name) <= bound && maxAbs(name) > 0.99 * bound, `${name} within ±√(3/${fanIn}) = ±${bound.toFixed(6)}`);
  }
  t.ok(maxAbs('conv3_17.weight') < 0.1, 'conv3_17 is gaussian std 0.01, far inside any xavier bound');
});

t.test('parameter roles', async (t) => {
  for (const depth of [4, 20, 64] as const) {
    const roles = sphereFaceParameterRoles({ depth });
    const specs = sphereFaceParameterSpecs({ depth });
    t.same(roles.map((r) => [r.name, r.shape]), specs.map((s) => [s.name, s.shape]), `SphereFace-${depth}: one role per parameter, in spec order`);

    // In the reference naming convS_1 is the stride-2 conv of stage S and every other convS_K is stride 1.
    const strideOneBiases = specs.map((s) => s.name).filter((name) => (convPosition(name, CONV_BIAS)?.index ?? 1) > 1);
    t.equal(strideOneBiases.length, depth - 4, `SphereFace-${depth}: ${depth - 4} stride-1 convs`);
    t.same(roles.filter((r) => r.lrMult === 0).map((r) => r.name), strideOneBiases, `SphereFace-${depth}: exactly the stride-1 biases are frozen`);
    for (const role of roles) {
      const position = convPosition(role.name, CONV_BIAS);
      if (position !== undefined && position.index > 1) {
        t.equal(role.decayMult, 0, `${role.name} decay 0`);
      } else if (position !== undefined || role.name === 'fc5.bias') {
        t.same([role.lrMult, role.decayMult], [2, 0], `${role.name} lr 2 decay 0`);
      } else {
        // Conv and fc5 weights, and the PReLU slopes, which Caffe weight-decays.
        t.same([role.lrMult, role.decayMult], [1, 1], `${role.name} lr 1 decay 1`);
      }
    }
  }
});

t.test('output shape', async (t) => {
  for (const inputSize of [{ height: 112, width: 96 }, { height: 56, width: 48 }]) {
    const model = randomSphereFace({ depth: 4, inputSize }, 5);
    t.equal(model.name, 'sphereface4');
    t.same(model.inputSize, inputSize);
    const input = tf.randomUniform([3, inputSize.height, inputSize.width, 3], -1, 1, 'float32', 6) as tf.Tensor4D;
    const output = model.predict(input);
    t.same(output.shape, [3, 512], `[N, 512] at ${inputSize.height}×${inputSize.width}`);
    t.ok(output.dataSync().every(Number.isFinite), 'finite values');
    tf.dispose([input, output]);
    model.dispose();
  }

  const model = randomSphereFace({ depth: 4, inputSize: { height: 56, width: 48 } }, 5);
  t.teardown(() => model.dispose());
  const full = tf.zeros([1, 112, 96, 3]) as tf.Tensor4D;
  const fourChannels = tf.zeros([1, 56, 48, 4]) as tf.Tensor4D;
  t.throws(() => model.predict(full), /sphereface4: input has shape \[1, 112, 96, 3\], expected \[N, 56, 48, 3\]/);
  t.throws(() => model.predict(fourChannels), /sphereface4: input has shape \[1, 56, 48, 4\]/);
  tf.dispose([full, fourChannels]);
});

/** Converts the model's parameters to a PyTorch state dict: OIHW convs and fc5 [512, C·H·W] over CHW. */
function toPytorchState(model: SphereFace, fc5Map: { channels: number; height: number; width: number }): Map<string, TorchTensor> {
  const state = new Map<string, TorchTensor>();
  for (const [name, tensor] of model.parameters) {
    const values = tensor.dataSync() as Float32Array;
    let shape = [...tensor.shape];
    let data = Float32Array.from(values);
    if (name.startsWith('conv') && name.endsWith('.weight')) {
      const [kh = 0, kw = 0, inChannels = 0, out = 0] = tensor.shape;
      shape = [out, inChannels, kh, kw];
      for (let y = 0; y < kh; y++) {
        for (let x = 0; x < kw; x++) {
          for (let i = 0; i < inChannels; i++) {
            for (let o = 0; o < out; o++) data[((o * inChannels + i) * kh + y) * kw + x] = values[((y * kw + x) * inChannels + i) * out + o] ?? NaN;
          }
        }
      }
    } else if (name === 'fc5.weight') {
      const { channels, height, width } = fc5Map;
      const inFeatures = channels * height * width;
      shape = [512, inFeatures];
      for (let c = 0; c < channels; c++) {
        for (let y = 0; y < height; y++) {
          for (let x = 0; x < width; x++) {
            for (let o = 0; o < 512; o++) data[o * inFeatures + (c * height + y) * width + x] = values[((y * width + x) * channels + c) * 512 + o] ?? NaN;
          }
        }
      }
    }
    state.set(name, { name, shape, dtype: 'float32', data });
  }
  return state;
}

t.test('PyTorch state dict import at any depth', async (t) => {
  const options = { depth: 10, inputSize: { height: 28, width: 24 } } as const;
  const original = randomSphereFace(options, 8);
  t.teardown(() => original.dispose());
  // 28×24 → 2×2 after four stride-2 convs.
  const state = toPytorchState(original, { channels: 512, height: 2, width: 2 });
  state.set('fc6.weight', { name: 'fc6.weight', shape: [10, 512], dtype: 'float32', data: new Float32Array(5120) });

  const imported = createSphereFace(state, options, 'round-trip.pth');
  t.teardown(() => imported.dispose());
  t.equal(imported.name, 'sphereface10');
  const input = tf.randomUniform([2, 28, 24, 3], -1, 1, 'float32', 9) as tf.Tensor4D;
  const expected = original.predict(input);
  const actual = imported.predict(input);
  t.equal(tf.max(tf.abs(tf.sub(expected, actual))).dataSync()[0], 0, 'same embedding after the OIHW and CHW round trip');
  tf.dispose([input, expected, actual]);

  t.throws(() => createSphereFace(state, { depth: 4, inputSize: { height: 28, width: 24 } }, 'round-trip.pth'), {
    name: 'StateDictMismatchError',
    message: /round-trip\.pth: .*unexpected tensor "conv2_2\.weight" with shape \[128, 128, 3, 3\]/s,
  });
  t.throws(() => createSphereFace(state, { depth: 10 }, 'round-trip.pth'), {
    name: 'StateDictMismatchError',
    message: /tensor "fc5\.weight" has shape \[512, 2048\] but the network expects \[512, 21504\]/,
  });
});

t.test('registry', async (t) => {
  t.same(
    knownModels().filter((spec) => spec.startsWith('sphereface')).map((spec) => spec.split(':')[0]),
    ['sphereface4', 'sphereface10', 'sphereface20', 'sphereface36', 'sphereface64'],
  );
  const model = await loadEmbeddingModel('sphereface4:random:3');
  t.teardown(() => model.dispose());
  t.ok(model instanceof SphereFace);
  t.equal(model.name, 'sphereface4');
  t.equal((model as SphereFace).depth, 4);
  t.same(model.inputSize, { height: 112, width: 96 });
  const conv = ((model as SphereFace).parameters.get('conv2_1.weight') as tf.Tensor).dataSync();
  t.same(conv, initialSphereFaceParameters({ depth: 4 }, 3).get('conv2_1.weight')?.data, 'random:3 means seed 3');

  const twenty = await loadEmbeddingModel('sphereface20:random:1');
  t.ok(twenty instanceof SphereFace20, 'depth 20 loads as SphereFace20, which the ONNX export accepts');
  twenty.dispose();

  await t.rejects(loadEmbeddingModel('sphereface36:random:x'), { name: 'ModelSpecError', message: /invalid seed "x" in model spec "sphereface36:random:x": expected a non-negative integer, as in sphereface36:random:7/ });
  await t.rejects(loadEmbeddingModel('sphereface64:/nonexistent/sphere64.pth'), { name: 'ModelSpecError', message: /model file not found: "\/nonexistent\/sphere64\.pth"/ });
});

/** Builds a network whose parameters are trainable variables, so `tf.variableGrads` reaches them. */
function variableSphereFace(options: { depth: SphereFaceDepth; inputSize: { height: number; width: number } }, seed: number, prefix: string) {
  const variables = new Map<string, tf.Variable>();
  for (const [name, value] of initialSphereFaceParameters(options, seed)) {
    variables.set(name, tf.variable(tf.tensor(value.data, [...value.shape]), true, `${prefix}/${name}`));
  }
  return { model: new SphereFace(variables, options), variables };
}

t.test('gradients through predict on the cpu backend', async (t) => {
  const previous = tf.getBackend();
  await tf.setBackend('cpu');
  t.teardown(async () => {
    await tf.setBackend(previous);
  });

  // The cpu backend's Conv2DBackpropFilter is slow (about 16 s for SphereFace-10 at 28×24), so
  // SphereFace-10, which adds residual units and frozen biases, runs at 8×8 (→ 4, 2, 1, 1).
  const cases = [
    { depth: 4, inputSize: { height: 28, width: 24 } },
    { depth: 10, inputSize: { height: 8, width: 8 } },
  ] as const;
  for (const options of cases) {
    const { depth, inputSize } = options;
    const { model, variables } = variableSphereFace(options, 21, `grad-test-${depth}`);
    const input = tf.randomUniform([2, inputSize.height, inputSize.width, 3], -1, 1, 'float32', 22) as tf.Tensor4D;
    const loss = () => tf.sum(tf.square(model.predict(input))) as tf.Scalar;
    const { value, grads } = tf.variableGrads(loss, [...variables.values()]);

    for (const role of sphereFaceParameterRoles(options)) {
      if (role.lrMult === 0) continue;
      const variable = variables.get(role.name) as tf.Variable;
      const grad = grads[variable.name];
      const data = grad?.dataSync() ?? new Float32Array();
      t.equal(data.length, size(role.shape), `SphereFace-${depth} ${role.name}: gradient present`);
      t.ok(data.every(Number.isFinite), `SphereFace-${depth} ${role.name}: finite`);
      t.ok(data.some((v) => v !== 0), `SphereFace-${depth} ${role.name}: nonzero`);
    }

    // Loss = Σ fc5², so d loss / d fc5.bias = 2 Σ_batch fc5.
    const embedding = model.predict(input);
    const expectedBiasGrad = tf.mul(2, tf.sum(embedding, 0));
    const biasGrad = grads[(variables.get('fc5.bias') as tf.Variable).name] as tf.Tensor;
    const biasError = tf.max(tf.abs(tf.sub(biasGrad, expectedBiasGrad))).dataSync()[0] ?? NaN;
    t.ok(biasError < 1e-4, `SphereFace-${depth} fc5.bias gradient is 2 Σ fc5 (max error ${biasError.toExponential(2)})`);

    // Central difference of the loss along the conv1_1 gradient direction d = g / |g|, whose slope is |g|.
    const stem = variables.get('conv1_1.weight') as tf.Variable;
    const stemGrad = grads[stem.name] as tf.Tensor;
    const gradNorm = tf.norm(stemGrad).dataSync()[0] ?? NaN;
    const direction = tf.div(stemGrad, gradNorm);
    const start = tf.clone(stem);
    const step = 1e-2;
    stem.assign(tf.add(start, tf.mul(direction, step)));
    const plus = loss().dataSync()[0] ?? NaN;
    stem.assign(tf.sub(start, tf.mul(direction, step)));
    const minus = loss().dataSync()[0] ?? NaN;
    stem.assign(start);
    const slope = (plus - minus) / (2 * step);
    t.ok(Math.abs(slope - gradNorm) < 0.02 * gradNorm, `SphereFace-${depth} conv1_1: numerical slope ${slope.toPrecision(5)} ≈ |g| ${gradNorm.toPrecision(5)}`);

    tf.dispose([value, input, embedding, expectedBiasGrad, direction, start, ...Object.values(grads)]);
    model.dispose();
  }
});
