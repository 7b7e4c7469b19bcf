/**
 * The training operators a pipeline spec can name: the `lfwPeople` source, which lists the
 * images of the people in nine LFW folds, and the terminal `train` stage, which trains a
 * SphereFace network on the aligned faces that reach it.
 */
import { Schema } from 'effect';
import { defer, from, toArray, concatMap, type OperatorFunction } from 'rxjs';

import { readPairs } from '../datasets/lfw.ts';
import { lfwPeopleSplit, trainingSetFromImages } from '../datasets/training.ts';
import { lfwPaths } from '../lib/paths.ts';
import { REFERENCE_SOLVER } from '../model/solver.ts';
import { SPHEREFACE_DEPTHS, type SphereFaceDepth } from '../model/sphereface.ts';
import { isRejected, type AlignedFace, type Maybe, type Rejected } from '../operators/records.ts';
import { defineSource, defineStage, type OpenedStage } from './operatorDefinition.ts';
import { headFromSettings, REFERENCE_LAMBDA } from './trainSettings.ts';

const PositiveInt = Schema.Int.pipe(Schema.positive());
const NonNegative = Schema.Number.pipe(Schema.nonNegative());

const lfwPeople = defineSource({
  name: 'lfwPeople',
  description: 'every image of the people in the LFW View 2 folds other than `testFold`, to train on LFW itself',
  params: Schema.Struct({
    testFold: Schema.Int.pipe(Schema.between(1, 10)),
    minImagesPerIdentity: Schema.optionalWith(PositiveInt, { default: () => 1 }),
    root: Schema.optional(Schema.String),
    pairs: Schema.optional(Schema.String),
  }),
  pathParams: [
    { name: 'root', kind: 'folder' },
    { name: 'pairs', kind: 'file' },
  ],
  output: 'ImageRef',
  open: async (params) => {
    const defaults = lfwPaths();
    const pairs = await readPairs(params.pairs ?? defaults.pairs, { imagesDir: params.root ?? defaults.images });
    const split = await lfwPeopleSplit(pairs, params.testFold, { minImagesPerIdentity: params.minImagesPerIdentity });
    return split.train.samples.map((sample) => ({ id: sample.id, path: sample.path }));
  },
});

const Size = Schema.Tuple(PositiveInt, PositiveInt);

const TrainParams = Schema.Struct({
  /** Folder for checkpoints and `train-log.jsonl`. */
  out: Schema.String,
  model: Schema.optionalWith(Schema.Literal(...SPHEREFACE_DEPTHS.map((d) => `sphereface${d}` as const)), { default: () => 'sphereface20' as const }),
  /** [height, width]; a size that divides 112×96 shrinks the crops. */
  input: Schema.optional(Size),
  head: Schema.optionalWith(Schema.Literal('asoftmax', 'cosface', 'arcface', 'softmax'), { default: () => 'asoftmax' as const }),
  margin: Schema.optional(NonNegative),
  scale: Schema.optional(NonNegative),
  gradient: Schema.optional(Schema.Literal('reference', 'autograd')),
  lambda: Schema.optionalWith(Schema.Struct({ base: NonNegative, gamma: NonNegative, power: NonNegative, min: NonNegative }), { default: () => ({ ...REFERENCE_LAMBDA }) }),
  batchSize: Schema.optionalWith(PositiveInt, { default: () => 256 }),
  accumulate: Schema.optionalWith(PositiveInt, { default: () => 2 }),
  lr: Schema.optionalWith(NonNegative, { default: () => REFERENCE_SOLVER.baseLr }),
  lrSteps: Schema.optionalWith(Schema.Array(PositiveInt), { default: () => [...REFERENCE_SOLVER.stepValues] }),
  iterations: Schema.optionalWith(PositiveInt, { default: () => REFERENCE_SOLVER.maxIterations }),
  momentum: Schema.optionalWith(NonNegative, { default: () => REFERENCE_SOLVER.momentum }),
  weightDecay: Schema.optionalWith(NonNegative, { default: () => REFERENCE_SOLVER.weightDecay }),
  seed: Schema.optionalWith(Schema.Int, { default: () => 0 }),
  mirror: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  checkpointEvery: Schema.optionalWith(PositiveInt, { default: () => 1000 }),
  keep: Schema.optionalWith(PositiveInt, { default: () => 3 }),
  /** Continue from the newest checkpoint in `out` when there is one (default true, so a rerun goes on where the last stopped). */
  resume: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  timeBudgetMinutes: Schema.optional(NonNegative),
});

const train = defineStage({
  name: 'train',
  description: 'train a SphereFace network on the aligned faces (labels from each id\'s identity folder), with checkpoints in `out`',
  params: TrainParams,
  pathParams: [{ name: 'out', kind: 'output-folder' }],
  input: 'AlignedFace',
  output: 'TrainingSummary',
  version: 1,
  shape: 'terminal',
  usesTensors: true,
  check: (params) => {
    try {
      headFromSettings({ head: params.head, ...(params.margin === undefined ? {} : { margin: params.margin }) });
      return undefined;
    } catch (error) {
      return error instanceof Error ? error.message : String(error);
    }
  },
  open: async (params, context) => {
    const operator: OperatorFunction<Maybe<AlignedFace>, unknown> = (source) =>
      source.pipe(
        toArray(),
        concatMap((records) =>
          defer(() => {
            const faces = records.filter((r): r is AlignedFace => !isRejected(r));
            const crops = new Map<string, Uint8Array | Rejected>(faces.map((face) => [face.id, face.rgb]));
            const set = trainingSetFromImages(`the aligned faces of this pipeline (${faces.length})`, faces);
            return from(
              import('./train.ts').then(({ runTraining }) =>
                runTraining({
                  data: { kind: 'prepared', set, crops },
                  network: { depth: Number(params.model.replace('sphereface', '')) as SphereFaceDepth, ...(params.input === undefined ? {} : { inputSize: { height: params.input[0], width: params.input[1] } }) },
                  head: headFromSettings({
                    head: params.head,
                    lambda: params.lambda,
                    ...(params.margin === undefined ? {} : { margin: params.margin }),
                    ...(params.scale === undefined ? {} : { scale: params.scale }),
                    ...(params.gradient === undefined ? {} : { gradient: params.gradient }),
                  }),
                  solver: {
                    baseLr: params.lr,
                    momentum: params.momentum,
                    weightDecay: params.weightDecay,
                    gamma: REFERENCE_SOLVER.gamma,
                    stepValues: params.lrSteps,
                    maxIterations: params.iterations,
                  },
                  batchSize: params.batchSize,
                  accumulate: params.accumulate,
                  seed: params.seed,
                  mirror: params.mirror,
                  out: params.out,
                  checkpointEvery: params.checkpointEvery,
                  keep: params.keep,
                  resume: params.resume,
                  ...(params.timeBudgetMinutes === undefined ? {} : { timeBudgetSeconds: params.timeBudgetMinutes * 60 }),
                  ...(context.backend === undefined ? {} : { backend: context.backend }),
                }),
              ),
            );
          }),
        ),
      );
    return { operator: operator as OpenedStage['operator'] };
  },
});

/** The training operators, added to the built-in ones. */
export const TRAINING_OPERATORS = [lfwPeople, train] as const;
