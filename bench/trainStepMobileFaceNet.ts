/**
 * Training-step throughput of MobileFaceNet. The trained `068.ckpt` becomes variables, and
 * BatchNorm uses batch statistics as in PyTorch's training mode. A softmax classifier of 10,572
 * classes (CASIA-WebFace after the LFW overlap is removed) on the 128-d embedding gives the
 * cross-entropy loss. A step is `tf.variableGrads`, an SGD update with momentum 0.9 and weight
 * decay 5e-4 (`CaffeSgd` with the reference solver's first learning rate), and the update of the
 * BatchNorm running statistics.
 *
 * Usage: `npx tsx bench/trainStepMobileFaceNet.ts [BATCH] [STEPS] [BACKEND] [WARMUP]`
 * (default batch 32, 5 timed steps after 1 warm-up step, backend wasm). WARMUP 0 times the first
 * step too, for the cpu backend, where a step is slow.
 *
 * The batch is the first BATCH images of the LFW pairs, aligned from their listed landmarks and
 * normalised, so decoding and alignment are not timed. The labels spread over the classes. The
 * script prints one JSON line, with the loss of each step and the growth of
 * `tf.memory().numTensors` per step after the warm-up, which must be 0.
 */
import * as tf from '@tensorflow/tfjs-core';

import { mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { alignedLfwFaces } from './lfwFaces.ts';
import { initBackend, parseBackendName, prepareTraining } from '../model/backend.ts';
import {
  loadMobileFaceNet,
  mobileFaceNetTrainableNames,
  mobileFaceNetTrainingForward,
  updateRunningStatistics,
  type BatchNormStatistics,
} from '../model/mobilefacenet.ts';
import { CaffeSgd, learningRateAt, REFERENCE_SOLVER, type SolverParameter } from '../model/solver.ts';
import { normalizePixels } from '../operators/extractFeatures.ts';

const CLASSES = 10572;
const EMBEDDING_SIZE = 128;

function integerArgument(index: number, fallback: number, minimum: number, what: string): number {
  const text = process.argv[index];
  const value = text === undefined ? fallback : Number(text);
  if (!Number.isInteger(value) || value < minimum) throw new Error(`${what} "${text}" is invalid, expected an integer ≥ ${minimum}`);
  return value;
}

// Batch-statistics BatchNorm needs at least 2 images (see `mobileFaceNetTrainingForward`).
const batchSize = integerArgument(2, 32, 2, 'batch size');
const steps = integerArgument(3, 5, 1, 'step count');
const backend = await initBackend(parseBackendName(process.argv[4] ?? 'wasm'));
await prepareTraining(backend);
const warmUpSteps = integerArgument(5, 1, 0, 'warm-up step count');


// The loaded model supplies the unfolded parameters. Its folded inference copies are not used.
const model = await loadMobileFaceNet(mobileFaceNetCheckpoint());
const { height, width } = model.inputSize;
const faces = await alignedLfwFaces(batchSize);
const input = tf.tidy(() => {
  const pixels = tf.stack(faces.map((face) => tf.tensor3d(face.rgb, [height, width, 3], 'int32'))) as tf.Tensor4D;
  return normalizePixels(pixels, model);
});
const labels = tf.tidy(() => tf.oneHot(tf.tensor1d(Array.from({ length: batchSize }, (_, i) => (i * 331) % CLASSES), 'int32'), CLASSES));

const trainable = new Set(mobileFaceNetTrainableNames());
const variables = new Map<string, tf.Variable>();
const runningStatistics = new Map<string, tf.Variable>();
for (const [name, tensor] of model.parameters) {
  const variable = tf.variable(tensor, trainable.has(name), `mobilefacenet/${name}`);
  (trainable.has(name) ? variables : runningStatistics).set(name, variable);
}
model.dispose();
const classifier = tf.variable(tf.randomNormal([EMBEDDING_SIZE, CLASSES], 0, 0.01, 'float32', 1), true, 'classifier/weight');

const solverParameters: SolverParameter[] = [
  ...[...variables].map(([name, variable]) => ({ name, variable, lrMult: 1, decayMult: 1 })),
  { name: 'classifier.weight', variable: classifier, lrMult: 1, decayMult: 1 },
];
const solver = new CaffeSgd(solverParameters, REFERENCE_SOLVER);
const learningRate = learningRateAt(1, REFERENCE_SOLVER);

/** Runs one training step and returns its loss. */
async function step(): Promise<number> {
  let statistics: readonly BatchNormStatistics[] = [];
  const { value, grads } = tf.variableGrads(() => {
    const forward = mobileFaceNetTrainingForward(variables, input);
    // Kept past the gradient's tidy for the running-statistics update below.
    statistics = forward.batchStatistics;
    for (const s of statistics) {
      tf.keep(s.mean);
      tf.keep(s.variance);
    }
    const logits = tf.matMul(forward.embeddings, classifier);
    return tf.losses.softmaxCrossEntropy(labels, logits) as tf.Scalar;
  }, solver.trainable());
  solver.apply(grads, learningRate);
  updateRunningStatistics(runningStatistics, statistics);
  const loss = (await value.data())[0] ?? Number.NaN;
  tf.dispose([value, ...Object.values(grads), ...statistics.flatMap((s) => [s.mean, s.variance])]);
  return loss;
}

const losses: number[] = [];
for (let i = 0; i < warmUpSteps; i++) losses.push(await step());
const tensorsAfterWarmUp = tf.memory().numTensors;

const rates: number[] = [];
const seconds: number[] = [];
for (let i = 0; i < steps; i++) {
  const started = performance.now();
  losses.push(await step());
  const elapsed = (performance.now() - started) / 1000;
  seconds.push(elapsed);
  rates.push(batchSize / elapsed);
}
const tensorGrowthPerStep = (tf.memory().numTensors - tensorsAfterWarmUp) / steps;
rates.sort((a, b) => a - b);
const median = rates[Math.floor(rates.length / 2)] ?? Number.NaN;
console.log(
  JSON.stringify({
    model: 'mobilefacenet',
    inputSize: `${height}x${width}`,
    classes: CLASSES,
    backend: backend.name,
    threads: backend.threads,
    batch: batchSize,
    steps,
    imagesPerSecondMedian: Number(median.toFixed(2)),
    imagesPerSecondMin: Number((rates[0] ?? Number.NaN).toFixed(2)),
    imagesPerSecondMax: Number((rates[rates.length - 1] ?? Number.NaN).toFixed(2)),
    stepSeconds: seconds.map((s) => Number(s.toFixed(2))),
    losses: losses.map((loss) => Number(loss.toFixed(4))),
    tensorGrowthPerStep,
    warmUpSteps,
  }),
);

solver.dispose();
tf.dispose([input, labels, classifier, ...variables.values(), ...runningStatistics.values()]);
