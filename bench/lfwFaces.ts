/**
 * Real aligned faces for the benchmarks: the first images of the LFW View 2 pairs, aligned onto
 * the SphereFace template from the landmark file.
 */
import { from, lastValueFrom, map, toArray } from 'rxjs';

import { readLandmarks, readPairs, uniqueImages } from '../datasets/lfw.ts';
import { lfwPaths } from '../lib/paths.ts';
import { readImages } from '../operators/readImages.ts';
import { isRejected, type AlignedFace, type LandmarkedImage } from '../operators/records.ts';
import { similarityAlign } from '../operators/similarityAlign.ts';

/**
 * Aligns the first `count` images that the LFW pairs use.
 * @throws Error when fewer than `count` of them can be aligned.
 */
export async function alignedLfwFaces(count: number): Promise<AlignedFace[]> {
  const paths = lfwPaths();
  const landmarks = await readLandmarks(paths.landmarks);
  const refs = uniqueImages((await readPairs(paths.pairs)).pairs).slice(0, count);
  const faces = (await lastValueFrom(
    from(refs).pipe(
      readImages(),
      map((image) => (isRejected(image) ? image : ({ ...image, landmarks: landmarks.get(image.id) } as LandmarkedImage))),
      similarityAlign(),
      toArray(),
    ),
  )).filter((face): face is AlignedFace => !isRejected(face));
  if (faces.length !== count) throw new Error(`only ${faces.length} of the first ${count} LFW pair images could be aligned`);
  return faces;
}
