/**
 * Plots a training log (`train-log.jsonl` from `sphereface train`) as a PNG: the loss and the
 * training accuracy against the iteration, each step as a faint line and a moving mean of
 * `window` steps on top.
 *
 * Usage: `npx tsx bench/plotTraining.ts LOG OUT.png [TITLE] [WINDOW]` (default window 25).
 *
 * The chart is drawn as SVG and rasterised by sharp, so it needs no charting package.
 */
import { readFile, writeFile } from 'node:fs/promises';

import { escapeXml, niceTicks, renderPng } from '../lib/svgChart.ts';

interface Entry {
  readonly iteration: number;
  readonly loss: number;
  readonly accuracy: number;
  readonly lambda: number;
}

const [logFile, outFile, title = 'training', windowText = '25'] = process.argv.slice(2);
if (logFile === undefined || outFile === undefined) throw new Error('usage: npx tsx bench/plotTraining.ts LOG OUT.png [TITLE] [WINDOW]');
const window = Number(windowText);
if (!Number.isInteger(window) || window < 1) throw new Error(`window "${windowText}" is invalid, expected a positive integer`);

const entries: Entry[] = (await readFile(logFile, 'utf8'))
  .split('\n')
  .filter((line) => line.trim() !== '')
  .map((line, index) => {
    const entry = JSON.parse(line) as Entry;
    if (!Number.isFinite(entry.iteration) || !Number.isFinite(entry.loss)) throw new Error(`${logFile}:${index + 1}: expected iteration and loss numbers`);
    return entry;
  });
if (entries.length === 0) throw new Error(`${logFile} has no entries`);

function movingMean(values: readonly number[]): number[] {
  let sum = 0;
  return values.map((value, i) => {
    sum += value;
    if (i >= window) sum -= values[i - window] as number;
    return sum / Math.min(i + 1, window);
  });
}

const WIDTH = 900;
const PANEL = 260;
const LEFT = 70;
const RIGHT = 20;
const TOP = 50;
const GAP = 60;
const HEIGHT = TOP + 2 * PANEL + GAP + 50;
const last = entries[entries.length - 1]!.iteration;
const first = entries[0]!.iteration;
const x = (iteration: number) => LEFT + ((iteration - first) / Math.max(1, last - first)) * (WIDTH - LEFT - RIGHT);

function panel(top: number, label: string, values: readonly number[], min: number, max: number, format: (v: number) => string): string {
  const y = (v: number) => top + PANEL - ((v - min) / (max - min || 1)) * PANEL;
  const path = (vs: readonly number[]) => vs.map((v, i) => `${i === 0 ? 'M' : 'L'}${x(entries[i]!.iteration).toFixed(1)},${y(v).toFixed(1)}`).join('');
  const parts = [`<rect x="${LEFT}" y="${top}" width="${WIDTH - LEFT - RIGHT}" height="${PANEL}" fill="none" stroke="#888"/>`];
  for (const tick of niceTicks(min, max, 5)) {
    parts.push(`<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y(tick)}" y2="${y(tick)}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${LEFT - 6}" y="${y(tick) + 4}" text-anchor="end" font-size="12">${format(tick)}</text>`);
  }
  parts.push(`<path d="${path(values)}" fill="none" stroke="#9ec5e8" stroke-width="1"/>`);
  parts.push(`<path d="${path(movingMean(values))}" fill="none" stroke="#1f5fa8" stroke-width="2.2"/>`);
  parts.push(`<text x="${LEFT}" y="${top - 8}" font-size="14" font-weight="bold">${label}</text>`);
  return parts.join('\n');
}

const losses = entries.map((e) => e.loss);
const accuracies = entries.map((e) => 100 * e.accuracy);
const lossMin = Math.min(...losses);
const lossMax = Math.max(...losses);
const xTicks = niceTicks(first, last, 8)
  .map((tick) => `<text x="${x(tick)}" y="${TOP + 2 * PANEL + GAP + 20}" text-anchor="middle" font-size="12">${tick}</text>`)
  .join('\n');
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" font-family="DejaVu Sans, sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${WIDTH / 2}" y="24" text-anchor="middle" font-size="16">${escapeXml(title)}</text>
${panel(TOP, `loss (thin: each step; thick: mean of ${window} steps)`, losses, Math.floor(lossMin * 10) / 10, Math.ceil(lossMax * 10) / 10, (v) => v.toFixed(1))}
${panel(TOP + PANEL + GAP, 'training accuracy, % (plain cosine logits)', accuracies, 0, Math.max(10, Math.ceil(Math.max(...accuracies) / 10) * 10), (v) => v.toFixed(0))}
${xTicks}
<text x="${WIDTH / 2}" y="${HEIGHT - 8}" text-anchor="middle" font-size="13">iteration</text>
</svg>`;

await writeFile(outFile, await renderPng(svg));
console.log(JSON.stringify({ out: outFile, entries: entries.length, firstLoss: losses[0], lastMeanLoss: movingMean(losses).at(-1) }));
