import fs from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import {
  LfwFormatError,
  LfwMissingImagesError,
  parseLandmarks,
  parsePairs,
  readLandmarks,
  readPairs,
  uniqueImages,
  type LfwPair,
} from '../datasets/lfw.ts';
import { lfwPaths } from '../lib/paths.ts';

const lfw = lfwPaths();

/**
 * Reads `pairs.txt` naively, independently of the module: splits on "\n" and "\t" and builds
 * `name/name_%04d.jpg` by hand.
 */
function naivePairs(text: string): Array<{ same: boolean; left: string; right: string }> {
  const rows = text.split('\n').slice(1).filter((row) => row !== '');
  const file = (name: string, n: string): string => `${name}/${name}_${'0000'.slice(n.length)}${n}.jpg`;
  return rows.map((row) => {
    const f = row.split('\t');
    return f.length === 3
      ? { same: true, left: file(f[0]!, f[1]!), right: file(f[0]!, f[2]!) }
      : { same: false, left: file(f[0]!, f[1]!), right: file(f[2]!, f[3]!) };
  });
}

const summary = (pairs: readonly LfwPair[]) => pairs.map((p) => ({ same: p.same, left: p.left.id, right: p.right.id }));

t.test('pairs.txt has 10 folds of 300 same then 300 different', async (t) => {
  const text = await fs.readFile(lfw.pairs, 'utf8');
  const parsed = await readPairs(lfw.pairs);

  t.equal(parsed.view, 'view2');
  t.equal(parsed.folds, 10);
  t.equal(parsed.pairsPerHalfFold, 300);
  t.equal(parsed.pairs.length, 6000);
  t.equal(parsed.file, path.resolve(lfw.pairs));

  const layoutErrors = parsed.pairs.filter(
    (p, i) => p.index !== i || p.line !== i + 2 || p.fold !== Math.floor(i / 600) || p.same !== i % 600 < 300,
  );
  t.same(layoutErrors, [], 'index, line, fold and kind follow the file order');
  t.same(summary(parsed.pairs), naivePairs(text), 'same ids as a naive tab-split reader');

  const first = parsed.pairs[0]!;
  t.equal(first.left.id, 'Abel_Pacheco/Abel_Pacheco_0001.jpg');
  t.equal(first.right.id, 'Abel_Pacheco/Abel_Pacheco_0004.jpg');
  t.equal(first.left.path, path.join(path.resolve(lfw.images), 'Abel_Pacheco', 'Abel_Pacheco_0001.jpg'));

  const last = parsed.pairs[5999]!;
  t.same([last.line, last.fold, last.same], [6001, 9, false]);
  t.equal(last.left.id, 'Slobodan_Milosevic/Slobodan_Milosevic_0002.jpg');
  t.equal(last.right.id, 'Sok_An/Sok_An_0001.jpg');
});

t.test('pairs.txt names with hyphens', async (t) => {
  const { pairs } = await readPairs(lfw.pairs, { checkImages: false });

  // Line 40 is "Chang_Dae-whan\t1\t2", line 307 is "Abel_Pacheco\t2\tJean-Francois_Lemounier\t1".
  const hyphenSame = pairs.find((p) => p.line === 40)!;
  t.same([hyphenSame.same, hyphenSame.left.id, hyphenSame.right.id], [true, 'Chang_Dae-whan/Chang_Dae-whan_0001.jpg', 'Chang_Dae-whan/Chang_Dae-whan_0002.jpg']);
  t.equal(hyphenSame.right.path, path.join(path.resolve(lfw.images), 'Chang_Dae-whan', 'Chang_Dae-whan_0002.jpg'));

  const hyphenDifferent = pairs.find((p) => p.line === 307)!;
  t.same(
    [hyphenDifferent.same, hyphenDifferent.left.id, hyphenDifferent.right.id],
    [false, 'Abel_Pacheco/Abel_Pacheco_0002.jpg', 'Jean-Francois_Lemounier/Jean-Francois_Lemounier_0001.jpg'],
  );
});

t.test('uniqueImages of View 2 is 7701 in first-use order', async (t) => {
  const { pairs } = await readPairs(lfw.pairs, { checkImages: false });
  const images = uniqueImages(pairs);

  t.equal(images.length, 7701);
  t.equal(new Set(images.map((i) => i.id)).size, 7701);
  t.same(
    images.slice(0, 4).map((i) => i.id),
    [
      'Abel_Pacheco/Abel_Pacheco_0001.jpg',
      'Abel_Pacheco/Abel_Pacheco_0004.jpg',
      'Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg',
      'Akhmed_Zakayev/Akhmed_Zakayev_0003.jpg',
    ],
  );
});

t.test('pairs.txt with BOM, CRLF and trailing blanks', async (t) => {
  const text = await fs.readFile(lfw.pairs, 'utf8');
  const reference = parsePairs(text, lfw.pairs).pairs;
  const dir = t.testdir({
    'crlf.txt': '\uFEFF' + text.replace(/\n/g, '\r\n') + '\r\n\r\n',
    'no-final-newline.txt': text.replace(/\n$/, ''),
    'spaces.txt': text.replace(/\t/g, '  '),
  });

  for (const name of ['crlf.txt', 'no-final-newline.txt', 'spaces.txt']) {
    const parsed = await readPairs(path.join(dir, name), { imagesDir: lfw.images });
    t.equal(parsed.pairs.length, 6000, name);
    t.same(parsed.pairs, reference, `${name} gives the same pairs`);
  }
});

t.test('View 1 files have 2200 and 1000 pairs', async (t) => {
  const cases = [
    { file: lfw.devTrain, half: 1100, first: 'Aaron_Peirsol/Aaron_Peirsol_0001.jpg', lastRight: 'Zara_Akhmadova/Zara_Akhmadova_0001.jpg' },
    { file: lfw.devTest, half: 500, first: 'Abdullah_Gul/Abdullah_Gul_0013.jpg', lastRight: undefined },
  ];
  for (const c of cases) {
    const parsed = await readPairs(c.file);
    t.equal(parsed.view, 'view1', c.file);
    t.equal(parsed.folds, 1);
    t.equal(parsed.pairsPerHalfFold, c.half);
    t.equal(parsed.pairs.length, 2 * c.half);
    t.same(
      parsed.pairs.filter((p, i) => p.fold !== 0 || p.same !== i < c.half),
      [],
      'one fold, same-person pairs first',
    );
    t.equal(parsed.pairs[0]!.left.id, c.first);
    if (c.lastRight !== undefined) t.equal(parsed.pairs.at(-1)!.right.id, c.lastRight);
  }
});

// A small View 2 file: 2 folds of 2 same-person and 2 different-person pairs, with names that
// contain a hyphen, a dot and an apostrophe (the LFW pair files have hyphens only).
const SMALL_LINES = [
  '2\t2',
  'Ann_A\t1\t2',
  'Bob-B\t1\t3',
  "Ann_A\t1\tD'Arcy_O\t2",
  "Carl_C_Jr.\t1\tD'Arcy_O\t1",
  'Ann_A\t2\t3',
  'Carl_C_Jr.\t1\t2',
  'Bob-B\t1\tCarl_C_Jr.\t2',
  'Ann_A\t3\tBob-B\t2',
];
const SMALL_IMAGES = [
  'Ann_A/Ann_A_0001.jpg',
  'Ann_A/Ann_A_0002.jpg',
  'Ann_A/Ann_A_0003.jpg',
  'Bob-B/Bob-B_0001.jpg',
  'Bob-B/Bob-B_0002.jpg',
  'Bob-B/Bob-B_0003.jpg',
  "Carl_C_Jr./Carl_C_Jr._0001.jpg",
  "Carl_C_Jr./Carl_C_Jr._0002.jpg",
  "D'Arcy_O/D'Arcy_O_0001.jpg",
  "D'Arcy_O/D'Arcy_O_0002.jpg",
];

/** Builds a fixture folder with `lfw/` holding empty files for `images`. */
function imageTree(images: readonly string[]): Record<string, Record<string, string>> {
  const tree: Record<string, Record<string, string>> = {};
  for (const id of images) {
    const [person, file] = id.split('/') as [string, string];
    (tree[person] ??= {})[file] = '';
  }
  return tree;
}

t.test('small pairs file with dots and apostrophes', async (t) => {
  const dir = t.testdir({ 'pairs.txt': SMALL_LINES.join('\n') + '\n', lfw: imageTree(SMALL_IMAGES) });
  const parsed = await readPairs(path.join(dir, 'pairs.txt'), { imagesDir: path.join(dir, 'lfw') });

  t.same([parsed.folds, parsed.pairsPerHalfFold, parsed.pairs.length], [2, 2, 8]);
  t.same(
    parsed.pairs.map((p) => [p.fold, p.same]),
    [[0, true], [0, true], [0, false], [0, false], [1, true], [1, true], [1, false], [1, false]],
  );

  const dotted = parsed.pairs[3]!;
  t.equal(dotted.left.id, 'Carl_C_Jr./Carl_C_Jr._0001.jpg');
  t.equal(dotted.left.path, path.join(dir, 'lfw', 'Carl_C_Jr.', 'Carl_C_Jr._0001.jpg'));
  t.equal(dotted.right.id, "D'Arcy_O/D'Arcy_O_0001.jpg");
  t.equal(uniqueImages(parsed.pairs).length, 10);
  t.equal(parsed.pairs[0]!.left, parsed.pairs[2]!.left, 'pairs share the ImageRef of a common image');
});

interface BadCase {
  readonly name: string;
  /** Replaces line `line` (1-based) of the small file, or deletes it when `text` is null. */
  readonly line: number;
  readonly text: string | null;
  /** The line the error must name, and a fragment of the message. */
  readonly errorLine: number;
  readonly errorText: string;
  readonly messagePattern: RegExp;
}

const BAD_PAIR_CASES: BadCase[] = [
  { name: '2 fields', line: 3, text: 'Bob-B\t1', errorLine: 3, errorText: 'Bob-B\t1', messagePattern: /found 2 fields, but a pair line has 3 \(same person\) or 4 \(different people\).*Expected 3 fields \(name, index, index\)/ },
  { name: '5 fields', line: 4, text: 'Ann_A\t1\tBob-B\t2\t3', errorLine: 4, errorText: 'Ann_A\t1\tBob-B\t2\t3', messagePattern: /5 fields/ },
  { name: 'non-numeric index', line: 2, text: 'Ann_A\tone\t2', errorLine: 2, errorText: 'Ann_A\tone\t2', messagePattern: /field 2 is "one", not a positive integer/ },
  { name: 'index 0', line: 6, text: 'Ann_A\t0\t3', errorLine: 6, errorText: 'Ann_A\t0\t3', messagePattern: /field 2 is "0", not a positive integer, because counts and image numbers start at 1/ },
  { name: 'decimal index', line: 9, text: 'Ann_A\t3\tBob-B\t2.5', errorLine: 9, errorText: 'Ann_A\t3\tBob-B\t2.5', messagePattern: /field 4 is "2\.5", not a positive integer/ },
  { name: 'number as a name', line: 5, text: '12\t1\tBob-B\t1', errorLine: 5, errorText: '12\t1\tBob-B\t1', messagePattern: /field 1 is "12", not a person name/ },
  { name: 'same pair in different half', line: 4, text: 'Ann_A\t1\t3', errorLine: 4, errorText: 'Ann_A\t1\t3', messagePattern: /same-person pair out of place.*4 fields.*fold 1 has 2 same-person pairs on lines 2–3, then 2 different-person pairs on lines 4–5/ },
  { name: 'different pair in same half', line: 6, text: 'Ann_A\t2\tBob-B\t3', errorLine: 6, errorText: 'Ann_A\t2\tBob-B\t3', messagePattern: /different-person pair out of place.*3 fields.*fold 2/ },
  { name: 'blank line inside', line: 7, text: '', errorLine: 7, errorText: '', messagePattern: /blank line/ },
  { name: 'one image twice', line: 2, text: 'Ann_A\t2\t2', errorLine: 2, errorText: 'Ann_A\t2\t2', messagePattern: /one image with itself/ },
  { name: 'one name twice', line: 5, text: 'Bob-B\t1\tBob-B\t2', errorLine: 5, errorText: 'Bob-B\t1\tBob-B\t2', messagePattern: /names one person twice/ },
  { name: 'header counts too few pairs', line: 1, text: '1\t2', errorLine: 6, errorText: SMALL_LINES[5]!, messagePattern: /a line after the last pair.*4 pairs \(header on line 1: 1 fold × 2 × 2\)/ },
  { name: 'header counts too many pairs', line: 1, text: '3\t2', errorLine: 9, errorText: SMALL_LINES[8]!, messagePattern: /ends after 8 pairs.*12 pairs/ },
  { name: 'header with wrong half size', line: 1, text: '2\t3', errorLine: 4, errorText: SMALL_LINES[3]!, messagePattern: /different-person pair out of place.*3 same-person pairs on lines 2–4/ },
  { name: 'missing last line', line: 9, text: null, errorLine: 8, errorText: SMALL_LINES[7]!, messagePattern: /ends after 7 pairs.*8 pairs/ },
  { name: 'non-numeric header', line: 1, text: 'ten\t2', errorLine: 1, errorText: 'ten\t2', messagePattern: /field 1 is "ten", not a positive integer.*Expected a header of two positive integers/ },
  { name: 'header with 3 fields', line: 1, text: '2\t2\t2', errorLine: 1, errorText: '2\t2\t2', messagePattern: /3 fields in the header/ },
  { name: 'header of 0 folds', line: 1, text: '0\t2', errorLine: 1, errorText: '0\t2', messagePattern: /field 1 is "0", not a positive integer/ },
];

t.test('malformed pair lines name file, line and text', async (t) => {
  for (const c of BAD_PAIR_CASES) {
    const lines = [...SMALL_LINES];
    if (c.text === null) lines.splice(c.line - 1, 1);
    else lines[c.line - 1] = c.text;
    const dir = t.testdir({ 'pairs.txt': lines.join('\n') + '\n' });
    const file = path.join(dir, 'pairs.txt');

    const error = await readPairs(file, { checkImages: false }).then(
      () => undefined,
      (e: unknown) => e,
    );
    if (!(error instanceof LfwFormatError)) {
      t.fail(`${c.name}: expected an LfwFormatError, got ${String(error)}`);
      continue;
    }
    t.equal(error.file, file, `${c.name}: file`);
    t.equal(error.line, c.errorLine, `${c.name}: line`);
    t.equal(error.text, c.errorText, `${c.name}: text`);
    t.ok(error.message.startsWith(`${file}:${c.errorLine}: `), `${c.name}: message starts with file:line`);
    t.ok(error.message.includes(JSON.stringify(c.errorText)), `${c.name}: message quotes the line`);
    t.match(error.message, c.messagePattern, `${c.name}: message explains`);
  }
});

t.test('empty pairs file', async (t) => {
  const dir = t.testdir({ 'pairs.txt': '\n\n' });
  await t.rejects(readPairs(path.join(dir, 'pairs.txt'), { checkImages: false }), { name: 'LfwFormatError', line: 1, message: /empty file/ });
});

t.test('missing images are listed with their lines', async (t) => {
  const present = SMALL_IMAGES.filter((id) => id !== 'Bob-B/Bob-B_0003.jpg' && id !== "D'Arcy_O/D'Arcy_O_0001.jpg");
  const dir = t.testdir({ 'pairs.txt': SMALL_LINES.join('\n'), lfw: imageTree(present) });
  const file = path.join(dir, 'pairs.txt');
  const imagesDir = path.join(dir, 'lfw');

  const error = await readPairs(file, { imagesDir }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(error instanceof LfwMissingImagesError, 'throws LfwMissingImagesError');
  if (!(error instanceof LfwMissingImagesError)) return;

  t.same(
    error.missing.map((m) => [m.line, m.id, m.reason]),
    [
      [3, 'Bob-B/Bob-B_0003.jpg', 'not found'],
      [5, "D'Arcy_O/D'Arcy_O_0001.jpg", 'not found'],
    ],
  );
  t.ok(error.message.includes(`${file}:3: ${path.join(imagesDir, 'Bob-B', 'Bob-B_0003.jpg')}`), 'names file, line and path of the first');
  t.ok(error.message.includes(`${file}:5: ${path.join(imagesDir, "D'Arcy_O", "D'Arcy_O_0001.jpg")}`), 'names file, line and path of the second');
  t.match(error.message, /^2 image\(s\) used by/);

  const capped = await readPairs(file, { imagesDir, maxMissingListed: 1 }).catch((e: unknown) => e);
  t.match(String(capped), /… and 1 more/);
  t.notOk(String(capped).includes('D\'Arcy_O_0001.jpg'), 'the capped message lists only the first');

  const unchecked = await readPairs(file, { imagesDir, checkImages: false });
  t.equal(unchecked.pairs.length, 8, 'checkImages: false skips the check');
});

t.test('a folder in place of an image is reported', async (t) => {
  const images = { ...imageTree(SMALL_IMAGES), Ann_A: { 'Ann_A_0001.jpg': '', 'Ann_A_0002.jpg': {}, 'Ann_A_0003.jpg': '' } };
  const dir = t.testdir({ 'pairs.txt': SMALL_LINES.join('\n'), lfw: images });
  await t.rejects(readPairs(path.join(dir, 'pairs.txt'), { imagesDir: path.join(dir, 'lfw') }), {
    name: 'LfwMissingImagesError',
    message: /:2: .*Ann_A_0002\.jpg \(not a file\)/,
  });
});

t.test('lfw_landmark.txt has 13233 entries', async (t) => {
  const landmarks = await readLandmarks(lfw.landmarks);
  t.equal(landmarks.size, 13233);

  // "Aaron_Eckhart/Aaron_Eckhart_0001.jpg\t107\t107\t147\t111\t124\t143\t103\t157\t139\t161"
  t.same(landmarks.get('Aaron_Eckhart/Aaron_Eckhart_0001.jpg'), {
    points: [
      [107, 107],
      [147, 111],
      [124, 143],
      [103, 157],
      [139, 161],
    ],
    origin: 'one-based',
  });

  // The last line, which has no newline after it.
  t.same(landmarks.get('Zydrunas_Ilgauskas/Zydrunas_Ilgauskas_0001.jpg')?.points, [
    [108, 116],
    [143, 112],
    [133, 131],
    [120, 159],
    [142, 155],
  ]);

  const { pairs } = await readPairs(lfw.pairs, { checkImages: false });
  const without = uniqueImages(pairs).filter((image) => !landmarks.has(image.id));
  t.same(without, [], 'every View 2 image has landmarks');
});

t.test('landmark file with CRLF and decimals', async (t) => {
  const text = '\uFEFFA_B/A_B_0001.jpg\t1.5\t2\t3\t4\t5\t6\t7\t8\t9\t-1e1\r\nC/C_0012.jpg 1 2 3 4 5 6 7 8 9 10\r\n\r\n';
  const landmarks = parseLandmarks(text, 'landmarks.txt');
  t.same([...landmarks.keys()], ['A_B/A_B_0001.jpg', 'C/C_0012.jpg']);
  t.same(landmarks.get('A_B/A_B_0001.jpg')!.points, [
    [1.5, 2],
    [3, 4],
    [5, 6],
    [7, 8],
    [9, -10],
  ]);
});

t.test('malformed landmark lines name file, line and text', async (t) => {
  const good = 'A/A_0001.jpg\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10';
  const cases: Array<{ name: string; line: string; messagePattern: RegExp }> = [
    { name: '10 fields', line: 'B/B_0001.jpg\t1\t2\t3\t4\t5\t6\t7\t8\t9', messagePattern: /10 fields.*11 fields/ },
    { name: 'not a number', line: 'B/B_0001.jpg\t1\t2\tx\t4\t5\t6\t7\t8\t9\t10', messagePattern: /field 4 is "x", not a decimal number/ },
    { name: 'NaN', line: 'B/B_0001.jpg\t1\t2\t3\tNaN\t5\t6\t7\t8\t9\t10', messagePattern: /field 5 is "NaN", not a decimal number/ },
    { name: 'infinite', line: 'B/B_0001.jpg\t1\t2\t3\t4\t5\t6\t7\t8\t9\t1e999', messagePattern: /field 11 is "1e999", not a finite number/ },
    { name: 'bad id', line: 'B/C_0001.jpg\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10', messagePattern: /field 1 is "B\/C_0001\.jpg", not an image id of the form Name\/Name_NNNN\.jpg/ },
    { name: 'duplicate', line: good.replace('\t1\t', '\t11\t'), messagePattern: /second entry for A\/A_0001\.jpg, which line 1 already lists as "A\/A_0001\.jpg\\t1\\t2/ },
    { name: 'blank line inside', line: '', messagePattern: /blank line/ },
  ];

  for (const c of cases) {
    const text = [good, c.line, 'Z/Z_0001.jpg\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10'].join('\n');
    const error = (() => {
      try {
        parseLandmarks(text, '/tmp/landmarks.txt');
        return undefined;
      } catch (e) {
        return e;
      }
    })();
    if (!(error instanceof LfwFormatError)) {
      t.fail(`${c.name}: expected an LfwFormatError, got ${String(error)}`);
      continue;
    }
    t.equal(error.line, 2, `${c.name}: line`);
    t.equal(error.text, c.line, `${c.name}: text`);
    t.ok(error.message.startsWith('/tmp/landmarks.txt:2: '), `${c.name}: message starts with file:line`);
    t.match(error.message, c.messagePattern, `${c.name}: message explains`);
  }
});
