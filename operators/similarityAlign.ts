/**
 * The alignment stage: fit a similarity transform from five landmarks to a template and warp the
 * face onto the template's crop, reproducing SphereFace's Matlab preprocessing
 * `imtransform(img, cp2tform(landmarks, template, 'similarity'), 'XData', [1 W], 'YData', [1 H], 'Size', [H W])`.
 */
import { map, type OperatorFunction } from 'rxjs';

import { alignOrReject, resolveAlignSettings, type SimilarityAlignOptions } from '../lib/alignFace.ts';
import { isRejected, type AlignedFace, type LandmarkedImage, type Maybe } from './records.ts';

export { alignFace, warpBilinear, type RgbImage, type SimilarityAlignOptions } from '../lib/alignFace.ts';

/**
 * Aligns each face onto a five-point template.
 *
 * For every `LandmarkedImage` it fits the transform from the landmarks to the template with
 * Matlab `cp2tform(…, 'similarity')` semantics (see `fitSimilarity`) and warps the image with
 * `warpBilinear`. Landmarks with `origin: 'zero-based'` are shifted by +1 first, because the
 * template is 1-based. A record whose landmarks do not determine a transform (NaN, infinite, all
 * equal, or a zero-scale fit) or whose pixel buffer does not match its size becomes a `Rejected`
 * record, and the stream goes on. Incoming `Rejected` records pass through unchanged.
 *
 * @example
 * ```ts
 * import { squareTemplate } from '../lib/cp2tform.ts';
 *
 * const faces = landmarked$.pipe(similarityAlign()); // 112×96 SphereFace crops
 * const squareFaces = landmarked$.pipe(similarityAlign(squareTemplate())); // 112×112 crops
 * ```
 *
 * @throws TypeError or RangeError at call time when `options` are invalid: the template must have
 *   five finite, not all equal points, and the output size must be positive integers.
 */
export function similarityAlign(
  options: SimilarityAlignOptions = {},
): OperatorFunction<Maybe<LandmarkedImage>, Maybe<AlignedFace>> {
  const settings = resolveAlignSettings(options);
  return map((record) => (isRejected(record) ? record : alignOrReject(record, settings)));
}
