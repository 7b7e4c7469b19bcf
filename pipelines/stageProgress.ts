/**
 * Live progress of a pipeline run: one bar per stage on a TTY, or a structured log line every
 * 15 seconds elsewhere.
 */
import cliProgress from 'cli-progress';

import { log } from '../lib/log.ts';
import { rejectedTotal, type StageCounts } from './runPipeline.ts';

/** Images a stage has finished with: its outputs, rejections, cache hits and skips. */
export function settledImages(counts: StageCounts): number {
  return counts.outputs + rejectedTotal(counts) + counts.passedOn + counts.cacheHits + counts.cachedFailures + counts.skipped;
}

export class StageProgress {
  private readonly bars: cliProgress.MultiBar | undefined;
  private readonly rows: cliProgress.SingleBar[] = [];
  private readonly started = performance.now();
  private lastUpdate = 0;
  private readonly intervalMs: number;

  /**
   * @param total images the source listed
   * @param stages counts of the stages after the source, updated by the runner
   * @param interactive draw bars; otherwise log
   * @param refresh brings the counts up to date before they are shown
   */
  constructor(
    private readonly total: number,
    private readonly stages: readonly StageCounts[],
    interactive: boolean,
    private readonly refresh: () => void,
  ) {
    this.intervalMs = interactive ? 100 : 15_000;
    if (!interactive) return;
    const width = Math.max(...stages.map((stage) => stage.label.length));
    this.bars = new cliProgress.MultiBar(
      {
        stream: process.stderr,
        format: '{label} {bar} {value}/{total} | {hits} cached | {rejected} rejected | {rate}/s',
        hideCursor: true,
        // Restores the cursor and line wrapping when the user presses Ctrl-C.
        gracefulExit: true,
        clearOnComplete: false,
        barsize: 24,
      },
      cliProgress.Presets.shades_classic,
    );
    for (const stage of stages) {
      this.rows.push(this.bars.create(total, 0, { label: stage.label.padEnd(width), hits: 0, rejected: 0, rate: '0.0' }));
    }
  }

  /** Notes that an image finished; redraws at most every 100 ms (bars) or 15 s (log). */
  tick(): void {
    const now = performance.now();
    if (now - this.lastUpdate < this.intervalMs) return;
    this.lastUpdate = now;
    this.draw(false);
  }

  stop(): void {
    this.draw(true);
    this.bars?.stop();
  }

  private draw(final: boolean): void {
    this.refresh();
    const seconds = (performance.now() - this.started) / 1000;
    if (this.bars === undefined) {
      if (final) return;
      log.info(
        {
          seconds: Number(seconds.toFixed(0)),
          total: this.total,
          stages: Object.fromEntries(this.stages.map((stage) => [stage.label, { done: settledImages(stage), cached: stage.cacheHits, rejected: rejectedOf(stage) }])),
        },
        'pipeline progress',
      );
      return;
    }
    this.stages.forEach((stage, index) => {
      const done = Math.min(this.total, settledImages(stage));
      this.rows[index]?.update(done, {
        hits: stage.cacheHits,
        rejected: rejectedOf(stage),
        rate: seconds > 0 ? (done / seconds).toFixed(1) : '0.0',
      });
    });
  }
}

function rejectedOf(stage: StageCounts): number {
  return rejectedTotal(stage) + stage.cachedFailures;
}
