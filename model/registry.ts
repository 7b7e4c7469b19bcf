/**
 * Loads an embedding network from a `NAME:SOURCE` spec, as given on the command line.
 *
 * | spec | network |
 * |---|---|
 * | `mobilefacenet:PATH` | MobileFaceNet from a PyTorch checkpoint |
 * | `sphereface20:PATH` | SphereFace-20 from a PyTorch checkpoint with the reference layer names |
 * | `sphereface20:random` or `sphereface20:random:SEED` | SphereFace-20 with the Caffe initialisation, seed 0 by default |
 *
 * `sphereface4`, `sphereface10`, `sphereface36` and `sphereface64` take the same sources and
 * build the other depths of the family at the 112×96 input. `onnx:MANIFEST.json` loads a
 * third-party ONNX model, which runs only on ONNX Runtime (`model/onnxImport.ts`).
 */
import { access } from 'node:fs/promises';
import { loadMobileFaceNet } from './mobilefacenet.ts';
import { SPHEREFACE_DEPTHS, loadSphereFace, randomSphereFace, type SphereFaceDepth } from './sphereface.ts';
import { loadSphereFace20, randomSphereFace20 } from './sphereface20.ts';
import { loadOnnxImport } from './onnxImport.ts';
import type { EmbeddingModel } from './types.ts';

/** A model spec that names no known network or no readable file. */
export class ModelSpecError extends Error {
  override readonly name = 'ModelSpecError';
}

interface RegistryEntry {
  readonly description: string;
  load(source: string, spec: string): Promise<EmbeddingModel>;
}

async function assertReadable(path: string, spec: string): Promise<void> {
  try {
    await access(path);
  } catch {
    throw new ModelSpecError(`model file not found: "${path}" (from model spec "${spec}")`);
  }
}

/**
 * Returns the seed of a `random` or `random:SEED` source, or undefined for any other source.
 * @throws ModelSpecError for a seed that is not a non-negative integer.
 */
function parseRandomSeed(source: string, spec: string, name: string): number | undefined {
  if (source !== 'random' && !source.startsWith('random:')) return undefined;
  const seed = source === 'random' ? '0' : source.slice('random:'.length);
  if (!/^[0-9]+$/.test(seed) || !Number.isSafeInteger(Number(seed))) {
    throw new ModelSpecError(`invalid seed "${seed}" in model spec "${spec}": expected a non-negative integer, as in ${name}:random:7`);
  }
  return Number(seed);
}

/** Builds the registry entry of SphereFace-`depth`. Depth 20 loads as `SphereFace20`, the class that the ONNX export accepts. */
function sphereFaceEntry(depth: SphereFaceDepth): RegistryEntry {
  const name = `sphereface${depth}`;
  return {
    description: `${name}:PATH (PyTorch checkpoint) or ${name}:random[:SEED]`,
    async load(source, spec) {
      const seed = parseRandomSeed(source, spec, name);
      if (seed !== undefined) return depth === 20 ? randomSphereFace20(seed) : randomSphereFace({ depth }, seed);
      await assertReadable(source, spec);
      return depth === 20 ? loadSphereFace20(source) : loadSphereFace(source, { depth });
    },
  };
}

const REGISTRY: Readonly<Record<string, RegistryEntry>> = {
  mobilefacenet: {
    description: 'mobilefacenet:PATH (PyTorch checkpoint)',
    async load(source, spec) {
      await assertReadable(source, spec);
      return loadMobileFaceNet(source);
    },
  },
  ...Object.fromEntries(SPHEREFACE_DEPTHS.map((depth) => [`sphereface${depth}`, sphereFaceEntry(depth)])),
  onnx: {
    description: 'onnx:MANIFEST.json (a third-party ONNX model with its manifest; see model/onnxImport.ts)',
    async load(source, spec) {
      await assertReadable(source, spec);
      return loadOnnxImport(source);
    },
  },
};

/** Lists the registered networks, each in the spec form `loadEmbeddingModel` accepts. */
export function knownModels(): string[] {
  return Object.values(REGISTRY).map((entry) => entry.description);
}

/**
 * Loads the network a spec names. The spec is split at its first ':' into the network name
 * and the source (a checkpoint path, or `random[:SEED]` for the SphereFace networks).
 * @throws ModelSpecError for a malformed spec, an unknown name or a missing file.
 */
export async function loadEmbeddingModel(spec: string): Promise<EmbeddingModel> {
  const colon = spec.indexOf(':');
  if (colon <= 0 || colon === spec.length - 1) {
    throw new ModelSpecError(`invalid model spec "${spec}": expected NAME:PATH, one of ${knownModels().join(', ')}`);
  }
  const name = spec.slice(0, colon);
  const source = spec.slice(colon + 1);
  const entry = Object.hasOwn(REGISTRY, name) ? REGISTRY[name] : undefined;
  if (entry === undefined) {
    throw new ModelSpecError(`unknown model "${name}" in spec "${spec}": known models are ${Object.keys(REGISTRY).join(', ')}`);
  }
  return entry.load(source, spec);
}
