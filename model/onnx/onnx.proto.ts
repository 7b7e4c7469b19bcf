/**
 * A protobufjs schema for the part of ONNX's `onnx.proto` (proto2) that a writer of inference
 * models needs: a model with opset imports and metadata, one graph, nodes, attributes, tensors
 * and tensor value infos. Field numbers and enum values are those of onnx/onnx's `onnx.proto`.
 * Fields that are not declared (training info, functions, sparse tensors, …) are skipped when
 * decoding and never written.
 */
import protobuf from 'protobufjs';

const ONNX_SCHEMA = `
syntax = "proto2";
package onnx;

message StringStringEntryProto {
  optional string key = 1;
  optional string value = 2;
}

message OperatorSetIdProto {
  optional string domain = 1;
  optional int64 version = 2;
}

message TensorProto {
  enum DataType {
    UNDEFINED = 0;
    FLOAT = 1;
    UINT8 = 2;
    INT8 = 3;
    UINT16 = 4;
    INT16 = 5;
    INT32 = 6;
    INT64 = 7;
    STRING = 8;
    BOOL = 9;
    FLOAT16 = 10;
    DOUBLE = 11;
    UINT32 = 12;
    UINT64 = 13;
  }
  repeated int64 dims = 1;
  optional int32 data_type = 2;
  repeated float float_data = 4 [packed = true];
  repeated int32 int32_data = 5 [packed = true];
  repeated int64 int64_data = 7 [packed = true];
  optional string name = 8;
  optional bytes raw_data = 9;
  optional string doc_string = 12;
}

message TensorShapeProto {
  message Dimension {
    oneof value {
      int64 dim_value = 1;
      string dim_param = 2;
    }
    optional string denotation = 3;
  }
  repeated Dimension dim = 1;
}

message TypeProto {
  message Tensor {
    optional int32 elem_type = 1;
    optional TensorShapeProto shape = 2;
  }
  oneof value {
    Tensor tensor_type = 1;
  }
  optional string denotation = 6;
}

message ValueInfoProto {
  optional string name = 1;
  optional TypeProto type = 2;
  optional string doc_string = 3;
}

message AttributeProto {
  enum AttributeType {
    UNDEFINED = 0;
    FLOAT = 1;
    INT = 2;
    STRING = 3;
    TENSOR = 4;
    GRAPH = 5;
    FLOATS = 6;
    INTS = 7;
    STRINGS = 8;
    TENSORS = 9;
    GRAPHS = 10;
  }
  optional string name = 1;
  optional AttributeType type = 20;
  optional float f = 2;
  optional int64 i = 3;
  optional bytes s = 4;
  optional TensorProto t = 5;
  optional GraphProto g = 6;
  repeated float floats = 7;
  repeated int64 ints = 8;
  repeated bytes strings = 9;
  repeated TensorProto tensors = 10;
  repeated GraphProto graphs = 11;
  optional string doc_string = 13;
}

message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  optional string name = 3;
  optional string op_type = 4;
  repeated AttributeProto attribute = 5;
  optional string doc_string = 6;
  optional string domain = 7;
}

message GraphProto {
  repeated NodeProto node = 1;
  optional string name = 2;
  repeated TensorProto initializer = 5;
  optional string doc_string = 10;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
  repeated ValueInfoProto value_info = 13;
}

message ModelProto {
  optional int64 ir_version = 1;
  optional string producer_name = 2;
  optional string producer_version = 3;
  optional string domain = 4;
  optional int64 model_version = 5;
  optional string doc_string = 6;
  optional GraphProto graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
  repeated StringStringEntryProto metadata_props = 14;
}

// The leading fields of ModelProto without the graph, so that reading a model's metadata
// skips its weights instead of decoding them.
message ModelHeader {
  optional int64 ir_version = 1;
  optional string producer_name = 2;
  repeated OperatorSetIdProto opset_import = 8;
  repeated StringStringEntryProto metadata_props = 14;
}
`;

const root = protobuf.parse(ONNX_SCHEMA, { keepCase: true }).root;

/** `onnx.ModelProto`, for encoding a whole model and decoding it in tests. */
export const ModelProtoType = root.lookupType('onnx.ModelProto');
/** `ModelProto` restricted to its version, producer, opset and metadata fields. */
export const ModelHeaderType = root.lookupType('onnx.ModelHeader');

/** `TensorProto.DataType` values used here. */
export const DataType = { FLOAT: 1, INT64: 7 } as const;

/** `AttributeProto.AttributeType` values used here. */
export const AttributeType = { FLOAT: 1, INT: 2, INTS: 7 } as const;

/** Plain-object forms of the messages, with the field names of `onnx.proto`. */
export interface TensorMessage {
  readonly name: string;
  readonly dims: readonly number[];
  readonly data_type: number;
  readonly raw_data?: Uint8Array;
  readonly int64_data?: readonly number[];
}

export interface AttributeMessage {
  readonly name: string;
  readonly type: number;
  readonly f?: number;
  readonly i?: number;
  readonly ints?: readonly number[];
}

export interface NodeMessage {
  readonly name: string;
  readonly op_type: string;
  readonly input: readonly string[];
  readonly output: readonly string[];
  readonly attribute: readonly AttributeMessage[];
}

/** One dimension of a value's shape: a fixed size or a symbolic name such as `N`. */
export type DimensionMessage = { readonly dim_value: number } | { readonly dim_param: string };

export interface ValueInfoMessage {
  readonly name: string;
  readonly type: {
    readonly tensor_type: { readonly elem_type: number; readonly shape: { readonly dim: readonly DimensionMessage[] } };
  };
}

export interface GraphMessage {
  readonly name: string;
  readonly node: readonly NodeMessage[];
  readonly initializer: readonly TensorMessage[];
  readonly input: readonly ValueInfoMessage[];
  readonly output: readonly ValueInfoMessage[];
}

export interface ModelMessage {
  readonly ir_version: number;
  readonly producer_name: string;
  readonly producer_version: string;
  readonly opset_import: ReadonlyArray<{ readonly domain: string; readonly version: number }>;
  readonly graph: GraphMessage;
  readonly metadata_props: ReadonlyArray<{ readonly key: string; readonly value: string }>;
}

/** Serialises a model to the ONNX binary format. */
export function encodeModel(model: ModelMessage): Uint8Array {
  const message = ModelProtoType.fromObject(model as unknown as Record<string, unknown>);
  return ModelProtoType.encode(message).finish();
}

/** The version, producer, opsets and metadata of a serialised model, without its graph. */
export interface ModelHeader {
  readonly irVersion: number;
  readonly producerName: string;
  readonly opsets: ReadonlyMap<string, number>;
  readonly metadata: ReadonlyMap<string, string>;
}

/** Reads the header fields of an ONNX model. Throws when `bytes` is not a valid protobuf message. */
export function decodeModelHeader(bytes: Uint8Array): ModelHeader {
  const decoded = ModelHeaderType.toObject(ModelHeaderType.decode(bytes), { longs: Number, defaults: true }) as {
    ir_version: number;
    producer_name: string;
    opset_import: Array<{ domain?: string; version?: number }>;
    metadata_props: Array<{ key?: string; value?: string }>;
  };
  return {
    irVersion: decoded.ir_version,
    producerName: decoded.producer_name,
    opsets: new Map(decoded.opset_import.map((o) => [o.domain ?? '', o.version ?? 0])),
    metadata: new Map(decoded.metadata_props.map((p) => [p.key ?? '', p.value ?? ''])),
  };
}
