/**
 * Training-step throughput of SphereFace-20: `tf.variableGrads` of a scalar loss over all 62
 * parameters plus a plain SGD update, with the wasm training kernels registered.
 * Usage: `npx tsx bench/trainStep.ts [BATCH] [STEPS] [BACKEND]`
 * (default batch 32, 5 timed steps after 1 warm-up step, backend wasm).
 *
 * The input is seeded Gaussian noise of the network's input shape, because the cost of a step
 * does not depend on pixel values. The loss is the sum of squares of the 512-d embedding. It
 * replaces the A-Softmax classifier `fc6`, which would add one 512 × classes matrix product.
 */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, parseBackendName } from '../model/backend.ts';
import { randomSphereFace20, SphereFace20 } from '../model/sphereface20.ts';
import { registerWasmTrainingKernels } from '../model/wasmKernels.ts';

const batchSize = Number(process.argv[2] ?? 32);
const steps = Number(process.argv[3] ?? 5);
if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batch size "${process.argv[2]}" is invalid, expected a positive integer`);
if (!Number.isInteger(steps) || steps < 1) throw new Error(`step count "${process.argv[3]}" is invalid, expected a positive integer`);
const backend = await initBackend(parseBackendName(process.argv[4] ?? 'wasm'));
registerWasmTrainingKernels();

const initial = randomSphereFace20(0);
const variables = new Map<string, tf.Variable>();
for (const [name, tensor] of initial.parameters) variables.set(name, tf.variable(tensor, true, name));
initial.dispose();
const model = new SphereFace20(variables);
const input = tf.randomNormal([batchSize, 112, 96, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
const learningRate = 1e-4;

async function trainStep(): Promise<number> {
  const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(model.predict(input))) as tf.Scalar, [...variables.values()]);
  tf.tidy(() => {
    for (const variable of variables.values()) {
      const grad = grads[variable.name];
      if (grad !== undefined) variable.assign(tf.sub(variable, tf.mul(grad, learningRate)));
    }
  });
  const loss = (await value.data())[0] ?? Number.NaN;
  tf.dispose([value, ...Object.values(grads)]);
  return loss;
}

await trainStep();
const tensorsAfterWarmUp = tf.memory().numTensors;

const rates: number[] = [];
const seconds: number[] = [];
for (let i = 0; i < steps; i++) {
  const started = performance.now();
  await trainStep();
  const elapsed = (performance.now() - started) / 1000;
  seconds.push(elapsed);
  rates.push(batchSize / elapsed);
}
rates.sort((a, b) => a - b);
const median = rates[Math.floor(rates.length / 2)] ?? Number.NaN;
console.log(
  JSON.stringify({
    model: model.name,
    backend: backend.name,
    threads: backend.threads,
    batch: batchSize,
    steps,
    imagesPerSecondMedian: Number(median.toFixed(2)),
    imagesPerSecondMin: Number((rates[0] ?? Number.NaN).toFixed(2)),
    imagesPerSecondMax: Number((rates[rates.length - 1] ?? Number.NaN).toFixed(2)),
    stepSeconds: seconds.map((s) => Number(s.toFixed(2))),
    tensorGrowthPerStep: (tf.memory().numTensors - tensorsAfterWarmUp) / steps,
  }),
);
input.dispose();
model.dispose();
