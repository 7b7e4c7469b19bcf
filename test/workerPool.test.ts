import { spawn } from 'node:child_process';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { from, lastValueFrom, of, Subject, tap as tapOperator, toArray } from 'rxjs';
import t from 'tap';

import { readLandmarks, readPairs, uniqueImages } from '../datasets/lfw.ts';
import { lfwPaths } from '../lib/paths.ts';
import { decodeAndAlignInWorkers } from '../operators/alignInWorkers.ts';
import { decodeImage } from '../operators/readImages.ts';
import { isRejected, reject, type AlignedFace, type ImageRef, type Landmarks, type Maybe } from '../operators/records.ts';
import { alignFace, similarityAlign } from '../operators/similarityAlign.ts';

const paths = lfwPaths();
const landmarks = await readLandmarks(paths.landmarks);
const refs = uniqueImages((await readPairs(paths.pairs)).pairs).slice(0, 20);
const landmarksOf = (ref: ImageRef): Landmarks | undefined => landmarks.get(ref.id);

/** Computes the single-thread result for one image: `decodeImage`, then `alignFace`. */
async function alignOnMainThread(ref: ImageRef): Promise<AlignedFace> {
  const decoded = await decodeImage(ref);
  if (isRejected(decoded)) throw new Error(`reference decode of ${ref.id} failed: ${decoded.reason}`);
  return alignFace({ ...decoded, landmarks: landmarks.get(ref.id)! });
}

/** Runs the module `file` in a child Node process with tsx, and reports how it ended. */
function runChild(file: string, timeoutMs: number): Promise<{ exitCode: number | null; timedOut: boolean; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import=tsx', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('exit', (exitCode) => {
      clearTimeout(timer);
      resolve({ exitCode, timedOut, output });
    });
  });
}

t.test('aligned faces match the single-thread path', async (t) => {
  const out = await lastValueFrom(from(refs).pipe(decodeAndAlignInWorkers({ threads: 2, landmarksOf }), toArray()));

  t.same(
    out.map((record) => record.id),
    refs.map((ref) => ref.id),
    'one result per image, in input order',
  );
  for (const [index, ref] of refs.entries()) {
    const expected = await alignOnMainThread(ref);
    const actual = out[index]!;
    if (isRejected(actual)) {
      t.fail(`${ref.id} was rejected: ${actual.reason}`);
      continue;
    }
    t.equal(actual.width, expected.width, `${ref.id}: width`);
    t.equal(actual.height, expected.height, `${ref.id}: height`);
    t.ok(Buffer.from(actual.rgb).equals(Buffer.from(expected.rgb)), `${ref.id}: pixels byte-identical`);
    t.same(actual.transform, expected.transform, `${ref.id}: transform`);
    t.equal(actual.path, ref.path, `${ref.id}: path`);
  }
});

t.test('bad records become the single-thread rejections', async (t) => {
  const dir = t.testdir({});
  const good = refs[0]!;
  const original = await readFile(good.path);
  const truncated: ImageRef = { id: 'truncated.jpg', path: path.join(dir, 'truncated.jpg') };
  await writeFile(truncated.path, original.subarray(0, Math.floor(original.length / 2)));
  const missing: ImageRef = { id: 'missing.jpg', path: path.join(dir, 'missing.jpg') };
  const degenerate: ImageRef = { id: 'degenerate.jpg', path: path.join(dir, 'degenerate.jpg') };
  await copyFile(good.path, degenerate.path);
  const unlisted: ImageRef = { id: 'unlisted.jpg', path: path.join(dir, 'unlisted.jpg') };
  await copyFile(good.path, unlisted.path);
  const earlier = reject(refs[1]!, 'readImages', 'rejected by an earlier stage');

  const samePoint: Landmarks = { points: [[100, 100], [100, 100], [100, 100], [100, 100], [100, 100]], origin: 'one-based' };
  const sources = new Map<string, Landmarks>([
    [truncated.id, landmarks.get(good.id)!],
    [missing.id, landmarks.get(good.id)!],
    [degenerate.id, samePoint],
    [good.id, landmarks.get(good.id)!],
  ]);
  const input: Array<Maybe<ImageRef>> = [truncated, good, missing, earlier, degenerate, unlisted];
  const out = await lastValueFrom(
    from(input).pipe(decodeAndAlignInWorkers({ threads: 2, landmarksOf: (ref) => sources.get(ref.id) }), toArray()),
  );
  t.equal(out.length, input.length, 'one result per input');

  const [truncatedOut, goodOut, missingOut, earlierOut, degenerateOut, unlistedOut] = out;
  t.same(truncatedOut, await decodeImage(truncated), 'truncated JPEG: the readImages rejection');
  t.match(truncatedOut, { kind: 'rejected', stage: 'readImages' }, 'truncated JPEG is rejected by readImages');
  t.same(missingOut, await decodeImage(missing), 'missing file: the readImages rejection');
  t.match(missingOut, { kind: 'rejected', reason: `file not found: ${missing.path}` }, 'missing file reason');
  t.equal(earlierOut, earlier, 'an incoming Rejected passes through as the same object');

  const decodedDegenerate = await decodeImage(degenerate);
  if (isRejected(decodedDegenerate)) throw new Error(decodedDegenerate.reason);
  const expectedDegenerate = await lastValueFrom(
    of({ ...decodedDegenerate, landmarks: samePoint }).pipe(similarityAlign()),
  );
  t.ok(isRejected(expectedDegenerate), 'the single-thread stage rejects coincident landmarks');
  t.same(degenerateOut, expectedDegenerate, 'coincident landmarks: the similarityAlign rejection');

  t.match(
    unlistedOut,
    { kind: 'rejected', id: unlisted.id, stage: 'similarityAlign', reason: `cannot align ${unlisted.path}: no landmarks for ${unlisted.id}; expected five landmarks for every image` },
    'an image without landmarks is rejected',
  );
  t.notOk(isRejected(goodOut), 'a good image between bad ones is aligned');
});

for (const maxInFlight of [3, 8]) {
  // With 8, tasks carry 2 images each, so the window is checked for tasks of several images too.
  t.test(`in-flight images stay within maxInFlight ${maxInFlight}`, async (t) => {
    let dispatched = 0;
    let emitted = 0;
    let maxSeen = 0;
    const out = await lastValueFrom(
      from(refs).pipe(
        decodeAndAlignInWorkers({
          threads: 2,
          maxInFlight,
          landmarksOf: (ref) => {
            dispatched += 1;
            maxSeen = Math.max(maxSeen, dispatched - emitted);
            return landmarks.get(ref.id);
          },
        }),
        tapOperator(() => {
          emitted += 1;
          // A slow consumer: block the main thread, so the workers finish long before it requests more.
          const until = performance.now() + 20;
          while (performance.now() < until);
        }),
        toArray(),
      ),
    );
    t.equal(out.length, refs.length, 'every image comes out');
    t.equal(maxSeen, maxInFlight, `at most ${maxInFlight} images dispatched and not yet emitted, and the window fills`);
  });
}

t.test('slow source is not held for a full task', async (t) => {
  // Each image is sent only after the previous one came out. A pool that waited to fill a task
  // of several images would never emit the first one.
  const input = new Subject<ImageRef>();
  let onResult = (): void => undefined;
  const done = lastValueFrom(
    input.pipe(
      decodeAndAlignInWorkers({ threads: 2, landmarksOf }),
      tapOperator(() => onResult()),
      toArray(),
    ),
  );
  for (const ref of refs.slice(0, 3)) {
    let timer: NodeJS.Timeout | undefined;
    const outcome = await new Promise<string>((resolve) => {
      onResult = () => resolve('emitted');
      timer = setTimeout(() => resolve('timed out'), 10_000);
      input.next(ref);
    });
    clearTimeout(timer);
    t.equal(outcome, 'emitted', `${ref.id} comes out before the next image is sent`);
  }
  input.complete();
  const out = await done;
  t.same(
    out.map((record) => record.id),
    refs.slice(0, 3).map((ref) => ref.id),
    'the three images come out in order',
  );
  t.notOk(out.some(isRejected), 'no image is rejected');
});

t.test('invalid options throw at call time', async (t) => {
  t.throws(() => decodeAndAlignInWorkers({ threads: 0, landmarksOf }), RangeError);
  t.throws(() => decodeAndAlignInWorkers({ maxInFlight: 1.5, landmarksOf }), RangeError);
  t.throws(() => decodeAndAlignInWorkers({ maxPixels: -1, landmarksOf }), RangeError);
  t.throws(() => decodeAndAlignInWorkers({ outputSize: { height: 0, width: 96 }, landmarksOf }), RangeError);
  t.throws(() => decodeAndAlignInWorkers({} as never), TypeError);
});

t.test('pool shuts down when the stream ends', { skip: process.platform !== 'linux' && 'counts threads in /proc/self/status' }, async (t) => {
  const operatorUrl = pathToFileURL(path.resolve('operators/alignInWorkers.ts')).href;
  const lfwUrl = pathToFileURL(path.resolve('datasets/lfw.ts')).href;
  // Each child samples its thread count while the stream runs and once more a second after it
  // ended. Piscina keeps `threads` idle workers alive until the pool is destroyed, so only a
  // destroyed pool lowers the count by at least that many.
  const prelude = `
    import { readFileSync } from 'node:fs';
    import { concat, from, lastValueFrom, mergeMap, take, throwError, timer, toArray } from 'rxjs';
    import { decodeAndAlignInWorkers } from ${JSON.stringify(operatorUrl)};
    import { readLandmarks, readPairs, uniqueImages } from ${JSON.stringify(lfwUrl)};
    const landmarks = await readLandmarks();
    const refs = uniqueImages((await readPairs()).pairs).slice(0, 20);
    const align = () => decodeAndAlignInWorkers({ threads: 2, landmarksOf: (ref) => landmarks.get(ref.id) });
    const threadCount = () => Number(/^Threads:\\s+(\\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
    let during = 0;
    const sampler = setInterval(() => (during = Math.max(during, threadCount())), 20);
    const report = async (ending) => {
      clearInterval(sampler);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      console.log(JSON.stringify({ ending, during, after: threadCount() }));
    };
  `;
  const cases = {
    complete: `const out = await lastValueFrom(from(refs).pipe(align(), toArray())); await report('complete ' + out.length);`,
    unsubscribe: `const out = await lastValueFrom(from(refs).pipe(align(), take(3), toArray())); await report('unsubscribe ' + out.length);`,
    error: `
      const failing = concat(from(refs.slice(0, 4)), timer(1500).pipe(mergeMap(() => throwError(() => new Error('source failed')))));
      await lastValueFrom(failing.pipe(align())).catch((error) => report('error ' + error.message));`,
  };
  const expectedEnding = { complete: 'complete 20', unsubscribe: 'unsubscribe 3', error: 'error source failed' };
  const dir = t.testdir(Object.fromEntries(Object.entries(cases).map(([name, body]) => [`${name}.mjs`, prelude + body])));

  for (const name of Object.keys(cases) as Array<keyof typeof cases>) {
    const result = await runChild(path.join(dir, `${name}.mjs`), 20_000);
    t.equal(result.timedOut, false, `${name}: the process exits within 20 s`);
    t.equal(result.exitCode, 0, `${name}: exit code 0 (output: ${result.output.trim()})`);
    const line = result.output.split('\n').find((text) => text.startsWith('{'));
    if (line === undefined) continue;
    const { ending, during, after } = JSON.parse(line) as { ending: string; during: number; after: number };
    t.equal(ending, expectedEnding[name], `${name}: the stream ended as expected`);
    t.ok(after <= during - 2, `${name}: both worker threads are gone after the stream ends (${during} threads while running, ${after} after)`);
  }
});
