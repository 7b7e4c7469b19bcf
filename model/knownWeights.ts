/**
 * Facts about published weight files that we measured here, keyed by the file's SHA-256: the
 * verification threshold each scored on LFW. A saved model stores its threshold in its
 * manifest. A checkpoint loaded straight from its original file gets it from this table, so
 * `sphereface verify` has a default for it too.
 */
import { hashFile } from '../lib/artifactCache.ts';

/** A cosine threshold and how it was measured, as a saved model's manifest records it. */
export interface StoredThreshold {
  readonly value: number;
  readonly protocol: string;
  readonly lfwAccuracy?: number;
}

interface KnownWeights {
  readonly description: string;
  readonly threshold: StoredThreshold;
}

const KNOWN: Readonly<Record<string, KnownWeights>> = {
  // Measured 2026-12-05 from the features of `sphereface eval` (7,701 images, lfw_landmark.txt,
  // engine onnx) scored by `verifyFolds` with `subtractMean: false`: mean of the 10 fold
  // thresholds 0.2956 (0.2823–0.3002), accuracy 99.02 % ± 0.46. With the mean subtracted, as
  // SphereFace's protocol does, the same features give 99.17 % at 0.2749.
  e839247cdbdfc023fb7cadeaf53a4549d50c8fc24ad154c02e35920ea8910d99: {
    description: 'MobileFaceNet 068.ckpt (Xiaoccer/MobileFaceNet_Pytorch, CASIA-WebFace)',
    threshold: {
      value: 0.2956,
      protocol: 'LFW View 2, 10-fold, cosine of image+mirror features without mean subtraction, landmarks from lfw_landmark.txt',
      lfwAccuracy: 0.9902,
    },
  },
};

/** Returns what is known about a weights file, or undefined for a file not in the table. */
export async function knownWeights(file: string): Promise<KnownWeights | undefined> {
  const digest = await hashFile(file).catch(() => undefined);
  return digest === undefined ? undefined : KNOWN[digest];
}
