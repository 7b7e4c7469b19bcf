/**
 * Builds a small training folder of real aligned faces: a few LFW people, each image aligned
 * onto the 112×96 template from the landmark file and written as PNG under `<dir>/<Name>/`.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';

import sharp from 'sharp';

import { readLandmarks } from '../../datasets/lfw.ts';
import { lfwPaths } from '../../lib/paths.ts';
import { decodeImage } from '../../operators/readImages.ts';
import { isRejected } from '../../operators/records.ts';
import { alignFace } from '../../operators/similarityAlign.ts';

/** People with at least four images in the shared LFW folder, and the four used of each. */
export const ALIGNED_PEOPLE: Readonly<Record<string, readonly string[]>> = {
  Colin_Powell: ['0038', '0040', '0049', '0071'],
  George_W_Bush: ['0007', '0016', '0065', '0145'],
  Tony_Blair: ['0006', '0018', '0032', '0048'],
  Donald_Rumsfeld: ['0022', '0028', '0036', '0039'],
};

/** Writes the aligned crops of `ALIGNED_PEOPLE` into `dir` and returns how many were written. */
export async function writeAlignedFolder(dir: string): Promise<number> {
  const paths = lfwPaths();
  const landmarks = await readLandmarks(paths.landmarks);
  let written = 0;
  for (const [name, numbers] of Object.entries(ALIGNED_PEOPLE)) {
    await mkdir(path.join(dir, name), { recursive: true });
    for (const number of numbers) {
      const id = `${name}/${name}_${number}.jpg`;
      const points = landmarks.get(id);
      if (points === undefined) throw new Error(`no landmarks for ${id}`);
      const decoded = await decodeImage({ id, path: path.join(paths.images, id) });
      if (isRejected(decoded)) throw new Error(`cannot read ${id}: ${decoded.reason}`);
      const face = alignFace({ ...decoded, landmarks: points });
      await sharp(face.rgb, { raw: { width: face.width, height: face.height, channels: 3 } })
        .png()
        .toFile(path.join(dir, name, `${name}_${number}.png`));
      written++;
    }
  }
  return written;
}
