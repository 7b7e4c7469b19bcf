/**
 * The `sphereface` command. It parses arguments, runs a pipeline and prints the result; the
 * work itself lives in `pipelines/`.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { log } from './lib/log.ts';
import { dataRoot, lfwPaths } from './lib/paths.ts';
import { BACKEND_NAMES, parseBackendName } from './model/backend.ts';
import { formatFoldTable, formatSummary } from './pipelines/formatReport.ts';
import { runLfwEval } from './pipelines/lfwEval.ts';

function positiveInteger(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new InvalidArgumentError(`expected a positive integer, got "${value}"`);
  return parsed;
}

const program = new Command()
  .name('sphereface')
  .description('SphereFace face recognition: alignment, feature extraction and LFW verification')
  .showHelpAfterError();

program
  .command('eval')
  .description('Run the 10-fold LFW verification protocol with a pretrained model and print the per-fold table')
  .addOption(new Option('--dataset <name>', 'benchmark to run').choices(['lfw']).default('lfw'))
  .requiredOption('--model <spec>', 'model as NAME:PATH, e.g. mobilefacenet:models/068.ckpt')
  .option('--data <dir>', 'data folder with lfw/ and lfw-meta/ (default: $SPHEREFACE_DATA or ./data)')
  .option('--root <dir>', 'LFW images folder, Name/Name_0001.jpg (default: <data>/lfw)')
  .option('--pairs <file>', 'View 2 pairs file (default: <data>/lfw-meta/pairs.txt)')
  .option('--landmarks <file>', 'five landmarks per image, 1-based (default: <data>/lfw-meta/lfw_landmark.txt)')
  .option('--report <file>', 'also write the results, settings, backend and timings as JSON')
  .option('--batch-size <n>', 'faces per forward pass; the mirrors double it', positiveInteger, 32)
  .addOption(new Option('--backend <name>', 'force a tensor backend instead of the fastest that loads').choices([...BACKEND_NAMES]))
  .option('--no-progress', 'log progress lines instead of drawing a bar, even on a terminal')
  .action(async (options: {
    dataset: string;
    model: string;
    data?: string;
    root?: string;
    pairs?: string;
    landmarks?: string;
    report?: string;
    batchSize: number;
    backend?: string;
    progress: boolean;
  }) => {
    const defaults = lfwPaths(options.data === undefined ? dataRoot() : path.resolve(options.data));
    const result = await runLfwEval({
      images: path.resolve(options.root ?? defaults.images),
      pairs: path.resolve(options.pairs ?? defaults.pairs),
      landmarks: path.resolve(options.landmarks ?? defaults.landmarks),
      model: options.model,
      batchSize: options.batchSize,
      ...(options.backend === undefined ? {} : { backend: parseBackendName(options.backend) }),
      ...(options.progress ? {} : { progressBar: false }),
    });

    const { report, timings } = result;
    process.stdout.write(`\nLFW ${result.counts.pairs} pairs, ${report.folds.length}-fold verification, ${String(result.settings['modelName'])} on ${result.backend.name}\n\n`);
    process.stdout.write(`${formatFoldTable(report)}\n\n${formatSummary(report)}\n`);
    log.info(
      {
        wallSeconds: Number(timings.wallSeconds.toFixed(1)),
        imagesPerSecond: Number(timings.imagesPerSecond.toFixed(1)),
        forwardImagesPerSecond: Number(timings.forwardImagesPerSecond.toFixed(1)),
      },
      'evaluation finished',
    );

    if (options.report !== undefined) {
      const json = {
        mean: report.mean,
        std: report.std,
        folds: report.folds.map((f) => ({ fold: f.fold, accuracy: f.accuracy, threshold: f.threshold, correct: f.correct, total: f.total })),
        correct: report.correct,
        total: report.total,
        meanThreshold: report.meanThreshold,
        settings: result.settings,
        backend: { name: result.backend.name, threads: result.backend.threads },
        counts: result.counts,
        timings,
        node: process.version,
        finishedAt: new Date().toISOString(),
      };
      await writeFile(options.report, `${JSON.stringify(json, null, 2)}\n`);
      log.info({ file: path.resolve(options.report) }, 'report written');
    }
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  const message = error instanceof Error ? error.message : String(error);
  log.error(message);
  if (process.env['SPHEREFACE_DEBUG'] && error instanceof Error) log.error(error.stack ?? '');
  process.exitCode = 1;
}
