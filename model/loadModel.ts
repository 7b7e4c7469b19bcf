/**
 * Loads an embedding network from any model spec the commands accept:
 *
 * | spec | network |
 * |---|---|
 * | `DIR` (a folder with manifest.json) | a saved model; see `savedModel.ts` |
 * | `sphereface<N>:FILE.caffemodel` | SphereFace-N from Caffe weights with the reference layer names (`conv1_1`, `relu1_1`, …, `fc5`) |
 * | `sphereface<N>:FILE.sfc` | SphereFace-N from a `sphereface train` checkpoint |
 * | `NAME:PATH`, `NAME:random[:SEED]` | as `loadEmbeddingModel` takes them: PyTorch checkpoints and random initialisations |
 */
import { access, stat } from 'node:fs/promises';

import { Either, ParseResult, Schema } from 'effect';

import { readCaffeModel, mapCaffeBlobs } from './caffe.ts';
import { loadCheckpoint } from './checkpoint.ts';
import { selectEngine, type EngineModel, type EngineName } from './engine.ts';
import { knownWeights, type StoredThreshold } from './knownWeights.ts';
import { ModelSpecError, loadEmbeddingModel } from './registry.ts';
import { ARCHITECTURES, MANIFEST_FILE, buildNetwork, isSavableNetwork, isSavedModelFolder, readSavedModel, type ModelManifest, type SavableNetwork, type SourceKind } from './savedModel.ts';
import { SPHEREFACE_DEPTHS, SPHEREFACE_INPUT_SIZE, parameterTensors, sphereFaceParameterSpecs, type SphereFaceDepth } from './sphereface.ts';
import type { ParameterValues } from './sphereface.ts';
import type { EmbeddingModel } from './types.ts';

export interface LoadModelOptions {
  /**
   * Inference engine. Without one, the network runs on ONNX Runtime when it exports to ONNX and
   * on TensorFlow.js otherwise, as `loadEngineModel` chooses.
   */
  readonly engine?: EngineName;
}

export interface LoadedModel {
  readonly model: EngineModel;
  /** The manifest of a saved-model folder. Absent for `NAME:SOURCE` specs. */
  readonly manifest?: ModelManifest;
  /**
   * The verification threshold stored with the model: the manifest's, or for a published
   * weights file loaded as `NAME:FILE`, the one measured here (`model/knownWeights.ts`).
   */
  readonly threshold?: StoredThreshold;
}

/** Origin of a network's weights. */
export interface WeightsOrigin {
  readonly kind: SourceKind;
  /** The weights file, for every kind except `random`. */
  readonly file?: string;
  /** The seed, for `random`. */
  readonly seed?: number;
}

/** A network on TensorFlow.js with its parameters, before an engine is chosen. */
export interface LoadedNetwork {
  readonly network: SavableNetwork;
  readonly manifest?: ModelManifest;
  /** Undefined for a saved model, whose manifest records the origin. */
  readonly origin?: WeightsOrigin;
}

/**
 * Loads the network that `spec` names and puts it on an inference engine. The caller owns the
 * returned model and disposes it.
 * @throws ModelSpecError for a malformed spec, an unknown network or a missing file;
 *   SavedModelError for an invalid saved-model folder; the reader's error for unreadable weights.
 */
export async function loadModel(spec: string, options?: LoadModelOptions): Promise<LoadedModel> {
  const { network, manifest } = await loadAnyNetwork(spec);
  const model = await selectEngine(network, spec, options?.engine);
  if (manifest === undefined) {
    const colon = spec.indexOf(':');
    const known = colon > 0 ? await knownWeights(spec.slice(colon + 1)) : undefined;
    const imported = (model as { manifest?: { threshold?: StoredThreshold } }).manifest?.threshold;
    const threshold = imported ?? known?.threshold;
    return threshold === undefined ? { model } : { model, threshold };
  }
  // The manifest's template decides how the crops are aligned, as `EmbeddingModel.alignment` does for imported models.
  const withAlignment = Object.assign(model, { alignment: manifest.alignment });
  return manifest.threshold === undefined ? { model: withAlignment, manifest } : { model: withAlignment, manifest, threshold: manifest.threshold };
}

/**
 * Loads the network that `spec` names on TensorFlow.js, with its parameters, and reports where
 * the weights came from. `loadModel` and `sphereface export` build on it.
 */
export async function loadNetwork(spec: string): Promise<LoadedNetwork> {
  const loaded = await loadAnyNetwork(spec);
  if (!isSavableNetwork(loaded.network)) {
    loaded.network.dispose();
    throw new ModelSpecError(`model spec "${spec}" loaded ${loaded.network.name}, which is not one of the saved-model architectures ${ARCHITECTURES.join(', ')}`);
  }
  return { ...loaded, network: loaded.network };
}

/** Loads any network that `spec` names, including those `loadNetwork` cannot save, such as imported ONNX models. */
async function loadAnyNetwork(spec: string): Promise<{ network: EmbeddingModel; manifest?: ModelManifest; origin?: WeightsOrigin }> {
  if (await isDirectory(spec)) {
    if (!(await isSavedModelFolder(spec))) {
      throw new ModelSpecError(`model folder "${spec}" has no ${MANIFEST_FILE}; expected a folder written by sphereface export, or a spec NAME:PATH`);
    }
    const { network, manifest } = await readSavedModel(spec);
    return { network, manifest };
  }

  const colon = spec.indexOf(':');
  const name = colon > 0 ? spec.slice(0, colon) : '';
  const source = colon > 0 ? spec.slice(colon + 1) : '';
  if (source.endsWith('.caffemodel') || source.endsWith('.sfc')) {
    const depth = sphereFaceDepthOfName(name);
    if (depth === undefined) {
      throw new ModelSpecError(`model spec "${spec}": ${source.endsWith('.sfc') ? 'training checkpoints' : 'Caffe weights'} load only into the SphereFace networks (${SPHEREFACE_DEPTHS.map((d) => `sphereface${d}`).join(', ')}), not "${name}"`);
    }
    await assertReadable(source, spec);
    if (source.endsWith('.caffemodel')) return { network: await loadCaffeSphereFace(depth, source), origin: { kind: 'caffe', file: source } };
    return { network: await loadCheckpointSphereFace(depth, source, spec), origin: { kind: 'training-checkpoint', file: source } };
  }

  const network = await loadEmbeddingModel(spec);
  if (!isSavableNetwork(network)) return { network };
  const seed = randomSeedOf(source);
  return { network, origin: seed === undefined ? { kind: 'pytorch', file: source } : { kind: 'random', seed } };
}

async function isDirectory(spec: string): Promise<boolean> {
  const stats = await stat(spec).catch(() => undefined);
  return stats?.isDirectory() ?? false;
}

async function assertReadable(file: string, spec: string): Promise<void> {
  try {
    await access(file);
  } catch {
    throw new ModelSpecError(`model file not found: "${file}" (from model spec "${spec}")`);
  }
}

function sphereFaceDepthOfName(name: string): SphereFaceDepth | undefined {
  return SPHEREFACE_DEPTHS.find((depth) => name === `sphereface${depth}`);
}

/** Returns the seed of a `random[:SEED]` source that `loadEmbeddingModel` has accepted. */
function randomSeedOf(source: string): number | undefined {
  if (source === 'random') return 0;
  return source.startsWith('random:') ? Number(source.slice('random:'.length)) : undefined;
}

/**
 * Builds SphereFace-`depth` at 112×96 from a `.caffemodel`. Caffe stores convolutions as OIHW and
 * `fc5` over a CHW flatten, and `mapCaffeBlobs` converts both. The A-Softmax layer `fc6` exists
 * only in training and is ignored.
 */
async function loadCaffeSphereFace(depth: SphereFaceDepth, file: string): Promise<SavableNetwork> {
  const net = await readCaffeModel(file);
  const values = mapCaffeBlobs(net, sphereFaceParameterSpecs({ depth }), { ignore: ['fc6'] });
  return buildNetwork(`sphereface${depth}`, SPHEREFACE_INPUT_SIZE, parameterTensors(values));
}

const CheckpointNetwork = Schema.Struct({
  depth: Schema.Literal(...SPHEREFACE_DEPTHS),
  inputSize: Schema.Struct({ height: Schema.Int.pipe(Schema.positive()), width: Schema.Int.pipe(Schema.positive()) }),
});

/**
 * Builds SphereFace-`depth` from the network tensors of a training checkpoint, at the input size
 * that training used (`config.network`). The classifier `fc6.weight` and the momentum slots are
 * left out.
 */
async function loadCheckpointSphereFace(depth: SphereFaceDepth, file: string, spec: string): Promise<SavableNetwork> {
  const content = await loadCheckpoint(file);
  const decoded = Schema.decodeUnknownEither(CheckpointNetwork)(content.state.config['network']);
  if (Either.isLeft(decoded)) {
    throw new ModelSpecError(`${file}: config.network of the checkpoint is invalid: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`);
  }
  const { inputSize } = decoded.right;
  if (decoded.right.depth !== depth) {
    throw new ModelSpecError(`${file} is a SphereFace-${decoded.right.depth} checkpoint, but model spec "${spec}" asks for sphereface${depth}; use sphereface${decoded.right.depth}:${file}`);
  }
  const networkNames = new Set(sphereFaceParameterSpecs({ depth, inputSize }).map((spec) => spec.name));
  const values: ParameterValues = new Map();
  for (const tensor of content.tensors) {
    if (networkNames.has(tensor.name)) values.set(tensor.name, { shape: tensor.shape, data: tensor.data });
  }
  return buildNetwork(`sphereface${depth}`, inputSize, parameterTensors(values));
}
