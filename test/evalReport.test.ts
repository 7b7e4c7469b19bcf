import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

import sharp from 'sharp';

import { lfwPaths, mobileFaceNetCheckpoint } from '../lib/paths.ts';
import { computeEvalMetrics, selectHardestPairs, writeEvalReport } from '../pipelines/evalReport.ts';
import { runLfwEval, type LfwEvalOptions } from '../pipelines/lfwEval.ts';
import { writeSmallPairsFile } from './helpers/smallPairs.ts';

const run = promisify(execFile);
const lfw = lfwPaths();
const cli = path.resolve('bin/sphereface.js');

/** Extracts every `data:` PNG of an HTML page, in order, as buffers. */
function embeddedPngs(html: string): Buffer[] {
  return [...html.matchAll(/src="data:image\/png;base64,([A-Za-z0-9+/=]+)"/g)].map((match) => Buffer.from(match[1]!, 'base64'));
}

t.test('HTML report from a small real eval', async (t) => {
  const dir = t.testdir({});
  const { file: pairsFile } = await writeSmallPairsFile(dir, 3);
  const options: LfwEvalOptions = {
    images: lfw.images,
    pairs: pairsFile,
    landmarks: lfw.landmarks,
    model: `mobilefacenet:${mobileFaceNetCheckpoint()}`,
    batchSize: 8,
    progressBar: false,
  };
  const result = await runLfwEval(options);
  const out = path.join(dir, 'report');
  const written = await writeEvalReport(result, { dir: out, landmarks: options, hardestPairs: 8 });

  // Pair scores: 60 pairs, each tested in its own fold.
  t.equal(result.testScores.length, 60);
  result.pairs.forEach((pair, p) => {
    t.equal(result.testScores[p], result.scoresByFold[pair.fold]![p], `pair ${p}: test score is its fold's entry`);
  });

  const html = await readFile(written.files.html, 'utf8');
  t.notMatch(html, /src="http/i, 'no image from the network');
  t.notMatch(html, /href="http/i, 'no linked resource');
  t.notMatch(html, /<script/i, 'no JavaScript');

  // The plots: written as files, embedded byte for byte, and 760×500.
  const pngs = embeddedPngs(html);
  for (const name of ['roc', 'scores', 'folds'] as const) {
    const file = await readFile(written.files[name]);
    t.ok(pngs.some((png) => png.equals(file)), `${name}.png is embedded`);
    const meta = await sharp(file).metadata();
    t.same([meta.format, meta.width, meta.height], ['png', 760, 500], `${name}.png decodes at 760×500`);
  }

  // The thumbnails: 8 pairs of each kind, two crops each, 96 wide and 112 high.
  t.equal(written.hardest.falseAccepts.length, 8);
  t.equal(written.hardest.falseRejects.length, 8);
  const thumbnails = [...html.matchAll(/<img src="(data:image\/png;base64,[^"]+)" width="96" height="112"/g)];
  t.equal(thumbnails.length, 32, 'two crops for each of the 16 hardest pairs');
  for (const [, url] of thumbnails.slice(0, 4)) {
    const meta = await sharp(Buffer.from(url!.slice(url!.indexOf(',') + 1), 'base64')).metadata();
    t.same([meta.width, meta.height, meta.channels], [96, 112, 3], 'crop decodes at 96×112 RGB');
  }
  t.notMatch(html, /no crop:/, 'every crop was made');

  // The fold table contains the report's numbers.
  for (const fold of result.report.folds) {
    const row = new RegExp(`<tr data-fold="${fold.fold}"><td>${fold.fold}</td><td data-value="([^"]+)">[^<]+</td><td data-value="([^"]+)">`).exec(html);
    t.ok(row, `fold ${fold.fold} has a row`);
    t.equal(Number(row?.[1]), fold.accuracy, `fold ${fold.fold} accuracy`);
    t.equal(Number(row?.[2]), fold.threshold, `fold ${fold.fold} threshold`);
  }
  const accuracy = /<td id="accuracy" data-mean="([^"]+)" data-std="([^"]+)">/.exec(html);
  t.equal(Number(accuracy?.[1]), result.report.mean, 'mean accuracy');
  t.equal(Number(accuracy?.[2]), result.report.std, 'accuracy std');

  // The headline metrics are those computed from the scores.
  const metrics = computeEvalMetrics(result);
  const val = /<td id="val-at-far" data-val="([^"]+)" data-std="([^"]+)" data-far="([^"]+)">/.exec(html);
  t.equal(Number(val?.[1]), metrics.valAtFar.val, 'VAL at FAR 1e-3');
  t.equal(Number(val?.[3]), metrics.valAtFar.far, 'mean test FAR');
  const eer = /<td id="eer" data-rate="([^"]+)"/.exec(html);
  t.equal(Number(eer?.[1]), metrics.eer.rate, 'EER');
  t.ok(metrics.eer.rate >= 0 && metrics.eer.rate <= 0.5, `EER ${metrics.eer.rate} is a rate of at most 0.5`);

  // The hardest pairs are the extremes of the scores of their kind.
  const different = result.pairs.flatMap((pair, p) => (pair.same ? [] : [result.testScores[p]!]));
  const same = result.pairs.flatMap((pair, p) => (pair.same ? [result.testScores[p]!] : []));
  const hardest = selectHardestPairs(result, 3);
  t.same(hardest.falseAccepts.map((h) => h.score), [...different].sort((a, b) => b - a).slice(0, 3), 'highest different-person scores');
  t.same(hardest.falseRejects.map((h) => h.score), [...same].sort((a, b) => a - b).slice(0, 3), 'lowest same-person scores');
  t.ok(hardest.falseAccepts.every((h) => !h.pair.same) && hardest.falseRejects.every((h) => h.pair.same), 'each list holds its kind');
  const firstRow = /<tr class="pair" data-kind="false-accept" data-index="(\d+)">/.exec(html);
  t.equal(Number(firstRow?.[1]), hardest.falseAccepts[0]!.pair.index, 'first false-accept row is the highest different-person score');
});

t.test('eval --html rejects a file as folder', async (t) => {
  const dir = t.testdir({ 'taken.txt': 'not a folder' });
  const result = run(process.execPath, [cli, 'eval', '--model', 'mobilefacenet:none.ckpt', '--html', path.join(dir, 'taken.txt')], { env: process.env });
  await t.rejects(result, { code: 1 });
  const stderr = await result.catch((error: { stderr: string }) => error.stderr);
  t.match(stderr, /taken\.txt is a file; expected a folder/);
});
