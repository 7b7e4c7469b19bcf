/**
 * The first stage: image paths in, decoded 8-bit RGB pixels out, read with sharp (libvips).
 */
import fs from 'node:fs';
import path from 'node:path';

import fg from 'fast-glob';
import { concatMap, defer, from, type Observable, type OperatorFunction } from 'rxjs';
import sharp, { type Metadata, type SharpOptions } from 'sharp';

import { orderedMergeMap } from '../lib/orderedMergeMap.ts';
import { isRejected, reject, type DecodedImage, type ImageRef, type Maybe, type Rejected } from './records.ts';

const STAGE = 'readImages';

/** An 8-bit sRGB colour, each channel 0–255. */
export interface RgbColour {
  readonly r: number;
  readonly g: number;
  readonly b: number;
}

export interface ReadImagesOptions {
  /**
   * Largest image to decode, in pixels (width × height of the first frame), default 50,000,000.
   * A larger image is rejected from its header alone, before any pixel is decoded.
   */
  readonly maxPixels?: number;
  /** Colour that transparent pixels are composited onto, default white (255, 255, 255). */
  readonly background?: RgbColour;
  /** Number of images decoded at once, default 2. */
  readonly concurrency?: number;
}

/** `ReadImagesOptions` with every default filled in. */
interface ReadSettings {
  readonly maxPixels: number;
  readonly background: RgbColour;
  readonly concurrency: number;
}

const DEFAULTS: ReadSettings = {
  maxPixels: 50_000_000,
  background: { r: 255, g: 255, b: 255 },
  concurrency: 2,
};

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
  const settings = resolveOptions(options, 'readImages');
  return orderedMergeMap(
    (record: Maybe<ImageRef>) => (isRejected(record) ? Promise.resolve(record) : decodeWithSettings(record, settings)),
    settings.concurrency,
  );
}

/**
 * Decodes one file as `readImages` does, for code outside a stream. The promise resolves to a
 * `Rejected` for a bad file, and rejects only for the faults that error a `readImages` stream.
 * Invalid options throw at once.
 */
export function decodeImage(ref: ImageRef, options: ReadImagesOptions = {}): Promise<DecodedImage | Rejected> {
  return decodeWithSettings(ref, resolveOptions(options, 'decodeImage'));
}

function resolveOptions(options: ReadImagesOptions, caller: string): ReadSettings {
  const maxPixels = options.maxPixels ?? DEFAULTS.maxPixels;
  if (!Number.isSafeInteger(maxPixels) || maxPixels < 1) {
    throw new RangeError(`${caller}: maxPixels must be a positive integer, got ${String(maxPixels)}`);
  }

  const concurrency = options.concurrency ?? DEFAULTS.concurrency;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new RangeError(`${caller}: concurrency must be a positive integer, got ${String(concurrency)}`);
  }

  const background = options.background ?? DEFAULTS.background;
  for (const channel of ['r', 'g', 'b'] as const) {
    const value: unknown = background[channel];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 255) {
      throw new RangeError(`${caller}: background.${channel} must be an integer from 0 to 255, got ${String(value)}`);
    }
  }

  return { maxPixels, concurrency, background: { r: background.r, g: background.g, b: background.b } };
}

/**
 * File-system error codes that describe the file itself, so they reject that one image.
 * Any other code (EMFILE, EIO, ENOMEM, …) is a fault of the run.
 */
const FILE_ERROR_CODES = new Set(['ENOENT', 'ENOTDIR', 'EACCES', 'EPERM', 'ELOOP', 'ENAMETOOLONG']);

async function decodeWithSettings(ref: ImageRef, settings: ReadSettings): Promise<DecodedImage | Rejected> {
  try {
    const stats = await fs.promises.stat(ref.path);
    if (!stats.isFile()) return reject(ref, STAGE, `not a regular file: ${ref.path}`);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return reject(ref, STAGE, `file not found: ${ref.path}`);
    if (code !== undefined && FILE_ERROR_CODES.has(code)) {
      return reject(ref, STAGE, `failed to read ${ref.path}: ${(error as Error).message}`);
    }
    throw error;
  }

  let header: Metadata;
  try {
    header = await sharp(ref.path, { ...inputOptions(settings), limitInputPixels: false }).metadata();
  } catch (error) {
    return reject(ref, STAGE, `failed to read the image header of ${ref.path}: ${decoderMessage(error)}`);
  }

  // The header gives the size of the first frame, because `inputOptions` requests one page.
  const pixels = header.width * header.height;
  if (pixels > settings.maxPixels) {
    return reject(
      ref,
      STAGE,
      `${ref.path} is ${header.width}×${header.height} = ${pixels} pixels, over the limit of ${settings.maxPixels} pixels. ` +
        'Raise the limit (--max-pixels of eval and preprocess, params.maxPixels of readImages in a spec, maxPixels in code) to decode it',
    );
  }

  let decoded: DecodedPixels;
  try {
    decoded = await decodePixels(ref.path, header, settings);
  } catch (error) {
    return reject(ref, STAGE, `failed to decode ${ref.path}: ${decoderMessage(error)}`);
  }

  const { rgb, width, height, channels } = decoded;
  if (channels !== 3 || rgb.length !== width * height * 3) {
    return reject(
      ref,
      STAGE,
      `decoding ${ref.path} gave ${rgb.length} bytes in ${channels} channels, ` +
        `expected width × height × 3 = ${width} × ${height} × 3 = ${width * height * 3}`,
    );
  }

  return { id: ref.id, path: ref.path, width, height, rgb };
}

/**
 * sharp options shared by the header read and the decode.
 *
 * libjpeg reports a truncated JPEG as a warning and invents the missing rows, so with
 * `failOn: 'none'` a file cut in half decodes without an error. `failOn: 'error'` fails on
 * truncation and on decoder errors but accepts plain warnings, such as extra bytes between JPEG
 * markers, which sharp's default `'warning'` would reject. `pages: 1` reads the first frame only.
 */
function inputOptions(settings: ReadSettings): SharpOptions {
  return { failOn: 'error', pages: 1, limitInputPixels: settings.maxPixels };
}

/**
 * Whether sharp's own 16-bit to 8-bit conversion must be bypassed. libvips 8.18 converts 16-bit
 * RGB to 8-bit by dropping the low byte (25829 → 100, where dividing by 257 gives 101), so a
 * 16-bit image without colour management is decoded at 16 bits and rounded here instead. An image
 * with an ICC profile, and a CMYK image, are decoded at 8 bits because their colour transform
 * (LittleCMS) writes 8-bit output itself.
 */
function usesExact16BitPath(header: Metadata): boolean {
  return header.depth === 'ushort' && !header.hasProfile && header.space !== 'cmyk';
}

interface DecodedPixels {
  readonly rgb: Uint8Array;
  readonly width: number;
  readonly height: number;
  readonly channels: number;
}

/**
 * Decodes the first frame to sRGB, oriented, at 8 or 16 bits, then composites alpha and reduces
 * 16-bit samples to 8 bits. An 8-bit image without alpha, the common case, is returned without a
 * copy.
 *
 * Alpha is composited here rather than by sharp's `flatten`, which has two faults in sharp 0.35.
 * On a grey image with alpha it uses only the first background value, so a blue background comes
 * out black. For 16-bit images it scales the background by 256, so white (65280) divided by 257
 * would come out as 254.
 */
async function decodePixels(file: string, header: Metadata, settings: ReadSettings): Promise<DecodedPixels> {
  const sixteenBit = usesExact16BitPath(header);
  const oriented = sharp(file, inputOptions(settings)).rotate();
  const output = sixteenBit
    ? oriented.toColourspace('rgb16').raw({ depth: 'ushort' })
    : oriented.toColourspace('srgb').raw();
  const { data, info } = await output.toBuffer({ resolveWithObject: true });
  const { width, height, channels } = info;

  if (!sixteenBit && channels === 3) {
    return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.length), width, height, channels };
  }
  if (channels !== 3 && channels !== 4) {
    // The caller rejects this, because the length check expects 3 channels.
    return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.length), width, height, channels };
  }

  // Copy when the byte offset is odd, because a Uint16Array view needs 2-byte alignment.
  const aligned = sixteenBit && data.byteOffset % 2 !== 0 ? new Uint8Array(data) : data;
  const samples = sixteenBit
    ? new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.length / 2)
    : new Uint8Array(aligned.buffer, aligned.byteOffset, aligned.length);
  const rgb = compositeTo8Bit(samples, width * height, channels, sixteenBit ? 65535 : 255, settings.background);
  return { rgb, width, height, channels: 3 };
}

/**
 * Composites RGB or RGBA samples onto `background` and scales them to 8 bits:
 * out = round((c·α + b·(1 − α)) / (maxSample / 255)), with α = a / maxSample and the background
 * b scaled to the sample range. For 16-bit samples the divisor is 257, so 25700 becomes 100.
 */
function compositeTo8Bit(
  samples: Uint8Array | Uint16Array,
  pixelCount: number,
  channels: 3 | 4,
  maxSample: number,
  background: RgbColour,
): Uint8Array {
  const scale = maxSample / 255;
  const backgroundSamples = [background.r * scale, background.g * scale, background.b * scale];
  const rgb = new Uint8Array(pixelCount * 3);

  for (let pixel = 0; pixel < pixelCount; pixel += 1) {
    const alpha = channels === 4 ? (samples[pixel * 4 + 3] as number) / maxSample : 1;
    for (let channel = 0; channel < 3; channel += 1) {
      const sample = samples[pixel * channels + channel] as number;
      const composited = sample * alpha + (backgroundSamples[channel] as number) * (1 - alpha);
      rgb[pixel * 3 + channel] = Math.round(composited / scale);
    }
  }

  return rgb;
}

/** Joins the decoder's message into one line, because libvips messages may span several lines. */
function decoderMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length > 0)
    .join('; ');
}
