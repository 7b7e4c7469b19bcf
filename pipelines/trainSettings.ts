/**
 * Settings of a training run that the `train` command and the `train` pipeline stage share,
 * kept apart from `pipelines/train.ts` so that reading them loads no tensor code.
 */
import type { HeadOptions } from '../model/heads.ts';
import type { Rejected } from '../operators/records.ts';
import type { TrainingSet } from '../datasets/training.ts';

export type TrainingData =
  | { readonly kind: 'folder'; readonly root: string; readonly exclude?: readonly string[] }
  | { readonly kind: 'list'; readonly file: string; readonly root?: string; readonly exclude?: readonly string[] }
  /** The people of nine LFW View 2 folds; `fold` (1–10) is held out. Crops come from the landmark file. */
  | { readonly kind: 'lfw-split'; readonly fold: number; readonly dataRoot?: string; readonly minImagesPerIdentity?: number }
  /** A set whose crops are already aligned in memory (112×96, or the input size), as a pipeline spec's `train` stage collects them. */
  | { readonly kind: 'prepared'; readonly set: TrainingSet; readonly crops: ReadonlyMap<string, Uint8Array | Rejected> };

export type HeadKind = 'asoftmax' | 'cosface' | 'arcface' | 'softmax';

/** A head as a command line or a spec names it; missing values take the defaults below. */
export interface HeadSettings {
  readonly head: HeadKind;
  /** m of A-Softmax (1–4, default 4), or the additive margin of CosFace (0.35) and ArcFace (0.5). */
  readonly margin?: number;
  /** Feature scale of CosFace and ArcFace (default 64). */
  readonly scale?: number;
  /** A-Softmax gradient (default `reference`, the released Caffe layer's). */
  readonly gradient?: 'autograd' | 'reference';
  /** A-Softmax λ schedule (default base 1000, gamma 0.12, power 1, min 5). */
  readonly lambda?: { readonly base: number; readonly gamma: number; readonly power: number; readonly min: number };
}

/** The reference λ schedule of `sphereface_model.prototxt`. */
export const REFERENCE_LAMBDA = { base: 1000, gamma: 0.12, power: 1, min: 5 } as const;

/**
 * Turns head settings into head options.
 *
 * @throws RangeError for an A-Softmax margin other than 1, 2, 3 or 4
 */
export function headFromSettings(settings: HeadSettings): HeadOptions {
  switch (settings.head) {
    case 'asoftmax': {
      const m = settings.margin ?? 4;
      if (m !== 1 && m !== 2 && m !== 3 && m !== 4) throw new RangeError(`the A-Softmax margin m must be 1, 2, 3 or 4, got ${m}`);
      return { kind: 'asoftmax', m, lambda: settings.lambda ?? REFERENCE_LAMBDA, gradient: settings.gradient ?? 'reference' };
    }
    case 'cosface':
      return { kind: 'cosface', scale: settings.scale ?? 64, margin: settings.margin ?? 0.35 };
    case 'arcface':
      return { kind: 'arcface', scale: settings.scale ?? 64, margin: settings.margin ?? 0.5 };
    case 'softmax':
      return { kind: 'softmax' };
  }
}
