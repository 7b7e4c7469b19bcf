/**
 * Pipeline specs: a pipeline written as data (a TypeScript value, or a JSON or YAML file) and
 * checked in full before any image is touched.
 *
 * ```yaml
 * version: 1
 * name: preprocess-casia
 * cache: ${out}/cache            # artifact cache folder; optional
 * vars: { out: ./preprocessed }   # defaults for ${...}; `--set out=DIR` overrides them
 * stages:
 *   - op: imageFolder
 *     params: { root: ${data}/CASIA-WebFace }
 *   - op: readImages
 *   - op: detectFaces
 *   - op: similarityAlign
 *   - op: writeCrops
 *     params: { out: ${out}/crops }
 * ```
 *
 * Validation reports every problem it finds, each with the path of the field in the spec
 * (`stages[2].params.minSize`) and what was expected: unknown operators and parameters, values of
 * the wrong type, stages whose record types do not fit together, missing files, unknown
 * variables. Relative paths in a spec file are resolved against the file's folder; values given
 * with `--set` are resolved against the working directory.
 */
import { stat } from 'node:fs/promises';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { Either, ParseResult, Schema } from 'effect';
import { parseDocument } from 'yaml';

import { dataRoot, modelsRoot, pathsOverlap } from '../lib/paths.ts';
import { BUILTIN_OPERATORS } from './builtinOperators.ts';
import { isAssignable, RECORD_TYPES, type OperatorDefinition, type PathParameter, type RecordType } from './operatorDefinition.ts';

/** Version of the spec format that this code reads. */
export const SPEC_VERSION = 1;

const StageSpecSchema = Schema.Struct({
  op: Schema.String,
  /** Label in reports and progress bars; default the operator name. */
  name: Schema.optional(Schema.String),
  params: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  /** Set false to run a cacheable stage without the cache. */
  cache: Schema.optional(Schema.Boolean),
});

export const PipelineSpecSchema = Schema.Struct({
  version: Schema.Literal(SPEC_VERSION),
  name: Schema.optional(Schema.String),
  description: Schema.optional(Schema.String),
  vars: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
  /** Modules, relative to the spec, that export `operators`: extra operator definitions. */
  plugins: Schema.optional(Schema.Array(Schema.String)),
  cache: Schema.optional(Schema.String),
  /** Images admitted into the pipeline and not yet finished; bounds memory. Default 64, or twice the largest batch. */
  maxInFlight: Schema.optional(Schema.Int.pipe(Schema.positive())),
  /** Seconds without any stage emitting a record, while images are in flight, before the run fails as stalled. Default 600. */
  stallTimeoutSeconds: Schema.optional(Schema.Number.pipe(Schema.positive())),
  stages: Schema.NonEmptyArray(StageSpecSchema),
});

export type PipelineSpec = Schema.Schema.Encoded<typeof PipelineSpecSchema>;
export type StageSpec = Schema.Schema.Encoded<typeof StageSpecSchema>;

/** A problem in a spec: the path of the field and what is wrong with it. */
export interface SpecIssue {
  readonly path: string;
  readonly message: string;
}

/** Raised when a spec is invalid; `issues` lists every problem found. */
export class SpecError extends Error {
  override readonly name = 'SpecError';
  constructor(
    readonly source: string,
    readonly issues: readonly SpecIssue[],
  ) {
    super(`invalid pipeline spec ${source}:\n${issues.map((issue) => `  ${issue.path}: ${issue.message}`).join('\n')}`);
  }
}

/** A stage that passed validation, with its parameters decoded and its paths resolved. */
export interface ValidatedStage {
  readonly index: number;
  /** `stages[i]`, for messages. */
  readonly path: string;
  readonly label: string;
  readonly definition: OperatorDefinition;
  readonly params: unknown;
  readonly cache: boolean;
}

export interface ValidatedPipeline {
  /** The spec file, or `<inline>` for a spec given as a value. */
  readonly source: string;
  readonly specDir: string;
  readonly name: string;
  readonly stages: readonly ValidatedStage[];
  readonly cacheDir: string | undefined;
  readonly maxInFlight: number;
  readonly stallTimeoutSeconds: number;
}

export interface ValidateOptions {
  /** Folder that relative paths are resolved against; default the working directory. */
  readonly specDir?: string;
  /** Variable values that override the spec's `vars`; relative paths are resolved against the working directory. */
  readonly set?: Readonly<Record<string, string>>;
  /** Extra operator definitions, as plugins give. */
  readonly operators?: readonly OperatorDefinition[];
  /** Label for messages; default `<inline>`. */
  readonly source?: string;
}

/** Returns a spec value unchanged; it exists so that TypeScript checks a spec written in code. */
export function definePipeline(spec: PipelineSpec): PipelineSpec {
  return spec;
}

/** Formats an effect path (`['stages', 2, 'params']`) as `stages[2].params`. */
function formatPath(segments: ReadonlyArray<PropertyKey>, prefix = ''): string {
  let out = prefix;
  for (const segment of segments) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? String(segment) : `.${String(segment)}`;
  }
  return out === '' ? '(spec)' : out;
}

/** Decodes `value` with `schema`, turning a failure into issues under `prefix`. */
function decodeWith<A>(schema: Schema.Schema<A, unknown>, value: unknown, prefix: string): { value?: A; issues: SpecIssue[] } {
  const result = Schema.decodeUnknownEither(schema, { errors: 'all', onExcessProperty: 'error' })(value);
  if (Either.isRight(result)) return { value: result.right, issues: [] };
  const all = ParseResult.ArrayFormatter.formatErrorSync(result.left).map((issue) => ({
    path: formatPath(issue.path, prefix),
    message: issue.message,
  }));
  // An optional field fails as a union of its type and undefined. The "Expected undefined"
  // branch only repeats the other issues at that field or inside it, so it is dropped.
  const kept = all.filter(
    (issue) =>
      !(issue.message.startsWith('Expected undefined,') && all.some((other) => other !== issue && (other.path === issue.path || other.path.startsWith(issue.path)))),
  );
  return { issues: mergeAlternatives(kept).map(shortenTypeMessage) };
}

/** Merges `Expected "a", actual "x"` and `Expected "b", actual "x"` at one field into one issue. */
function mergeAlternatives(issues: readonly SpecIssue[]): SpecIssue[] {
  const merged: SpecIssue[] = [];
  for (const issue of issues) {
    const match = /^Expected (.*), actual (.*)$/s.exec(issue.message);
    const earlier = merged.find((other) => other.path === issue.path);
    const earlierMatch = earlier === undefined ? null : /^Expected (.*), actual (.*)$/s.exec(earlier.message);
    if (earlier !== undefined && match !== null && earlierMatch !== null && earlierMatch[2] === match[2]) {
      const index = merged.indexOf(earlier);
      merged[index] = { path: issue.path, message: `Expected ${earlierMatch[1]} or ${match[1]}, actual ${match[2]}` };
      continue;
    }
    merged.push(issue);
  }
  return merged;
}

/** Replaces an effect message that spells out a whole TypeScript type with a short description. */
function shortenTypeMessage(issue: SpecIssue): SpecIssue {
  const match = /^Expected \{ readonly [\s\S]*, actual ([\s\S]*)$/.exec(issue.message) ?? /^Expected ReadonlyArray<[\s\S]*, actual ([\s\S]*)$/.exec(issue.message);
  if (match === null) return issue;
  const actual = match[1] ?? '';
  if (issue.path === '(spec)') return { path: issue.path, message: `expected a mapping with "version: 1" and "stages", actual ${actual}` };
  if (issue.path === 'stages') return { path: issue.path, message: `expected a list of stages such as [{ op: lfw }, { op: readImages }], actual ${actual}` };
  if (/^stages\[\d+\]$/.test(issue.path)) return { path: issue.path, message: `expected a stage such as { op: readImages, params: { concurrency: 2 } }, actual ${actual}` };
  return issue;
}

const VARIABLE = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Joins a field path: `stages` + `[2]`, `stages[2]` + `params`. */
function joinPath(base: string, key: string | number): string {
  if (typeof key === 'number') return `${base}[${key}]`;
  return base === '' ? key : `${base}.${key}`;
}

/**
 * Replaces `${name}` in every string of `value`, recording the names used and unknown names as
 * issues. A string that is exactly one variable whose value reads as a number or a boolean
 * becomes that number or boolean, so `--set` can give numeric parameters.
 */
function substitute(value: unknown, variables: ReadonlyMap<string, string>, where: string, issues: SpecIssue[], used: Set<string>): unknown {
  if (typeof value === 'string') {
    const whole = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(value);
    const single = whole === null ? undefined : variables.get(whole[1] as string);
    if (single !== undefined) {
      used.add(whole?.[1] as string);
      if (/^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/.test(single)) return Number(single);
      if (single === 'true' || single === 'false') return single === 'true';
      return single;
    }
    return value.replace(VARIABLE, (match, name: string) => {
      const replacement = variables.get(name);
      if (replacement === undefined) {
        issues.push({ path: where, message: `unknown variable ${match}; define it under vars or pass --set ${name}=VALUE (known: ${[...variables.keys()].join(', ')})` });
        return match;
      }
      used.add(name);
      return replacement;
    });
  }
  if (Array.isArray(value)) return value.map((item, i) => substitute(item, variables, joinPath(where, i), issues, used));
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, substitute(item, variables, joinPath(where, key), issues, used)]));
  }
  return value;
}

/** Returns the variable a string starts with (`${out}/crops` gives `out`), if any. */
function leadingVariable(value: unknown): string | undefined {
  return typeof value === 'string' ? /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}/.exec(value)?.[1] : undefined;
}

async function checkPath(parameter: PathParameter, value: string): Promise<string | undefined> {
  if (parameter.kind === 'model') {
    const colon = value.indexOf(':');
    const file = colon < 0 ? '' : value.slice(colon + 1);
    if (colon < 0) return `expected a model spec NAME:PATH such as mobilefacenet:068.ckpt, got "${value}"`;
    if (file.startsWith('random')) return undefined;
    const found = await stat(file).catch(() => undefined);
    return found?.isFile() === true ? undefined : `model file not found: ${file}`;
  }
  const found = await stat(value).catch(() => undefined);
  switch (parameter.kind) {
    case 'file':
      if (found === undefined) return `file not found: ${value}`;
      return found.isFile() ? undefined : `${value} is a folder; expected a file`;
    case 'folder':
      if (found === undefined) return `folder not found: ${value}`;
      return found.isDirectory() ? undefined : `${value} is a file; expected a folder`;
    case 'output-folder':
      return found === undefined || found.isDirectory() ? undefined : `${value} is a file; expected a folder (created if missing)`;
  }
}

/** Resolves a parameter path against `base`; a model spec keeps its NAME and resolves its PATH. */
function resolvePath(parameter: PathParameter, value: string, base: string): string {
  if (parameter.kind !== 'model') return path.resolve(base, value);
  const colon = value.indexOf(':');
  if (colon < 0) return value;
  const file = value.slice(colon + 1);
  return file.startsWith('random') ? value : `${value.slice(0, colon)}:${path.resolve(base, file)}`;
}

/** Returns a stage that could sit between `from` and `to`, for the hint in a type error. */
function bridgeFor(from: RecordType, to: RecordType, operators: ReadonlyMap<string, OperatorDefinition>): string | undefined {
  for (const definition of operators.values()) {
    if (definition.kind === 'stage' && isAssignable(from, definition.input) && isAssignable(definition.output, to)) return definition.name;
  }
  return undefined;
}

/**
 * Checks a spec value and resolves it into stages ready to open. Throws `SpecError` listing
 * every problem found.
 */
export async function validatePipeline(spec: unknown, options: ValidateOptions = {}): Promise<ValidatedPipeline> {
  const source = options.source ?? '<inline>';
  const specDir = path.resolve(options.specDir ?? process.cwd());
  if (Array.isArray((spec as { stages?: unknown } | null)?.stages) && (spec as { stages: unknown[] }).stages.length === 0) {
    throw new SpecError(source, [{ path: 'stages', message: 'empty; expected at least a source stage, such as { op: imageFolder, params: { root: photos } }' }]);
  }
  const decoded = decodeWith(PipelineSpecSchema as unknown as Schema.Schema<Schema.Schema.Type<typeof PipelineSpecSchema>, unknown>, spec, '');
  if (decoded.value === undefined) throw new SpecError(source, decoded.issues);
  const issues: SpecIssue[] = [];

  const variables = new Map<string, string>([
    ['data', path.resolve(dataRoot())],
    ['models', path.resolve(modelsRoot())],
    ['specDir', specDir],
    ['cache', path.resolve(process.env['SPHEREFACE_CACHE'] ?? '.sphereface-cache')],
  ]);
  const used = new Set<string>();
  // Variables whose values count as given on the command line: a relative path in them is
  // taken from the working directory, not from the spec file's folder.
  const fromCommandLine = new Set<string>();
  for (const [name, value] of Object.entries(options.set ?? {})) {
    if (value === '') issues.push({ path: `--set ${name}`, message: 'empty value; expected --set NAME=VALUE with a value' });
    variables.set(name, value);
    fromCommandLine.add(name);
  }
  // A variable may use the built-in ones, those given with --set, and those defined before it.
  for (const [name, value] of Object.entries(decoded.value.vars ?? {})) {
    if (fromCommandLine.has(name)) continue;
    variables.set(name, String(substitute(value, variables, `vars.${name}`, issues, used)));
    const leading = leadingVariable(value);
    if (leading !== undefined && fromCommandLine.has(leading)) fromCommandLine.add(name);
  }
  const resolved = substitute(decoded.value, variables, '', issues, used) as typeof decoded.value;
  for (const name of Object.keys(options.set ?? {})) {
    if (!used.has(name) && !Object.hasOwn(decoded.value.vars ?? {}, name)) {
      issues.push({ path: `--set ${name}`, message: `the spec uses no variable \${${name}}; its variables are ${[...variables.keys()].filter((v) => !fromCommandLine.has(v) || used.has(v)).join(', ')}` });
    }
  }
  /** Returns the folder a relative path in `raw` (the field before substitution) is taken from. */
  const baseOf = (raw: unknown): string => {
    const leading = leadingVariable(raw);
    return leading !== undefined && fromCommandLine.has(leading) ? process.cwd() : specDir;
  };

  const operators = new Map<string, OperatorDefinition>(BUILTIN_OPERATORS.map((definition) => [definition.name, definition]));
  const origins = new Map<string, string>(BUILTIN_OPERATORS.map((definition) => [definition.name, 'a built-in operator']));
  const addOperators = (definitions: readonly unknown[], where: string): void => {
    for (const [j, definition] of definitions.entries()) {
      const problem = definitionProblem(definition);
      if (problem !== undefined) {
        issues.push({ path: `${where}.operators[${j}]`, message: problem });
        continue;
      }
      const { name } = definition as OperatorDefinition;
      const origin = origins.get(name);
      if (origin !== undefined) {
        issues.push({ path: `${where}.operators[${j}]`, message: `defines "${name}", which is already ${origin}; give the operator another name, so that results stored under one cannot be read as the other's` });
        continue;
      }
      operators.set(name, definition as OperatorDefinition);
      origins.set(name, `defined by ${where}`);
    }
  };
  addOperators(options.operators ?? [], 'options');
  for (const [i, plugin] of (resolved.plugins ?? []).entries()) {
    const where = `plugins[${i}]`;
    const file = path.resolve(specDir, plugin);
    const loaded = await import(pathToFileURL(file).href).catch((error: unknown) => {
      const hint = /require\(\) ES Module|Cannot find package/.test((error as Error).message)
        ? '. A TypeScript plugin outside a package with "type": "module" must be named .mts, and the packages it imports (effect, rxjs) must be installed where Node.js can find them from the plugin'
        : '';
      issues.push({ path: where, message: `cannot load plugin ${file}: ${(error as Error).message}${hint}` });
      return undefined;
    });
    if (loaded === undefined) continue;
    const exported = (loaded as { operators?: unknown }).operators;
    if (!Array.isArray(exported)) {
      issues.push({ path: where, message: `${file} exports no "operators" array; expected export const operators = [defineStage({...})]` });
      continue;
    }
    addOperators(exported, where);
  }

  const stages: ValidatedStage[] = [];
  let previous: { type: RecordType; label: string; path: string } | undefined;
  for (const [index, stage] of resolved.stages.entries()) {
    const where = `stages[${index}]`;
    const definition = operators.get(stage.op);
    if (definition === undefined) {
      issues.push({ path: `${where}.op`, message: `unknown operator "${stage.op}"; known operators: ${[...operators.keys()].join(', ')}` });
      previous = undefined;
      continue;
    }
    const label = stage.name ?? stage.op;

    if (index === 0 && definition.kind !== 'source') {
      issues.push({ path: `${where}.op`, message: `the first stage must be a source that lists images (${sourcesOf(operators)}), got ${definition.name}` });
    } else if (index > 0 && definition.kind === 'source') {
      issues.push({ path: `${where}.op`, message: `${definition.name} is a source and can only be the first stage` });
    } else if (definition.kind === 'stage' && previous !== undefined && !isAssignable(previous.type, definition.input)) {
      const bridge = bridgeFor(previous.type, definition.input, operators);
      issues.push({
        path: `${where}.op`,
        message:
          `${definition.name} takes ${definition.input} records, but ${previous.path} (${previous.label}) gives ${previous.type}` +
          (bridge === undefined ? '' : `; insert a stage such as ${bridge} between them`),
      });
    }
    if (definition.kind === 'stage' && definition.shape === 'terminal' && index !== resolved.stages.length - 1) {
      issues.push({ path: `${where}.op`, message: `${definition.name} consumes the whole stream and must be the last stage` });
    }

    const params = decodeWith(definition.params, stage.params ?? {}, `${where}.params`);
    issues.push(...params.issues);
    let value = params.value as Record<string, unknown> | undefined;
    if (value !== undefined) {
      value = { ...value };
      for (const parameter of definition.pathParams ?? []) {
        const raw = value[parameter.name];
        if (typeof raw !== 'string') continue;
        if (raw.includes('${')) continue; // an unknown variable, reported above
        const original = (decoded.value.stages[index]?.params as Record<string, unknown> | undefined)?.[parameter.name];
        const absolute = resolvePath(parameter, raw, baseOf(original));
        value[parameter.name] = absolute;
        const problem = await checkPath(parameter, absolute);
        if (problem !== undefined) issues.push({ path: `${where}.params.${parameter.name}`, message: problem });
      }
      const problem = definition.kind === 'stage' ? definition.check?.(value as never) : undefined;
      if (problem !== undefined) issues.push({ path: `${where}.params`, message: problem });
    }

    if (stage.cache === true && (definition.kind === 'source' || definition.shape !== 'per-item')) {
      issues.push({ path: `${where}.cache`, message: `${definition.name} produces nothing to cache; only per-item stages with a stored form are cacheable` });
    }
    stages.push({ index, path: where, label, definition, params: value, cache: stage.cache ?? true });
    previous = { type: definition.output, label, path: where };
  }

  const largestBatch = Math.max(
    0,
    ...stages.filter((s) => s.definition.name === 'batch').map((s) => (s.params as { size?: number } | undefined)?.size ?? 0),
  );
  const maxInFlight = resolved.maxInFlight ?? Math.max(64, 2 * largestBatch);
  if (maxInFlight < largestBatch) {
    issues.push({ path: 'maxInFlight', message: `${maxInFlight} is smaller than the batch size ${largestBatch}; a batch could never fill. Expected at least ${largestBatch}` });
  }
  if (resolved.cache !== undefined && resolved.cache.trim() === '') {
    issues.push({ path: 'cache', message: 'empty; give a cache folder, or remove the field to run without a cache' });
  }
  checkOutputsOutsideInputs(stages, issues);
  if (issues.length > 0) throw new SpecError(source, issues);

  return {
    source,
    specDir,
    name: resolved.name ?? (source === '<inline>' ? 'pipeline' : path.basename(source).replace(/\.[^.]+$/, '')),
    stages,
    cacheDir: resolved.cache === undefined ? undefined : path.resolve(baseOf(decoded.value.cache), resolved.cache),
    maxInFlight,
    stallTimeoutSeconds: resolved.stallTimeoutSeconds ?? 600,
  };
}

/** Returns why a plugin's export is not an operator definition, or undefined when it is one. */
function definitionProblem(definition: unknown): string | undefined {
  if (typeof definition !== 'object' || definition === null) return `expected an operator definition made with defineStage or defineSource, got ${JSON.stringify(definition)}`;
  const d = definition as Record<string, unknown>;
  if (typeof d['name'] !== 'string' || d['name'] === '') return 'the definition has no name';
  const name = d['name'];
  if (d['kind'] !== 'source' && d['kind'] !== 'stage') return `${name}: kind must be "source" or "stage" (use defineStage or defineSource)`;
  if (!Schema.isSchema(d['params'])) return `${name}: params must be an effect Schema, such as Schema.Struct({...})`;
  if (typeof d['open'] !== 'function') return `${name}: open must be a function`;
  const types = Object.keys(RECORD_TYPES);
  if (d['kind'] === 'source') return d['output'] === 'ImageRef' ? undefined : `${name}: a source must give ImageRef records`;
  for (const side of ['input', 'output'] as const) {
    if (!types.includes(d[side] as string)) return `${name}: ${side} ${JSON.stringify(d[side])} is not a record type; expected one of ${types.join(', ')}`;
  }
  if (!['per-item', 'batching', 'terminal'].includes(d['shape'] as string)) return `${name}: shape must be per-item, batching or terminal, got ${JSON.stringify(d['shape'])}`;
  if (typeof d['version'] !== 'number' || !Number.isFinite(d['version'])) return `${name}: version must be a number`;
  return undefined;
}

/**
 * Adds an issue for every output folder that is, contains or lies inside a folder the source
 * reads images from, because files written there would overwrite or join the inputs.
 */
function checkOutputsOutsideInputs(stages: readonly ValidatedStage[], issues: SpecIssue[]): void {
  const [source] = stages;
  if (source === undefined || source.definition.kind !== 'source' || source.params === undefined) return;
  // Images lie under the source's folder parameters (a list's `root`), or next to its list
  // file when no folder is given.
  const valuesOf = (kind: PathParameter['kind']): string[] =>
    (source.definition.pathParams ?? [])
      .filter((parameter) => parameter.kind === kind)
      .map((parameter) => (source.params as Record<string, unknown>)[parameter.name])
      .filter((value): value is string => typeof value === 'string');
  const folders = valuesOf('folder');
  const inputs = folders.length > 0 ? folders : valuesOf('file').map((file) => path.dirname(file));
  for (const stage of stages) {
    for (const parameter of stage.definition.pathParams ?? []) {
      if (parameter.kind !== 'output-folder') continue;
      const value = (stage.params as Record<string, unknown> | undefined)?.[parameter.name];
      if (typeof value !== 'string') continue;
      const clash = inputs.find((input) => pathsOverlap(value, input));
      if (clash !== undefined) {
        issues.push({ path: `${stage.path}.params.${parameter.name}`, message: `${value} overlaps ${clash}, which the source reads images from; choose an output folder outside it, so that outputs cannot overwrite or join the inputs` });
      }
    }
  }
}

function sourcesOf(operators: ReadonlyMap<string, OperatorDefinition>): string {
  return [...operators.values()]
    .filter((definition) => definition.kind === 'source')
    .map((definition) => definition.name)
    .join(', ');
}

/** Reads a spec file (`.json`, `.yaml` or `.yml`) and validates it. */
export async function loadPipeline(file: string, options: Omit<ValidateOptions, 'specDir' | 'source'> = {}): Promise<ValidatedPipeline> {
  const absolute = path.resolve(file);
  const text = await readFile(absolute, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new SpecError(absolute, [{ path: '(file)', message: error.code === 'ENOENT' ? 'spec file not found' : `cannot read the spec: ${error.message}` }]);
  });
  let value: unknown;
  if (/\.json$/i.test(absolute)) {
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new SpecError(absolute, [{ path: '(file)', message: `invalid JSON: ${(error as Error).message}` }]);
    }
  } else if (/\.ya?ml$/i.test(absolute)) {
    const document = parseDocument(text, { prettyErrors: true });
    if (document.errors.length > 0) {
      throw new SpecError(
        absolute,
        document.errors.map((error) => ({ path: `line ${error.linePos?.[0].line ?? '?'}`, message: `invalid YAML: ${error.message.split('\n')[0] ?? ''}` })),
      );
    }
    value = document.toJS();
  } else {
    throw new SpecError(absolute, [{ path: '(file)', message: 'unknown spec format; expected a .json, .yaml or .yml file' }]);
  }
  return validatePipeline(value, { ...options, specDir: path.dirname(absolute), source: absolute });
}
