/**
 * Decoding one image file to 8-bit RGB with sharp (libvips): the work of the `readImages` stage
 * for a single file. It imports neither rxjs nor fast-glob, so a worker thread that only decodes
 * (see operators/workers/decodeAlign.worker.ts) starts without loading them.
 */
import fs from 'node:fs';

import sharp, { type Metadata, type SharpOptions } from 'sharp';

import { reject, type DecodedImage, type ImageRef, type Rejected } from '../operators/records.ts';

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
export interface ReadSettings {
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
 * Decodes one file as `readImages` does, for code outside a stream. The promise resolves to a
 * `Rejected` for a bad file, and rejects only for the faults that error a `readImages` stream.
 * Invalid options throw at once.
 */
export function decodeImage(ref: ImageRef, options: ReadImagesOptions = {}): Promise<DecodedImage | Rejected> {
  return decodeWithSettings(ref, resolveReadSettings(options, 'decodeImage'));
}

/** Checks `options` and fills in the defaults. `caller` names the function in error messages. */
export function resolveReadSettings(options: ReadImagesOptions, caller: string): ReadSettings {
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

/**
 * Decodes one file with settings that `resolveReadSettings` has checked. See `decodeImage` for
 * what resolves to a `Rejected` and what rejects the promise.
 */
export async function decodeWithSettings(ref: ImageRef, settings: ReadSettings): Promise<DecodedImage | Rejected> {
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
    header = await retryIfMessageLost(() => sharp(ref.path, { ...inputOptions(settings), limitInputPixels: false }).metadata());
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
    decoded = await retryIfMessageLost(() => decodePixels(ref.path, header, settings));
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

/** The message of a sharp error whose libvips message was lost. */
const LOST_MESSAGE = 'Unknown error';
/** Attempts of one sharp call whose failures keep losing their message. */
const MESSAGE_ATTEMPTS = 3;

/**
 * Runs a sharp call again, up to `MESSAGE_ATTEMPTS` times in all, while it fails with sharp's
 * 'Unknown error', so that a rejection names the real cause.
 *
 * sharp 0.35 clears libvips's process-wide error buffer at the end of every operation, so a file
 * that fails while another decode in the process finishes can lose its message. With 4 decodes
 * at once, 57 of 300 failures of a truncated JPEG read 'Unknown error' without this retry.
 * Decoding is deterministic, so a file that failed fails again, and only a failure costs a retry.
 * NOTE: under heavy concurrency every attempt can still lose the message, so the reason text of
 * a rejection may rarely read 'Unknown error'.
 */
async function retryIfMessageLost<T>(operation: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await operation();
    } catch (error) {
      if (attempt >= MESSAGE_ATTEMPTS || decoderMessage(error) !== LOST_MESSAGE) throw error;
    }
  }
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
