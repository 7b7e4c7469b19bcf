/**
 * Readers for the Labeled Faces in the Wild (LFW) metadata files: the pair lists of View 1
 * (`pairsDevTrain.txt`, `pairsDevTest.txt`) and View 2 (`pairs.txt`), and the five-point
 * landmark file `lfw_landmark.txt`.
 *
 * Pair files. The first line is the header. View 2 has two numbers, folds and pairs per
 * half-fold (`10\t300`). After it, each fold has that many same-person lines `name i j`, then
 * as many different-person lines `name1 i name2 j`. View 1 has one number N, then N
 * same-person lines and N different-person lines, which this module treats as a single fold.
 * Image `i` of `name` is `name/name_%04d.jpg`.
 *
 * Parsing rules, all of which the LFW files satisfy:
 * - Fields are separated by runs of tabs or spaces. LFW uses single tabs, and LFW names contain
 *   no whitespace, so splitting on any whitespace gives the same fields.
 * - A UTF-8 byte order mark, CRLF line endings, blank lines at the end and a missing final
 *   newline are accepted. A blank line between pairs is an error.
 * - The body must match the header exactly. Every line that does not parse is an error that
 *   names the file, the line, its text and what was expected, so no pair is ever dropped.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Either, ParseResult, Schema } from 'effect';
import { lfwPaths } from '../lib/paths.ts';
import { readTextFile } from '../lib/textFile.ts';
import type { FivePoints, ImageRef, Landmarks, Point } from '../operators/records.ts';

// ---------------------------------------------------------------------------------------------
// Records and errors
// ---------------------------------------------------------------------------------------------

/** One line of a pair file. */
export interface LfwPair {
  /** Position among the pairs of the file, from 0. */
  readonly index: number;
  /** Fold, from 0: `floor(index / (2 · pairsPerHalfFold))`. Always 0 for View 1. */
  readonly fold: number;
  /** True for a same-person pair. */
  readonly same: boolean;
  readonly left: ImageRef;
  readonly right: ImageRef;
  /** Line number in the file, from 1 (the header is line 1). */
  readonly line: number;
}

/** The parsed contents of a pair file. */
export interface LfwPairs {
  /** The pair file, as an absolute path. */
  readonly file: string;
  /** The folder that contains `Name/Name_0001.jpg`, as an absolute path. */
  readonly imagesDir: string;
  /** `view2` for a two-number header, `view1` for a one-number header. */
  readonly view: 'view1' | 'view2';
  /** Number of folds: 10 for `pairs.txt`, 1 for the View 1 files. */
  readonly folds: number;
  /** Same-person pairs per fold, which is also the number of different-person pairs per fold. */
  readonly pairsPerHalfFold: number;
  /** The pairs in file order. Pairs that share an image share its `ImageRef` object. */
  readonly pairs: readonly LfwPair[];
}

export interface ReadPairsOptions {
  /** Folder of the LFW images. Default: `lfwPaths().images`. */
  readonly imagesDir?: string;
  /** Check that every image the pairs use exists as a file. Default: true. */
  readonly checkImages?: boolean;
  /** How many missing images the error lists before it summarises the rest. Default: 20. */
  readonly maxMissingListed?: number;
}

/** A line of a metadata file that does not have the expected form. */
export class LfwFormatError extends Error {
  override readonly name = 'LfwFormatError';

  constructor(
    readonly file: string,
    /** Line number, from 1. */
    readonly line: number,
    /** The line as it appears in the file, without its line ending. */
    readonly text: string,
    readonly problem: string,
    readonly expected: string,
  ) {
    super(`${file}:${line}: ${problem} (line text: ${JSON.stringify(text)}). Expected ${expected}.`);
  }
}

/** Images that a pair file uses but that are not files under the images folder. */
export class LfwMissingImagesError extends Error {
  override readonly name = 'LfwMissingImagesError';

  constructor(
    readonly file: string,
    readonly imagesDir: string,
    /** Every missing image with the first line that uses it and the reason `stat` gave. */
    readonly missing: ReadonlyArray<{ readonly line: number; readonly id: string; readonly path: string; readonly reason: string }>,
    maxListed: number,
  ) {
    const listed = missing.slice(0, maxListed).map((m) => `  ${file}:${m.line}: ${m.path} (${m.reason})`);
    const rest = missing.length > maxListed ? [`  … and ${missing.length - maxListed} more`] : [];
    super(
      [
        `${missing.length} image(s) used by ${file} not found under ${imagesDir}:`,
        ...listed,
        ...rest,
        'Point the images folder (--root, --data or SPHEREFACE_DATA; imagesDir in code) at the LFW people folder, or restore the missing files.',
      ].join('\n'),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Field schemas
// ---------------------------------------------------------------------------------------------

const POSITIVE_INTEGER = 'a positive integer';

/** A positive decimal integer without sign, exponent or decimal point (`0001` is allowed). */
const PositiveInteger = Schema.String.pipe(
  Schema.pattern(/^[0-9]+$/, { message: () => POSITIVE_INTEGER }),
  Schema.compose(Schema.NumberFromString),
  Schema.int({ message: () => POSITIVE_INTEGER }),
  Schema.positive({ message: () => `${POSITIVE_INTEGER}, because counts and image numbers start at 1` }),
);

/**
 * An LFW person name such as `Chang_Dae-whan`. It must contain a letter, which keeps a number
 * in the wrong column from reading as a name, and it must not contain a path separator.
 */
const PersonName = Schema.String.pipe(
  Schema.pattern(/^[^/\\\s]*\p{L}[^/\\\s]*$/u, {
    message: () => 'a person name (at least one letter, no "/", "\\" or whitespace)',
  }),
);

const View2Header = Schema.Tuple(PositiveInteger, PositiveInteger);
const View1Header = Schema.Tuple(PositiveInteger);
const SamePairFields = Schema.Tuple(PersonName, PositiveInteger, PositiveInteger);
const DifferentPairFields = Schema.Tuple(PersonName, PositiveInteger, PersonName, PositiveInteger);

/** `Name/Name_NNNN.jpg`, with the same name as folder and file prefix. */
const LandmarkImageId = Schema.String.pipe(
  Schema.pattern(/^([^/\\\s]+)\/\1_[0-9]{4,}\.jpg$/, { message: () => 'an image id of the form Name/Name_NNNN.jpg' }),
);

/** A decimal number such as `107`, `-3.5` or `1.2e2`. `NaN`, `Infinity` and overflow to infinity are rejected. */
const Coordinate = Schema.String.pipe(
  Schema.pattern(/^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/, { message: () => 'a decimal number' }),
  Schema.compose(Schema.NumberFromString),
  Schema.finite({ message: () => 'a finite number' }),
);

const LandmarkFields = Schema.Tuple([LandmarkImageId], Coordinate);

const SAME_FIELDS = '3 fields (name, index, index)';
const DIFFERENT_FIELDS = '4 fields (name, index, name, index)';
const LANDMARK_FIELDS = '11 fields: Name/Name_NNNN.jpg then x1 y1 x2 y2 … x5 y5';

// ---------------------------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------------------------

interface Line {
  /** Line number, from 1. */
  readonly number: number;
  /** The line without its line ending. */
  readonly text: string;
  readonly fields: readonly string[];
}

/**
 * Splits a file into lines and fields. Drops a leading byte order mark, the `\r` of CRLF
 * endings and all blank lines after the last non-blank one.
 */
function splitLines(text: string): Line[] {
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  const lines = body.split('\n').map((raw, i): Line => {
    const lineText = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const trimmed = lineText.trim();
    return { number: i + 1, text: lineText, fields: trimmed === '' ? [] : trimmed.split(/\s+/) };
  });

  while (lines.length > 0 && lines[lines.length - 1]!.fields.length === 0) lines.pop();
  return lines;
}

/**
 * Decodes a line's fields with `schema`, or throws an `LfwFormatError` that names the first
 * invalid field, its value and what it should be.
 */
function decodeFields<A, I>(
  schema: Schema.Schema<A, I>,
  file: string,
  line: Line,
  expected: string,
): A {
  const result = Schema.decodeUnknownEither(schema)(line.fields);
  if (Either.isRight(result)) return result.right;

  const issues = ParseResult.ArrayFormatter.formatErrorSync(result.left);
  const first = issues[0];
  const position = typeof first?.path[0] === 'number' ? first.path[0] : undefined;
  const value = position === undefined ? undefined : line.fields[position];
  const problem =
    position === undefined || value === undefined
      ? `invalid fields (${first?.message ?? 'unknown reason'})`
      : `field ${position + 1} is ${JSON.stringify(value)}, not ${first!.message}`;
  throw new LfwFormatError(file, line.number, line.text, problem, expected);
}

// ---------------------------------------------------------------------------------------------
// Pair files
// ---------------------------------------------------------------------------------------------

/** Builds the relative id `Name/Name_0001.jpg` of image `imageNumber` of `name`. */
export function lfwImageId(name: string, imageNumber: number): string {
  return `${name}/${name}_${String(imageNumber).padStart(4, '0')}.jpg`;
}

interface PairLayout {
  readonly view: 'view1' | 'view2';
  readonly folds: number;
  readonly pairsPerHalfFold: number;
}

function parseHeader(file: string, header: Line): PairLayout {
  const expected =
    'a header of two positive integers "folds<TAB>pairs per half-fold" (View 2, e.g. "10\\t300") ' +
    'or one positive integer "pairs per half" (View 1, e.g. "1100")';

  if (header.fields.length === 2) {
    const [folds, pairsPerHalfFold] = decodeFields(View2Header, file, header, expected);
    return { view: 'view2', folds, pairsPerHalfFold };
  }
  if (header.fields.length === 1) {
    const [pairsPerHalfFold] = decodeFields(View1Header, file, header, expected);
    return { view: 'view1', folds: 1, pairsPerHalfFold };
  }
  throw new LfwFormatError(file, header.number, header.text, `found ${header.fields.length} fields in the header`, expected);
}

/**
 * Parses the text of a pair file. Does not touch the disk, so it does not check that the images
 * exist (`readPairs` does).
 *
 * @param file the file name used in error messages and in the result
 * @param imagesDir the folder that `ImageRef.path` is resolved against
 * @throws LfwFormatError on the first line that does not match the layout the header declares
 */
export function parsePairs(text: string, file: string, imagesDir: string = lfwPaths().images): LfwPairs {
  const absoluteFile = path.resolve(file);
  const absoluteImagesDir = path.resolve(imagesDir);
  const lines = splitLines(text);

  const header = lines[0];
  if (header === undefined) {
    throw new LfwFormatError(absoluteFile, 1, '', 'empty file', 'a header line followed by pair lines');
  }
  const layout = parseHeader(absoluteFile, header);
  const { folds, pairsPerHalfFold } = layout;
  const pairsPerFold = 2 * pairsPerHalfFold;
  const expectedPairs = folds * pairsPerFold;
  const headerSummary =
    layout.view === 'view2'
      ? `${expectedPairs} pairs (header on line ${header.number}: ${folds} fold${folds === 1 ? '' : 's'} × 2 × ${pairsPerHalfFold})`
      : `${expectedPairs} pairs (header on line ${header.number}: 2 × ${pairsPerHalfFold})`;

  const refs = new Map<string, ImageRef>();
  const imageRef = (name: string, imageNumber: number): ImageRef => {
    const id = lfwImageId(name, imageNumber);
    let ref = refs.get(id);
    if (ref === undefined) {
      ref = { id, path: path.join(absoluteImagesDir, id) };
      refs.set(id, ref);
    }
    return ref;
  };

  const body = lines.slice(1);
  const pairs = body.slice(0, expectedPairs).map((line, index): LfwPair => {
    const fold = Math.floor(index / pairsPerFold);
    const same = index % pairsPerFold < pairsPerHalfFold;
    const foldStart = header.number + 1 + fold * pairsPerFold;
    const foldLayout =
      `${layout.view === 'view2' ? `fold ${fold + 1}` : 'the file'} has ${pairsPerHalfFold} same-person pairs on lines ` +
      `${foldStart}–${foldStart + pairsPerHalfFold - 1}, then ${pairsPerHalfFold} different-person pairs on lines ` +
      `${foldStart + pairsPerHalfFold}–${foldStart + pairsPerFold - 1}`;
    const expected = `${same ? SAME_FIELDS : DIFFERENT_FIELDS}, because ${foldLayout}`;

    if (line.fields.length === 0) {
      throw new LfwFormatError(absoluteFile, line.number, line.text, 'found a blank line', expected);
    }
    if (line.fields.length !== 3 && line.fields.length !== 4) {
      throw new LfwFormatError(
        absoluteFile,
        line.number,
        line.text,
        `found ${line.fields.length} fields, but a pair line has 3 (same person) or 4 (different people)`,
        expected,
      );
    }
    if ((line.fields.length === 3) !== same) {
      const found = line.fields.length === 3 ? 'a same-person pair' : 'a different-person pair';
      throw new LfwFormatError(absoluteFile, line.number, line.text, `found ${found} out of place`, expected);
    }

    if (same) {
      const [name, first, second] = decodeFields(SamePairFields, absoluteFile, line, expected);
      if (first === second) {
        throw new LfwFormatError(absoluteFile, line.number, line.text, 'found a same-person pair of one image with itself', 'two different image numbers');
      }
      return { index, fold, same, left: imageRef(name, first), right: imageRef(name, second), line: line.number };
    }

    const [leftName, leftNumber, rightName, rightNumber] = decodeFields(DifferentPairFields, absoluteFile, line, expected);
    if (leftName === rightName) {
      throw new LfwFormatError(absoluteFile, line.number, line.text, 'found a different-person pair that names one person twice', 'two different names');
    }
    return { index, fold, same, left: imageRef(leftName, leftNumber), right: imageRef(rightName, rightNumber), line: line.number };
  });

  if (body.length > expectedPairs) {
    const extra = body[expectedPairs]!;
    throw new LfwFormatError(absoluteFile, extra.number, extra.text, 'found a line after the last pair', `end of file after ${headerSummary}`);
  }
  if (body.length < expectedPairs) {
    const last = lines[lines.length - 1]!;
    throw new LfwFormatError(absoluteFile, last.number, last.text, `the file ends after ${body.length} pairs`, headerSummary);
  }

  return { file: absoluteFile, imagesDir: absoluteImagesDir, ...layout, pairs };
}

/**
 * Reads a pair file (default: View 2 `pairs.txt` from `lfwPaths()`) and, unless
 * `checkImages` is false, checks that every image it uses is a file under `imagesDir`.
 *
 * @throws LfwFormatError for a malformed line
 * @throws LfwMissingImagesError listing every missing image with the line that first uses it
 */
export async function readPairs(file: string = lfwPaths().pairs, options: ReadPairsOptions = {}): Promise<LfwPairs> {
  const text = await readTextFile(file, 'pairs file', 'pass --pairs FILE, or --data DIR / SPHEREFACE_DATA for the data folder');
  const parsed = parsePairs(text, file, options.imagesDir ?? lfwPaths().images);

  if (options.checkImages ?? true) {
    const maxListed = options.maxMissingListed ?? 20;
    if (!Number.isInteger(maxListed) || maxListed < 1) {
      throw new RangeError(`maxMissingListed must be a positive integer, got ${maxListed}`);
    }
    const missing = await findMissingImages(parsed.pairs);
    if (missing.length > 0) throw new LfwMissingImagesError(parsed.file, parsed.imagesDir, missing, maxListed);
  }
  return parsed;
}

/** Number of `stat` calls in flight at once while checking images. */
const STAT_CONCURRENCY = 64;

async function findMissingImages(
  pairs: readonly LfwPair[],
): Promise<Array<{ line: number; id: string; path: string; reason: string }>> {
  const firstLine = new Map<string, number>();
  for (const pair of pairs) {
    if (!firstLine.has(pair.left.id)) firstLine.set(pair.left.id, pair.line);
    if (!firstLine.has(pair.right.id)) firstLine.set(pair.right.id, pair.line);
  }

  const images = uniqueImages(pairs);
  const reasons: Array<string | undefined> = new Array(images.length);
  for (let start = 0; start < images.length; start += STAT_CONCURRENCY) {
    const chunk = images.slice(start, start + STAT_CONCURRENCY);
    await Promise.all(
      chunk.map(async (image, offset) => {
        try {
          const stats = await fs.stat(image.path);
          if (!stats.isFile()) reasons[start + offset] = 'not a file';
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          reasons[start + offset] = code === 'ENOENT' || code === 'ENOTDIR' ? 'not found' : String(code ?? error);
        }
      }),
    );
  }

  return images.flatMap((image, i) => {
    const reason = reasons[i];
    return reason === undefined ? [] : [{ line: firstLine.get(image.id)!, id: image.id, path: image.path, reason }];
  });
}

/** Returns the distinct images of `pairs` in order of first use (left image before right). */
export function uniqueImages(pairs: readonly LfwPair[]): ImageRef[] {
  const seen = new Map<string, ImageRef>();
  for (const pair of pairs) {
    if (!seen.has(pair.left.id)) seen.set(pair.left.id, pair.left);
    if (!seen.has(pair.right.id)) seen.set(pair.right.id, pair.right);
  }
  return [...seen.values()];
}

// ---------------------------------------------------------------------------------------------
// Landmark file
// ---------------------------------------------------------------------------------------------

/**
 * Parses the text of `lfw_landmark.txt`: per line an image id `Name/Name_NNNN.jpg`, then x and y
 * of left eye, right eye, nose tip, left mouth corner and right mouth corner, in pixels of the
 * 250×250 image. The landmarks are tagged 1-based (Matlab's convention), because the reference
 * evaluation of the SphereFace PyTorch port reads the file that way. The results we compare
 * against depend on it. The LFW file has integers; decimals are accepted.
 *
 * NOTE: the file itself appears to hold 0-based coordinates truncated to integers. It matches
 * MTCNNv2 with L-Net refinement when our 1-based points are shifted by −1 and floored (median
 * 0.8 px over 1,000 images). Callers that want the file's own convention retag the points as
 * `zero-based` (`sphereface eval --landmark-origin zero-based`).
 *
 * @returns landmarks keyed by image id, in file order
 * @throws LfwFormatError for a malformed line, a non-finite number or an image listed twice
 */
export function parseLandmarks(text: string, file: string): Map<string, Landmarks> {
  const absoluteFile = path.resolve(file);
  const landmarks = new Map<string, Landmarks>();
  const lineOf = new Map<string, Line>();

  for (const line of splitLines(text)) {
    if (line.fields.length !== 11) {
      const problem = line.fields.length === 0 ? 'found a blank line' : `found ${line.fields.length} fields`;
      throw new LfwFormatError(absoluteFile, line.number, line.text, problem, LANDMARK_FIELDS);
    }

    const [id, ...coordinates] = decodeFields(LandmarkFields, absoluteFile, line, LANDMARK_FIELDS);
    const previous = lineOf.get(id);
    if (previous !== undefined) {
      throw new LfwFormatError(
        absoluteFile,
        line.number,
        line.text,
        `found a second entry for ${id}, which line ${previous.number} already lists as ${JSON.stringify(previous.text)}`,
        'one line per image',
      );
    }

    const point = (k: number): Point => [coordinates[2 * k]!, coordinates[2 * k + 1]!];
    const points: FivePoints = [point(0), point(1), point(2), point(3), point(4)];
    landmarks.set(id, { points, origin: 'one-based' });
    lineOf.set(id, line);
  }
  return landmarks;
}

/** Reads `lfw_landmark.txt` (default: `lfwPaths().landmarks`) and parses it with `parseLandmarks`. */
export async function readLandmarks(file: string = lfwPaths().landmarks): Promise<Map<string, Landmarks>> {
  const text = await readTextFile(file, 'landmark file', 'pass --landmarks FILE, or --data DIR / SPHEREFACE_DATA for the data folder');
  return parseLandmarks(text, file);
}
