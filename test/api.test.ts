/**
 * The library API (`embed`, `verify`, `createFaceVerifier`), imported by the package name as a
 * user would, and the `sphereface embed` and `sphereface verify` commands. Everything runs on real
 * LFW photos with the real MTCNN weights and the MobileFaceNet checkpoint.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

import { from, lastValueFrom, toArray } from 'rxjs';
import sharp from 'sharp';
import t from 'tap';

import {
  MissingThresholdError,
  NoFaceError,
  batch,
  createFaceVerifier,
  defaultModelSpec,
  detectFaces,
  embed,
  extractFeatures,
  isRejected,
  loadMtcnn,
  loadModel,
  readImages,
  similarityAlign,
  verify,
  type Feature,
  type ModelManifest,
} from 'sphereface-ts';
import { lfwPaths } from '../lib/paths.ts';

const execFileAsync = promisify(execFile);
const LFW = lfwPaths();
const CLI = path.resolve('bin/sphereface.js');

const photo = (id: string): string => path.join(LFW.images, id);
/** A same-person pair and a different-person pair of LFW View 2 (`pairs.txt` lines 3002 and 302). */
const SAME = [photo('Aaron_Peirsol/Aaron_Peirsol_0001.jpg'), photo('Aaron_Peirsol/Aaron_Peirsol_0004.jpg')] as const;
const DIFFERENT = [photo('Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg'), photo('Dean_Barker/Dean_Barker_0001.jpg')] as const;

/**
 * The cosine threshold of the MobileFaceNet checkpoint on LFW View 2 without mean subtraction:
 * the mean of the ten fold thresholds of `verifyFolds` with `subtractMean: false` over the
 * image-plus-mirror features of `sphereface eval` (landmarks from `lfw_landmark.txt`), which
 * scores 99.02 % there. The pairs below score far from it on both sides.
 */
const LFW_THRESHOLD = 0.2956;

/** MobileFaceNet's embedding is 128 long; the mirror's embedding doubles the feature. */
const FEATURE_LENGTH = 256;

const verifier = await createFaceVerifier({ threshold: LFW_THRESHOLD });
t.teardown(() => verifier.dispose());

function norm(vector: Float32Array): number {
  let sum = 0;
  for (const value of vector) sum += value * value;
  return Math.sqrt(sum);
}

function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i += 1) sum += (a[i] as number) * (b[i] as number);
  return sum;
}

/** Writes a flat grey 250×250 JPEG, in which MTCNN finds no face. */
async function writeGreyPhoto(dir: string): Promise<string> {
  const file = path.join(dir, 'grey.jpg');
  await sharp({ create: { width: 250, height: 250, channels: 3, background: { r: 128, g: 128, b: 128 } } }).jpeg().toFile(file);
  return file;
}

/**
 * Writes a photo with two LFW faces side by side: `left` at its own 250×250 size, and `right`
 * enlarged to 320×320, so that the right face has the larger box.
 */
async function writeTwoFacePhoto(dir: string, left: string, right: string): Promise<string> {
  const file = path.join(dir, 'two-faces.png');
  const enlarged = await sharp(right).resize(320, 320).toBuffer();
  await sharp({ create: { width: 570, height: 320, channels: 3, background: { r: 0, g: 0, b: 0 } } })
    .composite([
      { input: left, left: 0, top: 35 },
      { input: enlarged, left: 250, top: 0 },
    ])
    .png()
    .toFile(file);
  return file;
}

function runCli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return execFileAsync(process.execPath, [CLI, ...args], { maxBuffer: 1 << 24 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code?: number; stdout?: string; stderr?: string }) => ({ code: error.code ?? -1, stdout: error.stdout ?? '', stderr: error.stderr ?? '' }),
  );
}

t.test('verify scores LFW pairs on the right sides', async (t) => {
  const same = await verify(SAME[0], SAME[1], { threshold: LFW_THRESHOLD });
  t.ok(same.score > LFW_THRESHOLD, `same-person score ${same.score} is above ${LFW_THRESHOLD}`);
  t.equal(same.same, true);
  t.equal(same.threshold, LFW_THRESHOLD);
  t.equal(same.thresholdSource, 'option');
  t.equal(same.model, defaultModelSpec());

  const different = await verifier.verify(DIFFERENT[0], DIFFERENT[1]);
  t.ok(different.score < LFW_THRESHOLD, `different-person score ${different.score} is below ${LFW_THRESHOLD}`);
  t.equal(different.same, false);
  t.equal(different.faces[0].source, DIFFERENT[0]);
  t.equal(different.faces[1].source, DIFFERENT[1]);
  t.ok(Math.abs(different.score - dot(different.faces[0].feature, different.faces[1].feature)) < 1e-9, 'score is the dot product of the unit features');
});

t.test('embed returns a unit-length feature', async (t) => {
  const face = await embed(SAME[0]);
  t.equal(face.feature.length, FEATURE_LENGTH);
  t.ok(Math.abs(norm(face.feature) - 1) < 1e-5, `norm ${norm(face.feature)} is 1`);
  t.equal(face.faceCount, 1);
  t.equal(face.faceIndex, 0);
  t.equal(face.selection, 'largest');
  t.same(face.imageSize, { width: 250, height: 250 });
  t.ok(face.score > 0.9 && face.score <= 1, `detection score ${face.score}`);

  const [x1, y1, x2, y2] = face.box;
  t.ok(x1 >= 1 && y1 >= 1 && x2 <= 250 && y2 <= 250 && x1 < x2 && y1 < y2, `box ${face.box.join(', ')} lies inside the image`);
  t.equal(face.landmarks.length, 5);
  for (const [x, y] of face.landmarks) t.ok(x > x1 && x < x2 && y > y1 && y < y2, `landmark (${x}, ${y}) lies inside the box`);
});

t.test('embed agrees with the operator pipeline', async (t) => {
  // The same steps composed from the operators, as `sphereface eval --landmarks detected` runs them.
  const nets = await loadMtcnn();
  const { model } = await loadModel(defaultModelSpec());
  t.teardown(() => {
    nets.dispose();
    model.dispose();
  });
  const records = await lastValueFrom(
    from([{ id: 'a', path: SAME[0] }]).pipe(readImages(), detectFaces(nets), similarityAlign(), batch(4), extractFeatures(model), toArray()),
  );
  const feature = records[0];
  if (feature === undefined || isRejected(feature)) throw new Error(`the pipeline rejected ${SAME[0]}`);
  const vector = (feature as Feature).vector;

  const face = await verifier.embed(SAME[0]);
  const length = norm(vector);
  const largestDifference = Math.max(...Array.from(vector, (value, i) => Math.abs(value / length - (face.feature[i] as number))));
  t.ok(largestDifference < 1e-6, `features differ by at most ${largestDifference}`);
});

t.test('embed reads an encoded image from a buffer', async (t) => {
  const fromFile = await verifier.embed(SAME[1]);
  const fromBuffer = await verifier.embed(await readFile(SAME[1]));
  t.match(fromBuffer.source, /^<buffer of \d+ bytes>$/);
  t.same(Array.from(fromBuffer.feature), Array.from(fromFile.feature), 'same feature as from the file');
  t.same(fromBuffer.box, fromFile.box);
});

t.test('photo without a face', async (t) => {
  const grey = await writeGreyPhoto(t.testdir({}));

  await t.rejects(verifier.embed(grey), NoFaceError, 'embed rejects with NoFaceError');
  await t.rejects(verifier.embed(grey), { message: `no face found in ${grey}; expected a photo with a face at least 20 pixels high (MTCNN minSize)` });
  await t.rejects(verifier.verify(SAME[0], grey), { name: 'NoFaceError', source: grey }, 'verify names the photo without a face');
});

t.test('photo with two faces', async (t) => {
  const left = photo('Aaron_Peirsol/Aaron_Peirsol_0001.jpg');
  const right = photo('Dean_Barker/Dean_Barker_0001.jpg');
  const twoFaces = await writeTwoFacePhoto(t.testdir({}), left, right);

  const largest = await verifier.embed(twoFaces);
  t.equal(largest.faceCount, 2, 'reports 2 faces');
  t.equal(largest.faces.length, 2);
  t.equal(largest.selection, 'largest');
  t.ok(largest.box[0] >= 250, `the largest face is the enlarged right one (box x1 ${largest.box[0]})`);
  const areas = largest.faces.map(({ box: [x1, y1, x2, y2] }) => (x2 - x1 + 1) * (y2 - y1 + 1));
  t.equal(largest.faceIndex, areas.indexOf(Math.max(...areas)), 'faceIndex points at the largest box');
  t.same(largest.box, largest.faces[largest.faceIndex]?.box);

  const other = await verifier.embed(twoFaces, { face: 1 - largest.faceIndex });
  t.ok(other.box[2] <= 250, `the other index is the left face (box x2 ${other.box[2]})`);

  // Each chosen face carries the identity of its own half.
  const rightAlone = await verifier.embed(right);
  const leftAlone = await verifier.embed(left);
  t.ok(dot(largest.feature, rightAlone.feature) > dot(largest.feature, leftAlone.feature), 'largest face matches the right photo');
  t.ok(dot(other.feature, leftAlone.feature) > dot(other.feature, rightAlone.feature), 'other face matches the left photo');

  await t.rejects(verifier.embed(twoFaces, { face: 2 }), { name: 'RangeError', message: /face index 2 requested, but .* has 2 face\(s\)/ });
});

t.test('threshold comes from the option or the manifest', async (t) => {
  // The default checkpoint is a published file whose LFW threshold is stored by its SHA-256.
  const byDefault = await createFaceVerifier();
  t.equal(byDefault.threshold, 0.2956, 'the default checkpoint comes with its LFW threshold');
  const defaultResult = await byDefault.verify(SAME[0], SAME[1]);
  byDefault.dispose();
  t.equal(defaultResult.thresholdSource, 'manifest');

  const { model } = await loadModel(defaultModelSpec());
  t.teardown(() => model.dispose());
  // Given as a loaded network, the model carries no threshold.
  const withoutThreshold = await createFaceVerifier({ model });
  t.teardown(() => withoutThreshold.dispose());
  t.equal(withoutThreshold.threshold, undefined);
  await t.rejects(withoutThreshold.verify(SAME[0], SAME[1]), MissingThresholdError);
  await t.rejects(withoutThreshold.verify(SAME[0], SAME[1]), { message: /no verification threshold: model mobilefacenet stores none.*--threshold X.*\{ threshold: X \}/ });

  const manifest: ModelManifest = {
    format: 'sphereface-ts/model',
    version: 1,
    architecture: 'mobilefacenet',
    inputSize: { height: 112, width: 96 },
    channelOrder: model.channelOrder,
    normalization: model.normalization,
    embeddingSize: model.embeddingSize,
    alignment: 'sphereface-112x96',
    threshold: { value: 0.5, protocol: 'a value for this test' },
    source: { kind: 'pytorch', file: '068.ckpt', sha256: '0'.repeat(64) },
    weights: 'model.json',
  };
  const fromManifest = await createFaceVerifier({ model: { model, manifest } });
  const result = await fromManifest.verify(SAME[0], SAME[1]);
  fromManifest.dispose();
  t.equal(result.threshold, 0.5);
  t.equal(result.thresholdSource, 'manifest');
  t.equal(result.model, 'mobilefacenet');
  const overridden = await createFaceVerifier({ model: { model, manifest }, threshold: 0.9 });
  const strict = await overridden.verify(SAME[0], SAME[1]);
  overridden.dispose();
  t.equal(strict.threshold, 0.9);
  t.equal(strict.thresholdSource, 'option');
  t.equal(strict.same, strict.score > 0.9);
  t.ok(Math.abs(strict.score - result.score) < 1e-12, 'a loaded model survives the dispose of the verifier that borrowed it');

  await t.rejects(createFaceVerifier({ model: { model, manifest: { ...manifest, alignment: 'arcface-112x112' } } }), {
    message: /takes 112×96 inputs, but its alignment arcface-112x112 makes 112×112 crops/,
  });
});

t.test('invalid options are rejected', async (t) => {
  await t.rejects(createFaceVerifier({ face: -1 }), { name: 'RangeError', message: "face must be 'largest', 'center' or a 0-based face index, got -1" });
  await t.rejects(createFaceVerifier({ threshold: 2 }), { name: 'RangeError', message: 'threshold must be a cosine score from -1 to 1, got 2' });
  await t.rejects(verifier.embed(42 as unknown as string), { name: 'TypeError', message: /got a number/ });
  await t.rejects(verifier.embed(path.join(LFW.images, 'missing.jpg')), { name: 'ImageInputError', message: /file not found: .*missing\.jpg/ });
  await t.rejects(verifier.embed(new Uint8Array([1, 2, 3])), { name: 'ImageInputError', message: /<buffer of 3 bytes>/ });
});

t.test('disposed verifier rejects calls', async (t) => {
  const shortLived = await createFaceVerifier();
  shortLived.dispose();
  await t.rejects(shortLived.embed(SAME[0]), { message: /disposed/ });
});

t.test('sphereface verify prints the decision', async (t) => {
  const same = await runCli(['verify', SAME[0], SAME[1], '--threshold', String(LFW_THRESHOLD)]);
  t.equal(same.code, 0, 'exit code 0', { stderr: same.stderr });
  const lines = same.stdout.trim().split('\n');
  t.match(lines[0], `${SAME[0]}: 1 face found, box [`);
  t.match(lines[1], `${SAME[1]}: 1 face found, box [`);
  t.equal(lines[2], `model: ${defaultModelSpec()}`);
  t.equal(lines[3], `threshold: ${LFW_THRESHOLD} (from --threshold)`);
  t.match(lines[4], /^cosine score: 0\.\d{4}$/);
  t.equal(lines[5], 'same');

  const different = await runCli(['verify', DIFFERENT[0], DIFFERENT[1], '--threshold', String(LFW_THRESHOLD)]);
  t.equal(different.code, 0, 'exit code 0', { stderr: different.stderr });
  t.equal(different.stdout.trim().split('\n').at(-1), 'different');
});

t.test('sphereface verify fails without a face or threshold', async (t) => {
  const grey = await writeGreyPhoto(t.testdir({}));
  const noFace = await runCli(['verify', SAME[0], grey, '--threshold', '0.3']);
  t.equal(noFace.code, 1, 'exit code 1 without a face');
  t.equal(noFace.stdout, '');
  t.match(noFace.stderr, `no face found in ${grey}`);

  // A network with random weights has no stored threshold.
  const noThreshold = await runCli(['verify', SAME[0], SAME[1], '--model', 'sphereface20:random:1']);
  t.equal(noThreshold.code, 1, 'exit code 1 without a threshold');
  t.match(noThreshold.stderr, 'no verification threshold');
  t.match(noThreshold.stderr, '--threshold X');

  const badThreshold = await runCli(['verify', SAME[0], SAME[1], '--threshold', '1.5']);
  t.not(badThreshold.code, 0);
  t.match(badThreshold.stderr, 'expected a cosine score from -1 to 1, got "1.5"');
});

t.test('sphereface embed writes one line per face', async (t) => {
  const dir = t.testdir({});
  const grey = await writeGreyPhoto(dir);
  const twoFaces = await writeTwoFacePhoto(dir, photo('Aaron_Peirsol/Aaron_Peirsol_0001.jpg'), photo('Dean_Barker/Dean_Barker_0001.jpg'));
  const out = path.join(dir, 'out', 'features.jsonl');

  const result = await runCli(['embed', SAME[0], grey, twoFaces, '--out', out]);
  t.equal(result.code, 0, 'exit code 0', { stderr: result.stderr });
  t.match(result.stderr, `rejected ${grey}: no face found in ${grey}`);
  t.match(result.stderr, new RegExp(`${twoFaces}: 2 faces found, used index [01] by rule largest, box \\[`));
  t.match(result.stderr, '3 photo(s): 2 embedded with mobilefacenet:');
  t.match(result.stderr, '1 rejected');
  t.match(result.stderr, 'rejected 1× no face found');

  const lines = (await readFile(out, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
  t.equal(lines.length, 2, 'one line for each photo with a face');
  t.equal(lines[0]?.['file'], SAME[0]);
  t.equal(lines[1]?.['file'], twoFaces);
  t.equal(lines[1]?.['faceCount'], 2);
  t.equal(lines[1]?.['selection'], 'largest');
  const feature = lines[0]?.['feature'] as number[];
  t.equal(feature.length, FEATURE_LENGTH);
  t.ok(Math.abs(Math.hypot(...feature) - 1) < 1e-5, 'feature has unit length');
  t.equal((lines[0]?.['landmarks'] as unknown[]).length, 5);
  t.equal((lines[0]?.['box'] as unknown[]).length, 4);

  const allRejected = await runCli(['embed', grey]);
  t.equal(allRejected.code, 1, 'exit code 1 when no photo has a face');
  t.equal(allRejected.stdout, '');
});

t.test('declarations build', async (t) => {
  const outDir = t.testdir({});
  const tsc = path.resolve('node_modules/typescript/bin/tsc');
  const { code, stdout, stderr } = await execFileAsync(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', outDir], { maxBuffer: 1 << 24 }).then(
    (output) => ({ code: 0, ...output }),
    (error: { code?: number; stdout?: string; stderr?: string }) => ({ code: error.code ?? -1, stdout: error.stdout ?? '', stderr: error.stderr ?? '' }),
  );
  t.equal(code, 0, 'tsc -p tsconfig.build.json succeeds', { output: `${stdout}${stderr}` });
  const index = await readFile(path.join(outDir, 'index.d.ts'), 'utf8');
  t.match(index, "export * from './api/face.ts';");
  const face = await readFile(path.join(outDir, 'api', 'face.d.ts'), 'utf8');
  t.match(face, 'export declare function verify(');
});
