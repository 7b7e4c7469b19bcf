/**
 * An embedding network run by ONNX Runtime (`onnxruntime-node`, CPU execution provider) instead
 * of TensorFlow.js. It takes the models that `exportOnnx` writes.
 */
import os from 'node:os';
import * as ort from 'onnxruntime-node';

import { createOrtSession } from './ortSession.ts';
import { ONNX_INPUT_NAME, ONNX_METADATA_KEYS, ONNX_OUTPUT_NAME } from './onnxExport.ts';
import { decodeModelHeader } from './onnx/onnx.proto.ts';
import type { EmbeddingModel } from './types.ts';

/** The fields of `EmbeddingModel` that describe a network, as `exportOnnx` records them. */
export type EmbeddingMetadata = Pick<EmbeddingModel, 'name' | 'inputSize' | 'channelOrder' | 'normalization' | 'embeddingSize'>;

export interface OnnxSessionOptions {
  /** Threads for one operator, default `os.availableParallelism()`. */
  readonly intraOpNumThreads?: number;
}

/** Reads the `EmbeddingModel` description from a model's `metadata_props`. Throws naming the first missing or invalid entry. */
export function readEmbeddingMetadata(bytes: Uint8Array, source: string): EmbeddingMetadata {
  const metadata = decodeModelHeader(bytes).metadata;
  const text = (key: string): string => {
    const value = metadata.get(key);
    if (value === undefined) throw new Error(`${source}: ONNX metadata "${key}" is missing. Expected a model written by exportOnnx`);
    return value;
  };
  const number = (key: string): number => {
    const value = Number(text(key));
    if (!Number.isFinite(value)) throw new Error(`${source}: ONNX metadata "${key}" is "${text(key)}", expected a number`);
    return value;
  };

  const name = text(ONNX_METADATA_KEYS.name);
  const channelOrder = text(ONNX_METADATA_KEYS.channelOrder);
  if (channelOrder !== 'RGB' && channelOrder !== 'BGR') {
    throw new Error(`${source}: ONNX metadata "${ONNX_METADATA_KEYS.channelOrder}" is "${channelOrder}", expected RGB or BGR`);
  }
  return {
    name,
    inputSize: { height: number(ONNX_METADATA_KEYS.inputHeight), width: number(ONNX_METADATA_KEYS.inputWidth) },
    channelOrder,
    normalization: { mean: number(ONNX_METADATA_KEYS.normalizationMean), scale: number(ONNX_METADATA_KEYS.normalizationScale) },
    embeddingSize: number(ONNX_METADATA_KEYS.embeddingSize),
  };
}

/**
 * An ONNX Runtime inference session for an exported embedding network, with the network's
 * description. Create one with `OnnxEmbeddingModel.create`, and call `dispose` when done.
 */
export class OnnxEmbeddingModel implements EmbeddingMetadata {
  readonly name: string;
  readonly inputSize: { readonly height: number; readonly width: number };
  readonly channelOrder: 'RGB' | 'BGR';
  readonly normalization: { readonly mean: number; readonly scale: number };
  readonly embeddingSize: number;
  /** Threads ONNX Runtime uses inside one operator. */
  readonly threads: number;

  private session: ort.InferenceSession | undefined;

  private constructor(session: ort.InferenceSession, metadata: EmbeddingMetadata, threads: number) {
    this.session = session;
    this.name = metadata.name;
    this.inputSize = metadata.inputSize;
    this.channelOrder = metadata.channelOrder;
    this.normalization = metadata.normalization;
    this.embeddingSize = metadata.embeddingSize;
    this.threads = threads;
  }

  /**
   * Loads the bytes of an ONNX model written by `exportOnnx` into a CPU session with every graph
   * optimisation. `source` names the model in errors (a file path, say). Throws when the
   * metadata is missing or the session cannot be created, for example on an invalid model.
   */
  static async create(bytes: Uint8Array, source = 'ONNX model', options: OnnxSessionOptions = {}): Promise<OnnxEmbeddingModel> {
    const metadata = readEmbeddingMetadata(bytes, source);
    const threads = options.intraOpNumThreads ?? os.availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`${source}: intraOpNumThreads is ${threads}, expected an integer ≥ 1`);

    let session: ort.InferenceSession;
    try {
      session = (await createOrtSession(bytes, { intraOpNumThreads: threads })).session;
    } catch (error) {
      throw new Error(`${source}: ONNX Runtime could not create a session: ${(error as Error).message}`, { cause: error });
    }
    if (!session.inputNames.includes(ONNX_INPUT_NAME) || !session.outputNames.includes(ONNX_OUTPUT_NAME)) {
      await session.release();
      throw new Error(
        `${source}: the graph has inputs [${session.inputNames.join(', ')}] and outputs [${session.outputNames.join(', ')}], ` +
          `expected input "${ONNX_INPUT_NAME}" and output "${ONNX_OUTPUT_NAME}"`,
      );
    }
    return new OnnxEmbeddingModel(session, metadata, threads);
  }

  /**
   * Runs the network on `n` images, `batch` being normalised NHWC float32 [n, H, W, 3] as for
   * `EmbeddingModel.predict`, and returns the embeddings row-major [n, embeddingSize].
   */
  async embed(batch: Float32Array, n: number): Promise<Float32Array> {
    if (this.session === undefined) throw new Error(`${this.name}: embed() called after dispose()`);
    const { height, width } = this.inputSize;
    const expected = n * height * width * 3;
    if (!Number.isInteger(n) || n < 1 || batch.length !== expected) {
      throw new Error(`${this.name}: batch has ${batch.length} values for n = ${n}, expected n ≥ 1 and n × ${height} × ${width} × 3 = ${expected} values`);
    }

    const input = new ort.Tensor('float32', batch, [n, height, width, 3]);
    const results = await this.session.run({ [ONNX_INPUT_NAME]: input });
    const output = results[ONNX_OUTPUT_NAME];
    if (output === undefined) throw new Error(`${this.name}: ONNX Runtime returned no "${ONNX_OUTPUT_NAME}" output`);
    const dims = output.dims.join(',');
    if (output.type !== 'float32' || dims !== `${n},${this.embeddingSize}`) {
      throw new Error(`${this.name}: output "${ONNX_OUTPUT_NAME}" is ${output.type} [${dims}], expected float32 [${n}, ${this.embeddingSize}]`);
    }
    return output.data as Float32Array;
  }

  /** Releases the session. The model cannot be used afterwards, and a second call does nothing. */
  async dispose(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    await session?.release();
  }
}
