/**
 * The detection stage: find faces with MTCNN and attach the five landmarks that
 * `similarityAlign` warps onto its template.
 */
import { concatMap, type OperatorFunction } from 'rxjs';

import { SPHEREFACE_OUTPUT_SIZE, SPHEREFACE_TEMPLATE, type OutputSize } from '../lib/cp2tform.ts';
import {
  assertNetworksFor,
  detect,
  resolveMtcnnOptions,
  type Box,
  type Detection,
  type MtcnnNetworks,
  type MtcnnOptions,
  type MtcnnSettings,
} from '../model/mtcnnDetect.ts';
import {
  isRejected,
  reject,
  type DecodedImage,
  type FivePoints,
  type LandmarkedImage,
  type Maybe,
  type Point,
} from './records.ts';

const STAGE = 'detectFaces';

/** The rejection reason for an image without a face; constant, so runs can count it. */
export const NO_FACE_REASON = 'no face found';

/**
 * The faces that become records: `center` keeps the one face nearest the image centre
 * (SphereFace's rule), and `all` keeps every face.
 */
export type FacePolicy = 'center' | 'all';

/**
 * The outcome for an image without a face: a `Rejected` record, or a record with substitute
 * landmarks that make `similarityAlign` cut a centred crop (see `centerCropLandmarks`).
 */
export type NoFacePolicy = 'reject' | 'center-crop';

export interface CenterCropOptions {
  /** Template the substitute landmarks are made for. Default: the SphereFace template. */
  readonly template?: FivePoints;
  /** Output size of that template, in pixels. Default: 112 high by 96 wide. */
  readonly outputSize?: OutputSize;
  /**
   * Size of the crop relative to the largest centred region with the output's aspect ratio that
   * fits in the image, in (0, 1]. Default 0.5: in LFW's 250×250 images an aligned SphereFace crop
   * covers a median of 1.15 image pixels per output pixel, which is 0.51 of that region
   * (measured on the landmarks of all 13,233 LFW images in `lfw_landmark.txt`).
   */
  readonly fraction?: number;
}

export interface DetectFacesOptions extends MtcnnOptions {
  /** Default `center`. */
  readonly policy?: FacePolicy;
  /** Default `reject`. */
  readonly onNoFace?: NoFacePolicy;
  /** Placement of the crop that `onNoFace: 'center-crop'` substitutes. */
  readonly centerCrop?: CenterCropOptions;
}

/** Fields that every face record carries besides the image and its landmarks. */
interface FaceFields {
  /** The id of the image the face was found in. `id` equals it except under policy `all`. */
  readonly imageId: string;
  /** Position of the face among the image's detections (0-based, highest O-Net score first); -1 when substituted. */
  readonly faceIndex: number;
  /** Number of faces the detector found in the image. */
  readonly faceCount: number;
}

/** A face that MTCNN found: its landmarks are the detection's landmarks. */
export interface DetectedFaceImage extends LandmarkedImage, FaceFields {
  readonly substituted: false;
  /** MTCNN's output; its box may reach past the image edges, as the reference code leaves it. */
  readonly detection: Detection;
  /** The detection's box clamped to the image, 1-based and inclusive: [1, width] × [1, height]. */
  readonly box: Box;
}

/** An image without a face under `onNoFace: 'center-crop'`, with substitute landmarks. */
export interface SubstitutedFaceImage extends LandmarkedImage, FaceFields {
  readonly substituted: true;
  readonly detection: undefined;
}

/**
 * The record `detectFaces` emits: an image with the landmarks of one face. Under policy `all`
 * its `id` is the image id followed by `#` and the 1-based face number (`Name_0001.jpg#2`), so
 * ids stay unique within a run. A substituted record keeps the image id.
 */
export type FaceImage = DetectedFaceImage | SubstitutedFaceImage;

interface DetectSettings {
  readonly mtcnn: MtcnnSettings;
  readonly policy: FacePolicy;
  readonly onNoFace: NoFacePolicy;
  readonly centerCrop: Required<CenterCropOptions>;
}

/**
 * Detects faces with MTCNN (`detect` in `model/mtcnnDetect.ts`, SphereFace's settings by
 * default) and emits one `FaceImage` per kept face, ready for `similarityAlign`. With
 * `landmarkRefinement: 'lnet'` the landmarks are those of MTCNNv2's L-Net step, and `nets`
 * must come from `loadMtcnn(dir, { lnet: true })`.
 *
 * - Policy `center` (default) keeps the face whose box centre ((y1 + y2)/2, (x1 + x2)/2) has the
 *   smallest squared distance to (height/2, width/2), in the 1-based coordinates of the Matlab
 *   code, the first face on a tie. This is SphereFace's `face_detect_demo.m` rule.
 * - Policy `all` emits one record per face, highest O-Net score first.
 * - An image without a face becomes `Rejected` with stage `detectFaces` and reason
 *   `NO_FACE_REASON`, or, with `onNoFace: 'center-crop'`, a record with `substituted: true`
 *   and the landmarks of `centerCropLandmarks`.
 * - An image whose pixel buffer does not match its size becomes `Rejected`.
 *
 * Incoming `Rejected` records pass through unchanged. Images are processed one at a time and
 * in order, because the networks run on one TensorFlow.js backend. A failure of the networks is
 * a fault of the run and errors the stream.
 *
 * @example
 * const nets = await loadMtcnn();
 * const faces$ = imageRefs('lfw/*\/*.jpg', { cwd: 'data' }).pipe(
 *   readImages(),
 *   detectFaces(nets, { onNoFace: 'center-crop' }),
 *   similarityAlign(),
 * );
 *
 * @throws RangeError at call time when an option is invalid, and Error when
 *   `landmarkRefinement` is `lnet` but `nets` has no L-Net.
 */
export function detectFaces(
  nets: MtcnnNetworks,
  options: DetectFacesOptions = {},
): OperatorFunction<Maybe<DecodedImage>, Maybe<FaceImage>> {
  const settings = resolveOptions(options);
  assertNetworksFor(nets, settings.mtcnn);
  return (source) =>
    source.pipe(
      concatMap((record) => (isRejected(record) ? Promise.resolve([record]) : facesOf(nets, record, settings))),
      concatMap((records) => records),
    );
}

/**
 * Detects the faces of one image as `detectFaces` does, for code outside a stream. Resolves to
 * the records the operator would emit for this image.
 *
 * @throws RangeError at call time when an option is invalid, and Error when
 *   `landmarkRefinement` is `lnet` but `nets` has no L-Net.
 */
export function detectFacesIn(nets: MtcnnNetworks, image: DecodedImage, options: DetectFacesOptions = {}): Promise<Maybe<FaceImage>[]> {
  const settings = resolveOptions(options);
  assertNetworksFor(nets, settings.mtcnn);
  return facesOf(nets, image, settings);
}

async function facesOf(nets: MtcnnNetworks, image: DecodedImage, settings: DetectSettings): Promise<Maybe<FaceImage>[]> {
  const { width, height, rgb } = image;
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width < 1 || height < 1) {
    return [reject(image, STAGE, `${image.path}: invalid image size ${width}×${height}, expected positive integers`)];
  }
  if (rgb.length !== width * height * 3) {
    return [reject(image, STAGE, `${image.path}: pixel buffer has ${rgb.length} bytes, expected ${width}×${height}×3 = ${width * height * 3}`)];
  }

  const detections = await detect(nets, image, settings.mtcnn);
  const common = { id: image.id, path: image.path, width, height, rgb, imageId: image.id, faceCount: detections.length };

  if (detections.length === 0) {
    if (settings.onNoFace === 'reject') return [reject(image, STAGE, NO_FACE_REASON)];
    const points = centerCropLandmarks(width, height, settings.centerCrop);
    return [{ ...common, faceIndex: -1, landmarks: { points, origin: 'one-based' }, substituted: true, detection: undefined }];
  }

  const record = (detection: Detection, faceIndex: number, id: string): DetectedFaceImage => ({
    ...common,
    id,
    faceIndex,
    landmarks: detection.landmarks,
    substituted: false,
    detection,
    box: clampBox(detection.box, width, height),
  });

  if (settings.policy === 'center') {
    const index = centerFaceIndex(detections, width, height);
    return [record(detections[index]!, index, image.id)];
  }
  return detections.map((detection, index) => record(detection, index, `${image.id}#${index + 1}`));
}

/** Clamps a 1-based inclusive box to the pixels of a width × height image. */
export function clampBox([x1, y1, x2, y2]: Box, width: number, height: number): Box {
  const clamp = (value: number, max: number): number => Math.min(Math.max(value, 1), max);
  return [clamp(x1, width), clamp(y1, height), clamp(x2, width), clamp(y2, height)];
}

/**
 * Returns the index of the face whose box centre is nearest the image centre, by SphereFace's
 * rule: squared distance between ((y1 + y2)/2, (x1 + x2)/2) and (height/2, width/2), the first
 * face on a tie. Returns -1 for an empty list.
 */
export function centerFaceIndex(detections: readonly Pick<Detection, 'box'>[], width: number, height: number): number {
  let best = -1;
  let bestDistance = Number.POSITIVE_INFINITY;
  detections.forEach(({ box: [x1, y1, x2, y2] }, index) => {
    const distance = ((y1 + y2) / 2 - height / 2) ** 2 + ((x1 + x2) / 2 - width / 2) ** 2;
    if (distance < bestDistance) {
      best = index;
      bestDistance = distance;
    }
  });
  return best;
}

/**
 * Returns substitute landmarks for an image without a face: the template placed so that the
 * output crop maps onto a centred image region with the output's aspect ratio, `fraction` times
 * the largest such region that fits. Template point (u, v) becomes
 * x = (width + 1)/2 + s·(u − (outWidth + 1)/2) and y = (height + 1)/2 + s·(v − (outHeight + 1)/2)
 * with s = fraction · min(width/outWidth, height/outHeight) image pixels per output pixel, all
 * 1-based. `similarityAlign` with the same template then cuts exactly that region.
 */
export function centerCropLandmarks(width: number, height: number, options: CenterCropOptions = {}): FivePoints {
  const { template, outputSize, fraction } = resolveCenterCrop(options);
  const scale = fraction * Math.min(width / outputSize.width, height / outputSize.height);
  const place = ([u, v]: Point): Point => [
    (width + 1) / 2 + scale * (u - (outputSize.width + 1) / 2),
    (height + 1) / 2 + scale * (v - (outputSize.height + 1) / 2),
  ];
  return [place(template[0]), place(template[1]), place(template[2]), place(template[3]), place(template[4])];
}

function resolveCenterCrop(options: CenterCropOptions): Required<CenterCropOptions> {
  const template = options.template ?? SPHEREFACE_TEMPLATE;
  const outputSize = options.outputSize ?? SPHEREFACE_OUTPUT_SIZE;
  const fraction = options.fraction ?? 0.5;

  if (!Number.isFinite(fraction) || fraction <= 0 || fraction > 1) {
    throw new RangeError(`detectFaces: centerCrop.fraction must be in (0, 1], got ${fraction}`);
  }
  if (!Number.isSafeInteger(outputSize.width) || !Number.isSafeInteger(outputSize.height) || outputSize.width < 1 || outputSize.height < 1) {
    throw new RangeError(
      `detectFaces: centerCrop.outputSize must have positive integer height and width, got ${outputSize.height}×${outputSize.width}`,
    );
  }
  if (template.length !== 5 || !template.every((point) => point.length === 2 && point.every(Number.isFinite))) {
    throw new RangeError('detectFaces: centerCrop.template must be five finite [x, y] points');
  }
  return { template, outputSize, fraction };
}

function resolveOptions(options: DetectFacesOptions): DetectSettings {
  const policy = options.policy ?? 'center';
  if (policy !== 'center' && policy !== 'all') {
    throw new RangeError(`detectFaces: policy must be 'center' or 'all', got ${String(policy)}`);
  }
  const onNoFace = options.onNoFace ?? 'reject';
  if (onNoFace !== 'reject' && onNoFace !== 'center-crop') {
    throw new RangeError(`detectFaces: onNoFace must be 'reject' or 'center-crop', got ${String(onNoFace)}`);
  }
  return { mtcnn: resolveMtcnnOptions(options), policy, onNoFace, centerCrop: resolveCenterCrop(options.centerCrop ?? {}) };
}
