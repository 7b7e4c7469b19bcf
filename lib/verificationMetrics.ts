/**
 * Verification metrics computed from pair scores: the ROC curve, the equal error rate and the
 * true accept rate at a fixed false accept rate (VAL@FAR).
 *
 * Scores are similarities (a higher score means more alike, such as the cosine scores of
 * `verifyFoldsWithScores` in `operators/kFoldVerify.ts`). TAR (true accept rate, VAL) is the
 * accepted fraction of the same-person pairs, FAR (false accept rate) the accepted fraction of
 * the different-person pairs, and FRR = 1 − TAR. VAL@FAR accepts a pair at threshold t when its
 * score is strictly greater than t, the comparison of the SphereFace protocol. The ROC curve and
 * the EER place their thresholds on the scores themselves and accept the scores at or above them.
 *
 * All functions are pure. They throw a RangeError for input they cannot rate: no pairs of one
 * kind, arrays of different lengths, or a non-finite score.
 */

/** A point of a ROC curve. */
export interface RocPoint {
  /** Pairs with a score at or above this value are accepted. */
  readonly threshold: number;
  /** False accept rate, from 0 to 1. */
  readonly far: number;
  /** True accept rate, from 0 to 1. */
  readonly tar: number;
}

/** The point where the false accept rate equals the false reject rate. */
export interface EqualErrorRate {
  /** FAR = FRR at that point, from 0 to 1. */
  readonly rate: number;
  /** Score threshold at that point, interpolated like `rate`. */
  readonly threshold: number;
}

/** VAL and FAR of one test fold at the threshold that the training folds chose. */
export interface ValFold {
  /** Fold number, from 1. */
  readonly fold: number;
  /**
   * Threshold chosen on the training folds. Undefined when no grid threshold reaches the target
   * FAR there, in which case the fold accepts no pair.
   */
  readonly threshold: number | undefined;
  /** True accept rate on the test fold, from 0 to 1. */
  readonly val: number;
  /** False accept rate on the test fold, from 0 to 1. */
  readonly far: number;
}

export interface ValAtFar {
  /** The false accept rate the thresholds were chosen for. */
  readonly targetFar: number;
  /** Mean VAL over the folds. */
  readonly val: number;
  /** Population standard deviation (divisor K, as numpy's `np.std`) of the fold VALs. */
  readonly valStd: number;
  /** Mean FAR over the test folds. */
  readonly far: number;
  readonly folds: readonly ValFold[];
}

/** Scores of pairs with their kind. */
export interface ScoredPairs {
  /** `same[p]` is true for a same-person pair. */
  readonly same: ArrayLike<boolean>;
  readonly scores: ArrayLike<number>;
}

/** Scores of pairs under the k-fold protocol, where each held-out fold has its own scores. */
export interface FoldedScores {
  readonly same: ArrayLike<boolean>;
  /** Fold of each pair, from 0. Folds must be 0 … K−1 with K ≥ 2. */
  readonly fold: ArrayLike<number>;
  /**
   * `scoresByFold[f][p]` is the score of pair p while fold f is the test fold. Without per-fold
   * processing (no mean subtraction) every entry may be the same array.
   */
  readonly scoresByFold: ReadonlyArray<ArrayLike<number>>;
}

export interface ValAtFarOptions {
  /**
   * Ascending threshold grid on which the training FAR is evaluated. Default: k/10000 for
   * k = −10000 … 10000, the grid of the accuracy protocol.
   */
  readonly thresholds?: ArrayLike<number>;
}

const DEFAULT_GRID_SCALE = 10000;

function defaultGrid(): Float64Array {
  const grid = new Float64Array(2 * DEFAULT_GRID_SCALE + 1);
  for (let k = -DEFAULT_GRID_SCALE; k <= DEFAULT_GRID_SCALE; k++) grid[k + DEFAULT_GRID_SCALE] = k / DEFAULT_GRID_SCALE;
  return grid;
}

function checkScores(caller: string, same: ArrayLike<boolean>, scores: ArrayLike<number>): { sameCount: number; differentCount: number } {
  if (scores.length !== same.length) {
    throw new RangeError(`${caller}: ${scores.length} scores for ${same.length} pairs. Expected one score per pair`);
  }
  let sameCount = 0;
  for (let p = 0; p < scores.length; p++) {
    if (!Number.isFinite(scores[p])) throw new RangeError(`${caller}: the score of pair ${p} is ${scores[p]}. Expected a finite number`);
    if (same[p]) sameCount++;
  }
  const differentCount = scores.length - sameCount;
  if (sameCount === 0 || differentCount === 0) {
    throw new RangeError(`${caller}: ${sameCount} same-person and ${differentCount} different-person pairs. Expected at least one of each`);
  }
  return { sameCount, differentCount };
}

/**
 * Computes the ROC curve over all pairs. The first point accepts nothing (FAR = TAR = 0, with
 * the highest score as threshold). Each further point lowers the threshold to the next distinct
 * score, from high to low, and accepts every pair at or above it, so the last point is
 * (1, 1). Tied scores of both kinds give one point, so ties show as a diagonal step.
 */
export function rocCurve(pairs: ScoredPairs): RocPoint[] {
  const { sameCount, differentCount } = checkScores('rocCurve', pairs.same, pairs.scores);
  const order = Array.from({ length: pairs.scores.length }, (_, p) => p).sort((a, b) => pairs.scores[b]! - pairs.scores[a]!);

  const points: RocPoint[] = [{ threshold: pairs.scores[order[0]!]!, far: 0, tar: 0 }];
  let accepted = 0;
  let trueAccepts = 0;
  let falseAccepts = 0;
  while (accepted < order.length) {
    const threshold = pairs.scores[order[accepted]!]!;
    while (accepted < order.length && pairs.scores[order[accepted]!] === threshold) {
      if (pairs.same[order[accepted]!]) trueAccepts++;
      else falseAccepts++;
      accepted++;
    }
    points.push({ threshold, far: falseAccepts / differentCount, tar: trueAccepts / sameCount });
  }
  return points;
}

/**
 * Computes the equal error rate over all pairs. Along the ROC curve of `rocCurve`, FAR − FRR
 * rises from −1 (nothing accepted) to +1 (everything accepted). The EER is taken on the first
 * segment between neighbouring points where it changes sign (or reaches 0): FAR, FRR and the
 * threshold are interpolated linearly along that segment to the fraction α where
 * FAR − FRR = 0, and the rate is FAR there, which equals FRR.
 */
export function equalErrorRate(pairs: ScoredPairs): EqualErrorRate {
  const points = rocCurve(pairs);
  const gap = (point: RocPoint): number => point.far - (1 - point.tar);

  for (let i = 0; i + 1 < points.length; i++) {
    const from = points[i]!;
    const to = points[i + 1]!;
    const gapFrom = gap(from);
    const gapTo = gap(to);
    if (gapFrom <= 0 && gapTo >= 0) {
      const alpha = gapTo === gapFrom ? 0 : -gapFrom / (gapTo - gapFrom);
      return {
        rate: from.far + alpha * (to.far - from.far),
        threshold: from.threshold + alpha * (to.threshold - from.threshold),
      };
    }
  }
  // The last point has FAR = 1 and FRR = 0, so some segment always changes sign.
  throw new Error('equalErrorRate: FAR − FRR never changes sign, which the ROC curve rules out');
}

/**
 * Computes VAL@FAR under the k-fold protocol, by the method of facenet's `calculate_val`
 * (davidsandberg/facenet, `src/facenet.py`, used by `src/lfw.py` with a FAR of 1e-3). For each
 * fold f:
 * 1. On the training pairs (all folds but f, scored with `scoresByFold[f]`), compute
 *    FAR(t) = #{different-person pairs with score > t} / #{different-person pairs} for every t
 *    of the grid. FAR falls as t rises.
 * 2. The threshold is where the linear interpolation of FAR over the grid first reaches
 *    `targetFar`: the grid value t_k when FAR(t_k) equals the target, otherwise the point
 *    between t_(k−1) and t_k, with FAR(t_(k−1)) > target > FAR(t_k), where the line between
 *    the two reaches the target. If FAR at the lowest grid value is already below the target,
 *    no threshold reaches it. facenet then uses distance threshold 0, which accepts no pair, so
 *    here the fold accepts no pair either and its VAL and FAR are 0. If FAR stays above the
 *    target up to the highest grid value, that value is the threshold.
 * 3. On the test pairs (fold f, same scores), VAL = TA / #same and FAR = FA / #different,
 *    counting the pairs with score > threshold.
 * The result is the mean VAL, its population standard deviation and the mean FAR.
 *
 * facenet works on squared L2 distances with the grid 0:0.001:4 and accepts distance <
 * threshold, and its interpolation (`scipy.interpolate.interp1d`) leaves the choice among equal
 * FAR values to scipy. This function works on similarities with its own grid and the first
 * crossing, so the same method can give slightly different thresholds.
 */
export function valAtFar(scores: FoldedScores, targetFar: number, options: ValAtFarOptions = {}): ValAtFar {
  if (!Number.isFinite(targetFar) || targetFar < 0 || targetFar > 1) {
    throw new RangeError(`valAtFar: target FAR ${targetFar} is invalid. Expected a number from 0 to 1`);
  }
  const grid = options.thresholds ?? defaultGrid();
  checkGrid(grid);
  const folds = checkFolds(scores);

  const results: ValFold[] = [];
  for (let f = 0; f < folds; f++) {
    const foldScores = scores.scoresByFold[f]!;
    checkScores(`valAtFar (fold ${f + 1} scores)`, scores.same, foldScores);

    const trainDifferent: number[] = [];
    for (let p = 0; p < foldScores.length; p++) {
      if (scores.fold[p] !== f && !scores.same[p]) trainDifferent.push(foldScores[p]!);
    }
    if (trainDifferent.length === 0) {
      throw new RangeError(`valAtFar: the training folds of fold ${f + 1} have no different-person pair, so their FAR is undefined`);
    }
    const threshold = thresholdForFar(Float64Array.from(trainDifferent).sort(), grid, targetFar);
    results.push({ fold: f + 1, threshold, ...rateTestFold(scores, f, threshold) });
  }

  const val = results.reduce((sum, r) => sum + r.val, 0) / folds;
  const variance = results.reduce((sum, r) => sum + (r.val - val) ** 2, 0) / folds;
  return {
    targetFar,
    val,
    valStd: Math.sqrt(variance),
    far: results.reduce((sum, r) => sum + r.far, 0) / folds,
    folds: results,
  };
}

function checkGrid(grid: ArrayLike<number>): void {
  if (grid.length === 0) throw new RangeError('valAtFar: the threshold grid is empty');
  for (let k = 0; k < grid.length; k++) {
    if (!Number.isFinite(grid[k]) || (k > 0 && grid[k]! <= grid[k - 1]!)) {
      throw new RangeError(`valAtFar: threshold grid value ${k} is ${grid[k]}. Expected finite values in strictly ascending order`);
    }
  }
}

/** Checks the folds and returns their count K. */
function checkFolds(scores: FoldedScores): number {
  const pairCount = scores.same.length;
  if (scores.fold.length !== pairCount) {
    throw new RangeError(`valAtFar: ${scores.fold.length} fold numbers for ${pairCount} pairs. Expected one per pair`);
  }
  let folds = 0;
  for (let p = 0; p < pairCount; p++) {
    const fold = scores.fold[p]!;
    if (!Number.isInteger(fold) || fold < 0) throw new RangeError(`valAtFar: pair ${p} has fold ${fold}. Expected an integer ≥ 0`);
    folds = Math.max(folds, fold + 1);
  }
  if (folds < 2) throw new RangeError(`valAtFar: the pairs form ${folds} fold(s). Expected at least 2`);
  if (scores.scoresByFold.length !== folds) {
    throw new RangeError(`valAtFar: ${scores.scoresByFold.length} score arrays for ${folds} folds. Expected one per fold`);
  }
  return folds;
}

/**
 * Returns the threshold where FAR(t), linearly interpolated over `grid`, first reaches
 * `target` (step 2 of `valAtFar`), or undefined when FAR at the lowest grid value is below it.
 * `different` contains the training different-person scores in ascending order.
 */
function thresholdForFar(different: Float64Array, grid: ArrayLike<number>, target: number): number | undefined {
  const count = different.length;
  let atOrBelow = 0;
  const farAt = (t: number): number => {
    while (atOrBelow < count && different[atOrBelow]! <= t) atOrBelow++;
    return (count - atOrBelow) / count;
  };

  let previousFar = farAt(grid[0]!);
  if (previousFar === target) return grid[0]!;
  if (previousFar < target) return undefined;
  for (let k = 1; k < grid.length; k++) {
    const far = farAt(grid[k]!);
    if (far === target) return grid[k]!;
    if (far < target) {
      const previous = grid[k - 1]!;
      return previous + ((target - previousFar) / (far - previousFar)) * (grid[k]! - previous);
    }
    previousFar = far;
  }
  return grid[grid.length - 1]!;
}

/** VAL and FAR of the test pairs of fold `f` at `threshold`; both 0 when the threshold is undefined. */
function rateTestFold(scores: FoldedScores, f: number, threshold: number | undefined): { val: number; far: number } {
  const foldScores = scores.scoresByFold[f]!;
  let sameCount = 0;
  let differentCount = 0;
  let trueAccepts = 0;
  let falseAccepts = 0;
  for (let p = 0; p < foldScores.length; p++) {
    if (scores.fold[p] !== f) continue;
    const accepted = threshold !== undefined && foldScores[p]! > threshold;
    if (scores.same[p]) {
      sameCount++;
      if (accepted) trueAccepts++;
    } else {
      differentCount++;
      if (accepted) falseAccepts++;
    }
  }
  if (sameCount === 0 || differentCount === 0) {
    throw new RangeError(
      `valAtFar: test fold ${f + 1} has ${sameCount} same-person and ${differentCount} different-person pairs. Expected at least one of each`,
    );
  }
  return { val: trueAccepts / sameCount, far: falseAccepts / differentCount };
}
