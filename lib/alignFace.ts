/**
 * Aligning one face onto a five-point template, the work of the `similarityAlign` stage for a
 * single image. It does not import rxjs, so a worker thread that only aligns (see
 * operators/workers/decodeAlign.worker.ts) starts without loading it.
 */
import {
  fitSimilarity,
  formatPoints,
  SimilarityFitError,
  SPHEREFACE_OUTPUT_SIZE,
  SPHEREFACE_TEMPLATE,
  type Affine,
  type OutputSize,
} from './cp2tform.ts';
import {
  reject,
  type AlignedFace,
  type FivePoints,
  type LandmarkedImage,
  type Maybe,
  type Point,
} from '../operators/records.ts';

export interface SimilarityAlignOptions {
  /** Five 1-based (x, y) target points in the output crop. Default: the SphereFace template. */
  readonly template?: FivePoints;
  /** Output crop size in pixels. Default: 112 high by 96 wide. */
  readonly outputSize?: OutputSize;
}

/** `SimilarityAlignOptions` with every default filled in. */
export interface AlignSettings {
  readonly template: FivePoints;
  readonly outputSize: OutputSize;
}

/** An 8-bit RGB image, interleaved and row-major (height × width × 3). */
export interface RgbImage {
  readonly width: number;
  readonly height: number;
  readonly rgb: Uint8Array;
}

/**
 * Aligns one face. This is the single-image form of `similarityAlign`.
 *
 * @throws SimilarityFitError when the landmarks do not determine a transform.
 * @throws RangeError when the pixel buffer does not match the image size.
 * @throws TypeError or RangeError when the options are invalid, as for `similarityAlign`.
 */
export function alignFace(image: LandmarkedImage, options: SimilarityAlignOptions = {}): AlignedFace {
  return alignWith(image, resolveAlignSettings(options));
}

/**
 * Aligns one face as the `similarityAlign` stage does: landmarks that do not determine a transform,
 * lie far outside the image, or a pixel buffer that does not match the image size give a
 * `Rejected` record instead of an error.
 */
export function alignOrReject(image: LandmarkedImage, settings: AlignSettings): Maybe<AlignedFace> {
  const bufferProblem = describeBufferProblem(image);
  if (bufferProblem !== undefined) return reject(image, 'similarityAlign', `${image.path}: ${bufferProblem}`);
  const outside = pointOutsideImage(image);
  if (outside !== undefined) {
    return reject(
      image,
      'similarityAlign',
      `cannot align ${image.path}: landmark ${formatPoints([outside])} (${image.landmarks.origin}) lies far outside the ` +
        `${image.width}×${image.height} image; expected landmarks of this image, within ${100 * LANDMARK_MARGIN} % of its size past an edge`,
    );
  }

  try {
    return alignWith(image, settings);
  } catch (error) {
    if (!(error instanceof SimilarityFitError)) throw error;
    return reject(
      image,
      'similarityAlign',
      `cannot align ${image.path}: landmarks ${formatPoints(image.landmarks.points)} ` +
        `(${image.landmarks.origin}) do not determine a similarity transform (${error.problem}); ` +
        'expected five finite points that are not all equal',
    );
  }
}

/**
 * How far past an image edge a landmark may lie, as a fraction of the image's width or height.
 * MTCNN places points of a face cut by the edge a few pixels outside the image, so a small
 * margin is legitimate. A point further out means the landmarks belong to another image (or
 * another size of it). Aligning with them would quietly produce a wrong crop.
 */
const LANDMARK_MARGIN = 0.25;

function pointOutsideImage(image: LandmarkedImage): Point | undefined {
  const [minX, minY] = image.landmarks.origin === 'one-based' ? [0.5, 0.5] : [-0.5, -0.5];
  const dx = LANDMARK_MARGIN * image.width;
  const dy = LANDMARK_MARGIN * image.height;
  return image.landmarks.points.find(
    ([x, y]) => x < minX - dx || x > minX + image.width + dx || y < minY - dy || y > minY + image.height + dy,
  );
}

function alignWith(image: LandmarkedImage, settings: AlignSettings): AlignedFace {
  const bufferProblem = describeBufferProblem(image);
  if (bufferProblem !== undefined) throw new RangeError(`${image.path}: ${bufferProblem}`);

  const fit = fitSimilarity(toOneBased(image), settings.template);
  const { height, width } = settings.outputSize;
  return {
    id: image.id,
    path: image.path,
    width,
    height,
    rgb: warpBilinear(image, fit.inverse, settings.outputSize),
    transform: fit.forward,
  };
}

function toOneBased(image: LandmarkedImage): Point[] {
  const { points, origin } = image.landmarks;
  if (origin === 'one-based') return [...points];
  return points.map(([x, y]): Point => [x + 1, y + 1]);
}

function describeBufferProblem(image: RgbImage): string | undefined {
  const { width, height, rgb } = image;
  if (!isPositiveInteger(width) || !isPositiveInteger(height)) {
    return `invalid image size ${width}×${height}, expected positive integers`;
  }
  if (rgb.length !== width * height * 3) {
    return `pixel buffer has ${rgb.length} bytes, expected ${width}×${height}×3 = ${width * height * 3}`;
  }
  return undefined;
}

/** Checks `options` and fills in the SphereFace template and output size where they are missing. */
export function resolveAlignSettings(options: SimilarityAlignOptions): AlignSettings {
  const template = options.template ?? SPHEREFACE_TEMPLATE;
  const outputSize = options.outputSize ?? SPHEREFACE_OUTPUT_SIZE;

  if (!Array.isArray(template) || template.length !== 5) {
    const got = Array.isArray(template) ? `${template.length} points` : String(template);
    throw new TypeError(`similarityAlign: options.template must contain 5 (x, y) points, got ${got}`);
  }
  for (const [index, point] of template.entries()) {
    if (!Array.isArray(point) || point.length !== 2 || !point.every(Number.isFinite)) {
      throw new TypeError(
        `similarityAlign: options.template[${index}] must be a pair of finite numbers, got ${JSON.stringify(point)}`,
      );
    }
  }
  // Fitting the template to itself rejects a template whose points all coincide.
  try {
    fitSimilarity(template, template);
  } catch (error) {
    if (!(error instanceof SimilarityFitError)) throw error;
    throw new RangeError(`similarityAlign: options.template is unusable: ${error.message}`);
  }

  const { height, width } = outputSize;
  if (!isPositiveInteger(height) || !isPositiveInteger(width)) {
    throw new RangeError(
      `similarityAlign: options.outputSize must have positive integer height and width, got ${height}×${width}`,
    );
  }
  return { template, outputSize };
}

function isPositiveInteger(value: number): boolean {
  return Number.isInteger(value) && value > 0;
}

/**
 * Warps an RGB image with Matlab `imtransform` semantics for 'bilinear' interpolation and fill
 * value 0, with output pixel centres at 1..width and 1..height.
 *
 * `inverse` maps 1-based output coordinates to 1-based input coordinates (row-vector form, as in
 * `Affine`). Output pixel (row j, column i), 0-based, takes the input value at
 * p = inverse(i + 1, j + 1) − (1, 1), which is 0-based. The value is the bilinear blend of the four
 * pixels around p, and a neighbour outside the image counts as 0. A point within one pixel of the
 * edge therefore fades towards black, and a point a full pixel or more outside gives 0. This is
 * what Matlab's separable resampler does with the 'fill' pad method. Results are rounded half up
 * (`Math.round`) and clamped to [0, 255].
 *
 * @throws RangeError when the pixel buffer does not match the image size or the output size is not
 *   a pair of positive integers.
 */
export function warpBilinear(image: RgbImage, inverse: Affine, outputSize: OutputSize): Uint8Array {
  const bufferProblem = describeBufferProblem(image);
  if (bufferProblem !== undefined) throw new RangeError(`warpBilinear: ${bufferProblem}`);
  if (!isPositiveInteger(outputSize.width) || !isPositiveInteger(outputSize.height)) {
    throw new RangeError(
      `warpBilinear: invalid output size ${outputSize.width}×${outputSize.height}, expected positive integers`,
    );
  }

  const { width: inWidth, height: inHeight, rgb: source } = image;
  const { width: outWidth, height: outHeight } = outputSize;
  const [[a, b], [c, d], [tx, ty]] = inverse;
  const rowStride = inWidth * 3;
  const output = new Uint8Array(outWidth * outHeight * 3);

  for (let j = 0; j < outHeight; j++) {
    // Input position of output column 0 is (a·1 + c·(j+1) + tx − 1, b·1 + d·(j+1) + ty − 1).
    const rowX = c * (j + 1) + tx - 1;
    const rowY = d * (j + 1) + ty - 1;
    let target = j * outWidth * 3;

    for (let i = 0; i < outWidth; i++, target += 3) {
      const px = a * (i + 1) + rowX;
      const py = b * (i + 1) + rowY;
      if (!(px > -1 && px < inWidth && py > -1 && py < inHeight)) continue;

      const x0 = Math.floor(px);
      const y0 = Math.floor(py);
      const fx = px - x0;
      const fy = py - y0;
      const w00 = (1 - fx) * (1 - fy);
      const w01 = fx * (1 - fy);
      const w10 = (1 - fx) * fy;
      const w11 = fx * fy;

      if (x0 >= 0 && y0 >= 0 && x0 + 1 < inWidth && y0 + 1 < inHeight) {
        const s00 = y0 * rowStride + x0 * 3;
        const s10 = s00 + rowStride;
        output[target] = toByte(
          w00 * source[s00]! + w01 * source[s00 + 3]! + w10 * source[s10]! + w11 * source[s10 + 3]!,
        );
        output[target + 1] = toByte(
          w00 * source[s00 + 1]! + w01 * source[s00 + 4]! + w10 * source[s10 + 1]! + w11 * source[s10 + 4]!,
        );
        output[target + 2] = toByte(
          w00 * source[s00 + 2]! + w01 * source[s00 + 5]! + w10 * source[s10 + 2]! + w11 * source[s10 + 5]!,
        );
        continue;
      }

      // Border: drop the weight of each neighbour outside the image (it contributes fill value 0).
      const hasLeft = x0 >= 0;
      const hasRight = x0 + 1 < inWidth;
      const hasTop = y0 >= 0;
      const hasBottom = y0 + 1 < inHeight;
      const s00 = y0 * rowStride + x0 * 3;
      const s10 = s00 + rowStride;
      for (let channel = 0; channel < 3; channel++) {
        let value = 0;
        if (hasTop && hasLeft) value += w00 * source[s00 + channel]!;
        if (hasTop && hasRight) value += w01 * source[s00 + 3 + channel]!;
        if (hasBottom && hasLeft) value += w10 * source[s10 + channel]!;
        if (hasBottom && hasRight) value += w11 * source[s10 + 3 + channel]!;
        output[target + channel] = toByte(value);
      }
    }
  }
  return output;
}

function toByte(value: number): number {
  const rounded = Math.round(value);
  if (rounded > 255) return 255;
  if (rounded < 0) return 0;
  return rounded;
}
