/**
 * `sphereface run SPEC`: runs a pipeline spec (YAML or JSON), or with `--dry-run` prints its
 * stage graph and what the cache already holds.
 */
import { rename, writeFile } from 'node:fs/promises';

import { InvalidArgumentError, type Command } from 'commander';

import { parseBackendName } from '../model/backend.ts';
import { formatFoldTable, formatSummary, formatTrainingSummary } from '../pipelines/formatReport.ts';
import { planPipeline, rejectedTotal, runPipeline, type PipelinePlan, type PipelineReport } from '../pipelines/runPipeline.ts';
import { loadPipeline } from '../pipelines/spec.ts';

function collectVariable(value: string, previous: Record<string, string>): Record<string, string> {
  const equals = value.indexOf('=');
  if (equals < 1) throw new InvalidArgumentError(`expected NAME=VALUE, got "${value}"`);
  return { ...previous, [value.slice(0, equals)]: value.slice(equals + 1) };
}

/** Formats the stage graph of `--dry-run` as a Markdown table. */
export function formatPlan(plan: PipelinePlan): string {
  const rows = [['#', 'stage', 'op', 'takes', 'gives', 'cache']];
  plan.stages.forEach((stage, index) => {
    const cache =
      stage.cache === 'off'
        ? 'off'
        : `${stage.cache.artifacts} stored, ${stage.cache.failures} failed, ${stage.cache.missing} to compute` +
          (stage.cache.skipsEarlierStages ? ' (a stored result skips the stages before)' : '');
    rows.push([String(index), stage.label, stage.op, stage.input, stage.output, cache]);
  });
  const lines = [`pipeline ${plan.name} (${plan.spec}): ${plan.images} images, cache ${plan.cacheDir ?? 'off'}`, table(rows)];
  for (const stage of plan.stages) lines.push(`${stage.label}: ${JSON.stringify(stage.params ?? {})}`);
  if (plan.unreadable.length > 0) {
    lines.push(`${plan.unreadable.length} image(s) cannot be read:`, ...plan.unreadable.slice(0, 10).map((entry) => `  ${entry.id}: ${entry.error}`));
  }
  return lines.join('\n');
}

/** Formats the per-stage counts of a finished run as a Markdown table. */
export function formatStageCounts(report: PipelineReport): string {
  const rows = [['stage', 'in', 'out', 'cached', 'stored', 'skipped', 'rejected', 'active s']];
  for (const stage of report.stages) {
    const rejected = rejectedTotal(stage);
    rows.push([
      stage.label,
      String(stage.inputs),
      String(stage.outputs),
      String(stage.cacheHits),
      String(stage.stored),
      String(stage.skipped),
      String(rejected),
      stage.activeSeconds.toFixed(1),
    ]);
  }
  const lines = [table(rows)];
  for (const stage of report.stages) {
    for (const [reason, count] of Object.entries(stage.rejected)) lines.push(`  ${stage.label} rejected ${count}×: ${reason}`);
  }
  return lines.join('\n');
}

function table(rows: readonly string[][]): string {
  const widths = (rows[0] ?? []).map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length)));
  const line = (row: readonly string[]): string => `| ${row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  const rule = `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`;
  const [header, ...body] = rows;
  return [line(header ?? []), rule, ...body.map(line)].join('\n');
}

export function addRunCommand(program: Command, prepareReportPath: (file: string) => Promise<string>): void {
  program
    .command('run')
    .description('Run a pipeline spec (YAML or JSON); see pipelines/examples/')
    .argument('<spec>', 'pipeline spec file (.yaml, .yml or .json)')
    .option('--dry-run', 'print the stage graph and the cache state of each stage, then stop')
    .option('--set <name=value>', 'set a spec variable ${name}; relative paths are taken from the working directory (repeatable)', collectVariable, {})
    .option('--cache <dir>', 'artifact cache folder (overrides the spec)')
    .option('--no-cache', 'run without the artifact cache')
    .option('--retry-failed', 'run stages again for images whose failure is cached')
    .option('--report <file>', 'write the run report (per-stage counts, rejections, memory, result) as JSON')
    .option('--backend <name>', 'force a tensor backend: tfjs-node-gpu, tfjs-node, wasm or cpu')
    .option('--no-progress', 'log progress every 15 s instead of drawing bars')
    .action(
      async (
        file: string,
        options: { dryRun?: boolean; set: Record<string, string>; cache?: string | false; retryFailed?: boolean; report?: string; backend?: string; progress: boolean },
      ) => {
        const pipeline = await loadPipeline(file, { set: options.set });
        const backend = options.backend === undefined ? {} : { backend: parseBackendName(options.backend) };
        const cacheDir = options.cache === false ? { cacheDir: null } : options.cache === undefined ? {} : { cacheDir: options.cache };
        if (options.dryRun === true) {
          process.stdout.write(`${formatPlan(await planPipeline(pipeline, { ...cacheDir, ...backend }))}\n`);
          return;
        }
        const reportFile = options.report === undefined ? undefined : await prepareReportPath(options.report);
        const report = await runPipeline(pipeline, {
          ...cacheDir,
          ...backend,
          retryFailed: options.retryFailed === true,
          ...(options.progress ? {} : { progress: false }),
        });
        process.stdout.write(`\n${report.images} images through ${report.name} in ${report.seconds.toFixed(1)} s, ${report.rejected.length} rejected\n`);
        process.stdout.write(`${formatStageCounts(report)}\n`);
        if (report.result !== undefined) {
          const result = report.result;
          process.stdout.write('folds' in result ? `\n${formatFoldTable(result)}\n${formatSummary(result)}\n` : `\n${formatTrainingSummary(result)}\n`);
        }
        if (reportFile !== undefined) {
          // Written whole under a temporary name first, so a killed run never leaves half a report.
          const temporary = `${reportFile}.tmp-${process.pid}`;
          await writeFile(temporary, `${JSON.stringify(report, null, 2)}\n`);
          await rename(temporary, reportFile);
        }
      },
    );
}
