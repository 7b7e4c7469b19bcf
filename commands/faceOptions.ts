/**
 * Options and output lines that `sphereface embed` and `sphereface verify` share.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';

import type { FaceEmbedding, FaceSelection, FaceVerifierOptions } from '../api/face.ts';
import { BACKEND_NAMES, parseBackendName } from '../model/backend.ts';
import { ENGINE_NAMES, type EngineName } from '../model/engine.ts';

/** The options both commands accept, as commander parses them. */
export interface FaceCommandOptions {
  model?: string;
  engine?: EngineName;
  face: FaceSelection;
  mtcnn?: string;
  maxPixels?: number;
  backend?: string;
}

function faceSelection(value: string): FaceSelection {
  const trimmed = value.trim();
  if (trimmed === 'largest' || trimmed === 'center') return trimmed;
  if (/^[0-9]+$/.test(trimmed) && Number.isSafeInteger(Number(trimmed))) return Number(trimmed);
  throw new InvalidArgumentError(`expected largest, center or a 0-based face index, got "${value}"`);
}

function positiveInteger(value: string): number {
  const parsed = Number(value);
  if (!/^[0-9]+$/.test(value.trim()) || !Number.isSafeInteger(parsed) || parsed < 1) {
    throw new InvalidArgumentError(`expected a positive integer in decimal digits, got "${value}"`);
  }
  return parsed;
}

/** Adds the model, engine, face, detector and backend options to a command. */
export function addFaceOptions(command: Command): Command {
  return command
    .option('--model <spec>', 'model as NAME:PATH (default: mobilefacenet:$SPHEREFACE_MODELS/mobilefacenet-casia/068.ckpt)')
    .addOption(new Option('--engine <name>', 'run the network on ONNX Runtime or TensorFlow.js (default: ONNX Runtime when the network exports to it)').choices([...ENGINE_NAMES]))
    .option('--face <rule>', 'face to use when a photo has several: largest (box area), center (nearest the image centre) or a 0-based index in order of detection score', faceSelection, 'largest' as FaceSelection)
    .option('--mtcnn <dir>', 'folder with det1–det3.caffemodel (default: $SPHEREFACE_MODELS/mtcnn)')
    .option('--max-pixels <n>', 'reject a photo with more pixels than this before decoding it (default 50,000,000)', positiveInteger)
    .addOption(new Option('--backend <name>', 'force a tensor backend instead of the fastest that loads').choices([...BACKEND_NAMES]));
}

/** Turns the parsed command options into `createFaceVerifier` options. */
export function verifierOptions(options: FaceCommandOptions): FaceVerifierOptions {
  return {
    face: options.face,
    ...(options.model === undefined ? {} : { model: options.model }),
    ...(options.engine === undefined ? {} : { engine: options.engine }),
    ...(options.mtcnn === undefined ? {} : { mtcnnDir: options.mtcnn }),
    ...(options.maxPixels === undefined ? {} : { maxPixels: options.maxPixels }),
    ...(options.backend === undefined ? {} : { backend: parseBackendName(options.backend) }),
  };
}

/** Formats a box [x1, y1, x2, y2] with one decimal, in 1-based pixels. */
export function formatBox(box: readonly number[]): string {
  return `[${box.map((value) => value.toFixed(1)).join(', ')}]`;
}

/**
 * Describes the face an embedding used, for example
 * `photo.jpg: 2 faces found, used index 1 by rule largest, box [10.0, 12.5, 80.2, 95.0], score 0.9998`.
 */
export function describeFaceUsed(face: FaceEmbedding): string {
  const where = `box ${formatBox(face.box)}, score ${face.score.toFixed(4)}`;
  if (face.faceCount === 1) return `${face.source}: 1 face found, ${where}`;
  const rule = typeof face.selection === 'number' ? 'by --face index' : `by rule ${face.selection}`;
  return `${face.source}: ${face.faceCount} faces found, used index ${face.faceIndex} ${rule}, ${where}`;
}
