/**
 * Third-party face-embedding models in ONNX format, run on ONNX Runtime without being
 * re-implemented. A small JSON manifest beside the `.onnx` file describes how to feed the model:
 *
 * ```json
 * {
 *   "format": "sphereface-ts/onnx-model",
 *   "version": 1,
 *   "model": "w600k_r50.onnx",
 *   "input": { "layout": "NCHW", "channelOrder": "RGB", "mean": 127.5, "scale": 0.0078125 },
 *   "alignment": "arcface-112x112",
 *   "threshold": { "value": 0.3, "protocol": "…" },
 *   "source": { "sha256": "…", "note": "InsightFace buffalo_l recognition model" }
 * }
 * ```
 *
 * - `model`: the ONNX file, relative to the manifest's folder. It must stay inside that folder.
 * - `input.layout`: `NCHW` (most exported PyTorch and MXNet models) or `NHWC`.
 * - `input.channelOrder`, `input.mean`, `input.scale`: the network's input is
 *   (pixel − mean) × scale, pixels 0–255 in that channel order.
 * - `input.name`, `output.name`: needed only when the graph has several inputs or outputs.
 * - `alignment`: the template the model was trained on (`lib/alignmentTemplates.ts`). It also
 *   fixes the input size: 112×96 or 112×112.
 * - `threshold`: optional, the cosine threshold the model scored on a benchmark.
 * - `source.sha256`: optional; when present, the file must match it.
 *
 * Load one with the model spec `onnx:PATH/TO/manifest.json`.
 */
import { createHash } from 'node:crypto';
import { readFile, realpath, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { Either, ParseResult, Schema } from 'effect';
import * as ort from 'onnxruntime-node';

import { createOrtSession } from './ortSession.ts';

import { ALIGNMENT_NAMES, alignmentTemplate, type AlignmentName } from '../lib/alignmentTemplates.ts';
import type { EmbeddingModel } from './types.ts';

export const ONNX_IMPORT_FORMAT = 'sphereface-ts/onnx-model';

const NonEmptyString = Schema.String.pipe(Schema.minLength(1));
const FiniteNumber = Schema.Number.pipe(Schema.finite());

/** The manifest of an imported ONNX model; see the module comment for each field. */
export const OnnxImportManifest = Schema.Struct({
  format: Schema.Literal(ONNX_IMPORT_FORMAT),
  version: Schema.Literal(1),
  model: NonEmptyString,
  name: Schema.optional(NonEmptyString),
  input: Schema.Struct({
    name: Schema.optional(NonEmptyString),
    layout: Schema.Literal('NCHW', 'NHWC'),
    channelOrder: Schema.Literal('RGB', 'BGR'),
    mean: FiniteNumber,
    scale: FiniteNumber.pipe(Schema.filter((value) => value !== 0, { message: () => 'expected a non-zero scale' })),
  }),
  output: Schema.optional(Schema.Struct({ name: Schema.optional(NonEmptyString) })),
  alignment: Schema.Literal(...ALIGNMENT_NAMES),
  threshold: Schema.optional(
    Schema.Struct({
      value: Schema.Number.pipe(Schema.between(-1, 1)),
      protocol: NonEmptyString,
      lfwAccuracy: Schema.optional(Schema.Number.pipe(Schema.between(0, 1))),
    }),
  ),
  source: Schema.optional(
    Schema.Struct({
      sha256: Schema.optional(Schema.String.pipe(Schema.pattern(/^[0-9a-fA-F]{64}$/, { message: () => 'expected 64 hexadecimal digits' }))),
      url: Schema.optional(NonEmptyString),
      note: Schema.optional(Schema.String),
    }),
  ),
});
export type OnnxImportManifest = typeof OnnxImportManifest.Type;

/** A manifest or model file that cannot be used, with the file and the reason. */
export class OnnxImportError extends Error {
  override readonly name = 'OnnxImportError';
}

/** An imported ONNX model: an `EmbeddingModel` whose forward pass is `embed`, plus its manifest. */
export interface ImportedOnnxModel extends EmbeddingModel {
  readonly alignment: AlignmentName;
  readonly manifest: OnnxImportManifest;
  embed(batch: Float32Array, n: number): Promise<Float32Array>;
}

export interface OnnxImportOptions {
  /** Threads for one operator. Default: `os.availableParallelism()`. */
  readonly intraOpNumThreads?: number;
}

/** Parses and checks a manifest's JSON text; the error names the file and the field path. */
export function parseOnnxImportManifest(text: string, file: string): OnnxImportManifest {
  let json: unknown;
  try {
    // A byte order mark, as some Windows editors write, is not part of the JSON.
    json = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    throw new OnnxImportError(`${file}: not valid JSON (${(error as Error).message})`);
  }
  const decoded = Schema.decodeUnknownEither(OnnxImportManifest, { onExcessProperty: 'error' })(json);
  if (Either.isLeft(decoded)) {
    const issues = ParseResult.ArrayFormatter.formatErrorSync(decoded.left)
      .slice(0, 5)
      .map((issue) => `${issue.path.length === 0 ? '(root)' : issue.path.join('.')}: ${issue.message}`);
    throw new OnnxImportError(`${file}: invalid ONNX model manifest: ${issues.join('; ')}`);
  }
  return decoded.right;
}

/**
 * Resolves `relative` inside `folder`, following symbolic links, and refuses a path that leaves
 * the folder. `field` names the manifest field in the error.
 */
async function resolveInside(folder: string, relative: string, field: string, manifestFile: string): Promise<string> {
  if (path.isAbsolute(relative) || relative.split(/[\\/]/).includes('..')) {
    throw new OnnxImportError(`${manifestFile}: ${field} "${relative}" must be a path inside the manifest's folder, without ".." or a leading "/"`);
  }
  const realFolder = await realpath(folder);
  let real: string;
  try {
    real = await realpath(path.join(folder, relative));
  } catch {
    throw new OnnxImportError(`${manifestFile}: ${field} "${relative}" does not exist in ${folder}`);
  }
  if (real !== realFolder && !real.startsWith(realFolder + path.sep)) {
    throw new OnnxImportError(`${manifestFile}: ${field} "${relative}" resolves to ${real}, outside the manifest's folder ${realFolder}`);
  }
  return real;
}

function pickName(names: readonly string[], requested: string | undefined, kind: 'input' | 'output', file: string): string {
  if (requested !== undefined) {
    if (!names.includes(requested)) throw new OnnxImportError(`${file}: the graph has no ${kind} "${requested}"; its ${kind}s are ${names.join(', ')}`);
    return requested;
  }
  if (names.length !== 1) {
    throw new OnnxImportError(`${file}: the graph has ${names.length} ${kind}s (${names.join(', ')}); name one with "${kind}.name" in the manifest`);
  }
  return names[0] as string;
}

/** Reorders NHWC [n, h, w, 3] to NCHW [n, 3, h, w]. */
function toNchw(batch: Float32Array, n: number, height: number, width: number): Float32Array {
  const out = new Float32Array(batch.length);
  const plane = height * width;
  for (let i = 0; i < n; i++) {
    const base = i * plane * 3;
    for (let p = 0; p < plane; p++) {
      out[base + p] = batch[base + p * 3] as number;
      out[base + plane + p] = batch[base + p * 3 + 1] as number;
      out[base + 2 * plane + p] = batch[base + p * 3 + 2] as number;
    }
  }
  return out;
}

/**
 * Loads a third-party ONNX embedding model from its manifest. Two blank faces run through it to
 * learn and check the embedding length. A graph whose batch is fixed at 1 runs one face at a time.
 *
 * @throws OnnxImportError naming the file and field for a bad manifest, a path outside the
 *   manifest's folder, a checksum mismatch, or a graph whose inputs and outputs do not fit.
 */
export async function loadOnnxImport(manifestFile: string, options: OnnxImportOptions = {}): Promise<ImportedOnnxModel> {
  let text: string;
  try {
    text = await readFile(manifestFile, 'utf8');
  } catch (error) {
    throw new OnnxImportError(`${manifestFile}: cannot read the ONNX model manifest (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  const manifest = parseOnnxImportManifest(text, manifestFile);
  // The model lies beside the manifest itself, also when the manifest is reached through a link.
  const folder = path.dirname(await realpath(manifestFile));
  const modelFile = await resolveInside(folder, manifest.model, 'model', manifestFile);
  let bytes: Buffer;
  try {
    if (!(await stat(modelFile)).isFile()) throw new Error('it is not a file');
    bytes = await readFile(modelFile);
  } catch (error) {
    throw new OnnxImportError(`${manifestFile}: model "${manifest.model}" (${modelFile}) cannot be read: ${(error as Error).message}`);
  }
  const expectedSha = manifest.source?.sha256;
  if (expectedSha !== undefined) {
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== expectedSha.toLowerCase()) {
      throw new OnnxImportError(`${modelFile}: SHA-256 is ${actual}, but ${manifestFile} (source.sha256) expects ${expectedSha}`);
    }
  }

  const threads = options.intraOpNumThreads ?? os.availableParallelism();
  let session: ort.InferenceSession;
  try {
    session = (await createOrtSession(bytes, { intraOpNumThreads: threads })).session;
  } catch (error) {
    throw new OnnxImportError(`${modelFile}: ONNX Runtime could not load the model: ${(error as Error).message}`);
  }

  try {
    const inputName = pickName(session.inputNames, manifest.input.name, 'input', modelFile);
    const outputName = pickName(session.outputNames, manifest.output?.name, 'output', modelFile);
    const { outputSize } = alignmentTemplate(manifest.alignment);
    const { height, width } = outputSize;
    const nchw = manifest.input.layout === 'NCHW';
    const name = manifest.name ?? path.basename(modelFile, '.onnx');

    const run = async (batch: Float32Array, n: number): Promise<{ data: Float32Array; dims: readonly number[] }> => {
      const data = nchw ? toNchw(batch, n, height, width) : batch;
      const dims = nchw ? [n, 3, height, width] : [n, height, width, 3];
      const results = await session.run({ [inputName]: new ort.Tensor('float32', data, dims) });
      const output = results[outputName];
      if (output === undefined) throw new OnnxImportError(`${modelFile}: ONNX Runtime returned no output "${outputName}"`);
      if (output.type !== 'float32') throw new OnnxImportError(`${modelFile}: output "${outputName}" is ${output.type}, expected float32`);
      return { data: output.data as Float32Array, dims: output.dims };
    };

    // Two faces, because every face goes with its mirror. Many exported models fix the batch at
    // 1; those run one face at a time.
    const fitError = (error: unknown, n: number): OnnxImportError =>
      new OnnxImportError(
        `${modelFile}: a ${manifest.input.layout} batch [${n}, ${nchw ? `3, ${height}, ${width}` : `${height}, ${width}, 3`}] for alignment ` +
          `${manifest.alignment} does not fit the graph's input "${inputName}": ${(error as Error).message.split('\n').slice(0, 4).join(' ').trim()}`,
      );
    let probe: { data: Float32Array; dims: readonly number[] };
    let oneAtATime = false;
    try {
      probe = await run(new Float32Array(2 * height * width * 3), 2);
    } catch (error) {
      if (error instanceof OnnxImportError) throw error;
      try {
        probe = await run(new Float32Array(height * width * 3), 1);
        oneAtATime = true;
      } catch (single) {
        if (single instanceof OnnxImportError) throw single;
        throw fitError(single, 1);
      }
    }
    const rows = oneAtATime ? 1 : 2;
    const [first, second = 1, ...rest] = probe.dims;
    const embeddingSize = second;
    if (first !== rows || embeddingSize < 1 || rest.some((size) => size !== 1) || probe.data.length !== rows * embeddingSize) {
      throw new OnnxImportError(
        `${modelFile}: output "${outputName}" has shape [${probe.dims.join(', ')}] for ${rows} face(s), expected an embedding per face: [${rows}, D] or [${rows}, D, 1, 1]`,
      );
    }
    const runBatch = async (batch: Float32Array, n: number): Promise<Float32Array> => {
      if (!oneAtATime) return (await run(batch, n)).data;
      const out = new Float32Array(n * embeddingSize);
      const size = height * width * 3;
      for (let i = 0; i < n; i++) out.set((await run(batch.subarray(i * size, (i + 1) * size), 1)).data, i * embeddingSize);
      return out;
    };

    let released = false;
    return {
      name,
      alignment: manifest.alignment,
      manifest,
      inputSize: { height, width },
      channelOrder: manifest.input.channelOrder,
      normalization: { mean: manifest.input.mean, scale: manifest.input.scale },
      embeddingSize,
      predict(): never {
        throw new Error(`${name} is an imported ONNX model and runs only on ONNX Runtime; use --engine onnx (the default)`);
      },
      async embed(batch: Float32Array, n: number): Promise<Float32Array> {
        if (released) throw new Error(`${name}: embed() called after dispose()`);
        const expected = n * height * width * 3;
        if (!Number.isInteger(n) || n < 1 || batch.length !== expected) {
          throw new Error(`${name}: batch has ${batch.length} values for n = ${n}, expected n ≥ 1 and n × ${height} × ${width} × 3 = ${expected} values`);
        }
        const result = await runBatch(batch, n);
        if (result.length !== n * embeddingSize) {
          throw new Error(`${name}: output "${outputName}" has ${result.length} values for ${n} faces, expected ${n} rows of ${embeddingSize}`);
        }
        return result;
      },
      dispose(): void {
        if (released) return;
        released = true;
        session.release().catch(() => undefined);
      },
    };
  } catch (error) {
    await session.release();
    throw error;
  }
}
