/**
 * What a pipeline spec can name: operator definitions, the record types they consume and
 * produce, and the rules that decide whether two stages fit together.
 *
 * A definition wraps an RxJS operator with what the runner needs before and around it: a
 * parameter schema (checked before any work starts), the record types on each side, the
 * version that goes into cache keys, the file parameters to check for existence, and, for
 * cacheable stages, how one output is stored as bytes.
 */
import type { Schema } from 'effect';
import type { OperatorFunction } from 'rxjs';

import type { BackendName } from '../model/backend.ts';
import type { ImageRef } from '../operators/records.ts';

/**
 * Record types that flow between stages. Each extends the one it names as parent, so a stage
 * that takes `DecodedImage` also takes a `LandmarkedImage` or a `FaceImage`.
 */
export const RECORD_TYPES = {
  ImageRef: undefined,
  DecodedImage: 'ImageRef',
  LandmarkedImage: 'DecodedImage',
  FaceImage: 'LandmarkedImage',
  AlignedFace: 'ImageRef',
  FaceBatch: undefined,
  Feature: 'ImageRef',
  VerificationReport: undefined,
  TrainingSummary: undefined,
} as const satisfies Record<string, string | undefined>;

export type RecordType = keyof typeof RECORD_TYPES;

/** Returns whether a record of type `from` can be passed where `to` is expected. */
export function isAssignable(from: RecordType, to: RecordType): boolean {
  let current: RecordType | undefined = from;
  while (current !== undefined) {
    if (current === to) return true;
    current = RECORD_TYPES[current];
  }
  return false;
}

/** A parameter that names a file or folder, checked before the run starts. */
export interface PathParameter {
  /** Parameter name, e.g. `list`. */
  readonly name: string;
  /**
   * `file` and `folder` must exist. `output-folder` must not be a file. `model` is a model spec
   * `NAME:PATH` whose PATH must exist unless it starts with `random`.
   */
  readonly kind: 'file' | 'folder' | 'output-folder' | 'model';
}

/** Key in `PipelineContext.shared` of the set of image ids the source listed. */
export const SOURCE_IDS = 'source.ids';

/** Values that stages hand to later stages, such as the pairs an LFW source read. */
export interface PipelineContext {
  /** Absolute folder of the spec file; relative paths in the spec are resolved against it. */
  readonly specDir: string;
  /** Run stages again for inputs whose failure is cached. */
  readonly retryFailed: boolean;
  /** Draw progress bars; the runner's choice is passed on for stages that log. */
  readonly interactive: boolean;
  /** Backend forced for the run, which stages that start worker threads pass on. */
  readonly backend?: BackendName | undefined;
  readonly shared: Map<string, unknown>;
}

/** Storage form of one output of a cacheable stage. */
export interface StageCache<I, O> {
  readonly encode: (output: O) => Uint8Array;
  /** Rebuilds an output from stored bytes and the stage's input record. */
  readonly decode: (bytes: Uint8Array, input: I) => O;
  /**
   * True when `decode` needs nothing but the source image's `ImageRef`: the stored output then
   * stands for every stage before it, and a cache hit skips them all (no decoding, no
   * detection). False when `decode` needs the real input, as detections need the decoded pixels.
   */
  readonly selfContained: boolean;
}

/** A stage made ready to run from validated parameters. */
export interface OpenedStage {
  // The runner checks record types between stages from the definitions, so the operator itself
  // is typed loosely here.
  readonly operator: OperatorFunction<unknown, unknown>;
  /**
   * The parameters that determine the output, as a JSON value; part of every cache key.
   * Default: the validated parameters. Leave out settings that change speed, not results
   * (decode concurrency), and replace file paths by content digests (model weights).
   */
  readonly keyParams?: unknown;
  /** Per-image input that is not in the image file, such as its landmarks from a file. */
  readonly itemKey?: (id: string) => string | undefined;
  // Each stage stores its own record types; the runner only moves them between the cache and
  // the stream, so they are erased here.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly cache?: StageCache<any, any>;
  /** Frees models and handles after the run, whether it succeeded or not. */
  readonly dispose?: () => void | Promise<void>;
}

interface DefinitionBase<P> {
  readonly name: string;
  /** One line for `--dry-run` and the docs. */
  readonly description: string;
  /** Schema of the `params` object; its defaults apply to missing fields. */
  // The encoded side is whatever JSON the spec holds; effect's Schema is invariant in it.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly params: Schema.Schema<P, any>;
  readonly pathParams?: readonly PathParameter[];
  /** True when the stage runs TensorFlow.js; the runner then selects a backend first and logs it. */
  readonly usesTensors?: boolean;
}

/** A stage that lists the images a run processes. */
export interface SourceDefinition<P = unknown> extends DefinitionBase<P> {
  readonly kind: 'source';
  readonly output: 'ImageRef';
  readonly open: (params: P, context: PipelineContext) => Promise<readonly ImageRef[]>;
}

/** A stage that transforms the stream. */
export interface StageDefinition<P = unknown> extends DefinitionBase<P> {
  readonly kind: 'stage';
  readonly input: RecordType;
  readonly output: RecordType;
  /** Version of the stage's code; part of cache keys, so bump it when outputs change. */
  readonly version: number;
  /**
   * `per-item`: one output per input, in order. `batching`: groups items (`batch`); keys pass
   * through it unchanged. `terminal`: consumes the whole stream and emits one result; it must
   * be the last stage.
   */
  readonly shape: 'per-item' | 'batching' | 'terminal';
  /** Rejects parameters that the schema accepts but the stage cannot run, as a message. */
  readonly check?: (params: P) => string | undefined;
  readonly open: (params: P, context: PipelineContext) => Promise<OpenedStage>;
}

// Definitions of different parameter types sit in one registry, and effect's Schema is
// invariant in its type, so the registry erases it.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type OperatorDefinition = SourceDefinition<any> | StageDefinition<any>;

/** Declares a source; the identity function exists to infer `P` from the schema. */
export function defineSource<P>(definition: Omit<SourceDefinition<P>, 'kind'>): SourceDefinition<P> {
  return { kind: 'source', ...definition };
}

/** Declares a stage; the identity function exists to infer `P` from the schema. */
export function defineStage<P>(definition: Omit<StageDefinition<P>, 'kind'>): StageDefinition<P> {
  return { kind: 'stage', ...definition };
}
