/**
 * `sphereface embed PHOTO…`: detects, aligns and embeds one face per photo and writes one JSON
 * line per face. See `api/face.ts` for the steps.
 */
import type { WriteStream } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';

import { makeDirectory } from '../lib/makeDirectory.ts';
import path from 'node:path';
import { finished } from 'node:stream/promises';

import type { Command } from 'commander';

import { createFaceVerifier, ImageInputError, NoFaceError, type FaceEmbedding } from '../api/face.ts';
import { addFaceOptions, describeFaceUsed, verifierOptions, type FaceCommandOptions } from './faceOptions.ts';

interface EmbedCommandOptions extends FaceCommandOptions {
  out?: string;
}

/** Formats the JSON line of one face. Coordinates are 1-based pixels. */
function featureLine(face: FaceEmbedding): string {
  return JSON.stringify({
    file: face.source,
    imageSize: face.imageSize,
    faceCount: face.faceCount,
    faceIndex: face.faceIndex,
    selection: face.selection,
    box: face.box,
    landmarks: face.landmarks,
    score: face.score,
    feature: Array.from(face.feature),
  });
}

/** Returns whether an error concerns one photo only, so that the command counts it and goes on with the rest. */
function isPhotoError(error: unknown): error is Error {
  return error instanceof NoFaceError || error instanceof ImageInputError || error instanceof RangeError;
}

async function openOutput(file: string): Promise<WriteStream> {
  const absolute = path.resolve(file);
  const existing = await stat(absolute).catch(() => undefined);
  if (existing?.isDirectory()) throw new Error(`--out ${absolute} is a directory; expected a file name such as ${path.join(absolute, 'features.jsonl')}`);
  await makeDirectory(path.dirname(absolute), '--out');
  // Open the file now, before the model loads, so that an unwritable path fails at once.
  let handle: FileHandle;
  try {
    handle = await open(absolute, 'w');
  } catch (error) {
    throw new Error(`--out: cannot write ${absolute} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  const stream = handle.createWriteStream();
  stream.on('error', (error) => {
    process.exitCode = 1;
    process.stderr.write(`--out: writing ${absolute} failed: ${error.message}\n`);
  });
  return stream;
}

export function addEmbedCommand(program: Command): void {
  const command = program
    .command('embed')
    .description('Detect the face in each photo, align it and write its feature (face and mirror, unit length) as one JSON line')
    .argument('<photos...>', 'image files (JPEG, PNG, WebP, …)')
    .option('--out <file>', 'write the JSON lines to this file instead of stdout');
  addFaceOptions(command).action(async (photos: string[], options: EmbedCommandOptions) => {
    const output = options.out === undefined ? undefined : await openOutput(options.out);
    const write = (line: string): void => {
      if (output === undefined) process.stdout.write(`${line}\n`);
      else output.write(`${line}\n`);
    };

    const verifier = await createFaceVerifier(verifierOptions(options));
    const rejected = new Map<string, number>();
    let embedded = 0;
    try {
      for (const photo of photos) {
        try {
          const face = await verifier.embed(photo);
          write(featureLine(face));
          embedded += 1;
          if (face.faceCount > 1) process.stderr.write(`${describeFaceUsed(face)}\n`);
        } catch (error) {
          if (!isPhotoError(error)) throw error;
          process.stderr.write(`rejected ${photo}: ${error.message}\n`);
          const reason = error instanceof NoFaceError ? 'no face found' : error.name;
          rejected.set(reason, (rejected.get(reason) ?? 0) + 1);
        }
      }
    } finally {
      verifier.dispose();
      if (output !== undefined) {
        output.end();
        await finished(output);
      }
    }

    const rejections = [...rejected.values()].reduce((sum, count) => sum + count, 0);
    process.stderr.write(`${photos.length} photo(s): ${embedded} embedded with ${verifier.model}, ${rejections} rejected\n`);
    for (const [reason, count] of rejected) process.stderr.write(`  rejected ${count}× ${reason}\n`);
    if (output !== undefined) process.stderr.write(`features: ${path.resolve(options.out as string)}\n`);
    if (embedded === 0) process.exitCode = 1;
  });
}
