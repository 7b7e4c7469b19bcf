import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { lfwPaths } from '../../lib/paths.ts';

/**
 * Writes a small View 2 pairs file made of real pairs: the first `perHalf` same-person and
 * different-person lines of every fold of `pairs.txt`, so the 10 folds keep their structure.
 * Returns the file and the kept lines.
 */
export async function writeSmallPairsFile(dir: string, perHalf: number): Promise<{ file: string; lines: string[] }> {
  const body = (await readFile(lfwPaths().pairs, 'utf8'))
    .split(/\r?\n/)
    .slice(1)
    .filter((line) => line.trim() !== '');
  const lines: string[] = [];
  for (let fold = 0; fold < 10; fold++) {
    const start = fold * 600;
    lines.push(...body.slice(start, start + perHalf), ...body.slice(start + 300, start + 300 + perHalf));
  }
  const file = path.join(dir, `pairs-${perHalf}.txt`);
  await writeFile(file, `10\t${perHalf}\n${lines.join('\n')}\n`);
  return { file, lines };
}
