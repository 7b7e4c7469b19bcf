/**
 * `sphereface cache stats DIR` and `sphereface cache prune DIR`: inspect and clean an artifact
 * cache folder (layout in docs/CACHE.md).
 */
import fs from 'node:fs';
import path from 'node:path';

import { InvalidArgumentError, type Command } from 'commander';

import { ArtifactCache, type PruneResult } from '../lib/artifactCache.ts';

const INDEX_FILE = 'index.sqlite';
const DAY_MS = 86_400_000;

/** Counts of one stage as `cache stats` prints them. */
export interface StageSummary {
  readonly artifacts: number;
  /** Sum of artifact sizes, counting a shared blob once per entry. */
  readonly artifactBytes: number;
  readonly failures: number;
  /** Distinct blobs the stage's entries reference, and their total size. */
  readonly blobs: number;
  readonly blobBytes: number;
}

export interface CacheSummary {
  readonly dir: string;
  readonly entries: number;
  readonly failures: number;
  /** Distinct blobs of the whole cache and their total size: the space the blobs take on disk. */
  readonly blobs: number;
  readonly blobBytes: number;
  readonly stages: Readonly<Record<string, StageSummary>>;
}

/**
 * Opens the cache in an existing folder. `ArtifactCache.open` creates a missing cache, which
 * would turn a mistyped path into a new empty cache, so this checks for the index first.
 */
export function openExistingCache(dir: string): ArtifactCache {
  const root = path.resolve(dir);
  const stat = fs.statSync(root, { throwIfNoEntry: false });
  if (stat === undefined) throw new Error(`cache folder ${root} not found`);
  if (!stat.isDirectory()) throw new Error(`${root} is a file; expected an artifact cache folder`);
  if (!fs.existsSync(path.join(root, INDEX_FILE))) {
    throw new Error(`${root} is not an artifact cache: it has no ${INDEX_FILE}. Pass the folder named by "cache:" in a pipeline spec or by --cache`);
  }
  return ArtifactCache.open(root);
}

/** Collects the counts of `cache stats`: those of `stats()`, plus the distinct blobs per stage. */
export function summarizeCache(cache: ArtifactCache): CacheSummary {
  const stats = cache.stats();
  const blobsByStage = new Map<string, Map<string, number>>();
  for (const entry of cache.list()) {
    if (entry.blob === undefined) continue;
    let blobs = blobsByStage.get(entry.stage);
    if (blobs === undefined) blobsByStage.set(entry.stage, (blobs = new Map()));
    blobs.set(entry.blob, entry.size);
  }
  const stages: Record<string, StageSummary> = {};
  for (const stage of Object.keys(stats.byStage).sort()) {
    const counts = stats.byStage[stage] ?? { artifacts: 0, artifactBytes: 0, failures: 0 };
    const blobs = [...(blobsByStage.get(stage)?.values() ?? [])];
    stages[stage] = { ...counts, blobs: blobs.length, blobBytes: blobs.reduce((sum, size) => sum + size, 0) };
  }
  return { dir: cache.dir, entries: stats.entries, failures: stats.failures, blobs: stats.blobs, blobBytes: stats.blobBytes, stages };
}

/** Formats a byte count with a binary unit: 512 B, 1.5 KiB, 31.5 MiB. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function formatCount(value: number): string {
  return value.toLocaleString('en-US');
}

/** Formats the summary as a table with one row per stage and a total row. */
export function formatCacheSummary(summary: CacheSummary): string {
  if (summary.entries === 0) return `artifact cache ${summary.dir}: no entries`;
  const header = ['stage', 'artifacts', 'bytes', 'failures', 'blobs', 'blob bytes'];
  const rows = Object.entries(summary.stages).map(([stage, s]) => [
    stage,
    formatCount(s.artifacts),
    formatBytes(s.artifactBytes),
    formatCount(s.failures),
    formatCount(s.blobs),
    formatBytes(s.blobBytes),
  ]);
  const artifacts = Object.values(summary.stages).reduce((sum, s) => sum + s.artifacts, 0);
  const artifactBytes = Object.values(summary.stages).reduce((sum, s) => sum + s.artifactBytes, 0);
  rows.push(['total', formatCount(artifacts), formatBytes(artifactBytes), formatCount(summary.failures), formatCount(summary.blobs), formatBytes(summary.blobBytes)]);

  const all = [header, ...rows];
  const widths = header.map((_, column) => Math.max(...all.map((row) => (row[column] ?? '').length)));
  // The stage column is left-aligned, the numbers right-aligned.
  const line = (row: readonly string[]): string =>
    row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0))).join('  ');
  return [
    `artifact cache ${summary.dir}: ${formatCount(summary.entries)} entries`,
    '',
    line(header),
    ...rows.map(line),
    '',
    'A blob shared by several stages counts in each of their rows and once in the total.',
  ].join('\n');
}

function positiveDays(value: string): number {
  const days = Number(value);
  if (value.trim() === '' || !Number.isFinite(days) || days <= 0) {
    throw new InvalidArgumentError(`expected a number of days greater than 0, such as 30 or 0.5, got "${value}"`);
  }
  return days;
}

export interface PruneSelection {
  readonly stage?: string;
  readonly failures?: boolean;
  readonly olderThanDays?: number;
  readonly all?: boolean;
}

/**
 * Removes the entries that match every given filter, then every blob file that no entry
 * references. With no filter it removes only unreferenced blobs; `all` removes every entry.
 */
export function pruneCache(cache: ArtifactCache, selection: PruneSelection, now = Date.now()): PruneResult {
  const filtered = selection.stage !== undefined || selection.failures === true || selection.olderThanDays !== undefined;
  if (selection.all === true && filtered) throw new Error('--all removes every entry and takes no --stage, --failures or --older-than');
  const olderThan = selection.olderThanDays === undefined ? undefined : new Date(now - selection.olderThanDays * DAY_MS);

  if (selection.all === true) return cache.prune();
  // `prune` removes every row when given no filter. A cut-off at the epoch matches no row, so
  // this call removes only blob files that no row references.
  const collectUnreferencedBlobs = (): PruneResult => cache.prune({ olderThan: new Date(0) });
  if (!filtered) return collectUnreferencedBlobs();

  if (selection.failures === true) {
    // `prune` has no kind filter, so failures are deleted one by one. They have no blob.
    const cutoff = olderThan?.getTime() ?? Number.POSITIVE_INFINITY;
    const failures = cache
      .list(selection.stage === undefined ? {} : { stage: selection.stage })
      .filter((entry) => entry.kind === 'failure' && entry.createdAt < cutoff);
    let entries = 0;
    for (const entry of failures) if (cache.delete(entry.key)) entries++;
    const blobs = collectUnreferencedBlobs();
    return { entries, blobs: blobs.blobs, bytes: blobs.bytes };
  }
  return cache.prune({ ...(selection.stage === undefined ? {} : { stage: selection.stage }), ...(olderThan === undefined ? {} : { olderThan }) });
}

/** Adds the `cache stats` and `cache prune` commands to `program`. */
export function addCacheCommands(program: Command): void {
  const cache = program.command('cache').description('Inspect or clean an artifact cache folder (the "cache:" folder of a pipeline spec)');

  cache
    .command('stats')
    .description('Print the entries, failures and blob sizes of each stage of a cache')
    .argument('<dir>', 'artifact cache folder (contains index.sqlite and blobs/)')
    .option('--json', 'print JSON instead of a table; sizes in bytes')
    .action((dir: string, options: { json?: boolean }) => {
      const opened = openExistingCache(dir);
      try {
        const summary = summarizeCache(opened);
        process.stdout.write(options.json === true ? `${JSON.stringify(summary, null, 2)}\n` : `${formatCacheSummary(summary)}\n`);
      } finally {
        opened.close();
      }
    });

  cache
    .command('prune')
    .summary('Remove entries by stage, kind or age, and blob files that no entry references')
    .description(
      'Remove the entries that match every given filter, then every blob file that no entry references. ' +
        'Without a filter, only unreferenced blob files (left by a crashed writer) are removed. ' +
        'Do not run it while a pipeline writes to the cache: a blob written but not yet indexed counts as unreferenced.',
    )
    .argument('<dir>', 'artifact cache folder (contains index.sqlite and blobs/)')
    .option('--stage <name>', 'remove entries of this stage (the names that "cache stats" lists)')
    .option('--failures', 'remove failure entries (images a stage rejected), so that the next run tries them again')
    .option('--older-than <days>', 'remove entries written more than this many days ago (decimals allowed, e.g. 0.5)', positiveDays)
    .option('--all', 'remove every entry and every blob')
    .option('--json', 'print JSON instead of a sentence; sizes in bytes')
    .action((dir: string, options: { stage?: string; failures?: boolean; olderThan?: number; all?: boolean; json?: boolean }) => {
      const opened = openExistingCache(dir);
      try {
        const stagesBefore = Object.keys(opened.stats().byStage).sort();
        const removed = pruneCache(opened, {
          ...(options.stage === undefined ? {} : { stage: options.stage }),
          ...(options.failures === true ? { failures: true } : {}),
          ...(options.olderThan === undefined ? {} : { olderThanDays: options.olderThan }),
          ...(options.all === true ? { all: true } : {}),
        });
        if (options.json === true) {
          process.stdout.write(`${JSON.stringify({ dir: opened.dir, removed }, null, 2)}\n`);
          return;
        }
        process.stdout.write(`removed ${formatCount(removed.entries)} entries and ${formatCount(removed.blobs)} blob files (${formatBytes(removed.bytes)}) from ${opened.dir}\n`);
        if (options.stage !== undefined && !stagesBefore.includes(options.stage)) {
          process.stdout.write(`the cache has no stage "${options.stage}"; its stages are: ${stagesBefore.join(', ') || 'none'}\n`);
        }
      } finally {
        opened.close();
      }
    });
}
