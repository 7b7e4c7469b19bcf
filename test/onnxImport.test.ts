import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';

import t from 'tap';
import { from, lastValueFrom, map, toArray } from 'rxjs';

import { readLandmarks } from '../datasets/lfw.ts';
import { ARCFACE_TEMPLATE, alignmentTemplate } from '../lib/alignmentTemplates.ts';
import { lfwPaths, mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { initBackend } from '../model/backend.ts';
import { loadEngineModel } from '../model/engine.ts';
import { DataType, encodeModel, type DimensionMessage } from '../model/onnx/onnx.proto.ts';
import { exportOnnx } from '../model/onnxExport.ts';
import { loadOnnxImport, ONNX_IMPORT_FORMAT } from '../model/onnxImport.ts';
import { loadEmbeddingModel } from '../model/registry.ts';
import { MobileFaceNet } from '../model/mobilefacenet.ts';
import { runLfwEval } from '../pipelines/lfwEval.ts';
import { embedBatch } from '../operators/extractFeatures.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, type AlignedFace, type LandmarkedImage } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';
import { uniformGenerator } from '../lib/random.ts';
import { writeSmallPairsFile } from './helpers/smallPairs.ts';

await initBackend();
const lfw = lfwPaths();
const dir = await mkdtemp(path.join(os.tmpdir(), 'onnx-import-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

const SIDE = 112;
const FEATURES = 4;

/**
 * Builds a stand-in for a third-party model: NCHW input "data" [N, 3, 112, 112], output "fc1" [N, 4]
 * = flatten(data) · W. Its output can be computed by hand, which checks the layout.
 */
function linearNchwModel(weights: Float32Array, outputs: readonly string[] = ['fc1'], batch: DimensionMessage = { dim_param: 'N' }): Uint8Array {
  const raw = (values: Float32Array): Uint8Array => new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  return encodeModel({
    ir_version: 7,
    producer_name: 'onnx-import-test',
    producer_version: '1',
    opset_import: [{ domain: '', version: 13 }],
    metadata_props: [],
    graph: {
      name: 'linear',
      node: [
        { name: 'flat', op_type: 'Flatten', input: ['data'], output: ['flat'], attribute: [{ name: 'axis', type: 2, i: 1 }] },
        ...outputs.map((output) => ({ name: output, op_type: 'MatMul', input: ['flat', 'W'], output: [output], attribute: [] })),
      ],
      initializer: [{ name: 'W', dims: [3 * SIDE * SIDE, FEATURES], data_type: DataType.FLOAT, raw_data: raw(weights) }],
      input: [{ name: 'data', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [batch, { dim_value: 3 }, { dim_value: SIDE }, { dim_value: SIDE }] } } } }],
      output: outputs.map((output) => ({ name: output, type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [batch, { dim_value: FEATURES }] } } } })),
    },
  });
}

const uniform = uniformGenerator(5);
const weights = Float32Array.from({ length: 3 * SIDE * SIDE * FEATURES }, () => 2 * uniform() - 1);
const modelBytes = linearNchwModel(weights);
await writeFile(path.join(dir, 'linear.onnx'), modelBytes);
const sha256 = createHash('sha256').update(modelBytes).digest('hex');

const baseManifest = {
  format: ONNX_IMPORT_FORMAT,
  version: 1,
  model: 'linear.onnx',
  input: { layout: 'NCHW', channelOrder: 'BGR', mean: 127.5, scale: 0.0078125 },
  alignment: 'arcface-112x112',
  threshold: { value: 0.25, protocol: 'made up for the test' },
  source: { sha256, note: 'a linear map built by the test' },
};

async function writeManifest(name: string, manifest: unknown): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, JSON.stringify(manifest));
  return file;
}

async function alignedFaces(ids: readonly string[], alignment: 'arcface-112x112' | 'sphereface-112x96'): Promise<AlignedFace[]> {
  const landmarks = await readLandmarks(lfw.landmarks);
  const faces = await lastValueFrom(
    from(ids.map((id) => ({ id, path: path.join(lfw.images, id) }))).pipe(
      readImages(),
      map((image) => (isRejected(image) ? image : ({ ...image, landmarks: landmarks.get(image.id) } as LandmarkedImage))),
      similarityAlign(alignmentTemplate(alignment)),
      toArray(),
    ),
  );
  return faces.filter((face): face is AlignedFace => !isRejected(face));
}

t.test('the ArcFace template is InsightFace\'s, moved to 1-based coordinates', async (t) => {
  t.same(ARCFACE_TEMPLATE[0], [39.2946, 52.6963]);
  t.same(ARCFACE_TEMPLATE[4], [71.7299, 93.2041]);
  t.same(alignmentTemplate('arcface-112x112').outputSize, { height: 112, width: 112 });
  t.throws(() => alignmentTemplate('arcface-112x96'), { message: /unknown alignment "arcface-112x96"; expected one of sphereface-112x96, arcface-112x112/ });
});

t.test('an NCHW, BGR model gives the features worked out by hand', async (t) => {
  const model = await loadOnnxImport(await writeManifest('linear.json', baseManifest));
  t.teardown(() => model.dispose());
  t.equal(model.embeddingSize, FEATURES, 'embedding length read from the graph');
  t.same(model.inputSize, { height: 112, width: 112 }, 'input size from the alignment');
  t.equal(model.alignment, 'arcface-112x112');

  const [face] = await alignedFaces(['Aaron_Eckhart/Aaron_Eckhart_0001.jpg'], 'arcface-112x112');
  if (face === undefined) throw new Error('no aligned face');
  t.equal(face.width, 112, 'the crop is 112 wide');
  const [feature] = await embedBatch(model, [face], true);
  if (feature === undefined) throw new Error('no feature');

  // By hand: the image and its mirror in BGR, (p − 127.5) / 128, channel-major, times W.
  const expected = new Float64Array(2 * FEATURES);
  for (const [half, mirrored] of [[0, false], [1, true]] as const) {
    for (let y = 0; y < SIDE; y++) {
      for (let x = 0; x < SIDE; x++) {
        const sourceX = mirrored ? SIDE - 1 - x : x;
        for (let c = 0; c < 3; c++) {
          const rgbChannel = 2 - c;
          const value = ((face.rgb[(y * SIDE + sourceX) * 3 + rgbChannel] as number) - 127.5) * 0.0078125;
          const row = (c * SIDE + y) * SIDE + x;
          for (let k = 0; k < FEATURES; k++) expected[half * FEATURES + k] = (expected[half * FEATURES + k] as number) + value * (weights[row * FEATURES + k] as number);
        }
      }
    }
  }
  const scale = Math.max(...expected.map(Math.abs));
  const difference = Math.max(...feature.map((value, k) => Math.abs(value - (expected[k] as number))));
  t.ok(difference <= 1e-4 * scale, `max difference ${difference.toExponential(2)} within 1e-4 of ${scale.toFixed(2)}`);
});

t.test('a model exported here and imported back gives the same features', async (t) => {
  const network = await loadEmbeddingModel(`mobilefacenet:${mobileFaceNetCheckpoint()}`);
  if (!(network instanceof MobileFaceNet)) throw new Error('expected a MobileFaceNet');
  await writeFile(path.join(dir, 'mfn.onnx'), exportOnnx(network));
  const manifest = await writeManifest('mfn.json', {
    format: ONNX_IMPORT_FORMAT,
    version: 1,
    model: 'mfn.onnx',
    input: { name: 'input', layout: 'NHWC', channelOrder: network.channelOrder, mean: network.normalization.mean, scale: network.normalization.scale },
    alignment: 'sphereface-112x96',
  });
  const imported = await loadEngineModel(`onnx:${manifest}`);
  t.teardown(() => {
    imported.dispose();
    network.dispose();
  });
  t.equal(imported.engine, 'onnx');
  const faces = await alignedFaces(['Abel_Pacheco/Abel_Pacheco_0001.jpg', 'Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg'], 'sphereface-112x96');
  const fromImport = await embedBatch(imported, faces, true);
  const fromTfjs = await embedBatch(network, faces, true);
  for (const [i, feature] of fromImport.entries()) {
    const reference = fromTfjs[i] as Float32Array;
    t.equal(feature.length, 256);
    const scale = Math.max(...reference.map(Math.abs));
    const difference = Math.max(...feature.map((value, k) => Math.abs(value - (reference[k] as number))));
    t.ok(difference <= 1e-4 * scale, `face ${i}: max difference ${difference.toExponential(2)} within 1e-4 of ${scale.toFixed(3)}`);
  }
});

t.test('the LFW evaluation aligns with the imported model\'s template', async (t) => {
  const { file } = await writeSmallPairsFile(dir, 1);
  const result = await runLfwEval({
    images: lfw.images,
    pairs: file,
    landmarks: lfw.landmarks,
    model: `onnx:${path.join(dir, 'linear.json')}`,
    progressBar: false,
  });
  t.equal(result.counts.pairs, 20);
  t.equal(result.report.dimension, 2 * FEATURES);
  t.same(result.settings['alignment'], { method: 'cp2tform-similarity', interpolation: 'bilinear', fill: 0, template: ARCFACE_TEMPLATE, outputSize: { height: 112, width: 112 }, name: 'arcface-112x112' });
});

t.test('bad manifests and models are refused with the file and the field', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['no alignment', { ...baseManifest, alignment: undefined }, /alignment/],
    ['bad layout', { ...baseManifest, input: { ...baseManifest.input, layout: 'CHW' } }, /input\.layout/],
    ['zero scale', { ...baseManifest, input: { ...baseManifest.input, scale: 0 } }, /input\.scale: expected a non-zero scale/],
    ['unknown field', { ...baseManifest, extra: 1 }, /extra/],
    ['model outside the folder', { ...baseManifest, model: '../linear.onnx' }, /model "\.\.\/linear\.onnx" must be a path inside the manifest's folder/],
    ['absolute model path', { ...baseManifest, model: path.join(dir, 'linear.onnx') }, /must be a path inside the manifest's folder/],
    ['missing model file', { ...baseManifest, model: 'nothing.onnx' }, /model "nothing\.onnx" does not exist/],
    ['wrong checksum', { ...baseManifest, source: { sha256: '0'.repeat(64) } }, /SHA-256 is [0-9a-f]{64}, but .*expects 0{64}/],
    ['wrong input size', { ...baseManifest, alignment: 'sphereface-112x96' }, /does not fit the graph's input "data"/],
    ['unknown input name', { ...baseManifest, input: { ...baseManifest.input, name: 'image' } }, /the graph has no input "image"; its inputs are data/],
  ];
  for (const [label, manifest, message] of cases) {
    const file = await writeManifest(`bad-${label.replaceAll(' ', '-')}.json`, manifest);
    await t.rejects(loadOnnxImport(file), { name: 'OnnxImportError', message }, label);
  }

  const outside = await mkdtemp(path.join(os.tmpdir(), 'onnx-outside-'));
  t.teardown(() => rm(outside, { recursive: true, force: true }));
  await writeFile(path.join(outside, 'linear.onnx'), modelBytes);
  await symlink(path.join(outside, 'linear.onnx'), path.join(dir, 'link.onnx'));
  await t.rejects(
    loadOnnxImport(await writeManifest('symlink.json', { ...baseManifest, model: 'link.onnx' })),
    { message: /model "link\.onnx" resolves to .*outside the manifest's folder/ },
    'a symbolic link out of the folder',
  );

  await writeFile(path.join(dir, 'two.onnx'), linearNchwModel(weights, ['fc1', 'fc2']));
  const two = { ...baseManifest, model: 'two.onnx', source: undefined };
  await t.rejects(loadOnnxImport(await writeManifest('two.json', two)), { message: /the graph has 2 outputs \(fc1, fc2\); name one with "output\.name"/ }, 'two outputs, none named');
  const named = await loadOnnxImport(await writeManifest('two-named.json', { ...two, output: { name: 'fc2' } }));
  t.equal(named.embeddingSize, FEATURES, 'two outputs, one named');
  named.dispose();

  // A graph that passes its input through has no embedding output.
  await writeFile(
    path.join(dir, 'identity.onnx'),
    encodeModel({
      ir_version: 7,
      producer_name: 'onnx-import-test',
      producer_version: '1',
      opset_import: [{ domain: '', version: 13 }],
      metadata_props: [],
      graph: {
        name: 'identity',
        node: [{ name: 'same', op_type: 'Identity', input: ['data'], output: ['out'], attribute: [] }],
        initializer: [],
        input: [{ name: 'data', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_param: 'N' }, { dim_value: 3 }, { dim_value: SIDE }, { dim_value: SIDE }] } } } }],
        output: [{ name: 'out', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_param: 'N' }, { dim_value: 3 }, { dim_value: SIDE }, { dim_value: SIDE }] } } } }],
      },
    }),
  );
  await t.rejects(
    loadOnnxImport(await writeManifest('identity.json', { ...baseManifest, model: 'identity.onnx', source: undefined })),
    { message: /output "out" has shape \[2, 3, 112, 112\] for 2 face\(s\), expected an embedding per face/ },
    'an output that is not one vector per face',
  );

  await writeFile(path.join(dir, 'broken.json'), '{ "format": ');
  await t.rejects(loadOnnxImport(path.join(dir, 'broken.json')), { message: /broken\.json: not valid JSON/ }, 'malformed JSON');
});

t.test('a graph with its batch fixed at 1 runs one face at a time', async (t) => {
  await writeFile(path.join(dir, 'batch1.onnx'), linearNchwModel(weights, ['fc1'], { dim_value: 1 }));
  const single = await loadOnnxImport(await writeManifest('batch1.json', { ...baseManifest, model: 'batch1.onnx', source: undefined }));
  const batched = await loadOnnxImport(await writeManifest('batched.json', { ...baseManifest, source: undefined }));
  t.teardown(() => {
    single.dispose();
    batched.dispose();
  });
  const faces = await alignedFaces(['Aaron_Eckhart/Aaron_Eckhart_0001.jpg', 'Abel_Pacheco/Abel_Pacheco_0001.jpg'], 'arcface-112x112');
  const one = await embedBatch(single, faces, true);
  const many = await embedBatch(batched, faces, true);
  t.equal(one.length, 2);
  for (const [i, feature] of one.entries()) {
    const reference = many[i] as Float32Array;
    const difference = Math.max(...feature.map((value, k) => Math.abs(value - (reference[k] as number))));
    t.ok(difference <= 1e-4 * Math.max(...reference.map(Math.abs)), `face ${i}: same features one at a time (max difference ${difference.toExponential(2)})`);
  }
});

t.test('an imported model refuses the tfjs engine', async (t) => {
  await t.rejects(loadEngineModel(`onnx:${path.join(dir, 'linear.json')}`, 'tfjs'), { message: /runs only on ONNX Runtime; drop --engine tfjs/ });
});
