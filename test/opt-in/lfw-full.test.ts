/**
 * The whole LFW View 2 protocol with the CASIA MobileFaceNet checkpoint: 7,701 images, about
 * 5 minutes on 2 cores with the wasm backend. Not part of `npm test`; run `npm run test:lfw`.
 *
 * The expected numbers come from an independent PyTorch run of the same checkpoint, on crops
 * aligned from `lfw_landmark.txt` (1-based) with cp2tform semantics and bilinear sampling,
 * stored losslessly, with flip concatenation and the SphereFace protocol: mean 99.17 %.
 */
import t from 'tap';
import { lfwPaths, mobileFaceNetCheckpoint } from '../../lib/paths.ts';
import { runLfwEval } from '../../pipelines/lfwEval.ts';

const PYTORCH_FOLD_ACCURACY_PERCENT = [98.33, 98.83, 99.17, 98.83, 98.83, 99.5, 99.33, 99.33, 100.0, 99.5];
const PYTORCH_MEAN_PERCENT = 99.17;

const lfw = lfwPaths();
const checkpoint = mobileFaceNetCheckpoint();

t.test('MobileFaceNet on all 6000 LFW pairs matches the PyTorch run', async (t) => {
  const result = await runLfwEval({ ...lfw, model: `mobilefacenet:${checkpoint}`, progressBar: false });
  const meanPercent = 100 * result.report.mean;
  t.comment(`mean ${meanPercent.toFixed(2)} %, folds ${result.report.folds.map((f) => (100 * f.accuracy).toFixed(2)).join(' ')}`);

  t.ok(Math.abs(meanPercent - PYTORCH_MEAN_PERCENT) <= 0.1, `mean ${meanPercent.toFixed(3)} % within 0.10 pp of ${PYTORCH_MEAN_PERCENT} %`);
  result.report.folds.forEach((fold, i) => {
    const expected = PYTORCH_FOLD_ACCURACY_PERCENT[i] as number;
    // One pair is 0.17 pp of a fold; allow three pairs of numerical disagreement per fold.
    t.ok(Math.abs(100 * fold.accuracy - expected) <= 0.5, `fold ${fold.fold}: ${(100 * fold.accuracy).toFixed(2)} % vs ${expected} %`);
  });
});
