/**
 * The contract between a face-embedding network and the feature extractor.
 */
import type * as tf from '@tensorflow/tfjs-core';

import type { AlignmentName } from '../lib/alignmentTemplates.ts';

/** A network that maps aligned face crops to embedding vectors. */
export interface EmbeddingModel {
  /** Registry name, e.g. 'mobilefacenet'. */
  readonly name: string;
  /** Input size in pixels: 112 high and 96 wide for the SphereFace alignment template. */
  readonly inputSize: { readonly height: number; readonly width: number };
  /** Channel order the network was trained on. */
  readonly channelOrder: 'RGB' | 'BGR';
  /** Pixel normalisation the network was trained with: input = (pixel − mean) × scale, pixels in 0..255. */
  readonly normalization: { readonly mean: number; readonly scale: number };
  /** Length of the embedding of one image; concatenating the mirrored image's embedding doubles it later. */
  readonly embeddingSize: number;
  /**
   * The alignment template the network was trained on (`lib/alignmentTemplates.ts`). Absent
   * means `sphereface-112x96`, the template of every network built here.
   */
  readonly alignment?: AlignmentName;
  /**
   * Runs the network on a normalised NHWC float32 batch [N, H, W, 3] and returns [N, embeddingSize].
   * The caller owns the returned tensor; no intermediate tensor outlives the call.
   */
  predict(input: tf.Tensor4D): tf.Tensor2D;
  /**
   * Runs the network outside TensorFlow.js (ONNX Runtime) on `n` normalised NHWC images and
   * returns [n, embeddingSize] row-major. When present, feature extraction uses it instead of
   * `predict`.
   */
  embed?(batch: Float32Array, n: number): Promise<Float32Array>;
  /** Releases the weight tensors. The model cannot be used afterwards. */
  dispose(): void;
}

/** Network parameters by name, in TensorFlow.js layouts; each network documents its names. */
export type ParameterMap = ReadonlyMap<string, tf.Tensor>;

/**
 * Throws unless `shape` is a batch [N, height, width, 3] with N ≥ 1 that `model` accepts.
 */
export function assertInputBatch(model: Pick<EmbeddingModel, 'name' | 'inputSize'>, shape: readonly number[]): void {
  const { height, width } = model.inputSize;
  const [n = 0, h, w, c] = shape;
  if (shape.length !== 4 || n < 1 || h !== height || w !== width || c !== 3) {
    throw new Error(`${model.name}: input has shape [${shape.join(', ')}], expected [N, ${height}, ${width}, 3] with N ≥ 1`);
  }
}

/**
 * Throws unless `parameters` contains exactly the tensors that `specs` lists, with those shapes.
 * The message names the network and up to ten problems.
 */
export function assertParametersMatch(
  network: string,
  parameters: ParameterMap,
  specs: ReadonlyArray<{ readonly name: string; readonly shape: readonly number[] }>,
): void {
  const problems: string[] = [];
  for (const spec of specs) {
    const tensor = parameters.get(spec.name);
    if (tensor === undefined) problems.push(`missing "${spec.name}" [${spec.shape.join(', ')}]`);
    else if (tensor.shape.join(',') !== spec.shape.join(',')) problems.push(`"${spec.name}" has shape [${tensor.shape.join(', ')}], expected [${spec.shape.join(', ')}]`);
  }
  if (parameters.size !== specs.length) problems.push(`${parameters.size} parameters given, expected ${specs.length}`);
  if (problems.length > 0) throw new Error(`${network} parameters do not match the network: ${problems.slice(0, 10).join('; ')}`);
}
