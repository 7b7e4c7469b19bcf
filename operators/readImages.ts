/**
 * The first stage: image paths in, decoded 8-bit RGB pixels out, read with sharp (libvips).
 */
import path from 'node:path';

import fg from 'fast-glob';
import { concatMap, defer, from, type Observable, type OperatorFunction } from 'rxjs';

import { decodeWithSettings, resolveReadSettings, type ReadImagesOptions } from '../lib/decodeImage.ts';
import { orderedMergeMap } from '../lib/orderedMergeMap.ts';
import { isRejected, type DecodedImage, type ImageRef, type Maybe } from './records.ts';

export { decodeImage, type ReadImagesOptions, type RgbColour } from '../lib/decodeImage.ts';

/**
 * Lists the images to read, as a list of paths or as one fast-glob pattern.
 *
 * Relative paths and the pattern are resolved against `options.cwd` (default `process.cwd()`).
 * Each `path` is absolute, and each `id` is the path relative to `cwd` with `/` separators,
 * unless the list gives an `ImageRef` with its own id. The matches of a pattern are sorted by
 * path (code-unit order), so every run gets the same order.
 *
 * Throws at once on an empty path or on two entries with the same id, because ids are unique
 * within a run. The stream errors when the pattern matches no file, since a run over nothing is
 * almost always a wrong path.
 *
 * @example
 * imageRefs('lfw/Aaron_Eckhart/*.jpg', { cwd: 'data' }).pipe(readImages({ concurrency: 2 }));
 */
export function imageRefs(
  input: readonly (string | ImageRef)[] | string,
  options: { readonly cwd?: string } = {},
): Observable<ImageRef> {
  const cwd = path.resolve(options.cwd ?? process.cwd());

  if (typeof input === 'string') {
    const pattern = input;
    return defer(async () => {
      const matches = await fg(pattern, { cwd, absolute: true, onlyFiles: true });
      if (matches.length === 0) {
        throw new Error(`imageRefs: no file matches the pattern '${pattern}' in ${cwd}`);
      }
      return matches.sort().map((file) => refFromPath(file, cwd));
    }).pipe(concatMap((refs) => refs));
  }

  const refs = input.map((entry, position) => {
    if (typeof entry === 'string') {
      if (entry.length === 0) throw new Error(`imageRefs: entry ${position} is an empty path`);
      return refFromPath(path.resolve(cwd, entry), cwd);
    }
    return { id: entry.id, path: path.resolve(cwd, entry.path) };
  });

  const firstPositionById = new Map<string, number>();
  refs.forEach((ref, position) => {
    const earlier = firstPositionById.get(ref.id);
    if (earlier !== undefined) {
      throw new Error(`imageRefs: entries ${earlier} and ${position} have the same id '${ref.id}', but ids must be unique`);
    }
    firstPositionById.set(ref.id, position);
  });

  return from(refs);
}

function refFromPath(absolutePath: string, cwd: string): ImageRef {
  const id = path.relative(cwd, absolutePath).split(path.sep).join('/');
  return { id, path: absolutePath };
}

/**
 * Decodes each `ImageRef` into 8-bit RGB, at most `concurrency` files at once, and emits the
 * results in input order. Incoming `Rejected` records pass through unchanged, in their place.
 *
 * Each image is brought to the same form, so later stages never see the file's own layout:
 * - EXIF orientation is applied, so width and height are as the image is meant to be viewed.
 * - Only the first frame of an animated or multi-page file (GIF, WebP, TIFF) is read.
 * - Grey images get three equal channels, and CMYK images and images with an embedded ICC
 *   profile are converted to sRGB by libvips.
 * - 16-bit samples become 8-bit by dividing by 257 and rounding (25700 → 100). A 16-bit image
 *   with an ICC profile or in CMYK is converted by LittleCMS instead, which rounds on its own.
 * - Alpha is composited onto `background`.
 *
 * A file that is missing, unreadable, truncated or undecodable, or that has more than `maxPixels`
 * pixels, becomes a `Rejected` whose reason names the path. The stream goes on after it.
 * When the check that the file exists fails with an error that is not about the file itself
 * (for example EMFILE or EIO), the stream errors. Errors from libvips always reject the one
 * image, because libvips reports them as text without an error code. Invalid options throw at
 * once.
 *
 * At most `concurrency` images are in memory in this operator, decoding or waiting for an
 * earlier one to finish. NOTE: an async operator downstream (for example `concatMap`) queues
 * whatever this operator emits, so a slow stage there needs its own bound.
 *
 * @example
 * imageRefs(['a.jpg', 'b.png'])
 *   .pipe(readImages({ concurrency: 2 }))
 *   .subscribe((image) => console.log(isRejected(image) ? image.reason : `${image.width}×${image.height}`));
 */
export function readImages(options: ReadImagesOptions = {}): OperatorFunction<Maybe<ImageRef>, Maybe<DecodedImage>> {
  const settings = resolveReadSettings(options, 'readImages');
  return orderedMergeMap(
    (record: Maybe<ImageRef>) => (isRejected(record) ? Promise.resolve(record) : decodeWithSettings(record, settings)),
    settings.concurrency,
  );
}
