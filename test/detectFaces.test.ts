import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import { from, lastValueFrom, toArray } from 'rxjs';
import sharp, { type Sharp } from 'sharp';
import t, { type Test } from 'tap';

import { readLandmarks } from '../datasets/lfw.ts';
import { applyAffine, SPHEREFACE_OUTPUT_SIZE } from '../lib/cp2tform.ts';
import { lfwPaths, modelsRoot } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { loadMtcnn } from '../model/mtcnn.ts';
import { detect } from '../model/mtcnnDetect.ts';
import {
  centerCropLandmarks,
  centerFaceIndex,
  detectFaces,
  detectFacesIn,
  NO_FACE_REASON,
  type DetectFacesOptions,
  type FaceImage,
} from '../operators/detectFaces.ts';
import { decodeImage } from '../operators/readImages.ts';
import { isRejected, reject, type DecodedImage, type Maybe, type Point } from '../operators/records.ts';
import { alignFace } from '../operators/similarityAlign.ts';

const MODEL_DIR = path.join(modelsRoot(), 'mtcnn');
const LFW = lfwPaths();

/** The first eight LFW images of `lfw_landmark.txt` that the data folder holds, one face each. */
const LFW_IDS = [
  'Aaron_Eckhart/Aaron_Eckhart_0001.jpg',
  'Ahmad_Jbarah/Ahmad_Jbarah_0001.jpg',
  'Alec_Baldwin/Alec_Baldwin_0002.jpg',
  'Alicia_Silverstone/Alicia_Silverstone_0002.jpg',
  'Amelie_Mauresmo/Amelie_Mauresmo_0017.jpg',
  'Andrzej_Tyszkiewicz/Andrzej_Tyszkiewicz_0001.jpg',
  'Annette_Bening/Annette_Bening_0001.jpg',
  'Arminio_Fraga/Arminio_Fraga_0004.jpg',
];
const POINT_NAMES = ['left eye', 'right eye', 'nose', 'left mouth', 'right mouth'];

await initBackend();
const nets = await loadMtcnn(MODEL_DIR);
t.teardown(() => nets.dispose());
const tensorsAtStart = tf.memory().numTensors;

async function lfwImage(id: string): Promise<DecodedImage> {
  const image = await decodeImage({ id, path: path.join(LFW.images, id) });
  if (isRejected(image)) throw new Error(`cannot read ${id}: ${image.reason}`);
  return image;
}

function syntheticImage(id: string, width: number, height: number, value: (x: number, y: number) => number): DecodedImage {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) rgb.fill(value(x, y), (y * width + x) * 3, (y * width + x + 1) * 3);
  }
  return { id, path: `synthetic/${id}`, width, height, rgb };
}

async function rawImage(image: Sharp, id: string): Promise<DecodedImage> {
  const { data, info } = await image.removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { id, path: `synthetic/${id}`, width: info.width, height: info.height, rgb: new Uint8Array(data) };
}

function run(images: Maybe<DecodedImage>[], options: DetectFacesOptions = {}): Promise<Maybe<FaceImage>[]> {
  return lastValueFrom(from(images).pipe(detectFaces(nets, options), toArray()));
}

function detected(t: Test, record: Maybe<FaceImage> | undefined): FaceImage & { substituted: false } {
  if (record === undefined || isRejected(record) || record.substituted) {
    t.fail(`expected a detected face, got ${JSON.stringify(record === undefined ? 'nothing' : isRejected(record) ? record : 'a substitute')}`);
    throw new Error('no detected face');
  }
  return record;
}

function distance([ax, ay]: Point, [bx, by]: Point): number {
  return Math.hypot(ax - bx, ay - by);
}

t.test('LFW faces match lfw_landmark.txt', async (t) => {
  // NOTE: lfw_landmark.txt was not made by this detector. Over 1,000 LFW images its points
  // differ from these MTCNNv1 O-Net points by 1.9 pixels median, 6.3 at the 99th percentile and
  // 15 at most, so the bounds here are loose. The points of MTCNNv2's L-Net refinement stage fit
  // the file far better: less 1.5 pixels in x and y, they are 0.64 pixels from it median.
  const reference = await readLandmarks(LFW.landmarks);
  const distances: number[] = [];

  for (const id of LFW_IDS) {
    const records = await run([await lfwImage(id)]);
    t.equal(records.length, 1, `${id}: one record`);
    const face = detected(t, records[0]);
    t.equal(face.id, id, `${id}: id unchanged under policy center`);
    t.equal(face.landmarks.origin, 'one-based');

    const expected = reference.get(id)!.points;
    const perPoint = face.landmarks.points.map((point, k) => distance(point, expected[k]!));
    t.comment(`${id}: ${perPoint.map((d, k) => `${POINT_NAMES[k]} ${d.toFixed(2)}`).join(', ')} pixels`);
    perPoint.forEach((d, k) => t.ok(d < 5, `${id}: ${POINT_NAMES[k]} within 5 pixels (${d.toFixed(2)})`));
    distances.push(...perPoint);

    const [x1, y1, x2, y2] = face.detection.box;
    for (const [x, y] of face.landmarks.points) t.ok(x > x1 && x < x2 && y > y1 && y < y2, `${id}: landmark inside the face box`);
    t.ok(face.detection.score > 0.9, `${id}: O-Net score above the threshold`);
  }

  const mean = distances.reduce((sum, d) => sum + d, 0) / distances.length;
  t.comment(`mean landmark distance over ${distances.length} points: ${mean.toFixed(2)} pixels`);
  t.ok(mean < 2.5, `mean distance ${mean.toFixed(2)} < 2.5 pixels`);
});

t.test('eyes, nose and mouth are in anatomical order', async (t) => {
  const face = detected(t, (await run([await lfwImage(LFW_IDS[0]!)]))[0]);
  const [leftEye, rightEye, nose, leftMouth, rightMouth] = face.landmarks.points;
  t.ok(leftEye[0] < rightEye[0], 'left eye is left of the right eye');
  t.ok(leftMouth[0] < rightMouth[0], 'left mouth corner is left of the right one');
  t.ok(Math.max(leftEye[1], rightEye[1]) < nose[1], 'eyes above the nose');
  t.ok(nose[1] < Math.min(leftMouth[1], rightMouth[1]), 'nose above the mouth');
});

t.test('images without a face are rejected', async (t) => {
  const images = [
    syntheticImage('one-pixel', 1, 1, () => 128),
    syntheticImage('ten-pixels', 10, 10, (x, y) => (x * 25 + y * 7) % 256),
    syntheticImage('blank', 160, 120, () => 128),
  ];
  const records = await run(images);
  t.equal(records.length, 3);
  records.forEach((record, i) => {
    t.ok(isRejected(record), `${images[i]!.id} is rejected`);
    if (!isRejected(record)) return;
    t.equal(record.id, images[i]!.id);
    t.equal(record.stage, 'detectFaces');
    t.equal(record.reason, NO_FACE_REASON);
  });
});

t.test('center-crop substitutes and is counted', async (t) => {
  const images = [
    syntheticImage('one-pixel', 1, 1, () => 128),
    await lfwImage(LFW_IDS[1]!),
    syntheticImage('blank', 160, 120, () => 128),
  ];
  const records = await run(images, { onNoFace: 'center-crop' });
  t.equal(records.length, 3);
  const substituted = records.filter((r) => !isRejected(r) && r.substituted);
  const found = records.filter((r) => !isRejected(r) && !r.substituted);
  t.equal(substituted.length, 2, 'two substitutes');
  t.equal(found.length, 1, 'one detected face');
  t.same(
    records.map((r) => r.id),
    images.map((image) => image.id),
    'order and ids kept',
  );

  const blank = records[2];
  if (blank === undefined || isRejected(blank) || !blank.substituted) throw new Error('expected a substitute for the blank image');
  t.equal(blank.detection, undefined, 'a substitute has no detection');
  t.equal(blank.faceCount, 0);
  t.same(blank.landmarks.points, centerCropLandmarks(160, 120));

  // Aligning the substitute cuts a centred region: the image centre lands on the crop centre,
  // at fraction 0.5 of the largest region that fits, 0.5·min(160/96, 120/112) = 0.5357 image
  // pixels per output pixel.
  const aligned = alignFace(blank);
  const centre = applyAffine(aligned.transform, [(160 + 1) / 2, (120 + 1) / 2]);
  t.ok(distance(centre, [(SPHEREFACE_OUTPUT_SIZE.width + 1) / 2, (SPHEREFACE_OUTPUT_SIZE.height + 1) / 2]) < 1e-6, 'centre to centre');
  const [[a, b]] = aligned.transform;
  t.ok(Math.abs(Math.hypot(a, b) - 1 / (0.5 * Math.min(160 / 96, 120 / 112))) < 1e-6, 'scale as documented');
  t.ok(Math.abs(b) < 1e-9, 'no rotation');
});

t.test('policy all and center on two faces', async (t) => {
  // Two LFW images on one 700×250 canvas, at x = 0 and x = 350. The image centre is x = 350.5,
  // so the face on the right, near x = 470, is closer to it than the left one near x = 120.
  const left = path.join(LFW.images, LFW_IDS[0]!);
  const right = path.join(LFW.images, LFW_IDS[1]!);
  const canvas = sharp({ create: { width: 700, height: 250, channels: 3, background: { r: 90, g: 90, b: 90 } } }).composite([
    { input: left, left: 0, top: 0 },
    { input: right, left: 350, top: 0 },
  ]);
  const pair = await rawImage(sharp(await canvas.png().toBuffer()), 'pair.png');

  const all = await run([pair], { policy: 'all' });
  t.ok(all.length >= 2, `policy all gives at least two faces (got ${all.length})`);
  const faces = all.map((record) => detected(t, record));
  t.same(
    faces.map((f) => f.id),
    faces.map((_, i) => `pair.png#${i + 1}`),
    'ids get the face number',
  );
  t.ok(faces.every((f) => f.imageId === 'pair.png' && f.faceCount === faces.length), 'imageId and faceCount');
  t.ok(
    faces.some((f) => f.detection.box[2] < 250),
    'a face in the left tile',
  );
  t.ok(
    faces.some((f) => f.detection.box[0] > 350),
    'a face in the right tile',
  );

  const [centreFace] = await run([pair]);
  const chosen = detected(t, centreFace);
  t.ok(chosen.detection.box[0] > 350, 'center picks the face in the right tile');
  // The same choice worked out independently from the 'all' records.
  let nearest = faces[0]!;
  for (const face of faces) {
    const [x1, y1, x2, y2] = face.detection.box;
    const [nx1, ny1, nx2, ny2] = nearest.detection.box;
    const d = ((x1 + x2) / 2 - 350) ** 2 + ((y1 + y2) / 2 - 125) ** 2;
    const nd = ((nx1 + nx2) / 2 - 350) ** 2 + ((ny1 + ny2) / 2 - 125) ** 2;
    if (d < nd) nearest = face;
  }
  t.same(chosen.detection.box, nearest.detection.box, 'center equals the nearest of all');
  t.equal(chosen.id, 'pair.png', 'center keeps the image id');

  // The right tile's landmarks agree with those of the image on its own, shifted by 350 pixels.
  const alone = detected(t, (await run([await lfwImage(LFW_IDS[1]!)]))[0]);
  chosen.landmarks.points.forEach((point, k) => {
    const [x, y] = alone.landmarks.points[k]!;
    const d = distance(point, [x + 350, y]);
    t.ok(d < 2, `${POINT_NAMES[k]} within 2 pixels of the single-image result (${d.toFixed(2)})`);
  });
});

t.test('centerFaceIndex rule', async (t) => {
  // Centres (25, 25), (50, 60), (75, 25) against image centre (50, 50) of a 100×100 image.
  const boxes = [{ box: [0, 0, 50, 50] as const }, { box: [40, 50, 60, 70] as const }, { box: [50, 0, 100, 50] as const }];
  t.equal(centerFaceIndex(boxes, 100, 100), 1, 'nearest centre');
  t.equal(centerFaceIndex([boxes[0]!, boxes[0]!], 100, 100), 0, 'first on a tie');
  t.equal(centerFaceIndex([], 100, 100), -1, 'no faces');
});

t.test('a face cut by the image edge', async (t) => {
  // Aaron Eckhart's face spans x ≈ 76..168 in the full image. Dropping the left 100 columns
  // cuts it, so its box reaches past the left edge and the crops are zero-padded.
  const file = path.join(LFW.images, LFW_IDS[0]!);
  const cut = await rawImage(sharp(file).extract({ left: 100, top: 0, width: 150, height: 250 }), 'cut.png');
  const full = detected(t, (await run([await lfwImage(LFW_IDS[0]!)]))[0]);

  const face = detected(t, (await run([cut]))[0]);
  t.ok(face.detection.box[0] < 1, `MTCNN's box reaches past the left edge (x1 = ${face.detection.box[0].toFixed(1)})`);
  t.equal(face.box[0], 1, 'the record box is clamped to the first column');
  t.same(face.box.slice(1), face.detection.box.slice(1).map((v, i) => Math.min(Math.max(v, 1), i % 2 === 0 ? 250 : 150)), 'other sides clamped to the image');
  for (const [x, y] of face.landmarks.points) t.ok(x > 0 && x < 151 && y > 0 && y < 251, 'landmark inside the image');
  const rightEye = face.landmarks.points[1];
  const fullRightEye = full.landmarks.points[1];
  const d = distance(rightEye, [fullRightEye[0] - 100, fullRightEye[1]]);
  t.ok(d < 4, `right eye within 4 pixels of the full-image result (${d.toFixed(2)})`);
});

t.test('rejections pass through and bad buffers are rejected', async (t) => {
  const earlier = reject({ id: 'missing.jpg', path: '/nowhere/missing.jpg' }, 'readImages', 'file not found');
  const broken: DecodedImage = { id: 'broken', path: 'synthetic/broken', width: 10, height: 10, rgb: new Uint8Array(7) };
  const records = await run([earlier, broken]);
  t.equal(records[0], earlier, 'the earlier rejection is passed on unchanged');
  const second = records[1];
  t.ok(isRejected(second) && second.stage === 'detectFaces' && /expected 10×10×3 = 300/.test(second.reason), 'size mismatch named');
});

t.test('options are checked at call time', async (t) => {
  t.throws(() => detectFaces(nets, { policy: 'largest' as never }), /policy must be 'center' or 'all'/);
  t.throws(() => detectFaces(nets, { onNoFace: 'skip' as never }), /onNoFace must be 'reject' or 'center-crop'/);
  t.throws(() => detectFaces(nets, { centerCrop: { fraction: 0 } }), /fraction must be in \(0, 1\]/);
  t.throws(() => detectFaces(nets, { factor: 1.2 }), /factor must be between 0 and 1/);
});

t.test('detectFacesIn matches the operator', async (t) => {
  const image = await lfwImage(LFW_IDS[2]!);
  const [viaStream] = await run([image]);
  const [single] = await detectFacesIn(nets, image);
  t.same(detected(t, single).landmarks, detected(t, viaStream).landmarks);
  t.same(await detect(nets, syntheticImage('tiny', 11, 40, () => 0)), [], 'shorter side below minSize: no pyramid, no face');
});

t.test('no tensor leak', async (t) => {
  t.equal(tf.memory().numTensors, tensorsAtStart, 'tensor count back to its value after loading the networks');
});
