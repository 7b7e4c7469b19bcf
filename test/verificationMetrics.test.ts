import t, { type Test } from 'tap';
import { equalErrorRate, rocCurve, valAtFar, type FoldedScores } from '../lib/verificationMetrics.ts';

const close = (t: Test, actual: number | undefined, expected: number, message: string, tolerance = 1e-12): void => {
  t.ok(actual !== undefined && Math.abs(actual - expected) <= tolerance, `${message}: ${actual} vs ${expected}`);
};

/** Joins same-person and different-person scores into the `same` and `scores` arrays. */
function scored(same: readonly number[], different: readonly number[]): { same: boolean[]; scores: number[] } {
  return {
    same: [...same.map(() => true), ...different.map(() => false)],
    scores: [...same, ...different],
  };
}

// ---------------------------------------------------------------------------------------------
// ROC and EER
// ---------------------------------------------------------------------------------------------

/**
 * 5 same {0.9, 0.8, 0.7, 0.4, 0.3} and 5 different {0.6, 0.5, 0.2, 0.1, 0.0}. From the top,
 * the accepted scores give (FAR, TAR):
 *   none (0, 0), 0.9 (0, .2), 0.8 (0, .4), 0.7 (0, .6), 0.6 (.2, .6), 0.5 (.4, .6),
 *   0.4 (.4, .8), 0.3 (.4, 1), 0.2 (.6, 1), 0.1 (.8, 1), 0.0 (1, 1).
 * FAR − FRR is −.2 at 0.6 and exactly 0 at 0.5 (FAR = FRR = 0.4), so EER = 0.4 at threshold 0.5.
 */
const EVEN = scored([0.9, 0.8, 0.7, 0.4, 0.3], [0.6, 0.5, 0.2, 0.1, 0.0]);

/**
 * 4 same {0.9, 0.8, 0.5, 0.2} and 6 different {0.7, 0.6, 0.4, 0.3, 0.1, 0.0}.
 * At 0.6: FAR = 2/6, TAR = 2/4, so FAR − FRR = 1/3 − 1/2 = −1/6.
 * At 0.5: FAR = 2/6, TAR = 3/4, so FAR − FRR = 1/3 − 1/4 = +1/12.
 * The sign changes on that segment at α = (1/6) / (1/6 + 1/12) = 2/3, where FAR = 1/3 and
 * FRR = 1/2 + 2/3 · (1/4 − 1/2) = 1/3. EER = 1/3 at threshold 0.6 + 2/3 · (0.5 − 0.6) = 0.5333….
 */
const UNEVEN = scored([0.9, 0.8, 0.5, 0.2], [0.7, 0.6, 0.4, 0.3, 0.1, 0.0]);

t.test('rocCurve on ten hand-sorted scores', async (t) => {
  const points = rocCurve(EVEN);
  t.same(
    points.map((p) => [p.threshold, p.far, p.tar]),
    [
      [0.9, 0, 0],
      [0.9, 0, 0.2],
      [0.8, 0, 0.4],
      [0.7, 0, 0.6],
      [0.6, 0.2, 0.6],
      [0.5, 0.4, 0.6],
      [0.4, 0.4, 0.8],
      [0.3, 0.4, 1],
      [0.2, 0.6, 1],
      [0.1, 0.8, 1],
      [0.0, 1, 1],
    ],
  );
});

t.test('rocCurve joins tied scores into one point', async (t) => {
  const points = rocCurve(scored([0.7, 0.5, 0.5], [0.5, 0.2]));
  t.same(
    points.map((p) => [p.threshold, p.far, p.tar]),
    [
      [0.7, 0, 0],
      [0.7, 0, 1 / 3],
      [0.5, 0.5, 1],
      [0.2, 1, 1],
    ],
  );
});

t.test('equalErrorRate at an exact ROC point', async (t) => {
  const eer = equalErrorRate(EVEN);
  close(t, eer.rate, 0.4, 'rate');
  close(t, eer.threshold, 0.5, 'threshold');
});

t.test('equalErrorRate interpolated on a segment', async (t) => {
  const eer = equalErrorRate(UNEVEN);
  close(t, eer.rate, 1 / 3, 'rate');
  close(t, eer.threshold, 0.6 - 0.2 / 3, 'threshold');
});

t.test('equalErrorRate with every score tied', async (t) => {
  // ROC (0, 0) then (1, 1): FAR − FRR goes from −1 to +1, so α = 1/2 and FAR = FRR = 0.5.
  const eer = equalErrorRate(scored([0.3, 0.3, 0.3], [0.3, 0.3]));
  close(t, eer.rate, 0.5, 'rate');
  close(t, eer.threshold, 0.3, 'threshold');
});

t.test('equalErrorRate of separated scores is 0', async (t) => {
  // Accepting 0.8 and 0.6 gives FAR 0 and FRR 0 at once.
  const eer = equalErrorRate(scored([0.8, 0.6], [0.1, -0.4]));
  close(t, eer.rate, 0, 'rate');
  close(t, eer.threshold, 0.6, 'threshold');
});

t.test('ROC and EER reject unusable input', async (t) => {
  t.throws(() => rocCurve(scored([0.5, 0.4], [])), /0 different-person pairs/);
  t.throws(() => equalErrorRate(scored([], [0.5])), /0 same-person/);
  t.throws(() => rocCurve({ same: [true, false], scores: [0.5] }), /1 scores for 2 pairs/);
  t.throws(() => rocCurve({ same: [true, false], scores: [0.5, Number.NaN] }), /score of pair 1 is NaN/);
});

// ---------------------------------------------------------------------------------------------
// VAL@FAR
// ---------------------------------------------------------------------------------------------

/** Grid 0, 0.1, …, 1. */
const TENTHS = Array.from({ length: 11 }, (_, k) => k / 10);

/**
 * Two folds of 4 same and 4 different pairs, scored alike for both test folds.
 *   fold A (index 0): same {0.95, 0.75, 0.55, 0.25}, different {0.65, 0.45, 0.35, 0.15}
 *   fold B (index 1): same {0.85, 0.62, 0.49, 0.12}, different {0.72, 0.52, 0.32, 0.05}
 */
function twoFolds(shiftForFoldB = 0): FoldedScores {
  const a = scored([0.95, 0.75, 0.55, 0.25], [0.65, 0.45, 0.35, 0.15]);
  const b = scored([0.85, 0.62, 0.49, 0.12], [0.72, 0.52, 0.32, 0.05]);
  const scores = [...a.scores, ...b.scores];
  return {
    same: [...a.same, ...b.same],
    fold: [...a.same.map(() => 0), ...b.same.map(() => 1)],
    scoresByFold: [scores, scores.map((s) => s - shiftForFoldB)],
  };
}

t.test('valAtFar interpolates the training FAR', async (t) => {
  // Test A, train B: FAR(0.3) = 3/4, FAR(0.4) = FAR(0.5) = 2/4, FAR(0.6) = 1/4.
  //   0.3 is first crossed between 0.5 and 0.6: t = 0.5 + (0.3 − 0.5)/(0.25 − 0.5) · 0.1 = 0.58.
  //   Test A accepts same 0.95, 0.75 (VAL 2/4) and different 0.65 (FAR 1/4).
  // Test B, train A: FAR(0.4) = 2/4, FAR(0.5) = 1/4, so t = 0.4 + 0.8 · 0.1 = 0.48.
  //   Test B accepts same 0.85, 0.62, 0.49 (VAL 3/4) and different 0.72, 0.52 (FAR 2/4).
  const result = valAtFar(twoFolds(), 0.3, { thresholds: TENTHS });
  close(t, result.folds[0]?.threshold, 0.58, 'fold 1 threshold');
  close(t, result.folds[1]?.threshold, 0.48, 'fold 2 threshold');
  t.same(result.folds.map((f) => [f.fold, f.val, f.far]), [[1, 0.5, 0.25], [2, 0.75, 0.5]]);
  close(t, result.val, 0.625, 'mean VAL');
  close(t, result.valStd, 0.125, 'population std of VAL');
  close(t, result.far, 0.375, 'mean FAR');
  t.equal(result.targetFar, 0.3);
});

t.test('valAtFar takes a grid value whose FAR equals the target', async (t) => {
  // FAR = 1/4 exactly at 0.6 (train B) and at 0.5 (train A).
  // Test A at 0.6: VAL 2/4, FAR 1/4. Test B at 0.5: same 0.85, 0.62 (VAL 2/4), different 0.72, 0.52 (FAR 2/4).
  const result = valAtFar(twoFolds(), 0.25, { thresholds: TENTHS });
  t.same(result.folds.map((f) => [f.threshold, f.val, f.far]), [[0.6, 0.5, 0.25], [0.5, 0.5, 0.5]]);
  t.equal(result.valStd, 0);
  close(t, result.far, 0.375, 'mean FAR');
});

t.test('valAtFar scores each fold with its own array', async (t) => {
  // Fold B's array is every score minus 0.05. Train A becomes different {0.60, 0.40, 0.30, 0.10}:
  // FAR(0.3) = 2/4, FAR(0.4) = 1/4, so t = 0.3 + 0.8 · 0.1 = 0.38. Test B becomes same
  // {0.80, 0.57, 0.44, 0.07} (3 above) and different {0.67, 0.47, 0.27, 0.00} (2 above).
  const result = valAtFar(twoFolds(0.05), 0.3, { thresholds: TENTHS });
  close(t, result.folds[0]?.threshold, 0.58, 'fold 1 threshold, unchanged');
  close(t, result.folds[1]?.threshold, 0.38, 'fold 2 threshold from the shifted array');
  t.same(result.folds.map((f) => [f.val, f.far]), [[0.5, 0.25], [0.75, 0.5]]);
});

t.test('valAtFar counts a score equal to the threshold as rejected', async (t) => {
  // Training different scores sit on grid value 0.5: FAR(0) = 1, FAR(0.5) = 0, since 0.5 > 0.5
  // is false. Target 0.5 is crossed halfway: t = 0.25. Test: same 0.25 (equal, rejected) and
  // 0.3 (accepted), different 0.25 (rejected) and 0.2 (rejected).
  const scores = [0.5, 0.5, 0.7, 0.1, 0.25, 0.3, 0.25, 0.2];
  const result = valAtFar(
    { same: [false, false, true, true, true, true, false, false], fold: [0, 0, 0, 0, 1, 1, 1, 1], scoresByFold: [scores, scores] },
    0.5,
    { thresholds: [0, 0.5, 1] },
  );
  close(t, result.folds[1]?.threshold, 0.25, 'fold 2 threshold');
  t.equal(result.folds[1]?.val, 0.5, 'fold 2 VAL');
  t.equal(result.folds[1]?.far, 0, 'fold 2 FAR');
});

t.test('valAtFar with no different pair above any threshold', async (t) => {
  // Every different-person score is −1, so with strict comparison FAR is 0 on the whole default
  // grid −1 … 1. A target of 1e-3 is never reached: each fold accepts nothing, as facenet does.
  const folds = [0, 0, 1, 1, 2, 2];
  const same = [true, false, true, false, true, false];
  const scores = [0.8, -1, 0.6, -1, 0.9, -1];
  const result = valAtFar({ same, fold: folds, scoresByFold: [scores, scores, scores] }, 1e-3);
  t.same(result.folds.map((f) => [f.threshold, f.val, f.far]), [[undefined, 0, 0], [undefined, 0, 0], [undefined, 0, 0]]);
  t.equal(result.val, 0);

  // A target of 0 is reached at the lowest grid value, −1, which accepts every same-person pair.
  const zero = valAtFar({ same, fold: folds, scoresByFold: [scores, scores, scores] }, 0);
  t.same(zero.folds.map((f) => [f.threshold, f.val, f.far]), [[-1, 1, 0], [-1, 1, 0], [-1, 1, 0]]);
});

t.test('valAtFar keeps the top grid value when FAR stays above the target', async (t) => {
  // Different scores of 1.5 lie above the whole grid, so FAR is 1 everywhere and the threshold
  // is the top grid value 1. The test same score 1.2 is still accepted.
  const scores = [1.2, 1.5, 1.2, 1.5];
  const result = valAtFar({ same: [true, false, true, false], fold: [0, 0, 1, 1], scoresByFold: [scores, scores] }, 0.1, { thresholds: TENTHS });
  t.same(result.folds.map((f) => [f.threshold, f.val, f.far]), [[1, 1, 1], [1, 1, 1]]);
});

t.test('valAtFar rejects unusable input', async (t) => {
  const good = twoFolds();
  t.throws(() => valAtFar(good, 1.5), /target FAR 1.5 is invalid/);
  t.throws(() => valAtFar(good, 0.1, { thresholds: [0, 0.5, 0.5] }), /grid value 2 is 0.5/);
  t.throws(() => valAtFar({ ...good, fold: Array.from(good.fold, () => 0) }, 0.1), /form 1 fold/);
  t.throws(() => valAtFar({ ...good, scoresByFold: [good.scoresByFold[0]!] }, 0.1), /1 score arrays for 2 folds/);
  t.throws(() => valAtFar({ ...good, fold: [1.5, ...Array.from(good.fold).slice(1)] }, 0.1), /pair 0 has fold 1.5/);
  // Fold B without a different-person pair: the training FAR of test fold A is undefined.
  const same = Array.from(good.same).map((s, p) => (p >= 8 ? true : s));
  t.throws(() => valAtFar({ ...good, same }, 0.1), /training folds of fold 1 have no different-person pair/);
  // A third fold of two same-person pairs: the FAR of that test fold is undefined.
  const third = [0.9, 0.8];
  t.throws(
    () =>
      valAtFar(
        {
          same: [...Array.from(good.same), true, true],
          fold: [...Array.from(good.fold), 2, 2],
          scoresByFold: [0, 1, 2].map(() => [...Array.from(good.scoresByFold[0]!), ...third]),
        },
        0.1,
      ),
    /test fold 3 has 2 same-person and 0 different-person pairs/,
  );
});
