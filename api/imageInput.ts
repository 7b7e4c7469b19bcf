/**
 * Decoding the image that `embed` and `verify` take: a file path or the bytes of an encoded
 * image (JPEG, PNG, WebP, …).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { decodeImage } from '../lib/decodeImage.ts';
import { isRejected, type DecodedImage } from '../operators/records.ts';

/** An image to embed: a file path, or an encoded image file in memory (a `Buffer` is a `Uint8Array`). */
export type ImageInput = string | Uint8Array;

/** An image that could not be read or decoded. The message names the file and the cause. */
export class ImageInputError extends Error {
  override readonly name = 'ImageInputError';
}

/** Returns how messages and reports name an input: its path, or `<buffer of N bytes>`. */
export function describeImageInput(image: ImageInput): string {
  return typeof image === 'string' ? image : `<buffer of ${image.byteLength} bytes>`;
}

/**
 * Decodes an image to 8-bit sRGB as the `readImages` stage does (EXIF orientation applied, alpha
 * composited onto white, first frame only).
 *
 * In-memory bytes go through a temporary file, so that they decode exactly as a file with the same
 * bytes would, and the file is removed afterwards.
 *
 * @throws ImageInputError when the file is missing, the bytes are not a decodable image, or the
 *   image has more than `maxPixels` pixels.
 * @throws TypeError when `image` is neither a string nor a Uint8Array.
 */
export async function decodeImageInput(image: ImageInput, maxPixels: number): Promise<DecodedImage> {
  if (typeof image === 'string') {
    if (image === '') throw new TypeError('image path is empty; expected a file path or the bytes of an encoded image');
    return decodeFile(image, image, maxPixels);
  }
  if (!(image instanceof Uint8Array)) {
    throw new TypeError(`image must be a file path or a Buffer/Uint8Array of an encoded image, got ${describeValue(image)}`);
  }
  if (image.byteLength === 0) throw new ImageInputError('image buffer is empty; expected the bytes of an encoded image (JPEG, PNG, …)');

  const folder = await mkdtemp(path.join(os.tmpdir(), 'sphereface-image-'));
  const file = path.join(folder, 'image');
  try {
    await writeFile(file, image);
    return await decodeFile(file, describeImageInput(image), maxPixels);
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

async function decodeFile(file: string, label: string, maxPixels: number): Promise<DecodedImage> {
  const decoded = await decodeImage({ id: label, path: file }, { maxPixels });
  if (isRejected(decoded)) throw new ImageInputError(decoded.reason.replaceAll(file, label));
  return { ...decoded, path: label };
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return `an object of type ${value.constructor?.name ?? 'Object'}`;
  return `a ${typeof value}`;
}
