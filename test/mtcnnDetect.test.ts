import * as tf from '@tensorflow/tfjs-core';
import t, { type Test } from 'tap';

import { initBackend } from '../model/backend.ts';
import {
  bbreg,
  cropAndResample,
  detect,
  fixBox,
  generateBoundingBoxes,
  imResample,
  nms,
  pad,
  pyramidScales,
  regressCandidate,
  rerec,
  resolveMtcnnOptions,
  scaledSize,
  type Box,
  type BoxRegression,
  type MtcnnNetworks,
  type ScoredBox,
} from '../model/mtcnnDetect.ts';
import type { DecodedImage } from '../operators/records.ts';

/** pdollar scales every resampled value by 1/(1 + 1e-6). */
const PDOLLAR_SCALE = 1 / (1 + 1e-6);

function closeArrays(t: Test, actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, message: string): void {
  t.equal(actual.length, expected.length, `${message}: length`);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs((actual[i] ?? NaN) - (expected[i] ?? NaN)));
  const listing = actual.length <= 16 ? ` (got [${Array.from(actual).join(', ')}])` : '';
  t.ok(worst <= tolerance, `${message}: max difference ${worst} ≤ ${tolerance}${listing}`);
}

/** One-channel image of one row. */
function row(values: number[]): Float32Array {
  return Float32Array.from(values);
}

t.test('imResample 4→2 is the pairwise mean', async (t) => {
  const out = imResample(row([10, 20, 30, 50]), 1, 4, 1, 2, 1);
  closeArrays(t, out, [15 * PDOLLAR_SCALE, 40 * PDOLLAR_SCALE], 1e-5, 'columns');
  const column = imResample(row([10, 20, 30, 50]), 4, 1, 2, 1, 1);
  closeArrays(t, column, [15 * PDOLLAR_SCALE, 40 * PDOLLAR_SCALE], 1e-5, 'rows');
});

t.test('imResample 3→2 uses fractional area weights', async (t) => {
  // Output 0 covers source [0, 1.5): weights 2/3 and 1/3. Output 1 covers [1.5, 3): 1/3 and 2/3.
  const expected = [(2 / 3) * 30 + (1 / 3) * 60, (1 / 3) * 60 + (2 / 3) * 90].map((v) => v * PDOLLAR_SCALE);
  closeArrays(t, imResample(row([30, 60, 90]), 1, 3, 1, 2, 1), expected, 1e-4, 'columns');
  closeArrays(t, imResample(row([30, 60, 90]), 3, 1, 2, 1, 1), expected, 1e-4, 'rows');
});

t.test('imResample 5→3 spreads the middle pixel', async (t) => {
  // Spans [0, 5/3), [5/3, 10/3), [10/3, 5), each weight 0.6 × overlap.
  const source = [0, 10, 20, 30, 40];
  const expected = [0.6 * 0 + 0.4 * 10, 0.2 * 10 + 0.6 * 20 + 0.2 * 30, 0.4 * 30 + 0.6 * 40].map((v) => v * PDOLLAR_SCALE);
  closeArrays(t, imResample(row(source), 1, 5, 1, 3, 1), expected, 1e-4, 'columns');
});

t.test('imResample 2→4 is bilinear with clamped edges', async (t) => {
  // Output centres sit at source positions -0.25, 0.25, 0.75 and 1.25, and the outer two clamp.
  const expected = [10, 0.75 * 10 + 0.25 * 50, 0.25 * 10 + 0.75 * 50, 50].map((v) => v * PDOLLAR_SCALE);
  closeArrays(t, imResample(row([10, 50]), 1, 2, 1, 4, 1), expected, 1e-4, 'columns');
  closeArrays(t, imResample(row([10, 50]), 2, 1, 4, 1, 1), expected, 1e-4, 'rows');
});

t.test('imResample 2-D keeps channels apart', async (t) => {
  // 4×4 → 2×2 takes 2×2 block means. Channel c contains value + 100·c.
  const height = 4;
  const width = 4;
  const pixels = new Float32Array(height * width * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) pixels[(y * width + x) * 3 + c] = y * 4 + x + 100 * c;
    }
  }
  const out = imResample(pixels, height, width, 2, 2);
  const expected: number[] = [];
  for (const [y, x] of [
    [0, 0],
    [0, 2],
    [2, 0],
    [2, 2],
  ] as const) {
    const mean = (y * 4 + x + (y * 4 + x + 1) + ((y + 1) * 4 + x) + ((y + 1) * 4 + x + 1)) / 4;
    for (let c = 0; c < 3; c++) expected.push((mean + 100 * c) * PDOLLAR_SCALE);
  }
  closeArrays(t, out, expected, 1e-4, '2×2 means');
});

t.test('imResample matches a naive area/bilinear resampler', async (t) => {
  // Independent formulation: shrinking integrates the piecewise-constant source over each output
  // span, and enlarging interpolates between pixel centres. The tolerance covers pdollar's 1/(1 + 1e-6)
  // scale and float32 rounding.
  function naiveAxis(values: number[], to: number): number[] {
    const from = values.length;
    const out: number[] = [];
    for (let i = 0; i < to; i++) {
      if (from > to) {
        const start = (i * from) / to;
        const end = ((i + 1) * from) / to;
        let sum = 0;
        for (let k = 0; k < from; k++) sum += Math.max(0, Math.min(end, k + 1) - Math.max(start, k)) * values[k]!;
        out.push((sum * to) / from);
      } else {
        const position = Math.min(Math.max(((i + 0.5) * from) / to - 0.5, 0), from - 1);
        const left = Math.floor(position);
        const right = Math.min(left + 1, from - 1);
        out.push(values[left]! * (1 - (position - left)) + values[right]! * (position - left));
      }
    }
    return out;
  }

  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  for (const [height, width, newHeight, newWidth] of [
    [37, 53, 17, 80],
    [25, 25, 7, 11],
    [13, 40, 29, 13],
  ] as const) {
    const pixels = Float32Array.from({ length: height * width }, () => Math.round(random() * 255));
    const rows: number[][] = [];
    for (let y = 0; y < height; y++) rows.push(naiveAxis(Array.from(pixels.subarray(y * width, (y + 1) * width)), newWidth));
    const expected = new Float64Array(newHeight * newWidth);
    for (let x = 0; x < newWidth; x++) {
      const column = naiveAxis(
        rows.map((r) => r[x]!),
        newHeight,
      );
      column.forEach((v, y) => (expected[y * newWidth + x] = v));
    }
    closeArrays(t, imResample(pixels, height, width, newHeight, newWidth, 1), expected, 0.01, `${height}×${width} → ${newHeight}×${newWidth}`);
  }
});

t.test('imResample same size returns the input unscaled', async (t) => {
  const pixels = Uint8Array.from([1, 2, 3, 4, 5, 6]);
  t.same(Array.from(imResample(pixels, 1, 2, 1, 2)), [1, 2, 3, 4, 5, 6]);
});

t.test('imResample rejects a wrong buffer', async (t) => {
  t.throws(() => imResample(new Float32Array(5), 1, 2, 1, 1), /expected 1×2×3 = 6/);
  t.throws(() => imResample(new Float32Array(6), 1, 2, 0, 1), /newHeight must be a positive integer/);
});

t.test('pyramid of a 250×250 image', async (t) => {
  const scales = pyramidScales(250, 250, 20, 0.85);
  t.equal(scales.length, 16, '16 scales');
  t.equal(scales[0], 0.6, 'first scale 12/20');
  t.ok(Math.abs(scales[15]! - 0.052413) < 1e-6, `last scale ≈ 0.052413 (got ${scales[15]})`);
  t.same(
    scales.map((s) => scaledSize(250, 250, s).height),
    [150, 128, 109, 93, 79, 67, 57, 49, 41, 35, 30, 26, 22, 19, 16, 14],
    'resized sides',
  );
  t.equal(pyramidScales(250, 250, 20, 0.709).length, 8, 'factor 0.709 gives 8 scales');
  t.same(pyramidScales(19, 400, 20, 0.85), [], 'shorter side below minSize gives none');
  t.same(pyramidScales(20, 20, 20, 0.85), [0.6], 'shorter side equal to minSize gives one');
});

t.test('generateBoundingBoxes arithmetic', async (t) => {
  // A 3-row × 4-column map. Cells (column 3, row 2) and (column 0, row 0) pass a 0.6 threshold.
  // Cell (column 1, row 1) sits exactly on it and passes too, because the test is ≥.
  const probability = new Float32Array(12);
  probability[2 * 4 + 3] = 0.9;
  probability[0] = 0.75;
  probability[1 * 4 + 1] = 0.6;
  probability[1 * 4 + 2] = 0.59;
  const regression = new Float32Array(12 * 4);
  regression.set([0.1, 0.2, 0.3, 0.4], (2 * 4 + 3) * 4);
  const scale = 0.43;
  const threshold = probability[1 * 4 + 1]!;

  const candidates = generateBoundingBoxes(probability, regression, 3, 4, scale, threshold);
  t.equal(candidates.length, 3, 'three cells pass');
  // Raster order: (0,0), (1,1), (3,2). x1 = fix((2i+1)/s), x2 = fix((2i+12)/s).
  t.same(candidates[0]!.box, [Math.trunc(1 / 0.43), Math.trunc(1 / 0.43), Math.trunc(12 / 0.43), Math.trunc(12 / 0.43)]);
  t.same(candidates[0]!.box, [2, 2, 27, 27], 'cell (0, 0) by hand');
  t.same(candidates[1]!.box, [6, 6, 32, 32], 'cell (1, 1): 3/0.43 = 6.98, 14/0.43 = 32.6');
  t.same(candidates[2]!.box, [16, 11, 41, 37], 'cell (3, 2): 7/0.43 = 16.3, 5/0.43 = 11.6, 18/0.43 = 41.9, 16/0.43 = 37.2');
  t.ok(Math.abs(candidates[2]!.score - 0.9) < 1e-6, 'score');
  t.same(candidates[2]!.regression.map((v) => Number(v.toFixed(6))), [0.1, 0.2, 0.3, 0.4], 'regression of its cell');
});

t.test('nms union', async (t) => {
  const boxes: ScoredBox[] = [
    { box: [1, 1, 10, 10], score: 0.9 },
    { box: [2, 2, 11, 11], score: 0.8 }, // IoU with box 0: 81 / 119 = 0.68
    { box: [20, 20, 29, 29], score: 0.7 },
  ];
  t.same(nms(boxes, 0.5, 'union'), [0, 2], '0.68 > 0.5 is suppressed');
  t.same(nms(boxes, 0.7, 'union'), [0, 1, 2], '0.68 ≤ 0.7 is kept, highest score first');
  t.same(nms([], 0.5, 'union'), [], 'no boxes');
});

t.test('nms min', async (t) => {
  const boxes: ScoredBox[] = [
    { box: [1, 1, 10, 10], score: 0.5 },
    { box: [3, 3, 6, 6], score: 0.9 }, // inside box 0: inter 16, min area 16
  ];
  t.same(nms(boxes, 0.7, 'min'), [1], 'overlap 1 over the smaller area');
  t.same(nms(boxes, 0.7, 'union'), [1, 0], 'IoU 16/100 keeps both');
});

t.test('nms keeps an overlap equal to the threshold', async (t) => {
  // Areas 16 and 8 with intersection 8: IoU = 8 / 16 = 0.5 exactly.
  const boxes: ScoredBox[] = [
    { box: [1, 1, 4, 4], score: 0.9 },
    { box: [1, 1, 4, 2], score: 0.8 },
  ];
  t.same(nms(boxes, 0.5, 'union'), [0, 1]);
  t.same(nms(boxes, 0.49, 'union'), [0]);
});

t.test('nms tie order', async (t) => {
  const same: ScoredBox[] = [
    { box: [1, 1, 10, 10], score: 0.8 },
    { box: [1, 1, 10, 10], score: 0.8 },
  ];
  t.same(nms(same, 0.5, 'union'), [1], 'among equal scores the later box wins');
  const apart: ScoredBox[] = [
    { box: [1, 1, 5, 5], score: 0.5 },
    { box: [11, 11, 15, 15], score: 0.5 },
    { box: [21, 21, 25, 25], score: 0.5 },
  ];
  t.same(nms(apart, 0.5, 'union'), [2, 1, 0], 'equal scores come out last index first');
});

t.test('box arithmetic', async (t) => {
  t.same(regressCandidate([10, 20, 30, 60], [0.1, -0.05, 0.2, 0.25]), [12, 18, 34, 70], 'stage 1: width 20, height 40');
  t.same(bbreg([10, 20, 29, 59], [0.1, -0.05, 0.2, 0.25]), [12, 18, 33, 69], 'bbreg: width 20, height 40 with +1');
  t.same(rerec([10, 20, 30, 60]), [0, 20, 40, 60], 'tall box widened about its centre');
  t.same(rerec([0, 0, 10, 4]), [0, -3, 10, 7], 'wide box heightened about its centre');
  t.same(fixBox([-1.5, 2.7, 9.99, 3]), [-1, 2, 9, 3], 'truncates towards zero');
});

t.test('pad clamps to the image', async (t) => {
  t.same(pad([-2, 5, 12, 260], 10, 250), { dy: 1, edy: 246, dx: 4, edx: 13, y: 5, ey: 250, x: 1, ex: 10, cropWidth: 15, cropHeight: 256 });
  t.same(pad([3, 4, 8, 9], 10, 10), { dy: 1, edy: 6, dx: 1, edx: 6, y: 4, ey: 9, x: 3, ex: 8, cropWidth: 6, cropHeight: 6 }, 'inside');
  const outside = pad([20, 1, 29, 10], 10, 10);
  t.ok(outside.x > outside.ex && outside.dx > outside.edx, 'a box right of the image has empty column ranges');
});

t.test('cropAndResample zero-fills outside the image', async (t) => {
  const width = 30;
  const height = 30;
  const rgb = new Uint8Array(width * height * 3).fill(200);
  const image: DecodedImage = { id: 'grey', path: 'grey', width, height, rgb };

  const inside: Box = [3, 3, 26, 26];
  t.same(Array.from(new Set(cropAndResample(image, inside, 24))), [200], 'a 24×24 box inside is copied as is');

  const corner = cropAndResample(image, [-11, -11, 12, 12], 24);
  t.equal(corner[0], 0, 'top-left crop pixel is outside the image');
  t.equal(corner[(23 * 24 + 23) * 3], 200, 'bottom-right crop pixel is inside');
  t.equal(corner[(11 * 24 + 11) * 3], 0, 'pixel (12, 12) of the crop is image pixel (0, 0) in 1-based terms, outside');
  t.equal(corner[(12 * 24 + 12) * 3], 200, 'pixel (13, 13) of the crop is image pixel (1, 1)');

  const away = cropAndResample(image, [100, 100, 123, 123], 24);
  t.same(Array.from(new Set(away)), [0], 'a box that misses the image is all zeros');
});

t.test('options are checked', async (t) => {
  t.same(resolveMtcnnOptions(), { minSize: 20, factor: 0.85, thresholds: [0.6, 0.7, 0.9], landmarkRefinement: 'none' }, 'SphereFace defaults');
  t.throws(() => resolveMtcnnOptions({ factor: 1 }), /factor must be between 0 and 1/);
  t.throws(() => resolveMtcnnOptions({ minSize: 0 }), /minSize must be a positive number/);
  t.throws(() => resolveMtcnnOptions({ thresholds: [0.6, 1.5, 0.9] }), /thresholds\[1\] must be a probability/);
});

// ---------------------------------------------------------------------------------------------
// The stages wired together, with stand-in networks whose outputs are chosen by hand.

await initBackend();

interface StandInRecord {
  pnetShapes: number[][];
  rnetInputs: number[][][][][];
}

/**
 * Networks that fire on one P-Net cell only. The P-Net map has one cell per 2 pixels of Caffe's
 * height and width (the transposed frame), and cell (column, row) of the image is element
 * [0, column, row] of that map. R-Net and O-Net accept every crop without regression, and O-Net
 * returns `landmarks` for each crop.
 */
function standInNets(hot: { column: number; row: number }, regression: BoxRegression, landmarks: number[], record: StandInRecord): MtcnnNetworks {
  return {
    pnet(input) {
      const [, caffeHeight = 0, caffeWidth = 0] = input.shape;
      record.pnetShapes.push([...input.shape]);
      const columns = Math.floor((caffeHeight - 12) / 2) + 1;
      const rows = Math.floor((caffeWidth - 12) / 2) + 1;
      const prob = tf.buffer([1, columns, rows]);
      const offsets = tf.buffer([1, columns, rows, 4]);
      prob.set(0.95, 0, hot.column, hot.row);
      regression.forEach((value, k) => offsets.set(value, 0, hot.column, hot.row, k));
      return { prob: prob.toTensor() as tf.Tensor3D, regression: offsets.toTensor() as tf.Tensor4D };
    },
    rnet(input) {
      record.rnetInputs.push(input.arraySync());
      const n = input.shape[0];
      return { prob: tf.fill([n], 0.99) as tf.Tensor1D, regression: tf.zeros([n, 4]) as tf.Tensor2D };
    },
    onet(input) {
      const n = input.shape[0];
      return {
        prob: tf.fill([n], 0.98) as tf.Tensor1D,
        regression: tf.zeros([n, 4]) as tf.Tensor2D,
        landmarks: tf.tensor2d(Array.from({ length: n }, () => landmarks)),
      };
    },
  };
}

/** Builds a 40-wide, 30-high image whose value is 5 × column in every channel. */
function columnRamp(): DecodedImage {
  const width = 40;
  const height = 30;
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) rgb.fill(5 * x, (y * width + x) * 3, (y * width + x + 1) * 3);
  }
  return { id: 'ramp', path: 'ramp', width, height, rgb };
}

t.test('detect with stand-in networks', async (t) => {
  // minSize 24 and factor 0.5 give the single scale 0.5, so P-Net gets 20 columns × 15 rows.
  // Cell (column 3, row 1) maps to x1 = fix(7/0.5) = 14, x2 = fix(18/0.5) = 36,
  // y1 = fix(3/0.5) = 6, y2 = fix(14/0.5) = 28: a square box 23 pixels wide (with the +1).
  const record: StandInRecord = { pnetShapes: [], rnetInputs: [] };
  const landmarks = [0.25, 0.3, 0.35, 0.4, 0.45, 0.75, 0.7, 0.65, 0.6, 0.55];
  const nets = standInNets({ column: 3, row: 1 }, [0, 0, 0, 0], landmarks, record);
  const before = tf.memory().numTensors;

  const faces = await detect(nets, columnRamp(), { minSize: 24, factor: 0.5 });
  t.equal(tf.memory().numTensors, before, 'no tensor left behind');
  t.same(record.pnetShapes, [[1, 20, 15, 3]], 'P-Net input is transposed: 20 image columns first');
  t.equal(faces.length, 1, 'one face');
  const face = faces[0]!;
  t.same(face.box, [14, 6, 36, 28], 'box from the hot cell');
  t.ok(Math.abs(face.score - 0.98) < 1e-6, 'O-Net score');

  // x = 23·p + 14 − 1 from channels 0–4, y = 23·p + 6 − 1 from channels 5–9.
  face.landmarks.points.forEach(([x, y], k) => {
    t.ok(Math.abs(x - (23 * landmarks[k]! + 13)) < 1e-4, `point ${k} x`);
    t.ok(Math.abs(y - (23 * landmarks[k + 5]! + 5)) < 1e-4, `point ${k} y`);
  });
  t.equal(face.landmarks.origin, 'one-based');

  // The R-Net crop is transposed too: along its first spatial axis the image column grows.
  const crop = record.rnetInputs[0]![0]!;
  t.ok(crop[20]![0]![0]! > crop[2]![0]![0]!, 'values grow along the first axis (image x)');
  t.ok(Math.abs(crop[10]![20]![0]! - crop[10]![2]![0]!) < 1e-6, 'values are constant along the second axis (image y)');
});

t.test('detect drops inside-out boxes', async (t) => {
  // Offsets of −3 widths on x2 and y2 turn the 22-pixel box inside out, and rerec keeps it so.
  const record: StandInRecord = { pnetShapes: [], rnetInputs: [] };
  const nets = standInNets({ column: 3, row: 1 }, [0, 0, -3, -3], new Array(10).fill(0.5), record);
  const faces = await detect(nets, columnRamp(), { minSize: 24, factor: 0.5 });
  t.same(faces, [], 'no face and no exception');
  t.equal(record.rnetInputs.length, 0, 'R-Net never ran');
});
