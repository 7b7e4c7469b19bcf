import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import * as ort from 'onnxruntime-node';
import { from, lastValueFrom, toArray } from 'rxjs';
import t, { type Test } from 'tap';

import { lfwPaths, modelsRoot } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { caffePooledSize, createMtcnn, LNET_INPUT, LNET_PATCHES, mapMtcnnParameters, maxPoolCeil, readMtcnnCaffeModels, type MtcnnEngineNets } from '../model/mtcnn.ts';
import { cropAndResample, detect, imResample, type Box, type Detection, type LandmarkRefinement } from '../model/mtcnnDetect.ts';
import { loadMtcnnEngine, OnnxMtcnnNets } from '../model/mtcnnEngine.ts';
import { addCaffeMaxPool, encodeOnnxGraph } from '../model/mtcnnOnnx.ts';
import { DataType } from '../model/onnx/onnx.proto.ts';
import { GraphBuilder } from '../model/onnxExport.ts';
import { detectFacesInWorkers } from '../operators/detectFacesInWorkers.ts';
import { decodeImage } from '../operators/readImages.ts';
import { isRejected, type DecodedImage, type Maybe } from '../operators/records.ts';

const MODEL_DIR = path.join(modelsRoot(), 'mtcnn');
const LFW_IDS = [
  'Aaron_Eckhart/Aaron_Eckhart_0001.jpg',
  'Ahmad_Jbarah/Ahmad_Jbarah_0001.jpg',
  'Alec_Baldwin/Alec_Baldwin_0002.jpg',
  'Amelie_Mauresmo/Amelie_Mauresmo_0017.jpg',
  'Annette_Bening/Annette_Bening_0001.jpg',
];
/** Agreement of the engines' outputs, relative to the largest magnitude of the tfjs output. */
const RELATIVE_TOLERANCE = 1e-4;
/** Agreement of detected boxes and landmarks, in pixels. */
const PIXEL_TOLERANCE = 1e-3;

await initBackend();
const models = await readMtcnnCaffeModels(MODEL_DIR, { lnet: true });
const tfjsNets = createMtcnn(models);
const onnxNets = await OnnxMtcnnNets.create(mapMtcnnParameters(models), { intraOpNumThreads: 1 });
t.teardown(() => {
  tfjsNets.dispose();
  onnxNets.dispose();
});

async function lfwImage(id: string): Promise<DecodedImage> {
  const image = await decodeImage({ id, path: path.join(lfwPaths().images, id) });
  if (isRejected(image)) throw new Error(`cannot read ${id}: ${image.reason}`);
  return image;
}

const images = await Promise.all(LFW_IDS.map(lfwImage));

/**
 * Normalises resampled RGB images (height × width × 3 each) as the detector does,
 * (v − 127.5) × 0.0078125, and transposes each (x↔y) into an NHWC batch [N, width, height, 3].
 */
function transposedBatch(pixels: readonly Float32Array[], height: number, width: number): tf.Tensor4D {
  const data = new Float32Array(pixels.length * height * width * 3);
  pixels.forEach((image, n) => {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        for (let c = 0; c < 3; c++) data[((n * width + x) * height + y) * 3 + c] = ((image[(y * width + x) * 3 + c] ?? 0) - 127.5) * 0.0078125;
      }
    }
  });
  return tf.tensor4d(data, [pixels.length, width, height, 3]);
}

/** Crops of every test image around the centre (LFW faces sit there), plus offset crops. */
function crops(size: number): Float32Array[] {
  const boxes: Box[] = [
    [70, 70, 180, 180],
    [60, 80, 170, 190],
    [90, 60, 160, 130],
  ];
  return images.flatMap((image) => boxes.map((box) => cropAndResample(image, box, size)));
}

interface Agreement {
  readonly maxDifference: number;
  readonly scale: number;
}

async function agreement(expected: tf.Tensor, actual: tf.Tensor): Promise<Agreement> {
  const a = await expected.data();
  const b = await actual.data();
  let maxDifference = a.length === b.length ? 0 : Infinity;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    maxDifference = Math.max(maxDifference, Math.abs((a[i] ?? NaN) - (b[i] ?? NaN)));
    scale = Math.max(scale, Math.abs(a[i] ?? 0));
  }
  return { maxDifference: Number.isNaN(maxDifference) ? Infinity : maxDifference, scale };
}

/** Compares every output of one net on both engines, field by field. */
async function compareOutputs(t: Test, label: string, expected: Record<string, tf.Tensor>, actual: Record<string, tf.Tensor>): Promise<void> {
  for (const [field, tensor] of Object.entries(expected)) {
    const other = actual[field];
    t.ok(other !== undefined, `${label}: ONNX output has ${field}`);
    if (other === undefined) continue;
    t.same(other.shape, tensor.shape, `${label} ${field}: shape`);
    const { maxDifference, scale } = await agreement(tensor, other);
    t.ok(scale > 0, `${label} ${field}: the tfjs output is not all zeros`);
    t.ok(maxDifference <= RELATIVE_TOLERANCE * scale, `${label} ${field}: max difference ${maxDifference.toExponential(2)} ≤ 1e-4 × ${scale.toFixed(3)}`);
  }
  for (const tensor of [...Object.values(expected), ...Object.values(actual)]) tensor.dispose();
}

t.test('MaxPool ceil_mode matches Caffe pooling', async (t) => {
  for (const [kernel, stride] of [
    [2, 2],
    [3, 2],
  ] as const) {
    const graph = new GraphBuilder();
    addCaffeMaxPool(graph, 'x', 'y', kernel, stride);
    const info = (name: string, dims: string[]) => ({
      name,
      type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: dims.map((d) => ({ dim_param: d })) } } },
    });
    const bytes = encodeOnnxGraph('maxpool', graph, [info('x', ['N', 'C', 'H', 'W'])], [info('y', ['N', 'C', 'h', 'w'])]);
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'], intraOpNumThreads: 1 });

    // Sizes where the last window fits and where it hangs over the edge, which Caffe clips to the map.
    for (const [height, width] of [
      [12, 12],
      [13, 12],
      [10, 11],
      [22, 22],
      [9, 9],
      [21, 20],
      [35, 46],
    ] as const) {
      const values = Float32Array.from({ length: height * width * 2 }, (_, i) => -Math.abs(Math.sin(i * 12.9898) * 43.5453));
      const results = await session.run({ x: new ort.Tensor('float32', values, [1, 2, height, width]) });
      const output = results['y'];
      const expectedDims = [1, 2, caffePooledSize(height, kernel, stride), caffePooledSize(width, kernel, stride)];
      t.same(output?.dims, expectedDims, `${kernel}/${stride} on ${height}×${width}: output size is caffePooledSize's`);

      // maxPoolCeil takes NHWC; the values above are NCHW, and all negative, so a zero pad would show.
      const nhwc = tf.tidy(() => tf.transpose(tf.tensor4d(values, [1, 2, height, width]), [0, 2, 3, 1]) as tf.Tensor4D);
      const pooled = maxPoolCeil(nhwc, kernel, stride);
      const expected = tf.tidy(() => tf.transpose(pooled, [0, 3, 1, 2]));
      t.same(Array.from(output?.data as Float32Array), Array.from(await expected.data()), `${kernel}/${stride} on ${height}×${width}: values equal maxPoolCeil's`);
      tf.dispose([nhwc, pooled, expected]);
    }
    await session.release();
  }
});

t.test('P-Net on ORT matches tfjs at odd sizes', async (t) => {
  // Whole LFW images resampled to odd sizes, so every pooled map has a clipped last window.
  for (const [height, width] of [
    [37, 53],
    [61, 45],
  ] as const) {
    const resized = images.map((image) => imResample(image.rgb, image.height, image.width, height, width));
    const input = transposedBatch(resized, height, width);
    await compareOutputs(t, `P-Net ${height}×${width}`, { ...tfjsNets.pnet(input) }, { ...(await onnxNets.pnet(input)) });
    input.dispose();
  }
});

t.test('R-Net and O-Net on ORT match tfjs', async (t) => {
  const rInput = transposedBatch(crops(24), 24, 24);
  await compareOutputs(t, 'R-Net', { ...tfjsNets.rnet(rInput) }, { ...(await onnxNets.rnet(rInput)) });
  rInput.dispose();

  const oInput = transposedBatch(crops(48), 48, 48);
  const oExpected = tfjsNets.onet(oInput);
  const faceScores = Array.from(await oExpected.prob.data());
  t.ok(faceScores.some((p) => p > 0.9), 'some crops are faces for O-Net, so the probabilities are not all near 0');
  await compareOutputs(t, 'O-Net', { ...oExpected }, { ...(await onnxNets.onet(oInput)) });
  oInput.dispose();
});

t.test('L-Net on ORT matches tfjs', async (t) => {
  // Patches around five points near each face centre, packed as the detector packs them.
  const faces = images.map((image) =>
    [
      [105, 110],
      [145, 110],
      [125, 135],
      [108, 160],
      [142, 160],
    ].map(([x = 0, y = 0]) => cropAndResample(image, [x - 12, y - 12, x + 12, y + 12], LNET_INPUT)),
  );
  const channels = 3 * LNET_PATCHES;
  const data = new Float32Array(faces.length * LNET_INPUT * LNET_INPUT * channels);
  faces.forEach((patches, n) => {
    patches.forEach((pixels, k) => {
      for (let y = 0; y < LNET_INPUT; y++) {
        for (let x = 0; x < LNET_INPUT; x++) {
          for (let c = 0; c < 3; c++) {
            data[((n * LNET_INPUT + x) * LNET_INPUT + y) * channels + 3 * k + c] = ((pixels[(y * LNET_INPUT + x) * 3 + c] ?? 0) - 127.5) * 0.0078125;
          }
        }
      }
    });
  });
  const input = tf.tensor4d(data, [faces.length, LNET_INPUT, LNET_INPUT, channels]);
  await compareOutputs(t, 'L-Net', { ...tfjsNets.lnet!(input) }, { ...(await onnxNets.lnet!(input)) });
  input.dispose();
});

t.test('empty batches on ORT', async (t) => {
  const input = tf.zeros([0, 24, 24, 3]) as tf.Tensor4D;
  const r = await onnxNets.rnet(input);
  t.same(r.prob.shape, [0]);
  t.same(r.regression.shape, [0, 4]);
  tf.dispose([input, r.prob, r.regression]);
});

function maxPixelDifference(a: Detection, b: Detection): number {
  const coordinates = (d: Detection) => [...d.box, ...d.landmarks.points.flat()];
  const x = coordinates(a);
  const y = coordinates(b);
  return Math.max(...x.map((value, i) => Math.abs(value - (y[i] ?? NaN))));
}

for (const refinement of ['none', 'lnet'] as const satisfies readonly LandmarkRefinement[]) {
  t.test(`detection on ORT equals tfjs, refinement ${refinement}`, async (t) => {
    const tensorsBefore = tf.memory().numTensors;
    for (const image of images) {
      const expected = await detect(tfjsNets, image, { landmarkRefinement: refinement });
      const actual = await detect(onnxNets, image, { landmarkRefinement: refinement });
      t.ok(expected.length > 0, `${image.id}: tfjs finds a face`);
      t.equal(actual.length, expected.length, `${image.id}: same number of faces`);
      expected.forEach((face, i) => {
        const other = actual[i];
        if (other === undefined) return;
        const difference = maxPixelDifference(face, other);
        t.ok(difference <= PIXEL_TOLERANCE, `${image.id} face ${i}: boxes and landmarks within 1e-3 px (max ${difference.toExponential(2)})`);
        t.ok(Math.abs(face.score - other.score) <= 1e-4, `${image.id} face ${i}: scores agree`);
      });
    }
    t.equal(tf.memory().numTensors, tensorsBefore, 'no tensor leaks over the images');
  });
}

t.test('loadMtcnnEngine engine choice', async (t) => {
  await t.rejects(loadMtcnnEngine(MODEL_DIR, { engine: 'gpu' as never }), /invalid inference engine "gpu", expected one of onnx, tfjs/);

  const onTfjs: MtcnnEngineNets = await loadMtcnnEngine(MODEL_DIR, { engine: 'tfjs' });
  t.equal(onTfjs.engine, 'tfjs');
  t.equal(onTfjs.lnet, undefined, 'no L-Net unless requested');
  onTfjs.dispose();

  const onOnnx = await loadMtcnnEngine(MODEL_DIR, { engine: 'onnx', lnet: true, intraOpNumThreads: 1 });
  t.equal(onOnnx.engine, 'onnx');
  t.ok(onOnnx instanceof OnnxMtcnnNets && onOnnx.threads === 1, 'one intra-op thread as requested');
  t.ok(onOnnx.lnet !== undefined, 'L-Net loaded');
  onOnnx.dispose();
  const input = tf.zeros([1, 24, 24, 3]) as tf.Tensor4D;
  await t.rejects(Promise.resolve().then(() => onOnnx.rnet(input)), /rnet: called after dispose\(\)/);
  input.dispose();
});

t.test('worker pool on ORT matches ORT in process', async (t) => {
  const decoded = images.slice(0, 2);
  const inProcess = await Promise.all(decoded.map((image) => detect(onnxNets, image)));
  const pooled = await lastValueFrom(
    from(decoded as Maybe<DecodedImage>[]).pipe(detectFacesInWorkers({ modelsDir: MODEL_DIR, threads: 1, engine: 'onnx' }), toArray()),
  );
  t.equal(pooled.length, decoded.length, 'one record per image');
  pooled.forEach((record, i) => {
    const expected = inProcess[i]?.[0];
    if (isRejected(record) || record.substituted || expected === undefined) {
      t.fail(`${record.id}: expected a detected face`);
      return;
    }
    const difference = maxPixelDifference(expected, record.detection);
    t.ok(difference <= PIXEL_TOLERANCE, `${record.id}: boxes and landmarks within 1e-3 px of the main thread's (max ${difference.toExponential(2)})`);
  });

  t.throws(() => detectFacesInWorkers({ modelsDir: MODEL_DIR, engine: 'cuda' as never }), /invalid inference engine "cuda"/);
});
