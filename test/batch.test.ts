import t from 'tap';
import { from, lastValueFrom, Subject, toArray } from 'rxjs';
import { batch, type Batch } from '../operators/batch.ts';
import { reject, type Rejected } from '../operators/records.ts';

const sizes = (values: Array<Batch<number> | Rejected>): Array<number | string> =>
  values.map((v) => ('kind' in v ? `rejected:${v.id}` : v.items.length));

t.test('batch keeps the last partial batch', async (t) => {
  const out = await lastValueFrom(from([1, 2, 3, 4, 5, 6, 7]).pipe(batch<number>(3), toArray()));
  t.same(sizes(out), [3, 3, 1]);
  t.same(
    out.map((b) => ('items' in b ? b.items : [])),
    [[1, 2, 3], [4, 5, 6], [7]],
  );
  t.same(
    out.map((b) => ('index' in b ? b.index : -1)),
    [0, 1, 2],
  );
});

t.test('batch emits nothing for an empty source', async (t) => {
  const out = await lastValueFrom(from([] as number[]).pipe(batch<number>(4), toArray()));
  t.same(out, []);
});

t.test('batch passes rejections through at once', async (t) => {
  const bad = reject({ id: 'b', path: '/x/b.jpg' }, 'readImages', 'truncated');
  const out = await lastValueFrom(from<Array<number | Rejected>>([1, bad, 2, 3]).pipe(batch<number>(2), toArray()));
  t.same(sizes(out), ['rejected:b', 2, 1]);
});

t.test('batch emits a full batch at once, without waiting for more', async (t) => {
  const source = new Subject<number>();
  const seen: number[] = [];
  source.pipe(batch<number>(2)).subscribe((b) => {
    if ('items' in b) seen.push(b.items.length);
  });
  source.next(1);
  t.same(seen, []);
  source.next(2);
  t.same(seen, [2]);
  source.next(3);
  source.complete();
  t.same(seen, [2, 1]);
});

t.test('batch rejects a bad size', async (t) => {
  t.throws(() => batch(0), /positive integer, got 0/);
  t.throws(() => batch(2.5), /positive integer, got 2.5/);
});

t.test('batch forwards source errors', async (t) => {
  const source = new Subject<number>();
  const result = lastValueFrom(source.pipe(batch<number>(2), toArray()));
  source.next(1);
  source.error(new Error('disk full'));
  await t.rejects(result, /disk full/);
});
