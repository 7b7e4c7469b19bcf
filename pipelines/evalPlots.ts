/**
 * The three charts of the evaluation report, as SVG documents: the ROC curve on a log FAR axis,
 * the score histograms of same-person and different-person pairs, and the accuracy of each
 * fold. `renderPng` in `lib/svgChart.ts` rasterises them.
 */
import type { FoldResult } from '../operators/kFoldVerify.ts';
import {
  linearScale,
  logScale,
  niceTicks,
  px,
  svgDocument,
  svgLegend,
  svgPolyline,
  svgText,
  type LegendEntry,
  type PlotArea,
} from '../lib/svgChart.ts';
import type { EqualErrorRate, RocPoint, ValAtFar } from '../lib/verificationMetrics.ts';

const WIDTH = 760;
const HEIGHT = 500;
const AREA: PlotArea = { left: 78, top: 46, width: WIDTH - 78 - 24, height: HEIGHT - 46 - 70 };

const SAME_COLOUR = '#1f5fa8';
const DIFFERENT_COLOUR = '#e07b00';
const MARK_COLOUR = '#c0392b';

/** Smallest FAR on the ROC axis. A lower FAR, including 0, is drawn at this edge. */
export const ROC_MIN_FAR = 1e-4;

const SUPERSCRIPT_DIGITS = '⁰¹²³⁴⁵⁶⁷⁸⁹';

/** Formats 10^exponent with superscript digits, such as 10⁻³. */
function powerOfTen(exponent: number): string {
  const digits = String(Math.abs(exponent))
    .split('')
    .map((digit) => SUPERSCRIPT_DIGITS[Number(digit)])
    .join('');
  return `10${exponent < 0 ? '⁻' : ''}${digits}`;
}

function frame(area: PlotArea): string {
  return `<rect x="${area.left}" y="${area.top}" width="${area.width}" height="${area.height}" fill="none" stroke="#888"/>`;
}

function horizontalGrid(area: PlotArea, y: (value: number) => number, ticks: readonly number[], format: (value: number) => string): string {
  return ticks
    .map((tick) =>
      [
        `<line x1="${area.left}" x2="${area.left + area.width}" y1="${px(y(tick))}" y2="${px(y(tick))}" stroke="#e4e4e4"/>`,
        svgText(area.left - 8, y(tick) + 4, format(tick), { anchor: 'end' }),
      ].join('\n'),
    )
    .join('\n');
}

function axisTitles(title: string, xTitle: string, yTitle: string): string {
  return [
    svgText(WIDTH / 2, 26, title, { anchor: 'middle', size: 16, weight: 'bold' }),
    svgText(AREA.left + AREA.width / 2, HEIGHT - 18, xTitle, { anchor: 'middle', size: 13 }),
    svgText(20, AREA.top + AREA.height / 2, yTitle, { anchor: 'middle', size: 13, rotate: -90 }),
  ].join('\n');
}

/** TAR of the ROC curve at `far`, interpolated linearly between the neighbouring points. */
export function tarAtFar(points: readonly RocPoint[], far: number): number {
  for (let i = 1; i < points.length; i++) {
    const from = points[i - 1]!;
    const to = points[i]!;
    if (to.far >= far) {
      if (to.far === from.far) return to.tar;
      return from.tar + ((far - from.far) / (to.far - from.far)) * (to.tar - from.tar);
    }
  }
  return points[points.length - 1]?.tar ?? 0;
}

export interface RocPlotInput {
  readonly points: readonly RocPoint[];
  readonly valAtFar: ValAtFar;
  readonly eer: EqualErrorRate;
  readonly pairCount: number;
}

/** Draws the ROC curve, TAR against FAR from 10⁻⁴ to 1 on a log axis, with the VAL@FAR target and the EER marked. */
export function rocPlotSvg({ points, valAtFar, eer, pairCount }: RocPlotInput): string {
  const x = logScale([ROC_MIN_FAR, 1], [AREA.left, AREA.left + AREA.width]);
  const drawn = points.map((point) => ({ far: Math.max(point.far, ROC_MIN_FAR), tar: point.tar }));
  // The TAR axis starts at the tenth below the TAR at the lowest FAR shown. The part of the curve
  // below the axis lies on the left edge and is clipped.
  const yMin = Math.min(0.9, Math.floor(tarAtFar(points, ROC_MIN_FAR) * 10) / 10);
  const y = linearScale([yMin, 1], [AREA.top + AREA.height, AREA.top]);

  const lowestExponent = Math.round(Math.log10(ROC_MIN_FAR));
  const xTitle = `false accept rate (FAR), log scale; FAR below ${powerOfTen(lowestExponent)}, including 0, is drawn at the left edge`;
  const parts: string[] = [axisTitles('ROC', xTitle, 'true accept rate (TAR)')];
  parts.push(horizontalGrid(AREA, y, niceTicks(yMin, 1, 6), (tick) => tick.toFixed(2)));

  for (let exponent = lowestExponent; exponent <= 0; exponent++) {
    const decade = 10 ** exponent;
    parts.push(`<line x1="${px(x(decade))}" x2="${px(x(decade))}" y1="${AREA.top}" y2="${AREA.top + AREA.height}" stroke="#d8d8d8"/>`);
    parts.push(svgText(x(decade), AREA.top + AREA.height + 20, powerOfTen(exponent), { anchor: 'middle' }));
    for (let multiple = 2; multiple < 10 && exponent < 0; multiple++) {
      const minor = x(multiple * decade);
      parts.push(`<line x1="${px(minor)}" x2="${px(minor)}" y1="${AREA.top}" y2="${AREA.top + AREA.height}" stroke="#f0f0f0"/>`);
      parts.push(`<line x1="${px(minor)}" x2="${px(minor)}" y1="${AREA.top + AREA.height}" y2="${AREA.top + AREA.height + 4}" stroke="#888"/>`);
    }
  }
  parts.push(frame(AREA));

  const target = valAtFar.targetFar;
  const targetX = x(target);
  parts.push(`<line x1="${px(targetX)}" x2="${px(targetX)}" y1="${AREA.top}" y2="${AREA.top + AREA.height}" stroke="${MARK_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"/>`);
  parts.push(`<clipPath id="plot-area"><rect x="${AREA.left}" y="${AREA.top}" width="${AREA.width}" height="${AREA.height}"/></clipPath>`);
  parts.push(svgPolyline(drawn.map((point) => [x(point.far), y(point.tar)] as const), SAME_COLOUR, 2.2, 'clip-path="url(#plot-area)"'));
  parts.push(`<circle cx="${px(targetX)}" cy="${px(y(tarAtFar(points, target)))}" r="4.5" fill="${MARK_COLOUR}"/>`);
  if (eer.rate >= ROC_MIN_FAR) {
    parts.push(`<circle cx="${px(x(eer.rate))}" cy="${px(y(1 - eer.rate))}" r="4.5" fill="white" stroke="#222" stroke-width="2"/>`);
  }

  const exponent = Math.log10(target);
  const targetLabel = Number.isInteger(exponent) ? powerOfTen(exponent) : String(target);
  const legend: LegendEntry[] = [
    { label: `all ${pairCount} pairs, test-fold scores`, colour: SAME_COLOUR, kind: 'line' },
    {
      label: `FAR = ${targetLabel}: VAL ${(100 * valAtFar.val).toFixed(2)} ± ${(100 * valAtFar.valStd).toFixed(2)} % (${valAtFar.folds.length}-fold)`,
      colour: MARK_COLOUR,
      kind: 'line',
      dash: '6 4',
    },
    { label: `EER ${(100 * eer.rate).toFixed(2)} % (open circle)`, colour: '#222', kind: 'line' },
  ];
  parts.push(svgLegend(AREA.left + AREA.width - 10, AREA.top + AREA.height - 80, legend, 330));
  return svgDocument(WIDTH, HEIGHT, parts.join('\n'));
}

export interface ScoreHistogramInput {
  readonly sameScores: readonly number[];
  readonly differentScores: readonly number[];
  readonly meanThreshold: number;
}

/** Returns a round bin width (1, 2 or 5 times a power of ten) that splits `span` into about `bins` bins. */
function binWidth(span: number, bins: number): number {
  const raw = (span || 1) / bins;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((w) => w >= raw) ?? raw;
}

function countBins(scores: readonly number[], start: number, width: number, bins: number): number[] {
  const counts = new Array<number>(bins).fill(0);
  for (const score of scores) {
    const bin = Math.min(bins - 1, Math.max(0, Math.floor((score - start) / width)));
    counts[bin]! += 1;
  }
  return counts;
}

/** Draws the histograms of the same-person and different-person scores, with the mean threshold marked. */
export function scoreHistogramSvg({ sameScores, differentScores, meanThreshold }: ScoreHistogramInput): string {
  const all = [...sameScores, ...differentScores, meanThreshold];
  const low = Math.min(...all);
  const high = Math.max(...all);
  const width = binWidth(high - low, 50);
  const start = Math.floor(low / width) * width;
  const bins = Math.max(1, Math.ceil((high - start) / width + 1e-9));
  const end = start + bins * width;

  const sameCounts = countBins(sameScores, start, width, bins);
  const differentCounts = countBins(differentScores, start, width, bins);
  const maxCount = Math.max(1, ...sameCounts, ...differentCounts);

  const x = linearScale([start, end], [AREA.left, AREA.left + AREA.width]);
  // The top quarter stays free for the legend.
  const yMax = maxCount * 1.33;
  const y = linearScale([0, yMax], [AREA.top + AREA.height, AREA.top]);
  const xTitle = `score (cosine of the two features), bin width ${Number(width.toPrecision(6))}`;
  const parts: string[] = [axisTitles('Score distributions', xTitle, 'pairs per bin')];
  parts.push(horizontalGrid(AREA, y, niceTicks(0, yMax, 6).filter(Number.isInteger), (tick) => String(tick)));
  for (const tick of niceTicks(start, end, 10)) {
    parts.push(`<line x1="${px(x(tick))}" x2="${px(x(tick))}" y1="${AREA.top + AREA.height}" y2="${AREA.top + AREA.height + 5}" stroke="#888"/>`);
    parts.push(svgText(x(tick), AREA.top + AREA.height + 20, tick.toFixed(2), { anchor: 'middle' }));
  }

  const area = (counts: readonly number[], colour: string): string => {
    const outline: Array<readonly [number, number]> = [[x(start), y(0)]];
    counts.forEach((count, bin) => {
      outline.push([x(start + bin * width), y(count)], [x(start + (bin + 1) * width), y(count)]);
    });
    outline.push([x(end), y(0)]);
    const d = outline.map(([px0, py0], i) => `${i === 0 ? 'M' : 'L'}${px(px0)},${px(py0)}`).join('');
    return `<path d="${d}Z" fill="${colour}" fill-opacity="0.35" stroke="${colour}" stroke-width="1.5"/>`;
  };
  parts.push(area(differentCounts, DIFFERENT_COLOUR), area(sameCounts, SAME_COLOUR));

  const thresholdX = x(meanThreshold);
  parts.push(`<line x1="${px(thresholdX)}" x2="${px(thresholdX)}" y1="${AREA.top}" y2="${AREA.top + AREA.height}" stroke="#222" stroke-width="1.5" stroke-dasharray="6 4"/>`);
  parts.push(frame(AREA));
  parts.push(
    svgLegend(
      AREA.left + AREA.width - 10,
      AREA.top + 10,
      [
        { label: `same person (${sameScores.length} pairs)`, colour: SAME_COLOUR, kind: 'box' },
        { label: `different persons (${differentScores.length} pairs)`, colour: DIFFERENT_COLOUR, kind: 'box' },
        { label: `mean fold threshold ${meanThreshold.toFixed(4)}`, colour: '#222', kind: 'line', dash: '6 4' },
      ],
      280,
    ),
  );
  return svgDocument(WIDTH, HEIGHT, parts.join('\n'));
}

export interface FoldPlotInput {
  readonly folds: readonly FoldResult[];
  readonly mean: number;
  readonly std: number;
}

/** Draws the accuracy of each fold as a bar, with the mean as a dashed line. */
export function foldAccuracySvg({ folds, mean, std }: FoldPlotInput): string {
  const percents = folds.map((fold) => 100 * fold.accuracy);
  // The axis starts a little below the lowest fold so that differences of tenths of a percent
  // stay visible. The tick labels state where it starts.
  const yMin = Math.max(0, Math.floor(Math.min(...percents) - 1));
  // Headroom above 100 % keeps the value labels of full bars inside the plot.
  const y = linearScale([yMin, 100 + 0.08 * (100 - yMin)], [AREA.top + AREA.height, AREA.top]);
  const slot = AREA.width / folds.length;

  // The bars fill the plot from below, so the mean is named in the title rather than in a legend.
  const title = `Accuracy per fold; dashed: mean ${(100 * mean).toFixed(2)} %, std ${(100 * std).toFixed(2)} %`;
  const parts: string[] = [axisTitles(title, 'fold (threshold chosen on the other folds)', 'accuracy, %')];
  parts.push(horizontalGrid(AREA, y, niceTicks(yMin, 100, 6), (tick) => (Number.isInteger(tick) ? String(tick) : tick.toFixed(1))));
  folds.forEach((fold, i) => {
    const percent = percents[i]!;
    const left = AREA.left + i * slot + slot * 0.18;
    const top = y(percent);
    parts.push(`<rect x="${px(left)}" y="${px(top)}" width="${px(slot * 0.64)}" height="${px(AREA.top + AREA.height - top)}" fill="${SAME_COLOUR}" fill-opacity="0.8"/>`);
    parts.push(svgText(left + slot * 0.32, top - 6, percent.toFixed(2), { anchor: 'middle', size: 11 }));
    parts.push(svgText(AREA.left + (i + 0.5) * slot, AREA.top + AREA.height + 20, String(fold.fold), { anchor: 'middle' }));
  });
  parts.push(frame(AREA));

  const meanY = y(100 * mean);
  parts.push(`<line x1="${AREA.left}" x2="${AREA.left + AREA.width}" y1="${px(meanY)}" y2="${px(meanY)}" stroke="${MARK_COLOUR}" stroke-width="2" stroke-dasharray="6 4"/>`);
  return svgDocument(WIDTH, HEIGHT, parts.join('\n'));
}
