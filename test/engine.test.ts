import t from 'tap';
import path from 'node:path';

import { from, lastValueFrom, map, toArray } from 'rxjs';

import { readLandmarks } from '../datasets/lfw.ts';
import { lfwPaths, mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { loadEngineModel } from '../model/engine.ts';
import { embedBatch } from '../operators/extractFeatures.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, type AlignedFace, type LandmarkedImage } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';

const lfw = lfwPaths();
const IDS = ['Aaron_Eckhart/Aaron_Eckhart_0001.jpg', 'Abel_Pacheco/Abel_Pacheco_0001.jpg', 'Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg'];

async function alignedFaces(): Promise<AlignedFace[]> {
  const landmarks = await readLandmarks(lfw.landmarks);
  const faces = await lastValueFrom(
    from(IDS.map((id) => ({ id, path: path.join(lfw.images, id) }))).pipe(
      readImages(),
      map((image) => (isRejected(image) ? image : ({ ...image, landmarks: landmarks.get(image.id) } as LandmarkedImage))),
      similarityAlign(),
      toArray(),
    ),
  );
  return faces.filter((face): face is AlignedFace => !isRejected(face));
}

for (const spec of [`mobilefacenet:${mobileFaceNetCheckpoint()}`, 'sphereface20:random:3']) {
  t.test(`${spec.split(':')[0]} features agree across engines`, async (t) => {
    await initBackend();
    const faces = await alignedFaces();
    t.equal(faces.length, 3);
    const onnx = await loadEngineModel(spec, 'onnx');
    const tfjs = await loadEngineModel(spec, 'tfjs');
    t.teardown(() => {
      onnx.dispose();
      tfjs.dispose();
    });
    t.equal(onnx.engine, 'onnx');
    t.equal(tfjs.engine, 'tfjs');

    const fromOnnx = await embedBatch(onnx, faces, true);
    const fromTfjs = await embedBatch(tfjs, faces, true);
    for (const [i, feature] of fromOnnx.entries()) {
      const reference = fromTfjs[i] as Float32Array;
      t.equal(feature.length, 2 * onnx.embeddingSize, `${IDS[i]}: image and mirror features`);
      const scale = Math.max(...reference.map(Math.abs));
      const difference = Math.max(...feature.map((value, k) => Math.abs(value - (reference[k] as number))));
      t.ok(difference <= 1e-4 * scale, `${IDS[i]}: max difference ${difference.toExponential(2)} within 1e-4 of ${scale.toFixed(3)}`);
    }
  });
}

t.test('engine chosen by default is ONNX Runtime', async (t) => {
  const model = await loadEngineModel(`mobilefacenet:${mobileFaceNetCheckpoint()}`);
  t.teardown(() => model.dispose());
  t.equal(model.engine, 'onnx');
  t.throws(() => model.predict(undefined as never), /runs on ONNX Runtime/);
});
