/**
 * Training-step throughput: one `Trainer.step` of a SphereFace network with the A-Softmax head
 * (m = 4, the released Caffe layer's gradient) and the reference solver, as `sphereface train`
 * runs it.
 *
 * Usage: `npx tsx bench/trainStep.ts [BATCH] [STEPS] [BACKEND] [DEPTH] [HxW] [CLASSES] [WARMUP]`
 * (default batch 32, 5 timed steps after 1 warm-up step, backend wasm, SphereFace-20 at
 * 112x96, 10,572 classes as CASIA-WebFace after the LFW overlap is removed). WARMUP 0 times
 * the first step too, for the cpu backend, where one step takes many minutes.
 *
 * The pixels are a fixed pattern and the labels spread over the classes, because the cost of a
 * step does not depend on their values. The script prints one JSON line, with the growth of
 * `tf.memory().numTensors` per step after the warm-up, which must be 0.
 */
import * as tf from '@tensorflow/tfjs-core';

import { initBackend, parseBackendName, prepareTraining } from '../model/backend.ts';
import { REFERENCE_SOLVER } from '../model/solver.ts';
import type { SphereFaceDepth } from '../model/sphereface.ts';
import { Trainer } from '../model/trainer.ts';

function integerArgument(index: number, fallback: number, what: string): number {
  const text = process.argv[index];
  const value = text === undefined ? fallback : Number(text);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${what} "${text}" is invalid, expected a positive integer`);
  return value;
}

const batchSize = integerArgument(2, 32, 'batch size');
const steps = integerArgument(3, 5, 'step count');
const backend = await initBackend(parseBackendName(process.argv[4] ?? 'wasm'));
await prepareTraining(backend);
const depth = integerArgument(5, 20, 'depth') as SphereFaceDepth;
const sizeMatch = /^([0-9]+)x([0-9]+)$/.exec(process.argv[6] ?? '112x96');
if (sizeMatch === null) throw new Error(`input size "${process.argv[6]}" is invalid, expected HEIGHTxWIDTH`);
const inputSize = { height: Number(sizeMatch[1]), width: Number(sizeMatch[2]) };
const classes = integerArgument(7, 10572, 'class count');

const trainer = new Trainer({
  network: { depth, inputSize },
  head: { kind: 'asoftmax', m: 4, gradient: 'reference' },
  solver: REFERENCE_SOLVER,
  numClasses: classes,
  seed: 1,
});
const { height, width } = inputSize;
const batch = {
  pixels: Uint8Array.from({ length: batchSize * height * width * 3 }, (_, i) => (i * 37) % 256),
  labels: Int32Array.from({ length: batchSize }, (_, i) => (i * 331) % classes),
  size: batchSize,
};

const warmUpText = process.argv[8] ?? '1';
const warmUpSteps = Number(warmUpText);
if (!Number.isInteger(warmUpSteps) || warmUpSteps < 0) throw new Error(`warm-up step count "${warmUpText}" is invalid, expected an integer ≥ 0`);
for (let i = 0; i < warmUpSteps; i++) await trainer.step([batch]);
const tensorsAfterWarmUp = tf.memory().numTensors;

const rates: number[] = [];
const seconds: number[] = [];
for (let i = 0; i < steps; i++) {
  const started = performance.now();
  await trainer.step([batch]);
  const elapsed = (performance.now() - started) / 1000;
  seconds.push(elapsed);
  rates.push(batchSize / elapsed);
}
const tensorGrowthPerStep = (tf.memory().numTensors - tensorsAfterWarmUp) / steps;
rates.sort((a, b) => a - b);
const median = rates[Math.floor(rates.length / 2)] ?? Number.NaN;
console.log(
  JSON.stringify({
    model: trainer.network.name,
    inputSize: `${height}x${width}`,
    classes,
    backend: backend.name,
    threads: backend.threads,
    batch: batchSize,
    steps,
    imagesPerSecondMedian: Number(median.toFixed(2)),
    imagesPerSecondMin: Number((rates[0] ?? Number.NaN).toFixed(2)),
    imagesPerSecondMax: Number((rates[rates.length - 1] ?? Number.NaN).toFixed(2)),
    stepSeconds: seconds.map((s) => Number(s.toFixed(2))),
    tensorGrowthPerStep,
    warmUpSteps,
  }),
);
trainer.dispose();
