import type { VerificationReport } from '../operators/kFoldVerify.ts';

/**
 * Formats a verification report as the per-fold table of the SphereFace README: one column per
 * fold and a last column AVE, with accuracy in percent and the threshold each fold chose.
 * The result is a Markdown table, so it pastes into documentation unchanged.
 */
export function formatFoldTable(report: VerificationReport): string {
  const header = ['fold', ...report.folds.map((f) => String(f.fold)), 'AVE'];
  const accuracy = ['ACC', ...report.folds.map((f) => (100 * f.accuracy).toFixed(2)), (100 * report.mean).toFixed(2)];
  const threshold = ['THR', ...report.folds.map((f) => f.threshold.toFixed(4)), report.meanThreshold.toFixed(4)];
  const correct = ['correct', ...report.folds.map((f) => `${f.correct}/${f.total}`), `${report.correct}/${report.total}`];

  const rows = [header, accuracy, threshold, correct];
  const widths = header.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length)));
  const line = (row: string[]): string => `| ${row.map((cell, i) => cell.padStart(widths[i] ?? 0)).join(' | ')} |`;
  const rule = `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`;

  return [line(header), rule, line(accuracy), line(threshold), line(correct)].join('\n');
}

/** Formats one line with the mean, the sample standard deviation and the error count. */
export function formatSummary(report: VerificationReport): string {
  const errors = report.total - report.correct;
  return `mean ${(100 * report.mean).toFixed(2)} %, std ${(100 * report.std).toFixed(2)} % (over ${report.folds.length} folds), ${errors} ${errors === 1 ? 'error' : 'errors'} in ${report.total} pairs`;
}
