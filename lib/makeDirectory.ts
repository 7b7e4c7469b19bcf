/**
 * Creates a folder and its missing parents, with an error that names the option and the path.
 *
 * Node 20's `mkdir(…, { recursive: true })` never returns for a path under a folder that
 * refuses new entries with ENOENT, such as `/proc/x/y` (it retries the parent forever). This
 * creates one level at a time from the nearest existing ancestor instead, and reports a parent
 * that is a file or cannot take a new folder.
 */
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';

/**
 * Makes `dir` exist as a folder. `label` names it in errors, e.g. `--out`.
 * @throws Error naming `label`, the path and the reason.
 */
export async function makeDirectory(dir: string, label: string): Promise<void> {
  const absolute = path.resolve(dir);
  const missing: string[] = [];
  let current = absolute;
  for (;;) {
    const found = await stat(current).catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' || error.code === 'ENOTDIR' ? undefined : Promise.reject(error)));
    if (found !== undefined) {
      if (!found.isDirectory()) throw new Error(`${label}: cannot create ${absolute}, because ${current} is a file, not a folder`);
      break;
    }
    missing.unshift(current);
    const parent = path.dirname(current);
    if (parent === current) break;
    current = parent;
  }
  for (const folder of missing) {
    try {
      await mkdir(folder);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') continue;
      throw new Error(`${label}: cannot create the folder ${folder} (${code ?? (error as Error).message}); choose a writable location`);
    }
  }
}
