/**
 * Locations of data and models. `SPHEREFACE_DATA` names the data folder (default `./data`),
 * laid out as `lfw/`, `lfw-meta/pairs.txt` and `lfw-meta/lfw_landmark.txt`.
 */
import path from 'node:path';

/** Returns whether two absolute paths are the same, or one lies inside the other. */
export function pathsOverlap(a: string, b: string): boolean {
  const inside = (child: string, parent: string): boolean => child === parent || child.startsWith(`${parent}${path.sep}`);
  return inside(a, b) || inside(b, a);
}

export function dataRoot(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env['SPHEREFACE_DATA'] ?? './data');
}

export interface LfwPaths {
  /** The people folder, `Name/Name_0001.jpg`. */
  readonly images: string;
  /** View 2 pairs. */
  readonly pairs: string;
  /** Five landmarks per image. */
  readonly landmarks: string;
  /** View 1 training and test pairs. */
  readonly devTrain: string;
  readonly devTest: string;
}

export function lfwPaths(root: string = dataRoot()): LfwPaths {
  return {
    images: path.join(root, 'lfw'),
    pairs: path.join(root, 'lfw-meta', 'pairs.txt'),
    landmarks: path.join(root, 'lfw-meta', 'lfw_landmark.txt'),
    devTrain: path.join(root, 'lfw-meta', 'pairsDevTrain.txt'),
    devTest: path.join(root, 'lfw-meta', 'pairsDevTest.txt'),
  };
}

/** Returns the models folder: `SPHEREFACE_MODELS`, default `./models`. */
export function modelsRoot(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env['SPHEREFACE_MODELS'] ?? './models');
}

/** Returns the path of the CASIA-WebFace MobileFaceNet checkpoint inside the models folder. */
export function mobileFaceNetCheckpoint(root: string = modelsRoot()): string {
  return path.join(root, 'mobilefacenet-casia', '068.ckpt');
}
