/**
 * `sphereface fetch lfw`: the command around `fetchDataset` of `datasets/fetch.ts`, which
 * downloads, verifies and unpacks LFW into the data folder.
 */
import path from 'node:path';

import { Argument, InvalidArgumentError, type Command } from 'commander';

import { DATASET_NAMES, fetchDataset, LFW_BASE_URL, parseBaseUrl, type FetchResult } from '../datasets/fetch.ts';

function baseUrl(value: string): string {
  try {
    parseBaseUrl(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
  return value;
}

function formatMebibytes(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Formats the lines that `fetch` prints to stdout. */
export function formatFetchResult(result: FetchResult): string {
  if (result.upToDate) return `${result.dataset}: already installed and verified in ${result.dataDir}; nothing to do`;
  const lines = result.items.map((item) =>
    item.status === 'present'
      ? `${item.name}: already installed and verified (${item.target})`
      : `${item.name}: downloaded ${formatMebibytes(item.bytesReceived)}, verified and installed (${item.target})`,
  );
  return [`${result.dataset}: installed in ${result.dataDir}`, ...lines].join('\n');
}

/** Adds the `fetch` command to `program`. */
export function addFetchCommand(program: Command): void {
  program
    .command('fetch')
    .description(
      'Download a dataset from its official address, verify the checksums, and unpack it into the data folder. ' +
        'An interrupted download resumes on the next run; a run with everything in place does nothing.',
    )
    .addArgument(new Argument('<dataset>', 'dataset to fetch').choices([...DATASET_NAMES]))
    .option('--data <dir>', 'data folder to install into, as lfw/ and lfw-meta/pairs.txt (default: $SPHEREFACE_DATA or ./data)')
    .option('--base-url <url>', `URL of the folder that serves lfw.tgz and pairs.txt, e.g. a mirror (default: ${LFW_BASE_URL})`, baseUrl)
    .option('--force', 'download and unpack again, replacing installed files even when they verify or were not installed by fetch')
    .action(async (dataset: string, options: { data?: string; baseUrl?: string; force?: boolean }) => {
      const result = await fetchDataset(dataset, {
        ...(options.data === undefined ? {} : { dataDir: path.resolve(options.data) }),
        ...(options.baseUrl === undefined ? {} : { baseUrl: options.baseUrl }),
        ...(options.force === true ? { force: true } : {}),
      });
      process.stdout.write(`${formatFetchResult(result)}\n`);
    });
}
