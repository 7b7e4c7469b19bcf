import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import sharp from 'sharp';
import t from 'tap';

import { lfwPaths, modelsRoot } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { readCaffeModel } from '../model/caffe.ts';
import { loadMtcnn } from '../model/mtcnn.ts';
import {
  applyLNetOffset,
  cropAndResample,
  detect,
  lnetPatchBox,
  lnetPatchSide,
  refineLandmarks,
  resolveMtcnnOptions,
  type Box,
  type Detection,
  type MtcnnNetworks,
} from '../model/mtcnnDetect.ts';
import { detectFaces, detectFacesIn } from '../operators/detectFaces.ts';
import { decodeImage } from '../operators/readImages.ts';
import { isRejected, type DecodedImage, type Point } from '../operators/records.ts';
import { referenceLNet } from './helpers/mtcnn-lnet-reference.ts';
import type { FeatureMap } from './helpers/mtcnn-reference.ts';

const MODEL_DIR = path.join(modelsRoot(), 'mtcnn');
const LFW = lfwPaths();
const IMAGE_ID = 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg';
const TOLERANCE = 1e-4;

await initBackend();
const det4 = await readCaffeModel(path.join(MODEL_DIR, 'det4.caffemodel'));
const nets = await loadMtcnn(MODEL_DIR, { lnet: true });
const withoutLNet = await loadMtcnn(MODEL_DIR);
t.teardown(() => {
  nets.dispose();
  withoutLNet.dispose();
});

async function lfwImage(id: string): Promise<DecodedImage> {
  const image = await decodeImage({ id, path: path.join(LFW.images, id) });
  if (isRejected(image)) throw new Error(`cannot read ${id}: ${image.reason}`);
  return image;
}

function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] ?? NaN) - (b[i] ?? NaN)));
  return Number.isNaN(max) ? Infinity : max;
}

/**
 * Five 24×24 patches of one face for both forwards: `nhwc` is [24, 24, 15] with patch k in
 * channels 3k … 3k + 2, and `nchw` the same values as a 15×24×24 map. Each patch is a square of
 * the test image around `centres[k]`, resized by sharp (any resampler does for comparing two
 * forwards), transposed (x↔y) and normalised.
 */
async function patchInput(centres: readonly Point[], side: number): Promise<{ nhwc: Float32Array; nchw: FeatureMap }> {
  const nhwc = new Float32Array(24 * 24 * 15);
  const nchw = new Float64Array(15 * 24 * 24);
  for (const [k, [cx, cy]] of centres.entries()) {
    const region = { left: Math.round(cx - side / 2), top: Math.round(cy - side / 2), width: side, height: side };
    const { data } = await sharp(path.join(LFW.images, IMAGE_ID)).extract(region).resize(24, 24, { fit: 'fill' }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    for (let row = 0; row < 24; row++) {
      for (let column = 0; column < 24; column++) {
        for (let c = 0; c < 3; c++) {
          // Transposed: net position (row, column) takes image pixel (x = row, y = column).
          const value = ((data[(column * 24 + row) * 3 + c] ?? 0) - 127.5) * 0.0078125;
          nhwc[(row * 24 + column) * 15 + 3 * k + c] = value;
          nchw[((3 * k + c) * 24 + row) * 24 + column] = value;
        }
      }
    }
  }
  return { nhwc, nchw: { channels: 15, height: 24, width: 24, data: nchw } };
}

t.test('L-Net matches the naive Caffe forward', async (t) => {
  // Two faces in one batch: patches around the landmarks of the test image, and the same
  // patches shifted by 6 pixels, so a mix-up of batch entries or of patches would show.
  const landmarks: Point[] = [[108, 113], [147, 111], [124, 143], [105, 158], [140, 162]];
  const inputs = [await patchInput(landmarks, 26), await patchInput(landmarks.map(([x, y]): Point => [x + 6, y - 6]), 26)];
  const batch = tf.tensor4d(Float32Array.from([...inputs[0]!.nhwc, ...inputs[1]!.nhwc]), [2, 24, 24, 15]);
  const output = nets.lnet!(batch);
  t.same(output.offsets.shape, [2, 5, 2]);
  const offsets = await output.offsets.data();

  inputs.forEach((input, n) => {
    const expected = referenceLNet(det4, input.nchw);
    expected.forEach((head, k) => {
      const got = [offsets[(n * 5 + k) * 2] ?? NaN, offsets[(n * 5 + k) * 2 + 1] ?? NaN];
      const difference = maxAbsDifference(got, head);
      t.ok(difference <= TOLERANCE, `face ${n}, fc5_${k + 1}: max |Δ| ${difference}`);
    });
  });
  // Centred patches give offsets near 0.5; the shifted ones move x one way and y the other.
  const centred = Array.from(offsets.slice(0, 10));
  t.ok(centred.every((v) => Math.abs(v - 0.5) < 0.2), `centred patches give offsets near 0.5 (${centred.map((v) => v.toFixed(3)).join(', ')})`);
  t.ok(offsets[10]! < offsets[0]!, 'a patch moved right sees the eye further left');
  t.ok(offsets[11]! > offsets[1]!, 'a patch moved up sees the eye further down');

  batch.dispose();
  output.offsets.dispose();
});

t.test('L-Net input checks and empty batch', async (t) => {
  const lnet = nets.lnet!;
  const wrongChannels = tf.zeros([1, 24, 24, 3]) as tf.Tensor4D;
  t.throws(() => lnet(wrongChannels), /lnet: input has shape \[1, 24, 24, 3\], expected \[N, 24, 24, 15\]/);
  const integers = tf.zeros([1, 24, 24, 15], 'int32') as tf.Tensor4D;
  t.throws(() => lnet(integers), /lnet: input has dtype int32, expected float32/);
  const empty = tf.zeros([0, 24, 24, 15]) as tf.Tensor4D;
  const output = lnet(empty);
  t.same(output.offsets.shape, [0, 5, 2]);
  for (const tensor of [wrongChannels, integers, empty, output.offsets]) tensor.dispose();
  t.equal(withoutLNet.lnet, undefined, 'loadMtcnn without { lnet: true } has no L-Net');
});

t.test('patch side by hand', async (t) => {
  // Width 100.6 (x2 − x1 + 1) beats height 96: fix(25.15) = 25 is odd, so 26.
  t.equal(lnetPatchSide([10, 20, 109.6, 115]), 26);
  // Height 97.9: fix(24.475) = 24 is even and stays.
  t.equal(lnetPatchSide([10, 20, 100, 116.9]), 24);
  // Side 4 wide: fix(1) = 1 is odd, so 2.
  t.equal(lnetPatchSide([0, 0, 3, 3]), 2);
  // An inside-out box: fix(0.25 · −5) = −1 is odd in Matlab's mod, so 0.
  t.equal(lnetPatchSide([10, 10, 4, 4]), 0);
});

t.test('patch box by hand', async (t) => {
  // 108.7 − 13 = 95.7 → 95, and 112.2 − 13 = 99.2 → 99; the box spans 27 pixels.
  t.same(lnetPatchBox([108.7, 112.2], 26), [95, 99, 121, 125]);
  // Near the top-left corner fix rounds towards zero: 3.2 − 13 = −9.8 → −9, and −8.5 → −8.
  t.same(lnetPatchBox([3.2, 4.5], 26), [-9, -8, 17, 18]);
});

t.test('offset update and clamp by hand', async (t) => {
  const point: Point = [100.25, 50.5];
  // x = 100.25 − 13 + 0.6·26 = 102.85 and y = 50.5 − 13 + 0.3·26 = 45.3.
  const moved = applyLNetOffset(point, 26, [0.6, 0.3]);
  t.ok(Math.abs(moved[0] - 102.85) < 1e-12 && Math.abs(moved[1] - 45.3) < 1e-12, `moved to (${moved.join(', ')})`);
  // Offsets 0.15 and 0.85 are exactly 0.35 from 0.5 and still count as small.
  const edge = applyLNetOffset(point, 26, [0.15, 0.85]);
  t.ok(Math.abs(edge[0] - 91.15) < 1e-12 && Math.abs(edge[1] - 59.6) < 1e-12, `edge offsets kept (${edge.join(', ')})`);
  t.same(applyLNetOffset(point, 26, [0.86, 0.5]), point, 'x too far: the point stays');
  t.same(applyLNetOffset(point, 26, [0.5, 0.1]), point, 'y too far: the point stays, x included');
});

/** Builds a 60×50 image whose value is 3 × column + 1 in every channel. */
function columnRamp(): DecodedImage {
  const width = 60;
  const height = 50;
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) rgb.fill(3 * x + 1, (y * width + x) * 3, (y * width + x + 1) * 3);
  }
  return { id: 'ramp', path: 'ramp', width, height, rgb };
}

t.test('refineLandmarks with a stand-in L-Net', async (t) => {
  // Face 0 gets offsets (0.6, 0.3) on every landmark, face 1 an x offset of 0.9, which is too far.
  const inputs: number[][][][][] = [];
  const stub: MtcnnNetworks = {
    pnet: () => {
      throw new Error('not used');
    },
    rnet: () => {
      throw new Error('not used');
    },
    onet: () => {
      throw new Error('not used');
    },
    lnet(input) {
      inputs.push(input.arraySync());
      const rows = [Array.from({ length: 5 }, () => [0.6, 0.3]), Array.from({ length: 5 }, () => [0.9, 0.5])];
      return { offsets: tf.tensor3d(rows.slice(0, input.shape[0])) };
    },
  };
  const points = [[20, 20], [30, 20], [25, 27], [21, 33], [29, 33]] as const;
  const face = (box: Box): Detection => ({ box, score: 0.99, landmarks: { points, origin: 'one-based' } });
  // Box 40.5 wide and 37 high: fix(10.125) = 10, even.
  const faces = [face([5, 5, 44.5, 41]), face([6, 6, 45.5, 42])];
  const before = tf.memory().numTensors;
  const refined = await refineLandmarks(stub, columnRamp(), faces);
  t.equal(tf.memory().numTensors, before, 'no tensor left behind');

  t.same(refined.map((f) => f.box), faces.map((f) => f.box), 'boxes unchanged');
  refined[0]!.landmarks.points.forEach(([x, y], k) => {
    const [px, py] = points[k]!;
    t.ok(Math.abs(x - (px - 5 + 6)) < 1e-6 && Math.abs(y - (py - 5 + 3)) < 1e-6, `face 0 point ${k}: (${x}, ${y})`);
  });
  t.same(refined[1]!.landmarks.points, points, 'face 1 keeps its points');
  t.equal(refined[0]!.landmarks.origin, 'one-based');

  // The batch is [2, 24, 24, 15], transposed: the image column grows along the first spatial axis.
  const batch = inputs[0]!;
  t.same([batch.length, batch[0]!.length, batch[0]![0]!.length, batch[0]![0]![0]!.length], [2, 24, 24, 15]);
  const patch = batch[0]!;
  for (let k = 0; k < 5; k++) {
    t.ok(patch[20]![3]![3 * k]! > patch[3]![3]![3 * k]!, `patch ${k}: values grow along the first axis (image x)`);
    t.ok(Math.abs(patch[10]![20]![3 * k]! - patch[10]![3]![3 * k]!) < 1e-6, `patch ${k}: constant along the second axis (image y)`);
  }
  // Patch 1 (right eye, x = 30) starts 10 columns right of patch 0 (x = 20), so it is brighter.
  t.ok(patch[0]![0]![3]! > patch[0]![0]![0]!, 'channels 3–5 hold the second landmark');
});

t.test('refinement on a real face matches a naive recomputation', async (t) => {
  const image = await lfwImage(IMAGE_ID);
  const plain = await detect(nets, image);
  const refined = await detect(nets, image, { landmarkRefinement: 'lnet' });
  t.equal(refined.length, plain.length, 'same faces');
  t.same(
    refined.map((f) => [f.box, f.score]),
    plain.map((f) => [f.box, f.score]),
    'boxes and scores unchanged',
  );

  // The same step worked out again from MTCNNv2's formulas, with the naive L-Net forward.
  for (const [index, face] of plain.entries()) {
    const [x1, y1, x2, y2] = face.box;
    let side = Math.trunc(Math.max(x2 - x1 + 1, y2 - y1 + 1) / 4);
    if (side % 2 !== 0) side += 1;
    const input = new Float64Array(15 * 24 * 24);
    face.landmarks.points.forEach(([px, py], k) => {
      const left = Math.trunc(px - side / 2);
      const top = Math.trunc(py - side / 2);
      const patch = cropAndResample(image, [left, top, left + side, top + side], 24);
      for (let y = 0; y < 24; y++) {
        for (let x = 0; x < 24; x++) {
          for (let c = 0; c < 3; c++) input[((3 * k + c) * 24 + x) * 24 + y] = (patch[(y * 24 + x) * 3 + c]! - 127.5) / 128;
        }
      }
    });
    const heads = referenceLNet(det4, { channels: 15, height: 24, width: 24, data: input });

    face.landmarks.points.forEach(([px, py], k) => {
      const [ox = NaN, oy = NaN] = heads[k]!;
      const large = Math.abs(ox - 0.5) > 0.35 || Math.abs(oy - 0.5) > 0.35;
      const expected: Point = large ? [px, py] : [px - side / 2 + ox * side, py - side / 2 + oy * side];
      const [x, y] = refined[index]!.landmarks.points[k]!;
      const distance = Math.hypot(x - expected[0], y - expected[1]);
      t.ok(distance < 1e-3, `face ${index}, landmark ${k}: ${distance.toExponential(2)} pixels from the recomputation`);
      t.ok(Math.hypot(x - px, y - py) < 0.35 * Math.SQRT2 * side, `face ${index}, landmark ${k}: a small movement`);
    });
  }
  const moved = Math.hypot(...[0, 1].map((axis) => refined[0]!.landmarks.points[0]![axis]! - plain[0]!.landmarks.points[0]![axis]!));
  t.ok(moved > 0.1, `the left eye moved (${moved.toFixed(2)} pixels)`);
});

t.test('refinement option checks', async (t) => {
  t.equal(resolveMtcnnOptions().landmarkRefinement, 'none', 'default none');
  t.equal(resolveMtcnnOptions({ landmarkRefinement: 'lnet' }).landmarkRefinement, 'lnet');
  t.throws(() => resolveMtcnnOptions({ landmarkRefinement: 'onet' as never }), /landmarkRefinement must be 'none' or 'lnet', got onet/);

  const image = await lfwImage(IMAGE_ID);
  const missing = /needs L-Net \(det4\.caffemodel\).*loadMtcnn\(dir, \{ lnet: true \}\)/;
  await t.rejects(detect(withoutLNet, image, { landmarkRefinement: 'lnet' }), missing, 'detect');
  t.throws(() => detectFaces(withoutLNet, { landmarkRefinement: 'lnet' }), missing, 'detectFaces at call time');
  t.throws(() => detectFacesIn(withoutLNet, image, { landmarkRefinement: 'lnet' }), missing, 'detectFacesIn at call time');
  await t.rejects(refineLandmarks(withoutLNet, image, []), /loaded without L-Net/);
});

t.test('detectFacesIn passes the option through', async (t) => {
  const image = await lfwImage(IMAGE_ID);
  const [record] = await detectFacesIn(nets, image, { landmarkRefinement: 'lnet' });
  if (record === undefined || isRejected(record) || record.substituted) throw new Error('expected a detected face');
  const direct = await detect(nets, image, { landmarkRefinement: 'lnet' });
  t.same(record.landmarks, direct[record.faceIndex]!.landmarks);
});

t.test('dispose releases the L-Net weights', async (t) => {
  const baseline = tf.memory().numTensors;
  const plain = await loadMtcnn(MODEL_DIR);
  const plainCount = tf.memory().numTensors - baseline;
  plain.dispose();

  const loaded = await loadMtcnn(MODEL_DIR, { lnet: true });
  // L-Net has 73 parameter tensors: per branch 3 convolutions (weight, bias) and 3 PReLUs, fc4
  // (weight, bias) and prelu4, and per head fc4_k, prelu4_k and fc5_k: 5·9 + 3 + 5·5.
  t.equal(tf.memory().numTensors - baseline - plainCount, 73, 'det4 adds 73 weight tensors');
  loaded.dispose();
  t.equal(tf.memory().numTensors, baseline, 'back to the baseline');
  const input = tf.zeros([1, 24, 24, 15]) as tf.Tensor4D;
  t.throws(() => loaded.lnet!(input), /lnet: called after dispose\(\)/);
  input.dispose();
});
