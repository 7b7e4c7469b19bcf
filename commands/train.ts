/**
 * `sphereface train`: trains a SphereFace network with a margin head; see `pipelines/train.ts`.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';

import { BACKEND_NAMES, parseBackendName } from '../model/backend.ts';
import { CASIA_LFW_OVERLAP } from '../datasets/training.ts';
import { REFERENCE_SOLVER, type SolverOptions } from '../model/solver.ts';
import type { SphereFaceDepth } from '../model/sphereface.ts';
import { headFromSettings, type TrainingData } from '../pipelines/trainSettings.ts';
import type { StepResult } from '../operators/trainStep.ts';
import { formatTrainingSummary } from '../pipelines/formatReport.ts';

const DEPTHS = ['4', '10', '20', '36', '64'] as const;

function integer(min: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!/^-?[0-9]+$/.test(value.trim()) || !Number.isSafeInteger(parsed) || parsed < min) {
      throw new InvalidArgumentError(`expected an integer ≥ ${min}, got "${value}"`);
    }
    return parsed;
  };
}

function nonNegativeNumber(value: string): number {
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed) || parsed < 0) throw new InvalidArgumentError(`expected a number ≥ 0, got "${value}"`);
  return parsed;
}

function size(value: string): { height: number; width: number } {
  const match = /^([0-9]+)x([0-9]+)$/.exec(value.trim());
  if (match === null) throw new InvalidArgumentError(`expected HEIGHTxWIDTH such as 112x96, got "${value}"`);
  return { height: Number(match[1]), width: Number(match[2]) };
}

function steps(value: string): number[] {
  if (value.trim() === '') return [];
  return value.split(',').map((part) => integer(1)(part.trim()));
}

function names(value: string): string[] {
  return value
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '');
}

interface TrainCommandOptions {
  data?: string;
  list?: string;
  root?: string;
  lfwSplit?: number;
  lfwData?: string;
  minImages?: number;
  exclude?: string[];
  excludeLfwOverlap?: boolean;
  model: string;
  input?: { height: number; width: number };
  head: 'asoftmax' | 'cosface' | 'arcface' | 'softmax';
  margin?: number;
  scale?: number;
  gradient?: 'autograd' | 'reference';
  lambdaBase: number;
  lambdaGamma: number;
  lambdaPower: number;
  lambdaMin: number;
  batch: number;
  accumulate: number;
  lr: number;
  lrSteps: number[];
  iterations: number;
  momentum: number;
  weightDecay: number;
  seed: number;
  mirror: boolean;
  out: string;
  checkpointEvery: number;
  keep: number;
  resume?: boolean;
  timeBudget?: number;
  display: number;
  evaluate?: boolean;
  backend?: string;
  progress: boolean;
}

function trainingData(options: TrainCommandOptions): TrainingData {
  const chosen = [options.data, options.list, options.lfwSplit].filter((v) => v !== undefined).length;
  if (chosen !== 1) throw new InvalidArgumentError('give exactly one of --data DIR, --list FILE or --lfw-split FOLD');
  if (options.evaluate === true && options.lfwSplit === undefined) {
    throw new InvalidArgumentError('--evaluate needs --lfw-split, because only an LFW split has a held-out fold to verify');
  }
  const exclude = [...(options.exclude ?? []), ...(options.excludeLfwOverlap === true ? CASIA_LFW_OVERLAP : [])];
  const excluded = exclude.length === 0 ? {} : { exclude };
  if (options.data !== undefined) return { kind: 'folder', root: options.data, ...excluded };
  if (options.list !== undefined) return { kind: 'list', file: options.list, ...(options.root === undefined ? {} : { root: options.root }), ...excluded };
  const fold = options.lfwSplit as number;
  if (fold < 1 || fold > 10) throw new InvalidArgumentError(`--lfw-split must be a fold from 1 to 10, got ${fold}`);
  return {
    kind: 'lfw-split',
    fold,
    ...(options.lfwData === undefined ? {} : { dataRoot: options.lfwData }),
    ...(options.minImages === undefined ? {} : { minImagesPerIdentity: options.minImages }),
  };
}

/** Formats the progress line drawn on a terminal, overwritten after every step. */
function progressLine(result: StepResult, maxIterations: number): string {
  const lambda = Number.isNaN(result.lambda) ? '' : ` λ ${result.lambda.toFixed(2)}`;
  return (
    `iteration ${result.iteration}/${maxIterations}  loss ${result.loss.toFixed(4)}  acc ${(100 * result.accuracy).toFixed(1)} %` +
    `${lambda}  lr ${result.learningRate}  ${result.imagesPerSecond.toFixed(2)} images/s  epoch ${result.epoch}`
  );
}

export function addTrainCommand(program: Command): void {
  program
    .command('train')
    .description('Train a SphereFace network with A-Softmax (or CosFace/ArcFace) on aligned faces, with exact checkpoint resumption')
    .option('--data <dir>', 'aligned crops, one folder per identity (the CASIA-WebFace layout; crops from sphereface preprocess)')
    .option('--list <file>', 'list file of "path label" lines (split at the last space)')
    .option('--root <dir>', 'with --list: folder that relative paths start from (default: the list file\'s folder)')
    .option('--lfw-split <fold>', 'train on the people of the other nine LFW View 2 folds, hold out this fold (1–10)', integer(1))
    .option('--lfw-data <dir>', 'with --lfw-split: data folder with lfw/ and lfw-meta/ (default: $SPHEREFACE_DATA or ./data)')
    .option('--min-images <n>', 'with --lfw-split: leave out people with fewer images than this', integer(1))
    .option('--exclude <names>', 'identity names to leave out, comma-separated', names)
    .option('--exclude-lfw-overlap', `leave out the CASIA-WebFace identities that also appear in LFW (${CASIA_LFW_OVERLAP.join(', ')}), as the reference does`)
    .addOption(new Option('--model <name>', 'network').choices(DEPTHS.map((d) => `sphereface${d}`)).default('sphereface20'))
    .option('--input <HxW>', 'input size; a size that divides 112x96 shrinks the aligned crops (default 112x96)', size)
    .addOption(new Option('--head <kind>', 'classifier head').choices(['asoftmax', 'cosface', 'arcface', 'softmax']).default('asoftmax'))
    .option('--margin <m>', 'margin: m of A-Softmax (1–4, default 4), or the additive margin of CosFace (0.35) and ArcFace (0.5)', nonNegativeNumber)
    .option('--scale <s>', 'feature scale of CosFace and ArcFace (default 64)', nonNegativeNumber)
    .addOption(new Option('--gradient <mode>', 'A-Softmax gradient: reference (the released Caffe layer\'s) or autograd (the true gradient)').choices(['reference', 'autograd']))
    .option('--lambda-base <v>', 'A-Softmax λ base', nonNegativeNumber, 1000)
    .option('--lambda-gamma <v>', 'A-Softmax λ gamma', nonNegativeNumber, 0.12)
    .option('--lambda-power <v>', 'A-Softmax λ power', nonNegativeNumber, 1)
    .option('--lambda-min <v>', 'A-Softmax λ minimum', nonNegativeNumber, 5)
    .option('--batch <n>', 'images per micro-batch (the reference: 256 on each of 2 GPUs)', integer(1), 256)
    .option('--accumulate <n>', 'micro-batches averaged into one step (2 × 256 gives the reference\'s effective 512)', integer(1), 2)
    .option('--lr <rate>', 'base learning rate', nonNegativeNumber, REFERENCE_SOLVER.baseLr)
    .option('--lr-steps <list>', 'iterations at which the rate is divided by 10, comma-separated', steps, [...REFERENCE_SOLVER.stepValues])
    .option('--iterations <n>', 'last iteration', integer(1), REFERENCE_SOLVER.maxIterations)
    .option('--momentum <m>', 'SGD momentum', nonNegativeNumber, REFERENCE_SOLVER.momentum)
    .option('--weight-decay <d>', 'L2 weight decay', nonNegativeNumber, REFERENCE_SOLVER.weightDecay)
    .option('--seed <n>', 'seed of the initial weights, the shuffles and the mirrors', integer(0), 0)
    .option('--no-mirror', 'do not mirror training images at random')
    .requiredOption('--out <dir>', 'folder for checkpoints and train-log.jsonl')
    .option('--checkpoint-every <n>', 'iterations between checkpoints', integer(1), 1000)
    .option('--keep <n>', 'checkpoints to keep', integer(1), 3)
    .option('--resume', 'continue from the newest valid checkpoint in --out')
    .option('--time-budget <minutes>', 'stop, with a checkpoint, after this many minutes of training', nonNegativeNumber)
    .option('--display <n>', 'log a line every n iterations', integer(1), 10)
    .option('--evaluate', 'with --lfw-split: at the end, verify the held-out fold with the trained and with the initial weights')
    .addOption(new Option('--backend <name>', 'force a tensor backend instead of the fastest that loads').choices([...BACKEND_NAMES]))
    .option('--no-progress', 'do not draw the progress line on a terminal')
    .action(async (options: TrainCommandOptions) => {
      const depth = Number(options.model.replace('sphereface', '')) as SphereFaceDepth;
      const solver: SolverOptions = {
        baseLr: options.lr,
        momentum: options.momentum,
        weightDecay: options.weightDecay,
        gamma: REFERENCE_SOLVER.gamma,
        stepValues: options.lrSteps,
        maxIterations: options.iterations,
      };
      const drawProgress = options.progress && process.stderr.isTTY === true;
      // Loaded here, so that the other commands do not pay for the training code at start-up.
      const { runTraining } = await import('../pipelines/train.ts');
      const summary = await runTraining({
        data: trainingData(options),
        network: { depth, ...(options.input === undefined ? {} : { inputSize: options.input }) },
        head: headFromSettings({
          head: options.head,
          ...(options.margin === undefined ? {} : { margin: options.margin }),
          ...(options.scale === undefined ? {} : { scale: options.scale }),
          ...(options.gradient === undefined ? {} : { gradient: options.gradient }),
          lambda: { base: options.lambdaBase, gamma: options.lambdaGamma, power: options.lambdaPower, min: options.lambdaMin },
        }),
        solver,
        batchSize: options.batch,
        accumulate: options.accumulate,
        seed: options.seed,
        mirror: options.mirror,
        out: options.out,
        checkpointEvery: options.checkpointEvery,
        keep: options.keep,
        resume: options.resume === true,
        display: options.display,
        evaluate: options.evaluate === true,
        ...(options.timeBudget === undefined ? {} : { timeBudgetSeconds: options.timeBudget * 60 }),
        ...(options.backend === undefined ? {} : { backend: parseBackendName(options.backend) }),
        ...(drawProgress ? { onStep: (result: StepResult, max: number) => process.stderr.write(`\r${progressLine(result, max)}\x1b[K`) } : {}),
      });
      if (drawProgress) process.stderr.write('\n');
      process.stdout.write(`${formatTrainingSummary(summary)}\n`);
    });
}
