/**
 * Decode + align throughput of the existing stages (readImages with decode concurrency 2, then
 * similarityAlign, as bench/align.ts) against decodeAndAlignInWorkers. The existing path aligns on
 * the main thread, but sharp decodes on the libuv thread pool, so it already uses more than one
 * core. The bench prints the cores each path used. The two paths run
 * alternately on the same LFW images, and the medians of the runs are compared.
 * Usage: `npx tsx bench/alignWorkers.ts [IMAGES] [THREADS] [ROUNDS]` (default the first 2000
 * images of the View 2 pairs, 2 threads, 3 rounds).
 */
import { from, lastValueFrom, map, tap, toArray } from 'rxjs';
import { readLandmarks, readPairs, uniqueImages } from '../datasets/lfw.ts';
import { lfwPaths } from '../lib/paths.ts';
import { decodeAndAlignInWorkers } from '../operators/alignInWorkers.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, type LandmarkedImage } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';

const count = Number(process.argv[2] ?? 2000);
const threads = Number(process.argv[3] ?? 2);
const rounds = Number(process.argv[4] ?? 3);
const paths = lfwPaths();
const pairs = await readPairs(paths.pairs);
const landmarks = await readLandmarks(paths.landmarks);
const images = uniqueImages(pairs.pairs).slice(0, count);

/** CPU time of the whole process (all threads) per second of wall time, per run. */
const coresUsed = { single: [] as number[], workers: [] as number[] };
/**
 * Throughput counted from the first result on, which leaves out the start of the worker threads
 * (each loads tsx, sharp and rxjs). That start is paid once per stream, so it weighs less on a
 * longer run than on this one.
 */
const afterFirstResult = { single: [] as number[], workers: [] as number[] };

/** Runs one pass over `images` and returns its throughput in images per second. */
async function measure(kind: 'single' | 'workers'): Promise<number> {
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  const stages =
    kind === 'single'
      ? from(images).pipe(
          readImages({ concurrency: 2 }),
          map((image) => (isRejected(image) ? image : ({ ...image, landmarks: landmarks.get(image.id) } as LandmarkedImage))),
          similarityAlign(),
        )
      : from(images).pipe(decodeAndAlignInWorkers({ threads, landmarksOf: (ref) => landmarks.get(ref.id) }));
  let firstResultAt = 0;
  const out = await lastValueFrom(
    stages.pipe(
      tap(() => {
        if (firstResultAt === 0) firstResultAt = performance.now();
      }),
      toArray(),
    ),
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  coresUsed[kind].push((cpu.user + cpu.system) / 1e6 / seconds);
  afterFirstResult[kind].push((images.length - 1) / ((performance.now() - firstResultAt) / 1000));
  const rejected = out.filter(isRejected).length;
  if (rejected > 0) throw new Error(`${kind}: ${rejected} of ${images.length} images were rejected; expected none`);
  return images.length / seconds;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const single: number[] = [];
const workers: number[] = [];
for (let round = 0; round < rounds; round += 1) {
  single.push(await measure('single'));
  workers.push(await measure('workers'));
  console.log(JSON.stringify({ round, single: Number(single.at(-1)!.toFixed(1)), workers: Number(workers.at(-1)!.toFixed(1)) }));
}
const singleMedian = median(single);
const workersMedian = median(workers);
console.log(
  JSON.stringify({
    images: images.length,
    threads,
    rounds,
    singleImagesPerSecond: Number(singleMedian.toFixed(1)),
    workersImagesPerSecond: Number(workersMedian.toFixed(1)),
    ratio: Number((workersMedian / singleMedian).toFixed(2)),
    singleAfterFirstResult: Number(median(afterFirstResult.single).toFixed(1)),
    workersAfterFirstResult: Number(median(afterFirstResult.workers).toFixed(1)),
    singleCoresUsed: Number(median(coresUsed.single).toFixed(2)),
    workersCoresUsed: Number(median(coresUsed.workers).toFixed(2)),
  }),
);
