/**
 * Checks that the data and model folders the other tests read are where the settings point,
 * so that a missing setting shows up as one clear failure instead of many file-not-found errors.
 */
import t from 'tap';
import { access } from 'node:fs/promises';
import { dataRoot, lfwPaths, mobileFaceNetCheckpoint, modelsRoot } from '../lib/paths.ts';

const required: Array<[string, string, string]> = [
  [lfwPaths().images, 'LFW people folder', 'SPHEREFACE_DATA'],
  [lfwPaths().pairs, 'LFW pairs.txt', 'SPHEREFACE_DATA'],
  [lfwPaths().landmarks, 'LFW lfw_landmark.txt', 'SPHEREFACE_DATA'],
  [mobileFaceNetCheckpoint(), 'MobileFaceNet checkpoint', 'SPHEREFACE_MODELS'],
];

for (const [file, what, setting] of required) {
  t.test(`${what} is present`, async (t) => {
    const found = await access(file).then(
      () => true,
      () => false,
    );
    const folder = setting === 'SPHEREFACE_DATA' ? dataRoot() : modelsRoot();
    t.ok(found, `${what} not found at ${file}: set ${setting} to the folder that holds it (now ${folder})`);
  });
}
