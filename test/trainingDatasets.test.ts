import { copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { LfwMissingImagesError, parsePairs, readPairs } from '../datasets/lfw.ts';
import {
  CASIA_LFW_OVERLAP,
  fingerprint,
  lfwPeopleSplit,
  readIdentityFolders,
  readTrainingList,
  TrainingListError,
  type TrainingSet,
} from '../datasets/training.ts';
import { lfwPaths } from '../lib/paths.ts';

const lfw = lfwPaths();

/** Real LFW JPEGs used as image content; the tests only list files, so any JPEG will do. */
const JPEGS = [
  'Abel_Pacheco/Abel_Pacheco_0001.jpg',
  'Abel_Pacheco/Abel_Pacheco_0002.jpg',
  'Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg',
  'AJ_Cook/AJ_Cook_0001.jpg',
].map((id) => path.join(lfw.images, id));

/** Copies a real LFW JPEG to `root/relative`, creating folders as needed. */
async function placeImage(root: string, relative: string, source = JPEGS[0]!): Promise<string> {
  const target = path.join(root, relative);
  await mkdir(path.dirname(target), { recursive: true });
  await copyFile(source, target);
  return target;
}

const rows = (set: TrainingSet) => set.samples.map((s) => [s.label, s.identity, s.id]);

/** Awaits `promise`, expecting a `TrainingListError`, and returns it (or undefined after a failed assert). */
async function listError(t: Test, promise: Promise<unknown>): Promise<TrainingListError | undefined> {
  try {
    await promise;
  } catch (error) {
    t.type(error, TrainingListError);
    return error instanceof TrainingListError ? error : undefined;
  }
  t.fail('expected a TrainingListError');
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Identity folders
// ---------------------------------------------------------------------------------------------

t.test('identity folders label by code unit', async (t) => {
  const root = t.testdir({ Empty: {}, 'stray.jpg': '' });
  await placeImage(root, 'Zed/z1.jpg', JPEGS[0]);
  await placeImage(root, 'alice/b.jpg', JPEGS[1]);
  await placeImage(root, 'alice/B.jpg', JPEGS[2]);
  await placeImage(root, 'alice/a.JPG', JPEGS[3]);
  await placeImage(root, 'alice/notes.txt');
  await placeImage(root, 'alice/deeper/x.jpg');
  await placeImage(root, 'Émile/e1.png', JPEGS[1]);
  await placeImage(root, '_x/x1.jpg', JPEGS[2]);

  const set = await readIdentityFolders(root);

  const expectedOrder = ['Zed', '_x', 'alice', 'Émile'];
  const localeOrder = [...expectedOrder].sort((a, b) => a.localeCompare(b, 'en'));
  t.not(localeOrder.join(), expectedOrder.join(), 'the names sort differently by locale, so the check below can fail');
  t.same(set.identities, expectedOrder);
  t.same(rows(set), [
    [0, 'Zed', 'Zed/z1.jpg'],
    [1, '_x', '_x/x1.jpg'],
    [2, 'alice', 'alice/B.jpg'],
    [2, 'alice', 'alice/a.JPG'],
    [2, 'alice', 'alice/b.jpg'],
    [3, 'Émile', 'Émile/e1.png'],
  ]);
  t.equal(set.samples[0]!.path, path.join(root, 'Zed', 'z1.jpg'));
  t.equal(set.source, root);
  t.same(set.removed, [{ identity: 'Empty', reason: 'too-few-images', images: 0 }]);
  t.same(set.notFound, []);
});

t.test('identity folders extensions and minimum', async (t) => {
  const root = t.testdir();
  await placeImage(root, 'Bob/1.jpg');
  await placeImage(root, 'Bob/2.JPEG');
  await placeImage(root, 'Bob/3.png');
  await placeImage(root, 'Cy/1.jpg');

  const jpgOnly = await readIdentityFolders(root, { extensions: ['.jpg'] });
  t.same(rows(jpgOnly), [
    [0, 'Bob', 'Bob/1.jpg'],
    [1, 'Cy', 'Cy/1.jpg'],
  ]);

  const twoOrMore = await readIdentityFolders(root, { minImagesPerIdentity: 2 });
  t.same(twoOrMore.identities, ['Bob']);
  t.same(rows(twoOrMore).map((row) => row[2]), ['Bob/1.jpg', 'Bob/2.JPEG', 'Bob/3.png']);
  t.same(twoOrMore.removed, [{ identity: 'Cy', reason: 'too-few-images', images: 1 }]);

  await t.rejects(readIdentityFolders(root, { minImagesPerIdentity: 0 }), /minImagesPerIdentity must be a positive integer, got 0/);
  await t.rejects(readIdentityFolders(root, { extensions: ['j*g'] }), /invalid image file extension "j\*g"/);
  await t.rejects(readIdentityFolders(root, { minImagesPerIdentity: 5 }), /no training identities left in .*2 identities removed/);
});

t.test('identity folders missing root', async (t) => {
  const root = t.testdir({ 'file.jpg': '' });
  await t.rejects(readIdentityFolders(path.join(root, 'absent')), /training images folder not found: .*absent/);
  await t.rejects(readIdentityFolders(path.join(root, 'file.jpg')), /is a file; expected a folder with one subfolder per identity/);
});

t.test('exclusion of CASIA names in LFW', async (t) => {
  const root = t.testdir();
  await placeImage(root, '0000045/001.jpg');
  await placeImage(root, '0000045/002.jpg');
  await placeImage(root, '0166921/001.jpg');
  await placeImage(root, '1056413/001.jpg');
  await placeImage(root, '1056413/002.jpg');
  await placeImage(root, '2000000/001.jpg');

  const set = await readIdentityFolders(root, { exclude: CASIA_LFW_OVERLAP });
  t.same(set.identities, ['0000045', '2000000'], 'labels are dense after removal');
  t.same(rows(set), [
    [0, '0000045', '0000045/001.jpg'],
    [0, '0000045', '0000045/002.jpg'],
    [1, '2000000', '2000000/001.jpg'],
  ]);
  t.same(set.removed, [
    { identity: '0166921', reason: 'excluded', images: 1 },
    { identity: '1056413', reason: 'excluded', images: 2 },
  ]);
  t.same(set.notFound, ['1193098'], 'an absent name is reported');

  const nonePresent = await readIdentityFolders(root, { exclude: ['Nobody', 'Also_Nobody'] });
  t.same(nonePresent.identities, ['0000045', '0166921', '1056413', '2000000']);
  t.same(nonePresent.removed, []);
  t.same(nonePresent.notFound, ['Nobody', 'Also_Nobody']);
});

// ---------------------------------------------------------------------------------------------
// List files
// ---------------------------------------------------------------------------------------------

t.test('list file with spaces, CRLF and blank lines', async (t) => {
  const root = t.testdir();
  await placeImage(root, 'images/0000099/001 copy.jpg');
  await placeImage(root, 'images/0000045/002.jpg');
  await placeImage(root, 'images/0000045/001.jpg');
  const absolute = path.join(root, 'images', '0000045', '001.jpg');
  const list = path.join(root, 'lists', 'train.txt');
  await mkdir(path.dirname(list));
  await writeFile(
    list,
    `\uFEFFimages/0000099/001 copy.jpg 1\r\n\r\n${absolute} 0\r\nimages/0000045/002.jpg\t0 \r\n\r\n`,
  );

  const set = await readTrainingList(list, { root });
  t.equal(set.source, list);
  t.same(set.identities, ['0000045', '0000099'], 'identities are the image folders, which match the labels one to one');
  t.same(rows(set), [
    [0, '0000045', 'images/0000045/001.jpg'],
    [0, '0000045', 'images/0000045/002.jpg'],
    [1, '0000099', 'images/0000099/001 copy.jpg'],
  ]);
  t.equal(set.samples[2]!.path, path.join(root, 'images', '0000099', '001 copy.jpg'));

  const besideList = await listError(t, readTrainingList(list));
  t.equal(besideList?.line, 3, 'without root, the root is the list folder, so the absolute path lies outside it');
  t.match(besideList?.message, /image path lies outside the root .*\/lists: /);

  const listInRoot = path.join(root, 'train.txt');
  await writeFile(listInRoot, 'images/0000045/001.jpg 0\n');
  t.same(rows(await readTrainingList(listInRoot)), [[0, '0000045', 'images/0000045/001.jpg']], 'a list in the root needs no root option');
});

t.test('list file identities from labels', async (t) => {
  const root = t.testdir();
  await placeImage(root, 'a/1.jpg');
  await placeImage(root, 'a/2.jpg');
  await placeImage(root, 'b/1.jpg');
  await placeImage(root, 'loose.jpg');
  const list = path.join(root, 'list.txt');

  // Folder "a" contains two labels, so folder names cannot be the identities.
  await writeFile(list, 'a/1.jpg 3\na/2.jpg 007\nb/1.jpg 3\nloose.jpg 12\n');
  const set = await readTrainingList(list);
  t.same(set.identities, ['3', '7', '12'], 'label values in numeric order, with gaps renumbered');
  t.same(rows(set), [
    [0, '3', 'a/1.jpg'],
    [0, '3', 'b/1.jpg'],
    [1, '7', 'a/2.jpg'],
    [2, '12', 'loose.jpg'],
  ]);

  const excluded = await readTrainingList(list, { exclude: ['7', '99'] });
  t.same(excluded.identities, ['3', '12']);
  t.same(rows(excluded).map((row) => row[0]), [0, 0, 1]);
  t.same(excluded.removed, [{ identity: '7', reason: 'excluded', images: 1 }]);
  t.same(excluded.notFound, ['99']);
});

t.test('list file excludes CASIA folders', async (t) => {
  const root = t.testdir();
  await placeImage(root, '0000045/001.jpg');
  await placeImage(root, '0166921/001.jpg');
  await placeImage(root, '1193098/001.jpg');
  await placeImage(root, '2000000/001.jpg');
  const list = path.join(root, 'list.txt');
  await writeFile(list, '0000045/001.jpg 0\n0166921/001.jpg 1\n1193098/001.jpg 2\n2000000/001.jpg 3\n');

  const set = await readTrainingList(list, { exclude: CASIA_LFW_OVERLAP });
  t.same(set.identities, ['0000045', '2000000']);
  t.same(rows(set).map((row) => row[0]), [0, 1], 'labels are dense after removal');
  t.same(set.notFound, ['1056413']);
});

t.test('list file errors name file, line and value', async (t) => {
  const root = t.testdir();
  await placeImage(root, 'P/1.jpg');
  await placeImage(root, 'P/2.jpg');

  const cases: Array<{ name: string; text: string; line: number; value: string; message: RegExp }> = [
    { name: 'word label', text: 'P/1.jpg 0\r\nP/2.jpg one\r\n', line: 2, value: 'one', message: /invalid label: "one"\. Expected a non-negative integer/ },
    { name: 'negative label', text: '\nP/1.jpg -1\n', line: 2, value: '-1', message: /invalid label: "-1"/ },
    { name: 'decimal label', text: 'P/1.jpg 1.5\n', line: 1, value: '1.5', message: /invalid label: "1\.5"/ },
    { name: 'missing label', text: 'P/1.jpg 0\nP/2.jpg\n', line: 2, value: 'P/2.jpg', message: /missing label: "P\/2\.jpg"\. Expected a line "path label"/ },
    { name: 'missing path', text: '  4\n', line: 1, value: '  4', message: /missing path/ },
    {
      name: 'missing file',
      text: 'P/1.jpg 0\nP/absent one.jpg 0\nP/2.jpg 0\nP/gone.jpg 1\n',
      line: 2,
      value: 'P/absent one.jpg',
      message: /image file not found: "P\/absent one\.jpg"\. Expected an image file at .*\/P\/absent one\.jpg\. .* 1 more listed image\(s\) are missing or unreadable, the next on line 4\.$/,
    },
    { name: 'folder as image', text: 'P 0\n', line: 1, value: 'P', message: /image path is not a file: "P"/ },
    { name: 'duplicate', text: 'P/1.jpg 0\n./P/1.jpg 1\n', line: 2, value: './P/1.jpg', message: /image listed twice \(first on line 1\)/ },
    { name: 'outside root', text: '../P/1.jpg 0\n', line: 1, value: '../P/1.jpg', message: /image path lies outside the root/ },
  ];

  for (const c of cases) {
    const list = path.join(root, `${c.name.replace(/ /g, '-')}.txt`);
    await writeFile(list, c.text);
    const error = await listError(t, readTrainingList(list));
    t.equal(error?.file, list, `${c.name}: file`);
    t.equal(error?.line, c.line, `${c.name}: line`);
    t.equal(error?.value, c.value, `${c.name}: value`);
    t.match(error?.message, c.message, `${c.name}: message`);
    t.ok(error?.message.startsWith(`${list}:${c.line}: `), `${c.name}: message starts with file:line`);
  }

  const empty = path.join(root, 'empty.txt');
  await writeFile(empty, '\r\n\r\n');
  await t.rejects(readTrainingList(empty), /lists no images/);
  await t.rejects(readTrainingList(path.join(root, 'absent.txt')), /training list not found: .*absent\.txt/);
});

// ---------------------------------------------------------------------------------------------
// LFW people split
// ---------------------------------------------------------------------------------------------

/**
 * Parses `pairs.txt` independently of `datasets/lfw.ts`: tab-split lines, 600 per fold. Returns
 * the people of each fold, from 1.
 */
function naivePeopleByFold(text: string): Map<number, Set<string>> {
  const lines = text.split('\n').slice(1).filter((line) => line.trim() !== '');
  const byFold = new Map<number, Set<string>>();
  lines.forEach((line, i) => {
    const fold = Math.floor(i / 600) + 1;
    const fields = line.trim().split('\t');
    const people = fields.length === 3 ? [fields[0]!] : [fields[0]!, fields[2]!];
    const set = byFold.get(fold) ?? new Set<string>();
    for (const person of people) set.add(person);
    byFold.set(fold, set);
  });
  return byFold;
}

t.test('LFW split of fold 10 on real data', async (t) => {
  const text = await readFile(lfw.pairs, 'utf8');
  const byFold = naivePeopleByFold(text);
  const testPeople = byFold.get(10)!;
  const expectedPeople = new Set<string>();
  for (const [fold, people] of byFold) {
    if (fold === 10) continue;
    for (const person of people) if (!testPeople.has(person)) expectedPeople.add(person);
  }
  let expectedImages = 0;
  for (const person of expectedPeople) {
    const files = await readdir(path.join(lfw.images, person));
    expectedImages += files.filter((file) => file.startsWith(`${person}_`) && /^\d{4}\.jpg$/.test(file.slice(person.length + 1))).length;
  }

  const pairs = await readPairs(lfw.pairs, { checkImages: false });
  const split = await lfwPeopleSplit(pairs, 10);

  t.equal(split.testFold, 10);
  t.equal(split.testPairs.length, 600);
  t.equal(split.trainPairs.length, 5400);
  t.ok(split.testPairs.every((pair) => pair.fold === 9), 'test pairs are the tenth block of 600');
  t.same(split.sharedWithTestFold, [], 'View 2 folds share no people');
  t.equal(split.train.identities.length, expectedPeople.size, 'training identities');
  t.equal(split.train.samples.length, expectedImages, 'training images');
  t.ok(split.train.identities.every((person) => expectedPeople.has(person)), 'every identity is a training-fold person');

  const inTestFold = split.train.identities.filter((person) => testPeople.has(person));
  t.same(inTestFold, [], 'no training person appears in the test fold');

  const labels = new Set(split.train.samples.map((sample) => sample.label));
  t.equal(labels.size, split.train.identities.length, 'every label has samples');
  t.equal(Math.min(...labels), 0);
  t.equal(Math.max(...labels), split.train.identities.length - 1, 'labels are dense');

  // Without a comparator, Array.prototype.sort orders strings by UTF-16 code unit.
  const sorted = [...split.train.identities].sort();
  t.same(split.train.identities, sorted, 'identities in code-unit order');
  const first = split.train.samples[0]!;
  t.match(first.id, /^([^/]+)\/\1_\d{4}\.jpg$/, 'ids follow Name/Name_NNNN.jpg');
  t.equal(first.path, path.join(pairs.imagesDir, first.id));
});

/** Writes a two-fold pairs file whose folds share Abel_Pacheco, with its images. */
async function writeSharedPersonPairs(dir: string): Promise<{ file: string; images: string }> {
  const images = path.join(dir, 'lfw');
  const people: Record<string, number> = { Abel_Pacheco: 4, Aaron_Eckhart: 1, AJ_Cook: 1, Akhmed_Zakayev: 1, AJ_Lamas: 1 };
  for (const [person, count] of Object.entries(people)) {
    for (let n = 1; n <= count; n++) {
      const id = `${person}/${person}_${String(n).padStart(4, '0')}.jpg`;
      await placeImage(images, id, path.join(lfw.images, id));
    }
  }
  // A second AJ_Cook image that no pair uses, and a file that is not an LFW image name.
  await placeImage(images, 'AJ_Cook/AJ_Cook_0002.jpg');
  await placeImage(images, 'AJ_Cook/portrait.jpg');

  const file = path.join(dir, 'pairs.txt');
  const lines = [
    '2\t1',
    'Abel_Pacheco\t1\t2',
    'Aaron_Eckhart\t1\tAJ_Cook\t1',
    'Abel_Pacheco\t3\t4',
    'Akhmed_Zakayev\t1\tAJ_Lamas\t1',
  ];
  await writeFile(file, `${lines.join('\n')}\n`);
  return { file, images };
}

t.test('LFW split removes shared people', async (t) => {
  const dir = t.testdir();
  const { file, images } = await writeSharedPersonPairs(dir);
  const pairs = parsePairs(await readFile(file, 'utf8'), file, images);

  const split = await lfwPeopleSplit(pairs, 2);
  t.same(split.sharedWithTestFold, ['Abel_Pacheco']);
  t.same(split.train.identities, ['AJ_Cook', 'Aaron_Eckhart'], 'code-unit order puts "AJ" before "Aa"');
  t.same(rows(split.train), [
    [0, 'AJ_Cook', 'AJ_Cook/AJ_Cook_0001.jpg'],
    [0, 'AJ_Cook', 'AJ_Cook/AJ_Cook_0002.jpg'],
    [1, 'Aaron_Eckhart', 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg'],
  ]);
  t.same(split.train.removed, [{ identity: 'Abel_Pacheco', reason: 'in-test-fold', images: 4 }]);
  t.same(split.testPairs.map((pair) => pair.line), [4, 5]);
  t.same(split.trainPairs.map((pair) => pair.line), [2, 3]);

  const atLeastTwo = await lfwPeopleSplit(pairs, 2, { minImagesPerIdentity: 2 });
  t.same(atLeastTwo.train.identities, ['AJ_Cook']);
  t.same(atLeastTwo.train.removed, [
    { identity: 'Aaron_Eckhart', reason: 'too-few-images', images: 1 },
    { identity: 'Abel_Pacheco', reason: 'in-test-fold', images: 4 },
  ]);

  const fold1 = await lfwPeopleSplit(pairs, 1);
  t.same(fold1.train.identities, ['AJ_Lamas', 'Akhmed_Zakayev']);

  await t.rejects(lfwPeopleSplit(pairs, 3), /test fold 3 is out of range; expected an integer from 1 to 2/);
  await t.rejects(lfwPeopleSplit(pairs, 0), /test fold 0 is out of range/);
});

t.test('LFW split missing pair image', async (t) => {
  const dir = t.testdir();
  const { file, images } = await writeSharedPersonPairs(dir);
  const pairs = parsePairs(await readFile(file, 'utf8'), file, images);
  await rm(path.join(images, 'AJ_Lamas', 'AJ_Lamas_0001.jpg'));

  const rejection = lfwPeopleSplit(pairs, 1);
  await t.rejects(rejection, LfwMissingImagesError);
  await t.rejects(rejection, /1 image\(s\) used by .*pairs\.txt not found[\s\S]*pairs\.txt:5: .*AJ_Lamas_0001\.jpg \(not found\)/);
});

t.test('LFW split needs several folds', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'view1.txt');
  const pairs = parsePairs('1\nAbel_Pacheco\t1\t2\nAaron_Eckhart\t1\tAJ_Cook\t1\n', file, lfw.images);
  await t.rejects(lfwPeopleSplit(pairs, 1), /has 1 fold; a people split needs the View 2 pairs/);
});

// ---------------------------------------------------------------------------------------------
// Fingerprint
// ---------------------------------------------------------------------------------------------

t.test('fingerprint tracks samples', async (t) => {
  const dir = t.testdir();
  for (const root of ['a', 'b']) {
    await placeImage(path.join(dir, root), 'Bob/1.jpg');
    await placeImage(path.join(dir, root), 'Cy/1.jpg');
  }

  const before = fingerprint(await readIdentityFolders(path.join(dir, 'a')));
  t.match(before, /^[0-9a-f]{64}$/);
  t.equal(fingerprint(await readIdentityFolders(path.join(dir, 'a'))), before, 'stable across reads');
  t.equal(fingerprint(await readIdentityFolders(path.join(dir, 'b'))), before, 'same dataset in another folder');

  await placeImage(path.join(dir, 'a'), 'Bob/2.jpg');
  const added = fingerprint(await readIdentityFolders(path.join(dir, 'a')));
  t.not(added, before, 'an added sample changes it');

  await placeImage(path.join(dir, 'a'), 'Al/1.jpg');
  const relabelled = await readIdentityFolders(path.join(dir, 'a'));
  t.same(relabelled.identities, ['Al', 'Bob', 'Cy']);
  t.not(fingerprint(relabelled), added, 'a new identity shifts labels and changes it');
});
