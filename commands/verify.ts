/**
 * `sphereface verify A B`: embeds the face of each photo and decides whether both show the same
 * person, by the cosine of their features against a threshold. See `api/face.ts`.
 */
import { InvalidArgumentError, type Command } from 'commander';

import { createFaceVerifier, type Verification } from '../api/face.ts';
import { addFaceOptions, describeFaceUsed, verifierOptions, type FaceCommandOptions } from './faceOptions.ts';

interface VerifyCommandOptions extends FaceCommandOptions {
  threshold?: number;
}

function cosineThreshold(value: string): number {
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed) || parsed < -1 || parsed > 1) {
    throw new InvalidArgumentError(`expected a cosine score from -1 to 1, got "${value}"`);
  }
  return parsed;
}

/** Formats the result as the lines the command prints, the decision last. */
export function formatVerification(result: Verification): string {
  const origin = result.thresholdSource === 'option' ? 'from --threshold' : 'stored with the model';
  return [
    ...result.faces.map(describeFaceUsed),
    `model: ${result.model}`,
    `threshold: ${result.threshold} (${origin})`,
    `cosine score: ${result.score.toFixed(4)}`,
    result.same ? 'same' : 'different',
  ].join('\n');
}

export function addVerifyCommand(program: Command): void {
  const command = program
    .command('verify')
    .description('Decide whether two photos show the same person: the cosine of their face features against a threshold')
    .argument('<first>', 'first image file')
    .argument('<second>', 'second image file')
    .option('--threshold <cosine>', "score above which the faces count as the same person, -1 to 1 (default: the threshold stored with the model)", cosineThreshold);
  addFaceOptions(command).action(async (first: string, second: string, options: VerifyCommandOptions) => {
    const verifier = await createFaceVerifier({
      ...verifierOptions(options),
      ...(options.threshold === undefined ? {} : { threshold: options.threshold }),
    });
    try {
      const result = await verifier.verify(first, second);
      process.stdout.write(`${formatVerification(result)}\n`);
    } finally {
      verifier.dispose();
    }
  });
}
