/**
 * Reads Caffe `.caffemodel` files without Caffe, and maps their blobs onto a network's parameters.
 *
 * A `.caffemodel` is a binary protobuf `NetParameter` (Caffe's `src/caffe/proto/caffe.proto`).
 * Its learned weights sit in each layer's `blobs`. Two layer lists exist:
 *
 * - `layer` (field 100, `LayerParameter`), written by Caffe since 2015, with the type as a string
 *   such as "Convolution";
 * - `layers` (field 2, `V1LayerParameter`), the older list, with the type as an enum. Its types are
 *   translated to the string names that Caffe's own upgrade code gives them (see `V1_LAYER_TYPES`).
 *
 * The oldest format, V0, nests each layer's settings and blobs in `V1LayerParameter.layer`
 * (field 1). It is detected and rejected; Caffe's `upgrade_net_proto_binary` tool converts it.
 *
 * The schema below declares only the fields this reader uses. protobufjs skips every other field,
 * so solver settings, layer parameters and `diff` blobs cost nothing. The field numbers follow
 * BVLC Caffe's caffe.proto.
 *
 * This module contains no TensorFlow.js code. `readCaffeModel` returns Float32Arrays in Caffe's
 * own layouts, and `mapCaffeBlobs` converts them to the layouts TensorFlow.js expects.
 */
import { readFile } from 'node:fs/promises';
import protobuf from 'protobufjs';
import { linearChwToHwc, oihwToHwio, torchShapeOf, transposeLinear, type MappedParameter, type ParameterSpec } from './pytorch.ts';

const CAFFE_SCHEMA = `
syntax = "proto2";
package caffe;

message BlobShape {
  repeated int64 dim = 1 [packed = true];
}

message BlobProto {
  optional BlobShape shape = 7;
  repeated float data = 5 [packed = true];
  repeated double double_data = 8 [packed = true];
  optional int64 num = 1;
  optional int64 channels = 2;
  optional int64 height = 3;
  optional int64 width = 4;
}

message LayerParameter {
  optional string name = 1;
  optional string type = 2;
  repeated BlobProto blobs = 7;
}

message V1LayerParameter {
  optional bytes layer = 1;
  optional string name = 4;
  optional int32 type = 5;
  repeated BlobProto blobs = 6;
}

message NetParameter {
  optional string name = 1;
  repeated V1LayerParameter layers = 2;
  repeated LayerParameter layer = 100;
}
`;

const schema = protobuf.parse(CAFFE_SCHEMA, { keepCase: true }).root;
const NetParameterType = schema.lookupType('caffe.NetParameter');

/**
 * `V1LayerParameter.LayerType` enum values and the string type names that Caffe's
 * `UpgradeV1LayerType` gives them, so that both formats name a layer type the same way.
 */
export const V1_LAYER_TYPES: Readonly<Record<number, string>> = {
  0: 'None',
  1: 'Accuracy',
  2: 'BNLL',
  3: 'Concat',
  4: 'Convolution',
  5: 'Data',
  6: 'Dropout',
  7: 'EuclideanLoss',
  8: 'Flatten',
  9: 'HDF5Data',
  10: 'HDF5Output',
  11: 'Im2col',
  12: 'ImageData',
  13: 'InfogainLoss',
  14: 'InnerProduct',
  15: 'LRN',
  16: 'MultinomialLogisticLoss',
  17: 'Pooling',
  18: 'ReLU',
  19: 'Sigmoid',
  20: 'Softmax',
  21: 'SoftmaxWithLoss',
  22: 'Split',
  23: 'TanH',
  24: 'WindowData',
  25: 'Eltwise',
  26: 'Power',
  27: 'SigmoidCrossEntropyLoss',
  28: 'HingeLoss',
  29: 'MemoryData',
  30: 'ArgMax',
  31: 'Threshold',
  32: 'DummyData',
  33: 'Slice',
  34: 'MVN',
  35: 'AbsVal',
  36: 'Silence',
  37: 'ContrastiveLoss',
  38: 'Exp',
  39: 'Deconvolution',
};

/** A learned parameter of a layer: row-major, in Caffe's layout. */
export interface CaffeBlob {
  /**
   * The dimensions as stored: `shape.dim` when the blob has a `shape`, otherwise the legacy
   * [num, channels, height, width]. Legacy blobs therefore pad small shapes with leading 1s
   * (a bias of 10 is [1, 1, 1, 10]); `mapCaffeBlobs` reconciles that.
   */
  readonly shape: readonly number[];
  /** `data`, or `double_data` rounded to float32 when a blob stores doubles. */
  readonly data: Float32Array;
}

export interface CaffeLayer {
  readonly name: string;
  /** Caffe's type name ("Convolution", "PReLU", "InnerProduct", …), also for `V1LayerParameter` layers. */
  readonly type: string;
  /** Learned parameters in Caffe order: for Convolution and InnerProduct, the weight then the bias. */
  readonly blobs: readonly CaffeBlob[];
}

export interface CaffeNet {
  /** The file the net was read from, for error messages. */
  readonly path: string;
  /** `NetParameter.name`, empty when the file has none. */
  readonly name: string;
  /** The layer list the file uses: `layer` (field 100) or the legacy `layers` (field 2). */
  readonly format: 'layer' | 'v1';
  /** Every layer in file order, with or without blobs. */
  readonly layers: readonly CaffeLayer[];
}

/** Error for a file that is not a readable Caffe model. The message names the file and what was expected. */
export class CaffeModelError extends Error {
  override readonly name = 'CaffeModelError';
}

/** Error for Caffe blobs that do not fit a network. The message lists every missing, extra or misshapen blob. */
export class CaffeBlobMismatchError extends Error {
  override readonly name = 'CaffeBlobMismatchError';
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/** An int64 field as protobufjs returns it: a number, or a `Long` when long.js is installed. */
type Int64 = number | { toNumber(): number };

interface DecodedBlob {
  readonly shape?: { readonly dim?: readonly Int64[] } | null;
  readonly data?: readonly number[];
  readonly double_data?: readonly number[];
  readonly num?: Int64;
  readonly channels?: Int64;
  readonly height?: Int64;
  readonly width?: Int64;
}

interface DecodedLayer {
  /** `V1LayerParameter.layer`, the V0 layer settings. */
  readonly layer?: Uint8Array;
  readonly name?: string;
  readonly type?: string | number;
  readonly blobs?: readonly DecodedBlob[];
}

interface DecodedNet {
  readonly name?: string;
  readonly layer?: readonly DecodedLayer[];
  readonly layers?: readonly DecodedLayer[];
}

const LEGACY_DIMENSIONS = ['num', 'channels', 'height', 'width'] as const;

function toDimension(value: Int64, where: string): number {
  const n = typeof value === 'number' ? value : value.toNumber();
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${where} has dimension ${n}, expected a non-negative integer`);
  return n;
}

function blobShape(blob: DecodedBlob, where: string): number[] {
  if (blob.shape !== undefined && blob.shape !== null) {
    return (blob.shape.dim ?? []).map((d) => toDimension(d, where));
  }
  // Only fields present on the wire are own properties of a decoded protobufjs message.
  if (LEGACY_DIMENSIONS.some((field) => Object.hasOwn(blob, field))) {
    return LEGACY_DIMENSIONS.map((field) => toDimension(blob[field] ?? 0, where));
  }
  throw new Error(`${where} has neither a shape nor the legacy num/channels/height/width`);
}

function convertBlob(blob: DecodedBlob, where: string): CaffeBlob {
  const shape = blobShape(blob, where);
  const floats = blob.data ?? [];
  const doubles = blob.double_data ?? [];
  if (floats.length > 0 && doubles.length > 0) {
    throw new Error(`${where} has both data (${floats.length} floats) and double_data (${doubles.length} doubles), expected one of them`);
  }
  const data = Float32Array.from(floats.length > 0 ? floats : doubles);
  const count = shape.reduce((a, b) => a * b, 1);
  if (data.length !== count) {
    throw new Error(`${where} has shape [${shape.join(', ')}] (${count} elements) but contains ${data.length} values`);
  }
  return { shape, data };
}

function layerType(type: string | number | undefined, format: CaffeNet['format']): string {
  if (format === 'layer') return typeof type === 'string' ? type : '';
  if (typeof type !== 'number') return V1_LAYER_TYPES[0] ?? '';
  return Object.hasOwn(V1_LAYER_TYPES, type) ? (V1_LAYER_TYPES[type] ?? '') : `V1 type ${type}`;
}

function convertLayer(layer: DecodedLayer, index: number, format: CaffeNet['format']): CaffeLayer {
  const name = layer.name ?? '';
  const label = `layer ${index} "${name}"`;
  const blobs = (layer.blobs ?? []).map((blob, b) => convertBlob(blob, `blob ${b} of ${label}`));
  return { name, type: layerType(layer.type, format), blobs };
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Decodes the bytes of a `.caffemodel`. `path` names the source in errors. Throws
 * `CaffeModelError` when the bytes are not a protobuf `NetParameter` (for example an image or a
 * truncated file), when the net has no layers, or when a blob's values do not fill its shape.
 */
export function parseCaffeModel(bytes: Uint8Array, path: string): CaffeNet {
  const expected = 'expected a binary Caffe NetParameter (.caffemodel)';
  let decoded: DecodedNet;
  try {
    decoded = NetParameterType.decode(bytes) as unknown as DecodedNet;
  } catch (error) {
    throw new CaffeModelError(`${path}: not a Caffe model: protobuf decoding of its ${bytes.length} bytes failed (${errorMessage(error)}). The file is truncated or in another format; ${expected}`);
  }

  const modern = decoded.layer ?? [];
  const legacy = decoded.layers ?? [];
  if (modern.length > 0 && legacy.length > 0) {
    throw new CaffeModelError(`${path}: the net has both "layer" (${modern.length}) and the legacy "layers" (${legacy.length}); Caffe accepts only one of the two lists`);
  }
  if (modern.length === 0 && legacy.length === 0) {
    throw new CaffeModelError(`${path}: no layers found in ${bytes.length} bytes; ${expected} with a "layer" or "layers" list`);
  }

  const format: CaffeNet['format'] = modern.length > 0 ? 'layer' : 'v1';
  const v0 = legacy.findIndex((layer) => layer.layer !== undefined && layer.layer.length > 0);
  if (v0 >= 0) {
    throw new CaffeModelError(`${path}: layer ${v0} uses the V0 layer format, which this reader does not support; convert the file with Caffe's upgrade_net_proto_binary`);
  }
  try {
    const layers = (format === 'layer' ? modern : legacy).map((layer, i) => convertLayer(layer, i, format));
    return { path, name: decoded.name ?? '', format, layers };
  } catch (error) {
    throw new CaffeModelError(`${path}: ${errorMessage(error)}`);
  }
}

/** Reads and decodes a `.caffemodel` file; see `parseCaffeModel`. A missing file throws `CaffeModelError` naming it. */
export async function readCaffeModel(path: string): Promise<CaffeNet> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new CaffeModelError(`${path}: cannot read the Caffe model (${errorMessage(error)})`);
  }
  return parseCaffeModel(bytes, path);
}

// ---------------------------------------------------------------------------------------------
// Mapping blobs onto a network's parameters.

/** The location of a parameter's values in a Caffe net. */
export interface BlobAddress {
  readonly layer: string;
  /** Index into the layer's `blobs`. */
  readonly blob: number;
}

const NAMED_BLOBS: Readonly<Record<string, number>> = { weight: 0, bias: 1 };

/**
 * Finds the blob a parameter name refers to. The name is `LAYER.SUFFIX`: `weight` is blob 0 (a
 * Convolution or InnerProduct weight, or PReLU slopes), `bias` is blob 1, and a decimal suffix is
 * that blob index (BatchNorm's third blob is `LAYER.2`). These are the names PyTorch ports of
 * Caffe models use, so one parameter list serves both importers.
 */
export function blobAddress(parameterName: string): BlobAddress {
  const dot = parameterName.lastIndexOf('.');
  const suffix = parameterName.slice(dot + 1);
  const blob = Object.hasOwn(NAMED_BLOBS, suffix) ? NAMED_BLOBS[suffix] : /^\d+$/.test(suffix) ? Number(suffix) : undefined;
  if (dot <= 0 || blob === undefined) {
    throw new Error(`parameter name "${parameterName}" does not name a Caffe blob; expected LAYER.weight, LAYER.bias or LAYER.<blob index>`);
  }
  return { layer: parameterName.slice(0, dot), blob };
}

const BLOB_ROLES: readonly string[] = [' (weight)', ' (bias)'];

function describeBlob(address: BlobAddress): string {
  return `blob ${address.blob}${BLOB_ROLES[address.blob] ?? ''} of layer "${address.layer}"`;
}

/**
 * Drops leading 1s from a stored shape until it has the expected rank. The legacy BlobProto
 * always has four dimensions, so an InnerProduct weight [out, in] is stored as [1, 1, out, in].
 */
function reconcileShape(stored: readonly number[], expectedRank: number): readonly number[] {
  let start = 0;
  while (stored.length - start > expectedRank && stored[start] === 1) start++;
  return stored.slice(start);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Converts Caffe's layout to the spec's TensorFlow.js layout. Caffe stores convolutions as
 * [out, in, kh, kw] and InnerProduct weights as [out, in], the same layouts as PyTorch, so the
 * `ParameterSpec` layouts of the PyTorch importer apply unchanged.
 */
function convertLayout(data: Float32Array, spec: ParameterSpec, caffeShape: readonly number[]): Float32Array {
  const [a = 1, b = 1, c = 1, d = 1] = caffeShape;
  if (typeof spec.layout === 'object') {
    return linearChwToHwc(data, a, spec.layout.channels, spec.layout.height, spec.layout.width);
  }
  switch (spec.layout) {
    case 'conv2d':
      return oihwToHwio(data, a, b, c, d);
    case 'depthwise':
      // Caffe's grouped conv with group = C stores [C·m, 1, kh, kw], which is OIHW with in = 1.
      return oihwToHwio(data, a, 1, c, d);
    case 'linear':
      return transposeLinear(data, a, b);
    case 'vector':
      return data;
  }
}

/**
 * Fills a network's parameters from a Caffe net by layer name (see `blobAddress`), converting
 * each blob to the TensorFlow.js layout of its spec. Every problem is collected and reported in
 * one `CaffeBlobMismatchError` naming the file: a parameter whose layer or blob is missing, a blob
 * of the wrong shape (both shapes named), and a blob that no parameter uses. `ignore` lists layers
 * whose blobs may stay unused, such as a training-only head.
 */
export function mapCaffeBlobs(
  net: CaffeNet,
  specs: readonly ParameterSpec[],
  options: { readonly ignore?: readonly string[] } = {},
): Map<string, MappedParameter> {
  const problems: string[] = [];
  const layersByName = new Map<string, CaffeLayer>();
  for (const layer of net.layers) {
    if (layer.blobs.length === 0) continue;
    if (layersByName.has(layer.name)) problems.push(`layer "${layer.name}" appears more than once with blobs, so its parameters are ambiguous`);
    else layersByName.set(layer.name, layer);
  }

  const result = new Map<string, MappedParameter>();
  const used = new Set<string>();
  for (const spec of specs) {
    const address = blobAddress(spec.name);
    const expected = torchShapeOf(spec);
    const layer = layersByName.get(address.layer);
    if (layer === undefined) {
      const without = net.layers.find((l) => l.name === address.layer);
      const reason = without === undefined ? 'is missing' : `(${without.type}) has no blobs`;
      problems.push(`layer "${address.layer}" ${reason}; "${spec.name}" expects ${describeBlob(address)} with shape [${expected.join(', ')}]`);
      continue;
    }
    const blob = layer.blobs[address.blob];
    if (blob === undefined) {
      const count = layer.blobs.length === 1 ? '1 blob' : `${layer.blobs.length} blobs`;
      problems.push(`layer "${layer.name}" (${layer.type}) has ${count}, but "${spec.name}" expects ${describeBlob(address)} with shape [${expected.join(', ')}]`);
      continue;
    }
    used.add(`${layer.name}\u0000${address.blob}`);
    const shape = reconcileShape(blob.shape, expected.length);
    if (!sameShape(shape, expected)) {
      problems.push(`${describeBlob(address)} (${layer.type}) has shape [${blob.shape.join(', ')}] but "${spec.name}" expects [${expected.join(', ')}]`);
      continue;
    }
    result.set(spec.name, { name: spec.name, shape: spec.shape, data: convertLayout(blob.data, spec, shape) });
  }

  const ignored = new Set(options.ignore ?? []);
  for (const layer of layersByName.values()) {
    if (ignored.has(layer.name)) continue;
    layer.blobs.forEach((blob, b) => {
      if (!used.has(`${layer.name}\u0000${b}`)) {
        problems.push(`${describeBlob({ layer: layer.name, blob: b })} (${layer.type}) with shape [${blob.shape.join(', ')}] is not a parameter of the network`);
      }
    });
  }

  if (problems.length > 0) {
    const listed = problems.slice(0, 20);
    const more = problems.length > listed.length ? `\n  ... and ${problems.length - listed.length} more` : '';
    throw new CaffeBlobMismatchError(`${net.path}: the Caffe blobs do not match the network:\n  ${listed.join('\n  ')}${more}`);
  }
  return result;
}
