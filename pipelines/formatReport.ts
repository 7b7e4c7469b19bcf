import type { VerificationReport } from '../operators/kFoldVerify.ts';
import type { TrainingSummary } from './train.ts';

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

/** Describes a finished training run: data, iterations, where its checkpoint and log are, and the held-out fold when evaluated. */
export function formatTrainingSummary(summary: TrainingSummary): string {
  const lines = [
    `trained ${summary.model} on ${summary.samples} images of ${summary.classes} identities (${summary.backend.name} backend)`,
    `iterations ${summary.startIteration} → ${summary.iteration}, stopped by ${summary.stoppedBy}, ${summary.seconds.toFixed(1)} s`,
    `checkpoint: ${summary.checkpoint}`,
    `log: ${summary.log}`,
  ];
  if (summary.rejected.length > 0) {
    lines.push(`${summary.rejected.length} images left out:`, ...summary.rejected.slice(0, 10).map((r) => `  ${r.id}: ${r.reason}`));
  }
  if (summary.heldOut !== undefined) {
    const { fold, trained, initial } = summary.heldOut;
    const row = (name: string, r: typeof trained) =>
      `  ${name}: ${(100 * r.accuracy).toFixed(2)} % (${r.correct}/${r.total}, threshold ${r.threshold.toFixed(4)})`;
    lines.push(`held-out LFW fold ${fold} (${trained.total} pairs, threshold from the other nine folds):`, row('trained weights', trained), row('initial weights', initial));
  }
  return lines.join('\n');
}
