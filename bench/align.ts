/**
 * Decode + align throughput: LFW JPEGs through readImages and similarityAlign, the CPU-side
 * half of `sphereface eval`. Usage: `npx tsx bench/align.ts [IMAGES] [CONCURRENCY]`
 * (default the first 2000 images of the View 2 pairs, decode concurrency 2).
 */
import { from, lastValueFrom, map, toArray } from 'rxjs';
import { readLandmarks, readPairs, uniqueImages } from '../datasets/lfw.ts';
import { lfwPaths } from '../lib/paths.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, type LandmarkedImage } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';

const count = Number(process.argv[2] ?? 2000);
const concurrency = Number(process.argv[3] ?? 2);
const paths = lfwPaths();
const pairs = await readPairs(paths.pairs);
const landmarks = await readLandmarks(paths.landmarks);
const images = uniqueImages(pairs.pairs).slice(0, count);

const started = performance.now();
const out = await lastValueFrom(
  from(images).pipe(
    readImages({ concurrency }),
    map((image) => (isRejected(image) ? image : ({ ...image, landmarks: landmarks.get(image.id) } as LandmarkedImage))),
    similarityAlign(),
    toArray(),
  ),
);
const seconds = (performance.now() - started) / 1000;
const rejected = out.filter(isRejected).length;
console.log(
  JSON.stringify({ images: images.length, rejected, concurrency, seconds: Number(seconds.toFixed(2)), imagesPerSecond: Number((images.length / seconds).toFixed(1)) }),
);
