/**
 * MTCNN detection throughput on 250×250 LFW images: decoding and detection, without alignment.
 * Usage: `npx tsx bench/detect.ts [IMAGES] [none|lnet]` (default the first 300 images of the
 * sorted LFW people folder, no landmark refinement).
 */
import { from, lastValueFrom, toArray } from 'rxjs';
import { readImageFolder } from '../datasets/imageFolder.ts';
import { lfwPaths } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { loadMtcnn } from '../model/mtcnn.ts';
import type { LandmarkRefinement } from '../model/mtcnnDetect.ts';
import { detectFaces } from '../operators/detectFaces.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected } from '../operators/records.ts';

const count = Number(process.argv[2] ?? 300);
const refinement = (process.argv[3] ?? 'none') as LandmarkRefinement;
const backend = await initBackend();
const images = (await readImageFolder(lfwPaths().images)).slice(0, count);
const nets = await loadMtcnn(undefined, { lnet: refinement === 'lnet' });

const started = performance.now();
const out = await lastValueFrom(from(images).pipe(readImages(), detectFaces(nets, { landmarkRefinement: refinement }), toArray()));
const seconds = (performance.now() - started) / 1000;
nets.dispose();

console.log(
  JSON.stringify({
    backend: backend.name,
    threads: backend.threads,
    refinement,
    images: images.length,
    withFace: out.filter((r) => !isRejected(r)).length,
    seconds: Number(seconds.toFixed(2)),
    imagesPerSecond: Number((images.length / seconds).toFixed(2)),
  }),
);
