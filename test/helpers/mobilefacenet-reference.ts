/**
 * A naive MobileFaceNet forward pass for one image, used only to check the TensorFlow.js model.
 *
 * It shares no code with `model/mobilefacenet.ts` and converts no layouts. Activations are NCHW
 * Float64Arrays, and weights are read in PyTorch's own OIHW layout straight from the state dict.
 * Padding is PyTorch's symmetric zero padding, and BatchNorm is applied unfolded with running
 * statistics. The layer table is written out again here from the model's description.
 */
import type { TorchTensor } from '../../model/pytorch.ts';

/** A C×H×W feature map in row-major order. */
export interface FeatureMap {
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly data: Float64Array;
}

type StateDict = ReadonlyMap<string, TorchTensor>;

function tensor(state: StateDict, name: string): TorchTensor {
  const t = state.get(name);
  if (t === undefined) throw new Error(`reference forward: state dict has no "${name}"`);
  return t;
}

function value(t: TorchTensor, index: number): number {
  return Number(t.data[index]);
}

/**
 * Computes PyTorch `Conv2d(bias=False, groups)` with weight [O, I/groups, kh, kw], stride and symmetric
 * zero padding on each side.
 */
export function conv2d(x: FeatureMap, weight: TorchTensor, stride: number, padding: number, groups: number): FeatureMap {
  const [outChannels = 0, groupIn = 0, kh = 0, kw = 0] = weight.shape;
  const outHeight = Math.floor((x.height + 2 * padding - kh) / stride) + 1;
  const outWidth = Math.floor((x.width + 2 * padding - kw) / stride) + 1;
  const out = new Float64Array(outChannels * outHeight * outWidth);
  const groupOut = outChannels / groups;
  const w = Float64Array.from(weight.data as Float32Array);

  for (let o = 0; o < outChannels; o++) {
    const group = Math.floor(o / groupOut);
    const outPlane = o * outHeight * outWidth;
    for (let gi = 0; gi < groupIn; gi++) {
      const inChannel = group * groupIn + gi;
      const inPlane = inChannel * x.height * x.width;
      for (let ky = 0; ky < kh; ky++) {
        for (let kx = 0; kx < kw; kx++) {
          const k = w[((o * groupIn + gi) * kh + ky) * kw + kx] ?? 0;
          if (k === 0) continue;
          for (let oy = 0; oy < outHeight; oy++) {
            const iy = oy * stride - padding + ky;
            if (iy < 0 || iy >= x.height) continue;
            const inRow = inPlane + iy * x.width;
            const outRow = outPlane + oy * outWidth;
            for (let ox = 0; ox < outWidth; ox++) {
              const ix = ox * stride - padding + kx;
              if (ix < 0 || ix >= x.width) continue;
              out[outRow + ox] = (out[outRow + ox] ?? 0) + k * (x.data[inRow + ix] ?? 0);
            }
          }
        }
      }
    }
  }
  return { channels: outChannels, height: outHeight, width: outWidth, data: out };
}

/** Inference-mode BatchNorm2d: (x − running_mean) / √(running_var + 1e-5) · weight + bias. */
function batchNorm(x: FeatureMap, state: StateDict, prefix: string): FeatureMap {
  const gamma = tensor(state, `${prefix}.weight`);
  const beta = tensor(state, `${prefix}.bias`);
  const mean = tensor(state, `${prefix}.running_mean`);
  const variance = tensor(state, `${prefix}.running_var`);
  const plane = x.height * x.width;
  const out = new Float64Array(x.data.length);
  for (let c = 0; c < x.channels; c++) {
    const inv = 1 / Math.sqrt(value(variance, c) + 1e-5);
    for (let i = c * plane; i < (c + 1) * plane; i++) {
      out[i] = ((x.data[i] ?? 0) - value(mean, c)) * inv * value(gamma, c) + value(beta, c);
    }
  }
  return { ...x, data: out };
}

function prelu(x: FeatureMap, slopes: TorchTensor): FeatureMap {
  const plane = x.height * x.width;
  const out = new Float64Array(x.data.length);
  for (let i = 0; i < out.length; i++) {
    const v = x.data[i] ?? 0;
    out[i] = v > 0 ? v : v * value(slopes, Math.floor(i / plane));
  }
  return { ...x, data: out };
}

function add(a: FeatureMap, b: FeatureMap): FeatureMap {
  return { ...a, data: a.data.map((v, i) => v + (b.data[i] ?? 0)) };
}

/** conv → BN → optional PReLU, with the conv's groups taken from the weight shape. */
function convBnPrelu(x: FeatureMap, state: StateDict, conv: string, bn: string, act: string | undefined, stride: number, padding: number): FeatureMap {
  const weight = tensor(state, `${conv}.weight`);
  const groups = x.channels / (weight.shape[1] ?? 1);
  let y = batchNorm(conv2d(x, weight, stride, padding, groups), state, bn);
  if (act !== undefined) y = prelu(y, tensor(state, `${act}.weight`));
  return y;
}

/** [t, c, n, s] rows of the bottleneck stages. */
const STAGES: ReadonlyArray<readonly [number, number, number, number]> = [
  [2, 64, 5, 2],
  [4, 128, 1, 2],
  [2, 128, 6, 1],
  [4, 128, 1, 2],
  [2, 128, 2, 1],
];

/** Runs the whole network on one normalised RGB image (NCHW, 3×112×96) and returns the 128-d embedding. */
export function referenceForward(state: StateDict, image: FeatureMap): Float64Array {
  let x = convBnPrelu(image, state, 'conv1.conv', 'conv1.bn', 'conv1.prelu', 2, 1);
  x = convBnPrelu(x, state, 'dw_conv1.conv', 'dw_conv1.bn', 'dw_conv1.prelu', 1, 1);

  let block = 0;
  for (const [, outChannels, repeats, firstStride] of STAGES) {
    for (let r = 0; r < repeats; r++, block++) {
      const p = `blocks.${block}.conv`;
      const stride = r === 0 ? firstStride : 1;
      let y = convBnPrelu(x, state, `${p}.0`, `${p}.1`, `${p}.2`, 1, 0);
      y = convBnPrelu(y, state, `${p}.3`, `${p}.4`, `${p}.5`, stride, 1);
      y = convBnPrelu(y, state, `${p}.6`, `${p}.7`, undefined, 1, 0);
      x = stride === 1 && x.channels === outChannels ? add(x, y) : y;
    }
  }

  x = convBnPrelu(x, state, 'conv2.conv', 'conv2.bn', 'conv2.prelu', 1, 0);
  x = convBnPrelu(x, state, 'linear7.conv', 'linear7.bn', undefined, 1, 0);
  x = convBnPrelu(x, state, 'linear1.conv', 'linear1.bn', undefined, 1, 0);
  if (x.height !== 1 || x.width !== 1) throw new Error(`reference forward: head output is ${x.height}×${x.width}, expected 1×1`);
  return x.data;
}
