import t from 'tap';
import path from 'node:path';
import { readImageFolder, readImageList } from '../datasets/imageFolder.ts';

t.test('image folder lists identity/image files in order', async (t) => {
  const dir = t.testdir({
    Bob: { 'b_2.JPG': '', 'b_1.jpg': '', 'notes.txt': '' },
    Alice: { 'a_1.png': '' },
    'stray.jpg': '',
  });
  const refs = await readImageFolder(dir);
  t.same(
    refs.map((r) => [r.id, r.identity]),
    [
      ['Alice/a_1.png', 'Alice'],
      ['Bob/b_1.jpg', 'Bob'],
      ['Bob/b_2.JPG', 'Bob'],
    ],
  );
  t.equal(refs[0]?.path, path.join(dir, 'Alice', 'a_1.png'));
});

t.test('empty image folder is an error', async (t) => {
  const dir = t.testdir({ 'stray.jpg': '' });
  await t.rejects(readImageFolder(dir), /no images found in .*one folder per identity/);
});

t.test('list file with and without labels', async (t) => {
  const dir = t.testdir({
    'list.txt': '# comment\r\nAlice/a 1.jpg 0\r\n\r\nBob/b_1.png\r\n',
  });
  const refs = await readImageList(path.join(dir, 'list.txt'));
  t.same(
    refs.map((r) => [r.id, r.identity, r.path]),
    [
      ['Alice/a 1.jpg', '0', path.join(dir, 'Alice', 'a 1.jpg')],
      ['Bob/b_1.png', 'Bob', path.join(dir, 'Bob', 'b_1.png')],
    ],
  );
});

t.test('list file errors name file and line', async (t) => {
  const dir = t.testdir({ 'bad.txt': 'a.jpg\nreadme.md\n', 'twice.txt': 'a.jpg\na.jpg 3\n', 'blank.txt': '\n# only\n' });
  await t.rejects(readImageList(path.join(dir, 'bad.txt')), /bad\.txt:2: "readme\.md" does not name an image/);
  await t.rejects(readImageList(path.join(dir, 'twice.txt')), /twice\.txt:2: "a\.jpg" is listed twice \(first on line 1\)/);
  await t.rejects(readImageList(path.join(dir, 'blank.txt')), /lists no images/);
});

t.test('list paths outside the root are an error', async (t) => {
  const dir = t.testdir({ 'list.txt': '../elsewhere/a.jpg\n' });
  await t.rejects(readImageList(path.join(dir, 'list.txt')), /list\.txt:1: "\.\.\/elsewhere\/a\.jpg" lies outside the list's root/);
});

t.test('list ids are normalised, so ./ duplicates are caught', async (t) => {
  const dir = t.testdir({ 'list.txt': 'P/./a.jpg\nP/a.jpg\n' });
  await t.rejects(readImageList(path.join(dir, 'list.txt')), /"P\/a\.jpg" is listed twice/);
});

t.test('missing images folder is named', async (t) => {
  await t.rejects(readImageFolder('/nonexistent/photos'), /images folder not found: \/nonexistent\/photos/);
});
