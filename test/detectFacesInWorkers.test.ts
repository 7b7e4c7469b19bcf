import t from 'tap';
import path from 'node:path';

import { from, lastValueFrom, toArray } from 'rxjs';
import sharp from 'sharp';

import { lfwPaths, modelsRoot } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { loadMtcnn } from '../model/mtcnn.ts';
import { detectFaces } from '../operators/detectFaces.ts';
import { detectFacesInWorkers } from '../operators/detectFacesInWorkers.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, type DecodedImage, type Maybe } from '../operators/records.ts';

const lfw = lfwPaths();
const IDS = ['Aaron_Eckhart/Aaron_Eckhart_0001.jpg', 'Abel_Pacheco/Abel_Pacheco_0001.jpg', 'Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg'];

t.test('worker pool gives the same records as detectFaces', async (t) => {
  const dir = t.testdir({});
  const blank = path.join(dir, 'blank.png');
  await sharp({ create: { width: 120, height: 160, channels: 3, background: { r: 128, g: 128, b: 128 } } }).png().toFile(blank);
  const refs = [...IDS.map((id) => ({ id, path: path.join(lfw.images, id) })), { id: 'blank.png', path: blank }, { id: 'missing.jpg', path: path.join(dir, 'missing.jpg') }];
  const decoded = await lastValueFrom(from(refs).pipe(readImages(), toArray()));

  await initBackend();
  const nets = await loadMtcnn();
  const inProcess = await lastValueFrom(from(decoded).pipe(detectFaces(nets), toArray()));
  nets.dispose();
  // loadMtcnn runs on TensorFlow.js, so the workers must too: the engines differ by about 1e-5 pixels.
  const pooled = await lastValueFrom(
    from(decoded as Maybe<DecodedImage>[]).pipe(detectFacesInWorkers({ modelsDir: path.join(modelsRoot(), 'mtcnn'), threads: 2, engine: 'tfjs' }), toArray()),
  );

  t.equal(pooled.length, refs.length, 'one record per image');
  t.same(pooled.map((r) => r.id), refs.map((r) => r.id), 'in input order');
  t.equal(pooled.filter(isRejected).length, 2, 'the blank image and the missing file are rejected');
  for (const [i, record] of pooled.entries()) {
    const expected = inProcess[i];
    if (isRejected(record) || isRejected(expected)) {
      t.same(record, expected, `${record.id}: same rejection`);
      continue;
    }
    t.ok(record.rgb === (decoded[i] as DecodedImage).rgb, `${record.id}: keeps the decoded pixels`);
    t.same({ ...record, rgb: undefined }, { ...expected, rgb: undefined }, `${record.id}: same detection and landmarks`);
  }
});

t.test('invalid pool options throw at call time', async (t) => {
  t.throws(() => detectFacesInWorkers({ modelsDir: '.', threads: 0 }), RangeError);
  t.throws(() => detectFacesInWorkers({ modelsDir: '.', policy: 'all' }), /policy "all" is not supported/);
  t.throws(() => detectFacesInWorkers({ modelsDir: '.', factor: 2 }), RangeError);
});
