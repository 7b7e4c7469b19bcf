import t, { type Test } from 'tap';
import { from, lastValueFrom, Subject, toArray } from 'rxjs';
import { kFoldVerify, verifyFolds, verifyFoldsWithScores, type VerificationPair, type VerificationReport } from '../operators/kFoldVerify.ts';
import { reject, type Feature, type Maybe } from '../operators/records.ts';

const pair = (fold: number, same: boolean, left: string, right: string): VerificationPair => ({
  fold,
  same,
  left: { id: left },
  right: { id: right },
});

const feature = (id: string, values: readonly number[]): Feature => ({ id, path: `/faces/${id}`, vector: Float32Array.from(values) });

const close = (t: Test, actual: number, expected: number, message: string, tolerance = 1e-12): void => {
  t.ok(Math.abs(actual - expected) <= tolerance, `${message}: ${actual} vs ${expected}`);
};

// ---------------------------------------------------------------------------------------------
// (a) A case worked out by hand
// ---------------------------------------------------------------------------------------------

/**
 * 10 folds of one same-person and one different-person pair, 2-d features.
 *
 * Folds 0–8: same A=(3,4), B=(5,12); different C=(−8,0), D=(0,−16). Their sum is (0,0).
 * Fold 9:    same E=(10,5), F=(10,−4); different G=(8,3), H=(8,−4). Their sum is (36,0).
 *
 * Test fold 10 (index 9): μ = sum of folds 0–8 / 36 = (0,0).
 *   Training scores: same cos(A,B) = 63/65 = 0.96923, different cos(C,D) = 0 (as −0).
 *   All 18 correct for 0 < t < 0.96923, so k = 1 … 9692 tie and the threshold is
 *   mean(k)/10000 = 4846.5/10000 = 0.48465.
 *   Test: cos(E,F) = 80/√14500 = 0.66436 > 0.48465 (correct), cos(G,H) = 52/√5840 = 0.68045,
 *   not < 0.48465 (wrong), so 1 of 2.
 * Test fold f in 1 … 9: μ = (36,0)/36 = (1,0).
 *   A−μ=(2,4), B−μ=(4,12): 56/√3200 = 0.98995.   C−μ=(−9,0), D−μ=(−1,−16): 1/√257 = 0.06238.
 *   E−μ=(9,5), F−μ=(9,−4): 61/√10282 = 0.60158.  G−μ=(7,3), H−μ=(7,−4): 37/√3770 = 0.60260.
 *   Training = 8 ordinary folds + fold 9: same {0.98995 ×8, 0.60158}, different {0.06238 ×8, 0.60260}.
 *   17 of 18 are correct on two separate ranges: 0.06238 < t < 0.60158 (k = 624 … 6015, 5392
 *   values, sum 17,898,744) and 0.60260 < t < 0.98995 (k = 6027 … 9899, 3873 values, sum
 *   30,840,699). Between them 16 of 18 are correct. Threshold = 48,739,443 / 9265 / 10000 = 0.52606.
 *   Test: 0.98995 > t and 0.06238 < t, so 2 of 2.
 * Mean accuracy = (9 × 1 + 0.5)/10 = 0.95; sample std = √((9 × 0.05² + 0.45²)/9) = √0.025.
 */
function handCase(): { pairs: VerificationPair[]; features: Map<string, Float32Array> } {
  const pairs: VerificationPair[] = [];
  const features = new Map<string, Float32Array>();
  const add = (id: string, v: readonly number[]): string => {
    features.set(id, Float32Array.from(v));
    return id;
  };

  for (let f = 0; f < 9; f++) {
    pairs.push(pair(f, true, add(`f${f}/A`, [3, 4]), add(`f${f}/B`, [5, 12])));
    pairs.push(pair(f, false, add(`f${f}/C`, [-8, 0]), add(`f${f}/D`, [0, -16])));
  }
  pairs.push(pair(9, true, add('f9/E', [10, 5]), add('f9/F', [10, -4])));
  pairs.push(pair(9, false, add('f9/G', [8, 3]), add('f9/H', [8, -4])));
  return { pairs, features };
}

t.test('hand case: thresholds, ties and accuracies', async (t) => {
  const { pairs, features } = handCase();
  const report = verifyFolds(pairs, features);

  t.equal(report.folds.length, 10);
  for (const fold of report.folds.slice(0, 9)) {
    close(t, fold.threshold, 48_739_443 / 9265 / 10000, `fold ${fold.fold} threshold`);
    t.equal(fold.tiedThresholds, 9265, `fold ${fold.fold} tie count spans two ranges`);
    close(t, fold.trainAccuracy, 17 / 18, `fold ${fold.fold} training accuracy`);
    t.same([fold.correct, fold.total, fold.accuracy], [2, 2, 1], `fold ${fold.fold} test result`);
  }

  const last = report.folds[9]!;
  t.equal(last.fold, 10);
  close(t, last.threshold, 0.48465, 'fold 10 threshold');
  t.equal(last.tiedThresholds, 9692);
  t.equal(last.trainAccuracy, 1);
  t.same([last.correct, last.total, last.accuracy], [1, 2, 0.5]);

  close(t, report.mean, 0.95, 'mean');
  close(t, report.std, Math.sqrt(0.025), 'sample std');
  t.same([report.correct, report.total, report.dimension, report.subtractMean], [19, 20, 2, true]);
});

t.test('hand case: pair scores of each fold', async (t) => {
  const { pairs, features } = handCase();
  const { report, testScores, scoresByFold } = verifyFoldsWithScores(pairs, features);

  t.same(report, verifyFolds(pairs, features), 'same report as verifyFolds');
  t.equal(testScores.length, pairs.length);
  t.equal(scoresByFold.length, 10);

  // Pairs 0 … 17 are folds 0–8 (same, different), tested with μ = (1, 0); pairs 18, 19 are fold 9, tested with μ = (0, 0).
  for (let p = 0; p < 18; p += 2) {
    close(t, testScores[p]!, 56 / Math.sqrt(3200), `pair ${p} (same) test score`);
    close(t, testScores[p + 1]!, 1 / Math.sqrt(257), `pair ${p + 1} (different) test score`);
  }
  close(t, testScores[18]!, 80 / Math.sqrt(14500), 'pair 18 (same, fold 10) test score');
  close(t, testScores[19]!, 52 / Math.sqrt(5840), 'pair 19 (different, fold 10) test score');

  // With fold 10 held out, μ = (0, 0): the ordinary folds score cos(A,B) = 63/65 and cos(C,D) = 0.
  close(t, scoresByFold[9]![0]!, 63 / 65, 'fold 10 array, pair 0');
  close(t, scoresByFold[9]![1]!, 0, 'fold 10 array, pair 1');
  close(t, scoresByFold[0]![18]!, 61 / Math.sqrt(10282), 'fold 1 array, pair 18');
  pairs.forEach((pair, p) => t.equal(testScores[p], scoresByFold[pair.fold]![p], `pair ${p}: test score is its fold's entry`));
});

t.test('hand case without mean subtraction', async (t) => {
  // With μ = 0 in every fold, the training scores of test fold f ≤ 9 are: same {0.96923 ×8,
  // 0.66436}, different {0 ×8, 0.68045}. 17 of 18 are correct for 0 < t < 0.66436
  // (k = 1 … 6643, sum 22,068,046) and for 0.68045 < t < 0.96923 (k = 6805 … 9692, 2888 values,
  // sum 23,821,668). Threshold = 45,889,714 / 9531 / 10000 = 0.48148.
  const { pairs, features } = handCase();
  const report = verifyFolds(pairs, features, { subtractMean: false });

  const fold1 = report.folds[0]!;
  t.equal(fold1.tiedThresholds, 9531);
  close(t, fold1.threshold, 45_889_714 / 9531 / 10000, 'fold 1 threshold');
  t.equal(fold1.correct, 2);
  t.equal(report.folds[9]!.correct, 1);
  close(t, report.folds[9]!.threshold, 0.48465, 'fold 10 threshold is unchanged, because its μ was 0');
  t.equal(report.subtractMean, false);
});

// ---------------------------------------------------------------------------------------------
// (b) Strict comparisons
// ---------------------------------------------------------------------------------------------

t.test('score equal to threshold is wrong both ways', async (t) => {
  // Folds 0–8: same pairs at cosine +0.6 and different pairs at −0.6, built from (1,0), (3,4)
  // and (−3,4) and their negations, so each fold's features sum to zero and μ = 0 exactly.
  // Fold 9: a same pair and a different pair of orthogonal vectors, cosine exactly 0.
  // Test fold 10: 18 of 18 training pairs are correct for −0.6 < t < 0.6, that is
  // k = −5999 … 5999, whose mean is exactly 0. Both test scores equal the threshold 0, so a strict
  // comparison counts both wrong. With `>=`/`<=`, one of the two would count as correct.
  const pairs: VerificationPair[] = [];
  const features = new Map<string, Float32Array>();
  const add = (id: string, v: readonly number[]): string => {
    features.set(id, Float32Array.from(v));
    return id;
  };
  for (let f = 0; f < 9; f++) {
    pairs.push(pair(f, true, add(`f${f}/s1`, [1, 0]), add(`f${f}/s2`, [3, 4])));
    pairs.push(pair(f, true, add(`f${f}/s3`, [-1, 0]), add(`f${f}/s4`, [-3, -4])));
    pairs.push(pair(f, false, add(`f${f}/d1`, [1, 0]), add(`f${f}/d2`, [-3, 4])));
    pairs.push(pair(f, false, add(`f${f}/d3`, [-1, 0]), add(`f${f}/d4`, [3, -4])));
  }
  pairs.push(pair(9, true, add('f9/s1', [1, 0]), add('f9/s2', [0, 1])));
  pairs.push(pair(9, true, add('f9/s3', [-1, 0]), add('f9/s4', [0, -1])));
  pairs.push(pair(9, false, add('f9/d1', [0, 1]), add('f9/d2', [1, 0])));
  pairs.push(pair(9, false, add('f9/d3', [0, -1]), add('f9/d4', [-1, 0])));

  for (const subtractMean of [true, false]) {
    const report = verifyFolds(pairs, features, { subtractMean });
    const last = report.folds[9]!;
    t.equal(last.threshold, 0, `subtractMean ${subtractMean}: threshold is exactly 0`);
    t.equal(last.tiedThresholds, 11999, `subtractMean ${subtractMean}: k = −5999 … 5999 tie`);
    t.same([last.correct, last.total], [0, 4], `subtractMean ${subtractMean}: scores at the threshold are wrong`);

    // Folds 1–9: fold 9 in training makes t < 0 and t > 0 equally good (17 of 18 per side of 0
    // within ±0.6), but t = 0 itself loses both orthogonal pairs, so k = 0 is not in the tie set.
    const first = report.folds[0]!;
    t.equal(first.tiedThresholds, 11998, `subtractMean ${subtractMean}: k = 0 is excluded`);
    t.equal(first.threshold, 0);
    t.same([first.correct, first.total], [4, 4]);
  }
});

// ---------------------------------------------------------------------------------------------
// (c) Against a brute-force implementation
// ---------------------------------------------------------------------------------------------

/** Mulberry32: a small seeded generator, so the random case is the same on every run. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface NaiveFold {
  threshold: number;
  correct: number;
  total: number;
}

/**
 * Runs the protocol as plainly as possible: every pair normalises its own copies of its two
 * features, and every one of the 20001 thresholds is tested against every training pair.
 */
function naiveVerify(pairs: readonly VerificationPair[], features: Map<string, Float32Array>, subtractMean: boolean): NaiveFold[] {
  const folds = Math.max(...pairs.map((p) => p.fold)) + 1;
  const dimension = features.values().next().value!.length;
  const out: NaiveFold[] = [];

  for (let testFold = 0; testFold < folds; testFold++) {
    const training = pairs.filter((p) => p.fold !== testFold);
    const testing = pairs.filter((p) => p.fold === testFold);

    const mu: number[] = new Array<number>(dimension).fill(0);
    if (subtractMean) {
      for (const p of training) {
        for (let d = 0; d < dimension; d++) mu[d]! += features.get(p.left.id)![d]!;
        for (let d = 0; d < dimension; d++) mu[d]! += features.get(p.right.id)![d]!;
      }
      for (let d = 0; d < dimension; d++) mu[d]! /= 2 * training.length;
    }

    const unit = (id: string): number[] => {
      const centred = Array.from(features.get(id)!, (x, d) => x - mu[d]!);
      let squares = 0;
      for (const x of centred) squares += x * x;
      const norm = Math.sqrt(squares);
      return centred.map((x) => x / norm);
    };
    const score = (p: VerificationPair): number => {
      const a = unit(p.left.id);
      const b = unit(p.right.id);
      let dot = 0;
      for (let d = 0; d < dimension; d++) dot += a[d]! * b[d]!;
      return dot;
    };
    const isCorrect = (p: VerificationPair, s: number, threshold: number): boolean => (p.same ? s > threshold : s < threshold);

    const trainingScores = training.map(score);
    const thresholds: number[] = [];
    const accuracies: number[] = [];
    for (let k = -10000; k <= 10000; k++) {
      const threshold = k / 10000;
      let correct = 0;
      training.forEach((p, i) => {
        if (isCorrect(p, trainingScores[i]!, threshold)) correct++;
      });
      thresholds.push(threshold);
      accuracies.push(correct / training.length);
    }
    const best = Math.max(...accuracies);
    const tied = thresholds.filter((_, i) => accuracies[i] === best);
    const threshold = tied.reduce((a, b) => a + b, 0) / tied.length;

    const correct = testing.filter((p) => isCorrect(p, score(p), threshold)).length;
    out.push({ threshold, correct, total: testing.length });
  }
  return out;
}

/**
 * 10 folds × (30 same + 30 different) pairs over 200 people with 4 images each. Images repeat
 * across pairs, which checks that μ counts each use of an image. `quantised` draws every feature
 * value from {−1, +1}, so with subtractMean false every score is −1, −0.5, 0, 0.5 or 1, exactly on
 * the grid.
 */
function randomCase(seed: number, dimension: number, quantised: boolean) {
  const next = random(seed);
  const people = 200;
  const imagesPerPerson = 4;
  const features = new Map<string, Float32Array>();

  for (let person = 0; person < people; person++) {
    const base = Array.from({ length: dimension }, () => next() - 0.5);
    for (let image = 0; image < imagesPerPerson; image++) {
      const noisy = (b: number): number => b + 0.7 * (next() - 0.5) + 0.2;
      const sign = (): number => (next() < 0.5 ? -1 : 1);
      const values = quantised ? base.map(sign) : base.map(noisy);
      features.set(`p${person}/i${image}`, Float32Array.from(values));
    }
  }

  const pick = (n: number): number => Math.floor(next() * n);
  const pairs: VerificationPair[] = [];
  for (let fold = 0; fold < 10; fold++) {
    for (let i = 0; i < 30; i++) {
      const person = pick(people);
      const first = pick(imagesPerPerson);
      const second = (first + 1 + pick(imagesPerPerson - 1)) % imagesPerPerson;
      pairs.push(pair(fold, true, `p${person}/i${first}`, `p${person}/i${second}`));
    }
    for (let i = 0; i < 30; i++) {
      const person = pick(people);
      const other = (person + 1 + pick(people - 1)) % people;
      pairs.push(pair(fold, false, `p${person}/i${pick(imagesPerPerson)}`, `p${other}/i${pick(imagesPerPerson)}`));
    }
  }
  return { pairs, features };
}

t.test('matches brute force on random features', async (t) => {
  const cases = [
    { name: 'continuous, mean subtracted', seed: 7, dimension: 16, quantised: false, subtractMean: true },
    { name: 'continuous, raw', seed: 11, dimension: 16, quantised: false, subtractMean: false },
    { name: 'quantised, raw', seed: 13, dimension: 4, quantised: true, subtractMean: false },
  ];

  for (const c of cases) {
    const { pairs, features } = randomCase(c.seed, c.dimension, c.quantised);
    const usesPerImage = new Map<string, number>();
    for (const p of pairs) for (const id of [p.left.id, p.right.id]) usesPerImage.set(id, (usesPerImage.get(id) ?? 0) + 1);
    t.ok([...usesPerImage.values()].some((n) => n > 1), `${c.name}: some images are used by several pairs`);

    const report = verifyFolds(pairs, features, { subtractMean: c.subtractMean });
    const expected = naiveVerify(pairs, features, c.subtractMean);

    for (let f = 0; f < 10; f++) {
      const fold = report.folds[f]!;
      close(t, fold.threshold, expected[f]!.threshold, `${c.name}: fold ${f + 1} threshold`);
      t.equal(fold.correct, expected[f]!.correct, `${c.name}: fold ${f + 1} correct`);
      close(t, fold.accuracy, expected[f]!.correct / expected[f]!.total, `${c.name}: fold ${f + 1} accuracy`);
    }
    const accuracies = expected.map((e) => e.correct / e.total);
    const mean = accuracies.reduce((a, b) => a + b, 0) / 10;
    close(t, report.mean, mean, `${c.name}: mean`);
    close(t, report.std, Math.sqrt(accuracies.reduce((a, b) => a + (b - mean) ** 2, 0) / 9), `${c.name}: std`);
    t.ok(report.mean > 0.5 && report.mean < 1, `${c.name}: accuracy ${report.mean} is neither chance nor perfect`);
  }
});

// ---------------------------------------------------------------------------------------------
// (d) and (e) The operator
// ---------------------------------------------------------------------------------------------

const featureList = (features: Map<string, Float32Array>): Feature[] =>
  [...features].map(([id, vector]) => ({ id, path: `/faces/${id}`, vector }));

t.test('operator emits one report on completion', async (t) => {
  const { pairs, features } = handCase();
  const source = new Subject<Maybe<Feature>>();
  const emitted: VerificationReport[] = [];
  let completed = false;
  source.pipe(kFoldVerify(pairs)).subscribe({
    next: (report) => emitted.push(report),
    complete: () => (completed = true),
  });

  for (const f of featureList(features)) source.next(f);
  source.next(feature('unused/image', [1, 1]));
  t.equal(emitted.length, 0, 'nothing before the source completes');

  source.complete();
  t.equal(emitted.length, 1, 'exactly one report');
  t.ok(completed, 'completes after the report');
  t.same(emitted[0], verifyFolds(pairs, features), 'the report equals verifyFolds');
});

t.test('operator ignores feature order', async (t) => {
  const { pairs, features } = randomCase(3, 8, false);
  const list = featureList(features);
  const shuffled = [...list];
  const next = random(99);
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
  }
  t.not(shuffled[0]!.id, list[0]!.id, 'the order differs');

  const inOrder = await lastValueFrom(from(list).pipe(kFoldVerify(pairs), toArray()));
  const outOfOrder = await lastValueFrom(from(shuffled).pipe(kFoldVerify(pairs), toArray()));
  t.equal(outOfOrder.length, 1);
  t.same(outOfOrder, inOrder);
});

t.test('operator can be subscribed twice', async (t) => {
  const { pairs, features } = handCase();
  const verify = from(featureList(features)).pipe(kFoldVerify(pairs));
  const first = await lastValueFrom(verify);
  const second = await lastValueFrom(verify);
  t.same(second, first);
});

t.test('missing feature errors the stream', async (t) => {
  const { pairs, features } = handCase();
  const without = featureList(features).filter((f) => f.id !== 'f3/C');

  await t.rejects(lastValueFrom(from(without).pipe(kFoldVerify(pairs))), {
    message: /no feature for 1 of the 40 images that the pairs use: f3\/C \(first used by pair 7\)/,
  });

  const rejected = reject({ id: 'f3/C', path: '/faces/f3/C' }, 'detectFaces', 'no face found');
  await t.rejects(lastValueFrom(from<Maybe<Feature>[]>([...without, rejected]).pipe(kFoldVerify(pairs))), {
    message: /f3\/C \(first used by pair 7, rejected by detectFaces: no face found\)/,
  });

  await t.rejects(lastValueFrom(from<Feature[]>([]).pipe(kFoldVerify(pairs))), {
    message: /no feature for 40 of the 40 images.*f0\/A .*, … and 30 more/,
  });
});

t.test('source error passes through', async (t) => {
  const { pairs } = handCase();
  const source = new Subject<Feature>();
  const result = lastValueFrom(source.pipe(kFoldVerify(pairs)));
  source.error(new Error('disk failed'));
  await t.rejects(result, { message: 'disk failed' });
});

t.test('bad features error the stream', async (t) => {
  const { pairs, features } = handCase();
  const list = featureList(features);
  const run = (items: Feature[]) => lastValueFrom(from(items).pipe(kFoldVerify(pairs)));

  await t.rejects(run([...list, list[0]!]), { message: /second feature arrived for f0\/A/ });
  await t.rejects(run(list.map((f) => (f.id === 'f2/B' ? feature('f2/B', [1, 2, 3]) : f))), {
    message: /feature of f2\/B has length 3. Expected 2/,
  });
  await t.rejects(run(list.map((f) => (f.id === 'f2/B' ? feature('f2/B', [1, Number.NaN]) : f))), {
    message: /feature of f2\/B has the non-finite value NaN at index 1/,
  });
  await t.rejects(run(list.map((f) => (f.id === 'f9/E' ? feature('f9/E', [0, 0]) : f))), {
    message: /feature of f9\/E equals the mean of the training pairs when fold 10 is the test fold/,
  });
});

t.test('invalid pairs and options throw at once', async (t) => {
  const { pairs } = handCase();
  t.throws(() => kFoldVerify([]), { message: /pair list is empty/ });
  t.throws(() => kFoldVerify(pairs.map((p) => ({ ...p, fold: 0 }))), { message: /at least 2 folds/ });
  t.throws(() => kFoldVerify(pairs.map((p) => ({ ...p, fold: p.fold === 4 ? 10 : p.fold }))), {
    message: /fold\(s\) 4 have no pairs/,
  });
  t.throws(() => kFoldVerify([pair(0, true, 'a', 'b'), pair(1.5, false, 'a', 'c')]), { message: /pair 1 has fold 1.5/ });
  t.throws(() => kFoldVerify(pairs, { subtractMean: 'yes' } as never), { name: 'TypeError', message: /subtractMean/ });
  t.throws(() => kFoldVerify(pairs, { substractMean: false } as never), { name: 'TypeError', message: /substractMean/ });
});
