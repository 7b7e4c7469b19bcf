import path from 'node:path';
import sharp from 'sharp';
import t from 'tap';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../model/backend.ts';
import { convolve, loadMobileFaceNet, mobileFaceNetParameterSpecs } from '../model/mobilefacenet.ts';
import { readTorchCheckpoint, stateDict, type TorchTensor } from '../model/pytorch.ts';
import { loadEmbeddingModel } from '../model/registry.ts';
import { readLandmarks } from '../datasets/lfw.ts';
import { lfwPaths, mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { decodeImage } from '../operators/readImages.ts';
import { isRejected } from '../operators/records.ts';
import { alignFace } from '../operators/similarityAlign.ts';
import { conv2d, referenceForward, type FeatureMap } from './helpers/mobilefacenet-reference.ts';

const checkpointPath = mobileFaceNetCheckpoint();
const HEIGHT = 112;
const WIDTH = 96;

/** Decodes a real face as 112×96 RGB: a fixed crop around the face of an LFW image, resized, not aligned. */
async function faceCrop(relative: string, crop = { left: 70, top: 60, width: 110, height: 128 }): Promise<Uint8Array> {
  const { data, info } = await sharp(path.join(lfwPaths().images, relative))
    .extract(crop)
    .resize(WIDTH, HEIGHT, { fit: 'fill' })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.width !== WIDTH || info.height !== HEIGHT || info.channels !== 3) throw new Error(`unexpected crop ${info.width}×${info.height}×${info.channels}`);
  return new Uint8Array(data);
}

/** (pixel − 127.5) / 128, as NHWC float32 for the model and NCHW float64 for the reference. */
function normalise(rgb: Uint8Array): { nhwc: Float32Array; nchw: FeatureMap } {
  const nhwc = new Float32Array(rgb.length);
  const nchw = new Float64Array(rgb.length);
  const plane = HEIGHT * WIDTH;
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = ((rgb[i * 3 + c] ?? 0) - 127.5) / 128;
      nhwc[i * 3 + c] = v;
      nchw[c * plane + i] = v;
    }
  }
  return { nhwc, nchw: { channels: 3, height: HEIGHT, width: WIDTH, data: nchw } };
}

function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] ?? 0) - (b[i] ?? NaN)));
  return max;
}

await initBackend();
const state = stateDict(await readTorchCheckpoint(checkpointPath));
const model = await loadMobileFaceNet(checkpointPath);
t.teardown(() => model.dispose());

/** Decodes a real LFW face and aligns it from its landmarks, as `sphereface eval` does. */
async function alignedFace(id: string): Promise<Uint8Array> {
  const landmarks = (await readLandmarks(lfwPaths().landmarks)).get(id);
  if (landmarks === undefined) throw new Error(`no landmarks for ${id}`);
  const image = await decodeImage({ id, path: path.join(lfwPaths().images, id) });
  if (isRejected(image)) throw new Error(image.reason);
  const aligned = alignFace({ ...image, landmarks });
  if (aligned.height !== HEIGHT || aligned.width !== WIDTH) throw new Error(`unexpected aligned size ${aligned.width}×${aligned.height}`);
  return aligned.rgb;
}

const face = normalise(await alignedFace('Aaron_Eckhart/Aaron_Eckhart_0001.jpg'));

t.test('model description', async (t) => {
  t.equal(model.name, 'mobilefacenet');
  t.same(model.inputSize, { height: 112, width: 96 });
  t.equal(model.channelOrder, 'RGB');
  t.same(model.normalization, { mean: 127.5, scale: 1 / 128 });
  t.equal(model.embeddingSize, 128);
  const specs = mobileFaceNetParameterSpecs();
  t.equal(specs.length, 333 - 50, 'every tensor of the checkpoint except the 50 BatchNorm num_batches_tracked counters');
  t.equal(model.parameters.size, specs.length);
});

t.test('stem convolution by hand', async (t) => {
  // out[o][y][x] = Σ_c Σ_ky Σ_kx w[o][c][ky][kx] · in[c][2y − 1 + ky][2x − 1 + kx], zero outside the image.
  const weight = state.get('conv1.conv.weight') as TorchTensor;
  const byHand = (o: number, y: number, x: number): number => {
    let sum = 0;
    for (let c = 0; c < 3; c++) {
      for (let ky = 0; ky < 3; ky++) {
        for (let kx = 0; kx < 3; kx++) {
          const iy = 2 * y - 1 + ky;
          const ix = 2 * x - 1 + kx;
          if (iy < 0 || iy >= HEIGHT || ix < 0 || ix >= WIDTH) continue;
          sum += Number(weight.data[((o * 3 + c) * 3 + ky) * 3 + kx]) * (face.nchw.data[(c * HEIGHT + iy) * WIDTH + ix] ?? NaN);
        }
      }
    }
    return sum;
  };

  const input = tf.tensor4d(face.nhwc, [1, HEIGHT, WIDTH, 3]);
  const stem = convolve(input, model.parameters.get('conv1.conv.weight') as tf.Tensor4D, 2, 1);
  const values = stem.dataSync();
  t.same(stem.shape, [1, 56, 48, 64], 'stride 2 halves 112×96');
  const reference = conv2d(face.nchw, weight, 2, 1, 1);

  // (0, 0) and (0, 47) read the zero padding at the top (and left). (55, 47) is the last output:
  // its window ends on the last row and column, where TensorFlow's 'same' would add padding.
  for (const [y, x] of [[0, 0], [0, 47], [55, 47], [20, 30]] as const) {
    let worst = 0;
    let worstReference = 0;
    for (let o = 0; o < 64; o++) {
      const expected = byHand(o, y, x);
      worst = Math.max(worst, Math.abs((values[(y * 48 + x) * 64 + o] ?? NaN) - expected));
      worstReference = Math.max(worstReference, Math.abs((reference.data[(o * 56 + y) * 48 + x] ?? NaN) - expected));
    }
    t.ok(worst < 1e-5, `model stem at (${y}, ${x}) matches by hand (max diff ${worst.toExponential(2)})`);
    t.ok(worstReference < 1e-12, `reference stem at (${y}, ${x}) matches by hand`);
  }
  tf.dispose([input, stem]);
});

t.test('embedding matches the naive reference', async (t) => {
  const expected = referenceForward(state, face.nchw);
  const input = tf.tensor4d(face.nhwc, [1, HEIGHT, WIDTH, 3]);
  const output = model.predict(input);
  const actual = output.dataSync();
  t.same(output.shape, [1, 128]);
  const diff = maxAbsDifference(actual, expected);
  const norm = Math.hypot(...expected);
  t.comment(`max abs difference over 128 values: ${diff.toExponential(3)} (reference L2 norm ${norm.toFixed(3)})`);
  t.ok(norm > 1, 'the reference embedding is not degenerate');
  t.ok(diff <= 1e-4, `max abs difference ${diff.toExponential(3)} ≤ 1e-4`);
  tf.dispose([input, output]);
});

t.test('batches of 1 to 64', async (t) => {
  // Four different real crops, tiled: each row of a batch must equal that image's batch-1 embedding.
  const crops = [
    face.nhwc,
    normalise(await faceCrop('Aaron_Eckhart/Aaron_Eckhart_0001.jpg', { left: 60, top: 50, width: 130, height: 152 })).nhwc,
    normalise(await faceCrop('Aaron_Peirsol/Aaron_Peirsol_0001.jpg')).nhwc,
    normalise(await faceCrop('Abel_Pacheco/Abel_Pacheco_0001.jpg')).nhwc,
  ];
  const single = crops.map((crop) => {
    const input = tf.tensor4d(crop, [1, HEIGHT, WIDTH, 3]);
    const output = model.predict(input);
    const values = output.dataSync().slice();
    tf.dispose([input, output]);
    return values;
  });

  for (const n of [1, 2, 7, 64]) {
    const batch = new Float32Array(n * HEIGHT * WIDTH * 3);
    for (let i = 0; i < n; i++) batch.set(crops[i % crops.length] as Float32Array, i * HEIGHT * WIDTH * 3);
    const input = tf.tensor4d(batch, [n, HEIGHT, WIDTH, 3]);
    const output = model.predict(input);
    t.same(output.shape, [n, 128], `batch ${n} shape`);
    const values = output.dataSync();
    let worst = 0;
    for (let i = 0; i < n; i++) worst = Math.max(worst, maxAbsDifference(values.subarray(i * 128, (i + 1) * 128), single[i % crops.length] as Float32Array));
    t.ok(worst < 1e-5, `batch ${n}: every row equals its batch-1 embedding (max diff ${worst.toExponential(2)})`);
    tf.dispose([input, output]);
  }
});

t.test('no tensors leak from predict', async (t) => {
  const input = tf.tensor4d(face.nhwc, [1, HEIGHT, WIDTH, 3]);
  const baseline = tf.memory().numTensors;
  for (let i = 0; i < 50; i++) model.predict(input).dispose();
  t.equal(tf.memory().numTensors, baseline, 'tensor count back to baseline after 50 calls');
  input.dispose();
});

t.test('invalid input shape', async (t) => {
  const input = tf.zeros([1, 112, 112, 3]) as tf.Tensor4D;
  t.throws(() => model.predict(input), { message: 'mobilefacenet: input has shape [1, 112, 112, 3], expected [N, 112, 96, 3] with N ≥ 1' });
  input.dispose();
});

t.test('dispose releases every tensor', async (t) => {
  const before = tf.memory().numTensors;
  const other = await loadMobileFaceNet(checkpointPath);
  t.ok(tf.memory().numTensors > before, 'loading allocates tensors');
  other.dispose();
  t.equal(tf.memory().numTensors, before, 'dispose frees them all');
  t.throws(() => other.predict(tf.zeros([1, 112, 96, 3]) as tf.Tensor4D), /after dispose/);
});

t.test('registry', async (t) => {
  const loaded = await loadEmbeddingModel(`mobilefacenet:${checkpointPath}`);
  t.equal(loaded.name, 'mobilefacenet');
  const input = tf.tensor4d(face.nhwc, [1, HEIGHT, WIDTH, 3]);
  const a = loaded.predict(input);
  const b = model.predict(input);
  t.equal(maxAbsDifference(a.dataSync(), b.dataSync()), 0, 'same embedding as loadMobileFaceNet');
  tf.dispose([input, a, b]);
  loaded.dispose();

  await t.rejects(loadEmbeddingModel('resnet50:/models/r50.pt'), {
    name: 'ModelSpecError',
    message: 'unknown model "resnet50" in spec "resnet50:/models/r50.pt": known models are mobilefacenet, sphereface4, sphereface10, sphereface20, sphereface36, sphereface64',
  });
  await t.rejects(loadEmbeddingModel('mobilefacenet:/nonexistent/068.ckpt'), {
    name: 'ModelSpecError',
    message: /model file not found: "\/nonexistent\/068\.ckpt"/,
  });
  await t.rejects(loadEmbeddingModel('mobilefacenet'), { name: 'ModelSpecError', message: /invalid model spec "mobilefacenet": expected NAME:PATH/ });
});
