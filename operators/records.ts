/**
 * Typed records that flow between the pipeline stages.
 *
 * Every stage passes a `Rejected` record through unchanged, so one stream carries both the
 * records that are still alive and the ones that a stage gave up on. The run counts rejections
 * by stage and reason at the end instead of losing them.
 */

/** A 2-D point in pixels, as [x, y]. */
export type Point = readonly [x: number, y: number];

/**
 * The five facial landmarks in the order left eye, right eye, nose tip, left mouth corner,
 * right mouth corner ("left" is the image's left).
 */
export type FivePoints = readonly [Point, Point, Point, Point, Point];

/**
 * Five landmarks with their coordinate convention. `one-based` is Matlab's: the centre of the
 * top-left pixel is (1, 1). MTCNN, the SphereFace template and `lfw_landmark.txt` use it.
 * `zero-based` puts that centre at (0, 0), as OpenCV does.
 */
export interface Landmarks {
  readonly points: FivePoints;
  readonly origin: 'one-based' | 'zero-based';
}

/** An image to read: `id` is unique within a run (for LFW, `Name/Name_0001.jpg`). */
export interface ImageRef {
  readonly id: string;
  readonly path: string;
}

/** A decoded image: 8-bit RGB, interleaved, row-major (height × width × 3). */
export interface DecodedImage extends ImageRef {
  readonly width: number;
  readonly height: number;
  readonly rgb: Uint8Array;
}

/** An image with the landmarks that `similarityAlign` warps onto the template. */
export interface LandmarkedImage extends DecodedImage {
  readonly landmarks: Landmarks;
}

/**
 * A face warped onto the alignment template: 8-bit RGB, interleaved, height × width × 3.
 * `transform` maps 1-based input coordinates to 1-based output coordinates as a row-vector
 * affine matrix: [u v 1] · T = [x y 1], stored as the 3×2 part [[a, b], [c, d], [tx, ty]].
 */
export interface AlignedFace extends ImageRef {
  readonly width: number;
  readonly height: number;
  readonly rgb: Uint8Array;
  readonly transform: readonly [readonly [number, number], readonly [number, number], readonly [number, number]];
}

/** A face embedding: the feature of the image followed by the feature of its mirror. */
export interface Feature extends ImageRef {
  readonly vector: Float32Array;
}

/** Names of the stages that can reject a record. */
export type StageName =
  | 'readImages'
  | 'detectFaces'
  | 'similarityAlign'
  | 'extractFeatures'
  | (string & {});

/** A record that one stage could not process, with the reason in words. */
export interface Rejected {
  readonly kind: 'rejected';
  readonly id: string;
  readonly path: string;
  readonly stage: StageName;
  readonly reason: string;
}

/** A stream element: either a live record or a rejection passed along. */
export type Maybe<T> = T | Rejected;

export function isRejected(value: unknown): value is Rejected {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'rejected';
}

export function reject(ref: ImageRef, stage: StageName, reason: string): Rejected {
  return { kind: 'rejected', id: ref.id, path: ref.path, stage, reason };
}
