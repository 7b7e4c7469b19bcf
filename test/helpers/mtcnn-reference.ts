/**
 * Naive P-Net, R-Net and O-Net forward passes for one image, used only to check the TensorFlow.js
 * networks.
 *
 * They share no code with `model/mtcnn.ts` and convert no layouts. Activations are NCHW
 * Float64Arrays, and weights are read in Caffe's own layouts straight from the decoded blobs:
 * convolutions [out, in, kh, kw], InnerProduct [out, in] over a C,H,W-flattened input. Max pooling
 * follows Caffe's formula directly: out = ceil((in − k) / s) + 1, and window i covers
 * [i·s, min(i·s + k, in)). The layer order is written out again here from the prototxt files.
 */
import type { CaffeBlob, CaffeNet } from '../../model/caffe.ts';

/** A C×H×W feature map in row-major order. */
export interface FeatureMap {
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly data: Float64Array;
}

function blob(net: CaffeNet, layer: string, index: number): CaffeBlob {
  const found = net.layers.find((l) => l.name === layer)?.blobs[index];
  if (found === undefined) throw new Error(`reference forward: ${net.path} has no blob ${index} in layer "${layer}"`);
  return found;
}

/** Caffe Convolution, stride 1, no padding, with bias. */
export function convolution(x: FeatureMap, net: CaffeNet, layer: string): FeatureMap {
  const weight = blob(net, layer, 0);
  const bias = blob(net, layer, 1).data;
  const [outChannels = 0, inChannels = 0, kh = 0, kw = 0] = weight.shape;
  if (inChannels !== x.channels) throw new Error(`reference forward: ${layer} expects ${inChannels} channels, got ${x.channels}`);
  const outHeight = x.height - kh + 1;
  const outWidth = x.width - kw + 1;
  const out = new Float64Array(outChannels * outHeight * outWidth);
  for (let o = 0; o < outChannels; o++) {
    for (let oy = 0; oy < outHeight; oy++) {
      for (let ox = 0; ox < outWidth; ox++) {
        let sum = bias[o] ?? 0;
        for (let i = 0; i < inChannels; i++) {
          for (let ky = 0; ky < kh; ky++) {
            for (let kx = 0; kx < kw; kx++) {
              const w = weight.data[((o * inChannels + i) * kh + ky) * kw + kx] ?? 0;
              sum += w * (x.data[(i * x.height + oy + ky) * x.width + ox + kx] ?? 0);
            }
          }
        }
        out[(o * outHeight + oy) * outWidth + ox] = sum;
      }
    }
  }
  return { channels: outChannels, height: outHeight, width: outWidth, data: out };
}

/** Caffe PReLU with one slope per channel. */
export function prelu(x: FeatureMap, net: CaffeNet, layer: string): FeatureMap {
  const slopes = blob(net, layer, 0).data;
  const plane = x.height * x.width;
  const out = new Float64Array(x.data.length);
  for (let i = 0; i < out.length; i++) {
    const v = x.data[i] ?? 0;
    out[i] = v > 0 ? v : v * (slopes[Math.floor(i / plane)] ?? 0);
  }
  return { ...x, data: out };
}

/** Caffe MAX pooling without padding, with its rounded-up output size. */
export function maxPool(x: FeatureMap, kernel: number, stride: number): FeatureMap {
  const outHeight = Math.ceil((x.height - kernel) / stride) + 1;
  const outWidth = Math.ceil((x.width - kernel) / stride) + 1;
  const out = new Float64Array(x.channels * outHeight * outWidth);
  for (let c = 0; c < x.channels; c++) {
    for (let oy = 0; oy < outHeight; oy++) {
      for (let ox = 0; ox < outWidth; ox++) {
        const yEnd = Math.min(oy * stride + kernel, x.height);
        const xEnd = Math.min(ox * stride + kernel, x.width);
        let max = -Infinity;
        for (let y = oy * stride; y < yEnd; y++) {
          for (let xx = ox * stride; xx < xEnd; xx++) max = Math.max(max, x.data[(c * x.height + y) * x.width + xx] ?? -Infinity);
        }
        out[(c * outHeight + oy) * outWidth + ox] = max;
      }
    }
  }
  return { channels: x.channels, height: outHeight, width: outWidth, data: out };
}

/** Caffe InnerProduct: the input flattened in C,H,W order times the [out, in] weight, plus bias. */
export function innerProduct(x: FeatureMap, net: CaffeNet, layer: string): FeatureMap {
  const weight = blob(net, layer, 0);
  const bias = blob(net, layer, 1).data;
  const [outFeatures = 0, inFeatures = 0] = weight.shape;
  if (inFeatures !== x.data.length) throw new Error(`reference forward: ${layer} expects ${inFeatures} inputs, got ${x.data.length}`);
  const out = new Float64Array(outFeatures);
  for (let o = 0; o < outFeatures; o++) {
    let sum = bias[o] ?? 0;
    for (let i = 0; i < inFeatures; i++) sum += (weight.data[o * inFeatures + i] ?? 0) * (x.data[i] ?? 0);
    out[o] = sum;
  }
  return { channels: outFeatures, height: 1, width: 1, data: out };
}

/** Caffe Softmax over channels at each position; returns channel 1 as an H×W map. */
function faceProbability(logits: FeatureMap): Float64Array {
  const plane = logits.height * logits.width;
  const out = new Float64Array(plane);
  for (let p = 0; p < plane; p++) {
    const background = logits.data[p] ?? 0;
    const face = logits.data[plane + p] ?? 0;
    const max = Math.max(background, face);
    out[p] = Math.exp(face - max) / (Math.exp(background - max) + Math.exp(face - max));
  }
  return out;
}

export interface ReferencePNetOutput {
  readonly height: number;
  readonly width: number;
  /** Face probability, H×W row-major. */
  readonly prob: Float64Array;
  /** conv4-2, 4×H×W (channel-major, as Caffe stores it). */
  readonly regression: Float64Array;
}

export function referencePNet(net: CaffeNet, image: FeatureMap): ReferencePNetOutput {
  let x = prelu(convolution(image, net, 'conv1'), net, 'PReLU1');
  x = maxPool(x, 2, 2);
  x = prelu(convolution(x, net, 'conv2'), net, 'PReLU2');
  x = prelu(convolution(x, net, 'conv3'), net, 'PReLU3');
  const regression = convolution(x, net, 'conv4-2');
  return { height: x.height, width: x.width, prob: faceProbability(convolution(x, net, 'conv4-1')), regression: regression.data };
}

export interface ReferenceOutput {
  readonly prob: number;
  readonly regression: Float64Array;
  /** O-Net only. */
  readonly landmarks?: Float64Array;
}

export function referenceRNet(net: CaffeNet, image: FeatureMap): ReferenceOutput {
  let x = prelu(convolution(image, net, 'conv1'), net, 'prelu1');
  x = maxPool(x, 3, 2);
  x = prelu(convolution(x, net, 'conv2'), net, 'prelu2');
  x = maxPool(x, 3, 2);
  x = prelu(convolution(x, net, 'conv3'), net, 'prelu3');
  x = prelu(innerProduct(x, net, 'conv4'), net, 'prelu4');
  return { prob: faceProbability(innerProduct(x, net, 'conv5-1'))[0] ?? NaN, regression: innerProduct(x, net, 'conv5-2').data };
}

export function referenceONet(net: CaffeNet, image: FeatureMap): ReferenceOutput {
  let x = prelu(convolution(image, net, 'conv1'), net, 'prelu1');
  x = maxPool(x, 3, 2);
  x = prelu(convolution(x, net, 'conv2'), net, 'prelu2');
  x = maxPool(x, 3, 2);
  x = prelu(convolution(x, net, 'conv3'), net, 'prelu3');
  x = maxPool(x, 2, 2);
  x = prelu(convolution(x, net, 'conv4'), net, 'prelu4');
  x = prelu(innerProduct(x, net, 'conv5'), net, 'prelu5');
  return {
    prob: faceProbability(innerProduct(x, net, 'conv6-1'))[0] ?? NaN,
    regression: innerProduct(x, net, 'conv6-2').data,
    landmarks: innerProduct(x, net, 'conv6-3').data,
  };
}
