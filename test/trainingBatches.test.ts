/**
 * The training data order: a permutation per epoch, batches across epoch boundaries, seeded
 * mirrors, and the same batch whether reached straight through or after a resume.
 */
import t from 'tap';
import { lastValueFrom, toArray } from 'rxjs';

import type { TrainingSample } from '../datasets/training.ts';
import { batchNumbers, loadTrainingBatches, mirrorInPlace, TrainingOrder, type CropSource } from '../operators/trainingBatches.ts';
import { reject } from '../operators/records.ts';

const SAMPLES: TrainingSample[] = Array.from({ length: 10 }, (_, i) => ({
  path: `/faces/p${i % 3}/${i}.png`,
  label: i % 3,
  identity: `p${i % 3}`,
  id: `p${i % 3}/${i}.png`,
}));

/** Returns a 2×2 crop whose pixels encode the sample number, so packing and mirroring can be read back. */
const crops: CropSource = async (sample) => {
  const n = Number(sample.id.split('/')[1]!.replace('.png', ''));
  if (n === 7) return reject({ id: sample.id, path: sample.path }, 'readImages', 'cannot decode');
  return Uint8Array.from({ length: 12 }, (_, k) => n * 20 + k);
};

t.test('each epoch is a permutation, and batches run across epochs', async (t) => {
  const order = new TrainingOrder(10, { seed: 5, batchSize: 4 });
  const items = Array.from({ length: 30 }, (_, i) => order.item(i));
  for (let epoch = 0; epoch < 3; epoch++) {
    const samples = items.slice(epoch * 10, epoch * 10 + 10).map((item) => item.sample);
    t.same([...samples].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], `epoch ${epoch} holds every sample once`);
    t.ok(items.slice(epoch * 10, epoch * 10 + 10).every((item, k) => item.epoch === epoch && item.position === k));
  }
  t.not(items.slice(0, 10).map((i) => i.sample).join(), items.slice(10, 20).map((i) => i.sample).join(), 'epochs are shuffled differently');
  const batch2 = order.batchItems(2);
  t.same(batch2.map((i) => [i.epoch, i.position]), [[0, 8], [0, 9], [1, 0], [1, 1]], 'batch 2 ends epoch 0 and starts epoch 1');
  const mirrored = items.filter((i) => i.mirror).length;
  t.ok(mirrored > 5 && mirrored < 25, `${mirrored} of 30 items mirrored`);
  t.equal(new TrainingOrder(10, { seed: 5, batchSize: 4, mirror: false }).batchItems(3).some((i) => i.mirror), false);
});

t.test('a batch does not depend on what was drawn before', async (t) => {
  const straight = new TrainingOrder(10, { seed: 9, batchSize: 3 });
  for (let b = 0; b < 7; b++) straight.batchItems(b);
  const fresh = new TrainingOrder(10, { seed: 9, batchSize: 3 });
  t.same(fresh.batchItems(7), straight.batchItems(7), 'batch 7 is the same from a fresh order, as after a resume');
  t.not(JSON.stringify(new TrainingOrder(10, { seed: 10, batchSize: 3 }).batchItems(7)), JSON.stringify(fresh.batchItems(7)), 'another seed, another batch');
});

t.test('batches pack crops, mirror the drawn ones and leave out rejected ones', async (t) => {
  const order = new TrainingOrder(10, { seed: 5, batchSize: 4 });
  const batches = await lastValueFrom(batchNumbers(0, 5).pipe(loadTrainingBatches(SAMPLES, order, crops, { height: 2, width: 2 }), toArray()));
  t.same(batches.map((b) => b.index), [0, 1, 2, 3, 4]);
  let rejected = 0;
  for (const batch of batches) {
    const items = order.batchItems(batch.index);
    const kept = items.filter((i) => i.sample !== 7);
    rejected += batch.rejected.length;
    t.equal(batch.size, kept.length);
    t.same(Array.from(batch.labels), kept.map((i) => SAMPLES[i.sample]!.label));
    kept.forEach((item, k) => {
      const expected = Uint8Array.from({ length: 12 }, (_, j) => item.sample * 20 + j);
      if (item.mirror) mirrorInPlace(expected, 2, 2);
      t.same(Array.from(batch.pixels.subarray(k * 12, k * 12 + 12)), Array.from(expected), `batch ${batch.index} item ${k}`);
    });
  }
  t.equal(rejected, 2, 'sample 7 is rejected once in each of the two epochs the 20 items cover');
});

t.test('mirrorInPlace reverses each row of pixels', async (t) => {
  const rgb = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]);
  mirrorInPlace(rgb, 2, 3);
  t.same(Array.from(rgb), [7, 8, 9, 4, 5, 6, 1, 2, 3, 16, 17, 18, 13, 14, 15, 10, 11, 12]);
});

t.test('bad orders are refused', async (t) => {
  t.throws(() => new TrainingOrder(0, { seed: 1, batchSize: 4 }), /has 0 samples/);
  t.throws(() => new TrainingOrder(5, { seed: 1, batchSize: 0 }), /batch size must be a positive integer, got 0/);
  t.throws(() => loadTrainingBatches(SAMPLES.slice(0, 3), new TrainingOrder(10, { seed: 1, batchSize: 2 }), crops, { height: 2, width: 2 }), /covers 10 samples but the dataset has 3/);
});
