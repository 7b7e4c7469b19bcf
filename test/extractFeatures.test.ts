import t from 'tap';
import * as tf from '@tensorflow/tfjs-core';
import { from, lastValueFrom, range, map, toArray } from 'rxjs';
import { initBackend } from '../model/backend.ts';
import { batch } from '../operators/batch.ts';
import { embedBatch, extractFeatures, flipHorizontal, normalizePixels } from '../operators/extractFeatures.ts';
import { flowControl } from '../operators/flowControl.ts';
import { isRejected, type AlignedFace, type Feature } from '../operators/records.ts';
import { topRowModel } from './helpers/tinyModel.ts';

await initBackend();

const IDENTITY: AlignedFace['transform'] = [
  [1, 0],
  [0, 1],
  [0, 0],
];

/** Builds a 2×3 face whose top row has red values `top` and whose other samples are 7. */
function face(id: string, top: [number, number, number], size = { height: 2, width: 3 }): AlignedFace {
  const rgb = new Uint8Array(size.height * size.width * 3).fill(7);
  top.forEach((value, x) => (rgb[x * 3] = value));
  return { id, path: `/faces/${id}.png`, ...size, rgb, transform: IDENTITY };
}

t.test('pixels 0, 127.5 and 255 normalise to -0.99609375, 0 and 0.99609375', async (t) => {
  const model = topRowModel(1, 3);
  const pixels = tf.tensor4d([0, 127.5, 255], [1, 1, 1, 3], 'float32');
  const normalized = normalizePixels(pixels, model);
  t.same(Array.from(await normalized.data()), [-0.99609375, 0, 0.99609375]);
  tf.dispose([pixels, normalized]);
});

t.test('BGR models get their channels reversed', async (t) => {
  const pixels = tf.tensor4d([0, 128, 255], [1, 1, 1, 3], 'int32');
  const normalized = normalizePixels(pixels, topRowModel(1, 1, 'BGR'));
  t.same(Array.from(await normalized.data()), [0.99609375, 0.00390625, -0.99609375]);
  tf.dispose([pixels, normalized]);
});

t.test('flipping NHWC [[0,1,2],[3,4,5]] along the width gives [[2,1,0],[5,4,3]]', async (t) => {
  const images = tf.tensor4d([0, 1, 2, 3, 4, 5], [1, 2, 3, 1]);
  const flipped = flipHorizontal(images);
  t.same(await flipped.array(), [[[[2], [1], [0]], [[5], [4], [3]]]]);
  tf.dispose([images, flipped]);
});

t.test('feature is the image feature followed by the mirror feature', async (t) => {
  const [vector] = await embedBatch(topRowModel(2, 3), [face('a', [0, 128, 255])]);
  // (p − 127.5) / 128 for p = 0, 128, 255; the mirror reads the row right to left.
  t.same(Array.from(vector ?? []), [-0.99609375, 0.00390625, 0.99609375, 0.99609375, 0.00390625, -0.99609375]);
  const [plain] = await embedBatch(topRowModel(2, 3), [face('a', [0, 128, 255])], false);
  t.same(Array.from(plain ?? []), [-0.99609375, 0.00390625, 0.99609375]);
});

t.test('extractFeatures keeps order and rejects a face of the wrong size', async (t) => {
  const model = topRowModel(2, 3);
  const faces = [face('a', [0, 0, 0]), face('small', [1, 1, 1], { height: 1, width: 3 }), face('b', [255, 255, 255])];
  const out = await lastValueFrom(from(faces).pipe(batch<AlignedFace>(2), extractFeatures(model), toArray()));
  t.same(
    out.map((r) => r.id),
    ['a', 'small', 'b'],
  );
  const small = out[1];
  t.ok(small !== undefined && isRejected(small) && /expects 3×2/.test(small.reason), 'reason names the expected size');
  const b = out[2] as Feature;
  t.equal(b.vector[0], 0.99609375);
});

t.test('tensor count returns to baseline after 1000 feature extractions', async (t) => {
  const model = topRowModel(2, 3);
  const baseline = tf.memory().numTensors;
  const flow = flowControl(64);
  const out = await lastValueFrom(
    range(0, 1000).pipe(
      flow.admit(),
      map((i) => face(`f${i}`, [i % 256, 0, 0])),
      batch<AlignedFace>(16),
      extractFeatures(model),
      flow.release(),
      toArray(),
    ),
  );
  t.equal(out.length, 1000);
  t.equal(tf.memory().numTensors, baseline);
});
