/**
 * The detections file that `sphereface preprocess` writes and `similarityAlign` / `eval` reuse.
 *
 * It is JSON Lines. The first line is a header with the format name, its version and the
 * detector settings; each further line is one image:
 *
 *     {"format":"sphereface-detections","version":1,"detector":{...}}
 *     {"id":"Aaron_Eckhart/Aaron_Eckhart_0001.jpg","path":"/data/lfw/Aaron_Eckhart/…","sha256":"…","width":250,"height":250,
 *      "faces":[{"box":[x1,y1,x2,y2],"score":0.99,"landmarks":[[x,y],…5]}],"substituted":false}
 *     {"id":"…","sha256":"…","width":…,"height":…,"faces":[],"rejected":"no face found"}
 *
 * An image that could not be decoded has no `width` and `height` (and no `sha256` when the file
 * could not be read), and `rejected` gives the reason. `substituted` is present only when it is
 * true. Boxes are clamped to the image ([1, width] × [1, height]). Landmarks are MTCNN's own,
 * so they may lie slightly outside the image when a face is cut by its edge.
 *
 * Boxes and landmarks use 1-based pixel coordinates (the centre of the top-left pixel is
 * (1, 1)), as MTCNN's reference code and the SphereFace template do. `sha256` is the digest of
 * the image file's bytes, so a reader can tell when an image changed after detection.
 */
import { readFile } from 'node:fs/promises';
import { Either, ParseResult, Schema } from 'effect';
import type { FivePoints, Landmarks } from '../operators/records.ts';

export const DETECTIONS_FORMAT = 'sphereface-detections';
export const DETECTIONS_VERSION = 1;

const Finite = Schema.Number.pipe(Schema.finite());
const PointSchema = Schema.Tuple(Finite, Finite);

const FaceSchema = Schema.Struct({
  box: Schema.Tuple(Finite, Finite, Finite, Finite),
  score: Finite,
  landmarks: Schema.Tuple(PointSchema, PointSchema, PointSchema, PointSchema, PointSchema),
});

const HeaderSchema = Schema.Struct({
  format: Schema.Literal(DETECTIONS_FORMAT),
  version: Schema.Literal(DETECTIONS_VERSION),
  detector: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
});

const EntrySchema = Schema.Struct({
  id: Schema.String.pipe(Schema.minLength(1)),
  // The image file as preprocess read it; `id` is its path relative to the images folder.
  path: Schema.optional(Schema.String),
  // Absent when the image file could not be read.
  sha256: Schema.optional(Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))),
  // Absent when the image could not be decoded.
  width: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.positive())),
  height: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.positive())),
  faces: Schema.Array(FaceSchema),
  substituted: Schema.optional(Schema.Boolean),
  rejected: Schema.optional(Schema.String),
});

export type DetectedFace = typeof FaceSchema.Type;
export type DetectionsHeader = typeof HeaderSchema.Type;
export type DetectionsEntry = typeof EntrySchema.Type;

export interface DetectionsFile {
  readonly header: DetectionsHeader;
  /** Entries by image id, in file order. */
  readonly entries: ReadonlyMap<string, DetectionsEntry>;
}

/** SHA-256 digests as stored in `sha256`; one implementation serves the cache and this file. */
export { sha256Hex } from './artifactCache.ts';

export function formatHeader(detector: Record<string, unknown>): string {
  return JSON.stringify({ format: DETECTIONS_FORMAT, version: DETECTIONS_VERSION, detector });
}

export function formatEntry(entry: DetectionsEntry): string {
  return JSON.stringify(entry);
}

/** Converts a face's landmarks to the form `similarityAlign` takes. */
export function faceLandmarks(face: DetectedFace): Landmarks {
  return { points: face.landmarks as unknown as FivePoints, origin: 'one-based' };
}

function decodeLine<A, I>(schema: Schema.Schema<A, I>, text: string, file: string, lineNumber: number, expected: string): A {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file}:${lineNumber}: not valid JSON (${(error as Error).message}); expected ${expected}`);
  }
  const result = Schema.decodeUnknownEither(schema)(json);
  if (Either.isLeft(result)) {
    const detail = ParseResult.TreeFormatter.formatErrorSync(result.left);
    const excerpt = text.length > 200 ? `${text.slice(0, 200)}…` : text;
    throw new Error(`${file}:${lineNumber}: invalid ${expected}: ${excerpt}\n${detail}`);
  }
  return result.right;
}

/** Reads and validates a detections file; any bad line is an error naming the file and line. */
export async function readDetectionsFile(file: string): Promise<DetectionsFile> {
  const lines = (await readFile(file, 'utf8')).split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1]?.trim() === '') lines.pop();
  if (lines.length === 0) throw new Error(`${file} is empty; expected a ${DETECTIONS_FORMAT} header line`);

  const header = decodeLine(HeaderSchema, lines[0] as string, file, 1, `${DETECTIONS_FORMAT} version ${DETECTIONS_VERSION} header`);
  const entries = new Map<string, DetectionsEntry>();
  lines.slice(1).forEach((text, index) => {
    const lineNumber = index + 2;
    const entry = decodeLine(EntrySchema, text, file, lineNumber, 'detection entry');
    if (entries.has(entry.id)) throw new Error(`${file}:${lineNumber}: image "${entry.id}" appears twice`);
    entries.set(entry.id, entry);
  });
  return { header, entries };
}
