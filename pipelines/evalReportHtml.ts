/**
 * The HTML page of the evaluation report. It is one self-contained file: the styles are inline,
 * the plots and thumbnails are `data:` PNGs, and it needs no JavaScript.
 */
import type { AlignSettings } from '../lib/alignFace.ts';
import { escapeXml } from '../lib/svgChart.ts';
import type { EvalMetrics, HardestPairs, HardPair, Thumbnail } from './evalReport.ts';
import type { LfwEvalResult } from './lfwEval.ts';

export interface ReportHtmlInput {
  readonly result: LfwEvalResult;
  readonly metrics: EvalMetrics;
  readonly hardest: HardestPairs;
  readonly thumbnails: ReadonlyMap<string, Thumbnail>;
  readonly alignment: AlignSettings;
  readonly plots: { readonly roc: Buffer; readonly scores: Buffer; readonly folds: Buffer };
  /** Time shown as the report's date; default now. */
  readonly createdAt?: Date;
}

const STYLE = `
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: middle; }
th { background: #f2f2f2; }
.settings td { text-align: left; } .settings td:first-child { font-weight: bold; white-space: nowrap; }
.headline { font-size: 1.15em; } .headline td:first-child { text-align: left; }
.pair td { text-align: center; } .pair img { display: block; margin: 0 auto 0.2em; }
.name { font-size: 0.85em; } .wrong { color: #b00; font-weight: bold; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
code { font-size: 0.9em; }
`;

const percent = (value: number): string => `${(100 * value).toFixed(2)}`;

/** Formats a table cell that shows `text` and keeps the exact number in `data-value`. */
function numberCell(value: number, text: string): string {
  return `<td data-value="${value}">${escapeXml(text)}</td>`;
}

function describe(value: unknown): string {
  if (value === undefined) return '—';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function settingsTable(result: LfwEvalResult, alignment: AlignSettings): string {
  const settings = result.settings;
  const engine = settings['engine'] === 'onnx' ? 'ONNX Runtime' : `TensorFlow.js (${result.backend.name}, ${result.backend.threads} thread(s))`;
  const protocol = settings['protocol'] as { subtractMean?: boolean } | undefined;
  const rows: Array<[string, string]> = [
    ['model', `${describe(settings['model'])} (${describe(settings['modelName'])})`],
    ['engine', engine],
    ['landmarks', `${describe(settings['landmarks'])} (${describe(settings['landmarkOrigin'])})`],
    ['pairs file', describe(settings['pairs'])],
    ['images', describe(settings['images'])],
    ['alignment', `cp2tform similarity onto a ${alignment.outputSize.height}×${alignment.outputSize.width} crop, bilinear`],
    ['feature', describe(settings['feature'])],
    [
      'protocol',
      `${result.report.folds.length}-fold; threshold per fold from the other folds (grid −1 … 1, step 10⁻⁴, mean of tied thresholds); ` +
        `${protocol?.subtractMean === false ? 'no mean subtraction' : 'mean feature of the training folds subtracted'}`,
    ],
    ['pairs / images', `${result.counts.pairs} / ${result.counts.images}`],
    ['wall time', `${result.timings.wallSeconds.toFixed(1)} s`],
  ];
  const body = rows.map(([name, value]) => `<tr><td>${escapeXml(name)}</td><td>${escapeXml(value)}</td></tr>`).join('\n');
  return `<table class="settings">\n${body}\n</table>`;
}

function scoreKind(result: LfwEvalResult): string {
  return result.report.subtractMean ? "cosines of the features with the training folds' mean subtracted" : 'plain cosines of the features';
}

function headline(result: LfwEvalResult, metrics: EvalMetrics): string {
  const { report } = result;
  const { valAtFar, eer } = metrics;
  return `<table class="headline">
<tr><td>accuracy, mean ± std over ${report.folds.length} folds</td><td id="accuracy" data-mean="${report.mean}" data-std="${report.std}">${percent(report.mean)} ± ${percent(report.std)} %</td></tr>
<tr><td>TAR (VAL) at FAR = 10⁻³, mean ± std over the folds</td><td id="val-at-far" data-val="${valAtFar.val}" data-std="${valAtFar.valStd}" data-far="${valAtFar.far}">${percent(valAtFar.val)} ± ${percent(valAtFar.valStd)} % (test-fold FAR ${percent(valAtFar.far)} %)</td></tr>
<tr><td>equal error rate, all pairs</td><td id="eer" data-rate="${eer.rate}" data-threshold="${eer.threshold}">${percent(eer.rate)} % at score ${eer.threshold.toFixed(4)}</td></tr>
</table>
<p>The accuracy follows the SphereFace protocol. <b>VAL@FAR</b> follows facenet's <code>calculate_val</code>
(davidsandberg/facenet, <code>src/facenet.py</code>, called by <code>src/lfw.py</code>): for each fold, the threshold
where the false accept rate of the other folds, interpolated linearly over the threshold grid, reaches 10⁻³;
then VAL and FAR on the test fold at that threshold; the standard deviation divides by the number of folds.
The scores are ${scoreKind(result)}, not facenet's squared distances.
The <b>EER</b> is the point of the ROC curve over all pairs (each at its test-fold score) where FAR equals 1 − TAR,
interpolated linearly between the neighbouring ROC points.</p>`;
}

function foldTable(result: LfwEvalResult, metrics: EvalMetrics): string {
  const { report } = result;
  const rows = report.folds.map((fold, i) => {
    const val = metrics.valAtFar.folds[i]!;
    const valThreshold = val.threshold === undefined ? '<td>not reached</td>' : numberCell(val.threshold, val.threshold.toFixed(4));
    return (
      `<tr data-fold="${fold.fold}"><td>${fold.fold}</td>${numberCell(fold.accuracy, percent(fold.accuracy))}` +
      `${numberCell(fold.threshold, fold.threshold.toFixed(4))}<td>${fold.correct} / ${fold.total}</td>` +
      `${numberCell(val.val, percent(val.val))}${numberCell(val.far, percent(val.far))}${valThreshold}</tr>`
    );
  });
  const mean =
    `<tr><th>mean</th><th>${percent(report.mean)} ± ${percent(report.std)}</th><th>${report.meanThreshold.toFixed(4)}</th>` +
    `<th>${report.correct} / ${report.total}</th><th>${percent(metrics.valAtFar.val)} ± ${percent(metrics.valAtFar.valStd)}</th>` +
    `<th>${percent(metrics.valAtFar.far)}</th><th></th></tr>`;
  return `<table id="folds">
<tr><th>fold</th><th>accuracy, %</th><th>threshold</th><th>correct</th><th>VAL at FAR 10⁻³, %</th><th>test FAR, %</th><th>VAL threshold</th></tr>
${rows.join('\n')}
${mean}
</table>
<p>Accuracy and threshold are those of the SphereFace protocol. The std of the accuracy divides by K − 1 (as Matlab's <code>std</code>), that of VAL by K (as numpy's <code>np.std</code>, which facenet uses).</p>`;
}

function figure(png: Buffer, alt: string, caption: string): string {
  return `<figure><img src="data:image/png;base64,${png.toString('base64')}" alt="${escapeXml(alt)}"><figcaption>${escapeXml(caption)}</figcaption></figure>`;
}

function thumbnailCell(id: string, thumbnails: ReadonlyMap<string, Thumbnail>, alignment: AlignSettings): string {
  const thumbnail = thumbnails.get(id);
  const { width, height } = alignment.outputSize;
  const image =
    thumbnail !== undefined && 'dataUrl' in thumbnail
      ? `<img src="${thumbnail.dataUrl}" width="${width}" height="${height}" alt="aligned crop of ${escapeXml(id)}">`
      : `<div>no crop: ${escapeXml(thumbnail !== undefined && 'error' in thumbnail ? thumbnail.error : 'not made')}</div>`;
  return `<td>${image}<span class="name">${escapeXml(id)}</span></td>`;
}

function hardPairsTable(kind: string, pairs: readonly HardPair[], thumbnails: ReadonlyMap<string, Thumbnail>, alignment: AlignSettings): string {
  if (pairs.length === 0) return '<p>None.</p>';
  const rows = pairs.map((hard, rank) => {
    const verdict = hard.misclassified ? '<span class="wrong">wrong</span>' : 'right';
    return (
      `<tr class="pair" data-kind="${kind}" data-index="${hard.pair.index}"><td>${rank + 1}</td>` +
      `${thumbnailCell(hard.pair.left.id, thumbnails, alignment)}${thumbnailCell(hard.pair.right.id, thumbnails, alignment)}` +
      `${numberCell(hard.score, hard.score.toFixed(4))}${numberCell(hard.threshold, hard.threshold.toFixed(4))}<td>${hard.fold}</td><td>${verdict}</td></tr>`
    );
  });
  return `<table class="hard">
<tr><th>#</th><th>left image</th><th>right image</th><th>score</th><th>fold threshold</th><th>fold</th><th>at threshold</th></tr>
${rows.join('\n')}
</table>`;
}

/** Renders the report page. */
export function renderReportHtml(input: ReportHtmlInput): string {
  const { result, metrics, hardest, thumbnails, alignment, plots } = input;
  const createdAt = (input.createdAt ?? new Date()).toISOString();
  const title = `LFW verification: ${describe(result.settings['modelName'])}`;
  const crop = `${alignment.outputSize.height}×${alignment.outputSize.width}`;

  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeXml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeXml(title)}</h1>
<p>Written by <code>sphereface eval --html</code> at ${escapeXml(createdAt)}.</p>

<h2>Settings</h2>
${settingsTable(result, alignment)}

<h2>Results</h2>
${headline(result, metrics)}

<h2>Folds</h2>
${foldTable(result, metrics)}

<h2>Plots</h2>
${figure(plots.roc, 'ROC curve', `ROC over all pairs at their test-fold scores, log FAR axis. The dashed line marks FAR = 10⁻³; its dot is the TAR of this curve there, while the legend gives the ${result.report.folds.length}-fold VAL.`)}
${figure(plots.scores, 'score histograms', 'Scores of same-person and different-person pairs, each in its test fold, with the mean of the fold thresholds.')}
${figure(plots.folds, 'accuracy per fold', 'Accuracy of each fold at the threshold chosen on the other folds. The axis does not start at 0.')}

<h2>Hardest pairs</h2>
<p>Aligned ${escapeXml(crop)} crops, made again from the images with the landmarks the evaluation used. A pair is wrong when its fold's threshold misclassifies it (same-person pairs need score &gt; threshold, different-person pairs score &lt; threshold).</p>
<h3>Worst false accepts: different-person pairs with the highest scores</h3>
${hardPairsTable('false-accept', hardest.falseAccepts, thumbnails, alignment)}
<h3>Worst false rejects: same-person pairs with the lowest scores</h3>
${hardPairsTable('false-reject', hardest.falseRejects, thumbnails, alignment)}
</body>
</html>
`;
}
