/**
 * Exports the MTCNN networks (P-Net, R-Net, O-Net and L-Net of `model/mtcnn.ts`) as ONNX models
 * (opset 13), one graph per net, for running them on ONNX Runtime.
 *
 * Each graph takes what the `MtcnnEngineNets` method takes: `input`, a normalised NHWC float32
 * batch in the transposed frame the detector builds. It transposes the batch to NCHW once and
 * returns the method's outputs under the same names and shapes:
 *
 * | net | input | outputs |
 * |---|---|---|
 * | P-Net | [N, H, W, 3], all three dynamic | `prob` [N, h, w], `regression` [N, h, w, 4] |
 * | R-Net | [N, 24, 24, 3] | `prob` [N], `regression` [N, 4] |
 * | O-Net | [N, 48, 48, 3] | `prob` [N], `regression` [N, 4], `landmarks` [N, 10] |
 * | L-Net | [N, 24, 24, 15] | `offsets` [N, 5, 2] |
 *
 * Max pooling uses `ceil_mode` 1, which gives Caffe's output size ceil((in − kernel) / stride) + 1
 * (`caffePooledSize`) and takes the maximum over the part of the last window inside the map,
 * as Caffe does. `test/mtcnnOnnx.test.ts` checks both against `maxPoolCeil` on ONNX Runtime.
 *
 * The tfjs nets flatten an NHWC map, so the rows of their first fully connected weight are in
 * H,W,C order. Flatten of the NCHW map here gives C,H,W order, so those rows are permuted back to
 * C,H,W at export, which is the order of the Caffe weights.
 */
import { LNET_INPUT, LNET_PATCHES, ONET_INPUT, RNET_INPUT } from './mtcnn.ts';
import { DataType, encodeModel, type DimensionMessage, type ValueInfoMessage } from './onnx/onnx.proto.ts';
import { GraphBuilder, hwioToOihw, int, ints, IR_VERSION, ONNX_OPSET } from './onnxExport.ts';
import type { MappedParameter } from './pytorch.ts';

/** The MTCNN nets that have an ONNX export. */
export type MtcnnNetName = 'pnet' | 'rnet' | 'onet' | 'lnet';

export const MTCNN_ONNX_INPUT = 'input';

/** Output names of each graph, in the order of the `MtcnnEngineNets` output fields. */
export const MTCNN_ONNX_OUTPUTS = {
  pnet: ['prob', 'regression'],
  rnet: ['prob', 'regression'],
  onet: ['prob', 'regression', 'landmarks'],
  lnet: ['offsets'],
} as const satisfies Record<MtcnnNetName, readonly string[]>;

/** A net's parameters with TensorFlow.js shapes and layouts, as `mapMtcnnParameters` returns them. */
type Parameters = ReadonlyMap<string, Pick<MappedParameter, 'shape' | 'data'>>;

function parameter(parameters: Parameters, name: string): Pick<MappedParameter, 'shape' | 'data'> {
  const found = parameters.get(name);
  if (found === undefined) throw new Error(`MTCNN ONNX export: parameter "${name}" is missing`);
  return found;
}

/** Adds a valid, stride-1 Conv with bias, then a PRelu with the slopes of `activation` if given. */
function addConv(graph: GraphBuilder, parameters: Parameters, x: string, layer: string, activation?: string): string {
  const { shape, data } = parameter(parameters, `${layer}.weight`);
  const [kh = 0, kw = 0, inChannels = 0, outChannels = 0] = shape;
  const weight = graph.addFloat(`${layer}.weight`, [outChannels, inChannels, kh, kw], hwioToOihw(data, shape));
  const bias = graph.addFloat(`${layer}.bias`, [outChannels], parameter(parameters, `${layer}.bias`).data);
  const conv = graph.addNode('Conv', `${layer}.conv`, [x, weight, bias], [
    ints('kernel_shape', [kh, kw]),
    ints('strides', [1, 1]),
    ints('pads', [0, 0, 0, 0]),
    ints('dilations', [1, 1]),
    int('group', 1),
  ]);
  if (activation === undefined) return conv;
  const slope = graph.addFloat(`${activation}.slope`, [outChannels, 1, 1], parameter(parameters, `${activation}.weight`).data);
  return graph.addNode('PRelu', `${activation}.prelu`, [conv, slope]);
}

/** Adds a max pool with Caffe's rounding: no padding, output size rounded up (`ceil_mode` 1). */
export function addCaffeMaxPool(graph: GraphBuilder, x: string, name: string, kernel: number, stride: number): string {
  return graph.addNode('MaxPool', name, [x], [
    ints('kernel_shape', [kernel, kernel]),
    ints('strides', [stride, stride]),
    ints('pads', [0, 0, 0, 0]),
    int('ceil_mode', 1),
  ]);
}

/** Adds a fully connected layer (Gemm) on [N, in] with a [in, out] weight, then a PRelu if `activation` is given. */
function addDense(graph: GraphBuilder, parameters: Parameters, x: string, layer: string, activation?: string, weightData?: Float32Array): string {
  const { shape, data } = parameter(parameters, `${layer}.weight`);
  const weight = graph.addFloat(`${layer}.weight`, shape, weightData ?? data);
  const bias = graph.addFloat(`${layer}.bias`, [shape[1] ?? 0], parameter(parameters, `${layer}.bias`).data);
  const dense = graph.addNode('Gemm', `${layer}.gemm`, [x, weight, bias]);
  if (activation === undefined) return dense;
  const slope = graph.addFloat(`${activation}.slope`, [shape[1] ?? 0], parameter(parameters, `${activation}.weight`).data);
  return graph.addNode('PRelu', `${activation}.prelu`, [dense, slope]);
}

/**
 * Flattens an NCHW map and applies the fully connected layer whose tfjs weight rows are in
 * H,W,C order, by permuting the rows to the C,H,W order of the flattened map.
 */
function addDenseOnMap(
  graph: GraphBuilder,
  parameters: Parameters,
  x: string,
  map: { channels: number; height: number; width: number },
  layer: string,
  activation: string,
): string {
  const { shape, data } = parameter(parameters, `${layer}.weight`);
  const { channels, height, width } = map;
  const outFeatures = shape[1] ?? 0;
  if (shape[0] !== channels * height * width) {
    throw new Error(`MTCNN ONNX export: ${layer}.weight has shape [${shape.join(', ')}], expected [${channels * height * width}, N] for a ${channels}×${height}×${width} map`);
  }
  const chw = new Float32Array(data.length);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < height; y++) {
      for (let xx = 0; xx < width; xx++) {
        const from = ((y * width + xx) * channels + c) * outFeatures;
        const to = ((c * height + y) * width + xx) * outFeatures;
        chw.set(data.subarray(from, from + outFeatures), to);
      }
    }
  }
  const flat = graph.addNode('Flatten', `${layer}.flatten`, [x], [int('axis', 1)]);
  return addDense(graph, parameters, flat, layer, activation, chw);
}

/** Adds a softmax over the two classes on `axis` and keeps class 1 (face), which removes that axis. */
function addFaceProbability(graph: GraphBuilder, logits: string, axis: number, output: string): string {
  const probabilities = graph.addNode('Softmax', `${output}.softmax`, [logits], [int('axis', axis)]);
  const face = graph.addInt64(`${output}.face_class`, [], [1]);
  return graph.addNode('Gather', output, [probabilities, face], [int('axis', axis)]);
}

function buildPNet(graph: GraphBuilder, p: Parameters, x: string): void {
  x = addConv(graph, p, x, 'conv1', 'PReLU1');
  x = addCaffeMaxPool(graph, x, 'pool1', 2, 2);
  x = addConv(graph, p, x, 'conv2', 'PReLU2');
  x = addConv(graph, p, x, 'conv3', 'PReLU3');
  addFaceProbability(graph, addConv(graph, p, x, 'conv4-1'), 1, 'prob');
  graph.addNode('Transpose', 'regression', [addConv(graph, p, x, 'conv4-2')], [ints('perm', [0, 2, 3, 1])]);
}

function buildRNet(graph: GraphBuilder, p: Parameters, x: string): void {
  x = addConv(graph, p, x, 'conv1', 'prelu1');
  x = addCaffeMaxPool(graph, x, 'pool1', 3, 2);
  x = addConv(graph, p, x, 'conv2', 'prelu2');
  x = addCaffeMaxPool(graph, x, 'pool2', 3, 2);
  x = addConv(graph, p, x, 'conv3', 'prelu3');
  const features = addDenseOnMap(graph, p, x, { channels: 64, height: 3, width: 3 }, 'conv4', 'prelu4');
  addFaceProbability(graph, addDense(graph, p, features, 'conv5-1'), 1, 'prob');
  graph.addNode('Identity', 'regression', [addDense(graph, p, features, 'conv5-2')]);
}

function buildONet(graph: GraphBuilder, p: Parameters, x: string): void {
  x = addConv(graph, p, x, 'conv1', 'prelu1');
  x = addCaffeMaxPool(graph, x, 'pool1', 3, 2);
  x = addConv(graph, p, x, 'conv2', 'prelu2');
  x = addCaffeMaxPool(graph, x, 'pool2', 3, 2);
  x = addConv(graph, p, x, 'conv3', 'prelu3');
  x = addCaffeMaxPool(graph, x, 'pool3', 2, 2);
  x = addConv(graph, p, x, 'conv4', 'prelu4');
  const features = addDenseOnMap(graph, p, x, { channels: 128, height: 3, width: 3 }, 'conv5', 'prelu5');
  addFaceProbability(graph, addDense(graph, p, features, 'conv6-1'), 1, 'prob');
  graph.addNode('Identity', 'regression', [addDense(graph, p, features, 'conv6-2')]);
  graph.addNode('Identity', 'landmarks', [addDense(graph, p, features, 'conv6-3')]);
}

function buildLNet(graph: GraphBuilder, p: Parameters, x: string): void {
  // Split the 15 channels into the five RGB patches, as the deploy prototxt's Slice layer does.
  const patches = Array.from({ length: LNET_PATCHES }, (_, i) => `patch${i + 1}`);
  const split = graph.addInt64('patch_channels', [LNET_PATCHES], Array.from({ length: LNET_PATCHES }, () => 3));
  graph.nodes.push({ name: 'patches', op_type: 'Split', input: [x, split], output: patches, attribute: [int('axis', 1)] });

  const maps = patches.map((patch, i) => {
    const k = i + 1;
    let y = addConv(graph, p, patch, `conv1_${k}`, `prelu1_${k}`);
    y = addCaffeMaxPool(graph, y, `pool1_${k}`, 3, 2);
    y = addConv(graph, p, y, `conv2_${k}`, `prelu2_${k}`);
    y = addCaffeMaxPool(graph, y, `pool2_${k}`, 3, 2);
    return addConv(graph, p, y, `conv3_${k}`, `prelu3_${k}`);
  });
  // Concatenating on C matches Caffe's Concat: channel 64·(k − 1) + c is channel c of patch k.
  const joined = graph.addNode('Concat', 'concat', maps, [int('axis', 1)]);
  const features = addDenseOnMap(graph, p, joined, { channels: 64 * LNET_PATCHES, height: 3, width: 3 }, 'fc4', 'prelu4');

  const heads = patches.map((_, i) => {
    const k = i + 1;
    return addDense(graph, p, addDense(graph, p, features, `fc4_${k}`, `prelu4_${k}`), `fc5_${k}`);
  });
  const stacked = graph.addNode('Concat', 'heads', heads, [int('axis', 1)]);
  // Reshape's 0 copies the batch size from the input.
  const shape = graph.addInt64('offsets.shape', [3], [0, LNET_PATCHES, 2]);
  graph.addNode('Reshape', 'offsets', [stacked, shape]);
}

function tensorInfo(name: string, dims: readonly (number | string)[]): ValueInfoMessage {
  const dim: DimensionMessage[] = dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d }));
  return { name, type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim } } } };
}

/** Input and output shapes of each graph; strings are symbolic dimensions. */
const SIGNATURES: Record<MtcnnNetName, { input: readonly (number | string)[]; outputs: ReadonlyArray<readonly (number | string)[]> }> = {
  pnet: { input: ['N', 'H', 'W', 3], outputs: [['N', 'map_h', 'map_w'], ['N', 'map_h', 'map_w', 4]] },
  rnet: { input: ['N', RNET_INPUT, RNET_INPUT, 3], outputs: [['N'], ['N', 4]] },
  onet: { input: ['N', ONET_INPUT, ONET_INPUT, 3], outputs: [['N'], ['N', 4], ['N', 10]] },
  lnet: { input: ['N', LNET_INPUT, LNET_INPUT, 3 * LNET_PATCHES], outputs: [['N', LNET_PATCHES, 2]] },
};

/**
 * Serialises one graph with the given inputs and outputs as an ONNX model (IR 7, opset 13).
 * `graph` must compute every output name from the input names.
 */
export function encodeOnnxGraph(name: string, graph: GraphBuilder, inputs: readonly ValueInfoMessage[], outputs: readonly ValueInfoMessage[]): Uint8Array {
  return encodeModel({
    ir_version: IR_VERSION,
    producer_name: 'sphereface-ts',
    producer_version: '0.1.0',
    opset_import: [{ domain: '', version: ONNX_OPSET }],
    metadata_props: [],
    graph: { name, node: graph.nodes, initializer: graph.initializers, input: inputs, output: outputs },
  });
}

/**
 * Serialises one MTCNN net as an ONNX model that computes what the `MtcnnEngineNets` method of
 * the same name computes (see the table in this file's header). `parameters` are the net's
 * weights with TensorFlow.js shapes and layouts: `mapMtcnnParameters` returns them.
 *
 * @throws Error naming a parameter that is missing or has the wrong size.
 */
export function exportMtcnnOnnx(net: MtcnnNetName, parameters: Parameters): Uint8Array {
  const graph = new GraphBuilder();
  const nchw = graph.addNode('Transpose', 'input.nchw', [MTCNN_ONNX_INPUT], [ints('perm', [0, 3, 1, 2])]);
  const build = { pnet: buildPNet, rnet: buildRNet, onet: buildONet, lnet: buildLNet }[net];
  build(graph, parameters, nchw);

  const signature = SIGNATURES[net];
  const outputs = MTCNN_ONNX_OUTPUTS[net].map((output, i) => tensorInfo(output, signature.outputs[i] ?? []));
  return encodeOnnxGraph(`mtcnn-${net}`, graph, [tensorInfo(MTCNN_ONNX_INPUT, signature.input)], outputs);
}
