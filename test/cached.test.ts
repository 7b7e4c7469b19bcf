import { createHash } from 'node:crypto';

import { concatMap, delay, from, lastValueFrom, map, of, Subject, toArray, type OperatorFunction } from 'rxjs';
import t from 'tap';

import { ArtifactCache } from '../lib/artifactCache.ts';
import { cached, type CachedSpec } from '../operators/cached.ts';
import { flowControl } from '../operators/flowControl.ts';
import { isRejected, reject, type ImageRef, type Maybe, type Rejected } from '../operators/records.ts';

interface Item extends ImageRef {
  readonly n: number;
}

interface Doubled extends ImageRef {
  readonly doubled: number;
  readonly params: string;
}

const items = (count: number, start = 0): Item[] =>
  Array.from({ length: count }, (_, k) => ({ id: `img/${start + k}.jpg`, path: `/data/img/${start + k}.jpg`, n: start + k }));

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** Builds a stage that doubles `n`, rejects multiples of 7 with "no face found", and counts its calls. */
function doubling(scale = 2, options: { async?: boolean } = {}) {
  const calls: number[] = [];
  const compute = (item: Item): Maybe<Doubled> => {
    calls.push(item.n);
    if (item.n % 7 === 0) return reject(item, 'double', 'no face found');
    return { id: item.id, path: item.path, doubled: item.n * scale, params: `scale=${scale}` };
  };
  const stage: OperatorFunction<Item, Maybe<Doubled>> =
    options.async === true
      ? concatMap((item) => of(item).pipe(delay(Math.floor(Math.random() * 3)), map(compute)))
      : map(compute);
  return { stage, calls };
}

function spec(scale = 2, overrides: Partial<CachedSpec<Item, Doubled>> = {}): CachedSpec<Item, Doubled> {
  return {
    stage: 'double',
    version: 1,
    params: { scale },
    inputHash: (item) => sha256(`content of ${item.n}`),
    encode: (output) => new TextEncoder().encode(JSON.stringify({ doubled: output.doubled, params: output.params })),
    decode: (bytes, input) => ({ id: input.id, path: input.path, ...(JSON.parse(new TextDecoder().decode(bytes)) as { doubled: number; params: string }) }),
    ...overrides,
  };
}

/** Computes the expected output of `doubling(scale)` without the operator. */
function expected(inputs: readonly Item[], scale = 2): Array<Maybe<Doubled>> {
  return inputs.map((item) =>
    item.n % 7 === 0 ? reject(item, 'double', 'no face found') : { id: item.id, path: item.path, doubled: item.n * scale, params: `scale=${scale}` },
  );
}

const run = <T>(source: Maybe<Item>[], operator: OperatorFunction<Maybe<Item>, T>): Promise<T[]> => lastValueFrom(from(source).pipe(operator, toArray()));

t.test('second run computes nothing', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const inputs = items(30);

  const first = doubling();
  const firstOperator = cached(cache, spec(), first.stage);
  t.same(await run(inputs, firstOperator), expected(inputs));
  t.equal(first.calls.length, 30);
  t.same(firstOperator.counters, { hits: 0, misses: 30, failures: 0, stored: 25, storedFailures: 5 });

  const second = doubling();
  const secondOperator = cached(cache, spec(), second.stage);
  t.same(await run(inputs, secondOperator), expected(inputs), 'same records, failures included');
  t.same(second.calls, [], 'wrapped stage never called');
  t.same(secondOperator.counters, { hits: 25, misses: 0, failures: 5, stored: 0, storedFailures: 0 });
});

t.test('retryFailed reruns only failures', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const inputs = items(15);
  await run(inputs, cached(cache, spec(), doubling().stage));

  const retry = doubling();
  const operator = cached(cache, spec(2, { retryFailed: true }), retry.stage);
  t.same(await run(inputs, operator), expected(inputs));
  t.same(retry.calls, [0, 7, 14]);
  t.equal(operator.counters.hits, 12);
});

t.test('changed param recomputes', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const inputs = items(10, 1);
  await run(inputs, cached(cache, spec(2), doubling(2).stage));

  const changed = doubling(3);
  t.same(await run(inputs, cached(cache, spec(3), changed.stage)), expected(inputs, 3));
  t.equal(changed.calls.length, 10, 'every input recomputed');

  const changedVersion = doubling(2);
  await run(inputs, cached(cache, spec(2, { version: 2 }), changedVersion.stage));
  t.equal(changedVersion.calls.length, 10, 'a new version recomputes too');

  const original = doubling(2);
  t.same(await run(inputs, cached(cache, spec(2), original.stage)), expected(inputs, 2));
  t.equal(original.calls.length, 0, 'the first params are still cached');
});

t.test('mixed hits and misses keep input order', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const inputs = items(200);
  // Cache every third input, so hits sit between slow, asynchronous misses.
  await run(
    inputs.filter((item) => item.n % 3 === 0),
    cached(cache, spec(), doubling().stage),
  );

  const passed: Rejected = reject({ id: 'broken.jpg', path: '/data/broken.jpg' }, 'readImages', 'truncated JPEG');
  const source: Array<Maybe<Item>> = [...inputs.slice(0, 100), passed, ...inputs.slice(100)];
  const slow = doubling(2, { async: true });
  const operator = cached(cache, spec(2, { inputHash: async (item) => {
    await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 3)));
    return sha256(`content of ${item.n}`);
  } }), slow.stage);
  const out = await run(source, operator);

  t.same(out, [...expected(inputs.slice(0, 100)), passed, ...expected(inputs.slice(100))]);
  t.equal(slow.calls.length, 200 - 67, 'only uncached inputs computed');
  t.equal(operator.counters.hits + operator.counters.failures, 67);
});

t.test('hits are emitted synchronously', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const inputs = items(3, 1);
  await run(inputs, cached(cache, spec(), doubling().stage));

  const subject = new Subject<Maybe<Item>>();
  const received: Array<Maybe<Doubled>> = [];
  subject.pipe(cached(cache, spec(), doubling().stage)).subscribe((value) => received.push(value));
  subject.next(inputs[0] as Item);
  t.equal(received.length, 1, 'output arrives inside next()');
  subject.next(inputs[1] as Item);
  t.equal(received.length, 2);
  subject.complete();
});

t.test('10,000 hits without stack overflow', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const inputs = items(10_000);

  const started = performance.now();
  await run(inputs, cached(cache, spec(), doubling().stage));
  const storeSeconds = (performance.now() - started) / 1000;

  const second = doubling();
  const operator = cached(cache, spec(), second.stage);
  const hitStarted = performance.now();
  const out = await run(inputs, operator);
  const hitSeconds = (performance.now() - hitStarted) / 1000;

  t.equal(out.length, 10_000);
  t.equal(second.calls.length, 0);
  t.equal(operator.counters.hits + operator.counters.failures, 10_000);
  t.same(out.slice(9_990), expected(inputs.slice(9_990)));
  t.comment(`10,000 misses stored in ${storeSeconds.toFixed(2)} s; 10,000 hits in ${hitSeconds.toFixed(2)} s`);
});

t.test('works between flowControl admit and release', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const inputs = items(300);
  await run(inputs.filter((item) => item.n % 2 === 0), cached(cache, spec(), doubling().stage));

  const flow = flowControl(4);
  let maxInFlight = 0;
  const out = await lastValueFrom(
    from(inputs).pipe(
      flow.admit(),
      cached(cache, spec(), doubling(2, { async: true }).stage),
      map((value) => {
        maxInFlight = Math.max(maxInFlight, flow.inFlight);
        return value;
      }),
      flow.release(),
      toArray(),
    ),
  );
  t.same(out, expected(inputs));
  t.ok(maxInFlight <= 4, `at most 4 records in flight (saw ${maxInFlight})`);
});

t.test('stage that drops a record errors', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const dropping: OperatorFunction<Item, Maybe<Doubled>> = (source) =>
    source.pipe(
      concatMap((item) => (item.n === 2 ? from([]) : of({ id: item.id, path: item.path, doubled: 0, params: '' }))),
    );
  await t.rejects(run(items(4, 1), cached(cache, spec(), dropping)), /emitted img\/3\.jpg where img\/2\.jpg was next/);
});

t.test('stage that adds a record errors', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const duplicating: OperatorFunction<Item, Maybe<Doubled>> = concatMap((item) => {
    const output = { id: item.id, path: item.path, doubled: 0, params: '' };
    return of(output, output);
  });
  await t.rejects(run(items(2, 1), cached(cache, spec(), duplicating)), /emitted more records than it received inputs/);
});

t.test('input hash failure rejects that input', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const inputs = items(3, 1);
  const counted = doubling();
  const operator = cached(
    cache,
    spec(2, {
      inputHash: (item) => {
        if (item.n === 2) throw new Error('ENOENT: no such file');
        return sha256(`content of ${item.n}`);
      },
    }),
    counted.stage,
  );
  const out = await run(inputs, operator);
  t.same(out[1], reject(inputs[1] as Item, 'double', 'could not hash the input: ENOENT: no such file'));
  t.same(out.filter((value) => !isRejected(value)).length, 2);
  t.same(counted.calls, [1, 3]);
});

t.test('undecodable artifact is recomputed', async (t) => {
  const cache = ArtifactCache.open(t.testdir());
  t.teardown(() => cache.close());
  const inputs = items(3, 1);
  await run(inputs, cached(cache, spec(), doubling().stage));

  let decodes = 0;
  const recount = doubling();
  const broken = spec(2, {
    decode: () => {
      decodes++;
      throw new Error('unexpected format');
    },
  });
  t.same(await run(inputs, cached(cache, broken, recount.stage)), expected(inputs));
  t.equal(decodes, 3);
  t.same(recount.calls, [1, 2, 3], 'all recomputed');

  const fresh = doubling();
  await run(inputs, cached(cache, spec(), fresh.stage));
  t.equal(fresh.calls.length, 0, 'recomputed artifacts were stored again');
});
