/**
 * How close our MTCNN landmarks come to `lfw_landmark.txt`, the LFW landmark file that
 * SphereFace's PyTorch port ships, with and without MTCNNv2's L-Net refinement.
 *
 * Sample: every 30th image (indices 0, 30, 60, …) of the LFW images sorted by id
 * (`Name/Name_NNNN.jpg`, code-unit order, as `readImageFolder` lists them) that have a line in
 * the file. With the 9,056 images of the data folder that is 302 images and 1,510 points, enough
 * for the 99th percentile to rest on 15 points rather than a handful.
 *
 * Convention: the file's integers are 0-based coordinates truncated towards zero, while the
 * detector returns 1-based coordinates. A point (X, Y) of ours is therefore compared as
 * (X − 1, Y − 1), the same spot in 0-based coordinates, with the file's integer v. On average
 * (X − 1) − v is about 0.4 pixels per axis. The truncation adds 0.5. The file's detector placed
 * and sized its L-Net patches slightly differently, which leaves its points about 0.1 pixels
 * right of and below ours. The distance to the centre of the truncation interval, v + 0.5, is
 * printed as well.
 */
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import t from 'tap';

import { readImageFolder } from '../datasets/imageFolder.ts';
import { readLandmarks } from '../datasets/lfw.ts';
import { lfwPaths, modelsRoot } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { loadMtcnn } from '../model/mtcnn.ts';
import { detect, refineLandmarks } from '../model/mtcnnDetect.ts';
import { centerFaceIndex } from '../operators/detectFaces.ts';
import { decodeImage } from '../operators/readImages.ts';
import { isRejected, type FivePoints } from '../operators/records.ts';

const SAMPLE_STEP = 30;
const POINT_NAMES = ['left eye', 'right eye', 'nose', 'left mouth', 'right mouth'];
/** Images whose detections are also run with `detect(…, { landmarkRefinement: 'lnet' })` directly. */
const DIRECT_CHECKS = 3;

const LFW = lfwPaths();
await initBackend();
const nets = await loadMtcnn(path.join(modelsRoot(), 'mtcnn'), { lnet: true });
t.teardown(() => nets.dispose());

/** Returns the nearest-rank percentile: the smallest value with at least p % of the values at or below it. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** Per-point distances between our 1-based points, moved by −shift, and the file's points. */
function distances(ours: FivePoints, file: FivePoints, shift: number): number[] {
  return ours.map(([x, y], k) => Math.hypot(x - shift - file[k]![0], y - shift - file[k]![1]));
}

interface Agreement {
  /** All per-point distances, image by image, five per image. */
  readonly all: number[];
  /** Distances of each landmark. */
  readonly byPoint: number[][];
}

function agreement(pairs: readonly { ours: FivePoints; file: FivePoints }[], shift: number): Agreement {
  const byPoint: number[][] = POINT_NAMES.map(() => []);
  const all: number[] = [];
  for (const { ours, file } of pairs) {
    distances(ours, file, shift).forEach((d, k) => {
      byPoint[k]!.push(d);
      all.push(d);
    });
  }
  return { all, byPoint };
}

function describe(label: string, a: Agreement): string {
  const points = a.byPoint.map((d, k) => `${POINT_NAMES[k]} ${median(d).toFixed(2)}/${percentile(d, 99).toFixed(2)}`).join(', ');
  return `${label}: median ${median(a.all).toFixed(2)}, p99 ${percentile(a.all, 99).toFixed(2)}, max ${Math.max(...a.all).toFixed(2)} pixels (per point median/p99: ${points})`;
}

t.test('landmarks against lfw_landmark.txt', async (t) => {
  const file = await readLandmarks(LFW.landmarks);
  const images = (await readImageFolder(LFW.images)).filter((ref) => file.has(ref.id));
  t.equal(images.length, 9056, 'the data folder has the 9,056 LFW images the sample is defined on');
  const sample = images.filter((_, index) => index % SAMPLE_STEP === 0);

  const plain: { ours: FivePoints; file: FivePoints }[] = [];
  const refined: { ours: FivePoints; file: FivePoints }[] = [];
  const missing: string[] = [];
  const started = performance.now();

  for (const [index, ref] of sample.entries()) {
    const image = await decodeImage(ref);
    if (isRejected(image)) throw new Error(`cannot read ${ref.path}: ${image.reason}`);
    // One detection serves both: L-Net changes only the landmarks, not the faces or their order.
    const faces = await detect(nets, image);
    const faceIndex = centerFaceIndex(faces, image.width, image.height);
    if (faceIndex < 0) {
      missing.push(ref.id);
      continue;
    }
    const moved = await refineLandmarks(nets, image, faces);
    if (index < DIRECT_CHECKS) {
      t.same(await detect(nets, image, { landmarkRefinement: 'lnet' }), moved, `${ref.id}: detect with 'lnet' gives the refined faces`);
    }
    const filePoints = file.get(ref.id)!.points;
    plain.push({ ours: faces[faceIndex]!.landmarks.points, file: filePoints });
    refined.push({ ours: moved[faceIndex]!.landmarks.points, file: filePoints });
  }
  const seconds = (performance.now() - started) / 1000;
  t.comment(`${sample.length} images, ${missing.length} without a face${missing.length > 0 ? ` (${missing.join(', ')})` : ''}, ${(sample.length / seconds).toFixed(1)} images/s`);

  t.ok(plain.length >= 0.995 * sample.length, `a face in ${plain.length} of ${sample.length} images (at least 99.5 %)`);

  const lnet = agreement(refined, 1);
  const v1 = agreement(plain, 1);
  t.comment(describe('lnet, (X − 1) vs v', lnet));
  t.comment(describe('lnet, (X − 1) vs v + 0.5', agreement(refined, 1.5)));
  t.comment(describe('none (MTCNNv1), (X − 1) vs v', v1));
  t.comment(describe('none (MTCNNv1), X vs v as if the file were 1-based', agreement(plain, 0)));

  t.ok(median(lnet.all) <= 1.0, `lnet: median ${median(lnet.all).toFixed(2)} ≤ 1 pixel`);
  t.ok(percentile(lnet.all, 99) <= 3.0, `lnet: 99th percentile ${percentile(lnet.all, 99).toFixed(2)} ≤ 3 pixels`);
  t.ok(median(v1.all) < 2.5, `none: median ${median(v1.all).toFixed(2)} < 2.5 pixels`);
  t.ok(median(lnet.all) < median(v1.all), 'L-Net is closer to the file than MTCNNv1');

  // The convention itself: floor(X − 1) reproduces most of the file's integers exactly, and the
  // truncation leaves (X − 1) − v at about 0.4 pixels on average on each axis.
  const coordinates = refined.flatMap(({ ours, file }) => ours.flatMap(([x, y], k) => [x - 1 - file[k]![0], y - 1 - file[k]![1]]));
  const exact = coordinates.filter((e) => e >= 0 && e < 1).length / coordinates.length;
  const meanOffset = coordinates.reduce((sum, e) => sum + e, 0) / coordinates.length;
  t.comment(`lnet: floor(X − 1) equals the file's value for ${(100 * exact).toFixed(1)} % of the coordinates; mean (X − 1) − v is ${meanOffset.toFixed(3)} pixels`);
  t.ok(exact > 0.55, `floor(X − 1) = v for more than 55 % of the coordinates (${(100 * exact).toFixed(1)} %)`);
  t.ok(meanOffset > 0.25 && meanOffset < 0.55, `mean (X − 1) − v between 0.25 and 0.55 pixels (${meanOffset.toFixed(3)})`);
});

t.test('no tensor leak', async (t) => {
  const before = tf.memory().numTensors;
  const image = await decodeImage({ id: 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg', path: path.join(LFW.images, 'Aaron_Eckhart', 'Aaron_Eckhart_0001.jpg') });
  if (isRejected(image)) throw new Error(image.reason);
  await detect(nets, image, { landmarkRefinement: 'lnet' });
  t.equal(tf.memory().numTensors, before, 'tensor count unchanged by a detection with L-Net');
});
