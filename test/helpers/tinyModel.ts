import * as tf from '@tensorflow/tfjs-core';
import type { EmbeddingModel } from '../../model/types.ts';

/**
 * Builds a model with known weights for operator tests: its "feature" is the first input channel of
 * the top image row, so every output value can be worked out by hand from the pixels.
 */
export function topRowModel(height: number, width: number, channelOrder: 'RGB' | 'BGR' = 'RGB'): EmbeddingModel {
  return {
    name: 'top-row',
    inputSize: { height, width },
    channelOrder,
    normalization: { mean: 127.5, scale: 1 / 128 },
    embeddingSize: width,
    predict(input: tf.Tensor4D): tf.Tensor2D {
      return tf.tidy(() => {
        const n = input.shape[0];
        return tf.reshape(tf.slice(input, [0, 0, 0, 0], [n, 1, width, 1]), [n, width]) as tf.Tensor2D;
      });
    },
    dispose() {},
  };
}
