/**
 * A minimal protobuf wire-format walker and writer for the Caffe tests. It shares no code with
 * `model/caffe.ts` and does not use protobufjs: it reads varints and length-delimited fields by
 * hand and decodes floats with DataView, so the importer can be checked against it.
 *
 * Field numbers (from Caffe's caffe.proto): NetParameter name 1, layers 2, layer 100;
 * LayerParameter name 1, type 2, blobs 7; V1LayerParameter name 4, type 5, blobs 6;
 * BlobProto num 1, channels 2, height 3, width 4, data 5, shape 7, double_data 8; BlobShape dim 1.
 */

const VARINT = 0;
const FIXED64 = 1;
const LENGTH_DELIMITED = 2;
const FIXED32 = 5;

/** One field of a message: its number, wire type and either a varint value or a byte range. */
interface WireField {
  readonly field: number;
  readonly wireType: number;
  readonly value: number;
  readonly start: number;
  readonly end: number;
}

function readVarint(bytes: Uint8Array, position: number): { value: number; next: number } {
  let value = 0;
  let scale = 1;
  for (let p = position; p < bytes.length; p++) {
    const byte = bytes[p] ?? 0;
    value += (byte & 0x7f) * scale;
    scale *= 128;
    if ((byte & 0x80) === 0) return { value, next: p + 1 };
  }
  throw new Error(`varint at byte ${position} runs past the end`);
}

/** Lists the fields of the message in bytes [start, end). */
function fieldsOf(bytes: Uint8Array, start: number, end: number): WireField[] {
  const fields: WireField[] = [];
  let p = start;
  while (p < end) {
    const key = readVarint(bytes, p);
    const field = Math.floor(key.value / 8);
    const wireType = key.value % 8;
    p = key.next;
    if (wireType === VARINT) {
      const v = readVarint(bytes, p);
      fields.push({ field, wireType, value: v.value, start: p, end: v.next });
      p = v.next;
    } else if (wireType === LENGTH_DELIMITED) {
      const length = readVarint(bytes, p);
      fields.push({ field, wireType, value: length.value, start: length.next, end: length.next + length.value });
      p = length.next + length.value;
    } else if (wireType === FIXED32) {
      fields.push({ field, wireType, value: 0, start: p, end: p + 4 });
      p += 4;
    } else if (wireType === FIXED64) {
      fields.push({ field, wireType, value: 0, start: p, end: p + 8 });
      p += 8;
    } else {
      throw new Error(`wire type ${wireType} at byte ${p} is not used by Caffe models`);
    }
  }
  if (p !== end) throw new Error(`message overruns its end: ${p} > ${end}`);
  return fields;
}

export interface WireBlob {
  readonly shape: number[];
  readonly data: Float32Array;
}

export interface WireLayer {
  readonly name: string;
  readonly type: string;
  readonly blobs: WireBlob[];
}

export interface WireNet {
  readonly name: string;
  readonly layers: WireLayer[];
}

function readBlob(bytes: Uint8Array, start: number, end: number): WireBlob {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape: number[] = [];
  const floats: number[] = [];
  for (const f of fieldsOf(bytes, start, end)) {
    if (f.field === 7 && f.wireType === LENGTH_DELIMITED) {
      for (const dim of fieldsOf(bytes, f.start, f.end)) {
        if (dim.wireType === VARINT) {
          shape.push(dim.value);
        } else {
          for (let p = dim.start; p < dim.end; ) {
            const v = readVarint(bytes, p);
            shape.push(v.value);
            p = v.next;
          }
        }
      }
    } else if (f.field === 5 && f.wireType === LENGTH_DELIMITED) {
      for (let p = f.start; p < f.end; p += 4) floats.push(view.getFloat32(p, true));
    } else if (f.field === 5 && f.wireType === FIXED32) {
      floats.push(view.getFloat32(f.start, true));
    }
  }
  return { shape, data: Float32Array.from(floats) };
}

/** Walks a binary NetParameter with a `layer` list (field 100) and returns each layer's name, type and blobs. */
export function walkNetParameter(bytes: Uint8Array): WireNet {
  const text = new TextDecoder();
  let name = '';
  const layers: WireLayer[] = [];
  for (const f of fieldsOf(bytes, 0, bytes.length)) {
    if (f.field === 1 && f.wireType === LENGTH_DELIMITED) name = text.decode(bytes.subarray(f.start, f.end));
    if (f.field !== 100 || f.wireType !== LENGTH_DELIMITED) continue;
    let layerName = '';
    let type = '';
    const blobs: WireBlob[] = [];
    for (const lf of fieldsOf(bytes, f.start, f.end)) {
      if (lf.field === 1) layerName = text.decode(bytes.subarray(lf.start, lf.end));
      else if (lf.field === 2) type = text.decode(bytes.subarray(lf.start, lf.end));
      else if (lf.field === 7) blobs.push(readBlob(bytes, lf.start, lf.end));
    }
    layers.push({ name: layerName, type, blobs });
  }
  return { name, layers };
}

// ---------------------------------------------------------------------------------------------
// Writing.

function varintBytes(value: number): number[] {
  const out: number[] = [];
  let v = value;
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** Encodes a varint field. */
export function varintField(field: number, value: number): number[] {
  return [...varintBytes(field * 8 + VARINT), ...varintBytes(value)];
}

/** Encodes a length-delimited field containing `payload` (a string, a nested message or packed values). */
export function bytesField(field: number, payload: readonly number[] | string): number[] {
  const data = typeof payload === 'string' ? Array.from(new TextEncoder().encode(payload)) : payload;
  return [...varintBytes(field * 8 + LENGTH_DELIMITED), ...varintBytes(data.length), ...data];
}

/** Encodes a single float field (wire type 5), as an unpacked repeated float is written. */
export function floatField(field: number, value: number): number[] {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setFloat32(0, value, true);
  return [...varintBytes(field * 8 + FIXED32), ...bytes];
}

/** Encodes a packed repeated float field. */
export function packedFloats(field: number, values: readonly number[]): number[] {
  const bytes = new Uint8Array(4 * values.length);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setFloat32(4 * i, v, true));
  return bytesField(field, Array.from(bytes));
}

/** Encodes a packed repeated double field. */
export function packedDoubles(field: number, values: readonly number[]): number[] {
  const bytes = new Uint8Array(8 * values.length);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setFloat64(8 * i, v, true));
  return bytesField(field, Array.from(bytes));
}

/** Encodes a packed repeated varint field. */
export function packedVarints(field: number, values: readonly number[]): number[] {
  return bytesField(field, values.flatMap(varintBytes));
}

/**
 * Encodes a length-delimited field as bytes, for messages too large for the number-array
 * encoders above (a SphereFace `fc5` blob has 11 million floats). `parts` are concatenated
 * into the payload.
 */
export function lengthDelimitedBytes(field: number, parts: ReadonlyArray<Uint8Array | readonly number[]>): Uint8Array {
  const payloadLength = parts.reduce((sum, part) => sum + part.length, 0);
  const prefix = [...varintBytes(field * 8 + LENGTH_DELIMITED), ...varintBytes(payloadLength)];
  const out = new Uint8Array(prefix.length + payloadLength);
  out.set(prefix, 0);
  let offset = prefix.length;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Encodes a packed repeated float field from a Float32Array, little-endian, as bytes. */
export function packedFloat32Bytes(field: number, values: Float32Array): Uint8Array {
  const bytes = new Uint8Array(4 * values.length);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setFloat32(4 * i, v, true));
  return lengthDelimitedBytes(field, [bytes]);
}
