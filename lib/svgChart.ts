/**
 * Small helpers for charts drawn as SVG and rasterised to PNG by sharp (librsvg), so that plots
 * need no charting package. Coordinates are SVG user units, which equal PNG pixels at the
 * default density.
 */
import sharp from 'sharp';

/** Font stack of every chart. DejaVu Sans ships with most Linux systems and has the − and ± signs. */
export const CHART_FONT = 'DejaVu Sans, sans-serif';

/** Escapes text for SVG or HTML element content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * Returns about `count` evenly spaced round values (steps of 1, 2 or 5 times a power of ten)
 * from the first multiple of the step at or above `min` up to `max`.
 */
export function niceTicks(min: number, max: number, count: number): number[] {
  const span = max - min || 1;
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + 1e-9; v += step) ticks.push(Number(v.toPrecision(10)));
  return ticks;
}

/** The plotting area of a chart, in SVG units. */
export interface PlotArea {
  readonly left: number;
  readonly top: number;
  readonly width: number;
  readonly height: number;
}

/** Maps a data value linearly onto a pixel range. */
export function linearScale(domain: readonly [number, number], range: readonly [number, number]): (value: number) => number {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  const span = d1 - d0 || 1;
  return (value) => r0 + ((value - d0) / span) * (r1 - r0);
}

/** Maps a positive data value onto a pixel range by its base-10 logarithm. */
export function logScale(domain: readonly [number, number], range: readonly [number, number]): (value: number) => number {
  const linear = linearScale([Math.log10(domain[0]), Math.log10(domain[1])], range);
  return (value) => linear(Math.log10(value));
}

/** Formats a number for an SVG attribute with at most two decimals. */
export function px(value: number): string {
  return String(Math.round(value * 100) / 100);
}

export interface TextOptions {
  readonly anchor?: 'start' | 'middle' | 'end';
  readonly size?: number;
  readonly weight?: 'normal' | 'bold';
  readonly fill?: string;
  /** Rotation in degrees around the text's anchor point. */
  readonly rotate?: number;
}

/** Draws escaped text at (x, y), where y is the baseline. */
export function svgText(x: number, y: number, content: string, options: TextOptions = {}): string {
  const attributes = [
    `x="${px(x)}"`,
    `y="${px(y)}"`,
    `font-size="${options.size ?? 12}"`,
    `text-anchor="${options.anchor ?? 'start'}"`,
    options.weight === 'bold' ? 'font-weight="bold"' : '',
    options.fill === undefined ? '' : `fill="${options.fill}"`,
    options.rotate === undefined ? '' : `transform="rotate(${options.rotate} ${px(x)} ${px(y)})"`,
  ].filter((attribute) => attribute !== '');
  return `<text ${attributes.join(' ')}>${escapeXml(content)}</text>`;
}

/** Draws a path through the points, as an SVG path with straight segments. */
export function svgPolyline(points: ReadonlyArray<readonly [number, number]>, stroke: string, width = 2, extra = ''): string {
  const d = points.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${px(x)},${px(y)}`).join('');
  return `<path d="${d}" fill="none" stroke="${stroke}" stroke-width="${width}" ${extra}/>`;
}

/** One entry of a legend: a coloured swatch and its label. */
export interface LegendEntry {
  readonly label: string;
  readonly colour: string;
  /** `line` draws a short line (dashed with `dash`), `box` a filled square. */
  readonly kind: 'line' | 'box';
  readonly dash?: string;
}

/** Draws a legend box with its top-right corner at (right, top). */
export function svgLegend(right: number, top: number, entries: readonly LegendEntry[], width: number): string {
  const rowHeight = 20;
  const parts = [`<rect x="${px(right - width)}" y="${px(top)}" width="${width}" height="${entries.length * rowHeight + 10}" fill="white" fill-opacity="0.9" stroke="#999"/>`];
  entries.forEach((entry, i) => {
    const y = top + 5 + i * rowHeight + rowHeight / 2;
    const x = right - width + 10;
    if (entry.kind === 'box') {
      parts.push(`<rect x="${px(x)}" y="${px(y - 6)}" width="22" height="12" fill="${entry.colour}" fill-opacity="0.5" stroke="${entry.colour}"/>`);
    } else {
      parts.push(`<line x1="${px(x)}" x2="${px(x + 22)}" y1="${px(y)}" y2="${px(y)}" stroke="${entry.colour}" stroke-width="2.5"${entry.dash === undefined ? '' : ` stroke-dasharray="${entry.dash}"`}/>`);
    }
    parts.push(svgText(x + 30, y + 4, entry.label, { size: 12 }));
  });
  return parts.join('\n');
}

/** Wraps chart elements in an SVG document with a white background and the chart font. */
export function svgDocument(width: number, height: number, body: string): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${CHART_FONT}">\n` +
    `<rect width="100%" height="100%" fill="white"/>\n${body}\n</svg>\n`
  );
}

/**
 * Rasterises an SVG document to a PNG at its own size. Charts have few colours, so a 256-colour
 * palette keeps them visually unchanged and makes the file about half as large as full RGB.
 */
export async function renderPng(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg)).png({ palette: true, compressionLevel: 9 }).toBuffer();
}
