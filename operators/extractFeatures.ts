import * as tf from '@tensorflow/tfjs-core';
import { concatAll, concatMap, type OperatorFunction } from 'rxjs';
import type { EmbeddingModel } from '../model/types.ts';
import type { Batch } from './batch.ts';
import { isRejected, reject, type AlignedFace, type Feature, type Maybe, type Rejected } from './records.ts';

/** The time spent in forward passes, summed over batches, for throughput reports. */
export interface ExtractTimings {
  seconds: number;
  images: number;
}

export interface ExtractFeaturesOptions {
  /** Concatenate the feature of the horizontal mirror after the feature of the image (default true). */
  readonly mirror?: boolean;
  /** Receives the forward-pass time of every batch. */
  readonly timings?: ExtractTimings;
}

/**
 * Turns 8-bit RGB pixels [N, H, W, 3] into the network's input: channels reordered to the
 * model's order, then (pixel − mean) × scale, as float32.
 */
export function normalizePixels(pixels: tf.Tensor4D, model: Pick<EmbeddingModel, 'channelOrder' | 'normalization'>): tf.Tensor4D {
  return tf.tidy(() => {
    const ordered = model.channelOrder === 'BGR' ? tf.reverse(pixels, 3) : pixels;
    const { mean, scale } = model.normalization;
    return tf.mul(tf.sub(tf.cast(ordered, 'float32'), mean), scale) as tf.Tensor4D;
  });
}

/** Mirrors an NHWC batch left to right. */
export function flipHorizontal<T extends tf.Tensor4D>(images: T): T {
  return tf.reverse(images, 2);
}

/**
 * Runs the model on one batch of aligned faces and returns one vector per face: the feature of
 * the face, then (with `mirror`) the feature of its horizontal mirror, as SphereFace's
 * evaluation does. The image and its mirror go through one forward pass of 2N images.
 */
export async function embedBatch(
  model: EmbeddingModel,
  faces: readonly AlignedFace[],
  mirror = true,
): Promise<Float32Array[]> {
  const { height, width } = model.inputSize;
  const n = faces.length;
  const pixels = new Uint8Array(n * height * width * 3);
  faces.forEach((face, i) => pixels.set(face.rgb, i * height * width * 3));

  if (model.embed !== undefined) return embedOutsideTfjs(model as EmbeddingModel & Required<Pick<EmbeddingModel, 'embed'>>, pixels, n, mirror);

  const output = tf.tidy(() => {
    const input = normalizePixels(tf.tensor4d(pixels, [n, height, width, 3], 'int32'), model);
    const both = mirror ? tf.concat([input, flipHorizontal(input)], 0) : input;
    const features = model.predict(both);
    if (!mirror) return features;
    const [original, mirrored] = tf.split(features, 2, 0) as [tf.Tensor2D, tf.Tensor2D];
    return tf.concat([original, mirrored], 1);
  });
  try {
    const size = output.shape[1];
    const values = (await output.data()) as Float32Array;
    return faces.map((_, i) => values.slice(i * size, (i + 1) * size));
  } finally {
    output.dispose();
  }
}

/**
 * `embedBatch` for a model that runs outside TensorFlow.js: the pixels are normalised and
 * mirrored with tfjs as for `predict`, then the 2N images go through `model.embed` in one call.
 */
async function embedOutsideTfjs(
  model: EmbeddingModel & Required<Pick<EmbeddingModel, 'embed'>>,
  pixels: Uint8Array,
  n: number,
  mirror: boolean,
): Promise<Float32Array[]> {
  const { height, width } = model.inputSize;
  const input = tf.tidy(() => {
    const normalized = normalizePixels(tf.tensor4d(pixels, [n, height, width, 3], 'int32'), model);
    return mirror ? tf.concat([normalized, flipHorizontal(normalized)], 0) : normalized;
  });
  let values: Float32Array;
  try {
    values = (await input.data()) as Float32Array;
  } finally {
    input.dispose();
  }
  const size = model.embeddingSize;
  const output = await model.embed(values, mirror ? 2 * n : n);
  return Array.from({ length: n }, (_, i) => {
    if (!mirror) return output.slice(i * size, (i + 1) * size);
    const feature = new Float32Array(2 * size);
    feature.set(output.subarray(i * size, (i + 1) * size), 0);
    feature.set(output.subarray((n + i) * size, (n + i + 1) * size), size);
    return feature;
  });
}

/**
 * Computes a feature for every aligned face in each batch, one batch at a time in order.
 * A face whose size differs from the model's input is rejected; the rest of its batch goes on.
 * Rejections from earlier stages pass through. Within a batch, output order equals item order.
 */
export function extractFeatures(
  model: EmbeddingModel,
  options: ExtractFeaturesOptions = {},
): OperatorFunction<Batch<AlignedFace> | Rejected, Maybe<Feature>> {
  const mirror = options.mirror ?? true;
  const { height, width } = model.inputSize;

  const embedOne = async (value: Batch<AlignedFace> | Rejected): Promise<Array<Maybe<Feature>>> => {
    if (isRejected(value)) return [value];

    const results: Array<Maybe<Feature> | undefined> = [];
    const accepted: AlignedFace[] = [];
    const slots: number[] = [];
    value.items.forEach((face, slot) => {
      if (face.height !== height || face.width !== width || face.rgb.length !== height * width * 3) {
        results[slot] = reject(
          face,
          'extractFeatures',
          `face is ${face.width}×${face.height}, but ${model.name} expects ${width}×${height} (width×height) RGB`,
        );
        return;
      }
      accepted.push(face);
      slots.push(slot);
    });

    if (accepted.length > 0) {
      const started = performance.now();
      const vectors = await embedBatch(model, accepted, mirror);
      if (options.timings) {
        options.timings.seconds += (performance.now() - started) / 1000;
        options.timings.images += accepted.length;
      }
      accepted.forEach((face, i) => {
        results[slots[i] as number] = { id: face.id, path: face.path, vector: vectors[i] as Float32Array };
      });
    }
    return results as Array<Maybe<Feature>>;
  };

  return (source) => source.pipe(concatMap(embedOne), concatAll());
}
