import t from 'tap';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { readDetectionsFile } from '../lib/detectionsFile.ts';
import { lfwPaths, mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { writeSmallPairsFile } from './helpers/smallPairs.ts';

const run = promisify(execFile);
const lfw = lfwPaths();
const cli = path.resolve('bin/sphereface.js');
const FACES = ['Aaron_Eckhart/Aaron_Eckhart_0001.jpg', 'Abel_Pacheco/Abel_Pacheco_0001.jpg'];

t.test('preprocess writes PNG crops, a detections file and counts rejections', async (t) => {
  const dir = t.testdir({});
  const root = path.join(dir, 'photos');
  for (const id of FACES) {
    await mkdir(path.join(root, path.dirname(id)), { recursive: true });
    await copyFile(path.join(lfw.images, id), path.join(root, id));
  }
  await mkdir(path.join(root, 'Nobody'), { recursive: true });
  await sharp({ create: { width: 120, height: 160, channels: 3, background: { r: 128, g: 128, b: 128 } } })
    .jpeg()
    .toFile(path.join(root, 'Nobody', 'blank.jpg'));
  const whole = await readFile(path.join(lfw.images, FACES[0] as string));
  await mkdir(path.join(root, 'Broken'), { recursive: true });
  await writeFile(path.join(root, 'Broken', 'cut.jpg'), whole.subarray(0, Math.floor(whole.length * 0.6)));

  const out = path.join(dir, 'aligned');
  const { stdout } = await run(process.execPath, [cli, 'preprocess', '--root', root, '--out', out, '--no-progress'], { env: process.env });

  t.match(stdout, /4 images: 2 with a face, 2 crops written, 0 centred crops substituted, 2 rejected/);
  t.match(stdout, /rejected 1× detectFaces: no face found/);
  t.match(stdout, /rejected 1× readImages: /);

  for (const id of FACES) {
    const crop = await sharp(path.join(out, id.replace(/\.jpg$/, '.png'))).metadata();
    t.equal(crop.format, 'png', `${id} stored losslessly`);
    t.same([crop.width, crop.height], [96, 112], `${id} is 96×112`);
  }

  const detections = await readDetectionsFile(path.join(out, 'detections.jsonl'));
  t.equal(detections.entries.size, 4, 'every image has an entry, rejected ones included');
  t.equal(detections.header.detector['factor'], 0.85);
  const aaron = detections.entries.get(FACES[0] as string);
  t.equal(aaron?.faces.length, 1);
  t.match(aaron?.sha256 ?? '', /^[0-9a-f]{64}$/);
  t.equal(aaron?.path, path.join(root, FACES[0] as string), 'entry names the image file');
  t.equal(detections.entries.get('Nobody/blank.jpg')?.rejected, 'no face found');
  t.ok(detections.entries.get('Broken/cut.jpg')?.rejected, 'undecodable image recorded with its reason');
  t.equal(detections.entries.get('Broken/cut.jpg')?.width, undefined);

  const substituted = await run(
    process.execPath,
    [cli, 'preprocess', '--root', root, '--out', path.join(dir, 'centred'), '--on-no-face', 'center-crop', '--no-progress'],
    { env: process.env },
  );
  t.match(substituted.stdout, /4 images: 2 with a face, 3 crops written, 1 centred crops substituted, 1 rejected/);
  const centred = await sharp(path.join(dir, 'centred', 'Nobody', 'blank.png')).metadata();
  t.same([centred.width, centred.height], [96, 112]);
});

t.test('eval from a detections file equals eval with inline detection', async (t) => {
  const dir = t.testdir({});
  const { file: pairs, lines: kept } = await writeSmallPairsFile(dir, 1);

  // The images these pairs use, as a list file for preprocess.
  const ids = new Set<string>();
  for (const line of kept) {
    const f = line.split('\t');
    const image = (name: string, n: string): string => `${name}/${name}_${n.padStart(4, '0')}.jpg`;
    if (f.length === 3) ids.add(image(f[0] as string, f[1] as string)).add(image(f[0] as string, f[2] as string));
    else ids.add(image(f[0] as string, f[1] as string)).add(image(f[2] as string, f[3] as string));
  }
  const list = path.join(dir, 'images.txt');
  await writeFile(list, [...ids].join('\n'));
  const detections = path.join(dir, 'detections.jsonl');
  await run(process.execPath, [cli, 'preprocess', '--dataset', 'list', '--list', list, '--root', lfw.images, '--out', path.join(dir, 'aligned'), '--detections', detections, '--no-progress'], { env: process.env });

  const model = `mobilefacenet:${mobileFaceNetCheckpoint()}`;
  const fromFile = await run(process.execPath, [cli, 'eval', '--model', model, '--pairs', pairs, '--landmarks', detections, '--no-progress'], { env: process.env });
  const inline = await run(process.execPath, [cli, 'eval', '--model', model, '--pairs', pairs, '--landmarks', 'detected', '--no-progress'], { env: process.env });
  const table = (stdout: string): string => stdout.split('\n').filter((l) => l.startsWith('|')).join('\n');
  t.match(table(fromFile.stdout), /\|\s+THR \|/);
  t.equal(table(fromFile.stdout), table(inline.stdout), 'same thresholds and accuracies');
});

t.test('preprocess refuses outputs that could overwrite photos', async (t) => {
  const dir = t.testdir({ photos: { P: {} }, 'a-file': 'x' });
  const root = path.join(dir, 'photos');
  await copyFile(path.join(lfw.images, FACES[0] as string), path.join(root, 'P', 'a.jpg'));

  const same = run(process.execPath, [cli, 'preprocess', '--root', root, '--out', root, '--no-progress'], { env: process.env });
  await t.rejects(same, { code: 1 });
  t.match(await same.catch((e: { stderr: string }) => e.stderr), /overlaps the images folder/);
  t.same((await sharp(path.join(root, 'P', 'a.jpg')).metadata()).width, 250, 'the photo is untouched');

  const onFile = run(process.execPath, [cli, 'preprocess', '--root', root, '--out', path.join(dir, 'a-file'), '--no-progress'], { env: process.env });
  t.match(await onFile.catch((e: { stderr: string }) => e.stderr), /is a file; expected a folder/);

  const detectionsDir = run(process.execPath, [cli, 'preprocess', '--root', root, '--out', path.join(dir, 'o'), '--detections', dir, '--no-progress'], { env: process.env });
  t.match(await detectionsDir.catch((e: { stderr: string }) => e.stderr), /detections file .* is a directory/);
});

t.test('preprocess rejects a crop name that would overwrite another', async (t) => {
  const dir = t.testdir({ photos: { P: {} } });
  const root = path.join(dir, 'photos');
  await copyFile(path.join(lfw.images, FACES[0] as string), path.join(root, 'P', 'a.jpg'));
  await sharp(path.join(lfw.images, FACES[1] as string)).png().toFile(path.join(root, 'P', 'a.png'));
  const out = path.join(dir, 'aligned');
  const { stdout } = await run(process.execPath, [cli, 'preprocess', '--root', root, '--out', out, '--no-progress'], { env: process.env });
  t.match(stdout, /2 images: 2 with a face, 1 crops written, 0 centred crops substituted, 1 rejected/);
  t.match(stdout, /would overwrite the crop of P\/a\.jpg/);
});

t.test('eval rejects images changed since detection', async (t) => {
  const dir = t.testdir({});
  const { file: pairs } = await writeSmallPairsFile(dir, 1);
  // A detections file whose entries carry landmarks from lfw_landmark.txt but a wrong digest.
  const landmarkLines = (await readFile(lfw.landmarks, 'utf8')).split(/\r?\n/);
  const entries = landmarkLines
    .map((line) => line.split('\t'))
    .filter((f) => f.length === 11)
    .map((f) => {
      const v = f.slice(1).map(Number);
      const landmarks = [0, 1, 2, 3, 4].map((k) => [v[2 * k], v[2 * k + 1]]);
      return JSON.stringify({ id: f[0], sha256: 'f'.repeat(64), width: 250, height: 250, faces: [{ box: [1, 1, 250, 250], score: 1, landmarks }] });
    });
  const detections = path.join(dir, 'detections.jsonl');
  await writeFile(detections, `{"format":"sphereface-detections","version":1,"detector":{}}\n${entries.join('\n')}\n`);
  const result = run(process.execPath, [cli, 'eval', '--model', `mobilefacenet:${mobileFaceNetCheckpoint()}`, '--pairs', pairs, '--landmarks', detections], { env: process.env });
  t.match(await result.catch((e: { stderr: string }) => e.stderr), /changed since .*detections\.jsonl was written \(SHA-256 differs\)/);
});
