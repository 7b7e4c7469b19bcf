/**
 * Similarity transform fitting with the semantics of Matlab's `cp2tform(input, base, 'similarity')`,
 * which SphereFace uses to align five facial landmarks onto a fixed template.
 *
 * Conventions used throughout this module:
 * - Points are (x, y) pixel coordinates. `fitSimilarity` does not care about the origin, but the
 *   SphereFace template is 1-based (the centre of the top-left pixel is (1, 1)), so landmarks must
 *   be 1-based too when they are fitted to it.
 * - An `Affine` is the row-vector form that Matlab's `tform` structs use: the 3×2 matrix
 *   [[a, b], [c, d], [tx, ty]] maps a point by [u v 1] · T = [x y], so
 *   x = a·u + c·v + tx and y = b·u + d·v + ty. The column-vector 2×3 matrix that OpenCV's
 *   `warpAffine` takes is its transpose, [[a, c, tx], [b, d, ty]].
 * - "Input" is the detected landmarks (u, v) and "base" the template (x, y). The forward transform
 *   maps input to base and the inverse maps base to input.
 *
 * All arithmetic is float64.
 */
import type { FivePoints, Point } from '../operators/records.ts';

/** A 2-D affine map in row-vector form: [u v 1] · [[a, b], [c, d], [tx, ty]] = [x y]. */
export type Affine = readonly [readonly [number, number], readonly [number, number], readonly [number, number]];

/** Output size of an aligned face in pixels. */
export interface OutputSize {
  readonly height: number;
  readonly width: number;
}

/** A fitted similarity transform between detected landmarks and a template. */
export interface SimilarityFit {
  /** Maps input (detected) coordinates to base (template) coordinates. */
  readonly forward: Affine;
  /** Maps base (template) coordinates to input (detected) coordinates. */
  readonly inverse: Affine;
  /** True when the chosen transform includes a mirror flip. */
  readonly reflective: boolean;
  /** Matrix 2-norm of forward(input) − base over the N×2 point matrix, in base pixels. */
  readonly residual: number;
}

/**
 * The SphereFace alignment template: left eye, right eye, nose tip, left mouth corner and right
 * mouth corner as 1-based (x, y) in a 96-wide, 112-high crop, as used by SphereFace's Matlab
 * preprocessing.
 */
export const SPHEREFACE_TEMPLATE: FivePoints = [
  [30.2946, 51.6963],
  [65.5318, 51.5014],
  [48.0252, 71.7366],
  [33.5493, 92.3655],
  [62.7299, 92.2041],
];

/** The SphereFace crop: 112 rows by 96 columns. */
export const SPHEREFACE_OUTPUT_SIZE: OutputSize = { height: 112, width: 96 };

/**
 * Widens a template to a square crop as tall as the original, adding equal margins left and right
 * so the face stays centred. For the SphereFace template this adds 8 to every x and gives a
 * 112×112 crop.
 */
export function squareTemplate(
  template: FivePoints = SPHEREFACE_TEMPLATE,
  outputSize: OutputSize = SPHEREFACE_OUTPUT_SIZE,
): { template: FivePoints; outputSize: OutputSize } {
  const margin = (outputSize.height - outputSize.width) / 2;
  const shift = ([x, y]: Point): Point => [x + margin, y];
  const [p1, p2, p3, p4, p5] = template;
  return {
    template: [shift(p1), shift(p2), shift(p3), shift(p4), shift(p5)],
    outputSize: { height: outputSize.height, width: outputSize.height },
  };
}

/** The reason a point set cannot be fitted. */
export type SimilarityFitProblem =
  | 'length-mismatch'
  | 'too-few-points'
  | 'non-finite'
  | 'degenerate-base'
  | 'degenerate-input';

/** Raised when the points do not determine an invertible similarity transform. */
export class SimilarityFitError extends Error {
  override readonly name = 'SimilarityFitError';

  constructor(
    readonly problem: SimilarityFitProblem,
    readonly input: readonly Point[],
    readonly base: readonly Point[],
    detail: string,
  ) {
    super(`${detail}; input points ${formatPoints(input)}, base points ${formatPoints(base)}`);
  }
}

/** Formats points as "(x, y), (x, y), …" with full precision, so NaN and Infinity stay visible. */
export function formatPoints(points: readonly Point[]): string {
  return points.map(([x, y]) => `(${x}, ${y})`).join(', ');
}

/**
 * A point spread (root-mean-square distance from the centroid) at or below this fraction of the
 * largest absolute coordinate counts as zero. Centring in float64 leaves errors below 1e-14 of the
 * coordinate size, far below this, and real landmark sets have spreads of several pixels.
 */
const RELATIVE_SPREAD_TOLERANCE = 1e-9;

/**
 * Fits the similarity transform that maps `input` onto `base`, allowing a reflection, exactly as
 * Matlab's `cp2tform(input, base, 'similarity')` does:
 *
 * 1. Non-reflective fit: solve X·r = U in the least-squares sense for r = [sc, ss, tx, ty], with
 *    X = [x y 1 0; y −x 0 1] built from the base points and U = [u; v] from the input points.
 *    This gives Tinv = [sc −ss 0; ss sc 0; tx ty 1], which maps base to input, and the forward
 *    transform is its inverse. The residual is therefore minimised in the input frame, which
 *    differs from a direct input→base least-squares fit (Umeyama, skimage): on the LFW face
 *    Aaron_Eckhart_0001 the direct fit has 1.8 % less scale and about 2 pixels of shift.
 * 2. Reflective fit: negate the base x column, fit as in step 1, and multiply the result by
 *    diag(−1, 1, 1) to undo the flip. The base points themselves are left untouched.
 * 3. Keep the fit with the smaller matrix 2-norm of forward(input) − base; a tie keeps the
 *    non-reflective one.
 *
 * The cp2tform documentation lists 3 point pairs as the minimum for 'similarity'. This function
 * accepts 2, and then both fits are exact and the non-reflective one wins the tie.
 *
 * @throws SimilarityFitError with `problem` set to:
 *   - `length-mismatch` or `too-few-points` when the point counts differ or are below 2;
 *   - `non-finite` when a coordinate is NaN or infinite;
 *   - `degenerate-base` when the base points all coincide, which makes X rank-deficient;
 *   - `degenerate-input` when neither fit has an invertible Tinv, for example when all input
 *     points coincide.
 */
export function fitSimilarity(input: readonly Point[], base: readonly Point[]): SimilarityFit {
  checkPointSets(input, base);

  const direct = solveBaseToInput(input, base, 1);
  const mirrored = solveBaseToInput(input, base, -1);

  // A singular Tinv has no forward transform. Matlab's `inv` returns Inf entries instead, the
  // residual becomes NaN, `norm1 <= norm2` is false, and the reflective fit is kept. Dropping the
  // singular fit makes the same choice when the non-reflective Tinv is singular. When only the
  // reflective one is, Matlab would keep that Inf transform and this code keeps the finite one.
  const candidates: Array<{ inverse: Affine; reflective: boolean }> = [];
  if (direct !== undefined) candidates.push({ inverse: direct, reflective: false });
  if (mirrored !== undefined) candidates.push({ inverse: mirrored, reflective: true });

  let best: SimilarityFit | undefined;
  for (const candidate of candidates) {
    const forward = invertAffine(candidate.inverse);
    const residual = residualNorm(forward, input, base);
    if (best === undefined || residual < best.residual) {
      best = { forward, inverse: candidate.inverse, reflective: candidate.reflective, residual };
    }
  }

  if (best === undefined) {
    throw new SimilarityFitError(
      'degenerate-input',
      input,
      base,
      'the input points do not determine a similarity transform (they all coincide, or the best fit has zero scale)',
    );
  }
  return best;
}

function checkPointSets(input: readonly Point[], base: readonly Point[]): void {
  if (input.length !== base.length) {
    throw new SimilarityFitError(
      'length-mismatch',
      input,
      base,
      `expected as many input points as base points, got ${input.length} and ${base.length}`,
    );
  }
  if (input.length < 2) {
    throw new SimilarityFitError('too-few-points', input, base, `expected at least 2 point pairs, got ${input.length}`);
  }

  const allFinite = (points: readonly Point[]): boolean =>
    points.every(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (!allFinite(input) || !allFinite(base)) {
    throw new SimilarityFitError('non-finite', input, base, 'expected finite coordinates, got NaN or Infinity');
  }

  if (rmsSpread(base) <= RELATIVE_SPREAD_TOLERANCE * Math.max(1, maxAbsCoordinate(base))) {
    throw new SimilarityFitError(
      'degenerate-base',
      input,
      base,
      'the base points all coincide, so the least-squares system is rank-deficient',
    );
  }
}

/**
 * Solves the cp2tform least-squares problem and returns Tinv (base → input), or undefined when
 * Tinv is singular. `xSign` = −1 fits against the mirrored base (−x, y) and folds diag(−1, 1, 1)
 * back in, so the result always maps the unmirrored base.
 *
 * The columns of X have a closed-form Gram matrix: the sc and ss columns are orthogonal with equal
 * norms, and after centring both point sets they are also orthogonal to the tx and ty columns. The
 * normal equations then split into two scalar divisions by Σ(x'² + y'²). Centring first also
 * avoids the cancellation that makes uncentred normal equations lose digits when coordinates are
 * large compared with their spread.
 */
function solveBaseToInput(input: readonly Point[], base: readonly Point[], xSign: 1 | -1): Affine | undefined {
  const n = base.length;
  const [xMean, yMean] = centroid(base);
  const [uMean, vMean] = centroid(input);
  const mirroredXMean = xSign * xMean;

  let sumSquares = 0;
  let sumCos = 0;
  let sumSin = 0;
  for (let k = 0; k < n; k++) {
    const [x, y] = base[k]!;
    const [u, v] = input[k]!;
    const dx = xSign * x - mirroredXMean;
    const dy = y - yMean;
    const du = u - uMean;
    const dv = v - vMean;
    sumSquares += dx * dx + dy * dy;
    sumCos += du * dx + dv * dy;
    sumSin += du * dy - dv * dx;
  }

  const sc = sumCos / sumSquares;
  const ss = sumSin / sumSquares;
  const tx = uMean - sc * mirroredXMean - ss * yMean;
  const ty = vMean - sc * yMean + ss * mirroredXMean;

  // The mapped spread of the base points is scale · rmsSpread(base). Compare it with the input's
  // coordinate size to decide whether Tinv is numerically singular.
  const scale = Math.hypot(sc, ss);
  const mappedSpread = scale * Math.sqrt(sumSquares / n);
  if (!(mappedSpread > RELATIVE_SPREAD_TOLERANCE * Math.max(1, maxAbsCoordinate(input)))) return undefined;

  // Tinv in row-vector form, then diag(xSign, 1, 1) · Tinv to map the unmirrored base.
  return [
    [xSign * sc, xSign * -ss],
    [ss, sc],
    [tx, ty],
  ];
}

/**
 * Inverts an affine map given in row-vector form.
 *
 * @throws RangeError when the determinant of the linear part is zero or not finite.
 */
export function invertAffine(transform: Affine): Affine {
  const [[a, b], [c, d], [tx, ty]] = transform;
  const determinant = a * d - b * c;
  if (determinant === 0 || !Number.isFinite(determinant)) {
    throw new RangeError(`cannot invert affine transform ${JSON.stringify(transform)}: determinant is ${determinant}`);
  }
  // [x y] = [u v]·L + t, so [u v] = ([x y] − t)·L⁻¹.
  const ia = d / determinant;
  const ib = -b / determinant;
  const ic = -c / determinant;
  const id = a / determinant;
  return [
    [ia, ib],
    [ic, id],
    [-(tx * ia + ty * ic), -(tx * ib + ty * id)],
  ];
}

/** Maps one point through an affine transform (Matlab's `tformfwd`). */
export function applyAffine(transform: Affine, [u, v]: Point): Point {
  const [[a, b], [c, d], [tx, ty]] = transform;
  return [a * u + c * v + tx, b * u + d * v + ty];
}

/** Converts to the column-vector 2×3 form [[a, c, tx], [b, d, ty]] that OpenCV's `warpAffine` takes. */
export function toColumnForm(transform: Affine): [[number, number, number], [number, number, number]] {
  const [[a, b], [c, d], [tx, ty]] = transform;
  return [
    [a, c, tx],
    [b, d, ty],
  ];
}

/**
 * Returns Matlab's `norm(tformfwd(T, input) − base)`: the matrix 2-norm (largest singular value)
 * of the N×2 difference, computed as the square root of the larger eigenvalue of its 2×2 Gram
 * matrix.
 */
export function residualNorm(forward: Affine, input: readonly Point[], base: readonly Point[]): number {
  const differences = input.map((point, k): Point => {
    const [x, y] = applyAffine(forward, point);
    const [bx, by] = base[k]!;
    return [x - bx, y - by];
  });
  return matrixTwoNorm(differences);
}

/** Returns the largest singular value of an N×2 matrix given as rows. */
export function matrixTwoNorm(rows: readonly Point[]): number {
  let xx = 0;
  let xy = 0;
  let yy = 0;
  for (const [x, y] of rows) {
    xx += x * x;
    xy += x * y;
    yy += y * y;
  }
  const largestEigenvalue = (xx + yy) / 2 + Math.hypot((xx - yy) / 2, xy);
  return Math.sqrt(largestEigenvalue);
}

function centroid(points: readonly Point[]): Point {
  let sx = 0;
  let sy = 0;
  for (const [x, y] of points) {
    sx += x;
    sy += y;
  }
  return [sx / points.length, sy / points.length];
}

function rmsSpread(points: readonly Point[]): number {
  const [mx, my] = centroid(points);
  let sum = 0;
  for (const [x, y] of points) sum += (x - mx) ** 2 + (y - my) ** 2;
  return Math.sqrt(sum / points.length);
}

function maxAbsCoordinate(points: readonly Point[]): number {
  let max = 0;
  for (const [x, y] of points) max = Math.max(max, Math.abs(x), Math.abs(y));
  return max;
}
