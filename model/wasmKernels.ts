/**
 * Training kernels that the wasm backend of TensorFlow.js 4.22 does not implement, built from
 * wasm kernels it does implement, so that `tf.grad` and `tf.variableGrads` run on wasm.
 *
 * The gradients of SphereFace-20 and of MobileFaceNet with batch-statistics BatchNorm need
 * exactly three kernels that `@tensorflow/tfjs-backend-wasm` 4.22.0 lacks:
 * - `Conv2DBackpropFilter`, computed as one wasm `Conv2D` over transposed tensors, with `dy` as
 *   the filter and a dilation equal to the forward stride;
 * - `DepthwiseConv2dNativeBackpropInput`, computed as one wasm `DepthwiseConv2dNative` of the
 *   zero-upsampled `dy` with the filter rotated by 180°;
 * - `DepthwiseConv2dNativeBackpropFilter`, computed per filter tap as a strided slice of the
 *   padded input times `dy`, summed over batch and space.
 *
 * It also replaces two wasm kernels that are slow in the way gradients call them:
 * - `Conv2DBackpropInput`, which dominated the gradient time, with one wasm `Conv2D` of the
 *   zero-upsampled `dy` with the rotated filter;
 * - `BatchMatMul` with a transposed operand, which the gradients of every dense layer ask for,
 *   with explicit transposes around the package's untransposed `BatchMatMul` (see `batchMatMul`).
 *
 * Intermediate results live only inside a kernel call. Each kernel calls the wasm kernel
 * functions directly, as the backends' own kernels do, and frees its intermediates with
 * `backend.disposeData`, so the engine tracks one output per call and counts no extra tensors.
 */
// The tfjs-core bundle for Node registers no gradient functions, and `@tensorflow/tfjs` 4.22.0
// registers them all on the same tfjs-core instance when it loads.
import '@tensorflow/tfjs';
import * as tf from '@tensorflow/tfjs-core';
import { backend_util } from '@tensorflow/tfjs-core';
import type { KernelBackend, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';

const BACKEND = 'wasm';

/** The kernels `registerWasmTrainingKernels` adds when the wasm backend lacks them. */
export const WASM_TRAINING_KERNELS = [
  'Conv2DBackpropFilter',
  'DepthwiseConv2dNativeBackpropInput',
  'DepthwiseConv2dNativeBackpropFilter',
] as const;

/**
 * Kernels that tfjs-backend-wasm 4.22.0 has but that `registerWasmTrainingKernels` replaces,
 * because the replacement is much faster.
 */
export const WASM_REPLACED_KERNELS = ['Conv2DBackpropInput', 'BatchMatMul'] as const;

type Pair = [number, number];

/**
 * Runs existing wasm kernels and records their outputs, so that `finish` frees every
 * intermediate except the result.
 */
class KernelScope {
  private readonly outputs: TensorInfo[] = [];

  constructor(private readonly backend: KernelBackend) {}

  run(kernelName: string, inputs: NamedTensorInfoMap | TensorInfo[], attrs: NamedAttrMap = {}): TensorInfo {
    // The kernels run on the active backend: wasm, or cpu for the filter gradient.
    const backendName = tf.getBackend();
    const kernel = tf.getKernel(kernelName, backendName);
    if (kernel === undefined) throw new Error(`training kernels: kernel '${kernelName}' is not registered for backend '${backendName}'`);
    return this.call(kernelName, kernel.kernelFunc, inputs, attrs);
  }

  /** Runs `kernelFunc` itself, for a kernel whose registered function is a replacement. */
  call(kernelName: string, kernelFunc: tf.KernelFunc, inputs: NamedTensorInfoMap | TensorInfo[], attrs: NamedAttrMap = {}): TensorInfo {
    const output = kernelFunc({ inputs: inputs as NamedTensorInfoMap, backend: this.backend, attrs });
    if (Array.isArray(output)) throw new Error(`wasm training kernels: kernel '${kernelName}' returned several outputs, expected one`);
    this.outputs.push(output);
    return output;
  }

  /** Frees every output of `run` except `keep`, and returns `keep`. */
  finish(keep: TensorInfo): TensorInfo {
    for (const output of this.outputs) {
      if (output !== keep) this.backend.disposeData(output.dataId);
    }
    return keep;
  }

  /** Frees every output of `run`, when the kernel fails. */
  disposeAll(): void {
    for (const output of this.outputs) this.backend.disposeData(output.dataId);
  }
}

function withScope(backend: unknown, body: (scope: KernelScope) => TensorInfo): TensorInfo {
  const scope = new KernelScope(backend as KernelBackend);
  let result: TensorInfo;
  try {
    result = body(scope);
  } catch (error) {
    scope.disposeAll();
    throw error;
  }
  return scope.finish(result);
}

function assertNhwc(kernelName: string, dataFormat: unknown): void {
  if (dataFormat !== undefined && dataFormat !== 'NHWC') {
    throw new Error(`${kernelName} on wasm: dataFormat '${String(dataFormat)}' is not supported, expected 'NHWC'`);
  }
}

function pairOf(value: unknown, name: string): Pair {
  if (typeof value === 'number') return [value, value];
  if (Array.isArray(value) && value.length === 2) return [Number(value[0]), Number(value[1])];
  if (value === undefined || value === null) return [1, 1];
  throw new Error(`wasm training kernels: ${name} ${JSON.stringify(value)} is invalid, expected a number or [height, width]`);
}

/**
 * Throws for dilations other than 1. tfjs-core 4.22.0 rejects them in the depthwise gradient,
 * and the cpu kernels these are checked against ignore them in their loops, so a dilated
 * version could not be verified.
 */
function assertNoDilation(kernelName: string, dilations: Pair): void {
  if (dilations[0] !== 1 || dilations[1] !== 1) {
    throw new Error(`${kernelName} on wasm: dilations [${dilations.join(', ')}] are not supported, expected [1, 1]`);
  }
}

/**
 * Conv2DBackpropFilter: dW[i, j, ci, co] = Σ over n, y, x of xPadded[n, y·s + i, x·s + j, ci] · dy[n, y, x, co].
 *
 * The same sum is a stride-1 convolution of x transposed to [Ci, H, W, N] (batch Ci, channels
 * N) with dy transposed to [Ho, Wo, N, Co] as the filter, dilated by the forward stride. Its
 * output [Ci, kh', kw', Co] is at least the filter size and is cut to [Ci, kh, kw, Co].
 */
function conv2DBackpropFilter(args: { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap }): TensorInfo {
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const attrs = args.attrs ?? {};
  assertNhwc('Conv2DBackpropFilter', attrs['dataFormat']);
  const filterShape = attrs['filterShape'] as [number, number, number, number];
  const info = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filterShape,
    attrs['strides'] as number | Pair,
    1,
    attrs['pad'] as 'same' | 'valid' | number | backend_util.ExplicitPadding,
    attrs['dimRoundingMode'] as 'floor' | 'round' | 'ceil' | undefined,
  );
  const [, height, width] = x.shape as [number, number, number, number];
  const [outHeight, outWidth] = [dy.shape[1] as number, dy.shape[2] as number];
  const { top, left } = info.padInfo;
  const { strideHeight, strideWidth, filterHeight, filterWidth } = info;

  // Pad the bottom and right only as far as the last filter tap reaches, so the output covers
  // every tap. Rows and columns beyond the filter size are cut off afterwards.
  const bottom = Math.max(0, filterHeight + (outHeight - 1) * strideHeight - height - top);
  const right = Math.max(0, filterWidth + (outWidth - 1) * strideWidth - width - left);

  return withScope(args.backend, (scope) => {
    const xT = scope.run('Transpose', { x }, { perm: [3, 1, 2, 0] });
    const dyT = scope.run('Transpose', { x: dy }, { perm: [1, 2, 0, 3] });
    let grad = scope.run('Conv2D', { x: xT, filter: dyT }, {
      strides: [1, 1],
      pad: [[0, 0], [top, bottom], [left, right], [0, 0]],
      dilations: [strideHeight, strideWidth],
      dataFormat: 'NHWC',
    });
    if (grad.shape[1] !== filterHeight || grad.shape[2] !== filterWidth) {
      grad = scope.run('Slice', { x: grad }, { begin: [0, 0, 0, 0], size: [filterShape[2], filterHeight, filterWidth, filterShape[3]] });
    }
    return scope.run('Transpose', { x: grad }, { perm: [1, 2, 0, 3] });
  });
}

/** dy prepared for a stride-1 correlation whose output is the input gradient. */
interface TransposedInput {
  readonly x: TensorInfo;
  readonly pad: backend_util.ExplicitPadding;
}

/**
 * Prepares dy for a transposed convolution. dy is upsampled by the stride with zeros between
 * its rows and columns, and the explicit padding makes a stride-1 correlation with the filter
 * rotated by 180° produce exactly the forward input's height and width.
 */
function transposedConvolutionInput(scope: KernelScope, dy: TensorInfo, info: backend_util.Conv2DInfo): TransposedInput {
  const [batch, outHeight, outWidth, outChannels] = dy.shape as [number, number, number, number];
  const { inHeight, inWidth, strideHeight, strideWidth, effectiveFilterHeight, effectiveFilterWidth } = info;

  // Zero-upsample dy to [N, Ho·sh, Wo·sw, K]. The bottom and right padding below accounts
  // for the zeros after the last row and column.
  let upsampled = dy;
  if (strideHeight > 1 || strideWidth > 1) {
    const spread = scope.run('Reshape', { x: dy }, { shape: [batch, outHeight, 1, outWidth, 1, outChannels] });
    const padded = scope.run('PadV2', { x: spread }, {
      paddings: [[0, 0], [0, 0], [0, strideHeight - 1], [0, 0], [0, strideWidth - 1], [0, 0]],
      constantValue: 0,
    });
    upsampled = scope.run('Reshape', { x: padded }, { shape: [batch, outHeight * strideHeight, outWidth * strideWidth, outChannels] });
  }
  const upHeight = outHeight * strideHeight;
  const upWidth = outWidth * strideWidth;

  // Output row y reads upsampled rows y − padTop + k·dilation, so padTop = reach − 1 − top,
  // and padBottom makes the output H rows long. A negative pad cuts rows instead.
  const padTop = effectiveFilterHeight - 1 - info.padInfo.top;
  const padLeft = effectiveFilterWidth - 1 - info.padInfo.left;
  const padBottom = inHeight + info.padInfo.top - upHeight;
  const padRight = inWidth + info.padInfo.left - upWidth;
  if (padTop < 0 || padLeft < 0 || padBottom < 0 || padRight < 0) {
    const cutTop = Math.max(0, -padTop);
    const cutLeft = Math.max(0, -padLeft);
    const keepHeight = upHeight - cutTop - Math.max(0, -padBottom);
    const keepWidth = upWidth - cutLeft - Math.max(0, -padRight);
    upsampled = scope.run('Slice', { x: upsampled }, { begin: [0, cutTop, cutLeft, 0], size: [batch, keepHeight, keepWidth, outChannels] });
  }
  const pad: backend_util.ExplicitPadding = [
    [0, 0],
    [Math.max(0, padTop), Math.max(0, padBottom)],
    [Math.max(0, padLeft), Math.max(0, padRight)],
    [0, 0],
  ];
  return { x: upsampled, pad };
}

/**
 * Conv2DBackpropInput, replacing the kernel of tfjs-backend-wasm 4.22.0, which took 11.4 of the
 * 15.6 seconds of a SphereFace-20 gradient at batch 8 on one wasm thread (measured 2026-12-05).
 * This version is one wasm `Conv2D` of the upsampled dy with the filter rotated by 180° and its
 * channel axes swapped to [kh, kw, Co, Ci]. NOTE: at stride 2, three quarters of the upsampled
 * dy are zeros that the convolution still multiplies.
 */
function conv2DBackpropInput(args: { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap }): TensorInfo {
  const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
  const attrs = args.attrs ?? {};
  assertNhwc('Conv2DBackpropInput', attrs['dataFormat']);
  const info = backend_util.computeConv2DInfo(
    attrs['inputShape'] as [number, number, number, number],
    filter.shape as [number, number, number, number],
    attrs['strides'] as number | Pair,
    1,
    attrs['pad'] as 'same' | 'valid' | number | backend_util.ExplicitPadding,
    attrs['dimRoundingMode'] as 'floor' | 'round' | 'ceil' | undefined,
  );

  return withScope(args.backend, (scope) => {
    const prepared = transposedConvolutionInput(scope, dy, info);
    const rotated = scope.run('Reverse', { x: filter }, { dims: [0, 1] });
    const swapped = scope.run('Transpose', { x: rotated }, { perm: [0, 1, 3, 2] });
    return scope.run('Conv2D', { x: prepared.x, filter: swapped }, {
      strides: [1, 1],
      pad: prepared.pad,
      dilations: [1, 1],
      dataFormat: 'NHWC',
    });
  });
}

/**
 * DepthwiseConv2dNativeBackpropInput: the transposed depthwise convolution, as one
 * `DepthwiseConv2dNative` of the upsampled dy over C·multiplier channels with the filter
 * rotated by 180°, whose multiplier groups are then summed.
 */
function depthwiseBackpropInput(args: { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap }): TensorInfo {
  const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
  const attrs = args.attrs ?? {};
  const inputShape = attrs['inputShape'] as [number, number, number, number];
  const [batch, height, width, channels] = inputShape;
  const [kh, kw, , multiplier] = filter.shape as [number, number, number, number];
  const [dilationHeight, dilationWidth] = pairOf(attrs['dilations'], 'dilations');
  assertNoDilation('DepthwiseConv2dNativeBackpropInput', [dilationHeight, dilationWidth]);
  const info = backend_util.computeConv2DInfo(
    inputShape,
    filter.shape as [number, number, number, number],
    pairOf(attrs['strides'], 'strides'),
    [dilationHeight, dilationWidth],
    attrs['pad'] as 'same' | 'valid' | number | backend_util.ExplicitPadding,
    attrs['dimRoundingMode'] as 'floor' | 'round' | 'ceil' | undefined,
    true,
  );

  return withScope(args.backend, (scope) => {
    const prepared = transposedConvolutionInput(scope, dy, info);
    const rotated = scope.run('Reverse', { x: filter }, { dims: [0, 1] });
    const flatFilter = scope.run('Reshape', { x: rotated }, { shape: [kh, kw, channels * multiplier, 1] });
    const spread = scope.run('DepthwiseConv2dNative', { x: prepared.x, filter: flatFilter }, {
      strides: [1, 1],
      pad: prepared.pad,
      dilations: [dilationHeight, dilationWidth],
      dataFormat: 'NHWC',
    });
    if (multiplier === 1) return spread;
    const grouped = scope.run('Reshape', { x: spread }, { shape: [batch, height, width, channels, multiplier] });
    return scope.run('Sum', { x: grouped }, { axis: [4], keepDims: false });
  });
}

/**
 * DepthwiseConv2dNativeBackpropFilter: for each filter tap (i, j), the input rows and columns
 * that tap reads form a strided slice of the padded input, [N, Ho, Wo, C]. Its product with
 * dy, summed over batch and space, is that tap's gradient for every channel.
 */
function depthwiseBackpropFilter(args: { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap }): TensorInfo {
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const attrs = args.attrs ?? {};
  const filterShape = attrs['filterShape'] as [number, number, number, number];
  const [kh, kw, channels, multiplier] = filterShape;
  const [strideHeight, strideWidth] = pairOf(attrs['strides'], 'strides');
  const [dilationHeight, dilationWidth] = pairOf(attrs['dilations'], 'dilations');
  assertNoDilation('DepthwiseConv2dNativeBackpropFilter', [dilationHeight, dilationWidth]);
  const info = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filterShape,
    [strideHeight, strideWidth],
    [dilationHeight, dilationWidth],
    attrs['pad'] as 'same' | 'valid' | number | backend_util.ExplicitPadding,
    attrs['dimRoundingMode'] as 'floor' | 'round' | 'ceil' | undefined,
    true,
  );
  const [batch, height, width] = x.shape as [number, number, number, number];
  const [, outHeight, outWidth] = dy.shape as [number, number, number, number];
  const { top, left } = info.padInfo;
  const spanHeight = (outHeight - 1) * strideHeight + 1;
  const spanWidth = (outWidth - 1) * strideWidth + 1;
  const bottom = Math.max(0, (kh - 1) * dilationHeight + spanHeight - height - top);
  const right = Math.max(0, (kw - 1) * dilationWidth + spanWidth - width - left);

  return withScope(args.backend, (scope) => {
    const padded = top > 0 || left > 0 || bottom > 0 || right > 0
      ? scope.run('PadV2', { x }, { paddings: [[0, 0], [top, bottom], [left, right], [0, 0]], constantValue: 0 })
      : x;
    // With a channel multiplier m, dy's channel c·m + q pairs with input channel c.
    const dyGrouped = multiplier === 1 ? dy : scope.run('Reshape', { x: dy }, { shape: [batch, outHeight, outWidth, channels, multiplier] });

    const taps: TensorInfo[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const row = i * dilationHeight;
        const column = j * dilationWidth;
        let patch = scope.run('StridedSlice', { x: padded }, {
          begin: [0, row, column, 0],
          end: [batch, row + spanHeight, column + spanWidth, channels],
          strides: [1, strideHeight, strideWidth, 1],
          beginMask: 0,
          endMask: 0,
          ellipsisMask: 0,
          newAxisMask: 0,
          shrinkAxisMask: 0,
        });
        if (multiplier !== 1) patch = scope.run('Reshape', { x: patch }, { shape: [batch, outHeight, outWidth, channels, 1] });
        const product = scope.run('Multiply', { a: patch, b: dyGrouped });
        const tap = scope.run('Sum', { x: product }, { axis: [0, 1, 2], keepDims: false });
        taps.push(scope.run('Reshape', { x: tap }, { shape: [1, channels * multiplier] }));
      }
    }
    const stacked = taps.length === 1 ? (taps[0] as TensorInfo) : scope.run('Concat', taps, { axis: 0 });
    return scope.run('Reshape', { x: stacked }, { shape: filterShape });
  });
}

/** The package's own wasm `BatchMatMul`, kept when `registerWasmTrainingKernels` replaces it. */
let packageBatchMatMul: tf.KernelFunc | undefined;

function elementCount(tensor: TensorInfo): number {
  return tensor.shape.reduce((a, b) => a * b, 1);
}

/**
 * `BatchMatMul` for wasm, for the products with a transposed operand that the gradients of a
 * dense layer compute. The package's kernel reads a transposed operand with a stride, far off
 * its fast path. On 2 threads, the weight gradient of SphereFace-20's `fc5`
 * (32×21504 transposed, times 32×512) took 1.2 s, against 38 ms for an explicit transpose and an
 * untransposed product. Untransposed products go to the package's kernel unchanged.
 *
 * With `op(X)` the operand as the product uses it, the result `C = op(A)·op(B)` is computed one
 * of two ways, whichever transposes fewer elements:
 * - transpose each transposed operand, then multiply;
 * - multiply `op(B)ᵀ·op(A)ᵀ`, whose factors are the untransposed operands wherever `op` was a
 *   transpose, and transpose the product.
 * Both give the same sums in the same order per element, up to float rounding of the products'
 * inner loop.
 */
function batchMatMul(args: { inputs: { a: TensorInfo; b: TensorInfo }; backend: unknown; attrs: NamedAttrMap }): TensorInfo {
  const original = packageBatchMatMul;
  if (original === undefined) throw new Error('BatchMatMul on wasm: the package kernel was not kept; call registerWasmTrainingKernels');
  const { a, b } = args.inputs;
  const transposeA = args.attrs['transposeA'] === true;
  const transposeB = args.attrs['transposeB'] === true;
  // wasm's Transpose fails on an empty tensor; the package kernel handles empty products itself.
  if ((!transposeA && !transposeB) || elementCount(args.inputs.a) === 0 || elementCount(args.inputs.b) === 0) {
    return original(args as never) as TensorInfo;
  }

  const rankA = a.shape.length;
  const rankB = b.shape.length;
  const rows = transposeA ? (a.shape[rankA - 1] ?? 0) : (a.shape[rankA - 2] ?? 0);
  const columns = transposeB ? (b.shape[rankB - 2] ?? 0) : (b.shape[rankB - 1] ?? 0);
  const batch = Math.max(
    a.shape.slice(0, -2).reduce((x, y) => x * y, 1),
    b.shape.slice(0, -2).reduce((x, y) => x * y, 1),
  );
  const direct = (transposeA ? elementCount(a) : 0) + (transposeB ? elementCount(b) : 0);
  const swapped = (transposeA ? 0 : elementCount(a)) + (transposeB ? 0 : elementCount(b)) + batch * rows * columns;
  const untransposed = { transposeA: false, transposeB: false };

  return withScope(args.backend, (scope) => {
    const transpose = (x: TensorInfo): TensorInfo => {
      const rank = x.shape.length;
      const perm = [...Array.from({ length: rank - 2 }, (_, i) => i), rank - 1, rank - 2];
      return scope.run('Transpose', { x }, { perm });
    };
    if (direct <= swapped) {
      const left = transposeA ? transpose(a) : a;
      const right = transposeB ? transpose(b) : b;
      return scope.call('BatchMatMul', original, { a: left, b: right }, untransposed);
    }
    const left = transposeB ? b : transpose(b);
    const right = transposeA ? a : transpose(a);
    return transpose(scope.call('BatchMatMul', original, { a: left, b: right }, untransposed));
  });
}

const KERNEL_FUNCTIONS: Record<(typeof WASM_TRAINING_KERNELS)[number] | (typeof WASM_REPLACED_KERNELS)[number], tf.KernelFunc> = {
  Conv2DBackpropFilter: conv2DBackpropFilter as tf.KernelFunc,
  DepthwiseConv2dNativeBackpropInput: depthwiseBackpropInput as tf.KernelFunc,
  DepthwiseConv2dNativeBackpropFilter: depthwiseBackpropFilter as tf.KernelFunc,
  Conv2DBackpropInput: conv2DBackpropInput as tf.KernelFunc,
  BatchMatMul: batchMatMul as tf.KernelFunc,
};

/**
 * Registers each kernel of `WASM_TRAINING_KERNELS` for the wasm backend, unless a kernel of that
 * name is already registered there (by a later tfjs release or an earlier call), and replaces
 * each kernel of `WASM_REPLACED_KERNELS`. Returns the names it registered or replaced; a second
 * call returns an empty list.
 */
export function registerWasmTrainingKernels(): string[] {
  const registered: string[] = [];
  for (const kernelName of WASM_TRAINING_KERNELS) {
    if (tf.getKernel(kernelName, BACKEND) !== undefined) continue;
    tf.registerKernel({ kernelName, backendName: BACKEND, kernelFunc: KERNEL_FUNCTIONS[kernelName] });
    registered.push(kernelName);
  }
  for (const kernelName of WASM_REPLACED_KERNELS) {
    const kernelFunc = KERNEL_FUNCTIONS[kernelName];
    const existing = tf.getKernel(kernelName, BACKEND);
    if (existing?.kernelFunc === kernelFunc) continue;
    if (kernelName === 'BatchMatMul') {
      if (existing === undefined) throw new Error('the wasm backend has no BatchMatMul kernel to build on');
      packageBatchMatMul = existing.kernelFunc;
    }
    // registerKernel logs a warning when it overwrites a kernel, so unregister first.
    if (existing !== undefined) tf.unregisterKernel(kernelName, BACKEND);
    // The package kernel's setup binds its wasm function when the backend starts. It stays with
    // the replacement, which calls the package kernel.
    const setupFunc = existing?.setupFunc;
    tf.registerKernel({ kernelName, backendName: BACKEND, kernelFunc, ...(setupFunc === undefined ? {} : { setupFunc }) });
    registered.push(kernelName);
  }
  return registered;
}

/**
 * Replaces the cpu backend's `Conv2DBackpropFilter` with the one above, built from the cpu
 * `Conv2D`. The cpu backend's own kernel indexes a tensor buffer per multiply-add. In one
 * SphereFace-4 step (28×24, batch 4, tf.profile) it took 10.7 s of kernel time, and this one
 * 0.27 s. The cpu backend serves tests and exact reproduction, where a step must not take
 * minutes. Returns the names it replaced, and an empty list on a second call.
 */
export function registerCpuTrainingKernels(): string[] {
  const kernelName = 'Conv2DBackpropFilter';
  const kernelFunc = KERNEL_FUNCTIONS[kernelName];
  const existing = tf.getKernel(kernelName, 'cpu');
  if (existing?.kernelFunc === kernelFunc) return [];
  if (existing !== undefined) tf.unregisterKernel(kernelName, 'cpu');
  tf.registerKernel({ kernelName, backendName: 'cpu', kernelFunc });
  return [kernelName];
}
