/**
 * An example of a user-written operator: a quality gate that rejects aligned faces too dark to
 * embed reliably. `custom-operator.yaml` loads this file as a plugin.
 *
 * A plugin module exports `operators`, an array of definitions. Each definition gives the
 * operator's name, an effect Schema for its parameters, the record types it takes and gives,
 * and `open`, which returns the RxJS operator. The runner validates the parameters, checks the
 * record types against the neighbouring stages, counts the stage's rejections by reason, and
 * shows it with its own progress bar.
 */
import { Schema } from 'effect';
import { map } from 'rxjs';

import { isRejected, reject, type AlignedFace, type Maybe } from '../../../operators/records.ts';
import { defineStage, type OpenedStage } from '../../operatorDefinition.ts';

/** Mean luma (ITU-R BT.601 weights) of an 8-bit RGB face, 0–255. */
export function meanLuma(face: AlignedFace): number {
  let sum = 0;
  for (let i = 0; i < face.rgb.length; i += 3) {
    sum += 0.299 * (face.rgb[i] as number) + 0.587 * (face.rgb[i + 1] as number) + 0.114 * (face.rgb[i + 2] as number);
  }
  return sum / (face.rgb.length / 3);
}

const rejectDarkFaces = defineStage({
  name: 'rejectDarkFaces',
  description: 'reject aligned faces whose mean luma is below a threshold',
  params: Schema.Struct({
    /** Lowest accepted mean luma, 0–255. */
    minMeanLuma: Schema.Number.pipe(Schema.between(0, 255)),
  }),
  input: 'AlignedFace',
  output: 'AlignedFace',
  version: 1,
  shape: 'per-item',
  open: async (params) => ({
    operator: map((face: Maybe<AlignedFace>) => {
      if (isRejected(face)) return face;
      const luma = meanLuma(face);
      return luma < params.minMeanLuma ? reject(face, 'rejectDarkFaces', `too dark: mean luma below ${params.minMeanLuma}`) : face;
    }) as OpenedStage['operator'],
  }),
});

export const operators = [rejectDarkFaces];
