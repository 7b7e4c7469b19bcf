/**
 * A naive L-Net (MTCNNv2 `det4`) forward pass for one face, used only to check the TensorFlow.js
 * network. It reuses the Caffe layer functions of `mtcnn-reference.ts`, which share no code with
 * `model/mtcnn.ts`. The layers of det4.prototxt are written out again: a Slice of the 15 input
 * channels at 3, 6, 9 and 12, and one trunk per patch. A Concat on the channel axis follows, then
 * fc4 on the concatenation (flattened C,H,W as Caffe does) and one head per patch.
 */
import type { CaffeNet } from '../../model/caffe.ts';
import { convolution, innerProduct, maxPool, prelu, type FeatureMap } from './mtcnn-reference.ts';

/** Channels first..first + count − 1 of a map, as Caffe's Slice on axis 1 cuts them. */
function sliceChannels(x: FeatureMap, first: number, count: number): FeatureMap {
  const plane = x.height * x.width;
  return { channels: count, height: x.height, width: x.width, data: x.data.slice(first * plane, (first + count) * plane) };
}

/** Caffe's Concat on axis 1: the channels of each map in turn. */
function concatChannels(maps: readonly FeatureMap[]): FeatureMap {
  const first = maps[0];
  if (first === undefined) throw new Error('reference forward: nothing to concatenate');
  const data = new Float64Array(maps.reduce((sum, m) => sum + m.data.length, 0));
  let offset = 0;
  for (const m of maps) {
    data.set(m.data, offset);
    offset += m.data.length;
  }
  return { channels: maps.reduce((sum, m) => sum + m.channels, 0), height: first.height, width: first.width, data };
}

/**
 * Runs L-Net on a 15×24×24 input (five 3-channel patches, already transposed and normalised).
 * Returns the five heads fc5_1 … fc5_5, two values each, in that order.
 */
export function referenceLNet(net: CaffeNet, input: FeatureMap): Float64Array[] {
  if (input.channels !== 15) throw new Error(`reference forward: L-Net expects 15 channels, got ${input.channels}`);
  const trunks: FeatureMap[] = [];
  for (let k = 1; k <= 5; k++) {
    let x = sliceChannels(input, 3 * (k - 1), 3);
    x = prelu(convolution(x, net, `conv1_${k}`), net, `prelu1_${k}`);
    x = maxPool(x, 3, 2);
    x = prelu(convolution(x, net, `conv2_${k}`), net, `prelu2_${k}`);
    x = maxPool(x, 3, 2);
    trunks.push(prelu(convolution(x, net, `conv3_${k}`), net, `prelu3_${k}`));
  }
  const features = prelu(innerProduct(concatChannels(trunks), net, 'fc4'), net, 'prelu4');

  const heads: Float64Array[] = [];
  for (let k = 1; k <= 5; k++) {
    const hidden = prelu(innerProduct(features, net, `fc4_${k}`), net, `prelu4_${k}`);
    heads.push(innerProduct(hidden, net, `fc5_${k}`).data);
  }
  return heads;
}
