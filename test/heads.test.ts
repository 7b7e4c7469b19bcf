import t, { type Test } from 'tap';
import * as tf from '@tensorflow/tfjs-core';

import { initBackend } from '../model/backend.ts';
import {
  CLASS_WEIGHT_NAME,
  createHead,
  lambdaAt,
  normalizeColumns,
  psi,
  rowNorms,
  SPHEREFACE_LAMBDA,
  type ClassifierHead,
  type HeadOptions,
} from '../model/heads.ts';
import { uniformGenerator } from '../lib/random.ts';

type Matrix = number[][];
type Margin = 1 | 2 | 3 | 4;

// ---------------------------------------------------------------------------------------------
// Independent float64 references. ψ and the ArcFace logit go through acos here, while the head
// uses Chebyshev polynomials and √(1 − cos²θ), so the two share no formula.
// ---------------------------------------------------------------------------------------------

/** ψ(θ) = (−1)^k·cos(mθ) − 2k with k = ⌊mθ/π⌋, from the angle. */
function psiFromAngle(theta: number, m: number): number {
  const k = Math.floor((m * theta) / Math.PI);
  return (k % 2 === 0 ? 1 : -1) * Math.cos(m * theta) - 2 * k;
}

const clampUnit = (c: number): number => Math.min(1, Math.max(-1, c));
const norm = (v: readonly number[]): number => Math.sqrt(v.reduce((s, a) => s + a * a, 0));
const column = (w: Matrix, j: number): number[] => w.map((row) => row[j] ?? Number.NaN);
const dotProduct = (a: readonly number[], b: readonly number[]): number => a.reduce((s, v, i) => s + v * (b[i] ?? Number.NaN), 0);

/** Columns of `w` [D][C] as unit vectors, one array per class. */
function unitColumns(w: Matrix): number[][] {
  const classes = w[0]?.length ?? 0;
  return Array.from({ length: classes }, (_, j) => {
    const c = column(w, j);
    const length = norm(c);
    return c.map((v) => v / length);
  });
}

function asoftmaxLogits(x: Matrix, w: Matrix, labels: readonly number[], m: Margin, lambda: number): Matrix {
  const classes = unitColumns(w);
  return x.map((row, i) => {
    const rowNorm = norm(row);
    return classes.map((wj, j) => {
      const dot = dotProduct(row, wj);
      if (m === 1 || j !== labels[i]) return dot;
      const theta = Math.acos(clampUnit(dot / rowNorm));
      return (lambda * dot + rowNorm * psiFromAngle(theta, m)) / (1 + lambda);
    });
  });
}

function cosineMatrix(x: Matrix, w: Matrix): Matrix {
  const classes = unitColumns(w);
  return x.map((row) => classes.map((wj) => dotProduct(row, wj) / norm(row)));
}

function cosFaceLogits(x: Matrix, w: Matrix, labels: readonly number[], scale: number, margin: number): Matrix {
  return cosineMatrix(x, w).map((row, i) => row.map((c, j) => scale * (j === labels[i] ? c - margin : c)));
}

function arcFaceLogits(x: Matrix, w: Matrix, labels: readonly number[], scale: number, margin: number): Matrix {
  return cosineMatrix(x, w).map((row, i) =>
    row.map((c, j) => {
      if (j !== labels[i]) return scale * c;
      const theta = Math.acos(clampUnit(c));
      return scale * (theta < Math.PI - margin ? Math.cos(theta + margin) : c - margin * Math.sin(margin));
    }),
  );
}

function softmaxLogits(x: Matrix, w: Matrix): Matrix {
  return x.map((row) => (w[0] ?? []).map((_, j) => dotProduct(row, column(w, j))));
}

function softmaxRows(logits: Matrix): Matrix {
  return logits.map((row) => {
    const max = Math.max(...row);
    const exps = row.map((v) => Math.exp(v - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    return exps.map((e) => e / sum);
  });
}

function meanCrossEntropy(logits: Matrix, labels: readonly number[]): number {
  let total = 0;
  logits.forEach((row, i) => {
    const max = Math.max(...row);
    const logSum = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    total += logSum - (row[labels[i] ?? -1] ?? Number.NaN);
  });
  return total / logits.length;
}

const argMax = (row: readonly number[]): number => row.reduce((best, v, j) => (v > (row[best] ?? -Infinity) ? j : best), 0);

interface Case {
  readonly name: string;
  readonly options: HeadOptions;
  readonly logits: (x: Matrix, w: Matrix, labels: readonly number[], iteration: number) => Matrix;
  /** The margin-free logits whose argmax `correct` counts. */
  readonly plain: (x: Matrix, w: Matrix) => Matrix;
}

const asoftmaxCase = (m: Margin, gradient: 'autograd' | 'reference'): Case => ({
  name: `asoftmax m=${m} ${gradient}`,
  options: { kind: 'asoftmax', m, gradient },
  logits: (x, w, labels, iteration) => asoftmaxLogits(x, w, labels, m, lambdaAt(iteration, SPHEREFACE_LAMBDA)),
  plain: (x, w) => asoftmaxLogits(x, w, [], 1, 0),
});

const COSFACE: Case = {
  name: 'cosface s=8 m=0.35',
  options: { kind: 'cosface', scale: 8, margin: 0.35 },
  logits: (x, w, labels) => cosFaceLogits(x, w, labels, 8, 0.35),
  plain: cosineMatrix,
};

const ARCFACE: Case = {
  name: 'arcface s=8 m=0.5',
  options: { kind: 'arcface', scale: 8, margin: 0.5 },
  logits: (x, w, labels) => arcFaceLogits(x, w, labels, 8, 0.5),
  plain: cosineMatrix,
};

const SOFTMAX: Case = {
  name: 'softmax',
  options: { kind: 'softmax' },
  logits: (x, w) => softmaxLogits(x, w),
  plain: softmaxLogits,
};

const MARGINS: readonly Margin[] = [1, 2, 3, 4];
const AUTOGRAD_CASES: readonly Case[] = [...MARGINS.map((m) => asoftmaxCase(m, 'autograd')), COSFACE, ARCFACE, SOFTMAX];
const ALL_CASES: readonly Case[] = [...AUTOGRAD_CASES, ...MARGINS.map((m) => asoftmaxCase(m, 'reference'))];

/** Central differences of `loss` in float64 for every entry of `values`. */
function finiteDifferences(values: Matrix, loss: (perturbed: Matrix) => number, step = 1e-6): Matrix {
  return values.map((row, i) =>
    row.map((_, j) => {
      const shifted = (delta: number): number => loss(values.map((r, a) => r.map((v, b) => (a === i && b === j ? v + delta : v))));
      return (shifted(step) - shifted(-step)) / (2 * step);
    }),
  );
}

/**
 * Computes the gradient of the Caffe `MarginInnerProduct` layer for the mean loss:
 * dL/dW = xᵀ·dY and dL/dx = Σ_{j≠y} dY_j·ŵ_j + dY_y·[(ĉ_w·ŵ_y + ĉ_x·x) + λ·ŵ_y] / (1 + λ),
 * with (ĉ_w, ĉ_x) the coefficients of `marginCoefficients` scaled to a unit vector.
 */
function referenceGradient(x: Matrix, w: Matrix, labels: readonly number[], m: Margin, lambda: number): { dW: Matrix; dx: Matrix } {
  const probabilities = softmaxRows(asoftmaxLogits(x, w, labels, m, lambda));
  const dY = probabilities.map((row, i) => row.map((p, j) => (p - (j === labels[i] ? 1 : 0)) / x.length));
  const classes = unitColumns(w);
  const dW = w.map((row, d) => row.map((_, j) => x.reduce((s, xi, i) => s + (xi[d] ?? 0) * (dY[i]?.[j] ?? 0), 0)));
  const dx = x.map((xi, i) => {
    const label = labels[i] ?? -1;
    const out = xi.map(() => 0);
    classes.forEach((wj, j) => {
      const g = dY[i]?.[j] ?? 0;
      if (m === 1 || j !== label) {
        wj.forEach((v, d) => (out[d] = (out[d] ?? 0) + g * v));
        return;
      }
      const rowNorm = norm(xi);
      const [cw, cx] = marginCoefficients(dotProduct(xi, wj) / rowNorm, rowNorm, m);
      const length = Math.hypot(cw, cx);
      wj.forEach((v, d) => {
        const margin = ((cw / length) * v + (cx / length) * (xi[d] ?? 0)) / (1 + lambda);
        out[d] = (out[d] ?? 0) + g * (margin + (lambda / (1 + lambda)) * v);
      });
    });
    return out;
  });
  return { dW, dx };
}

/** (c_w, c_x) with d(‖x‖ψ)/dx = c_w·ŵ_y + c_x·x, the Caffe layer's unscaled coefficients. */
function marginCoefficients(c: number, rowNorm: number, m: 2 | 3 | 4): [number, number] {
  const s0 = Math.sign(c);
  const s1 = Math.sign(Math.abs(c) - 0.5);
  const s2 = s0 * (1 + s1) - 2;
  const s3 = s0 * Math.sign(2 * c * c - 1);
  const s4 = 2 * s0 + s3 - 3;
  switch (m) {
    case 2:
      return [4 * s0 * c, -(2 * s0 * c * c + 1) / rowNorm];
    case 3:
      return [s1 * (12 * c * c - 3), -(8 * s1 * c ** 3 - s2) / rowNorm];
    case 4:
      return [s3 * (32 * c ** 3 - 16 * c), -(s3 * (24 * c ** 4 - 8 * c * c - 1) - s4) / rowNorm];
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers around the head
// ---------------------------------------------------------------------------------------------

interface Evaluation {
  readonly loss: number;
  readonly correct: number;
  readonly dW: Matrix;
  readonly dx: Matrix;
}

/** Runs one forward and gradient inside `tf.variableGrads`, as the trainer does, and frees every tensor it made. */
function evaluate(head: ClassifierHead, x: Matrix, labels: readonly number[], iteration: number): Evaluation {
  const embeddings = tf.variable(tf.tensor2d(x), true);
  const labelTensor = tf.tensor1d([...labels], 'int32');
  let correct: tf.Scalar | undefined;
  const { value, grads } = tf.variableGrads(() => {
    const out = head.forward(embeddings as tf.Tensor2D, labelTensor, iteration);
    correct = tf.keep(out.correct);
    return out.loss;
  }, [head.weight, embeddings]);
  const result: Evaluation = {
    loss: value.dataSync()[0] ?? Number.NaN,
    correct: correct?.dataSync()[0] ?? Number.NaN,
    dW: (grads[head.weight.name] as tf.Tensor2D).arraySync(),
    dx: (grads[embeddings.name] as tf.Tensor2D).arraySync(),
  };
  tf.dispose([value, ...Object.values(grads), embeddings, labelTensor]);
  if (correct !== undefined) correct.dispose();
  return result;
}

function maxAbsDifference(a: Matrix, b: Matrix): number {
  let max = 0;
  a.forEach((row, i) => row.forEach((v, j) => (max = Math.max(max, Math.abs(v - (b[i]?.[j] ?? Number.NaN))))));
  return Number.isNaN(max) ? Infinity : max;
}

const allFinite = (m: Matrix): boolean => m.every((row) => row.every(Number.isFinite));

function assertClose(t: Test, actual: Matrix, expected: Matrix, tolerance: number, message: string): void {
  const difference = maxAbsDifference(actual, expected);
  t.ok(difference <= tolerance, `${message}: max |difference| ${difference.toExponential(2)} ≤ ${tolerance}`);
}

function randomMatrix(rows: number, cols: number, seed: number, scale: number): Matrix {
  const uniform = uniformGenerator(seed);
  return Array.from({ length: rows }, () => Array.from({ length: cols }, () => Math.fround((2 * uniform() - 1) * scale)));
}

function setWeight(head: ClassifierHead, w: Matrix): void {
  tf.tidy(() => head.weight.assign(tf.tensor2d(w)));
}

/** Creates a head, runs `body` and disposes the head even when `body` throws. */
async function withHead<T>(options: HeadOptions, d: number, c: number, seed: number, body: (head: ClassifierHead) => T | Promise<T>): Promise<T> {
  const head = createHead(options, d, c, seed);
  try {
    return await body(head);
  } finally {
    head.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Scalar formulas
// ---------------------------------------------------------------------------------------------

t.test('psi at the m=4 table values', async (t) => {
  const table: Array<[number, number, number]> = [
    [1, 1, 1e-12],
    [0.7071, -1, 1e-3],
    [0.5, -1.5, 1e-12],
    [0, -3, 1e-12],
    [-0.5, -4.5, 1e-12],
    [-1, -7, 1e-12],
  ];
  for (const [cos, expected, tolerance] of table) {
    const value = psi(cos, 4);
    t.ok(Math.abs(value - expected) <= tolerance, `ψ(${cos}) = ${value}, expected ${expected}`);
  }
});

t.test('psi matches the angle formula', async (t) => {
  for (const m of MARGINS) {
    let worst = 0;
    for (let i = 0; i <= 20_000; i++) {
      const theta = (Math.PI * i) / 20_000;
      worst = Math.max(worst, Math.abs(psi(Math.cos(theta), m) - psiFromAngle(theta, m)));
    }
    t.ok(worst < 1e-12, `m=${m}: max |ψ(cosθ) − ((−1)^k·cos(mθ) − 2k)| = ${worst.toExponential(2)} over 20,001 angles`);
  }
});

t.test('lambda schedule', async (t) => {
  const expected: Array<[number, number]> = [
    [1, 892.857],
    [2, 806.452],
    [10, 454.545],
    [100, 76.923],
    [500, 16.393],
    [1000, 8.264],
    [1658, 5.001],
  ];
  for (const [iteration, lambda] of expected) {
    t.equal(lambdaAt(iteration, SPHEREFACE_LAMBDA).toFixed(3), lambda.toFixed(3), `λ(${iteration})`);
  }
  t.ok(lambdaAt(1658, SPHEREFACE_LAMBDA) > 5, 'λ(1658) is still above the minimum');
  for (const iteration of [1659, 1660, 5000, 28000]) {
    t.equal(lambdaAt(iteration, SPHEREFACE_LAMBDA), 5, `λ(${iteration}) is the minimum`);
  }
  t.throws(() => lambdaAt(0, SPHEREFACE_LAMBDA), /iteration 0 is invalid/, 'iterations start at 1');
  t.throws(() => lambdaAt(1.5, SPHEREFACE_LAMBDA), /iteration 1.5 is invalid/);
});

t.test('margin coefficients are the derivative of |x|psi', async (t) => {
  // Checks this file's copy of the Caffe layer's coefficients, which the reference-gradient
  // test relies on. c_w·ŵ + c_x·x must equal the gradient of g(x) = ‖x‖·ψ(x·ŵ/‖x‖), taken
  // here by central differences.
  const w = [0.6, -0.8, 0];
  for (const m of [2, 3, 4] as const) {
    for (const x of [[1.2, 0.3, -0.5], [-0.4, 1.1, 0.9], [0.1, -2, 0.2]]) {
      const g = (v: readonly number[]): number => norm(v) * psiFromAngle(Math.acos(clampUnit(dotProduct(v, w) / norm(v))), m);
      const numeric = finiteDifferences([x], ([v]) => g(v ?? []))[0] ?? [];
      const [cw, cx] = marginCoefficients(dotProduct(x, w) / norm(x), norm(x), m);
      const analytic = x.map((xd, d) => cw * (w[d] ?? 0) + cx * xd);
      assertClose(t, [analytic], [numeric], 1e-6, `m=${m} at x=[${x.join(', ')}]`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Construction and options
// ---------------------------------------------------------------------------------------------

t.test('options and defaults', async (t) => {
  await initBackend('cpu');
  await withHead({ kind: 'asoftmax', m: 4 }, 8, 3, 1, (head) => {
    t.same(head.options, { kind: 'asoftmax', m: 4, lambda: { base: 1000, gamma: 0.12, power: 1, min: 5 }, gradient: 'reference' });
    t.equal(head.lambda(1).toFixed(3), '892.857', 'λ(1) from the head');
  });
  await withHead({ kind: 'arcface', scale: 64, margin: 0.5 }, 8, 3, 1, (head) => {
    t.ok(Number.isNaN(head.lambda(1)), 'heads without λ return NaN');
  });

  t.throws(() => createHead({ kind: 'asoftmax', m: 5 as 4 }, 8, 3, 1), /m 5 is invalid; expected 1, 2, 3 or 4/);
  t.throws(() => createHead({ kind: 'asoftmax', m: 4, lambda: { base: 1000, gamma: -1, power: 1, min: 5 } }, 8, 3, 1), /lambda.gamma -1 is invalid/);
  t.throws(() => createHead({ kind: 'asoftmax', m: 4, gradient: 'exact' as 'autograd' }, 8, 3, 1), /gradient "exact" is invalid/);
  t.throws(() => createHead({ kind: 'cosface', scale: 0, margin: 0.35 }, 8, 3, 1), /cosface head: scale 0 is invalid/);
  t.throws(() => createHead({ kind: 'arcface', scale: 64, margin: 4 }, 8, 3, 1), /margin 4 is invalid/);
  t.throws(() => createHead({ kind: 'triplet' } as unknown as HeadOptions, 8, 3, 1), /head kind "triplet" is invalid/);
  t.throws(() => createHead({ kind: 'softmax' }, 0, 3, 1), /embedding size 0 is invalid/);
  t.throws(() => createHead({ kind: 'softmax' }, 8, 2.5, 1), /number of classes 2.5 is invalid/);
  t.equal(Object.keys(tf.engine().registeredVariables).includes(CLASS_WEIGHT_NAME), false, 'failed constructions leave no variable');

  await withHead({ kind: 'softmax' }, 8, 3, 1, async (first) => {
    t.equal(first.weight.name, 'fc6.weight');
    await withHead({ kind: 'softmax' }, 8, 3, 2, (second) => {
      t.equal(second.weight.name, 'fc6.weight#2', 'a second live head gets a suffix');
    });
  });
  await withHead({ kind: 'softmax' }, 8, 3, 1, (head) => {
    t.equal(head.weight.name, 'fc6.weight', 'the name is free again after dispose');
  });
});

t.test('fc6 xavier initialisation', async (t) => {
  await initBackend('cpu');
  const first = await withHead({ kind: 'asoftmax', m: 4 }, 512, 64, 7, (head) => {
    t.equal(head.weight.name, 'fc6.weight');
    t.same(head.weight.shape, [512, 64], '[D, numClasses]');
    t.equal(head.weight.trainable, true);
    return Array.from(head.weight.dataSync());
  });
  const again = await withHead({ kind: 'asoftmax', m: 4 }, 512, 64, 7, (head) => Array.from(head.weight.dataSync()));
  const other = await withHead({ kind: 'asoftmax', m: 4 }, 512, 64, 8, (head) => Array.from(head.weight.dataSync()));

  const limit = Math.sqrt(3 / 512);
  t.equal(limit.toFixed(6), '0.076547', '√(3/512)');
  const maxAbs = first.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  t.ok(maxAbs <= limit, `all within ±${limit}: max ${maxAbs}`);
  t.ok(maxAbs > 0.999 * limit, `the bound is reached: max ${maxAbs}`);
  const mean = first.reduce((s, v) => s + v, 0) / first.length;
  t.ok(Math.abs(mean) < 0.002, `mean ${mean} near 0`);
  const variance = first.reduce((s, v) => s + v * v, 0) / first.length;
  t.ok(Math.abs(variance - limit ** 2 / 3) < 0.05 * limit ** 2 / 3, `variance ${variance} near (√(3/512))²/3 = 1/512`);
  t.equal(again.filter((v, i) => v !== first[i]).length, 0, 'the same seed gives the same weights');
  t.ok(other.filter((v, i) => v !== first[i]).length > first.length / 2, 'another seed gives other weights');
});

// ---------------------------------------------------------------------------------------------
// Tensor behaviour, on each backend
// ---------------------------------------------------------------------------------------------

const D = 5;
const C = 4;
const LABELS = [0, 1, 2, 3, 1, 2, 3, 0];
const RANDOM_ROWS = randomMatrix(6, D, 11, 1.5);
const NOISE = randomMatrix(2, D, 12, 0.05);

/**
 * Builds the test batch for class weights `w`: six random rows, then one near ŵ_3 and one
 * nearly opposite ŵ_0, so that the label angles reach every branch of ψ and of the ArcFace logit.
 */
function batchFor(w: Matrix): Matrix {
  const classes = unitColumns(w);
  const near = (classes[3] ?? []).map((v, d) => Math.fround(1.1 * v + (NOISE[0]?.[d] ?? 0)));
  const opposite = (classes[0] ?? []).map((v, d) => Math.fround(-1.3 * v + (NOISE[1]?.[d] ?? 0)));
  return [...RANDOM_ROWS, near, opposite];
}

/** Checks that the label angles of `x` reach k = 0…3 for m = 4 and both sides of θ = π − 0.5. */
function assertBranchCoverage(t: Test, x: Matrix, w: Matrix): void {
  const angles = cosineMatrix(x, w).map((row, i) => Math.acos(clampUnit(row[LABELS[i] ?? -1] ?? Number.NaN)));
  const branches = [...new Set(angles.map((theta) => Math.floor((4 * theta) / Math.PI)))].sort();
  t.same(branches, [0, 1, 2, 3], 'label angles cover k = 0…3 of ψ for m = 4');
  t.ok(angles.some((theta) => theta > Math.PI - 0.5) && angles.some((theta) => theta < Math.PI - 0.5), 'label angles on both sides of the ArcFace fallback');
}

for (const backend of ['cpu', 'wasm'] as const) {
  t.test(`${backend} backend`, async (t) => {
    await initBackend(backend);

    t.test('forward matches the float64 formulas', async (t) => {
      for (const testCase of ALL_CASES) {
        await withHead(testCase.options, D, C, 3, (head) => {
          const w = (head.weight as tf.Tensor2D).arraySync();
          const X = batchFor(w);
          assertBranchCoverage(t, X, w);
          const plain = testCase.plain(X, w);
          const expectedCorrect = plain.filter((row, i) => argMax(row) === LABELS[i]).length;
          for (const iteration of [1, 1000, 5000]) {
            const { loss, correct } = evaluate(head, X, LABELS, iteration);
            const expected = meanCrossEntropy(testCase.logits(X, w, LABELS, iteration), LABELS);
            t.ok(Math.abs(loss - expected) <= 1e-5 * Math.max(1, expected), `${testCase.name} at iteration ${iteration}: loss ${loss} vs ${expected}`);
            t.equal(correct, expectedCorrect, `${testCase.name}: correct rows`);
          }
        });
      }
    });

    t.test('m=1 ignores lambda', async (t) => {
      await withHead({ kind: 'asoftmax', m: 1, gradient: 'autograd' }, D, C, 3, (head) => {
        const X = batchFor((head.weight as tf.Tensor2D).arraySync());
        t.equal(evaluate(head, X, LABELS, 1).loss, evaluate(head, X, LABELS, 5000).loss);
      });
    });

    t.test('autograd matches finite differences', async (t) => {
      for (const testCase of AUTOGRAD_CASES) {
        await withHead(testCase.options, D, C, 5, (head) => {
          const w = (head.weight as tf.Tensor2D).arraySync();
          const X = batchFor(w);
          assertBranchCoverage(t, X, w);
          for (const iteration of [1000, 5000]) {
            const { dW, dx } = evaluate(head, X, LABELS, iteration);
            const numericW = finiteDifferences(w, (wp) => meanCrossEntropy(testCase.logits(X, wp, LABELS, iteration), LABELS));
            const numericX = finiteDifferences(X, (xp) => meanCrossEntropy(testCase.logits(xp, w, LABELS, iteration), LABELS));
            assertClose(t, dW, numericW, 2e-6, `${testCase.name} at iteration ${iteration}: dL/dW`);
            assertClose(t, dx, numericX, 2e-6, `${testCase.name} at iteration ${iteration}: dL/dx`);
          }
        });
      }
    });

    t.test('reference gradient matches the Caffe formulas', async (t) => {
      for (const m of MARGINS) {
        await withHead({ kind: 'asoftmax', m, gradient: 'reference' }, D, C, 9, (head) => {
          head.prepare();
          const w = (head.weight as tf.Tensor2D).arraySync();
          const X = batchFor(w);
          assertBranchCoverage(t, X, w);
          for (const iteration of [1, 1000, 5000]) {
            const { dW, dx } = evaluate(head, X, LABELS, iteration);
            const expected = referenceGradient(X, w, LABELS, m, lambdaAt(iteration, SPHEREFACE_LAMBDA));
            assertClose(t, dW, expected.dW, 2e-6, `m=${m} at iteration ${iteration}: dL/dW = xᵀ·dY`);
            assertClose(t, dx, expected.dx, 2e-6, `m=${m} at iteration ${iteration}: dL/dx`);
          }
        });
      }
    });

    t.test('reference and autograd gradients differ', async (t) => {
      const reference = await withHead({ kind: 'asoftmax', m: 4, gradient: 'reference' }, D, C, 9, (head) => {
        head.prepare();
        const w = (head.weight as tf.Tensor2D).arraySync();
        return { w, result: evaluate(head, batchFor(w), LABELS, 5000) };
      });
      const autograd = await withHead({ kind: 'asoftmax', m: 4, gradient: 'autograd' }, D, C, 9, (head) => {
        setWeight(head, reference.w);
        return evaluate(head, batchFor(reference.w), LABELS, 5000);
      });
      t.ok(Math.abs(reference.result.loss - autograd.loss) < 1e-6, 'same forward');
      t.ok(maxAbsDifference(reference.result.dW, autograd.dW) > 1e-3, 'different dL/dW');
      t.ok(maxAbsDifference(reference.result.dx, autograd.dx) > 1e-3, 'different dL/dx');
    });

    t.test('prepare normalises only for the reference gradient', async (t) => {
      await withHead({ kind: 'asoftmax', m: 4, gradient: 'reference' }, D, C, 4, (head) => {
        const normsBefore = tf.tidy(() => tf.norm(head.weight, 'euclidean', 0).arraySync() as number[]);
        t.ok(normsBefore.some((n) => Math.abs(n - 1) > 0.05), `xavier columns are not unit length: ${normsBefore.join(', ')}`);
        head.prepare();
        const normsAfter = tf.tidy(() => tf.norm(head.weight, 'euclidean', 0).arraySync() as number[]);
        t.ok(normsAfter.every((n) => Math.abs(n - 1) < 1e-6), `unit columns after prepare: ${normsAfter.join(', ')}`);
      });
      await withHead({ kind: 'asoftmax', m: 4, gradient: 'autograd' }, D, C, 4, (head) => {
        const before = head.weight.dataSync().slice();
        head.prepare();
        t.same(head.weight.dataSync(), before, 'autograd: weights unchanged');
      });
    });

    t.test('gradients finite at cos of plus and minus one', async (t) => {
      // x = ±2·e0 and w_0 = e0 give cosθ_0 = ±1 exactly in float32.
      const w = [
        [1, 0, 0.3],
        [0, 1, 0.4],
        [0, 0, 0.5],
      ];
      const x = [
        [2, 0, 0],
        [-2, 0, 0],
      ];
      for (const testCase of ALL_CASES) {
        await withHead(testCase.options, 3, 3, 1, (head) => {
          setWeight(head, w);
          const { loss, dW, dx } = evaluate(head, x, [0, 0], 5000);
          t.ok(Number.isFinite(loss) && allFinite(dW) && allFinite(dx), `${testCase.name}: loss ${loss}, gradients finite`);
        });
      }
    });

    t.test('gradients finite when self-cosine exceeds one', async (t) => {
      // Search seeded unit vectors x (normalised in float32) for one whose cosine with itself,
      // as the head computes it, rounds above 1.
      const others = randomMatrix(8, 2, 21, 1);
      let found: { x: number[]; w: Matrix; cos: number } | undefined;
      for (let seed = 0; seed < 400 && found === undefined; seed++) {
        const raw = randomMatrix(8, 1, 1000 + seed, 1);
        const x = [...tf.tidy(() => normalizeColumns(tf.tensor2d(raw)).dataSync())];
        const w = raw.map((_, d) => [x[d] ?? 0, ...(others[d] ?? [])]);
        // The same operations, on the same shapes, as the A-Softmax forward.
        const cos = tf.tidy(() => {
          const row = tf.tensor2d([x]);
          return tf.div(tf.matMul(row, normalizeColumns(tf.tensor2d(w))), rowNorms(row)).dataSync()[0] ?? 0;
        });
        if (cos > 1) found = { x, w, cos };
      }
      t.ok(found !== undefined, `found a unit float32 vector with self-cosine ${found?.cos} > 1`);
      if (found === undefined) return;
      t.equal(found.cos, Math.fround(1.0000001), 'the cosine rounds to 1.0000001');
      for (const testCase of ALL_CASES) {
        await withHead(testCase.options, 8, 3, 1, (head) => {
          setWeight(head, found.w);
          const { loss, dW, dx } = evaluate(head, [found.x], [0], 5000);
          t.ok(Number.isFinite(loss) && allFinite(dW) && allFinite(dx), `${testCase.name}: loss ${loss}, gradients finite`);
        });
      }
    });

    t.test('loss goes through log-softmax', async (t) => {
      await withHead({ kind: 'softmax' }, 2, 2, 1, (head) => {
        setWeight(head, [
          [1, 0],
          [0, 1],
        ]);
        const { loss, dW, dx } = evaluate(head, [[0, 200]], [0], 1);
        t.equal(loss, 200, 'logits [0, 200] with label 0 give exactly 200');
        t.ok(allFinite(dW) && allFinite(dx), 'gradients finite');
      });
      await withHead({ kind: 'asoftmax', m: 4 }, 2, 2, 1, (head) => {
        head.prepare();
        const { loss } = evaluate(head, [[-700, 700]], [0], 5000);
        t.ok(Number.isFinite(loss) && loss > 80, `an embedding of norm 990 far from its class: loss ${loss}, finite and above Caffe's 87.34 cap`);
      });
    });

    t.test('correct counts the margin-free argmax', async (t) => {
      // Class 0 at 0°, class 1 at 40°. Row 0 at 15° is nearer class 0, but with m=4 and λ=5 its
      // label logit 3·(5·cos15° + ψ(15°))/6 = 2.665 falls below 3·cos25° = 2.719.
      const rad = Math.PI / 180;
      const w = [
        [1, Math.cos(40 * rad)],
        [0, Math.sin(40 * rad)],
      ];
      const x = [
        [3 * Math.cos(15 * rad), 3 * Math.sin(15 * rad)],
        [3 * Math.cos(30 * rad), 3 * Math.sin(30 * rad)],
      ];
      const marginArgMax = argMax(asoftmaxLogits(x, w, [0, 0], 4, 5)[0] ?? []);
      t.equal(marginArgMax, 1, 'the margin logits of row 0 favour class 1');
      for (const gradient of ['autograd', 'reference'] as const) {
        await withHead({ kind: 'asoftmax', m: 4, gradient }, 2, 2, 1, (head) => {
          setWeight(head, w);
          t.equal(evaluate(head, x, [0, 0], 5000).correct, 1, `${gradient}: row 0 counts as correct, row 1 does not`);
        });
      }
    });

    t.test('no tensor leaks over 20 steps', async (t) => {
      for (const testCase of ALL_CASES) {
        await withHead(testCase.options, D, C, 2, (head) => {
          const embeddings = tf.variable(tf.tensor2d(batchFor((head.weight as tf.Tensor2D).arraySync())), true);
          const labels = tf.tensor1d(LABELS, 'int32');
          const before = tf.memory().numTensors;
          for (let iteration = 1; iteration <= 20; iteration++) {
            head.prepare();
            let correct: tf.Scalar | undefined;
            const { value, grads } = tf.variableGrads(() => {
              const out = head.forward(embeddings as tf.Tensor2D, labels, iteration);
              correct = tf.keep(out.correct);
              return out.loss;
            }, [head.weight, embeddings]);
            tf.dispose([value, ...Object.values(grads)]);
            correct?.dispose();
          }
          t.equal(tf.memory().numTensors, before, `${testCase.name}: tensor count unchanged`);
          tf.dispose([embeddings, labels]);
        });
      }
    });

    t.test('bad input names the problem', async (t) => {
      await withHead({ kind: 'asoftmax', m: 4 }, D, C, 1, (head) => {
        const x = tf.tensor2d(RANDOM_ROWS);
        const wrongWidth = tf.zeros([2, D + 1]) as tf.Tensor2D;
        const floatLabels = tf.tensor1d([0, 1, 2, 3, 1, 2], 'float32');
        const outOfRange = tf.tensor1d([0, 1, 2, 3, 4, 0], 'int32');
        const short = tf.tensor1d([0, 1], 'int32');
        const labels = tf.tensor1d([0, 1, 2, 3, 1, 2], 'int32');
        t.throws(() => head.forward(wrongWidth, short, 1), /embeddings are float32 \[2, 6\]; expected float32 \[N, 5\]/);
        t.throws(() => head.forward(x, floatLabels, 1), /labels are float32 \[6\]; expected int32 \[6\]/);
        t.throws(() => head.forward(x, short, 1), /labels are int32 \[2\]; expected int32 \[6\]/);
        t.throws(() => head.forward(x, outOfRange, 1), /labels\[4\] = 4 is out of range; expected a class index in \[0, 4\)/);
        t.throws(() => head.forward(x, labels, 0), /iteration 0 is invalid/);
        head.dispose();
        t.throws(() => head.forward(x, labels, 1), /asoftmax head: used after dispose/);
        tf.dispose([x, wrongWidth, floatLabels, outOfRange, short, labels]);
      });
    });
  });
}
