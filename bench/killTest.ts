/**
 * Crash-resume test of preprocessing. It runs the same preprocessing twice over the first N
 * unique images of the LFW View 2 pairs. Run-a goes without interruption. Run-b is killed with
 * SIGKILL K times at random moments, restarted each time in the same folders, and then left to
 * finish. Afterwards the two artifact sets must be byte-identical: the files under
 * out/, the rows of the cache index (timestamp columns aside) and the blob files of the cache.
 * It also checks that no temporary file is left and that each image with a face has one crop.
 * A kill is early (before the attempt's first crop), spread (at a random moment of its work) or
 * write (at the first temp file after such a moment, so while a file is being written).
 *
 * Usage: `npx tsx bench/killTest.ts [--images N] [--kills K] [--seed S] [--runner run|preprocess]
 * [--work DIR] [--keep]`. Defaults: 2000 images, 20 kills, a random seed (printed), the `run`
 * command with a generated pipeline spec, and a fresh folder under the system temp folder that
 * is deleted after a pass. The JSON summary goes to stdout, progress to stderr, and the exit
 * code is 1 when any check fails.
 *
 * The `preprocess` runner (`sphereface preprocess --dataset list`) does not resume, so every
 * restart recomputes everything. It exercises the mechanics of the harness and passes only
 * because the last run rewrites every file.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';

import Database from 'better-sqlite3';

import { readPairs, uniqueImages } from '../datasets/lfw.ts';
import { readDetectionsFile } from '../lib/detectionsFile.ts';
import { lfwPaths } from '../lib/paths.ts';
import { uniformGenerator } from '../lib/random.ts';

const CLI = fileURLToPath(new URL('../bin/sphereface.js', import.meta.url));
const INDEX_FILE = 'index.sqlite';
const SQLITE_SIDECARS = [`${INDEX_FILE}-wal`, `${INDEX_FILE}-shm`];

/** Earliest kill, in seconds after the start of an attempt. */
const MIN_DELAY_SECONDS = 0.2;
/** Share of the kills aimed before the first artifact of an attempt. */
const EARLY_KILL_SHARE = 0.2;
/** Share of the kills aimed at the moment a temp file appears, that is during a write. */
const WRITE_KILL_SHARE = 0.2;
/** How long a write kill waits for a temp file before it kills anyway, in seconds. */
const WRITE_KILL_WAIT_SECONDS = 5;
/**
 * Expected share of the remaining work that the spread and write kills still to come let pass
 * in all. Below 1 so that the run is not finished before the last kill.
 */
const SPREAD_WORK_SHARE = 0.8;
/** Largest share of the remaining work that one spread or write kill lets pass. */
const MAX_WORK_SHARE_PER_KILL = 0.85;
/** Differences printed in the summary; the count covers all of them. */
const MAX_LISTED_DIFFERENCES = 20;

export const RUNNERS = ['run', 'preprocess'] as const;
export type Runner = (typeof RUNNERS)[number];

export interface KillTestOptions {
  /** How many of the unique View 2 images to process, in order of first use. */
  readonly images: number;
  /** How many times the second run is killed before it may finish. */
  readonly kills: number;
  /** Seed of the kill schedule, an integer from 0 to 2^32 − 1. Random when undefined. */
  readonly seed?: number;
  /** `run`: `sphereface run SPEC`; `preprocess`: `sphereface preprocess --dataset list`. */
  readonly runner: Runner;
  /** Work folder; a fresh folder under `os.tmpdir()` when undefined. */
  readonly work?: string;
  /** Keep a fresh work folder after a pass (it is always kept after a failure). */
  readonly keep?: boolean;
  /** Receives one progress line at a time; default stderr. */
  readonly log?: (line: string) => void;
}

// ---------------------------------------------------------------------------------------------
// Kill schedule
// ---------------------------------------------------------------------------------------------

/** The seeded uniform generator of `lib/random.ts`, under the name the kill plan uses. */
export const seededRandom = uniformGenerator;

/** One planned kill: its kind and the uniform draw that places it. */
export interface PlannedKill {
  /**
   * `early`: before the first artifact of the attempt. `spread`: at a moment in its work.
   * `write`: at the first temp file created after such a moment, so during a file write.
   */
  readonly kind: 'early' | 'spread' | 'write';
  readonly draw: number;
}

/**
 * Plans `kills` kills in random order. About a fifth are early, at least one when there are two
 * kills or more. About a fifth wait for a write, at least one when there are three or more. The
 * rest are spread over the work. Equal seeds give equal plans.
 */
export function planKills(kills: number, random: () => number): PlannedKill[] {
  const early = kills >= 2 ? Math.max(1, Math.round(kills * EARLY_KILL_SHARE)) : 0;
  const write = kills >= 3 ? Math.max(1, Math.round(kills * WRITE_KILL_SHARE)) : 0;
  const kinds: Array<PlannedKill['kind']> = [
    ...Array<PlannedKill['kind']>(early).fill('early'),
    ...Array<PlannedKill['kind']>(write).fill('write'),
    ...Array<PlannedKill['kind']>(kills - early - write).fill('spread'),
  ];
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [kinds[i], kinds[j]] = [kinds[j] as PlannedKill['kind'], kinds[i] as PlannedKill['kind']];
  }
  return kinds.map((kind) => ({ kind, draw: random() }));
}

/** Timing of the uninterrupted reference run, in seconds from its start. */
export interface ReferenceTiming {
  /** When the first crop file (or its temp file) appeared. */
  readonly firstArtifactSeconds: number;
  readonly wallSeconds: number;
}

/**
 * Returns the delay of one kill in seconds. An early kill counts from the start of the attempt
 * and lands uniformly between 0.2 s and the reference run's first artifact. It also fires at
 * the attempt's own first artifact if that comes sooner. Spread and write kills count from the
 * attempt's first artifact, so a slower or faster start does not move them out of the work.
 * They fall within the work still to do (`remainingFraction` of the reference's work after its
 * first artifact). The expected share of that work is 0.8 divided by the spread and write kills
 * left, so the kills reach the end of the run without finishing it, and no kill lets more than
 * 85 % of the remaining work pass. For a write kill the delay is when it starts to wait for a
 * temp file.
 */
export function killDelaySeconds(kill: PlannedKill, timing: ReferenceTiming, remainingFraction: number, workKillsLeft: number): number {
  const startup = Math.max(MIN_DELAY_SECONDS, timing.firstArtifactSeconds);
  if (kill.kind === 'early') return MIN_DELAY_SECONDS + kill.draw * (startup - MIN_DELAY_SECONDS);
  const remainingWork = Math.max(0, timing.wallSeconds - startup) * Math.min(1, Math.max(0, remainingFraction));
  const share = (2 * SPREAD_WORK_SHARE * kill.draw) / Math.max(1, workKillsLeft);
  return Math.min(share, MAX_WORK_SHARE_PER_KILL) * remainingWork;
}

// ---------------------------------------------------------------------------------------------
// Running the command
// ---------------------------------------------------------------------------------------------

/** Process groups started and not yet known to have exited; killed if the harness is stopped. */
const liveGroups = new Set<number>();

/** Sends SIGKILL to every process of the group led by `pid`. */
function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

function groupExists(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

async function waitForGroupExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (groupExists(pid)) {
    if (performance.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Lists `dir` and every folder below it; [] if it is missing. */
function listFolders(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const folders = [dir];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) folders.push(...listFolders(path.join(dir, entry.name)));
  }
  return folders;
}

/**
 * Calls `onEvent` for each file event (creation, write, rename) under `dir`, `dir` included.
 * It watches every existing folder and each folder it sees created, one non-recursive watcher
 * per folder, because the recursive `fs.watch` of Node.js 20 on Linux reported a temp file
 * only after its rename, or not at all, when tried. Returns a function that stops watching.
 */
function watchTree(dir: string, onEvent: (file: string) => void): () => void {
  const watchers = new Map<string, fs.FSWatcher>();
  const watchFolder = (folder: string): void => {
    if (watchers.has(folder)) return;
    let watcher: fs.FSWatcher;
    try {
      watcher = fs.watch(folder, (_event, name) => {
        if (name === null) return;
        const file = path.join(folder, name);
        if (fs.statSync(file, { throwIfNoEntry: false })?.isDirectory()) watchFolder(file);
        else onEvent(file);
      });
    } catch (error) {
      // A folder removed between listing and watching has nothing left to watch.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    watcher.on('error', () => watcher.close());
    watchers.set(folder, watcher);
  };
  for (const folder of listFolders(dir)) watchFolder(folder);
  return () => {
    for (const watcher of watchers.values()) watcher.close();
  };
}

/** True for a crop file or its temp file: a `.png` (or `.png.tmp`-like) file under `out/`. */
function isCropEvent(runDir: string, file: string): boolean {
  const relative = path.relative(runDir, file).split(path.sep).join('/');
  return relative.startsWith('out/') && /\.png($|\.)/.test(path.basename(file));
}

/** How a kill is set off; see `killDelaySeconds`. */
export type KillTrigger = 'timer' | 'first artifact' | 'temp file';

interface KillSpec {
  readonly kind: PlannedKill['kind'];
  readonly delaySeconds: number;
  /** For spread and write kills: start the delay anyway after this many seconds without an artifact. */
  readonly anchorTimeoutSeconds: number;
}

interface AttemptResult {
  readonly pid: number;
  readonly seconds: number;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Seconds from the start to the first crop event (crop or temp file written), if any. */
  readonly firstArtifactSeconds: number | undefined;
  /** True when the harness sent SIGKILL and the process died of it. */
  readonly killed: boolean;
  /** After a kill: true when no process of the group remained within 5 s. */
  readonly groupGone: boolean | undefined;
  readonly trigger: KillTrigger | undefined;
  /** Seconds from the start to the kill. */
  readonly killedAtSeconds: number | undefined;
  /** The file whose event set off the kill. */
  readonly triggerFile: string | undefined;
}

/**
 * Runs `sphereface ARGS` in its own process group, with stdout and stderr going to `logFile`,
 * while watching `runDir` for the first crop event. With `kill`, it kills the whole group as
 * `killDelaySeconds` describes; with `timeoutSeconds`, it kills it and throws when it runs longer.
 */
async function runAttempt(
  args: readonly string[],
  logFile: string,
  runDir: string,
  options: { readonly kill?: KillSpec; readonly timeoutSeconds?: number },
): Promise<AttemptResult> {
  const fd = fs.openSync(logFile, 'w');
  const started = performance.now();
  const elapsed = (): number => (performance.now() - started) / 1000;
  const child = spawn(process.execPath, [CLI, ...args], { detached: true, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  const pid = child.pid;
  if (pid === undefined) {
    const error = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw new Error(`cannot start ${process.execPath} ${CLI}: ${error.message}`);
  }
  liveGroups.add(pid);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );

  const timers: NodeJS.Timeout[] = [];
  const after = (seconds: number, action: () => void): void => {
    timers.push(setTimeout(action, seconds * 1000));
  };
  let killSent = false;
  let trigger: KillTrigger | undefined;
  let killedAtSeconds: number | undefined;
  let triggerFile: string | undefined;
  const kill = (by: KillTrigger, file?: string): void => {
    if (killSent) return;
    killGroup(pid);
    killSent = true;
    killedAtSeconds = elapsed();
    trigger = by;
    triggerFile = file;
  };

  // The kill plan reacts to two events in the run folder. The first crop event starts the delay
  // of spread and write kills, and it is the latest moment of an early kill. Once a write kill
  // is armed, the next temp file event sets it off.
  const spec = options.kill;
  let firstArtifactSeconds: number | undefined;
  let waitingForTempFile = false;
  const startWorkDelay = (): void => {
    if (spec === undefined || spec.kind === 'early') return;
    after(spec.delaySeconds, () => {
      if (spec.kind === 'spread') return kill('timer');
      waitingForTempFile = true;
      after(WRITE_KILL_WAIT_SECONDS, () => kill('timer'));
    });
  };
  const onAnchor = (file?: string): void => {
    if (firstArtifactSeconds !== undefined) return;
    firstArtifactSeconds = elapsed();
    if (spec?.kind === 'early') kill('first artifact', file);
    else startWorkDelay();
  };
  const stopWatching = watchTree(runDir, (file) => {
    if (waitingForTempFile && isTempFileName(path.basename(file))) kill('temp file', file);
    if (firstArtifactSeconds === undefined && isCropEvent(runDir, file)) onAnchor(file);
  });
  if (spec?.kind === 'early') after(spec.delaySeconds, () => kill('timer'));
  if (spec !== undefined && spec.kind !== 'early') {
    after(spec.anchorTimeoutSeconds, () => {
      if (firstArtifactSeconds === undefined) {
        firstArtifactSeconds = elapsed();
        startWorkDelay();
      }
    });
  }
  let timedOut = false;
  if (options.timeoutSeconds !== undefined) {
    after(options.timeoutSeconds, () => {
      timedOut = true;
      killGroup(pid);
    });
  }

  const { code, signal } = await exited;
  const seconds = elapsed();
  for (const timer of timers) clearTimeout(timer);
  stopWatching();

  const groupGone = killSent || timedOut ? await waitForGroupExit(pid, 5000) : undefined;
  if (groupGone !== false) liveGroups.delete(pid);
  if (timedOut) throw new Error(`sphereface ${args.join(' ')} did not finish within ${options.timeoutSeconds} s; see ${logFile}`);
  const killed = killSent && signal === 'SIGKILL';
  return { pid, seconds, exitCode: code, signal, firstArtifactSeconds, killed, groupGone, trigger, killedAtSeconds, triggerFile };
}

/** Returns true when `sphereface RUNNER --help` prints that command's own usage. */
export async function isRunnerAvailable(runner: Runner): Promise<boolean> {
  // An unknown command makes commander print the top-level help, which starts differently.
  const output = await promisify(execFile)(process.execPath, [CLI, runner, '--help']).catch(() => ({ stdout: '' }));
  return output.stdout.startsWith(`Usage: sphereface ${runner}`);
}

interface RunFolders {
  readonly dir: string;
  readonly out: string;
  readonly cache: string;
  readonly spec: string;
}

function runFolders(work: string, name: string): RunFolders {
  const dir = path.join(work, name);
  return { dir, out: path.join(dir, 'out'), cache: path.join(dir, 'cache'), spec: path.join(work, `${name}.spec.json`) };
}

/** Writes the pipeline spec of `sphereface run`; JSON is a subset of the YAML it reads. */
function writeSpec(folders: RunFolders, list: string, root: string): void {
  const spec = {
    version: 1,
    name: 'kill-test-preprocess',
    cache: folders.cache,
    stages: [
      { op: 'imageList', params: { list, root } },
      { op: 'readImages' },
      { op: 'detectFaces' },
      { op: 'similarityAlign' },
      { op: 'writeCrops', params: { out: folders.out } },
    ],
  };
  fs.writeFileSync(folders.spec, `${JSON.stringify(spec, null, 2)}\n`);
}

/** Per-stage cache hits as the runner itself reported them. */
export interface RunnerCounts {
  /** `report`: the `--report` file of a finished run; `progress log`: its last progress line. */
  readonly source: 'report' | 'progress log';
  /** Stage label → records served from the cache, and records done when the log gives it. */
  readonly stages: Readonly<Record<string, { readonly cached: number; readonly done?: number }>>;
}

function numberField(value: unknown, name: string): number | undefined {
  const field = typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[name] : undefined;
  return typeof field === 'number' ? field : undefined;
}

/**
 * Reads the cache hits that `sphereface run` reported: from the report file when the attempt
 * finished, else from the last "pipeline progress" line of its JSON log (written every 15 s, so
 * a short attempt has none). Returns undefined when neither is there.
 * NOTE: this follows the report and log fields of `sphereface run` as of this writing
 * (`stages[].label/cacheHits`, `stages.<label>.cached/done`); other shapes are ignored.
 */
function readRunnerCounts(logFile: string, reportFile: string): RunnerCounts | undefined {
  let report: { stages?: unknown } | undefined;
  try {
    report = JSON.parse(fs.readFileSync(reportFile, 'utf8')) as { stages?: unknown };
  } catch {
    // No report (a killed attempt) or one cut short by the kill: the log is read instead.
  }
  if (report !== undefined && Array.isArray(report.stages)) {
    const stages: Record<string, { cached: number }> = {};
    for (const stage of report.stages as unknown[]) {
      const label = (stage as { label?: unknown }).label;
      const cached = numberField(stage, 'cacheHits');
      if (typeof label === 'string' && cached !== undefined) stages[label] = { cached };
    }
    return { source: 'report', stages };
  }

  const lines = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').split('\n') : [];
  for (const line of lines.reverse()) {
    if (!line.includes('"pipeline progress"')) continue;
    let parsed: { stages?: Record<string, unknown> };
    try {
      parsed = JSON.parse(line) as { stages?: Record<string, unknown> };
    } catch {
      // A line cut short by the kill.
      continue;
    }
    const stages: Record<string, { cached: number; done?: number }> = {};
    for (const [label, counts] of Object.entries(parsed.stages ?? {})) {
      const cached = numberField(counts, 'cached');
      const done = numberField(counts, 'done');
      if (cached !== undefined) stages[label] = done === undefined ? { cached } : { cached, done };
    }
    return { source: 'progress log', stages };
  }
  return undefined;
}

function formatRunnerCounts(counts: RunnerCounts | undefined): string {
  if (counts === undefined) return '';
  const stages = Object.entries(counts.stages).map(([label, c]) => `${label} ${c.cached}`);
  return `; cache hits (${counts.source}): ${stages.join(', ')}`;
}

function runnerArgs(runner: Runner, folders: RunFolders, list: string, root: string, report: string): string[] {
  if (runner === 'run') return ['run', folders.spec, '--no-progress', '--report', report];
  return ['preprocess', '--dataset', 'list', '--list', list, '--root', root, '--out', folders.out, '--no-progress'];
}

// ---------------------------------------------------------------------------------------------
// Artifact sets
// ---------------------------------------------------------------------------------------------

/** Names of files a crashed writer leaves behind: temp-and-rename files and partial outputs. */
export function isTempFileName(name: string): boolean {
  return name.startsWith('.tmp-') || name.endsWith('.partial') || name.endsWith('.tmp') || name.endsWith('-journal');
}

function sha256File(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Lists the files under `dir` as paths relative to it with `/` separators; [] if it is missing. */
function listFiles(dir: string, prefix = ''): string[] {
  const folder = path.join(dir, prefix);
  if (!fs.existsSync(folder)) return [];
  const files: string[] = [];
  for (const entry of fs.readdirSync(folder, { withFileTypes: true })) {
    const relative = prefix === '' ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) files.push(...listFiles(dir, relative));
    else if (entry.isFile()) files.push(relative);
  }
  return files.sort();
}

/** Counts crop files (`.png`, temp files aside) under `out`, stopping at `limit`. */
async function countCrops(out: string, limit = Number.POSITIVE_INFINITY): Promise<number> {
  let count = 0;
  const entries = await fs.promises.readdir(out, { withFileTypes: true, recursive: true }).catch(() => []);
  for (const entry of entries) {
    if (entry.isFile() && entry.name.endsWith('.png') && !isTempFileName(entry.name) && ++count >= limit) break;
  }
  return count;
}

/** An index row with every compared column, encoded as JSON with sorted keys. */
type EncodedRow = string;

export interface CacheContents {
  readonly info: ReadonlyMap<string, string>;
  /** Key → the row's compared columns. */
  readonly rows: ReadonlyMap<string, EncodedRow>;
  /** Columns of `entries` left out of the comparison because they hold times. */
  readonly ignoredColumns: readonly string[];
  readonly rowsByStage: Readonly<Record<string, { artifacts: number; failures: number }>>;
  readonly duplicateKeys: readonly string[];
  /** Blob hash → size in bytes, for every blob file whose content hashes to its name. */
  readonly blobs: ReadonlyMap<string, number>;
  /** Blob files whose content does not hash to their name. */
  readonly damagedBlobs: readonly string[];
  /** Blobs that index rows reference but that have no file. */
  readonly missingBlobs: readonly string[];
  /** Blob files that no index row references (left by a kill between rename and commit). */
  readonly unreferencedBlobs: readonly string[];
  /** Other files of the cache folder (path → SHA-256), outside blobs/ and the index. */
  readonly otherFiles: ReadonlyMap<string, string>;
}

export interface ArtifactSet {
  /** Files under out/ (relative path → SHA-256), temp files aside. */
  readonly out: ReadonlyMap<string, string>;
  /** Undefined when the run has no cache index. */
  readonly cache: CacheContents | undefined;
  /** Temp files anywhere in the run folder, relative to it. */
  readonly tempFiles: readonly string[];
  /** SQLite's -wal and -shm files next to the index, relative to the run folder. */
  readonly sqliteSidecars: readonly string[];
}

const TIME_COLUMN = /(^|_)(at|time|timestamp)$|^(created|updated|modified|accessed)/i;

/**
 * Opens a copy of the index read-only. The copy (index and WAL) keeps the harness from touching
 * the folder it compares: even a read-only connection may create a -shm file next to the index.
 */
function withIndexCopy<T>(cacheDir: string, read: (db: Database.Database) => T): T | undefined {
  const index = path.join(cacheDir, INDEX_FILE);
  if (!fs.existsSync(index)) return undefined;
  const copyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kill-test-index-'));
  try {
    fs.copyFileSync(index, path.join(copyDir, INDEX_FILE));
    const wal = `${index}-wal`;
    if (fs.existsSync(wal)) fs.copyFileSync(wal, path.join(copyDir, `${INDEX_FILE}-wal`));
    const db = new Database(path.join(copyDir, INDEX_FILE), { readonly: true, fileMustExist: true });
    try {
      return read(db);
    } finally {
      db.close();
    }
  } finally {
    fs.rmSync(copyDir, { recursive: true, force: true });
  }
}

/** Returns the number of index rows in a cache folder, 0 when it has no index yet. */
function countIndexRows(cacheDir: string): number {
  return withIndexCopy(cacheDir, (db) => (db.prepare('SELECT COUNT(*) AS n FROM entries').get() as { n: number }).n) ?? 0;
}

function readCacheContents(cacheDir: string): CacheContents | undefined {
  const index = withIndexCopy(cacheDir, (db) => {
    const info = new Map((db.prepare('SELECT name, value FROM cache_info').all() as Array<{ name: string; value: string }>).map((r) => [r.name, r.value]));
    const columns = (db.prepare('PRAGMA table_info(entries)').all() as Array<{ name: string }>).map((c) => c.name);
    const ignoredColumns = columns.filter((name) => TIME_COLUMN.test(name));
    const compared = columns.filter((name) => !TIME_COLUMN.test(name)).sort();
    const rows = new Map<string, EncodedRow>();
    const rowsByStage: Record<string, { artifacts: number; failures: number }> = {};
    const referenced = new Set<string>();
    for (const raw of db.prepare('SELECT * FROM entries ORDER BY key').iterate() as Iterable<Record<string, unknown>>) {
      const comparedColumns = Object.fromEntries(compared.map((name) => [name, raw[name]]));
      rows.set(String(raw['key']), JSON.stringify(comparedColumns));
      const counts = (rowsByStage[String(raw['stage'])] ??= { artifacts: 0, failures: 0 });
      if (raw['kind'] === 'failure') counts.failures++;
      else counts.artifacts++;
      if (typeof raw['blob'] === 'string') referenced.add(raw['blob']);
    }
    const duplicateKeys = (db.prepare('SELECT key FROM entries GROUP BY key HAVING COUNT(*) > 1').all() as Array<{ key: string }>).map((r) => r.key);
    return { info, rows, ignoredColumns, rowsByStage, duplicateKeys, referenced };
  });
  if (index === undefined) return undefined;

  const blobs = new Map<string, number>();
  const damagedBlobs: string[] = [];
  const otherFiles = new Map<string, string>();
  for (const relative of listFiles(cacheDir)) {
    const name = path.posix.basename(relative);
    if (isTempFileName(name) || relative === INDEX_FILE || SQLITE_SIDECARS.includes(relative)) continue;
    const blob = /^blobs\/([0-9a-f]{2})\/([0-9a-f]{62})$/.exec(relative);
    if (blob === null) {
      otherFiles.set(relative, sha256File(path.join(cacheDir, relative)));
      continue;
    }
    const hash = `${blob[1]}${blob[2]}`;
    const file = path.join(cacheDir, relative);
    if (sha256File(file) === hash) blobs.set(hash, fs.statSync(file).size);
    else damagedBlobs.push(hash);
  }
  const missingBlobs = [...index.referenced].filter((hash) => !blobs.has(hash) && !damagedBlobs.includes(hash)).sort();
  const unreferencedBlobs = [...blobs.keys()].filter((hash) => !index.referenced.has(hash)).sort();
  const { referenced: _referenced, ...rest } = index;
  return { ...rest, blobs, damagedBlobs, missingBlobs, unreferencedBlobs, otherFiles };
}

/** Reads the artifact set of one run folder (with `out/` and optionally `cache/`). */
export function collectArtifactSet(runDir: string): ArtifactSet {
  const tempFiles = listFiles(runDir).filter((relative) => isTempFileName(path.posix.basename(relative)));
  const sqliteSidecars = SQLITE_SIDECARS.map((name) => `cache/${name}`).filter((relative) => fs.existsSync(path.join(runDir, relative)));
  const outDir = path.join(runDir, 'out');
  const out = new Map<string, string>();
  for (const relative of listFiles(outDir)) {
    if (!isTempFileName(path.posix.basename(relative))) out.set(relative, sha256File(path.join(outDir, relative)));
  }
  return { out, cache: readCacheContents(path.join(runDir, 'cache')), tempFiles, sqliteSidecars };
}

function compareMaps(label: string, reference: ReadonlyMap<string, string | number>, killed: ReadonlyMap<string, string | number>): string[] {
  const differences: string[] = [];
  for (const [name, value] of reference) {
    const other = killed.get(name);
    if (other === undefined) differences.push(`${label} ${name}: only in the reference run`);
    else if (other !== value) differences.push(`${label} ${name}: differs (reference ${String(value)}, killed run ${String(other)})`);
  }
  for (const name of killed.keys()) {
    if (!reference.has(name)) differences.push(`${label} ${name}: only in the killed run`);
  }
  return differences;
}

/** Lists every difference between the artifact sets of two runs; [] when byte-identical. */
export function compareArtifactSets(reference: ArtifactSet, killed: ArtifactSet): string[] {
  const differences = compareMaps('out/', reference.out, killed.out);
  if ((reference.cache === undefined) !== (killed.cache === undefined)) {
    differences.push(`cache index: present only in the ${reference.cache === undefined ? 'killed' : 'reference'} run`);
  }
  if (reference.cache !== undefined && killed.cache !== undefined) {
    differences.push(...compareMaps('cache_info', reference.cache.info, killed.cache.info));
    differences.push(...compareMaps('index row', reference.cache.rows, killed.cache.rows));
    differences.push(...compareMaps('blob', reference.cache.blobs, killed.cache.blobs));
    differences.push(...compareMaps('cache file', reference.cache.otherFiles, killed.cache.otherFiles));
  }
  return differences;
}

export interface CropCheck {
  readonly images: number;
  readonly crops: number;
  /** Images with a face, from out/detections.jsonl or else from the cache's failure rows. */
  readonly imagesWithFace: number | undefined;
  readonly imagesWithFaceSource: 'detections file' | 'cache failures' | 'unknown';
  /** Crop files that belong to no listed image, or a second file for one image. */
  readonly strayCrops: readonly string[];
  /** Images with a face (known per image only from a detections file) that have no crop. */
  readonly missingCrops: readonly string[];
  readonly ok: boolean;
}

function cropOf(imageId: string): string {
  return `${imageId.replace(/\.[^./]+$/, '')}.png`;
}

/** Checks that every image with a face has exactly one crop and that no other crop exists. */
export async function checkCrops(runDir: string, set: ArtifactSet, imageIds: readonly string[]): Promise<CropCheck> {
  const expected = new Set(imageIds.map(cropOf));
  const crops = [...set.out.keys()].filter((relative) => relative.endsWith('.png'));
  const strayCrops = crops.filter((relative) => !expected.has(relative));

  let imagesWithFace: number | undefined;
  let source: CropCheck['imagesWithFaceSource'] = 'unknown';
  let missingCrops: string[] = [];
  const detectionsFile = path.join(runDir, 'out', 'detections.jsonl');
  if (fs.existsSync(detectionsFile)) {
    const detections = await readDetectionsFile(detectionsFile);
    const withFace = imageIds.filter((id) => {
      const entry = detections.entries.get(id);
      return entry !== undefined && (entry.faces.length > 0 || entry.substituted === true);
    });
    imagesWithFace = withFace.length;
    source = 'detections file';
    missingCrops = withFace.filter((id) => !set.out.has(cropOf(id)));
  } else if (set.cache !== undefined) {
    // A rejected image gets one failure row, in the stage that rejected it; later stages pass
    // the rejection on without storing it.
    const failures = Object.values(set.cache.rowsByStage).reduce((sum, counts) => sum + counts.failures, 0);
    imagesWithFace = imageIds.length - failures;
    source = 'cache failures';
  }
  const ok = strayCrops.length === 0 && missingCrops.length === 0 && (imagesWithFace === undefined || crops.length === imagesWithFace);
  return { images: imageIds.length, crops: crops.length, imagesWithFace, imagesWithFaceSource: source, strayCrops, missingCrops, ok };
}

/**
 * Lists the problems of one run's artifact set on its own: temp files, duplicate or surplus
 * index rows, damaged or missing blobs.
 */
function checkOwnConsistency(label: string, set: ArtifactSet, images: number): string[] {
  const problems = set.tempFiles.map((file) => `${label}: temp file left behind: ${file}`);
  if (set.cache === undefined) return problems;
  problems.push(...set.cache.duplicateKeys.map((key) => `${label}: index key ${key} appears more than once`));
  for (const [stage, counts] of Object.entries(set.cache.rowsByStage)) {
    const rows = counts.artifacts + counts.failures;
    // Every stage of the spec maps one image to one record, so more rows than images means
    // that a restart stored an artifact again under a new key.
    if (rows > images) problems.push(`${label}: stage ${stage} has ${rows} index rows for ${images} images`);
  }
  problems.push(...set.cache.damagedBlobs.map((hash) => `${label}: blob ${hash} does not hash to its name`));
  problems.push(...set.cache.missingBlobs.map((hash) => `${label}: blob ${hash} is referenced by the index but missing`));
  return problems;
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

interface Progress {
  readonly crops: number;
  readonly indexRows: number;
}

export interface AttemptRecord {
  readonly attempt: number;
  readonly kind: PlannedKill['kind'] | 'final';
  /**
   * Planned delay: from the start for an early kill, from the first artifact for the others.
   * A write kill starts then to wait for a temp file.
   */
  readonly delaySeconds: number | undefined;
  /** Seconds from the start to the attempt's first crop event. */
  readonly firstArtifactSeconds: number | undefined;
  readonly killedAtSeconds: number | undefined;
  /** What set off the kill; a write kill that saw no temp file within 5 s falls back to `timer`. */
  readonly trigger: KillTrigger | undefined;
  /** The temp file that set off a write kill, relative to the run folder. */
  readonly triggerFile: string | undefined;
  readonly outcome: 'killed' | 'finished' | 'failed';
  readonly exitCode: number | null;
  readonly seconds: number;
  /** Crops and index rows present when the attempt started: what it could resume from. */
  readonly atStart: Progress;
  readonly atEnd: Progress;
  /** Temp files found right after the kill, relative to the run folder (at most 5 listed). */
  readonly tempFilesAfterKill: readonly string[] | undefined;
  readonly runnerCounts: RunnerCounts | undefined;
  readonly log: string;
}

export interface KillTestSummary {
  readonly runner: Runner;
  readonly seed: number;
  readonly images: number;
  readonly kills: number;
  readonly work: string;
  readonly reference: { readonly seconds: number; readonly firstArtifactSeconds: number; readonly crops: number; readonly log: string };
  readonly attempts: readonly AttemptRecord[];
  readonly killsLanded: number;
  /** Kills after which a temp file was found: the kill landed while a file was being written. */
  readonly killsLeavingTempFiles: number;
  readonly killedRunSeconds: number;
  readonly comparison: {
    readonly cache: 'compared' | 'absent in both runs' | 'absent in one run';
    readonly outFiles: { readonly reference: number; readonly killed: number };
    readonly indexRows: { readonly reference: number; readonly killed: number } | undefined;
    readonly blobs: { readonly reference: number; readonly killed: number } | undefined;
    readonly ignoredColumns: readonly string[];
    readonly notCompared: readonly string[];
    readonly sqliteSidecars: { readonly reference: readonly string[]; readonly killed: readonly string[] };
    readonly unreferencedBlobs: { readonly reference: number; readonly killed: number } | undefined;
    readonly crops: { readonly reference: CropCheck; readonly killed: CropCheck };
  };
  readonly differenceCount: number;
  readonly differences: readonly string[];
  readonly problems: readonly string[];
  readonly pass: boolean;
}

interface TestSetup {
  readonly runner: Runner;
  readonly work: string;
  /** True when the harness created the work folder, so it may delete it. */
  readonly created: boolean;
  readonly list: string;
  readonly root: string;
  readonly ids: readonly string[];
  readonly runA: RunFolders;
  readonly runB: RunFolders;
}

async function writeImageList(work: string, count: number): Promise<{ list: string; root: string; ids: string[] }> {
  const paths = lfwPaths();
  const pairs = await readPairs(paths.pairs, { imagesDir: paths.images });
  const all = uniqueImages(pairs.pairs);
  if (all.length < count) throw new Error(`--images ${count} is more than the ${all.length} unique images of ${paths.pairs}`);
  const ids = all.slice(0, count).map((image) => image.id);
  const list = path.join(work, 'list.txt');
  fs.writeFileSync(list, `${ids.join('\n')}\n`);
  return { list, root: paths.images, ids };
}

/** Creates the work folder, the image list, both run folders and, for `run`, their specs. */
async function setUpTest(options: KillTestOptions): Promise<TestSetup> {
  let work: string;
  let created = false;
  if (options.work === undefined) {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'sphereface-kill-test-'));
    created = true;
  } else {
    work = path.resolve(options.work);
    for (const name of ['run-a', 'run-b']) {
      if (fs.existsSync(path.join(work, name))) {
        throw new Error(`work folder ${work} already contains ${name}/ from an earlier test; pass an empty or new folder to --work`);
      }
    }
  }
  fs.mkdirSync(path.join(work, 'logs'), { recursive: true });

  const { list, root, ids } = await writeImageList(work, options.images);
  const runA = runFolders(work, 'run-a');
  const runB = runFolders(work, 'run-b');
  for (const folders of [runA, runB]) {
    fs.mkdirSync(folders.dir, { recursive: true });
    if (options.runner === 'run') writeSpec(folders, list, root);
  }
  return { runner: options.runner, work, created, list, root, ids, runA, runB };
}

function logFileOf(setup: TestSetup, name: string): string {
  return path.join(setup.work, 'logs', `${name}.log`);
}

/**
 * Runs the command for one attempt and reads the cache hits it reported. The report file sits
 * next to its log, outside the run folder.
 */
async function runSetupAttempt(
  setup: TestSetup,
  folders: RunFolders,
  name: string,
  options: Parameters<typeof runAttempt>[3],
): Promise<AttemptResult & { readonly runnerCounts: RunnerCounts | undefined }> {
  const report = path.join(setup.work, 'logs', `${name}.report.json`);
  const log = logFileOf(setup, name);
  const result = await runAttempt(runnerArgs(setup.runner, folders, setup.list, setup.root, report), log, folders.dir, options);
  return { ...result, runnerCounts: readRunnerCounts(log, report) };
}

async function progressOf(folders: RunFolders): Promise<Progress> {
  return { crops: await countCrops(folders.out), indexRows: countIndexRows(folders.cache) };
}

function collectTempFiles(dir: string): string[] {
  return listFiles(dir)
    .filter((relative) => isTempFileName(path.posix.basename(relative)))
    .slice(0, 5);
}

/** Runs the uninterrupted reference into run-a and measures when its first crop appeared. */
async function runReference(setup: TestSetup): Promise<KillTestSummary['reference']> {
  const log = logFileOf(setup, 'run-a');
  const result = await runSetupAttempt(setup, setup.runA, 'run-a', {});
  if (result.exitCode !== 0) throw new Error(`the reference run failed with exit code ${result.exitCode ?? result.signal}; see ${log}`);
  const crops = await countCrops(setup.runA.out);
  if (result.firstArtifactSeconds === undefined || crops === 0) {
    throw new Error(`the reference run wrote no crop under ${setup.runA.out}; the kill test needs images with faces (see ${log})`);
  }
  return { seconds: result.seconds, firstArtifactSeconds: result.firstArtifactSeconds, crops, log };
}

/**
 * Starts run-b once per planned kill, each time in the same folders, and kills it. An attempt
 * that finishes or fails before its kill is recorded as a problem and ends the loop, because
 * every later attempt would then test nothing.
 */
async function runKilledAttempts(
  setup: TestSetup,
  plan: readonly PlannedKill[],
  reference: KillTestSummary['reference'],
  log: (line: string) => void,
): Promise<{ attempts: AttemptRecord[]; problems: string[] }> {
  const timing: ReferenceTiming = { firstArtifactSeconds: reference.firstArtifactSeconds, wallSeconds: reference.seconds };
  const attempts: AttemptRecord[] = [];
  const problems: string[] = [];
  for (const [index, kill] of plan.entries()) {
    const attempt = index + 1;
    const name = `run-b-attempt-${String(attempt).padStart(2, '0')}`;
    const atStart = await progressOf(setup.runB);
    const workKillsLeft = plan.slice(index).filter((k) => k.kind !== 'early').length;
    const delaySeconds = killDelaySeconds(kill, timing, 1 - atStart.crops / reference.crops, workKillsLeft);

    const anchorTimeoutSeconds = 2 * reference.firstArtifactSeconds + 5;
    const result = await runSetupAttempt(setup, setup.runB, name, { kill: { kind: kill.kind, delaySeconds, anchorTimeoutSeconds } });
    const tempFilesAfterKill = result.killed ? collectTempFiles(setup.runB.dir) : undefined;
    const atEnd = await progressOf(setup.runB);
    let outcome: AttemptRecord['outcome'] = 'killed';
    if (!result.killed) outcome = result.exitCode === 0 ? 'finished' : 'failed';
    const triggerFile = result.triggerFile === undefined ? undefined : path.relative(setup.runB.dir, result.triggerFile);
    attempts.push({
      attempt,
      kind: kill.kind,
      delaySeconds,
      firstArtifactSeconds: result.firstArtifactSeconds,
      killedAtSeconds: result.killedAtSeconds,
      trigger: result.trigger,
      triggerFile,
      outcome,
      exitCode: result.exitCode,
      seconds: result.seconds,
      atStart,
      atEnd,
      tempFilesAfterKill,
      runnerCounts: result.runnerCounts,
      log: logFileOf(setup, name),
    });

    const from = kill.kind === 'early' ? 'the start' : 'the first artifact';
    const by = result.trigger === undefined ? '' : ` by ${result.trigger}${triggerFile === undefined ? '' : ` ${triggerFile}`}`;
    const left = tempFilesAfterKill?.length ? `; temp files left by the kill: ${tempFilesAfterKill.join(', ')}` : '';
    log(
      `attempt ${attempt}/${plan.length} (${kill.kind}, ${delaySeconds.toFixed(2)} s after ${from}): ${outcome}${by} after ${result.seconds.toFixed(2)} s; ` +
        `crops ${atStart.crops} → ${atEnd.crops}, index rows ${atStart.indexRows} → ${atEnd.indexRows}${left}${formatRunnerCounts(result.runnerCounts)}`,
    );
    if (result.groupGone === false) problems.push(`attempt ${attempt}: processes of group ${result.pid} still ran 5 s after SIGKILL`);
    if (outcome === 'failed') {
      problems.push(`attempt ${attempt} failed with exit code ${result.exitCode ?? result.signal} before its kill; see ${logFileOf(setup, name)}`);
      break;
    }
    if (outcome === 'finished') {
      problems.push(`attempt ${attempt} finished before its kill, so only ${attempt - 1} of ${plan.length} kills landed during a run`);
      break;
    }
  }
  return { attempts, problems };
}

/** Lets run-b finish, with a time limit of three times the reference plus two minutes. */
async function runFinalAttempt(setup: TestSetup, attempt: number, referenceSeconds: number, log: (line: string) => void): Promise<AttemptRecord> {
  const name = 'run-b-final';
  const atStart = await progressOf(setup.runB);
  const result = await runSetupAttempt(setup, setup.runB, name, { timeoutSeconds: 3 * referenceSeconds + 120 });
  const atEnd = await progressOf(setup.runB);
  const outcome = result.exitCode === 0 ? 'finished' : 'failed';
  log(
    `final attempt: ${outcome} after ${result.seconds.toFixed(1)} s; crops ${atStart.crops} → ${atEnd.crops}, ` +
      `index rows ${atStart.indexRows} → ${atEnd.indexRows}${formatRunnerCounts(result.runnerCounts)}`,
  );
  return {
    attempt,
    kind: 'final',
    delaySeconds: undefined,
    firstArtifactSeconds: result.firstArtifactSeconds,
    killedAtSeconds: undefined,
    trigger: undefined,
    triggerFile: undefined,
    outcome,
    exitCode: result.exitCode,
    seconds: result.seconds,
    atStart,
    atEnd,
    tempFilesAfterKill: undefined,
    runnerCounts: result.runnerCounts,
    log: logFileOf(setup, name),
  };
}

/** Compares run-b with run-a and checks each on its own; returns the comparison and its problems. */
async function compareRuns(setup: TestSetup): Promise<{ comparison: KillTestSummary['comparison']; differences: string[]; problems: string[] }> {
  const reference = collectArtifactSet(setup.runA.dir);
  const killed = collectArtifactSet(setup.runB.dir);
  const differences = compareArtifactSets(reference, killed);
  const problems = [...checkOwnConsistency('reference run', reference, setup.ids.length), ...checkOwnConsistency('killed run', killed, setup.ids.length)];

  const crops = { reference: await checkCrops(setup.runA.dir, reference, setup.ids), killed: await checkCrops(setup.runB.dir, killed, setup.ids) };
  for (const [label, check] of [['reference run', crops.reference], ['killed run', crops.killed]] as const) {
    if (check.ok) continue;
    problems.push(
      `${label}: ${check.crops} crops for ${check.imagesWithFace ?? '?'} images with a face (${check.imagesWithFaceSource}), ` +
        `${check.strayCrops.length} stray, ${check.missingCrops.length} missing`,
    );
  }
  if (differences.length > 0) problems.push(`${differences.length} difference(s) between the artifact sets`);

  const both = reference.cache !== undefined && killed.cache !== undefined ? { reference: reference.cache, killed: killed.cache } : undefined;
  const ignored = new Set([...(reference.cache?.ignoredColumns ?? []), ...(killed.cache?.ignoredColumns ?? [])]);
  let cache: KillTestSummary['comparison']['cache'] = 'compared';
  if (both === undefined) cache = reference.cache || killed.cache ? 'absent in one run' : 'absent in both runs';
  const comparison: KillTestSummary['comparison'] = {
    cache,
    outFiles: { reference: reference.out.size, killed: killed.out.size },
    indexRows: both && { reference: both.reference.rows.size, killed: both.killed.rows.size },
    blobs: both && { reference: both.reference.blobs.size, killed: both.killed.blobs.size },
    ignoredColumns: [...ignored].map((column) => `entries.${column}`),
    notCompared: [
      `cache/${INDEX_FILE} as bytes: its page layout depends on the write history, so its rows are compared instead`,
      `cache/${INDEX_FILE}-wal and -shm: SQLite's own state, not temp files; the WAL holds committed rows, which are read with the index`,
    ],
    sqliteSidecars: { reference: reference.sqliteSidecars, killed: killed.sqliteSidecars },
    unreferencedBlobs: both && { reference: both.reference.unreferencedBlobs.length, killed: both.killed.unreferencedBlobs.length },
    crops,
  };
  return { comparison, differences, problems };
}

/** Runs the whole kill test and returns its summary; `pass` is false when any check failed. */
export async function runKillTest(options: KillTestOptions): Promise<KillTestSummary> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const seed = options.seed ?? randomInt(0, 2 ** 32 - 1);
  const setup = await setUpTest(options);
  log(`kill test: runner ${options.runner}, ${options.images} images, ${options.kills} kills, seed ${seed}, work folder ${setup.work}`);

  const reference = await runReference(setup);
  log(`reference run: ${reference.seconds.toFixed(1)} s, first crop written after ${reference.firstArtifactSeconds.toFixed(1)} s, ${reference.crops} crops`);

  const plan = planKills(options.kills, seededRandom(seed));
  const { attempts, problems } = await runKilledAttempts(setup, plan, reference, log);
  const final = await runFinalAttempt(setup, attempts.length + 1, reference.seconds, log);
  attempts.push(final);
  if (final.outcome === 'failed') problems.push(`the final attempt failed with exit code ${final.exitCode}; see ${final.log}`);

  const { comparison, differences, problems: comparisonProblems } = await compareRuns(setup);
  problems.push(...comparisonProblems);

  const killed = attempts.filter((a) => a.outcome === 'killed');
  const summary: KillTestSummary = {
    runner: options.runner,
    seed,
    images: setup.ids.length,
    kills: options.kills,
    work: setup.work,
    reference,
    attempts,
    killsLanded: killed.length,
    killsLeavingTempFiles: killed.filter((a) => (a.tempFilesAfterKill?.length ?? 0) > 0).length,
    killedRunSeconds: attempts.reduce((sum, a) => sum + a.seconds, 0),
    comparison,
    differenceCount: differences.length,
    differences: differences.slice(0, MAX_LISTED_DIFFERENCES),
    problems,
    pass: problems.length === 0,
  };
  if (summary.pass && setup.created && options.keep !== true) fs.rmSync(setup.work, { recursive: true, force: true });
  return summary;
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

function parseCount(name: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(parsed) || parsed < min) {
    throw new Error(`--${name} expects an integer of at least ${min}, got "${value}"`);
  }
  return parsed;
}

export function parseKillTestArgs(argv: readonly string[]): KillTestOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      images: { type: 'string' },
      kills: { type: 'string' },
      seed: { type: 'string' },
      runner: { type: 'string' },
      work: { type: 'string' },
      keep: { type: 'boolean' },
    },
    strict: true,
  });
  const runner = values.runner ?? 'run';
  if (!(RUNNERS as readonly string[]).includes(runner)) throw new Error(`--runner expects one of ${RUNNERS.join(', ')}, got "${runner}"`);
  const seed = values.seed === undefined ? undefined : parseCount('seed', values.seed, 0, 0);
  if (seed !== undefined && seed >= 2 ** 32) throw new Error(`--seed expects an integer below 2^32, got "${values.seed}"`);
  return {
    images: parseCount('images', values.images, 2000, 1),
    kills: parseCount('kills', values.kills, 20, 1),
    ...(seed === undefined ? {} : { seed }),
    runner: runner as Runner,
    ...(values.work === undefined ? {} : { work: values.work }),
    keep: values.keep ?? false,
  };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const pid of liveGroups) killGroup(pid);
      process.exit(130);
    });
  }
  try {
    const options = parseKillTestArgs(process.argv.slice(2));
    if (!(await isRunnerAvailable(options.runner))) {
      throw new Error(`sphereface ${options.runner} is not available in ${CLI}; pass --runner preprocess until it exists`);
    }
    const summary = await runKillTest(options);
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    process.stderr.write(summary.pass ? 'kill test passed\n' : `kill test FAILED; work folder kept: ${summary.work}\n`);
    process.exitCode = summary.pass ? 0 : 1;
  } catch (error) {
    process.stderr.write(`kill test: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
