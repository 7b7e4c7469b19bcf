/**
 * The cpu backend's replacement filter gradient against the cpu backend's own kernel, on random
 * cases with stride 2, padding of every kind and odd sizes.
 */
import t from 'tap';
import * as tf from '@tensorflow/tfjs-core';
import { backend_util } from '@tensorflow/tfjs-core';

import { initBackend } from '../model/backend.ts';
import { registerCpuTrainingKernels } from '../model/wasmKernels.ts';
import { uniformGenerator } from '../lib/random.ts';

await initBackend('cpu');
const original = tf.getKernel('Conv2DBackpropFilter', 'cpu');
if (original === undefined) throw new Error('the cpu backend has no Conv2DBackpropFilter');
const replaced = registerCpuTrainingKernels();

type Shape4 = [number, number, number, number];
interface Case {
  readonly input: Shape4;
  readonly filter: Shape4;
  readonly strides: number | [number, number];
  readonly pad: 'same' | 'valid' | number | backend_util.ExplicitPadding;
}

const CASES: Case[] = [
  { input: [1, 5, 5, 2], filter: [3, 3, 2, 3], strides: 1, pad: 'same' },
  { input: [2, 7, 6, 3], filter: [3, 3, 3, 4], strides: 2, pad: 1 },
  { input: [3, 9, 7, 2], filter: [3, 3, 2, 5], strides: 2, pad: 'same' },
  { input: [2, 7, 9, 4], filter: [3, 3, 4, 3], strides: 2, pad: 'valid' },
  { input: [2, 6, 5, 3], filter: [2, 3, 3, 2], strides: [1, 2], pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
  { input: [2, 11, 10, 3], filter: [5, 4, 3, 2], strides: 3, pad: 'valid' },
  { input: [4, 14, 12, 8], filter: [3, 3, 8, 16], strides: 1, pad: 1 },
  { input: [2, 4, 3, 64], filter: [3, 3, 64, 32], strides: 2, pad: 1 },
];

function random(shape: readonly number[], uniform: () => number): tf.Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = 2 * uniform() - 1;
  return tf.tensor(data, [...shape], 'float32');
}

t.test('replaces the kernel once', async (t) => {
  t.same(replaced, ['Conv2DBackpropFilter']);
  t.same(registerCpuTrainingKernels(), [], 'a second call replaces nothing');
  t.not(tf.getKernel('Conv2DBackpropFilter', 'cpu')?.kernelFunc, original.kernelFunc);
});

t.test('agrees with the cpu backend\'s own kernel', async (t) => {
  const uniform = uniformGenerator(31);
  for (const c of CASES) {
    const label = `x [${c.input.join(',')}] filter [${c.filter.join(',')}] strides ${JSON.stringify(c.strides)} pad ${JSON.stringify(c.pad)}`;
    const x = random(c.input, uniform);
    const info = backend_util.computeConv2DInfo(c.input, c.filter, c.strides, 1, c.pad);
    const dy = random([c.input[0], info.outHeight, info.outWidth, c.filter[3]], uniform);
    const attrs = { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', dimRoundingMode: undefined, filterShape: c.filter } as unknown as tf.NamedAttrMap;

    const before = tf.memory().numTensors;
    const actual = tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, attrs) as tf.Tensor;
    t.equal(tf.memory().numTensors, before + 1, `${label}: one output, no intermediate left`);
    const expectedInfo = original.kernelFunc({ inputs: { x, dy }, backend: tf.backend(), attrs }) as tf.TensorInfo;
    const expected = tf.engine().makeTensorFromTensorInfo(expectedInfo);

    t.same(actual.shape, c.filter, `${label}: shape`);
    const a = (await actual.data()) as Float32Array;
    const e = (await expected.data()) as Float32Array;
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < e.length; i++) {
      diff = Math.max(diff, Math.abs((a[i] as number) - (e[i] as number)));
      scale = Math.max(scale, Math.abs(e[i] as number));
    }
    t.ok(diff / scale <= 1e-5, `${label}: relative error ${(diff / scale).toExponential(2)} ≤ 1e-5`);
    tf.dispose([x, dy, actual, expected]);
  }
});
