/**
 * Feature-extraction throughput: real aligned LFW faces through `embedBatch` (normalisation,
 * image and mirror in one forward pass), the model-side half of `sphereface eval`.
 * Usage: `npx tsx bench/extract.ts [MODEL_SPEC] [BATCH] [BATCHES] [BACKEND]`
 * (default MobileFaceNet from $SPHEREFACE_MODELS, batch 32, 20 timed batches after 2 warm-up).
 */
import { from, lastValueFrom, map, toArray } from 'rxjs';
import { readLandmarks, readPairs, uniqueImages } from '../datasets/lfw.ts';
import { lfwPaths, mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { initBackend, parseBackendName } from '../model/backend.ts';
import { loadEmbeddingModel } from '../model/registry.ts';
import { embedBatch } from '../operators/extractFeatures.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, type AlignedFace, type LandmarkedImage } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';

const spec = process.argv[2] ?? `mobilefacenet:${mobileFaceNetCheckpoint()}`;
const batchSize = Number(process.argv[3] ?? 32);
const batches = Number(process.argv[4] ?? 20);
const backend = await initBackend(process.argv[5] === undefined ? undefined : parseBackendName(process.argv[5]));

const paths = lfwPaths();
const landmarks = await readLandmarks(paths.landmarks);
const refs = uniqueImages((await readPairs(paths.pairs)).pairs).slice(0, batchSize);
const faces = (await lastValueFrom(
  from(refs).pipe(
    readImages(),
    map((image) => (isRejected(image) ? image : ({ ...image, landmarks: landmarks.get(image.id) } as LandmarkedImage))),
    similarityAlign(),
    toArray(),
  ),
)).filter((face): face is AlignedFace => !isRejected(face));

const model = await loadEmbeddingModel(spec);
for (let i = 0; i < 2; i++) await embedBatch(model, faces);

const rates: number[] = [];
for (let i = 0; i < batches; i++) {
  const started = performance.now();
  await embedBatch(model, faces);
  rates.push(faces.length / ((performance.now() - started) / 1000));
}
rates.sort((a, b) => a - b);
const median = rates[Math.floor(rates.length / 2)] ?? Number.NaN;
console.log(
  JSON.stringify({
    model: model.name,
    backend: backend.name,
    threads: backend.threads,
    batch: faces.length,
    batches,
    // Each face costs two forward passes: the face and its mirror.
    facesPerSecondMedian: Number(median.toFixed(1)),
    facesPerSecondMin: Number((rates[0] ?? Number.NaN).toFixed(1)),
    facesPerSecondMax: Number((rates[rates.length - 1] ?? Number.NaN).toFixed(1)),
  }),
);
model.dispose();
