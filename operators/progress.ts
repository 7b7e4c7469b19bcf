import cliProgress from 'cli-progress';
import { Observable, type MonoTypeOperatorFunction } from 'rxjs';
import { log } from '../lib/log.ts';

export interface ProgressOptions {
  /** Records expected in all. */
  readonly total: number;
  /** Unit of the counted records, e.g. "images". */
  readonly unit?: string;
  /** Draw a bar on stderr (default: when stderr is a TTY). Otherwise log a line periodically. */
  readonly bar?: boolean;
  /** Seconds between log lines when there is no bar (default 15). */
  readonly intervalSeconds?: number;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/**
 * Counts the records that pass and shows how far the run is: done / total, rate and ETA. On a
 * TTY it draws a bar on stderr. Elsewhere (CI logs, files) it logs a line every
 * `intervalSeconds` and a last one at the end. Records pass through unchanged.
 */
export function progress<T>(options: ProgressOptions): MonoTypeOperatorFunction<T> {
  const unit = options.unit ?? 'images';
  const useBar = options.bar ?? process.stderr.isTTY === true;
  const intervalMs = (options.intervalSeconds ?? 15) * 1000;

  return (source) =>
    new Observable<T>((subscriber) => {
      const started = performance.now();
      let done = 0;
      let lastLog = started;

      const bar = useBar
        ? new cliProgress.SingleBar(
            {
              stream: process.stderr,
              format: `{bar} {value}/{total} ${unit} | {rate} ${unit}/s | ETA {eta_formatted}`,
              etaBuffer: 200,
              hideCursor: true,
              // Restores the cursor and line wrapping when the user presses Ctrl-C.
              gracefulExit: true,
            },
            cliProgress.Presets.shades_classic,
          )
        : undefined;
      bar?.start(options.total, 0, { rate: '0.0' });

      const report = (final: boolean): void => {
        const seconds = (performance.now() - started) / 1000;
        const rate = seconds > 0 ? done / seconds : 0;
        if (bar) {
          bar.update(done, { rate: rate.toFixed(1) });
          if (final) bar.stop();
          return;
        }
        const eta = rate > 0 ? (options.total - done) / rate : Number.POSITIVE_INFINITY;
        log.info(
          { done, total: options.total, rate: Number(rate.toFixed(1)), eta: formatDuration(eta) },
          final ? `finished ${done} ${unit} in ${formatDuration(seconds)}` : `progress ${done}/${options.total} ${unit}`,
        );
      };

      const subscription = source.subscribe({
        next(value) {
          done++;
          const now = performance.now();
          if (bar || now - lastLog >= intervalMs) {
            lastLog = now;
            report(false);
          }
          subscriber.next(value);
        },
        error(error: unknown) {
          if (bar) {
            bar.stop();
            process.stderr.write('\n');
          }
          subscriber.error(error);
        },
        complete() {
          report(true);
          subscriber.complete();
        },
      });
      return () => {
        subscription.unsubscribe();
        // An error further down the pipeline unsubscribes without completing: leave the terminal tidy.
        if (bar && bar.isActive) bar.stop();
      };
    });
}
