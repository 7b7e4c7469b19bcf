/**
 * `sphereface export`: writes a network as a saved-model folder (see `model/savedModel.ts`),
 * optionally with the verification threshold of an LFW evaluation.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { InvalidArgumentError, Option, type Command } from 'commander';

import { hashFile } from '../lib/artifactCache.ts';
import { log } from '../lib/log.ts';
import { knownWeights } from '../model/knownWeights.ts';
import { initBackend } from '../model/backend.ts';
import { loadNetwork, type LoadedNetwork } from '../model/loadModel.ts';
import { ALIGNMENTS, saveModel, type Alignment, type ModelManifest } from '../model/savedModel.ts';

interface ExportCommandOptions {
  model: string;
  out: string;
  alignment?: Alignment;
  threshold?: number;
  thresholdFrom?: string;
  note?: string;
}

function cosineThreshold(value: string): number {
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed) || parsed < -1 || parsed > 1) {
    throw new InvalidArgumentError(`expected a cosine similarity from -1 to 1, got "${value}"`);
  }
  return parsed;
}

/** Pairs in LFW View 2's `pairs.txt`. */
const LFW_VIEW2_PAIRS = 6000;

/** The fields of an eval report (`sphereface eval --report`) that the threshold comes from. */
interface EvalReportThreshold {
  readonly meanThreshold: number;
  readonly mean: number;
  readonly folds: number;
  readonly modelName: string;
  readonly model: string;
}

/**
 * Reads the threshold of an eval report. Only a threshold computed without mean subtraction is
 * accepted, because with it the cosine is taken after subtracting the mean feature of the
 * training folds, so the value does not apply to two faces compared on their own.
 * @throws Error naming the file and the field that is missing or unusable.
 */
export async function readEvalReportThreshold(file: string): Promise<EvalReportThreshold> {
  let report: unknown;
  try {
    report = JSON.parse(await readFile(file, 'utf8')) as unknown;
  } catch (error) {
    throw new Error(`cannot read the eval report ${file}: ${(error as Error).message}`, { cause: error });
  }
  const field = (value: unknown, name: string, kind: 'number' | 'string' | 'boolean'): unknown => {
    if (typeof value !== kind) throw new Error(`eval report ${file}: field "${name}" is ${JSON.stringify(value) ?? 'missing'}, expected a ${kind}; pass a file written by sphereface eval --report`);
    return value;
  };
  const root = (typeof report === 'object' && report !== null ? report : {}) as Record<string, unknown>;
  const settings = (typeof root['settings'] === 'object' && root['settings'] !== null ? root['settings'] : {}) as Record<string, unknown>;
  const protocol = (typeof settings['protocol'] === 'object' && settings['protocol'] !== null ? settings['protocol'] : {}) as Record<string, unknown>;

  const subtractMean = field(protocol['subtractMean'], 'settings.protocol.subtractMean', 'boolean');
  if (subtractMean === true) {
    throw new Error(
      `eval report ${file} was computed with mean subtraction (settings.protocol.subtractMean is true), so its thresholds compare features after subtracting ` +
        'the mean feature of the training folds and do not apply to two faces on their own. Rerun sphereface eval with --no-subtract-mean and pass that report',
    );
  }
  // A threshold "the model scored on LFW" must come from the whole View 2 protocol.
  const counts = (typeof root['counts'] === 'object' && root['counts'] !== null ? root['counts'] : {}) as Record<string, unknown>;
  const pairs = field(counts['pairs'], 'counts.pairs', 'number') as number;
  if (pairs !== LFW_VIEW2_PAIRS) {
    throw new Error(
      `eval report ${file} scored ${pairs} pairs, not the ${LFW_VIEW2_PAIRS} pairs of LFW View 2, so its threshold is not the model's LFW threshold; ` +
        'rerun sphereface eval on the full pairs.txt, or give the value with --threshold',
    );
  }
  return {
    meanThreshold: field(root['meanThreshold'], 'meanThreshold', 'number') as number,
    mean: field(root['mean'], 'mean', 'number') as number,
    folds: field(protocol['folds'], 'settings.protocol.folds', 'number') as number,
    modelName: field(settings['modelName'], 'settings.modelName', 'string') as string,
    model: field(settings['model'], 'settings.model', 'string') as string,
  };
}

/** Describes where the weights came from. A saved model keeps its recorded source, and `note` replaces its note. */
async function manifestSource(loaded: LoadedNetwork, note: string | undefined): Promise<ModelManifest['source']> {
  const withNote = note === undefined ? {} : { note };
  const origin = loaded.origin;
  if (origin === undefined) return { ...(loaded.manifest as ModelManifest).source, ...withNote };
  if (origin.kind === 'random') return { kind: 'random', seed: origin.seed ?? 0, ...withNote };
  const file = origin.file as string;
  return { kind: origin.kind, file: path.basename(file), sha256: await hashFile(file), ...withNote };
}

export function addExportCommand(program: Command): void {
  program
    .command('export')
    .description('Write a network as a saved-model folder: TensorFlow.js weights plus a manifest with its input, alignment, threshold and source')
    .requiredOption('--model <spec>', 'network as NAME:PATH (PyTorch .pth, Caffe .caffemodel for SphereFace, training checkpoint .sfc), NAME:random[:SEED], or a saved-model folder')
    .requiredOption('--out <dir>', 'new or empty folder to write manifest.json, model.json and the weight shards into')
    .addOption(new Option('--alignment <template>', 'alignment template of the crops the network takes (default: the saved model\'s, else sphereface-112x96)').choices([...ALIGNMENTS]))
    .addOption(new Option('--threshold <cosine>', 'verification threshold to record, a cosine similarity from -1 to 1').argParser(cosineThreshold).conflicts('thresholdFrom'))
    .option('--threshold-from <report.json>', 'record the mean threshold and accuracy of a sphereface eval --report file that was run with --no-subtract-mean')
    .option('--note <text>', 'free text to record about where the weights came from')
    .action(async (options: ExportCommandOptions) => {
      await initBackend();
      const loaded = await loadNetwork(options.model);
      try {
        let threshold: ModelManifest['threshold'];
        if (options.threshold !== undefined) {
          threshold = { value: options.threshold, protocol: 'given with sphereface export --threshold, not measured here' };
        } else if (options.thresholdFrom !== undefined) {
          const report = await readEvalReportThreshold(options.thresholdFrom);
          if (report.modelName !== loaded.network.name) {
            throw new Error(`eval report ${options.thresholdFrom} evaluated ${report.modelName} (${report.model}), but --model ${options.model} is ${loaded.network.name}; pass the report of this network's evaluation`);
          }
          if (report.model !== options.model) log.warn({ report: report.model, model: options.model }, 'the eval report names another model spec; check that it evaluated these weights');
          threshold = {
            value: report.meanThreshold,
            protocol: `LFW View 2, ${report.folds}-fold, cosine of image+mirror features without mean subtraction`,
            lfwAccuracy: report.mean,
          };
        } else if (loaded.manifest?.threshold !== undefined) {
          threshold = loaded.manifest.threshold;
        } else if (loaded.origin?.file !== undefined) {
          // A published weights file whose LFW threshold was measured here keeps it.
          threshold = (await knownWeights(loaded.origin.file))?.threshold;
        }

        const out = path.resolve(options.out);
        const manifest = await saveModel(out, loaded.network, {
          alignment: options.alignment ?? loaded.manifest?.alignment ?? 'sphereface-112x96',
          source: await manifestSource(loaded, options.note),
          ...(threshold === undefined ? {} : { threshold }),
        });
        process.stdout.write(`${manifest.architecture} written to ${out}\n`);
        log.info({ out, architecture: manifest.architecture, threshold: manifest.threshold?.value, source: manifest.source.kind }, 'model exported');
      } finally {
        loaded.network.dispose();
      }
    });
}
