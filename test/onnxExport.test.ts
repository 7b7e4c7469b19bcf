import t from 'tap';
import * as tf from '@tensorflow/tfjs-core';
import { lastValueFrom, map, toArray } from 'rxjs';
import { readLandmarks } from '../datasets/lfw.ts';
import { lfwPaths, mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { loadMobileFaceNet } from '../model/mobilefacenet.ts';
import { ModelProtoType } from '../model/onnx/onnx.proto.ts';
import { exportOnnx, ONNX_OPSET } from '../model/onnxExport.ts';
import { OnnxEmbeddingModel, readEmbeddingMetadata } from '../model/onnxModel.ts';
import { randomSphereFace20 } from '../model/sphereface20.ts';
import type { EmbeddingModel } from '../model/types.ts';
import { flipHorizontal, normalizePixels } from '../operators/extractFeatures.ts';
import { imageRefs, readImages } from '../operators/readImages.ts';
import { isRejected, type AlignedFace, type LandmarkedImage } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';

/**
 * Tolerance on max |ONNX Runtime − tfjs| over all embedding values, relative to max |tfjs| over
 * the same batch. Both engines compute in float32 but sum in different orders.
 */
const RELATIVE_TOLERANCE = 1e-4;
const FACE_IDS = [
  'Aaron_Eckhart/Aaron_Eckhart_0001.jpg',
  'Aaron_Guiel/Aaron_Guiel_0001.jpg',
  'Aaron_Patterson/Aaron_Patterson_0001.jpg',
  'Abdullah_Gul/Abdullah_Gul_0001.jpg',
];

await initBackend();

/** Decodes and aligns real LFW faces from their landmarks, as `sphereface eval` does. */
async function alignedFaces(ids: readonly string[]): Promise<AlignedFace[]> {
  const paths = lfwPaths();
  const landmarks = await readLandmarks(paths.landmarks);
  const records = await lastValueFrom(
    imageRefs(ids, { cwd: paths.images }).pipe(
      readImages(),
      map((image) => {
        if (isRejected(image)) return image;
        const points = landmarks.get(image.id);
        if (points === undefined) throw new Error(`no landmarks for ${image.id}`);
        return { ...image, landmarks: points } as LandmarkedImage;
      }),
      similarityAlign(),
      toArray(),
    ),
  );
  return records.map((record) => {
    if (isRejected(record)) throw new Error(`${record.id}: ${record.reason}`);
    return record;
  });
}

/** Stacks the faces into one normalised NHWC float32 batch for `model`, and appends the mirror of face 0 when `mirrorFirst` is set. */
function normalizedBatch(model: EmbeddingModel, faces: readonly AlignedFace[], mirrorFirst = false): tf.Tensor4D {
  return tf.tidy(() => {
    const { height, width } = model.inputSize;
    const pixels = tf.stack(faces.map((face) => tf.tensor3d(face.rgb, [height, width, 3], 'int32'))) as tf.Tensor4D;
    const input = normalizePixels(pixels, model);
    if (!mirrorFirst) return input;
    return tf.concat([input, flipHorizontal(tf.slice(input, [0, 0, 0, 0], [1, height, width, 3]))], 0);
  });
}

function maxAbs(values: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < values.length; i++) max = Math.max(max, Math.abs(values[i] ?? Number.NaN));
  return max;
}

function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] ?? Number.NaN) - (b[i] ?? Number.NaN)));
  return max;
}

const faces = await alignedFaces(FACE_IDS);

const networks: Array<{ label: string; model: () => Promise<EmbeddingModel & Parameters<typeof exportOnnx>[0]> }> = [
  { label: 'MobileFaceNet 068.ckpt', model: () => loadMobileFaceNet(mobileFaceNetCheckpoint()) },
  { label: 'SphereFace-20 seed 1', model: async () => randomSphereFace20(1) },
];

for (const network of networks) {
  t.test(`${network.label} on ONNX Runtime`, async (t) => {
    const model = await network.model();
    const bytes = exportOnnx(model);
    const onnx = await OnnxEmbeddingModel.create(bytes, network.label);
    t.teardown(async () => {
      model.dispose();
      await onnx.dispose();
    });

    t.test('metadata matches the tfjs model', async (t) => {
      t.equal(onnx.name, model.name);
      t.same(onnx.inputSize, model.inputSize);
      t.equal(onnx.channelOrder, model.channelOrder);
      t.same(onnx.normalization, model.normalization);
      t.equal(onnx.embeddingSize, model.embeddingSize);
    });

    t.test('graph declares opset 13 and dynamic batch', async (t) => {
      const decoded = ModelProtoType.toObject(ModelProtoType.decode(bytes), { longs: Number, bytes: Array, defaults: false }) as {
        opset_import: Array<{ domain?: string; version: number }>;
        graph: {
          node: Array<{ op_type: string; attribute?: Array<{ name: string; i?: number }> }>;
          input: Array<{ name: string; type: { tensor_type: { shape: { dim: Array<{ dim_value?: number; dim_param?: string }> } } } }>;
          output: Array<{ name: string; type: { tensor_type: { shape: { dim: Array<{ dim_value?: number; dim_param?: string }> } } } }>;
        };
      };
      t.same(decoded.opset_import.map((o) => [o.domain ?? '', o.version]), [['', ONNX_OPSET]]);
      t.same(decoded.graph.input.map((i) => i.name), ['input']);
      t.same(decoded.graph.input[0]?.type.tensor_type.shape.dim, [{ dim_param: 'N' }, { dim_value: 112 }, { dim_value: 96 }, { dim_value: 3 }]);
      t.same(decoded.graph.output[0]?.type.tensor_type.shape.dim, [{ dim_param: 'N' }, { dim_value: model.embeddingSize }]);
      t.equal(decoded.graph.node[0]?.op_type, 'Transpose', 'the NHWC input is transposed to NCHW first');

      const convs = decoded.graph.node.filter((n) => n.op_type === 'Conv');
      const grouped = convs.filter((n) => (n.attribute?.find((a) => a.name === 'group')?.i ?? 1) > 1);
      if (model.name === 'mobilefacenet') {
        // The convs are conv1, dw_conv1, 15 bottlenecks × 3, conv2, linear7 and linear1.
        // The depthwise ones are dw_conv1, the middle conv of each bottleneck, and linear7.
        t.equal(convs.length, 2 + 45 + 3);
        t.equal(grouped.length, 1 + 15 + 1, 'every depthwise conv has group = channels');
      } else {
        t.equal(convs.length, 20);
        t.equal(grouped.length, 0);
        t.equal(decoded.graph.node.filter((n) => n.op_type === 'Gemm').length, 1, 'fc5 is one Gemm');
      }
    });

    t.test('embeddings match tfjs for 4 aligned faces', async (t) => {
      const input = normalizedBatch(model, faces);
      const expected = tf.tidy(() => model.predict(input)).dataSync();
      const actual = await onnx.embed(input.dataSync() as Float32Array, faces.length);
      input.dispose();

      const scale = maxAbs(expected);
      const difference = maxAbsDifference(actual, expected);
      t.ok(scale > 0.01, `tfjs output scale ${scale} is large enough to compare against`);
      t.equal(actual.length, faces.length * model.embeddingSize);
      t.ok(difference <= RELATIVE_TOLERANCE * scale, `max |ORT − tfjs| = ${difference.toExponential(2)}, scale ${scale.toFixed(4)}, relative ${(difference / scale).toExponential(2)}`);
      const firstTwoDiffer = maxAbsDifference(actual.subarray(0, model.embeddingSize), actual.subarray(model.embeddingSize, 2 * model.embeddingSize));
      t.ok(firstTwoDiffer > 100 * RELATIVE_TOLERANCE * scale, 'two different faces get different embeddings');
    });

    t.test('batch of 1 matches tfjs', async (t) => {
      const input = normalizedBatch(model, faces.slice(0, 1));
      const expected = tf.tidy(() => model.predict(input)).dataSync();
      const actual = await onnx.embed(input.dataSync() as Float32Array, 1);
      input.dispose();

      t.equal(actual.length, model.embeddingSize);
      const scale = maxAbs(expected);
      t.ok(maxAbsDifference(actual, expected) <= RELATIVE_TOLERANCE * scale, `max |ORT − tfjs| = ${maxAbsDifference(actual, expected).toExponential(2)}, scale ${scale.toFixed(4)}`);
    });

    t.test('batch of 5 matches tfjs', async (t) => {
      // The fifth image is the mirror of the first, so the batch contains five distinct inputs.
      const input = normalizedBatch(model, faces, true);
      const expected = tf.tidy(() => model.predict(input)).dataSync();
      const actual = await onnx.embed(input.dataSync() as Float32Array, 5);
      input.dispose();

      t.equal(actual.length, 5 * model.embeddingSize);
      const scale = maxAbs(expected);
      t.ok(maxAbsDifference(actual, expected) <= RELATIVE_TOLERANCE * scale, `max |ORT − tfjs| = ${maxAbsDifference(actual, expected).toExponential(2)}, scale ${scale.toFixed(4)}`);
    });

    t.test('embed rejects a batch of the wrong length', async (t) => {
      await t.rejects(onnx.embed(new Float32Array(112 * 96 * 3), 2), /expected n ≥ 1 and n × 112 × 96 × 3 = 64512 values/);
      await t.rejects(onnx.embed(new Float32Array(0), 0), /expected n ≥ 1/);
    });
  });
}

t.test('create rejects bytes that are not an exported model', async (t) => {
  await t.rejects(OnnxEmbeddingModel.create(new Uint8Array([0x0a, 0x02, 0x08, 0x07]), 'garbage.onnx'), /garbage\.onnx: ONNX metadata "sphereface\.name" is missing/);
  t.throws(() => readEmbeddingMetadata(new Uint8Array([0xff, 0xff, 0xff]), 'truncated.onnx'));
});

t.test('embed rejects calls after dispose', async (t) => {
  const model = randomSphereFace20(2);
  const onnx = await OnnxEmbeddingModel.create(exportOnnx(model));
  model.dispose();
  await onnx.dispose();
  await t.rejects(onnx.embed(new Float32Array(112 * 96 * 3), 1), /embed\(\) called after dispose\(\)/);
});
