/**
 * MTCNN detection throughput on 250×250 LFW images: decoding and detection, without alignment.
 * Usage: `npx tsx bench/detect.ts [IMAGES] [none|lnet] [onnx|tfjs]` (default the first 300 images
 * of the sorted LFW people folder, no landmark refinement, the default engine of
 * `loadMtcnnEngine`).
 */
import { from, lastValueFrom, toArray } from 'rxjs';
import { readImageFolder } from '../datasets/imageFolder.ts';
import { lfwPaths } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { loadMtcnnEngine, parseEngineName } from '../model/mtcnnEngine.ts';
import type { LandmarkRefinement } from '../model/mtcnnDetect.ts';
import { detectFaces } from '../operators/detectFaces.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected } from '../operators/records.ts';

const count = Number(process.argv[2] ?? 300);
const refinement = (process.argv[3] ?? 'none') as LandmarkRefinement;
const engine = process.argv[4] === undefined ? undefined : parseEngineName(process.argv[4]);
const backend = await initBackend();
const images = (await readImageFolder(lfwPaths().images)).slice(0, count);
const nets = await loadMtcnnEngine(undefined, { lnet: refinement === 'lnet', ...(engine === undefined ? {} : { engine }) });

const started = performance.now();
const out = await lastValueFrom(from(images).pipe(readImages(), detectFaces(nets, { landmarkRefinement: refinement }), toArray()));
const seconds = (performance.now() - started) / 1000;
nets.dispose();

console.log(
  JSON.stringify({
    engine: nets.engine,
    backend: backend.name,
    threads: backend.threads,
    refinement,
    images: images.length,
    withFace: out.filter((r) => !isRejected(r)).length,
    seconds: Number(seconds.toFixed(2)),
    imagesPerSecond: Number((images.length / seconds).toFixed(2)),
  }),
);
