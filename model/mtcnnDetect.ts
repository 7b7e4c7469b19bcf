/**
 * The MTCNN face detector (Zhang et al., 2016) as SphereFace runs it: the Matlab `detect_face`
 * of MTCNNv1 at commit 47a629c of kpzhang93/MTCNN_face_detection_alignment, with Piotr Dollár's
 * `imResample` for every resize. This file contains the algorithm around the three networks:
 * resampling, the image pyramid, candidate boxes, non-maximum suppression (NMS) and the box
 * arithmetic of each stage. The networks come from `model/mtcnn.ts`.
 *
 * On request (`landmarkRefinement: 'lnet'`) a fourth step follows: the landmark refinement of
 * MTCNNv2's `detect_face` (same repository, `code/codes/MTCNNv2/`), which moves each landmark
 * with L-Net. SphereFace's own pipeline does not run it; see `LandmarkRefinement` for why it
 * exists here.
 *
 * Coordinates follow the Matlab code. They are 1-based, so the centre of the top-left pixel is
 * (1, 1), and a box [x1, y1, x2, y2] covers the pixels x1..x2 and y1..y2 inclusive. Where the
 * reference adds the 1 (crops, `bbreg`, NMS areas), a box is x2 − x1 + 1 pixels wide.
 *
 * The reference keeps boxes in single precision, because concatenating the networks' single
 * outputs with double values gives single in Matlab. This file computes them in double. The
 * difference is far below the rounding noise of the networks themselves.
 */
import * as tf from '@tensorflow/tfjs-core';

import type { DecodedImage, Landmarks, Point } from '../operators/records.ts';
import type { MtcnnEngineNets } from './mtcnn.ts';

/**
 * A box as [x1, y1, x2, y2] in 1-based pixel coordinates, with x2 and y2 inclusive: the box
 * [1, 1, 10, 10] covers the top-left 10×10 pixels. Detector outputs are fractional.
 */
export type Box = readonly [x1: number, y1: number, x2: number, y2: number];

/** Box regression offsets [dx1, dy1, dx2, dy2], in units of the box width or height. */
export type BoxRegression = readonly [dx1: number, dy1: number, dx2: number, dy2: number];

export interface ScoredBox {
  readonly box: Box;
  /** Face probability from the network that produced or last scored the box. */
  readonly score: number;
}

/** A P-Net candidate before its regression is applied. */
export interface Candidate extends ScoredBox {
  readonly regression: BoxRegression;
}

/** One detected face. */
export interface Detection {
  /** The face box after the O-Net regression, 1-based, x2 and y2 inclusive (see `Box`). */
  readonly box: Box;
  /** The O-Net face probability. */
  readonly score: number;
  /**
   * Left eye, right eye, nose tip, left and right mouth corner ("left" is the image's left),
   * 1-based, as the Matlab code returns them.
   */
  readonly landmarks: Landmarks;
}

/**
 * The refinement applied to the O-Net landmarks after stage 3.
 *
 * - `none`: no refinement. These are the landmarks of MTCNNv1 at commit 47a629c, which
 *   SphereFace pins.
 * - `lnet`: MTCNNv2's L-Net step (see `refineLandmarks`). It exists to reproduce the LFW
 *   landmark file that SphereFace's PyTorch port ships (`lfw_landmark.txt`), which was made by
 *   a detector with this step. That file contains 0-based coordinates truncated to integers. Over
 *   every 9th of the 9,056 LFW images, its points are a median 0.81 pixels from our `lnet`
 *   points minus 1 and 1.43 pixels from our `none` points minus 1.
 */
export type LandmarkRefinement = 'none' | 'lnet';

export interface MtcnnOptions {
  /** Smallest face side to look for, in pixels of the input image. Default 20. */
  readonly minSize?: number;
  /** Ratio between consecutive pyramid scales, in (0, 1). Default 0.85. */
  readonly factor?: number;
  /** Face-probability thresholds of P-Net, R-Net and O-Net. Default [0.6, 0.7, 0.9]. */
  readonly thresholds?: readonly [pnet: number, rnet: number, onet: number];
  /**
   * Refinement of the landmarks after O-Net. Default `none` (SphereFace's MTCNNv1). `lnet` needs
   * networks loaded with L-Net: `loadMtcnn(dir, { lnet: true })`.
   */
  readonly landmarkRefinement?: LandmarkRefinement;
}

/** `MtcnnOptions` with every default filled in. */
export interface MtcnnSettings {
  readonly minSize: number;
  readonly factor: number;
  readonly thresholds: readonly [number, number, number];
  readonly landmarkRefinement: LandmarkRefinement;
}

/**
 * The settings of SphereFace's `face_detect_demo.m`. The MTCNN authors' own demo uses factor
 * 0.709 and an O-Net threshold of 0.7.
 */
export const SPHEREFACE_MTCNN_SETTINGS: MtcnnSettings = {
  minSize: 20,
  factor: 0.85,
  thresholds: [0.6, 0.7, 0.9],
  landmarkRefinement: 'none',
};

/** The networks' input normalisation, applied after resampling: (v − 127.5) × 0.0078125. */
const PIXEL_MEAN = 127.5;
const PIXEL_SCALE = 0.0078125;

/** P-Net's receptive field and stride on the scaled image, in pixels. */
const CELL_SIZE = 12;
const CELL_STRIDE = 2;

/** Crop sides of R-Net and O-Net, in pixels. */
const RNET_SIZE = 24;
const ONET_SIZE = 48;

/** L-Net's patch side after resampling, in pixels, and its number of patches (one per landmark). */
const LNET_SIZE = 24;
const LNET_PATCH_COUNT = 5;

/** Crops per R-Net or O-Net call, and faces per L-Net call; it bounds memory and changes no result. */
const CROP_BATCH = 128;

// ---------------------------------------------------------------------------------------------
// Resampling

/** Per-output source pixels and weights along one axis, in compressed-row form. */
interface AxisWeights {
  /** Entries of output i are start[i] … start[i + 1] − 1. */
  readonly start: Int32Array;
  readonly source: Int32Array;
  readonly weight: Float64Array;
}

/** Rounds to float32 when the reference computes in single precision, else leaves the value. */
type Rounding = (value: number) => number;
const single: Rounding = Math.fround;
const double: Rounding = (value) => value;

/**
 * Builds the weights of one axis as `resampleCoef` in pdollar's `imResampleMex.cpp` does.
 *
 * Shrinking (from > to) uses area weights: output pixel i covers source span [i/s, (i+1)/s)
 * with s = to/from, and each source pixel gets s times its overlap with that span. Weights of
 * at most 0.001·s are dropped, and a set of weights that sums above 1 (by rounding) is divided
 * by its sum. Enlarging (from ≤ to) is bilinear with half-pixel centres: output i samples
 * source position (i + 0.5)/s − 0.5, and positions before the first or after the last source
 * centre take that edge pixel alone.
 *
 * When `from` is exactly 2, 3 or 4 times `to`, pdollar sums the source pixels unweighted and
 * folds the 1/k into the output scale, so this returns weights of 1 and `divisor` k.
 */
function axisWeights(from: number, to: number, round: Rounding): AxisWeights & { readonly divisor: number } {
  const start = new Int32Array(to + 1);
  const source: number[] = [];
  const weight: number[] = [];

  for (const k of [2, 3, 4]) {
    if (from === k * to) {
      for (let out = 0; out < to; out++) {
        start[out] = out * k;
        for (let j = 0; j < k; j++) {
          source.push(out * k + j);
          weight.push(1);
        }
      }
      start[to] = to * k;
      return { start, source: Int32Array.from(source), weight: Float64Array.from(weight), divisor: k };
    }
  }

  const s = round(to / from);
  const sInverse = round(1 / s);

  if (from > to) {
    const minWeight = round(round(1e-3) * s);
    for (let out = 0; out < to; out++) {
      start[out] = source.length;
      const spanStart = round(out * sInverse);
      const spanEnd = round(spanStart + sInverse);
      const first = Math.ceil(spanStart);
      const last = Math.trunc(spanEnd);
      let sum = 0;

      for (let index = first - 1; index <= last; index++) {
        let w = s;
        if (index === first - 1) w = round(round(first - spanStart) * s);
        else if (index === last) w = round(round(spanEnd - last) * s);
        // pdollar reads past the last pixel only with a weight below the cut-off; skip it.
        if (w > minWeight && index >= 0 && index < from) {
          source.push(index);
          weight.push(w);
          sum = round(sum + w);
        }
      }

      if (sum > 1) {
        for (let entry = start[out]!; entry < source.length; entry++) weight[entry] = round(weight[entry]! / sum);
      }
    }
  } else {
    for (let out = 0; out < to; out++) {
      start[out] = source.length;
      const position = round(round(round(0.5 + out) * sInverse) - 0.5);
      const index = Math.floor(position);

      if (index < 0 || index >= from - 1) {
        source.push(Math.min(Math.max(index, 0), from - 1));
        weight.push(1);
      } else {
        const w = round(1 - round(position - index));
        source.push(index, index + 1);
        weight.push(w, round(1 - w));
      }
    }
  }

  start[to] = source.length;
  return { start, source: Int32Array.from(source), weight: Float64Array.from(weight), divisor: 1 };
}

/**
 * Resizes an interleaved, row-major image (height × width × channels) with the semantics of
 * pdollar's `imResample(A, [newHeight newWidth], 'bilinear')`: separable, area weights along
 * an axis that shrinks and bilinear weights with half-pixel centres along an axis that grows
 * (see `axisWeights`). Columns are resampled first, then rows. Like pdollar, every output is
 * scaled by 1/(1 + 1e-6), and an unchanged size returns the input values unscaled.
 *
 * The weights are computed in float32 for `Float32Array` and `Uint8Array` input, as pdollar
 * does for Matlab single arrays (MTCNN converts the image with `single` first), and in float64
 * for `Float64Array` input, as for Matlab double arrays (MTCNN's zero-padded crops). Uint8
 * values are read as numbers and the output is not rounded.
 *
 * @throws RangeError when a size is not a positive integer or the buffer length does not match.
 */
export function imResample(
  pixels: Float32Array | Float64Array | Uint8Array,
  height: number,
  width: number,
  newHeight: number,
  newWidth: number,
  channels = 3,
): Float32Array {
  for (const [name, value] of [
    ['height', height],
    ['width', width],
    ['newHeight', newHeight],
    ['newWidth', newWidth],
    ['channels', channels],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`imResample: ${name} must be a positive integer, got ${value}`);
    }
  }
  if (pixels.length !== height * width * channels) {
    throw new RangeError(
      `imResample: the buffer has ${pixels.length} values, expected ${height}×${width}×${channels} = ${height * width * channels}`,
    );
  }
  if (height === newHeight && width === newWidth) return Float32Array.from(pixels);

  const round = pixels instanceof Float64Array ? double : single;
  const columns = axisWeights(width, newWidth, round);
  const rows = axisWeights(height, newHeight, round);

  // pdollar's output scale r: 1/k for an exact k-fold shrink of the columns, then 1/(1 + 1e-6).
  // A k-fold shrink of the rows multiplies by r/k, and any other row weights are multiplied by r.
  let scale = round(1 / columns.divisor);
  scale = round(scale / round(1 + 1e-6));
  const rowWeights =
    rows.divisor === 1 ? rows.weight.map((w) => round(w * scale)) : rows.weight.map(() => round(scale / rows.divisor));
  // In the enlarging case pdollar forms the second bilinear row weight as r − w·r.
  if (height <= newHeight && rows.divisor === 1) {
    for (let out = 0; out < newHeight; out++) {
      const first = rows.start[out]!;
      if (rows.start[out + 1]! - first === 2) rowWeights[first + 1] = round(scale - rowWeights[first]!);
    }
  }

  // Columns: height × newWidth × channels, held at the reference's precision.
  const stage = round === single ? new Float32Array(height * newWidth * channels) : new Float64Array(height * newWidth * channels);
  for (let y = 0; y < height; y++) {
    const inRow = y * width * channels;
    const outRow = y * newWidth * channels;
    for (let x = 0; x < newWidth; x++) {
      const first = columns.start[x]!;
      const end = columns.start[x + 1]!;
      for (let c = 0; c < channels; c++) {
        let sum = 0;
        for (let entry = first; entry < end; entry++) sum += pixels[inRow + columns.source[entry]! * channels + c]! * columns.weight[entry]!;
        stage[outRow + x * channels + c] = sum;
      }
    }
  }

  // Rows: newHeight × newWidth × channels.
  const output = new Float32Array(newHeight * newWidth * channels);
  const rowLength = newWidth * channels;
  for (let y = 0; y < newHeight; y++) {
    const outRow = y * rowLength;
    for (let entry = rows.start[y]!; entry < rows.start[y + 1]!; entry++) {
      const inRow = rows.source[entry]! * rowLength;
      const w = rowWeights[entry]!;
      for (let i = 0; i < rowLength; i++) output[outRow + i]! += stage[inRow + i]! * w;
    }
  }
  return output;
}

// ---------------------------------------------------------------------------------------------
// Pyramid and stage 1

/**
 * Returns the image pyramid's scales: s_k = (12/minSize)·factor^k for every k at which the
 * shorter image side, scaled, is still at least 12 pixels (P-Net's input). The shorter side is
 * tracked by repeated multiplication, as in the reference. An image whose shorter side is below
 * `minSize` gets no scale at all.
 */
export function pyramidScales(height: number, width: number, minSize: number, factor: number): number[] {
  const m = CELL_SIZE / minSize;
  let shorterSide = Math.min(height, width) * m;
  const scales: number[] = [];
  for (let k = 0; shorterSide >= CELL_SIZE; k++) {
    scales.push(m * factor ** k);
    shorterSide *= factor;
  }
  return scales;
}

/** Returns the image size at `scale`, each side rounded up as the reference does. */
export function scaledSize(height: number, width: number, scale: number): { height: number; width: number } {
  return { height: Math.ceil(height * scale), width: Math.ceil(width * scale) };
}

/**
 * Turns a P-Net probability map into candidate boxes, as `generateBoundingBox.m`: every cell
 * with probability ≥ `threshold` becomes the 12×12 window that produced it, mapped back to the
 * input image. For the 0-based map cell (i, j) (column, row) the box is
 * x1 = fix((2i + 1)/scale), x2 = fix((2i + 12)/scale), and the same with j for y, where fix
 * truncates towards zero. Candidates come out row by row, left to right.
 *
 * `probability` is mapHeight × mapWidth and `regression` mapHeight × mapWidth × 4, both
 * row-major in image orientation (rows along y).
 */
export function generateBoundingBoxes(
  probability: ArrayLike<number>,
  regression: ArrayLike<number>,
  mapHeight: number,
  mapWidth: number,
  scale: number,
  threshold: number,
): Candidate[] {
  const candidates: Candidate[] = [];
  for (let row = 0; row < mapHeight; row++) {
    for (let column = 0; column < mapWidth; column++) {
      const cell = row * mapWidth + column;
      const score = probability[cell]!;
      if (!(score >= threshold)) continue;

      const box: Box = [
        Math.trunc((CELL_STRIDE * column + 1) / scale),
        Math.trunc((CELL_STRIDE * row + 1) / scale),
        Math.trunc((CELL_STRIDE * column + CELL_SIZE) / scale),
        Math.trunc((CELL_STRIDE * row + CELL_SIZE) / scale),
      ];
      const r = cell * 4;
      candidates.push({ box, score, regression: [regression[r]!, regression[r + 1]!, regression[r + 2]!, regression[r + 3]!] });
    }
  }
  return candidates;
}

// ---------------------------------------------------------------------------------------------
// Non-maximum suppression and box arithmetic

/** Overlap measure of NMS: intersection over union, or intersection over the smaller area. */
export type NmsMethod = 'union' | 'min';

/**
 * Greedy non-maximum suppression as `nms.m`: repeatedly keeps the highest-scoring box left and
 * drops every other box whose overlap with it exceeds `threshold` (an overlap equal to the
 * threshold is kept). Areas and intersections count pixels inclusively, (x2 − x1 + 1)·(y2 − y1 + 1).
 * Among equal scores the box that comes later in `boxes` wins, as Matlab's stable ascending
 * sort followed by taking the last element gives.
 *
 * @returns indices into `boxes` of the kept boxes, highest score first.
 */
export function nms(boxes: readonly ScoredBox[], threshold: number, method: NmsMethod): number[] {
  const area = boxes.map(({ box: [x1, y1, x2, y2] }) => (x2 - x1 + 1) * (y2 - y1 + 1));
  // Array.prototype.sort is stable, so equal scores keep their input order.
  let order = boxes.map((_, index) => index).sort((a, b) => boxes[a]!.score - boxes[b]!.score);
  const picked: number[] = [];

  while (order.length > 0) {
    const best = order[order.length - 1]!;
    picked.push(best);
    const [bx1, by1, bx2, by2] = boxes[best]!.box;

    order = order.slice(0, -1).filter((other) => {
      const [ox1, oy1, ox2, oy2] = boxes[other]!.box;
      const width = Math.max(0, Math.min(bx2, ox2) - Math.max(bx1, ox1) + 1);
      const height = Math.max(0, Math.min(by2, oy2) - Math.max(by1, oy1) + 1);
      const intersection = width * height;
      const overlap =
        method === 'min'
          ? intersection / Math.min(area[best]!, area[other]!)
          : intersection / (area[best]! + area[other]! - intersection);
      return overlap <= threshold;
    });
  }
  return picked;
}

/**
 * Applies P-Net's regression to its candidate box. Unlike `bbreg`, the reference scales the
 * offsets by x2 − x1 and y2 − y1, without the +1.
 */
export function regressCandidate([x1, y1, x2, y2]: Box, [dx1, dy1, dx2, dy2]: BoxRegression): Box {
  const width = x2 - x1;
  const height = y2 - y1;
  return [x1 + dx1 * width, y1 + dy1 * height, x2 + dx2 * width, y2 + dy2 * height];
}

/** Applies R-Net's or O-Net's regression as `bbreg.m`, with width x2 − x1 + 1 and height y2 − y1 + 1. */
export function bbreg([x1, y1, x2, y2]: Box, [dx1, dy1, dx2, dy2]: BoxRegression): Box {
  const width = x2 - x1 + 1;
  const height = y2 - y1 + 1;
  return [x1 + dx1 * width, y1 + dy1 * height, x2 + dx2 * width, y2 + dy2 * height];
}

/**
 * Makes a box square about its centre as `rerec.m`: the side becomes l = max(x2 − x1, y2 − y1)
 * (no +1), so [x1, y1] moves by half the growth and [x2, y2] = [x1 + l, y1 + l].
 */
export function rerec([x1, y1, x2, y2]: Box): Box {
  const width = x2 - x1;
  const height = y2 - y1;
  const side = Math.max(width, height);
  const left = x1 + width * 0.5 - side * 0.5;
  const top = y1 + height * 0.5 - side * 0.5;
  return [left, top, left + side, top + side];
}

/** Truncates each coordinate towards zero, as Matlab's `fix`. */
export function fixBox(box: Box): Box {
  return [Math.trunc(box[0]), Math.trunc(box[1]), Math.trunc(box[2]), Math.trunc(box[3])];
}

/**
 * The ranges where an integer box meets the image, as `pad.m` computes them, all 1-based and
 * inclusive. The
 * crop is cropHeight × cropWidth with cropWidth = x2 − x1 + 1; its rows dy..edy and columns
 * dx..edx take the image's rows y..ey and columns x..ex, and the rest stays zero. When the box
 * misses the image along an axis, that axis's ranges come out empty (start > end).
 */
export interface PadRanges {
  readonly dy: number;
  readonly edy: number;
  readonly dx: number;
  readonly edx: number;
  readonly y: number;
  readonly ey: number;
  readonly x: number;
  readonly ex: number;
  readonly cropWidth: number;
  readonly cropHeight: number;
}

export function pad([x1, y1, x2, y2]: Box, imageWidth: number, imageHeight: number): PadRanges {
  const cropWidth = x2 - x1 + 1;
  const cropHeight = y2 - y1 + 1;
  let [dx, dy, edx, edy] = [1, 1, cropWidth, cropHeight];
  let [x, y, ex, ey] = [x1, y1, x2, y2];

  if (ex > imageWidth) {
    edx = -ex + imageWidth + cropWidth;
    ex = imageWidth;
  }
  if (ey > imageHeight) {
    edy = -ey + imageHeight + cropHeight;
    ey = imageHeight;
  }
  if (x < 1) {
    dx = 2 - x;
    x = 1;
  }
  if (y < 1) {
    dy = 2 - y;
    y = 1;
  }
  return { dy, edy, dx, edx, y, ey, x, ex, cropWidth, cropHeight };
}

/**
 * Cuts an integer box out of the image, with zeros where it leaves the image (`pad.m`), and
 * resamples it to size × size with `imResample` in double precision, as the reference does
 * with its double `zeros` buffer. Returns size × size × 3 values, not yet normalised.
 */
export function cropAndResample(image: DecodedImage, box: Box, size: number): Float32Array {
  const ranges = pad(box, image.width, image.height);
  const { cropWidth, cropHeight } = ranges;
  const crop = new Float64Array(cropHeight * cropWidth * 3);

  const rowCount = ranges.ey - ranges.y + 1;
  const columnCount = ranges.ex - ranges.x + 1;
  if (rowCount > 0 && columnCount > 0) {
    for (let r = 0; r < rowCount; r++) {
      const from = ((ranges.y - 1 + r) * image.width + (ranges.x - 1)) * 3;
      const to = ((ranges.dy - 1 + r) * cropWidth + (ranges.dx - 1)) * 3;
      crop.set(image.rgb.subarray(from, from + columnCount * 3), to);
    }
  }
  return imResample(crop, cropHeight, cropWidth, size, size);
}

// ---------------------------------------------------------------------------------------------
// Network inputs

/**
 * Packs resampled images (each height × width × 3, row-major) into one NHWC batch, normalised
 * and transposed (x↔y), because the released Caffe weights were trained on images that
 * matcaffe had transposed. Element [n, x, y, c] is image n at row y, column x.
 */
function packTransposed(images: readonly Float32Array[], height: number, width: number): tf.Tensor4D {
  const data = new Float32Array(images.length * height * width * 3);
  images.forEach((pixels, n) => {
    const base = n * height * width * 3;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const from = (y * width + x) * 3;
        const to = base + (x * height + y) * 3;
        data[to] = (pixels[from]! - PIXEL_MEAN) * PIXEL_SCALE;
        data[to + 1] = (pixels[from + 1]! - PIXEL_MEAN) * PIXEL_SCALE;
        data[to + 2] = (pixels[from + 2]! - PIXEL_MEAN) * PIXEL_SCALE;
      }
    }
  });
  return tf.tensor4d(data, [images.length, width, height, 3]);
}

/**
 * Returns a [rows, columns] map read from a network output laid out [columns, rows] (the
 * transposed frame), with `depth` values per cell.
 */
function transposeMap(values: Float32Array | Int32Array | Uint8Array, columns: number, rows: number, depth: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let x = 0; x < columns; x++) {
    for (let y = 0; y < rows; y++) {
      const from = (x * rows + y) * depth;
      const to = (y * columns + x) * depth;
      for (let d = 0; d < depth; d++) out[to + d] = values[from + d]!;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Detection

/**
 * The networks `detect` calls, on either engine: `loadMtcnn` (TensorFlow.js) and
 * `loadMtcnnEngine` (either engine) provide them. Each call may return a promise, which the
 * detector awaits. `lnet` is needed only for `landmarkRefinement: 'lnet'`.
 */
export type MtcnnNetworks = Pick<MtcnnEngineNets, 'pnet' | 'rnet' | 'onet' | 'lnet'>;

/**
 * Fills in and checks detector options.
 *
 * @throws RangeError naming the option when a value is out of range.
 */
export function resolveMtcnnOptions(options: MtcnnOptions = {}): MtcnnSettings {
  const minSize = options.minSize ?? SPHEREFACE_MTCNN_SETTINGS.minSize;
  const factor = options.factor ?? SPHEREFACE_MTCNN_SETTINGS.factor;
  const thresholds = options.thresholds ?? SPHEREFACE_MTCNN_SETTINGS.thresholds;
  const landmarkRefinement = options.landmarkRefinement ?? SPHEREFACE_MTCNN_SETTINGS.landmarkRefinement;

  if (!Number.isFinite(minSize) || minSize <= 0) {
    throw new RangeError(`MTCNN option minSize must be a positive number of pixels, got ${minSize}`);
  }
  if (!Number.isFinite(factor) || factor <= 0 || factor >= 1) {
    throw new RangeError(`MTCNN option factor must be between 0 and 1 (exclusive), got ${factor}`);
  }
  if (!Array.isArray(thresholds) || thresholds.length !== 3) {
    throw new RangeError(`MTCNN option thresholds must be three probabilities [pnet, rnet, onet], got ${String(thresholds)}`);
  }
  thresholds.forEach((value, stage) => {
    if (!Number.isFinite(value) || value < 0 || value > 1) {
      throw new RangeError(`MTCNN option thresholds[${stage}] must be a probability from 0 to 1, got ${value}`);
    }
  });
  if (landmarkRefinement !== 'none' && landmarkRefinement !== 'lnet') {
    throw new RangeError(`MTCNN option landmarkRefinement must be 'none' or 'lnet', got ${String(landmarkRefinement)}`);
  }
  return { minSize, factor, thresholds: [thresholds[0], thresholds[1], thresholds[2]], landmarkRefinement };
}

/**
 * Checks that `nets` can run with `settings`: `landmarkRefinement: 'lnet'` needs L-Net.
 *
 * @throws Error that names how to load L-Net when it is missing.
 */
export function assertNetworksFor(nets: MtcnnNetworks, settings: MtcnnSettings): void {
  if (settings.landmarkRefinement === 'lnet' && nets.lnet === undefined) {
    throw new Error(
      "MTCNN option landmarkRefinement 'lnet' needs L-Net (det4.caffemodel), but the networks were loaded without it; load them with loadMtcnn(dir, { lnet: true })",
    );
  }
}

/**
 * Finds the faces in an 8-bit RGB image with the three MTCNN stages, exactly as SphereFace's
 * Matlab `detect_face` (MTCNNv1 at commit 47a629c, `fastresize` off) does:
 *
 * 1. P-Net runs on every pyramid level (see `pyramidScales`). Cells with probability ≥ t1
 *    become candidates, which go through NMS 0.5 (union) per level and NMS 0.7 (union) over all
 *    levels, then `regressCandidate`, `rerec` and `fixBox`.
 * 2. R-Net on 24×24 crops (`cropAndResample`); keep probability > t2, NMS 0.7 (union),
 *    `bbreg`, `rerec`.
 * 3. `fixBox`, O-Net on 48×48 crops; keep probability > t3. The landmarks are placed in the
 *    O-Net input box: x = w·p_x + x1 − 1 and y = h·p_y + y1 − 1 with w = x2 − x1 + 1, where
 *    p_x is O-Net landmark channels 0–4 and p_y channels 5–9. Then `bbreg`, NMS 0.7 (min).
 *    There is no final `rerec`, and no averaging over a mirrored crop (a later commit of the
 *    MTCNN repository added that).
 * 4. Only with `landmarkRefinement: 'lnet'`: `refineLandmarks` moves the landmarks with L-Net,
 *    as MTCNNv2's `detect_face` does. Boxes, scores and the order stay as they are.
 *
 * Images whose shorter side is below `minSize` have no pyramid level and give no face without
 * running a network. Boxes that a regression turned inside out are dropped before stages 2 and 3
 * (see `hasPixels`). Every tensor is disposed before the promise settles.
 *
 * @returns the faces, highest O-Net score first (the order of the last NMS).
 * @throws RangeError for invalid options or an image whose buffer does not match its size, and
 *   Error when `landmarkRefinement` is `lnet` but `nets` has no L-Net.
 */
export async function detect(nets: MtcnnNetworks, image: DecodedImage, options: MtcnnOptions = {}): Promise<Detection[]> {
  const settings = resolveMtcnnOptions(options);
  assertNetworksFor(nets, settings);
  const { width, height, rgb } = image;
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`detect: ${image.path} has invalid size ${width}×${height}, expected positive integers`);
  }
  if (rgb.length !== width * height * 3) {
    throw new RangeError(`detect: ${image.path} has ${rgb.length} bytes, expected ${width}×${height}×3 = ${width * height * 3}`);
  }

  const stage1 = await proposeFaces(nets, image, settings);
  if (stage1.length === 0) return [];
  const stage2 = await refineFaces(nets, image, stage1, settings.thresholds[1]);
  if (stage2.length === 0) return [];
  const faces = await outputFaces(nets, image, stage2, settings.thresholds[2]);
  return settings.landmarkRefinement === 'lnet' ? refineLandmarks(nets, image, faces) : faces;
}

/** Stage 1: P-Net over the pyramid. Returns integer, square boxes. */
async function proposeFaces(nets: MtcnnNetworks, image: DecodedImage, settings: MtcnnSettings): Promise<Box[]> {
  const all: Candidate[] = [];

  for (const scale of pyramidScales(image.height, image.width, settings.minSize, settings.factor)) {
    const size = scaledSize(image.height, image.width, scale);
    const resized = imResample(image.rgb, image.height, image.width, size.height, size.width);
    const input = packTransposed([resized], size.height, size.width);

    let probability: Float32Array;
    let regression: Float32Array;
    let mapRows: number;
    let mapColumns: number;
    try {
      const output = await nets.pnet(input);
      try {
        // The maps are [1, columns, rows] because the input was transposed.
        [, mapColumns, mapRows] = output.prob.shape;
        probability = transposeMap(await output.prob.data(), mapColumns, mapRows, 1);
        regression = transposeMap(await output.regression.data(), mapColumns, mapRows, 4);
      } finally {
        output.prob.dispose();
        output.regression.dispose();
      }
    } finally {
      input.dispose();
    }

    const candidates = generateBoundingBoxes(probability, regression, mapRows, mapColumns, scale, settings.thresholds[0]);
    for (const index of nms(candidates, 0.5, 'union')) all.push(candidates[index]!);
  }

  const boxes = nms(all, 0.7, 'union').map((index) => {
    const candidate = all[index]!;
    return fixBox(rerec(regressCandidate(candidate.box, candidate.regression)));
  });
  return boxes.filter(hasPixels);
}

/**
 * Tells whether an integer box covers at least one pixel. A regression that turns a box inside
 * out gives x2 < x1 or y2 < y1, and such a box is dropped before cropping.
 * NOTE: the reference has no defined behaviour there, because Matlab's `zeros` makes an empty crop
 * that `imResample` cannot resize.
 */
function hasPixels([x1, y1, x2, y2]: Box): boolean {
  return x2 >= x1 && y2 >= y1;
}

interface ScoredCrops {
  readonly boxes: readonly Box[];
  readonly scores: Float32Array;
  readonly regressions: Float32Array;
  readonly landmarks?: Float32Array;
}

/** Runs R-Net or O-Net over the crops of `boxes` in batches of `CROP_BATCH`. */
async function scoreCrops(
  nets: MtcnnNetworks,
  image: DecodedImage,
  boxes: readonly Box[],
  network: 'rnet' | 'onet',
): Promise<ScoredCrops> {
  const size = network === 'rnet' ? RNET_SIZE : ONET_SIZE;
  const scores = new Float32Array(boxes.length);
  const regressions = new Float32Array(boxes.length * 4);
  const landmarks = network === 'onet' ? new Float32Array(boxes.length * 10) : undefined;

  for (let first = 0; first < boxes.length; first += CROP_BATCH) {
    const batch = boxes.slice(first, first + CROP_BATCH);
    const input = packTransposed(
      batch.map((box) => cropAndResample(image, box, size)),
      size,
      size,
    );
    try {
      const output: { prob: tf.Tensor1D; regression: tf.Tensor2D; landmarks?: tf.Tensor2D } =
        network === 'rnet' ? await nets.rnet(input) : await nets.onet(input);
      const outputLandmarks = output.landmarks;
      try {
        scores.set(await output.prob.data(), first);
        regressions.set(await output.regression.data(), first * 4);
        if (landmarks !== undefined && outputLandmarks !== undefined) landmarks.set(await outputLandmarks.data(), first * 10);
      } finally {
        output.prob.dispose();
        output.regression.dispose();
        outputLandmarks?.dispose();
      }
    } finally {
      input.dispose();
    }
  }
  return landmarks === undefined ? { boxes, scores, regressions } : { boxes, scores, regressions, landmarks };
}

function regressionAt(values: Float32Array, index: number): BoxRegression {
  const r = index * 4;
  return [values[r]!, values[r + 1]!, values[r + 2]!, values[r + 3]!];
}

/** Stage 2: R-Net. Returns square, fractional boxes. */
async function refineFaces(nets: MtcnnNetworks, image: DecodedImage, boxes: readonly Box[], threshold: number): Promise<Box[]> {
  const scored = await scoreCrops(nets, image, boxes, 'rnet');
  const passed: Array<ScoredBox & { readonly index: number }> = [];
  boxes.forEach((box, index) => {
    const score = scored.scores[index]!;
    if (score > threshold) passed.push({ box, score, index });
  });

  return nms(passed, 0.7, 'union').map((pick) => {
    const { box, index } = passed[pick]!;
    return rerec(bbreg(box, regressionAt(scored.regressions, index)));
  });
}

/** Stage 3: O-Net, landmarks and the final boxes. */
async function outputFaces(nets: MtcnnNetworks, image: DecodedImage, stage2: readonly Box[], threshold: number): Promise<Detection[]> {
  const boxes = stage2.map(fixBox).filter(hasPixels);
  const scored = await scoreCrops(nets, image, boxes, 'onet');
  const landmarkValues = scored.landmarks!;

  const faces: Detection[] = [];
  boxes.forEach((box, index) => {
    const score = scored.scores[index]!;
    if (!(score > threshold)) return;

    const [x1, y1, x2, y2] = box;
    const width = x2 - x1 + 1;
    const height = y2 - y1 + 1;
    const p = index * 10;
    const point = (k: number): Point => [
      width * landmarkValues[p + k]! + x1 - 1,
      height * landmarkValues[p + 5 + k]! + y1 - 1,
    ];
    faces.push({
      box: bbreg(box, regressionAt(scored.regressions, index)),
      score,
      landmarks: { points: [point(0), point(1), point(2), point(3), point(4)], origin: 'one-based' },
    });
  });

  return nms(faces, 0.7, 'min').map((pick) => faces[pick]!);
}

// ---------------------------------------------------------------------------------------------
// Stage 4 (MTCNNv2 only): L-Net landmark refinement

/**
 * Returns the side of a face's L-Net patches as MTCNNv2 computes it: a quarter of the longer
 * side of the final box, w = x2 − x1 + 1 and h = y2 − y1 + 1, truncated towards zero and then
 * raised to the next even number when odd. Each patch spans side + 1 pixels (`lnetPatchBox`).
 */
export function lnetPatchSide([x1, y1, x2, y2]: Box): number {
  const side = Math.trunc(0.25 * Math.max(x2 - x1 + 1, y2 - y1 + 1));
  // Matlab's mod(side, 2) is 1 for odd sides of either sign; JavaScript's % gives −1 for negative ones.
  return Math.abs(side % 2) === 1 ? side + 1 : side;
}

/**
 * Returns the integer box of a landmark's L-Net patch: x = fix(px − side/2), y = fix(py − side/2)
 * and [x, y, x + side, y + side], so the crop is side + 1 pixels square (1-based, inclusive).
 * `fix` truncates towards zero, so for a negative x it rounds up.
 */
export function lnetPatchBox([px, py]: Point, side: number): Box {
  const x = Math.trunc(px - 0.5 * side);
  const y = Math.trunc(py - 0.5 * side);
  return [x, y, x + side, y + side];
}

/**
 * Moves a landmark by its L-Net offset as MTCNNv2 does: x' = px − side/2 + ox·side and
 * y' = py − side/2 + oy·side. Offsets are in units of the patch side. When either offset is
 * more than 0.35 from 0.5 (a large movement), both become 0.5 and the point stays where it was.
 *
 * The update starts from px − side/2, not from the patch corner of `lnetPatchBox` that the
 * network saw, which truncation can put up to one pixel further left and up. MTCNNv2 does the same.
 */
export function applyLNetOffset([px, py]: Point, side: number, [ox, oy]: readonly [number, number]): Point {
  const large = Math.abs(ox - 0.5) > 0.35 || Math.abs(oy - 0.5) > 0.35;
  const [dx, dy] = large ? [0.5, 0.5] : [ox, oy];
  return [px - 0.5 * side + dx * side, py - 0.5 * side + dy * side];
}

/**
 * Packs the five resampled patches of each face (each 24×24×3, row-major) into one NHWC batch
 * [faces, 24, 24, 15], normalised and transposed like `packTransposed`. Channels 3k … 3k + 2
 * hold patch k, and element [n, x, y, 3k + c] is that patch at row y, column x.
 */
function packPatches(patchesPerFace: readonly (readonly Float32Array[])[]): tf.Tensor4D {
  const channels = 3 * LNET_PATCH_COUNT;
  const data = new Float32Array(patchesPerFace.length * LNET_SIZE * LNET_SIZE * channels);
  patchesPerFace.forEach((patches, n) => {
    patches.forEach((pixels, k) => {
      for (let y = 0; y < LNET_SIZE; y++) {
        for (let x = 0; x < LNET_SIZE; x++) {
          const from = (y * LNET_SIZE + x) * 3;
          const to = ((n * LNET_SIZE + x) * LNET_SIZE + y) * channels + 3 * k;
          for (let c = 0; c < 3; c++) data[to + c] = (pixels[from + c]! - PIXEL_MEAN) * PIXEL_SCALE;
        }
      }
    });
  });
  return tf.tensor4d(data, [patchesPerFace.length, LNET_SIZE, LNET_SIZE, channels]);
}

/**
 * Refines the landmarks of detected faces with L-Net, as the extra stage of MTCNNv2's Matlab
 * `detect_face` does after its O-Net stage (which equals SphereFace's MTCNNv1 stage 3):
 *
 * 1. The patch side is `lnetPatchSide` of the face's final box (after `bbreg` and NMS).
 * 2. Around each of the five landmarks, the box `lnetPatchBox` is cut out with zeros outside the
 *    image and resampled to 24×24 (`cropAndResample`, pdollar's `imResample` in double precision,
 *    as for the other stages).
 * 3. L-Net takes the five patches of a face together and returns one offset pair per landmark.
 * 4. Each landmark moves by `applyLNetOffset`.
 *
 * Boxes, scores and the order of the faces are unchanged; the landmarks stay 1-based. A face
 * whose box is so far inside out that its patch side is negative keeps its O-Net landmarks.
 * NOTE: the reference has no defined behaviour for such a face (its crop would be empty).
 *
 * @throws Error when `nets` has no L-Net.
 */
export async function refineLandmarks(nets: MtcnnNetworks, image: DecodedImage, faces: readonly Detection[]): Promise<Detection[]> {
  const lnet = nets.lnet;
  if (lnet === undefined) {
    throw new Error('refineLandmarks: the networks were loaded without L-Net (det4.caffemodel); load them with loadMtcnn(dir, { lnet: true })');
  }
  const sides = faces.map((face) => lnetPatchSide(face.box));
  const refinable = faces.map((_, index) => index).filter((index) => sides[index]! >= 0);
  const refined = [...faces];

  for (let first = 0; first < refinable.length; first += CROP_BATCH) {
    const batch = refinable.slice(first, first + CROP_BATCH);
    const input = packPatches(
      batch.map((index) => faces[index]!.landmarks.points.map((point) => cropAndResample(image, lnetPatchBox(point, sides[index]!), LNET_SIZE))),
    );
    let offsets: Float32Array | Int32Array | Uint8Array;
    try {
      const output = await lnet(input);
      try {
        offsets = await output.offsets.data();
      } finally {
        output.offsets.dispose();
      }
    } finally {
      input.dispose();
    }

    batch.forEach((index, n) => {
      const face = faces[index]!;
      const side = sides[index]!;
      const moved = face.landmarks.points.map((point, k): Point => {
        const o = (n * LNET_PATCH_COUNT + k) * 2;
        return applyLNetOffset(point, side, [offsets[o]!, offsets[o + 1]!]);
      });
      refined[index] = {
        ...face,
        landmarks: { points: [moved[0]!, moved[1]!, moved[2]!, moved[3]!, moved[4]!], origin: face.landmarks.origin },
      };
    });
  }
  return refined;
}
