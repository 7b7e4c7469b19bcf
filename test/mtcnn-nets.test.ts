import path from 'node:path';
import sharp from 'sharp';
import t from 'tap';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../model/backend.ts';
import { readCaffeModel } from '../model/caffe.ts';
import { caffePooledSize, loadMtcnn, maxPoolCeil, pnetOutputSize } from '../model/mtcnn.ts';
import { lfwPaths, modelsRoot } from '../lib/paths.ts';
import { referenceONet, referencePNet, referenceRNet, type FeatureMap } from './helpers/mtcnn-reference.ts';

const MODEL_DIR = path.join(modelsRoot(), 'mtcnn');
const IMAGE = path.join(lfwPaths().images, 'Aaron_Eckhart', 'Aaron_Eckhart_0001.jpg');
/** A square around the face of the image above, found by eye; transposed, O-Net scores it above 0.999. */
const FACE = { left: 75, top: 80, width: 100, height: 100 };
const TOLERANCE = 1e-4;

interface NetInput {
  /** [1, H, W, 3] float32 data for the TensorFlow.js networks. */
  readonly nhwc: Float32Array;
  /** The same values as a 3×H×W map for the reference. */
  readonly nchw: FeatureMap;
}

/**
 * Crops a region of the test image, resizes it to width × height, transposes it (x↔y) as the
 * released weights expect, and normalises it as (x − 127.5) × 0.0078125. The result is
 * width high and height wide.
 */
async function netInput(crop: typeof FACE, width: number, height: number): Promise<NetInput> {
  const { data, info } = await sharp(IMAGE).extract(crop).resize(width, height, { fit: 'fill' }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.width !== width || info.height !== height || info.channels !== 3) throw new Error(`unexpected crop ${info.width}×${info.height}×${info.channels}`);
  const outHeight = width;
  const outWidth = height;
  const nhwc = new Float32Array(outHeight * outWidth * 3);
  const nchw = new Float64Array(outHeight * outWidth * 3);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      for (let c = 0; c < 3; c++) {
        const value = ((data[(x * width + y) * 3 + c] ?? 0) - 127.5) * 0.0078125;
        nhwc[(y * outWidth + x) * 3 + c] = value;
        nchw[(c * outHeight + y) * outWidth + x] = value;
      }
    }
  }
  return { nhwc, nchw: { channels: 3, height: outHeight, width: outWidth, data: nchw } };
}

function batchOf(inputs: readonly NetInput[]): tf.Tensor4D {
  const first = inputs[0];
  if (first === undefined) throw new Error('empty batch');
  const size = first.nhwc.length;
  const data = new Float32Array(size * inputs.length);
  inputs.forEach((input, i) => data.set(input.nhwc, i * size));
  return tf.tensor4d(data, [inputs.length, first.nchw.height, first.nchw.width, 3]);
}

function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] ?? NaN) - (b[i] ?? NaN)));
  return Number.isNaN(max) ? Infinity : max;
}

/** Copies row `row` of an [N, K] array. */
function rowOf(data: ArrayLike<number>, row: number, width: number): Float64Array {
  return Float64Array.from({ length: width }, (_, k) => data[row * width + k] ?? NaN);
}

await initBackend();
const [det1, det2, det3] = await Promise.all(['det1', 'det2', 'det3'].map((name) => readCaffeModel(path.join(MODEL_DIR, `${name}.caffemodel`))));
if (det1 === undefined || det2 === undefined || det3 === undefined) throw new Error('three caffemodels expected');
const nets = await loadMtcnn(MODEL_DIR);
t.teardown(() => nets.dispose());

/** Caffe's map sizes for P-Net, written out layer by layer: conv 3×3, pool 2/2 rounded up, conv 3×3, conv 3×3. */
function caffePNetSide(input: number): number {
  const conv1 = input - 3 + 1;
  const pool1 = Math.ceil((conv1 - 2) / 2) + 1;
  const conv2 = pool1 - 3 + 1;
  return conv2 - 3 + 1;
}

t.test('Caffe pooled size formula', async (t) => {
  t.equal(caffePooledSize(5, 2, 2), 3, '5 → 3: the last 2×2 window covers one row');
  t.equal(caffePooledSize(6, 3, 2), 3, '6 → 3, where floor rounding would give 2');
  t.equal(caffePooledSize(22, 3, 2), 11, 'R-Net pool1');
  t.equal(caffePooledSize(9, 3, 2), 4, 'R-Net pool2');
  t.equal(caffePooledSize(46, 3, 2), 23, 'O-Net pool1');
  t.equal(caffePooledSize(21, 3, 2), 10, 'O-Net pool2');
  t.equal(caffePooledSize(8, 2, 2), 4, 'O-Net pool3');
});

t.test('maxPoolCeil on hand-made maps', async (t) => {
  // 5×5, kernel 2, stride 2: windows cover rows/columns {0,1}, {2,3}, {4}. All values are
  // negative, so zero padding would show up as 0 in the last row and column.
  const five = [
    [-5, -3, -8, -1, -7],
    [-2, -9, -4, -6, -3],
    [-6, -1, -7, -2, -9],
    [-8, -4, -3, -5, -1],
    [-4, -6, -2, -9, -8],
  ];
  const pooled5 = maxPoolCeil(tf.tensor4d(five.flat(), [1, 5, 5, 1]), 2, 2);
  t.same(pooled5.shape, [1, 3, 3, 1]);
  t.same(Array.from(await pooled5.data()), [-2, -1, -3, -1, -2, -1, -4, -2, -8]);
  pooled5.dispose();

  // 6×6, kernel 3, stride 2: windows cover {0,1,2}, {2,3,4}, {4,5}; the last one hangs over by one.
  const six = [
    [1, 7, 2, 9, 4, 3],
    [8, 5, 6, 1, 2, 0],
    [3, 4, 9, 7, 5, 6],
    [2, 8, 1, 3, 6, 4],
    [6, 0, 5, 2, -3, -5],
    [4, 3, 7, 9, -4, -2],
  ];
  const pooled6 = maxPoolCeil(tf.tensor4d(six.flat(), [1, 6, 6, 1]), 3, 2);
  t.same(pooled6.shape, [1, 3, 3, 1]);
  t.same(Array.from(await pooled6.data()), [9, 9, 6, 9, 9, 6, 7, 9, -2]);
  pooled6.dispose();
});

t.test('P-Net output size', async (t) => {
  for (const [height, width] of [[12, 12], [13, 12], [12, 17], [24, 25], [31, 40], [50, 37]] as const) {
    const expected = { height: caffePNetSide(height), width: caffePNetSide(width) };
    t.same(pnetOutputSize(height, width), expected, `${height}×${width} → ${expected.height}×${expected.width}`);
    const input = tf.zeros([1, height, width, 3]) as tf.Tensor4D;
    const out = nets.pnet(input);
    t.same(out.prob.shape, [1, expected.height, expected.width], `prob map of ${height}×${width}`);
    t.same(out.regression.shape, [1, expected.height, expected.width, 4], `regression map of ${height}×${width}`);
    input.dispose();
    out.prob.dispose();
    out.regression.dispose();
  }
  t.same(pnetOutputSize(12, 12), { height: 1, width: 1 }, 'one 12×12 window gives one cell');
});

t.test('P-Net matches the naive Caffe forward', async (t) => {
  // Resized to 40 wide and 31 high, then transposed, so the net input is 40 high and 31 wide.
  // conv1 gives 38×29, and pool1's last column window hangs over the 29-wide edge.
  const input = await netInput({ left: 40, top: 30, width: 170, height: 200 }, 40, 31);
  const expected = referencePNet(det1, input.nchw);
  const batch = batchOf([input]);
  const out = nets.pnet(batch);
  t.same(out.prob.shape, [1, expected.height, expected.width]);
  const prob = await out.prob.data();
  const regression = await out.regression.data();

  t.ok(maxAbsDifference(prob, expected.prob) <= TOLERANCE, `prob max |Δ| ${maxAbsDifference(prob, expected.prob)}`);
  // The reference keeps conv4-2 channel-major (4×H×W); the network returns H×W×4.
  const plane = expected.height * expected.width;
  const regressionChw = new Float64Array(regression.length);
  for (let p = 0; p < plane; p++) for (let c = 0; c < 4; c++) regressionChw[c * plane + p] = regression[p * 4 + c] ?? NaN;
  t.ok(maxAbsDifference(regressionChw, expected.regression) <= TOLERANCE, `regression max |Δ| ${maxAbsDifference(regressionChw, expected.regression)}`);
  t.ok(Math.max(...expected.prob) - Math.min(...expected.prob) > 0.1, 'the probability map is not constant');

  batch.dispose();
  out.prob.dispose();
  out.regression.dispose();
});

t.test('R-Net matches the naive Caffe forward', async (t) => {
  // Two different crops in one batch, so a mix-up between batch entries would show.
  const inputs = [await netInput(FACE, 24, 24), await netInput({ left: 20, top: 30, width: 120, height: 140 }, 24, 24)];
  const batch = batchOf(inputs);
  const out = nets.rnet(batch);
  t.same(out.prob.shape, [2]);
  t.same(out.regression.shape, [2, 4]);
  const prob = await out.prob.data();
  const regression = await out.regression.data();
  inputs.forEach((input, i) => {
    const expected = referenceRNet(det2, input.nchw);
    t.ok(Math.abs((prob[i] ?? NaN) - expected.prob) <= TOLERANCE, `crop ${i}: prob ${prob[i]} vs reference ${expected.prob}`);
    const got = rowOf(regression, i, 4);
    t.ok(maxAbsDifference(got, expected.regression) <= TOLERANCE, `crop ${i}: regression max |Δ| ${maxAbsDifference(got, expected.regression)}`);
  });
  batch.dispose();
  out.prob.dispose();
  out.regression.dispose();
});

t.test('O-Net matches the naive Caffe forward', async (t) => {
  const inputs = [await netInput(FACE, 48, 48), await netInput({ left: 20, top: 30, width: 120, height: 140 }, 48, 48)];
  const batch = batchOf(inputs);
  const out = nets.onet(batch);
  t.same(out.landmarks.shape, [2, 10]);
  const prob = await out.prob.data();
  const regression = await out.regression.data();
  const landmarks = await out.landmarks.data();
  inputs.forEach((input, i) => {
    const expected = referenceONet(det3, input.nchw);
    t.ok(Math.abs((prob[i] ?? NaN) - expected.prob) <= TOLERANCE, `crop ${i}: prob ${prob[i]} vs reference ${expected.prob}`);
    const gotRegression = rowOf(regression, i, 4);
    t.ok(maxAbsDifference(gotRegression, expected.regression) <= TOLERANCE, `crop ${i}: regression max |Δ| ${maxAbsDifference(gotRegression, expected.regression)}`);
    const gotLandmarks = rowOf(landmarks, i, 10);
    t.ok(maxAbsDifference(gotLandmarks, expected.landmarks ?? []) <= TOLERANCE, `crop ${i}: landmarks max |Δ| ${maxAbsDifference(gotLandmarks, expected.landmarks ?? [])}`);
  });
  batch.dispose();
  out.prob.dispose();
  out.regression.dispose();
  out.landmarks.dispose();
});

t.test('O-Net face and blank crops (sanity check)', async (t) => {
  // A sanity check of the weights and the transposed input convention, not a reference value.
  const face = batchOf([await netInput(FACE, 48, 48)]);
  const blank = tf.fill([1, 48, 48, 3], (127 - 127.5) * 0.0078125) as tf.Tensor4D;
  const faceOut = nets.onet(face);
  const blankOut = nets.onet(blank);
  const faceProbability = (await faceOut.prob.data())[0] ?? NaN;
  const blankProbability = (await blankOut.prob.data())[0] ?? NaN;
  t.ok(faceProbability > 0.9, `face crop probability ${faceProbability} > 0.9`);
  t.ok(blankProbability < 0.1, `blank crop probability ${blankProbability} < 0.1`);
  for (const tensor of [face, blank, faceOut.prob, faceOut.regression, faceOut.landmarks, blankOut.prob, blankOut.regression, blankOut.landmarks]) tensor.dispose();
});

t.test('input checks', async (t) => {
  const wrong = tf.zeros([1, 23, 24, 3]) as tf.Tensor4D;
  t.throws(() => nets.rnet(wrong), /rnet: input has shape \[1, 23, 24, 3\], expected \[N, 24, 24, 3\]/);
  t.throws(() => nets.onet(wrong), /onet: input has shape \[1, 23, 24, 3\], expected \[N, 48, 48, 3\]/);
  const small = tf.zeros([1, 11, 20, 3]) as tf.Tensor4D;
  t.throws(() => nets.pnet(small), /pnet: input has shape \[1, 11, 20, 3\], expected \[N, H, W, 3\] with H, W ≥ 12/);
  const integers = tf.zeros([1, 24, 24, 3], 'int32') as tf.Tensor4D;
  t.throws(() => nets.rnet(integers), /rnet: input has dtype int32, expected float32/);
  for (const tensor of [wrong, small, integers]) tensor.dispose();
});

t.test('empty batches', async (t) => {
  const before = tf.memory().numTensors;
  const inputs = [tf.zeros([0, 30, 20, 3]), tf.zeros([0, 24, 24, 3]), tf.zeros([0, 48, 48, 3])] as tf.Tensor4D[];
  const [pInput, rInput, oInput] = inputs as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
  const p = nets.pnet(pInput);
  t.same(p.prob.shape, [0, 10, 5]);
  t.same(p.regression.shape, [0, 10, 5, 4]);
  const r = nets.rnet(rInput);
  t.same(r.prob.shape, [0]);
  t.same(r.regression.shape, [0, 4]);
  const o = nets.onet(oInput);
  t.same(o.prob.shape, [0]);
  t.same(o.landmarks.shape, [0, 10]);
  for (const tensor of [...inputs, p.prob, p.regression, r.prob, r.regression, o.prob, o.regression, o.landmarks]) tensor.dispose();
  t.equal(tf.memory().numTensors, before, 'nothing else was allocated');
});

t.test('no tensor leak', async (t) => {
  const baseline = tf.memory().numTensors;
  const pInput = tf.zeros([2, 37, 29, 3]) as tf.Tensor4D;
  const rInput = tf.zeros([3, 24, 24, 3]) as tf.Tensor4D;
  const oInput = tf.zeros([3, 48, 48, 3]) as tf.Tensor4D;
  for (let i = 0; i < 3; i++) {
    const p = nets.pnet(pInput);
    const r = nets.rnet(rInput);
    const o = nets.onet(oInput);
    t.equal(tf.memory().numTensors, baseline + 3 + 2 + 2 + 3, `round ${i}: only the inputs and the outputs are alive`);
    for (const tensor of [p.prob, p.regression, r.prob, r.regression, o.prob, o.regression, o.landmarks]) tensor.dispose();
  }
  for (const tensor of [pInput, rInput, oInput]) tensor.dispose();
  t.equal(tf.memory().numTensors, baseline, 'back to the baseline');

  const loaded = await loadMtcnn(MODEL_DIR);
  t.ok(tf.memory().numTensors > baseline, 'loading creates the weight tensors');
  loaded.dispose();
  t.equal(tf.memory().numTensors, baseline, 'dispose() releases every weight tensor');
  const input = tf.zeros([1, 24, 24, 3]) as tf.Tensor4D;
  t.throws(() => loaded.rnet(input), /rnet: called after dispose\(\)/);
  input.dispose();
});
