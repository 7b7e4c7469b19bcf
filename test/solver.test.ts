/**
 * The Caffe SGD update and the multistep learning rate, against values worked out by hand.
 */
import t from 'tap';
import * as tf from '@tensorflow/tfjs-core';

import { initBackend } from '../model/backend.ts';
import { CaffeSgd, checkSolverOptions, learningRateAt, REFERENCE_SOLVER, type SolverOptions } from '../model/solver.ts';

await initBackend('cpu');

t.test('multistep learning rate of the reference solver', async (t) => {
  t.equal(learningRateAt(1, REFERENCE_SOLVER), 0.1);
  t.equal(learningRateAt(16000, REFERENCE_SOLVER), 0.1, 'iteration 16,000 is Caffe iter_ 15,999');
  t.equal(learningRateAt(16001, REFERENCE_SOLVER), 0.1 * 0.1);
  t.equal(learningRateAt(24000, REFERENCE_SOLVER), 0.1 * 0.1);
  t.equal(learningRateAt(24001, REFERENCE_SOLVER), 0.1 * 0.1 * 0.1);
  t.equal(learningRateAt(28000, REFERENCE_SOLVER), 0.1 * 0.1 * 0.1, 'the last iteration');
});

t.test('bad solver options are named', async (t) => {
  const bad = (patch: Partial<SolverOptions>) => () => checkSolverOptions({ ...REFERENCE_SOLVER, ...patch });
  t.throws(bad({ momentum: 1 }), /momentum must be in \[0, 1\), got 1/);
  t.throws(bad({ baseLr: -0.1 }), /baseLr must be a finite number ≥ 0, got -0.1/);
  t.throws(bad({ stepValues: [24000, 16000] }), /stepValues must be increasing positive integers, got \[24000, 16000\]/);
  t.throws(bad({ maxIterations: 0 }), /maxIterations must be a positive integer, got 0/);
});

t.test('two updates follow Caffe: decay into the gradient, lr inside the momentum', async (t) => {
  const options: SolverOptions = { ...REFERENCE_SOLVER, baseLr: 0.5, momentum: 0.9, weightDecay: 0.1 };
  const weight = tf.variable(tf.tensor1d([1, -2]), true, 'solver-test-w');
  const bias = tf.variable(tf.tensor1d([3]), true, 'solver-test-b');
  const frozen = tf.variable(tf.tensor1d([7]), true, 'solver-test-frozen');
  const solver = new CaffeSgd(
    [
      { name: 'w', variable: weight, lrMult: 1, decayMult: 1 },
      { name: 'b', variable: bias, lrMult: 2, decayMult: 0 },
      { name: 'f', variable: frozen, lrMult: 0, decayMult: 0 },
    ],
    options,
  );
  t.same(solver.trainable().map((v) => v.name), ['solver-test-w', 'solver-test-b'], 'a parameter with lrMult 0 is not trained');

  const step = (gw: number[], gb: number[]) => {
    const grads = { 'solver-test-w': tf.tensor1d(gw), 'solver-test-b': tf.tensor1d(gb) };
    solver.apply(grads, 0.5);
    tf.dispose(Object.values(grads));
  };
  // Step 1, w = [1, -2], g = [0.2, 0.4]: diff = g + 0.1·w = [0.3, 0.2]; v = 0.5·diff = [0.15, 0.1]; w = [0.85, -2.1].
  // b = 3, g = 1, lrMult 2, no decay: v = 0.5·2·1 = 1; b = 2.
  step([0.2, 0.4], [1]);
  // Step 2, g = [0, 0]: diff = 0.1·[0.85, -2.1] = [0.085, -0.21]; v = 0.9·[0.15, 0.1] + 0.5·diff
  // = [0.1775, -0.015]; w = [0.6725, -2.085]. b: v = 0.9·1 + 0 = 0.9; b = 1.1.
  step([0, 0], [0]);
  const w = Array.from(await weight.data());
  const b = Array.from(await bias.data());
  t.ok(Math.abs((w[0] as number) - 0.6725) < 1e-6 && Math.abs((w[1] as number) - -2.085) < 1e-6, `w = [${w.join(', ')}], expected [0.6725, -2.085]`);
  t.ok(Math.abs((b[0] as number) - 1.1) < 1e-6, `b = ${b[0]}, expected 1.1`);
  t.same(Array.from(await frozen.data()), [7], 'the frozen parameter is unchanged');

  const slots = await solver.exportSlots();
  t.same(slots.map((s) => s.name), ['momentum/w', 'momentum/b']);
  const momentumW = Array.from(slots[0]!.data);
  t.ok(Math.abs((momentumW[0] as number) - 0.1775) < 1e-6 && Math.abs((momentumW[1] as number) - -0.015) < 1e-6, `momentum of w = [${momentumW.join(', ')}]`);

  t.throws(() => solver.apply({ 'solver-test-w': tf.tensor1d([0, 0]) }, 0.5), /no gradient for "b"/);
  const before = tf.memory().numTensors;
  solver.importSlots(new Map(slots.map((s) => [s.name, s])));
  t.equal(tf.memory().numTensors, before, 'restoring the slots leaves no tensor behind');
  solver.dispose();
  tf.dispose([weight, bias, frozen]);
});
