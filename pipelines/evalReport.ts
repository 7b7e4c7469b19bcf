/**
 * The report of an LFW evaluation as files in one folder: `report.html` (self-contained, with
 * the plots and thumbnails embedded as `data:` PNGs) and the plots `roc.png`, `scores.png` and
 * `folds.png`.
 *
 * The metrics come from the pair scores of `runLfwEval`: the ROC curve and the EER over all
 * pairs at their test-fold scores, and VAL@FAR under the k-fold protocol (see
 * `lib/verificationMetrics.ts`). The thumbnails are the aligned crops of the hardest pairs only,
 * decoded and aligned again with the landmarks the evaluation used.
 */
import { constants } from 'node:fs';
import { access, stat, writeFile } from 'node:fs/promises';

import { makeDirectory } from '../lib/makeDirectory.ts';
import path from 'node:path';

import sharp from 'sharp';

import type { LfwPair } from '../datasets/lfw.ts';
import { alignOrReject, resolveAlignSettings, type AlignSettings } from '../lib/alignFace.ts';
import { decodeImage } from '../lib/decodeImage.ts';
import { log } from '../lib/log.ts';
import { renderPng } from '../lib/svgChart.ts';
import { equalErrorRate, rocCurve, valAtFar, type EqualErrorRate, type RocPoint, type ValAtFar } from '../lib/verificationMetrics.ts';
import { initBackend } from '../model/backend.ts';
import { loadMtcnn } from '../model/mtcnn.ts';
import { resolveMtcnnOptions } from '../model/mtcnnDetect.ts';
import { detectFacesIn } from '../operators/detectFaces.ts';
import { isRejected, type DecodedImage, type FivePoints, type ImageRef, type LandmarkedImage } from '../operators/records.ts';
import { foldAccuracySvg, rocPlotSvg, scoreHistogramSvg } from './evalPlots.ts';
import { renderReportHtml } from './evalReportHtml.ts';
import { DETECTED, landmarksFrom, type LfwEvalOptions, type LfwEvalResult } from './lfwEval.ts';

/** The false accept rate at which the report gives VAL (TAR), as facenet's LFW evaluation does. */
export const REPORT_TARGET_FAR = 1e-3;

/** Hardest pairs of each kind that the report shows by default. */
export const DEFAULT_HARDEST_PAIRS = 8;

/** The settings of the evaluation that decide where the thumbnails' landmarks come from. */
export type LandmarkSettings = Pick<LfwEvalOptions, 'landmarks' | 'landmarkOrigin' | 'mtcnnDir' | 'mtcnn' | 'onNoFace' | 'maxPixels'>;

export interface EvalReportOptions {
  /** Output folder; created if missing. */
  readonly dir: string;
  /** The landmark settings the evaluation ran with. */
  readonly landmarks: LandmarkSettings;
  /** Hardest pairs shown of each kind (default 8). */
  readonly hardestPairs?: number;
}

export interface EvalMetrics {
  readonly roc: readonly RocPoint[];
  readonly eer: EqualErrorRate;
  readonly valAtFar: ValAtFar;
}

/** A pair among the hardest of its kind, with the numbers of the fold that tested it. */
export interface HardPair {
  readonly pair: LfwPair;
  /** Score in the pair's test fold. */
  readonly score: number;
  /** Threshold of that fold. */
  readonly threshold: number;
  /** Fold number, from 1. */
  readonly fold: number;
  /** True when the fold's threshold classifies the pair wrongly. */
  readonly misclassified: boolean;
}

export interface HardestPairs {
  /** Different-person pairs with the highest scores, highest first. */
  readonly falseAccepts: readonly HardPair[];
  /** Same-person pairs with the lowest scores, lowest first. */
  readonly falseRejects: readonly HardPair[];
}

/** An aligned crop as a PNG `data:` URL, or why it could not be made. */
export type Thumbnail = { readonly dataUrl: string } | { readonly error: string };

export interface EvalReportFiles {
  readonly html: string;
  readonly roc: string;
  readonly scores: string;
  readonly folds: string;
}

export interface EvalReportResult {
  readonly files: EvalReportFiles;
  readonly metrics: EvalMetrics;
  readonly hardest: HardestPairs;
}

/**
 * Fails before a long run starts if the report folder could not be written afterwards: the path
 * must not be a file, and the folder is created if missing.
 */
export async function prepareReportDir(dir: string): Promise<string> {
  const absolute = path.resolve(dir);
  const existing = await stat(absolute).catch(() => undefined);
  if (existing !== undefined && !existing.isDirectory()) {
    throw new Error(`--html ${absolute} is a file; expected a folder for report.html and the plots`);
  }
  await makeDirectory(absolute, '--html');
  await access(absolute, constants.W_OK);
  return absolute;
}

/** Computes the ROC curve and EER over all pairs and VAL@FAR = `REPORT_TARGET_FAR` over the folds. */
export function computeEvalMetrics(result: Pick<LfwEvalResult, 'pairs' | 'testScores' | 'scoresByFold'>): EvalMetrics {
  const same = result.pairs.map((pair) => pair.same);
  const pairs = { same, scores: result.testScores };
  return {
    roc: rocCurve(pairs),
    eer: equalErrorRate(pairs),
    valAtFar: valAtFar({ same, fold: result.pairs.map((pair) => pair.fold), scoresByFold: result.scoresByFold }, REPORT_TARGET_FAR),
  };
}

/** Selects the `count` different-person pairs with the highest scores and the `count` same-person pairs with the lowest. */
export function selectHardestPairs(result: Pick<LfwEvalResult, 'pairs' | 'testScores' | 'report'>, count: number): HardestPairs {
  const hard = result.pairs.map((pair, p): HardPair => {
    const score = result.testScores[p]!;
    const threshold = result.report.folds[pair.fold]!.threshold;
    return { pair, score, threshold, fold: pair.fold + 1, misclassified: pair.same ? !(score > threshold) : !(score < threshold) };
  });
  return {
    falseAccepts: hard.filter((h) => !h.pair.same).sort((a, b) => b.score - a.score).slice(0, count),
    falseRejects: hard.filter((h) => h.pair.same).sort((a, b) => a.score - b.score).slice(0, count),
  };
}

/** Returns the template and crop size the evaluation aligned with, from its settings, or SphereFace's when they name none. */
function alignmentOf(settings: Record<string, unknown>): AlignSettings {
  const alignment = settings['alignment'];
  if (typeof alignment === 'object' && alignment !== null && 'template' in alignment && 'outputSize' in alignment) {
    const { template, outputSize } = alignment as { template: FivePoints; outputSize: { height: number; width: number } };
    return resolveAlignSettings({ template, outputSize });
  }
  return resolveAlignSettings({});
}

/** Attaches landmarks to a decoded image, or returns why it has none. */
type LandmarkLookup = (image: DecodedImage) => Promise<LandmarkedImage | string>;

/**
 * Opens the landmark source the evaluation used: the landmark file or detections file, or MTCNN
 * with the evaluation's settings. `close` frees the networks.
 */
async function openLandmarks(settings: LandmarkSettings): Promise<{ lookup: LandmarkLookup; close: () => void }> {
  if (settings.landmarks !== DETECTED) {
    const file = settings.landmarks;
    const source = await landmarksFrom(file, settings.landmarkOrigin ?? 'one-based');
    const lookup: LandmarkLookup = async (image) => {
      const landmarks = source.landmarks.get(image.id);
      return landmarks === undefined ? (source.whyMissing.get(image.id) ?? `no landmarks in ${file}`) : { ...image, landmarks };
    };
    return { lookup, close: () => undefined };
  }

  const mtcnn = resolveMtcnnOptions(settings.mtcnn);
  // NOTE: MTCNN runs on TensorFlow.js here, whichever engine the evaluation ran it on. The
  // engines agree closely but not bit for bit, so a crop can differ slightly from the one scored.
  // The evaluation has chosen the backend already, in which case this returns it unchanged.
  await initBackend();
  const nets = await loadMtcnn(settings.mtcnnDir, { lnet: mtcnn.landmarkRefinement === 'lnet' });
  const lookup: LandmarkLookup = async (image) => {
    const [face] = await detectFacesIn(nets, image, { ...mtcnn, policy: 'center', onNoFace: settings.onNoFace ?? 'reject' });
    if (face === undefined) return 'no face';
    return isRejected(face) ? face.reason : face;
  };
  return { lookup, close: () => nets.dispose() };
}

/** Decodes and aligns each image again and encodes the crop as a PNG `data:` URL. One image is in memory at a time. */
async function makeThumbnails(images: readonly ImageRef[], settings: LandmarkSettings, alignment: AlignSettings): Promise<Map<string, Thumbnail>> {
  const thumbnails = new Map<string, Thumbnail>();
  const decodeOptions = settings.maxPixels === undefined ? {} : { maxPixels: settings.maxPixels };
  const landmarks = await openLandmarks(settings);
  try {
    for (const ref of images) {
      const image = await decodeImage(ref, decodeOptions);
      if (isRejected(image)) {
        thumbnails.set(ref.id, { error: image.reason });
        continue;
      }
      const landmarked = await landmarks.lookup(image);
      if (typeof landmarked === 'string') {
        thumbnails.set(ref.id, { error: landmarked });
        continue;
      }
      const face = alignOrReject(landmarked, alignment);
      if (isRejected(face)) {
        thumbnails.set(ref.id, { error: face.reason });
        continue;
      }
      const png = await sharp(face.rgb, { raw: { width: face.width, height: face.height, channels: 3 } }).png({ compressionLevel: 9, adaptiveFiltering: true }).toBuffer();
      thumbnails.set(ref.id, { dataUrl: `data:image/png;base64,${png.toString('base64')}` });
    }
  } finally {
    landmarks.close();
  }

  for (const [id, thumbnail] of thumbnails) {
    if ('error' in thumbnail) log.warn({ id, reason: thumbnail.error }, 'report thumbnail not made');
  }
  return thumbnails;
}

/**
 * Writes `report.html`, `roc.png`, `scores.png` and `folds.png` into `options.dir`.
 *
 * @throws RangeError when `hardestPairs` is not a non-negative integer, and the errors of the
 *   metric functions for scores they cannot rate
 */
export async function writeEvalReport(result: LfwEvalResult, options: EvalReportOptions): Promise<EvalReportResult> {
  const count = options.hardestPairs ?? DEFAULT_HARDEST_PAIRS;
  if (!Number.isSafeInteger(count) || count < 0) {
    throw new RangeError(`hardest pairs must be a non-negative integer, got ${String(count)}`);
  }
  const dir = await prepareReportDir(options.dir);

  const metrics = computeEvalMetrics(result);
  const sameScores: number[] = [];
  const differentScores: number[] = [];
  result.pairs.forEach((pair, p) => (pair.same ? sameScores : differentScores).push(result.testScores[p]!));

  const [roc, scores, folds] = await Promise.all([
    renderPng(rocPlotSvg({ points: metrics.roc, valAtFar: metrics.valAtFar, eer: metrics.eer, pairCount: result.pairs.length })),
    renderPng(scoreHistogramSvg({ sameScores, differentScores, meanThreshold: result.report.meanThreshold })),
    renderPng(foldAccuracySvg(result.report)),
  ]);

  const hardest = selectHardestPairs(result, count);
  const images = new Map<string, ImageRef>();
  for (const { pair } of [...hardest.falseAccepts, ...hardest.falseRejects]) {
    images.set(pair.left.id, pair.left);
    images.set(pair.right.id, pair.right);
  }
  const alignment = alignmentOf(result.settings);
  const thumbnails = await makeThumbnails([...images.values()], options.landmarks, alignment);

  const html = renderReportHtml({ result, metrics, hardest, thumbnails, alignment, plots: { roc, scores, folds } });
  const files: EvalReportFiles = {
    html: path.join(dir, 'report.html'),
    roc: path.join(dir, 'roc.png'),
    scores: path.join(dir, 'scores.png'),
    folds: path.join(dir, 'folds.png'),
  };
  await Promise.all([writeFile(files.html, html), writeFile(files.roc, roc), writeFile(files.scores, scores), writeFile(files.folds, folds)]);
  log.info({ dir, thumbnails: thumbnails.size, htmlBytes: Buffer.byteLength(html) }, 'evaluation report written');
  return { files, metrics, hardest };
}
