/**
 * The SphereFace k-fold verification protocol for LFW View 2.
 *
 * For each fold i, the other folds are the training pairs and fold i is the test fold:
 * 1. μ is the mean feature over the left and the right image of every training pair. An image
 *    used by several training pairs counts once per use.
 * 2. Every feature has μ subtracted and is then scaled to unit L2 norm. The score of a pair is
 *    the dot product (cosine) of its two vectors.
 * 3. Every threshold t = k/10000, k = −10000 … 10000, is tried on the training pairs. A same-person
 *    pair is correct when score > t and a different-person pair when score < t, so a score equal
 *    to t is wrong on both sides. The chosen threshold is the mean of all grid thresholds that
 *    reach the maximum training accuracy.
 * 4. The fold's accuracy is the fraction of its test pairs that are correct at that threshold,
 *    with the same strict comparisons.
 *
 * All arithmetic is float64. These rules are those of `test/code/evaluation.m` in the SphereFace
 * repository (wy1iu/sphereface at commit 2679f8e), which prints the accuracy of each fold and
 * their mean. That script computes no standard deviation, so `std` here is an addition.
 */
import { Either, ParseResult, Schema } from 'effect';
import { concat, defer, ignoreElements, of, tap, type OperatorFunction } from 'rxjs';
import { isRejected, type Feature, type Maybe, type Rejected } from './records.ts';

/** The fields of a pair that `kFoldVerify` reads. `LfwPair` from `datasets/lfw.ts` has them. */
export interface VerificationPair {
  /** Fold, from 0. The folds must be 0 … K−1 with K ≥ 2, each with at least one pair. */
  readonly fold: number;
  /** True for a same-person pair. */
  readonly same: boolean;
  readonly left: { readonly id: string };
  readonly right: { readonly id: string };
}

export interface KFoldVerifyOptions {
  /** Subtract the training-fold mean before L2 normalisation. Default: true, as SphereFace does. */
  readonly subtractMean?: boolean;
}

export interface FoldResult {
  /** Fold number, from 1, as the SphereFace results table numbers them. */
  readonly fold: number;
  /** Fraction of the fold's test pairs that are correct, from 0 to 1. */
  readonly accuracy: number;
  /** Cosine threshold chosen on the other folds. */
  readonly threshold: number;
  /** Test pairs classified correctly. */
  readonly correct: number;
  /** Test pairs in the fold. */
  readonly total: number;
  /** Maximum accuracy over the threshold grid on the training pairs, from 0 to 1. */
  readonly trainAccuracy: number;
  /** Number of grid thresholds that reach `trainAccuracy`. `threshold` is their mean. */
  readonly tiedThresholds: number;
}

export interface VerificationReport {
  /** One entry per fold, in fold order. */
  readonly folds: readonly FoldResult[];
  /** Mean of the fold accuracies, from 0 to 1. This is the number SphereFace reports. */
  readonly mean: number;
  /** Sample standard deviation (divisor K−1, the default of Matlab's `std`) of the fold accuracies. */
  readonly std: number;
  /** Test pairs classified correctly, summed over the folds. */
  readonly correct: number;
  /** All pairs. Each is a test pair in exactly one fold. */
  readonly total: number;
  /** Mean of the per-fold thresholds. */
  readonly meanThreshold: number;
  /** Feature length (1024 for SphereFace-20 with the mirror feature). */
  readonly dimension: number;
  readonly subtractMean: boolean;
}

/**
 * A `VerificationReport` with the pair scores it was computed from. Arrays indexed by pair follow
 * the order of the `pairs` argument.
 */
export interface ScoredVerification {
  readonly report: VerificationReport;
  /**
   * Score of each pair in the fold where it is a test pair: the cosine that fold's accuracy
   * counts, with the mean of the other folds subtracted when `subtractMean` is set.
   */
  readonly testScores: Float64Array;
  /**
   * `scoresByFold[f][p]` is the score of pair p while fold f + 1 is the test fold, so every pair
   * is centred on the mean of the other folds' pairs. `testScores[p]` equals
   * `scoresByFold[pairs[p].fold][p]`.
   */
  readonly scoresByFold: readonly Float64Array[];
}

/** The grid is k / THRESHOLD_SCALE for k = −THRESHOLD_SCALE … THRESHOLD_SCALE. */
const THRESHOLD_SCALE = 10000;

/** How many ids an error message lists before it summarises the rest. */
const MAX_IDS_LISTED = 10;

const OptionsSchema = Schema.Struct({ subtractMean: Schema.optional(Schema.Boolean) });

function decodeOptions(options: unknown): Required<KFoldVerifyOptions> {
  const result = Schema.decodeUnknownEither(OptionsSchema)(options, { onExcessProperty: 'error' });
  if (Either.isLeft(result)) {
    throw new TypeError(`kFoldVerify: invalid options: ${ParseResult.TreeFormatter.formatErrorSync(result.left)}`);
  }
  return { subtractMean: result.right.subtractMean ?? true };
}

// ---------------------------------------------------------------------------------------------
// Pair validation
// ---------------------------------------------------------------------------------------------

/** The pairs reduced to indices into a table of distinct images. */
interface PairPlan {
  readonly folds: number;
  readonly ids: readonly string[];
  readonly leftImage: Int32Array;
  readonly rightImage: Int32Array;
  readonly same: Uint8Array;
  readonly fold: Int32Array;
  /** Index of the first pair that uses each image, for error messages. */
  readonly firstPair: Int32Array;
}

function planPairs(pairs: readonly VerificationPair[]): PairPlan {
  if (pairs.length === 0) throw new RangeError('kFoldVerify: the pair list is empty');

  const index = new Map<string, number>();
  const ids: string[] = [];
  const firstPair: number[] = [];
  const imageIndex = (id: string, pair: number): number => {
    let i = index.get(id);
    if (i === undefined) {
      i = ids.length;
      index.set(id, i);
      ids.push(id);
      firstPair.push(pair);
    }
    return i;
  };

  const n = pairs.length;
  const leftImage = new Int32Array(n);
  const rightImage = new Int32Array(n);
  const same = new Uint8Array(n);
  const fold = new Int32Array(n);
  let folds = 0;

  pairs.forEach((pair, p) => {
    if (!Number.isInteger(pair.fold) || pair.fold < 0) {
      throw new RangeError(`kFoldVerify: pair ${p} has fold ${pair.fold}. Expected an integer ≥ 0 (folds count from 0)`);
    }
    if (typeof pair.same !== 'boolean') {
      throw new TypeError(`kFoldVerify: pair ${p} has same = ${String(pair.same)}. Expected true or false`);
    }
    leftImage[p] = imageIndex(pair.left.id, p);
    rightImage[p] = imageIndex(pair.right.id, p);
    same[p] = pair.same ? 1 : 0;
    fold[p] = pair.fold;
    folds = Math.max(folds, pair.fold + 1);
  });

  const pairsPerFold = new Array<number>(folds).fill(0);
  for (const f of fold) pairsPerFold[f]! += 1;
  const empty = pairsPerFold.flatMap((count, f) => (count === 0 ? [f] : []));
  if (empty.length > 0) {
    throw new RangeError(`kFoldVerify: fold(s) ${empty.join(', ')} have no pairs. Expected folds 0 … ${folds - 1}, each non-empty`);
  }
  if (folds < 2) {
    throw new RangeError(`kFoldVerify: all pairs are in fold 0. Expected at least 2 folds, because each fold is tested on a threshold chosen on the others`);
  }

  return { folds, ids, leftImage, rightImage, same, fold, firstPair: Int32Array.from(firstPair) };
}

// ---------------------------------------------------------------------------------------------
// Features
// ---------------------------------------------------------------------------------------------

function describeIds(ids: readonly string[], describe: (id: string) => string): string {
  const listed = ids.slice(0, MAX_IDS_LISTED).map(describe);
  const rest = ids.length > MAX_IDS_LISTED ? `, … and ${ids.length - MAX_IDS_LISTED} more` : '';
  return listed.join(', ') + rest;
}

/**
 * Copies the features of the planned images into one row-major float64 matrix
 * (images × dimension) after checking that none is missing, all have one length and all
 * values are finite.
 */
function gatherFeatures(
  plan: PairPlan,
  features: ReadonlyMap<string, Float32Array | Float64Array>,
  rejections: ReadonlyMap<string, Rejected> = new Map(),
): { matrix: Float64Array; dimension: number } {
  const missing = plan.ids.filter((id) => !features.has(id));
  if (missing.length > 0) {
    const describe = (id: string): string => {
      const rejection = rejections.get(id);
      const pair = plan.firstPair[plan.ids.indexOf(id)];
      const reason = rejection === undefined ? '' : `, rejected by ${rejection.stage}: ${rejection.reason}`;
      return `${id} (first used by pair ${pair}${reason})`;
    };
    throw new Error(
      `kFoldVerify: no feature for ${missing.length} of the ${plan.ids.length} images that the pairs use: ` +
        `${describeIds(missing, describe)}. Every pair must be scored, so every image needs a feature.`,
    );
  }

  const first = features.get(plan.ids[0]!)!;
  const dimension = first.length;
  if (dimension === 0) throw new RangeError(`kFoldVerify: the feature of ${plan.ids[0]} is empty`);

  const matrix = new Float64Array(plan.ids.length * dimension);
  plan.ids.forEach((id, i) => {
    const vector = features.get(id)!;
    if (vector.length !== dimension) {
      throw new RangeError(`kFoldVerify: the feature of ${id} has length ${vector.length}. Expected ${dimension}, the length of the feature of ${plan.ids[0]}`);
    }
    for (let d = 0; d < dimension; d++) {
      const value = vector[d]!;
      if (!Number.isFinite(value)) {
        throw new RangeError(`kFoldVerify: the feature of ${id} has the non-finite value ${value} at index ${d}`);
      }
      matrix[i * dimension + d] = value;
    }
  });
  return { matrix, dimension };
}

// ---------------------------------------------------------------------------------------------
// Scores and thresholds
// ---------------------------------------------------------------------------------------------

/**
 * Returns the cosine score of every pair when fold `testFold` is held out: subtracts the mean of
 * the training pairs' left and right features (if `subtractMean`), then L2-normalises.
 */
function scorePairs(
  plan: PairPlan,
  matrix: Float64Array,
  dimension: number,
  testFold: number,
  subtractMean: boolean,
): Float64Array {
  const pairCount = plan.fold.length;
  const mean = new Float64Array(dimension);

  if (subtractMean) {
    let occurrences = 0;
    for (let p = 0; p < pairCount; p++) {
      if (plan.fold[p] === testFold) continue;
      const left = plan.leftImage[p]! * dimension;
      const right = plan.rightImage[p]! * dimension;
      for (let d = 0; d < dimension; d++) mean[d]! += matrix[left + d]!;
      for (let d = 0; d < dimension; d++) mean[d]! += matrix[right + d]!;
      occurrences += 2;
    }
    for (let d = 0; d < dimension; d++) mean[d]! /= occurrences;
  }

  const normalised = new Float64Array(matrix.length);
  for (let i = 0; i < plan.ids.length; i++) {
    const row = i * dimension;
    let squares = 0;
    for (let d = 0; d < dimension; d++) {
      const centred = matrix[row + d]! - mean[d]!;
      normalised[row + d] = centred;
      squares += centred * centred;
    }

    const norm = Math.sqrt(squares);
    if (norm === 0) {
      const cause = subtractMean ? `equals the mean of the training pairs when fold ${testFold + 1} is the test fold` : 'is zero';
      throw new RangeError(`kFoldVerify: the feature of ${plan.ids[i]} ${cause}, so it has no direction to compare`);
    }
    for (let d = 0; d < dimension; d++) normalised[row + d]! /= norm;
  }

  const scores = new Float64Array(pairCount);
  for (let p = 0; p < pairCount; p++) {
    const left = plan.leftImage[p]! * dimension;
    const right = plan.rightImage[p]! * dimension;
    let dot = 0;
    for (let d = 0; d < dimension; d++) dot += normalised[left + d]! * normalised[right + d]!;
    scores[p] = dot;
  }
  return scores;
}

interface ThresholdChoice {
  readonly threshold: number;
  readonly trainCorrect: number;
  readonly tiedThresholds: number;
}

/**
 * Chooses the threshold on the training scores: the mean of all grid thresholds with the
 * maximum count of correct pairs. Sorting both score lists lets one sweep over the rising grid
 * count the same-person scores ≤ t and the different-person scores < t.
 */
function chooseThreshold(sameScores: Float64Array, differentScores: Float64Array): ThresholdChoice {
  const sortedSame = Float64Array.from(sameScores).sort();
  const sortedDifferent = Float64Array.from(differentScores).sort();

  let sameAtOrBelow = 0;
  let differentBelow = 0;
  let bestCorrect = -1;
  let tiedSum = 0;
  let tiedCount = 0;

  for (let k = -THRESHOLD_SCALE; k <= THRESHOLD_SCALE; k++) {
    const t = k / THRESHOLD_SCALE;
    while (sameAtOrBelow < sortedSame.length && sortedSame[sameAtOrBelow]! <= t) sameAtOrBelow++;
    while (differentBelow < sortedDifferent.length && sortedDifferent[differentBelow]! < t) differentBelow++;

    const correct = sortedSame.length - sameAtOrBelow + differentBelow;
    if (correct > bestCorrect) {
      bestCorrect = correct;
      tiedSum = k;
      tiedCount = 1;
    } else if (correct === bestCorrect) {
      tiedSum += k;
      tiedCount++;
    }
  }

  // The sum of the tied k is an exact integer, so this is the correctly rounded mean of k/10000.
  return { threshold: tiedSum / (tiedCount * THRESHOLD_SCALE), trainCorrect: bestCorrect, tiedThresholds: tiedCount };
}

function verifyPlan(
  plan: PairPlan,
  features: ReadonlyMap<string, Float32Array | Float64Array>,
  options: Required<KFoldVerifyOptions>,
  rejections?: ReadonlyMap<string, Rejected>,
): ScoredVerification {
  const { matrix, dimension } = gatherFeatures(plan, features, rejections);
  const folds: FoldResult[] = [];
  const scoresByFold: Float64Array[] = [];
  const testScores = new Float64Array(plan.fold.length);

  for (let testFold = 0; testFold < plan.folds; testFold++) {
    const scores = scorePairs(plan, matrix, dimension, testFold, options.subtractMean);
    scoresByFold.push(scores);

    const trainSame: number[] = [];
    const trainDifferent: number[] = [];
    for (let p = 0; p < scores.length; p++) {
      if (plan.fold[p] === testFold) continue;
      (plan.same[p] ? trainSame : trainDifferent).push(scores[p]!);
    }
    const choice = chooseThreshold(Float64Array.from(trainSame), Float64Array.from(trainDifferent));

    let correct = 0;
    let total = 0;
    for (let p = 0; p < scores.length; p++) {
      if (plan.fold[p] !== testFold) continue;
      const score = scores[p]!;
      testScores[p] = score;
      if (plan.same[p] ? score > choice.threshold : score < choice.threshold) correct++;
      total++;
    }

    folds.push({
      fold: testFold + 1,
      accuracy: correct / total,
      threshold: choice.threshold,
      correct,
      total,
      trainAccuracy: choice.trainCorrect / (trainSame.length + trainDifferent.length),
      tiedThresholds: choice.tiedThresholds,
    });
  }

  const k = folds.length;
  const mean = folds.reduce((sum, f) => sum + f.accuracy, 0) / k;
  const variance = folds.reduce((sum, f) => sum + (f.accuracy - mean) ** 2, 0) / (k - 1);

  const report: VerificationReport = {
    folds,
    mean,
    std: Math.sqrt(variance),
    correct: folds.reduce((sum, f) => sum + f.correct, 0),
    total: folds.reduce((sum, f) => sum + f.total, 0),
    meanThreshold: folds.reduce((sum, f) => sum + f.threshold, 0) / k,
    dimension,
    subtractMean: options.subtractMean,
  };
  return { report, testScores, scoresByFold };
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/**
 * Runs the k-fold protocol on features that are already in memory. Features of images that no
 * pair uses are ignored.
 *
 * @param features vectors keyed by image id (`Name/Name_0001.jpg` for LFW)
 * @throws RangeError or TypeError for invalid pairs or options, a missing or non-finite feature,
 *   features of different lengths, or a feature with zero norm after mean subtraction
 */
export function verifyFolds(
  pairs: readonly VerificationPair[],
  features: ReadonlyMap<string, Float32Array | Float64Array>,
  options: KFoldVerifyOptions = {},
): VerificationReport {
  return verifyPlan(planPairs(pairs), features, decodeOptions(options)).report;
}

/**
 * Runs the k-fold protocol as `verifyFolds` does and also returns the score of every pair, for
 * metrics and reports that need more than the fold accuracies. The report is the one
 * `verifyFolds` returns for the same input.
 *
 * @throws the errors of `verifyFolds`
 */
export function verifyFoldsWithScores(
  pairs: readonly VerificationPair[],
  features: ReadonlyMap<string, Float32Array | Float64Array>,
  options: KFoldVerifyOptions = {},
): ScoredVerification {
  return verifyPlan(planPairs(pairs), features, decodeOptions(options));
}

/**
 * Collects features and, when the source completes, emits one `VerificationReport` and
 * completes. Features may arrive in any order, and features of images that no pair uses are
 * ignored.
 *
 * The stream errors if a pair's image has no feature, if a feature arrives twice for one id, or
 * if a feature cannot be scored. The message for missing features lists their ids, with the
 * stage and reason for those that arrived as `Rejected`. Invalid pairs or options throw at once,
 * when the operator is created.
 *
 * @example
 * ```ts
 * const { pairs } = await readPairs();
 * const report = await lastValueFrom(features$.pipe(kFoldVerify(pairs)));
 * console.log(report.folds.map((f) => f.accuracy), report.mean);
 * ```
 */
export function kFoldVerify(
  pairs: readonly VerificationPair[],
  options: KFoldVerifyOptions = {},
): OperatorFunction<Maybe<Feature>, VerificationReport> {
  const plan = planPairs(pairs);
  const decoded = decodeOptions(options);

  return (source) =>
    defer(() => {
      const features = new Map<string, Float32Array>();
      const rejections = new Map<string, Rejected>();

      const collect = (value: Maybe<Feature>): void => {
        if (isRejected(value)) {
          rejections.set(value.id, value);
          return;
        }
        if (features.has(value.id)) {
          throw new Error(`kFoldVerify: a second feature arrived for ${value.id}. Expected one per image`);
        }
        features.set(value.id, value.vector);
      };

      return concat(
        source.pipe(tap(collect), ignoreElements()),
        defer(() => of(verifyPlan(plan, features, decoded, rejections).report)),
      );
    });
}
