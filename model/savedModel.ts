/**
 * The saved-model folder: an embedding network's weights in TensorFlow.js's weight format plus a
 * manifest that records how to feed the network and where its weights came from.
 *
 *     DIR/manifest.json             the manifest, `ModelManifest` below
 *     DIR/model.json                `modelTopology` and `weightsManifest`, as tfjs writes them
 *     DIR/group1-shard1ofN.bin …    the weight bytes, float32 little-endian, split at 4 MiB
 *
 * The weight entries (`weightsManifest[].paths` and `.weights` with name, shape and dtype) and
 * the shard bytes follow `tf.io`'s format, so `tf.io.decodeWeights` and other tfjs tools read
 * them. Our networks are not `tf.LayersModel`s, so `modelTopology` is not a Keras topology: it
 * stores the architecture name, the SphereFace depth and the input size, and
 * `tf.loadLayersModel` cannot load the folder.
 *
 * Every path that the manifest and model.json name must stay inside the folder. Loading rejects
 * absolute paths, `..` segments and symbolic links that resolve outside the folder.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, realpath, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import { Either, ParseResult, Schema } from 'effect';

import { ALIGNMENT_NAMES, alignmentTemplate, type AlignmentName } from '../lib/alignmentTemplates.ts';
import { MobileFaceNet, mobileFaceNetParameterSpecs } from './mobilefacenet.ts';
import { SPHEREFACE_DEPTHS, SPHEREFACE_INPUT_SIZE, SphereFace, sphereFaceParameterSpecs, type SphereFaceDepth } from './sphereface.ts';
import { SphereFace20 } from './sphereface20.ts';
import { assertParametersMatch, type EmbeddingModel } from './types.ts';

export const SAVED_MODEL_FORMAT = 'sphereface-ts/model';
export const SAVED_MODEL_VERSION = 1;
export const MANIFEST_FILE = 'manifest.json';
export const MODEL_JSON_FILE = 'model.json';

/** Max size of a weight file: 4 MiB, the default `--weight_shard_size_bytes` of tensorflowjs_converter (tfjs-converter README). */
const SHARD_BYTES = 4 * 1024 * 1024;

export const ARCHITECTURES = ['mobilefacenet', ...SPHEREFACE_DEPTHS.map((depth) => `sphereface${depth}` as const)] as const;
export type Architecture = (typeof ARCHITECTURES)[number];

/**
 * Alignment templates: `sphereface-112x96` is the 112×96 crop of SphereFace's five-point
 * similarity alignment, `arcface-112x112` the 112×112 crop of the InsightFace template.
 */
export const ALIGNMENTS = ALIGNMENT_NAMES;
export type Alignment = AlignmentName;

export const SOURCE_KINDS = ['pytorch', 'caffe', 'training-checkpoint', 'random'] as const;
export type SourceKind = (typeof SOURCE_KINDS)[number];

// ---------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------

const PositiveInt = Schema.Int.pipe(Schema.positive());
const NonNegativeInt = Schema.Int.pipe(Schema.nonNegative());
const NonEmptyString = Schema.String.pipe(Schema.minLength(1));
const Sha256 = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/, { message: () => 'expected a SHA-256 digest: 64 lowercase hexadecimal digits' }));

const InputSize = Schema.Struct({ height: PositiveInt, width: PositiveInt });

/** The verification threshold and how it was measured. */
const Threshold = Schema.Struct({
  /** Cosine similarity above which two faces are the same person. */
  value: Schema.Number.pipe(Schema.between(-1, 1)),
  /** The benchmark and scoring that chose the value, e.g. "LFW View 2, 10-fold, cosine of image+mirror features without mean subtraction". */
  protocol: NonEmptyString,
  /** Mean accuracy of that protocol, from 0 to 1. */
  lfwAccuracy: Schema.optional(Schema.Number.pipe(Schema.between(0, 1))),
});

/** Origin of the weights. A file-based source needs `file` and `sha256`, and a random one needs `seed`. */
const Source = Schema.Struct({
  kind: Schema.Literal(...SOURCE_KINDS),
  /** File name of the original weights, without its folder. */
  file: Schema.optional(NonEmptyString),
  /** SHA-256 of that file. */
  sha256: Schema.optional(Sha256),
  /** Seed of the initialisation, for `random`. */
  seed: Schema.optional(NonNegativeInt),
  note: Schema.optional(Schema.String),
}).pipe(
  Schema.filter((source) => {
    if (source.kind === 'random') return source.seed !== undefined || { path: ['seed'], message: 'expected the seed of a random initialisation' };
    const issues = [];
    if (source.file === undefined) issues.push({ path: ['file'], message: `expected the file name of the ${source.kind} weights` });
    if (source.sha256 === undefined) issues.push({ path: ['sha256'], message: `expected the SHA-256 of the ${source.kind} weights file` });
    return issues.length === 0 ? true : issues;
  }),
);

/** The content of `manifest.json`. */
export const ModelManifest = Schema.Struct({
  format: Schema.Literal(SAVED_MODEL_FORMAT),
  version: Schema.Literal(SAVED_MODEL_VERSION),
  architecture: Schema.Literal(...ARCHITECTURES),
  /** Network input in pixels. */
  inputSize: InputSize,
  channelOrder: Schema.Literal('RGB', 'BGR'),
  /** Network input = (pixel − mean) × scale, for pixels in 0..255. */
  normalization: Schema.Struct({ mean: Schema.Number.pipe(Schema.finite()), scale: Schema.Number.pipe(Schema.finite(), Schema.positive()) }),
  embeddingSize: PositiveInt,
  /** Alignment template of the crops the network was trained on. */
  alignment: Schema.Literal(...ALIGNMENTS),
  threshold: Schema.optional(Threshold),
  source: Source,
  /** File name of the tfjs model.json, relative to the folder. */
  weights: NonEmptyString,
});
export type ModelManifest = typeof ModelManifest.Type;

/** `modelTopology` of our model.json: the architecture, not a Keras layer graph. */
const ModelTopology = Schema.Struct({
  architecture: Schema.Literal(...ARCHITECTURES),
  depth: Schema.optional(PositiveInt),
  inputSize: InputSize,
});
type ModelTopology = typeof ModelTopology.Type;

const WeightEntry = Schema.Struct({
  name: NonEmptyString,
  shape: Schema.Array(NonNegativeInt),
  dtype: Schema.Literal('float32'),
});

const ModelJson = Schema.Struct({
  format: Schema.optional(Schema.String),
  generatedBy: Schema.optional(Schema.String),
  modelTopology: ModelTopology,
  weightsManifest: Schema.Array(Schema.Struct({ paths: Schema.Array(NonEmptyString).pipe(Schema.minItems(1)), weights: Schema.Array(WeightEntry) })).pipe(Schema.minItems(1)),
});
type ModelJson = typeof ModelJson.Type;

// Excess properties: the manifest is ours alone, so an unknown field is an error. model.json
// may carry fields that other tfjs tools add (`convertedBy`, `signature`, …), which are ignored.
const decodeManifestJson = Schema.decodeUnknownEither(ModelManifest, { errors: 'all', onExcessProperty: 'error' });
const decodeModelJson = Schema.decodeUnknownEither(ModelJson, { errors: 'all' });

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** A saved model that cannot be read or written. The message names the file and the field. */
export class SavedModelError extends Error {
  override readonly name = 'SavedModelError';
}

/** Formats an effect path (`['source', 'sha256']`) as `source.sha256`. */
function formatFieldPath(segments: ReadonlyArray<PropertyKey>): string {
  return segments.map((segment, index) => (typeof segment === 'number' ? `[${segment}]` : `${index === 0 ? '' : '.'}${String(segment)}`)).join('');
}

function schemaProblems(error: ParseResult.ParseError): string {
  // An optional field fails as a union of its type and undefined, and the "Expected undefined"
  // branch only repeats the other issue at that field.
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error).filter((issue) => !issue.message.startsWith('Expected undefined,'));
  const messagesByField = new Map<string, string[]>();
  for (const issue of issues) {
    const field = formatFieldPath(issue.path);
    messagesByField.set(field, [...(messagesByField.get(field) ?? []), issue.message]);
  }
  return [...messagesByField].map(([field, messages]) => `field "${field}": ${mergeAlternatives(messages).join('; ')}`).join('; ');
}

/**
 * Merges the issues of a union of literals, which effect reports one per member
 * (`Expected "a", actual "x"` and `Expected "b", actual "x"`), into `Expected "a" or "b", actual "x"`.
 */
function mergeAlternatives(messages: readonly string[]): string[] {
  const parsed = messages.map((message) => /^Expected (.*), actual (.*)$/s.exec(message));
  const actual = parsed[0]?.[2];
  if (messages.length < 2 || parsed.some((match) => match === null || match[2] !== actual)) return [...messages];
  return [`Expected ${parsed.map((match) => match?.[1]).join(' or ')}, actual ${String(actual)}`];
}

/**
 * Validates a parsed manifest.json. `file` names it in the error.
 * @throws SavedModelError naming each invalid field and what was expected.
 */
export function decodeManifest(value: unknown, file: string): ModelManifest {
  const result = decodeManifestJson(value);
  if (Either.isLeft(result)) throw new SavedModelError(`invalid manifest ${file}: ${schemaProblems(result.left)}`);
  return result.right;
}

// ---------------------------------------------------------------------------------------------
// Architectures
// ---------------------------------------------------------------------------------------------

/** Returns the depth of a `sphereface<N>` architecture, or undefined for MobileFaceNet. */
export function sphereFaceDepthOf(architecture: Architecture): SphereFaceDepth | undefined {
  return architecture === 'mobilefacenet' ? undefined : (Number(architecture.slice('sphereface'.length)) as SphereFaceDepth);
}

export function isArchitecture(name: string): name is Architecture {
  return (ARCHITECTURES as readonly string[]).includes(name);
}

/**
 * Lists the parameters of an architecture at an input size, in network order.
 * @throws SavedModelError when MobileFaceNet is asked for an input other than 112×96.
 */
export function architectureParameters(architecture: Architecture, inputSize: { height: number; width: number }): Array<{ name: string; shape: readonly number[] }> {
  const depth = sphereFaceDepthOf(architecture);
  if (depth !== undefined) return sphereFaceParameterSpecs({ depth, inputSize });
  if (inputSize.height !== 112 || inputSize.width !== 96) {
    throw new SavedModelError(`mobilefacenet takes a 112×96 input, not ${inputSize.height}×${inputSize.width}`);
  }
  return mobileFaceNetParameterSpecs();
}

/**
 * Builds a network of `architecture` from parameters in TensorFlow.js layouts, taking ownership
 * of the tensors. SphereFace-20 at 112×96 becomes a `SphereFace20`, which the ONNX engine accepts.
 * @throws Error naming missing, extra or misshapen parameters.
 */
export function buildNetwork(architecture: Architecture, inputSize: { height: number; width: number }, parameters: Map<string, tf.Tensor>): MobileFaceNet | SphereFace {
  const depth = sphereFaceDepthOf(architecture);
  if (depth === undefined) return new MobileFaceNet(parameters);
  const isDefaultInput = inputSize.height === SPHEREFACE_INPUT_SIZE.height && inputSize.width === SPHEREFACE_INPUT_SIZE.width;
  if (depth === 20 && isDefaultInput) return new SphereFace20(parameters);
  return new SphereFace(parameters, { depth, inputSize });
}

/** A network whose parameters `saveModel` can write. */
export type SavableNetwork = MobileFaceNet | SphereFace;

export function isSavableNetwork(model: EmbeddingModel): model is SavableNetwork {
  return model instanceof MobileFaceNet || model instanceof SphereFace;
}

/** Returns the registry name of a network as an architecture. */
export function architectureOf(model: SavableNetwork): Architecture {
  if (!isArchitecture(model.name)) throw new SavedModelError(`network "${model.name}" is not one of the saved-model architectures ${ARCHITECTURES.join(', ')}`);
  return model.name;
}

/**
 * Checks that the manifest describes the network it is stored with: the input size fits the
 * architecture and the alignment, and the channel order, normalisation and embedding size are
 * those the network was built with.
 * @throws SavedModelError naming the field, its value and the expected value.
 */
export function assertManifestMatchesNetwork(manifest: ModelManifest, network: EmbeddingModel, file: string): void {
  const problems: string[] = [];
  const expectedInput = alignmentTemplate(manifest.alignment).outputSize;
  if (manifest.inputSize.height !== expectedInput.height || manifest.inputSize.width !== expectedInput.width) {
    problems.push(`field "inputSize" is ${manifest.inputSize.height}×${manifest.inputSize.width}, but alignment "${manifest.alignment}" gives ${expectedInput.height}×${expectedInput.width} crops`);
  }
  if (manifest.channelOrder !== network.channelOrder) problems.push(`field "channelOrder" is ${manifest.channelOrder}, but ${network.name} takes ${network.channelOrder}`);
  if (manifest.normalization.mean !== network.normalization.mean || manifest.normalization.scale !== network.normalization.scale) {
    problems.push(`field "normalization" is ${JSON.stringify(manifest.normalization)}, but ${network.name} was trained with ${JSON.stringify(network.normalization)}`);
  }
  if (manifest.embeddingSize !== network.embeddingSize) problems.push(`field "embeddingSize" is ${manifest.embeddingSize}, but ${network.name} outputs ${network.embeddingSize}`);
  if (problems.length > 0) throw new SavedModelError(`invalid manifest ${file}: ${problems.join('; ')}`);
}

// ---------------------------------------------------------------------------------------------
// Paths inside the folder
// ---------------------------------------------------------------------------------------------

/**
 * Checks the text of a path from `field` of `file`: it must be relative and have no `..` segment.
 * Backslashes count as separators, so a Windows-style path is checked the same way.
 * @throws SavedModelError naming the field and the path.
 */
function assertRelativeInside(folderReal: string, relative: string, field: string, file: string): void {
  const where = `${file}: field "${field}" has path "${relative}"`;
  if (path.isAbsolute(relative) || path.win32.isAbsolute(relative)) {
    throw new SavedModelError(`${where}, an absolute path; expected a path relative to the model folder ${folderReal}`);
  }
  if (relative.split(/[\\/]/).includes('..')) {
    throw new SavedModelError(`${where}, which contains a ".." segment; expected a path inside the model folder ${folderReal}`);
  }
}

/**
 * Resolves `relative` inside the model folder and returns the real path of the file.
 * `folderReal` is the folder's real path. `field` and `file` name where the path was read.
 * @throws SavedModelError for an absolute path, a `..` segment, a path that resolves outside the
 * folder through a symbolic link, or a missing file.
 */
async function resolveInside(folderReal: string, relative: string, field: string, file: string): Promise<string> {
  assertRelativeInside(folderReal, relative, field, file);
  const where = `${file}: field "${field}" has path "${relative}"`;
  const joined = path.join(folderReal, relative);
  let real: string;
  try {
    real = await realpath(joined);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new SavedModelError(`${where}, which was not found in the model folder ${folderReal}`);
    throw new SavedModelError(`${where}, which cannot be read: ${(error as Error).message}`, { cause: error });
  }
  if (!real.startsWith(folderReal + path.sep)) {
    throw new SavedModelError(`${where}, a symbolic link to ${real} outside the model folder ${folderReal}; copy the file into the folder instead`);
  }
  return real;
}

async function readJson(file: string, label: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new SavedModelError(`cannot read ${label} ${file}: ${(error as Error).message}`, { cause: error });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new SavedModelError(`${label} ${file} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/** A saved model read back: the validated manifest and the network built from its weights. */
export interface SavedModel {
  readonly manifest: ModelManifest;
  readonly network: SavableNetwork;
}

/** Tells whether `dir` is a folder that contains a manifest.json. */
export async function isSavedModelFolder(dir: string): Promise<boolean> {
  const stats = await lstat(path.join(dir, MANIFEST_FILE)).catch(() => undefined);
  return stats !== undefined;
}

/**
 * Reads a saved-model folder: validates manifest.json and model.json, checks that every path
 * stays in the folder, decodes the weight shards and builds the network.
 * @throws SavedModelError naming the file, field and value of the first problem found.
 */
export async function readSavedModel(dir: string): Promise<SavedModel> {
  let folderReal: string;
  try {
    folderReal = await realpath(dir);
  } catch (error) {
    throw new SavedModelError(`model folder ${dir} cannot be opened: ${(error as Error).message}`, { cause: error });
  }
  const manifestFile = path.join(folderReal, MANIFEST_FILE);
  const manifest = decodeManifest(await readJson(manifestFile, 'manifest'), manifestFile);

  const modelJsonFile = await resolveInside(folderReal, manifest.weights, 'weights', manifestFile);
  const modelJson = decodeModelJsonFile(await readJson(modelJsonFile, 'model.json'), modelJsonFile);
  assertTopologyMatchesManifest(modelJson.modelTopology, manifest, modelJsonFile);

  const specs = architectureParameters(manifest.architecture, manifest.inputSize);
  const parameters = await readWeights(folderReal, modelJson, modelJsonFile);
  let network: SavableNetwork;
  try {
    assertParametersMatch(manifest.architecture, parameters, specs);
    network = buildNetwork(manifest.architecture, manifest.inputSize, parameters);
  } catch (error) {
    tf.dispose([...parameters.values()]);
    if (error instanceof SavedModelError) throw error;
    throw new SavedModelError(`${modelJsonFile}: ${(error as Error).message}`, { cause: error });
  }
  try {
    assertManifestMatchesNetwork(manifest, network, manifestFile);
  } catch (error) {
    network.dispose();
    throw error;
  }
  return { manifest, network };
}

function decodeModelJsonFile(value: unknown, file: string): ModelJson {
  const result = decodeModelJson(value);
  if (Either.isLeft(result)) throw new SavedModelError(`invalid model.json ${file}: ${schemaProblems(result.left)}`);
  // The schema drops unknown fields, so a quantized entry would otherwise pass as float32.
  const raw = value as { weightsManifest: Array<{ weights: Array<Record<string, unknown>> }> };
  raw.weightsManifest.forEach((group, g) =>
    group.weights.forEach((entry, w) => {
      if (entry['quantization'] !== undefined) {
        throw new SavedModelError(`invalid model.json ${file}: field "weightsManifest[${g}].weights[${w}].quantization" is set; quantized weights are not supported, expected plain float32`);
      }
    }),
  );
  return result.right;
}

function assertTopologyMatchesManifest(topology: ModelTopology, manifest: ModelManifest, file: string): void {
  const problems: string[] = [];
  if (topology.architecture !== manifest.architecture) problems.push(`field "modelTopology.architecture" is "${topology.architecture}", but the manifest gives "${manifest.architecture}"`);
  if (topology.inputSize.height !== manifest.inputSize.height || topology.inputSize.width !== manifest.inputSize.width) {
    problems.push(`field "modelTopology.inputSize" is ${topology.inputSize.height}×${topology.inputSize.width}, but the manifest gives ${manifest.inputSize.height}×${manifest.inputSize.width}`);
  }
  const depth = sphereFaceDepthOf(topology.architecture);
  if (topology.depth !== depth) problems.push(`field "modelTopology.depth" is ${String(topology.depth)}, but ${topology.architecture} has depth ${String(depth)}`);
  if (problems.length > 0) throw new SavedModelError(`invalid model.json ${file}: ${problems.join('; ')}`);
}

/** Reads every weight group's shards, after checking their paths, and decodes the tensors. */
async function readWeights(folderReal: string, modelJson: ModelJson, file: string): Promise<Map<string, tf.Tensor>> {
  // Every path is checked before any shard is read, so a bad path is reported even when an
  // earlier shard is missing.
  modelJson.weightsManifest.forEach((group, g) => group.paths.forEach((shardPath, p) => assertRelativeInside(folderReal, shardPath, `weightsManifest[${g}].paths[${p}]`, file)));
  const parameters = new Map<string, tf.Tensor>();
  try {
    for (const [g, group] of modelJson.weightsManifest.entries()) {
      const shards: Buffer[] = [];
      for (const [p, shardPath] of group.paths.entries()) {
        const shardFile = await resolveInside(folderReal, shardPath, `weightsManifest[${g}].paths[${p}]`, file);
        shards.push(await readFile(shardFile));
      }
      const bytes = Buffer.concat(shards);
      const expected = group.weights.reduce((sum, entry) => sum + 4 * entry.shape.reduce((a, b) => a * b, 1), 0);
      if (bytes.length !== expected) {
        throw new SavedModelError(
          `${file}: the shards of weightsManifest[${g}] (${group.paths.join(', ')}) contain ${bytes.length} bytes, but its weights need ${expected} bytes of float32; a shard is truncated or from another model`,
        );
      }
      const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      const decoded = tf.io.decodeWeights(buffer, group.weights.map((entry) => ({ name: entry.name, shape: [...entry.shape], dtype: entry.dtype })));
      for (const entry of group.weights) {
        if (parameters.has(entry.name)) {
          tf.dispose(Object.values(decoded));
          throw new SavedModelError(`${file}: weight "${entry.name}" appears more than once in weightsManifest; names must be unique`);
        }
        parameters.set(entry.name, decoded[entry.name] as tf.Tensor);
      }
    }
  } catch (error) {
    tf.dispose([...parameters.values()]);
    throw error;
  }
  return parameters;
}

// ---------------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------------

/** The manifest fields that the network does not determine. */
export type ManifestFields = Pick<ModelManifest, 'alignment' | 'source'> & { readonly threshold?: ModelManifest['threshold'] };

/**
 * Writes `network` as a saved model into `dir`, which must not exist or be empty, and returns the
 * manifest. The manifest is validated before anything is written and is written last, under a
 * temporary name renamed into place, so a folder with a manifest.json is complete.
 * @throws SavedModelError for an invalid manifest or a folder that already has files.
 */
export async function saveModel(dir: string, network: SavableNetwork, fields: ManifestFields): Promise<ModelManifest> {
  const architecture = architectureOf(network);
  const manifest = decodeManifest(
    {
      format: SAVED_MODEL_FORMAT,
      version: SAVED_MODEL_VERSION,
      architecture,
      inputSize: { height: network.inputSize.height, width: network.inputSize.width },
      channelOrder: network.channelOrder,
      normalization: { mean: network.normalization.mean, scale: network.normalization.scale },
      embeddingSize: network.embeddingSize,
      alignment: fields.alignment,
      ...(fields.threshold === undefined ? {} : { threshold: fields.threshold }),
      source: fields.source,
      weights: MODEL_JSON_FILE,
    },
    path.join(dir, MANIFEST_FILE),
  );
  assertManifestMatchesNetwork(manifest, network, path.join(dir, MANIFEST_FILE));

  await mkdir(dir, { recursive: true });
  const existing = await readdir(dir);
  if (existing.length > 0) {
    throw new SavedModelError(`output folder ${dir} is not empty (it contains ${existing.slice(0, 3).join(', ')}${existing.length > 3 ? ', …' : ''}); choose a new or empty folder`);
  }

  // Network order, so that the shards list the layers as the network runs them.
  const specs = architectureParameters(architecture, manifest.inputSize);
  const named = specs.map((spec) => ({ name: spec.name, tensor: network.parameters.get(spec.name) as tf.Tensor }));
  const { data, specs: weightEntries } = await tf.io.encodeWeights(named);
  const bytes = new Uint8Array(data);

  const shardCount = Math.max(1, Math.ceil(bytes.length / SHARD_BYTES));
  const paths: string[] = [];
  for (let shard = 0; shard < shardCount; shard++) {
    const name = `group1-shard${shard + 1}of${shardCount}.bin`;
    await writeFile(path.join(dir, name), bytes.subarray(shard * SHARD_BYTES, (shard + 1) * SHARD_BYTES));
    paths.push(name);
  }

  const depth = sphereFaceDepthOf(architecture);
  const modelJson = {
    format: SAVED_MODEL_FORMAT,
    generatedBy: 'sphereface-ts',
    modelTopology: { architecture, ...(depth === undefined ? {} : { depth }), inputSize: manifest.inputSize },
    weightsManifest: [{ paths, weights: weightEntries.map((entry) => ({ name: entry.name, shape: entry.shape, dtype: entry.dtype })) }],
  };
  await writeFile(path.join(dir, MODEL_JSON_FILE), `${JSON.stringify(modelJson, null, 2)}\n`);

  const temp = path.join(dir, `.${MANIFEST_FILE}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(temp, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(temp, path.join(dir, MANIFEST_FILE));
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  return manifest;
}
