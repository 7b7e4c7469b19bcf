/**
 * The named alignment templates a model can ask for: the five target points and the crop size.
 *
 * | name | crop (height × width) | points |
 * |---|---|---|
 * | `sphereface-112x96` | 112 × 96 | SphereFace's Matlab reference points (`SPHEREFACE_TEMPLATE`) |
 * | `arcface-112x112` | 112 × 112 | InsightFace's `arcface_dst`, moved to our 1-based convention |
 *
 * All templates here are 1-based (x, y), like `SPHEREFACE_TEMPLATE` and the landmarks our
 * alignment takes. InsightFace states its points 0-based, for OpenCV's `warpAffine`
 * (`python-package/insightface/utils/face_align.py`, `arcface_dst`): (38.2946, 51.6963),
 * (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041). Adding 1 to
 * each coordinate puts them on the same pixel grid here. They equal the SphereFace points
 * shifted 8 px right, so `squareTemplate()` lies 1 px up and left of the ArcFace crop.
 */
import type { FivePoints } from '../operators/records.ts';
import { SPHEREFACE_OUTPUT_SIZE, SPHEREFACE_TEMPLATE } from './cp2tform.ts';

export const ALIGNMENT_NAMES = ['sphereface-112x96', 'arcface-112x112'] as const;
export type AlignmentName = (typeof ALIGNMENT_NAMES)[number];

/** The template every model without an alignment of its own uses. */
export const DEFAULT_ALIGNMENT: AlignmentName = 'sphereface-112x96';

export interface AlignmentTemplate {
  /** Five 1-based (x, y) target points: eyes, nose tip, mouth corners. */
  readonly template: FivePoints;
  readonly outputSize: { readonly height: number; readonly width: number };
}

/** InsightFace's 0-based points, as published. */
const ARCFACE_ZERO_BASED: FivePoints = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
];

/** The ArcFace template in 1-based coordinates. */
const [a, b, c, d, e] = ARCFACE_ZERO_BASED;
const oneBased = ([x, y]: readonly [number, number]): [number, number] => [x + 1, y + 1];
export const ARCFACE_TEMPLATE: FivePoints = [oneBased(a), oneBased(b), oneBased(c), oneBased(d), oneBased(e)];

const TEMPLATES: Readonly<Record<AlignmentName, AlignmentTemplate>> = {
  'sphereface-112x96': { template: SPHEREFACE_TEMPLATE, outputSize: SPHEREFACE_OUTPUT_SIZE },
  'arcface-112x112': { template: ARCFACE_TEMPLATE, outputSize: { height: 112, width: 112 } },
};

/**
 * Returns the template and crop size of a named alignment.
 * @throws RangeError naming the value and the known names.
 */
export function alignmentTemplate(name: string): AlignmentTemplate {
  if (!(ALIGNMENT_NAMES as readonly string[]).includes(name)) {
    throw new RangeError(`unknown alignment "${name}"; expected one of ${ALIGNMENT_NAMES.join(', ')}`);
  }
  return TEMPLATES[name as AlignmentName];
}
