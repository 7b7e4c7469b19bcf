/**
 * The `sphereface` command line: every command, its options and its action. `cli.ts` parses
 * `process.argv` with it; tests build a fresh one to check command lines without running them.
 */
import { constants } from 'node:fs';
import { access, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { log } from '../lib/log.ts';
import { makeDirectory } from '../lib/makeDirectory.ts';
import { dataRoot, lfwPaths } from '../lib/paths.ts';
import { BACKEND_NAMES, parseBackendName } from '../model/backend.ts';
import { formatFoldTable, formatSummary } from '../pipelines/formatReport.ts';
import { DETECTED, runLfwEval, type LfwEvalOptions } from '../pipelines/lfwEval.ts';
import { DEFAULT_HARDEST_PAIRS, prepareReportDir, writeEvalReport } from '../pipelines/evalReport.ts';
import { runPreprocess } from '../pipelines/preprocess.ts';
import { readImageFolder, readImageList } from '../datasets/imageFolder.ts';
import type { FacePolicy, NoFacePolicy } from '../operators/detectFaces.ts';
import type { LandmarkRefinement } from '../model/mtcnnDetect.ts';
import { addRunCommand } from './run.ts';
import { ENGINE_NAMES, type EngineName } from '../model/engine.ts';
import { addCacheCommands } from './cache.ts';
import { addTrainCommand } from './train.ts';
import { addEmbedCommand } from './embed.ts';
import { addVerifyCommand } from './verify.ts';
import { addFetchCommand } from './fetch.ts';
import { addExportCommand } from './export.ts';

function positiveInteger(value: string): number {
  const parsed = Number(value);
  if (!/^[0-9]+$/.test(value.trim()) || !Number.isSafeInteger(parsed) || parsed < 1) {
    throw new InvalidArgumentError(`expected a positive integer in decimal digits, got "${value}"`);
  }
  return parsed;
}

function nonNegativeInteger(value: string): number {
  const parsed = Number(value);
  if (!/^[0-9]+$/.test(value.trim()) || !Number.isSafeInteger(parsed)) {
    throw new InvalidArgumentError(`expected a non-negative integer in decimal digits, got "${value}"`);
  }
  return parsed;
}

/**
 * Fails before a long run starts if its report could not be written afterwards: the path must
 * not be a folder, and its folder is created if missing.
 */
async function prepareReportPath(file: string): Promise<string> {
  const absolute = path.resolve(file);
  const existing = await stat(absolute).catch(() => undefined);
  if (existing?.isDirectory()) throw new Error(`--report ${absolute} is a directory; expected a file name such as ${path.join(absolute, 'report.json')}`);
  await makeDirectory(path.dirname(absolute), '--report');
  await access(path.dirname(absolute), constants.W_OK);
  return absolute;
}

/** Builds the `sphereface` program with all its commands. Each call returns a new one. */
export function buildProgram(): Command {
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
    .option(
      '--landmarks <file|detected>',
      'five landmarks per image, 1-based: a landmark file, a detections file from preprocess (.jsonl), or "detected" to run MTCNN (default: <data>/lfw-meta/lfw_landmark.txt)',
    )
    .addOption(new Option('--on-no-face <action>', 'with --landmarks detected: reject an image without a face, or substitute a centred crop').choices(['reject', 'center-crop']).default('reject'))
    .option('--mtcnn <dir>', 'with --landmarks detected: folder with det1–det4.caffemodel (default: $SPHEREFACE_MODELS/mtcnn)')
    .addOption(new Option('--refine-landmarks <net>', 'with --landmarks detected: none (MTCNNv1, as SphereFace) or lnet (MTCNNv2 landmark refinement)').choices(['none', 'lnet']).default('none'))
    .addOption(
      new Option('--landmark-origin <origin>', 'how to read a landmark file: one-based (Matlab, as the reference evaluation reads lfw_landmark.txt) or zero-based')
        .choices(['one-based', 'zero-based'])
        .default('one-based'),
    )
    .option('--report <file>', 'also write the results, settings, backend and timings as JSON')
    .option('--html <dir>', 'also write report.html (self-contained, with TAR at FAR = 1e-3, EER, plots and the hardest pairs) and roc.png, scores.png, folds.png into this folder')
    .option('--hardest-pairs <n>', 'with --html: how many worst false accepts and worst false rejects to show', nonNegativeInteger, DEFAULT_HARDEST_PAIRS)
    .option('--batch-size <n>', 'faces per forward pass; the mirrors double it', positiveInteger, 32)
    .option('--max-pixels <n>', 'reject images with more pixels than this before decoding them', positiveInteger, 50_000_000)
    .addOption(new Option('--backend <name>', 'force a tensor backend instead of the fastest that loads').choices([...BACKEND_NAMES]))
    .addOption(
      new Option('--engine <name>', 'run the network, and MTCNN with --landmarks detected, on ONNX Runtime or TensorFlow.js (default: ONNX Runtime for the network when it exports to it, TensorFlow.js for MTCNN)').choices([
        ...ENGINE_NAMES,
      ]),
    )
    .option('--cache <dir>', 'artifact cache folder: reuse the features of images, landmarks and model that are unchanged')
    .option('--no-subtract-mean', 'score pairs by the plain cosine of their features, without subtracting the mean feature of the training folds; its thresholds apply to single pairs, so sphereface export --threshold-from accepts them')
    .option('--no-progress', 'log progress lines instead of drawing a bar, even on a terminal')
    .action(async (options: {
      dataset: string;
      cache?: string;
      model: string;
      data?: string;
      root?: string;
      pairs?: string;
      landmarks?: string;
      onNoFace: NoFacePolicy;
      mtcnn?: string;
      refineLandmarks: LandmarkRefinement;
      landmarkOrigin: 'one-based' | 'zero-based';
      report?: string;
      html?: string;
      hardestPairs: number;
      batchSize: number;
      maxPixels: number;
      backend?: string;
      engine?: EngineName;
      subtractMean: boolean;
      progress: boolean;
    }) => {
      const defaults = lfwPaths(options.data === undefined ? dataRoot() : path.resolve(options.data));
      const reportFile = options.report === undefined ? undefined : await prepareReportPath(options.report);
      const htmlDir = options.html === undefined ? undefined : await prepareReportDir(options.html);
      const evalOptions: LfwEvalOptions = {
        images: path.resolve(options.root ?? defaults.images),
        pairs: path.resolve(options.pairs ?? defaults.pairs),
        landmarks: options.landmarks === DETECTED ? DETECTED : path.resolve(options.landmarks ?? defaults.landmarks),
        onNoFace: options.onNoFace,
        mtcnn: { landmarkRefinement: options.refineLandmarks },
        landmarkOrigin: options.landmarkOrigin,
        ...(options.mtcnn === undefined ? {} : { mtcnnDir: options.mtcnn }),
        model: options.model,
        batchSize: options.batchSize,
        maxPixels: options.maxPixels,
        ...(options.cache === undefined ? {} : { cacheDir: path.resolve(options.cache) }),
        ...(options.backend === undefined ? {} : { backend: parseBackendName(options.backend) }),
        ...(options.engine === undefined ? {} : { engine: options.engine }),
        subtractMean: options.subtractMean,
        ...(options.progress ? {} : { progressBar: false }),
      };
      const result = await runLfwEval(evalOptions);

      const { report, timings } = result;
      const engine = result.settings['engine'] === 'onnx' ? 'ONNX Runtime' : result.backend.name;
      process.stdout.write(`\nLFW ${result.counts.pairs} pairs, ${report.folds.length}-fold verification, ${String(result.settings['modelName'])} on ${engine}\n\n`);
      process.stdout.write(`${formatFoldTable(report)}\n\n${formatSummary(report)}\n`);
      log.info(
        {
          wallSeconds: Number(timings.wallSeconds.toFixed(1)),
          imagesPerSecond: Number(timings.imagesPerSecond.toFixed(1)),
          forwardImagesPerSecond: Number(timings.forwardImagesPerSecond.toFixed(1)),
        },
        'evaluation finished',
      );

      if (reportFile !== undefined) {
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
        await writeFile(reportFile, `${JSON.stringify(json, null, 2)}\n`);
        log.info({ file: reportFile }, 'report written');
      }
      if (htmlDir !== undefined) {
        const written = await writeEvalReport(result, { dir: htmlDir, landmarks: evalOptions, hardestPairs: options.hardestPairs });
        const { valAtFar, eer } = written.metrics;
        process.stdout.write(
          `TAR ${(100 * valAtFar.val).toFixed(2)} ± ${(100 * valAtFar.valStd).toFixed(2)} % at FAR = 1e-3, EER ${(100 * eer.rate).toFixed(2)} %\n` +
            `report: ${written.files.html}\n`,
        );
      }
    });

  function probability(value: string): number {
    const parsed = Number(value);
    if (value.trim() === '' || !Number.isFinite(parsed) || parsed < 0 || parsed > 1) {
      throw new InvalidArgumentError(`expected a number from 0 to 1, got "${value}"`);
    }
    return parsed;
  }

  function pyramidFactor(value: string): number {
    const parsed = Number(value);
    if (value.trim() === '' || !Number.isFinite(parsed) || parsed <= 0 || parsed >= 1) {
      throw new InvalidArgumentError(`expected a number strictly between 0 and 1, got "${value}"`);
    }
    return parsed;
  }

  function thresholds(value: string): [number, number, number] {
    const parts = value.split(',').map((part) => part.trim());
    if (parts.length !== 3) throw new InvalidArgumentError(`expected three comma-separated numbers (P-Net,R-Net,O-Net), got "${value}"`);
    return parts.map(probability) as [number, number, number];
  }

  program
    .command('preprocess')
    .description('Detect faces with MTCNN and write aligned 112×96 crops as PNG, plus a detections file')
    .addOption(new Option('--dataset <kind>', 'lfw (the LFW people folder), folder (one subfolder per identity) or list (a list file)').choices(['lfw', 'folder', 'list']).default('folder'))
    .option('--root <dir>', 'images folder (default for lfw: <data>/lfw); for list, paths are relative to it')
    .option('--list <file>', 'list file for --dataset list: one image path per line, optionally followed by a label')
    .option('--data <dir>', 'data folder for --dataset lfw (default: $SPHEREFACE_DATA or ./data)')
    .requiredOption('--out <dir>', 'folder for the crops; each goes to <out>/<image path without extension>.png')
    .option('--detections <file>', 'detections file to write (default: <out>/detections.jsonl)')
    .option('--min-size <pixels>', 'smallest face side MTCNN looks for', positiveInteger, 20)
    .option('--factor <ratio>', 'scale ratio between pyramid levels, strictly between 0 and 1', pyramidFactor, 0.85)
    .option('--thresholds <p,r,o>', 'face-probability thresholds of P-Net, R-Net and O-Net', thresholds, [0.6, 0.7, 0.9] as [number, number, number])
    .addOption(new Option('--policy <policy>', 'center: the face nearest the image centre; all: every face').choices(['center', 'all']).default('center'))
    .addOption(new Option('--on-no-face <action>', 'reject the image, or substitute a centred crop').choices(['reject', 'center-crop']).default('reject'))
    .option('--mtcnn <dir>', 'folder with det1–det4.caffemodel (default: $SPHEREFACE_MODELS/mtcnn)')
    .addOption(new Option('--refine-landmarks <net>', 'none (MTCNNv1, as SphereFace) or lnet (MTCNNv2 landmark refinement with det4)').choices(['none', 'lnet']).default('none'))
    .option('--max-pixels <n>', 'reject images with more pixels than this before decoding them', positiveInteger, 50_000_000)
    .addOption(new Option('--backend <name>', 'force a tensor backend instead of the fastest that loads').choices([...BACKEND_NAMES]))
    .addOption(new Option('--engine <name>', 'run MTCNN on ONNX Runtime or TensorFlow.js (default: TensorFlow.js, or ONNX Runtime if it fails to start)').choices([...ENGINE_NAMES]))
    .option('--no-progress', 'log progress lines instead of drawing a bar, even on a terminal')
    .action(async (options: {
      dataset: 'lfw' | 'folder' | 'list';
      maxPixels: number;
      refineLandmarks: LandmarkRefinement;
      root?: string;
      list?: string;
      data?: string;
      out: string;
      detections?: string;
      minSize: number;
      factor: number;
      thresholds: [number, number, number];
      policy: FacePolicy;
      onNoFace: NoFacePolicy;
      mtcnn?: string;
      backend?: string;
      engine?: EngineName;
      progress: boolean;
    }) => {
      let images;
      let imageRoot: string;
      if (options.dataset === 'list') {
        if (options.list === undefined) throw new InvalidArgumentError('--dataset list needs --list FILE');
        images = await readImageList(options.list, options.root);
        imageRoot = path.resolve(options.root ?? path.dirname(options.list));
      } else {
        let root = options.root;
        if (root === undefined && options.dataset === 'lfw') {
          const data = options.data === undefined ? dataRoot() : path.resolve(options.data);
          root = lfwPaths(data).images;
        }
        if (root === undefined) throw new InvalidArgumentError('--dataset folder needs --root DIR');
        images = await readImageFolder(root);
        imageRoot = path.resolve(root);
      }
      log.info({ images: images.length, dataset: options.dataset }, 'images listed');

      const summary = await runPreprocess({
        images,
        imageRoots: [imageRoot],
        out: path.resolve(options.out),
        ...(options.detections === undefined ? {} : { detections: options.detections }),
        mtcnn: { minSize: options.minSize, factor: options.factor, thresholds: options.thresholds, landmarkRefinement: options.refineLandmarks },
        ...(options.mtcnn === undefined ? {} : { mtcnnDir: options.mtcnn }),
        policy: options.policy,
        onNoFace: options.onNoFace,
        maxPixels: options.maxPixels,
        ...(options.backend === undefined ? {} : { backend: parseBackendName(options.backend) }),
        ...(options.engine === undefined ? {} : { engine: options.engine }),
        ...(options.progress ? {} : { progressBar: false }),
      });

      const reasons = new Map<string, number>();
      for (const rejection of summary.rejected) {
        // Reasons name the file; leave it out so that equal reasons are counted together.
        const reason = (rejection.reason.split('\n')[0] ?? '').replaceAll(rejection.path, '<image>');
        const key = `${rejection.stage}: ${reason}`;
        reasons.set(key, (reasons.get(key) ?? 0) + 1);
      }
      process.stdout.write(
        `\n${summary.images} images: ${summary.withFace} with a face, ${summary.crops} crops written, ` +
          `${summary.substituted} centred crops substituted, ${summary.rejected.length} rejected\n`,
      );
      for (const [reason, count] of reasons) process.stdout.write(`  rejected ${count}× ${reason}\n`);
      process.stdout.write(`detections: ${summary.detectionsFile}\n`);
      log.info({ seconds: Number(summary.seconds.toFixed(1)), imagesPerSecond: Number((summary.images / summary.seconds).toFixed(1)) }, 'preprocess finished');
    });

  addRunCommand(program, prepareReportPath);
  addCacheCommands(program);
  addTrainCommand(program);
  addEmbedCommand(program);
  addVerifyCommand(program);
  addFetchCommand(program);
  addExportCommand(program);

  return program;
}
