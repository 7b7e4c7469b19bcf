/**
 * SphereFace-20 (Liu et al., CVPR 2017), the network of the released SphereFace model, at its
 * 112×96 input: the depth-20 member of the family in `sphereface.ts`, under the names that
 * callers, the ONNX export and the inference engine use.
 *
 * | stage | first conv | units | channels | output H×W |
 * |---|---|---|---|---|
 * | 1 | conv1_1 | conv1_2/1_3 | 64 | 56×48 |
 * | 2 | conv2_1 | conv2_2/2_3, conv2_4/2_5 | 128 | 28×24 |
 * | 3 | conv3_1 | conv3_2/3_3 … conv3_8/3_9 | 256 | 14×12 |
 * | 4 | conv4_1 | conv4_2/4_3 | 512 | 7×6 |
 *
 * then `fc5`, a fully connected layer 7·6·512 = 21504 → 512 with no activation.
 */
import { linearChwToHwc, readTorchCheckpoint, stateDict, type ParameterSpec, type TorchTensor } from './pytorch.ts';
import {
  SPHEREFACE_TRAINING_ONLY_KEYS,
  SphereFace,
  initialSphereFaceParameters,
  parameterTensors,
  sphereFaceParameterSpecs,
  sphereFaceParametersFromState,
  sphereFaceStages,
  type ParameterValues,
  type SphereFaceOptions,
  type SphereFaceStage,
} from './sphereface.ts';
import type { ParameterMap } from './types.ts';

export { convPrelu, type SphereFaceStage } from './sphereface.ts';

const OPTIONS: SphereFaceOptions = { depth: 20 };
const EMBEDDING_SIZE = 512;

/** Spatial size of the last stage's output, which `fc5` flattens. */
export const FC5_INPUT = { channels: 512, height: 7, width: 6 } as const;

/** The four stages of SphereFace-20. */
export const SPHEREFACE20_STAGES: readonly SphereFaceStage[] = sphereFaceStages(20);

/**
 * Lists every parameter with its TensorFlow.js shape and PyTorch layout, layer by layer in
 * network order: conv weight, conv bias, PReLU slopes, then `fc5.weight` and `fc5.bias`.
 */
export function sphereFace20ParameterSpecs(): ParameterSpec[] {
  return sphereFaceParameterSpecs(OPTIONS);
}

/**
 * Converts a Caffe or PyTorch `fc5` weight, [512 out, 21504 in] with inputs in CHW order, into
 * this network's [21504, 512] with rows in HWC order.
 */
export function fc5WeightToHwc(weight: Float32Array): Float32Array {
  return linearChwToHwc(weight, EMBEDDING_SIZE, FC5_INPUT.channels, FC5_INPUT.height, FC5_INPUT.width);
}

/** Draws the Caffe initialisation of SphereFace-20; see `initialSphereFaceParameters`. */
export function initialSphereFace20Parameters(seed: number): ParameterValues {
  return initialSphereFaceParameters(OPTIONS, seed);
}

/** SphereFace-20 at the 112×96 input, the only configuration that `exportOnnx` accepts. */
export class SphereFace20 extends SphereFace {
  /** Takes ownership of `parameters`, which must hold exactly the tensors `sphereFace20ParameterSpecs` lists. */
  constructor(parameters: ParameterMap) {
    super(parameters, OPTIONS);
  }
}

/** Builds a freshly initialised network; see `initialSphereFaceParameters`. */
export function randomSphereFace20(seed = 0): SphereFace20 {
  return new SphereFace20(parameterTensors(initialSphereFace20Parameters(seed)));
}

/**
 * Keys of a PyTorch SphereFace state dict that inference does not use: the A-Softmax
 * classifier `fc6` exists only in training.
 */
export const SPHEREFACE20_TRAINING_ONLY_KEYS = SPHEREFACE_TRAINING_ONLY_KEYS;

/**
 * Builds the network from a PyTorch state dict with the reference layer names (`conv1_1.weight`,
 * `relu1_1.weight`, …, `fc5.weight`), converting conv weights to HWIO and `fc5.weight` to HWC
 * row order. `fc6.*` is ignored; any other missing, extra or misshapen tensor throws
 * `StateDictMismatchError`.
 */
export function createSphereFace20(state: ReadonlyMap<string, TorchTensor>, source = 'SphereFace-20 state dict'): SphereFace20 {
  return new SphereFace20(parameterTensors(sphereFaceParametersFromState(state, OPTIONS, source)));
}

/** Reads a PyTorch checkpoint with a SphereFace-20 state dict; see `createSphereFace20`. */
export async function loadSphereFace20(checkpointPath: string): Promise<SphereFace20> {
  const checkpoint = await readTorchCheckpoint(checkpointPath);
  return createSphereFace20(stateDict(checkpoint), checkpointPath);
}
