/**
 * Forward-pass throughput of the embedding networks on ONNX Runtime (CPU provider) against
 * TensorFlow.js, on one batch of real aligned LFW faces that is already normalised, so decoding,
 * alignment and normalisation are not timed. Each timed run is one forward pass of the batch
 * including reading the output back; the figure is the median over the runs, in images/s.
 *
 * Usage: `npx tsx bench/onnx.ts [BATCH] [RUNS] [BACKEND]`
 * (default batch 32, 10 timed runs after 2 warm-up runs, the backend `initBackend` picks).
 * ONNX Runtime runs once with 1 intra-op thread and once with `os.availableParallelism()`.
 * MobileFaceNet is the trained 068.ckpt; SphereFace-20 has random weights (seed 1), which cost
 * the same time as trained ones.
 */
import os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { alignedLfwFaces } from './lfwFaces.ts';
import { initBackend, parseBackendName } from '../model/backend.ts';
import { loadMobileFaceNet } from '../model/mobilefacenet.ts';
import { exportOnnx } from '../model/onnxExport.ts';
import { OnnxEmbeddingModel } from '../model/onnxModel.ts';
import { randomSphereFace20 } from '../model/sphereface20.ts';
import { normalizePixels } from '../operators/extractFeatures.ts';

const batchSize = Number(process.argv[2] ?? 32);
const runs = Number(process.argv[3] ?? 10);
const WARM_UP_RUNS = 2;
if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`BATCH is ${process.argv[2]}, expected an integer ≥ 1`);
if (!Number.isInteger(runs) || runs < 1) throw new Error(`RUNS is ${process.argv[3]}, expected an integer ≥ 1`);
const backend = await initBackend(process.argv[4] === undefined ? undefined : parseBackendName(process.argv[4]));

const faces = await alignedLfwFaces(batchSize);

/** Runs `forward` WARM_UP_RUNS + `runs` times and returns the median, minimum and maximum images/s of the timed runs. */
async function measure(forward: () => Promise<unknown>): Promise<{ median: number; min: number; max: number }> {
  for (let i = 0; i < WARM_UP_RUNS; i++) await forward();
  const rates: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await forward();
    rates.push(batchSize / ((performance.now() - started) / 1000));
  }
  rates.sort((a, b) => a - b);
  const round = (value: number | undefined) => Number((value ?? Number.NaN).toFixed(1));
  return { median: round(rates[Math.floor(rates.length / 2)]), min: round(rates[0]), max: round(rates[rates.length - 1]) };
}

const networks = [
  { load: () => loadMobileFaceNet(mobileFaceNetCheckpoint()) },
  { load: async () => randomSphereFace20(1) },
];

for (const network of networks) {
  const model = await network.load();
  const { height, width } = model.inputSize;
  const input = tf.tidy(() => {
    const pixels = tf.stack(faces.map((face) => tf.tensor3d(face.rgb, [height, width, 3], 'int32'))) as tf.Tensor4D;
    return normalizePixels(pixels, model);
  });
  const inputValues = input.dataSync() as Float32Array;

  const tfjs = await measure(async () => {
    const output = model.predict(input);
    await output.data();
    output.dispose();
  });
  console.log(JSON.stringify({ model: model.name, engine: `tfjs-${backend.name}`, threads: backend.threads, batch: batchSize, runs, imagesPerSecond: tfjs }));

  const bytes = exportOnnx(model);
  const threadCounts = [...new Set([1, os.availableParallelism()])];
  for (const threads of threadCounts) {
    const onnx = await OnnxEmbeddingModel.create(bytes, model.name, { intraOpNumThreads: threads });
    const ort = await measure(() => onnx.embed(inputValues, batchSize));
    console.log(JSON.stringify({ model: model.name, engine: 'onnxruntime-cpu', threads, batch: batchSize, runs, imagesPerSecond: ort }));
    await onnx.dispose();
  }

  input.dispose();
  model.dispose();
}
