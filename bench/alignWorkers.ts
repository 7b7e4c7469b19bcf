/**
 * Decode + align throughput of `decodeAndAlignInWorkers` against two paths on the main thread:
 *
 * - `serial`: one image at a time on one core. readImages with decode concurrency 1 and
 *   `sharp.concurrency(1)`, then similarityAlign, then the next image, in a process whose libuv
 *   pool has one thread (UV_THREADPOOL_SIZE=1). The main thread waits while an image decodes, so
 *   the process uses about one core. This is the single-thread baseline.
 * - `overlapped`: the default stages, as bench/align.ts runs them. readImages decodes two images
 *   at once on the libuv pool while the main thread aligns, so the process uses more than one
 *   core.
 * - `pool`: decodeAndAlignInWorkers with THREADS worker threads.
 *
 * Every pass runs in a fresh child process, the three modes in turn and in a rotated order each
 * round, on the same LFW images. Each child prints its images per second, the cores it used
 * (process CPU time of all threads per wall second) and a SHA-256 digest of the aligned pixels
 * and transforms. The parent checks that the digests of all modes agree. It reads the files
 * once before the first round, so every pass reads them from the page cache.
 *
 * Usage:
 *   npx tsx bench/alignWorkers.ts [IMAGES] [THREADS] [ROUNDS]
 *     Runs ROUNDS rounds and prints each pass, then the medians and the ratios. Defaults: the
 *     first 2000 images of the View 2 pairs, `os.availableParallelism()` threads, 5 rounds.
 *   npx tsx bench/alignWorkers.ts --mode MODE [IMAGES] [THREADS]
 *     Runs one pass of MODE (serial, overlapped or pool) in this process and prints it as JSON.
 *     Mode serial requires UV_THREADPOOL_SIZE=1 in the environment.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

import { from, lastValueFrom, map, tap, type Observable } from 'rxjs';
import sharp from 'sharp';

import { readLandmarks, readPairs, uniqueImages } from '../datasets/lfw.ts';
import { lfwPaths } from '../lib/paths.ts';
import { decodeAndAlignInWorkers } from '../operators/alignInWorkers.ts';
import { readImages } from '../operators/readImages.ts';
import {
  isRejected,
  type AlignedFace,
  type DecodedImage,
  type ImageRef,
  type LandmarkedImage,
  type Landmarks,
  type Maybe,
} from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';

const MODES = ['serial', 'overlapped', 'pool'] as const;
type Mode = (typeof MODES)[number];

/** Result of one pass, printed as one JSON line. */
interface PassResult {
  readonly mode: Mode;
  readonly images: number;
  readonly imagesPerSecond: number;
  /** Throughput from the first result on, which leaves out the start of the worker threads. */
  readonly afterFirstResult: number;
  /** Process CPU time (user + system, all threads) per second of wall time. */
  readonly coresUsed: number;
  readonly digest: string;
}

function parseCount(text: string | undefined, fallback: number, name: string): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`bench/alignWorkers: ${name} must be a positive integer, got '${text}'`);
  }
  return value;
}

async function loadImages(count: number): Promise<{ images: ImageRef[]; landmarks: Map<string, Landmarks> }> {
  const paths = lfwPaths();
  const pairs = await readPairs(paths.pairs);
  const landmarks = await readLandmarks(paths.landmarks);
  return { images: uniqueImages(pairs.pairs).slice(0, count), landmarks };
}

function stagesFor(mode: Mode, threads: number, landmarks: Map<string, Landmarks>): (source: Observable<ImageRef>) => Observable<Maybe<AlignedFace>> {
  const withLandmarks = map((image: Maybe<DecodedImage>) =>
    isRejected(image) ? image : ({ ...image, landmarks: landmarks.get(image.id) } as LandmarkedImage),
  );
  switch (mode) {
    case 'serial':
      // With concurrency 1, readImages starts the next decode only after similarityAlign, a
      // synchronous map, has aligned the previous image.
      return (source) => source.pipe(readImages({ concurrency: 1 }), withLandmarks, similarityAlign());
    case 'overlapped':
      return (source) => source.pipe(readImages({ concurrency: 2 }), withLandmarks, similarityAlign());
    case 'pool':
      return (source) => source.pipe(decodeAndAlignInWorkers({ threads, landmarksOf: (ref) => landmarks.get(ref.id) }));
  }
}

/** Runs one pass of `mode` over the first `count` images in this process. */
async function runPass(mode: Mode, count: number, threads: number): Promise<PassResult> {
  if (mode === 'serial') {
    if (process.env.UV_THREADPOOL_SIZE !== '1') {
      throw new Error(
        `bench/alignWorkers: mode serial needs a one-thread libuv pool, but UV_THREADPOOL_SIZE is ` +
          `'${process.env.UV_THREADPOOL_SIZE ?? ''}'. Run it as UV_THREADPOOL_SIZE=1 npx tsx bench/alignWorkers.ts --mode serial`,
      );
    }
    sharp.concurrency(1);
  }
  const { images, landmarks } = await loadImages(count);

  // Each face is hashed as it arrives and then dropped, as a streaming consumer would, so the
  // heap does not grow with the number of images. Hashing one 112×96 face took about 20 µs on
  // the 2-core test machine, under 1 % of the time per image.
  const hash = createHash('sha256');
  let faces = 0;
  let firstResultAt = 0;
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  await lastValueFrom(
    from(images).pipe(
      stagesFor(mode, threads, landmarks),
      tap((face) => {
        if (firstResultAt === 0) firstResultAt = performance.now();
        if (isRejected(face)) throw new Error(`bench/alignWorkers: mode ${mode} rejected ${face.id}: ${face.reason}`);
        hash.update(face.id).update(face.rgb).update(JSON.stringify(face.transform));
        faces += 1;
      }),
    ),
    { defaultValue: undefined },
  );
  const finished = performance.now();
  const cpu = process.cpuUsage(cpuBefore);
  const seconds = (finished - started) / 1000;

  return {
    mode,
    images: faces,
    imagesPerSecond: round(images.length / seconds, 1),
    afterFirstResult: round((images.length - 1) / ((finished - firstResultAt) / 1000), 1),
    coresUsed: round((cpu.user + cpu.system) / 1e6 / seconds, 2),
    digest: hash.digest('hex'),
  };
}

/** Runs one pass of `mode` in a child process of this script and returns what it printed. */
function runChild(mode: Mode, count: number, threads: number): Promise<PassResult> {
  const script = fileURLToPath(import.meta.url);
  const env = mode === 'serial' ? { ...process.env, UV_THREADPOOL_SIZE: '1' } : process.env;
  const child = spawn(process.execPath, ['--import=tsx', script, '--mode', mode, String(count), String(threads)], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      const line = output.trim().split('\n').at(-1) ?? '';
      if (code !== 0 || !line.startsWith('{')) {
        reject(new Error(`bench/alignWorkers: the ${mode} pass exited with code ${String(code)}; output: ${output.trim()}`));
        return;
      }
      resolve(JSON.parse(line) as PassResult);
    });
  });
}

/** Medians over the rounds of one mode, and the range of its images per second. */
interface ModeSummary {
  readonly imagesPerSecond: number;
  readonly range: readonly [number, number];
  readonly afterFirstResult: number;
  readonly coresUsed: number;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function round(value: number, digits: number): number {
  return Number(value.toFixed(digits));
}

async function compare(count: number, threads: number, rounds: number): Promise<void> {
  const { images } = await loadImages(count);
  for (const image of images) await readFile(image.path);

  const results: PassResult[] = [];
  const roundRatios: number[] = [];
  for (let roundIndex = 0; roundIndex < rounds; roundIndex += 1) {
    const order = MODES.map((_, position) => MODES[(position + roundIndex) % MODES.length]!);
    const passes: Partial<Record<Mode, number>> = {};
    for (const mode of order) {
      const result = await runChild(mode, count, threads);
      results.push(result);
      passes[mode] = result.imagesPerSecond;
    }
    const ratio = passes.pool! / passes.serial!;
    roundRatios.push(ratio);
    console.log(JSON.stringify({ round: roundIndex, ...passes, poolOverSerial: round(ratio, 2) }));
  }

  const digests = new Set(results.map((result) => result.digest));
  if (digests.size !== 1) {
    throw new Error(`bench/alignWorkers: the modes aligned different pixels (${digests.size} distinct digests); expected identical output`);
  }

  const summarize = (mode: Mode): ModeSummary => {
    const own = results.filter((result) => result.mode === mode);
    const rates = own.map((result) => result.imagesPerSecond);
    return {
      imagesPerSecond: round(median(rates), 1),
      range: [Math.min(...rates), Math.max(...rates)],
      afterFirstResult: round(median(own.map((result) => result.afterFirstResult)), 1),
      coresUsed: round(median(own.map((result) => result.coresUsed)), 2),
    };
  };
  const summary = { serial: summarize('serial'), overlapped: summarize('overlapped'), pool: summarize('pool') };
  console.log(
    JSON.stringify({
      images: count,
      threads,
      rounds,
      ...summary,
      poolOverSerial: round(summary.pool.imagesPerSecond / summary.serial.imagesPerSecond, 2),
      poolOverOverlapped: round(summary.pool.imagesPerSecond / summary.overlapped.imagesPerSecond, 2),
      poolOverSerialPairedMedian: round(median(roundRatios), 2),
      poolOverSerialAfterFirstResult: round(summary.pool.afterFirstResult / summary.serial.afterFirstResult, 2),
      identicalOutput: true,
    }),
  );
}

const args = process.argv.slice(2);
if (args[0] === '--mode') {
  const mode = args[1] as Mode;
  if (!MODES.includes(mode)) throw new Error(`bench/alignWorkers: --mode must be one of ${MODES.join(', ')}, got '${String(args[1])}'`);
  const result = await runPass(mode, parseCount(args[2], 2000, 'IMAGES'), parseCount(args[3], os.availableParallelism(), 'THREADS'));
  console.log(JSON.stringify(result));
} else {
  await compare(parseCount(args[0], 2000, 'IMAGES'), parseCount(args[1], os.availableParallelism(), 'THREADS'), parseCount(args[2], 5, 'ROUNDS'));
}
