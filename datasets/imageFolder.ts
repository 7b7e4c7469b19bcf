/**
 * Image sets other than LFW: a folder with one subfolder per identity (CASIA-WebFace,
 * VGGFace2 and most face datasets ship this way), or a list file.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import fg from 'fast-glob';
import type { ImageRef } from '../operators/records.ts';

/** An image with the identity it belongs to. */
export interface LabelledImageRef extends ImageRef {
  /** The identity's name: its folder name, or the label of the list file. */
  readonly identity: string;
}

/** File extensions that `readImages` decodes, matched case-insensitively. */
export const IMAGE_EXTENSIONS = ['jpg', 'jpeg', 'png', 'webp', 'gif', 'tif', 'tiff', 'bmp'] as const;

/**
 * Lists `root/Identity/image.ext`, sorted by path so that every run lists them in the same order. Ids are the
 * paths relative to `root` with `/` separators. Files directly in `root` or deeper than one
 * folder are not images of an identity and are left out; an empty result is an error.
 */
export async function readImageFolder(root: string): Promise<LabelledImageRef[]> {
  const absoluteRoot = path.resolve(root);
  const rootStat = await stat(absoluteRoot).catch(() => undefined);
  if (rootStat === undefined) throw new Error(`images folder not found: ${absoluteRoot}`);
  if (!rootStat.isDirectory()) throw new Error(`images folder ${absoluteRoot} is a file; expected a folder with one subfolder per identity`);
  const pattern = `*/*.{${IMAGE_EXTENSIONS.join(',')}}`;
  const matches = await fg(pattern, { cwd: absoluteRoot, onlyFiles: true, caseSensitiveMatch: false });
  if (matches.length === 0) {
    throw new Error(
      `no images found in ${absoluteRoot}: expected one folder per identity holding ${IMAGE_EXTENSIONS.join(', ')} files`,
    );
  }
  return matches.sort().map((relative) => ({
    id: relative,
    path: path.join(absoluteRoot, relative),
    identity: relative.split('/')[0] as string,
  }));
}

/**
 * Reads a list file: one image per line, a path relative to the list file's folder (or to
 * `root`) and optionally whitespace and a label, as Caffe's ImageData lists are written. The
 * path ends at the last whitespace when a label follows, so paths may contain spaces only in
 * the two-column form. Blank lines and lines starting with `#` are skipped; CRLF is accepted.
 */
export async function readImageList(file: string, root?: string): Promise<LabelledImageRef[]> {
  const absoluteFile = path.resolve(file);
  const base = path.resolve(root ?? path.dirname(absoluteFile));
  const text = await readFile(absoluteFile, 'utf8');
  const refs: LabelledImageRef[] = [];
  const seen = new Map<string, number>();

  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    const lineNumber = index + 1;
    if (line === '' || line.startsWith('#')) return;

    const labelled = /^(.*\S)\s+(\S+)$/.exec(line);
    const relative = labelled ? (labelled[1] as string) : line;
    const identity = labelled ? (labelled[2] as string) : path.dirname(relative).split(/[\\/]/).pop() ?? '';
    const extension = path.extname(relative).slice(1).toLowerCase();
    if (!(IMAGE_EXTENSIONS as readonly string[]).includes(extension)) {
      throw new Error(
        `${absoluteFile}:${lineNumber}: "${line}" does not name an image: expected a path ending in .${IMAGE_EXTENSIONS.join(', .')}, optionally followed by a label`,
      );
    }

    // Ids are paths relative to the root, so that crops named after them stay in the output
    // folder. Absolute paths (as Caffe lists have) must lie inside the root too.
    const absolute = path.resolve(base, relative);
    const id = path.relative(base, absolute).split(path.sep).join('/');
    if (id.startsWith('../') || id === '..' || path.isAbsolute(id)) {
      throw new Error(
        `${absoluteFile}:${lineNumber}: "${relative}" lies outside the list's root ${base}; pass --root with a folder that contains every listed image`,
      );
    }
    const earlier = seen.get(id);
    if (earlier !== undefined) {
      throw new Error(`${absoluteFile}:${lineNumber}: "${id}" is listed twice (first on line ${earlier}); each image may appear once`);
    }
    seen.set(id, lineNumber);
    refs.push({ id, path: absolute, identity });
  });

  if (refs.length === 0) throw new Error(`${absoluteFile} lists no images`);
  return refs;
}
