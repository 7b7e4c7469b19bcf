import t from 'tap';
import { concatMap, delay, from, lastValueFrom, map, mergeMap, of, range, tap, toArray } from 'rxjs';
import { batch } from '../operators/batch.ts';
import { flowControl } from '../operators/flowControl.ts';

t.test('slow consumer bounds how far the producer reads ahead', async (t) => {
  const window = 8;
  const flow = flowControl(window);
  let produced = 0;
  let consumed = 0;
  let maxAhead = 0;

  const out = await lastValueFrom(
    range(0, 100).pipe(
      flow.admit(),
      tap(() => {
        produced++;
        maxAhead = Math.max(maxAhead, produced - consumed);
      }),
      batch<number>(4),
      // A consumer that takes 2 ms per batch, far slower than the synchronous producer.
      concatMap((b) => ('items' in b ? of(b.items).pipe(delay(2)) : of([]))),
      mergeMap((items) => items),
      tap(() => consumed++),
      flow.release(),
      toArray(),
    ),
  );

  t.equal(out.length, 100, 'every record arrives');
  t.same(out, [...Array(100).keys()], 'in order');
  t.ok(maxAhead <= window, `producer ran at most ${window} ahead (saw ${maxAhead})`);
  t.equal(flow.inFlight, 0, 'all credit returned');
});

t.test('10,000 synchronous records pass without a stack overflow', async (t) => {
  const flow = flowControl(64);
  const out = await lastValueFrom(
    range(0, 10_000).pipe(
      flow.admit(),
      // Cache hits finish synchronously: every stage here returns at once.
      mergeMap((i) => of(i * 2), 4),
      batch<number>(32),
      concatMap((b) => ('items' in b ? from(b.items) : of())),
      map((x) => x / 2),
      flow.release(),
      toArray(),
    ),
  );
  t.equal(out.length, 10_000);
  t.equal(out[9_999], 9_999);
});

t.test('flow control passes errors and completes on an empty source', async (t) => {
  const flow = flowControl(2);
  t.same(await lastValueFrom(from([] as number[]).pipe(flow.admit(), flow.release(), toArray())), []);
  const failing = flowControl(2);
  await t.rejects(
    lastValueFrom(
      range(0, 5).pipe(
        failing.admit(),
        map((i) => {
          if (i === 3) throw new Error('decoder crashed on record 3');
          return i;
        }),
        failing.release(),
      ),
    ),
    /record 3/,
  );
});

t.test('flow control rejects a bad window', async (t) => {
  t.throws(() => flowControl(0), /positive integer, got 0/);
});

t.test('flow control serves one subscription at a time', async (t) => {
  // A window of 1 keeps admit() waiting on the source, so the first run is still subscribed.
  const flow = flowControl(1);
  const running = range(0, 3).pipe(flow.admit(), delay(5), flow.release(), toArray());
  const first = lastValueFrom(running);
  await t.rejects(lastValueFrom(running), /already subscribed/);
  t.same(await first, [0, 1, 2]);
  t.same(await lastValueFrom(range(0, 2).pipe(flow.admit(), flow.release(), toArray())), [0, 1], 'free again after completion');
});

t.test('release credit function lets one record of a split count', async (t) => {
  const flow = flowControl(2);
  const out = await lastValueFrom(
    range(0, 6).pipe(
      flow.admit(),
      // Each record becomes two; only the first of each pair returns credit.
      mergeMap((i) => [`${i}a`, `${i}b`]),
      flow.release((id: string) => (id.endsWith('a') ? 1 : 0)),
      toArray(),
    ),
  );
  t.equal(out.length, 12);
  t.equal(flow.inFlight, 0);
});
