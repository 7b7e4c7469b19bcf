import t from 'tap';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import { formatEntry, formatHeader, readDetectionsFile, sha256Hex, type DetectionsEntry } from '../lib/detectionsFile.ts';

const entry: DetectionsEntry = {
  id: 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg',
  sha256: sha256Hex(new TextEncoder().encode('abc')),
  width: 250,
  height: 250,
  faces: [
    {
      box: [70.5, 60, 180, 190.25],
      score: 0.999,
      landmarks: [
        [107, 107],
        [147, 111],
        [124, 143],
        [103, 157],
        [139, 161],
      ],
    },
  ],
};

t.test('sha256 of "abc" is the FIPS 180-2 test vector', async (t) => {
  t.equal(sha256Hex(new TextEncoder().encode('abc')), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

t.test('detections file round-trips', async (t) => {
  const dir = t.testdir({});
  const file = path.join(dir, 'detections.jsonl');
  const rejected: DetectionsEntry = { ...entry, id: 'x/x_0001.jpg', faces: [], rejected: 'no face found' };
  await writeFile(file, `${formatHeader({ minsize: 20 })}\r\n${formatEntry(entry)}\n${formatEntry(rejected)}\n\n`);
  const read = await readDetectionsFile(file);
  t.same(read.header.detector, { minsize: 20 });
  t.same(read.entries.get(entry.id), entry);
  t.equal(read.entries.get('x/x_0001.jpg')?.rejected, 'no face found');
  t.equal(read.entries.size, 2);
});

t.test('detections file errors name file and line', async (t) => {
  const dir = t.testdir({});
  const cases: Array<[string, string, RegExp]> = [
    ['empty', '', /is empty/],
    ['bad-header', '{"format":"other","version":1,"detector":{}}\n', /:1: invalid sphereface-detections version 1 header/],
    ['not-json', `${formatHeader({})}\n{"id": oops}\n`, /:2: not valid JSON/],
    ['nan-landmark', `${formatHeader({})}\n${formatEntry(entry).replace('[107,107]', '[107,"x"]')}\n`, /:2: invalid detection entry/],
    ['four-points', `${formatHeader({})}\n${formatEntry(entry).replace('[107,107],', '')}\n`, /:2: invalid detection entry/],
    ['bad-hash', `${formatHeader({})}\n${formatEntry({ ...entry, sha256: 'abc' })}\n`, /:2: invalid detection entry/],
    ['duplicate', `${formatHeader({})}\n${formatEntry(entry)}\n${formatEntry(entry)}\n`, /:3: image "Aaron_Eckhart\/Aaron_Eckhart_0001.jpg" appears twice/],
  ];
  for (const [name, text, pattern] of cases) {
    const file = path.join(dir, `${name}.jsonl`);
    await writeFile(file, text);
    await t.rejects(readDetectionsFile(file), pattern, name);
  }
});
