/**
 * Exports the embedding networks as ONNX models (opset 13) that compute what their `predict`
 * computes, for running them on ONNX Runtime.
 *
 * The graph takes the same input as `predict`: `input`, a normalised NHWC float32 batch
 * [N, 112, 96, 3] with a symbolic batch size `N`. It transposes the batch to NCHW once, runs the
 * convolutions in NCHW with OIHW filters, and returns `embedding` [N, D]. Weights are stored
 * inline as little-endian float32 `raw_data`, so one file contains the whole model.
 *
 * MobileFaceNet's BatchNorms are folded into the conv before them (in float64, then rounded to
 * float32), as the tfjs model does at construction. SphereFace-20's `fc5` rows are reordered from
 * the HWC flatten order of the tfjs weights to the CHW order that Flatten gives on NCHW.
 *
 * The model's metadata (`metadata_props`) records the fields of `EmbeddingModel`, which
 * `OnnxEmbeddingModel` reads back: see `ONNX_METADATA_KEYS`.
 */
import type * as tf from '@tensorflow/tfjs-core';
import { BATCH_NORM_EPSILON, BOTTLENECK_STAGES, MobileFaceNet } from './mobilefacenet.ts';
import { AttributeType, DataType, encodeModel, type AttributeMessage, type NodeMessage, type TensorMessage } from './onnx/onnx.proto.ts';
import { FC5_INPUT, SPHEREFACE20_STAGES, type SphereFace20 } from './sphereface20.ts';
import type { EmbeddingModel } from './types.ts';

/** The ONNX operator set the exported graphs use. */
export const ONNX_OPSET = 13;
/** ONNX 1.8 introduced opset 13 together with IR version 7. */
export const IR_VERSION = 7;
export const ONNX_INPUT_NAME = 'input';
export const ONNX_OUTPUT_NAME = 'embedding';
/** Symbolic name of the batch dimension of the input and output. */
export const ONNX_BATCH_DIMENSION = 'N';

/** Keys of the `metadata_props` entries that describe the network, one per `EmbeddingModel` field. */
export const ONNX_METADATA_KEYS = {
  name: 'sphereface.name',
  inputHeight: 'sphereface.input_height',
  inputWidth: 'sphereface.input_width',
  channelOrder: 'sphereface.channel_order',
  normalizationMean: 'sphereface.normalization_mean',
  normalizationScale: 'sphereface.normalization_scale',
  embeddingSize: 'sphereface.embedding_size',
} as const;

/** Collects the nodes and initializers of one graph, in topological order. */
export class GraphBuilder {
  readonly nodes: NodeMessage[] = [];
  readonly initializers: TensorMessage[] = [];

  /** Adds a float32 initializer whose `data` is row-major in `dims`. */
  addFloat(name: string, dims: readonly number[], data: Float32Array): string {
    const expected = dims.reduce((a, b) => a * b, 1);
    if (data.length !== expected) throw new Error(`ONNX initializer "${name}": ${data.length} values for shape [${dims.join(', ')}], expected ${expected}`);
    const raw = new Uint8Array(data.length * 4);
    const view = new DataView(raw.buffer);
    for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i] ?? 0, true);
    this.initializers.push({ name, dims, data_type: DataType.FLOAT, raw_data: raw });
    return name;
  }

  /** Adds an int64 initializer, such as the indices of Gather or the shape of Reshape. `dims` [] makes a scalar. */
  addInt64(name: string, dims: readonly number[], data: readonly number[]): string {
    const expected = dims.reduce((a, b) => a * b, 1);
    if (data.length !== expected) throw new Error(`ONNX initializer "${name}": ${data.length} values for shape [${dims.join(', ')}], expected ${expected}`);
    this.initializers.push({ name, dims, data_type: DataType.INT64, int64_data: data });
    return name;
  }

  /** Adds a node with one output named `output` and returns that name. */
  addNode(opType: string, output: string, inputs: readonly string[], attributes: readonly AttributeMessage[] = []): string {
    this.nodes.push({ name: output, op_type: opType, input: inputs, output: [output], attribute: attributes });
    return output;
  }
}

export function ints(name: string, values: readonly number[]): AttributeMessage {
  return { name, type: AttributeType.INTS, ints: values };
}

export function int(name: string, value: number): AttributeMessage {
  return { name, type: AttributeType.INT, i: value };
}

function values(parameters: ReadonlyMap<string, tf.Tensor>, name: string): Float32Array {
  const tensor = parameters.get(name);
  if (tensor === undefined) throw new Error(`ONNX export: parameter "${name}" is missing`);
  return tensor.dataSync() as Float32Array;
}

/** Reorders a tfjs conv filter [kh, kw, in, out] (HWIO) to ONNX's [out, in, kh, kw] (OIHW), scaling output channel o by `scale[o]`. */
export function hwioToOihw(filter: Float32Array, shape: readonly number[], scale?: Float64Array): Float32Array {
  const [kh = 0, kw = 0, inChannels = 0, outChannels = 0] = shape;
  const out = new Float32Array(filter.length);
  for (let y = 0; y < kh; y++) {
    for (let x = 0; x < kw; x++) {
      for (let i = 0; i < inChannels; i++) {
        for (let o = 0; o < outChannels; o++) {
          const value = filter[((y * kw + x) * inChannels + i) * outChannels + o] ?? 0;
          out[((o * inChannels + i) * kh + y) * kw + x] = scale === undefined ? value : value * (scale[o] ?? 0);
        }
      }
    }
  }
  return out;
}

/** Reorders a tfjs depthwise filter [kh, kw, C, 1] to the grouped-conv weight [C, 1, kh, kw], scaling channel c by `scale[c]`. */
function depthwiseToOihw(filter: Float32Array, shape: readonly number[], scale: Float64Array): Float32Array {
  const [kh = 0, kw = 0, channels = 0] = shape;
  const out = new Float32Array(filter.length);
  for (let y = 0; y < kh; y++) {
    for (let x = 0; x < kw; x++) {
      for (let c = 0; c < channels; c++) {
        out[(c * kh + y) * kw + x] = (filter[(y * kw + x) * channels + c] ?? 0) * (scale[c] ?? 0);
      }
    }
  }
  return out;
}

/** One MobileFaceNet conv + BN (+ PReLU) unit, named by its PyTorch state-dict prefixes. */
interface MobileFaceNetUnit {
  readonly weight: string;
  readonly batchNorm: string;
  readonly prelu: string | undefined;
  readonly depthwise: boolean;
  readonly stride: number;
  readonly padding: number;
}

/**
 * Lists MobileFaceNet's units in order, as `model/mobilefacenet.ts` builds them: the stem,
 * the bottlenecks of `BOTTLENECK_STAGES` (with whether each adds its input), and the head.
 * NOTE: strides and paddings repeat the private architecture table of `model/mobilefacenet.ts`.
 * If that table changes without this list, `test/onnxExport.test.ts` fails because the outputs differ.
 */
function mobileFaceNetLayout(): { stem: MobileFaceNetUnit[]; bottlenecks: Array<{ units: MobileFaceNetUnit[]; residual: boolean }>; head: MobileFaceNetUnit[] } {
  const unit = (prefix: string, conv: string, bn: string, prelu: string | undefined, depthwise: boolean, stride: number, padding: number): MobileFaceNetUnit => ({
    weight: `${prefix}.${conv}.weight`,
    batchNorm: `${prefix}.${bn}`,
    prelu: prelu === undefined ? undefined : `${prefix}.${prelu}.weight`,
    depthwise,
    stride,
    padding,
  });

  const stem = [unit('conv1', 'conv', 'bn', 'prelu', false, 2, 1), unit('dw_conv1', 'conv', 'bn', 'prelu', true, 1, 1)];

  const bottlenecks: Array<{ units: MobileFaceNetUnit[]; residual: boolean }> = [];
  let channels = 64;
  for (const stage of BOTTLENECK_STAGES) {
    for (let r = 0; r < stage.repeats; r++) {
      const prefix = `blocks.${bottlenecks.length}`;
      const stride = r === 0 ? stage.stride : 1;
      bottlenecks.push({
        units: [
          unit(prefix, 'conv.0', 'conv.1', 'conv.2', false, 1, 0),
          unit(prefix, 'conv.3', 'conv.4', 'conv.5', true, stride, 1),
          unit(prefix, 'conv.6', 'conv.7', undefined, false, 1, 0),
        ],
        residual: stride === 1 && channels === stage.outChannels,
      });
      channels = stage.outChannels;
    }
  }

  const head = [
    unit('conv2', 'conv', 'bn', 'prelu', false, 1, 0),
    // linear7: a 7×6 depthwise conv over the whole 7×6 map, with no padding and no activation.
    unit('linear7', 'conv', 'bn', undefined, true, 1, 0),
    unit('linear1', 'conv', 'bn', undefined, false, 1, 0),
  ];
  return { stem, bottlenecks, head };
}

/** Adds a Conv node, and a PRelu node with slopes [C, 1, 1] when `slopes` is given. Returns the output name. */
function addConv(
  graph: GraphBuilder,
  name: string,
  input: string,
  conv: { weight: Float32Array; weightDims: readonly number[]; bias: Float32Array; stride: number; padding: number; group: number },
  slopes: Float32Array | undefined,
): string {
  const [outChannels = 0, , kh = 0, kw = 0] = conv.weightDims;
  const weight = graph.addFloat(`${name}.weight`, conv.weightDims, conv.weight);
  const bias = graph.addFloat(`${name}.bias`, [outChannels], conv.bias);
  const p = conv.padding;
  const convOut = graph.addNode('Conv', `${name}.conv`, [input, weight, bias], [
    ints('kernel_shape', [kh, kw]),
    ints('strides', [conv.stride, conv.stride]),
    ints('pads', [p, p, p, p]),
    ints('dilations', [1, 1]),
    int('group', conv.group),
  ]);
  if (slopes === undefined) return convOut;
  const slope = graph.addFloat(`${name}.slope`, [outChannels, 1, 1], slopes);
  return graph.addNode('PRelu', `${name}.prelu`, [convOut, slope]);
}

function buildMobileFaceNet(graph: GraphBuilder, model: MobileFaceNet, input: string): string {
  const parameters = model.parameters;
  const layout = mobileFaceNetLayout();

  const apply = (x: string, u: MobileFaceNetUnit): string => {
    const shape = parameters.get(u.weight)?.shape ?? [];
    const gamma = values(parameters, `${u.batchNorm}.weight`);
    const beta = values(parameters, `${u.batchNorm}.bias`);
    const mean = values(parameters, `${u.batchNorm}.running_mean`);
    const variance = values(parameters, `${u.batchNorm}.running_var`);

    // BatchNorm folding: scale s = γ / √(σ² + ε) multiplies the filter, and the bias is β − μ·s.
    const scale = new Float64Array(gamma.length);
    const bias = new Float32Array(gamma.length);
    for (let c = 0; c < gamma.length; c++) {
      scale[c] = (gamma[c] ?? 0) / Math.sqrt((variance[c] ?? 0) + BATCH_NORM_EPSILON);
      bias[c] = (beta[c] ?? 0) - (mean[c] ?? 0) * (scale[c] ?? 0);
    }

    const [kh = 0, kw = 0, inChannels = 0, outChannels = 0] = shape;
    const filter = values(parameters, u.weight);
    const conv = u.depthwise
      ? { weight: depthwiseToOihw(filter, shape, scale), weightDims: [inChannels, 1, kh, kw], group: inChannels }
      : { weight: hwioToOihw(filter, shape, scale), weightDims: [outChannels, inChannels, kh, kw], group: 1 };
    const slopes = u.prelu === undefined ? undefined : values(parameters, u.prelu);
    const name = u.weight.replace(/\.weight$/, '');
    return addConv(graph, name, x, { ...conv, bias, stride: u.stride, padding: u.padding }, slopes);
  };

  let x = input;
  for (const u of layout.stem) x = apply(x, u);
  layout.bottlenecks.forEach((block, index) => {
    let y = x;
    for (const u of block.units) y = apply(y, u);
    x = block.residual ? graph.addNode('Add', `blocks.${index}.add`, [x, y]) : y;
  });
  for (const u of layout.head) x = apply(x, u);

  // linear1 leaves [N, 128, 1, 1]. Flatten keeps the batch axis and gives [N, 128].
  return graph.addNode('Flatten', ONNX_OUTPUT_NAME, [x], [int('axis', 1)]);
}

function buildSphereFace20(graph: GraphBuilder, model: SphereFace20, input: string): string {
  const parameters = model.parameters;

  const apply = (x: string, layer: string, stride: number): string => {
    const shape = parameters.get(`${layer}.weight`)?.shape ?? [];
    const [kh = 0, kw = 0, inChannels = 0, outChannels = 0] = shape;
    const conv = {
      weight: hwioToOihw(values(parameters, `${layer}.weight`), shape),
      weightDims: [outChannels, inChannels, kh, kw],
      bias: values(parameters, `${layer}.bias`),
      stride,
      padding: 1,
      group: 1,
    };
    return addConv(graph, layer, x, conv, values(parameters, `${layer.replace('conv', 'relu')}.weight`));
  };

  let x = input;
  SPHEREFACE20_STAGES.forEach((stage, index) => {
    const s = index + 1;
    x = apply(x, `conv${s}_1`, 2);
    for (let u = 0; u < stage.units; u++) {
      const first = apply(x, `conv${s}_${2 * u + 2}`, 1);
      const second = apply(first, `conv${s}_${2 * u + 3}`, 1);
      x = graph.addNode('Add', `res${s}_${2 * u + 3}`, [x, second]);
    }
  });

  // The tfjs fc5 weight [21504, 512] has rows in HWC order (y, x, c), but Flatten of the NCHW map
  // gives CHW order (c, y, x), so the rows are permuted here instead of transposing at run time.
  const { channels, height, width } = FC5_INPUT;
  const hwc = values(parameters, 'fc5.weight');
  const outFeatures = hwc.length / (channels * height * width);
  const chw = new Float32Array(hwc.length);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < height; y++) {
      for (let xx = 0; xx < width; xx++) {
        const from = ((y * width + xx) * channels + c) * outFeatures;
        const to = ((c * height + y) * width + xx) * outFeatures;
        chw.set(hwc.subarray(from, from + outFeatures), to);
      }
    }
  }
  const weight = graph.addFloat('fc5.weight', [channels * height * width, outFeatures], chw);
  const bias = graph.addFloat('fc5.bias', [outFeatures], values(parameters, 'fc5.bias'));
  const flat = graph.addNode('Flatten', 'fc5.flatten', [x], [int('axis', 1)]);
  return graph.addNode('Gemm', ONNX_OUTPUT_NAME, [flat, weight, bias]);
}

function metadataOf(model: EmbeddingModel): Array<{ key: string; value: string }> {
  const k = ONNX_METADATA_KEYS;
  return [
    { key: k.name, value: model.name },
    { key: k.inputHeight, value: String(model.inputSize.height) },
    { key: k.inputWidth, value: String(model.inputSize.width) },
    { key: k.channelOrder, value: model.channelOrder },
    { key: k.normalizationMean, value: String(model.normalization.mean) },
    { key: k.normalizationScale, value: String(model.normalization.scale) },
    { key: k.embeddingSize, value: String(model.embeddingSize) },
  ];
}

/**
 * Serialises `model` as an ONNX model equivalent to `model.predict`: input `input` NHWC float32
 * [N, H, W, 3], output `embedding` [N, embeddingSize], with `N` dynamic. The model is read, not
 * consumed, and must not have been disposed.
 */
export function exportOnnx(model: MobileFaceNet | SphereFace20): Uint8Array {
  const graph = new GraphBuilder();
  const nchw = graph.addNode('Transpose', 'input.nchw', [ONNX_INPUT_NAME], [ints('perm', [0, 3, 1, 2])]);
  const output = model instanceof MobileFaceNet ? buildMobileFaceNet(graph, model, nchw) : buildSphereFace20(graph, model, nchw);
  if (output !== ONNX_OUTPUT_NAME) throw new Error(`ONNX export of ${model.name}: the graph ends in "${output}", expected "${ONNX_OUTPUT_NAME}"`);

  const { height, width } = model.inputSize;
  const batch = { dim_param: ONNX_BATCH_DIMENSION };
  return encodeModel({
    ir_version: IR_VERSION,
    producer_name: 'sphereface-ts',
    producer_version: '0.1.0',
    opset_import: [{ domain: '', version: ONNX_OPSET }],
    metadata_props: metadataOf(model),
    graph: {
      name: model.name,
      node: graph.nodes,
      initializer: graph.initializers,
      input: [
        {
          name: ONNX_INPUT_NAME,
          type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [batch, { dim_value: height }, { dim_value: width }, { dim_value: 3 }] } } },
        },
      ],
      output: [
        {
          name: ONNX_OUTPUT_NAME,
          type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [batch, { dim_value: model.embeddingSize }] } } },
        },
      ],
    },
  });
}
