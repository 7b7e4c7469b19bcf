import { readFile } from 'node:fs/promises';

/**
 * Reads a UTF-8 text file that the user named, and turns the usual file-system failures into
 * one-line errors that say which file it was meant to be (`what`, e.g. "pairs file") and how
 * to point at another one (`hint`, e.g. "set --pairs").
 */
export async function readTextFile(file: string, what: string, hint = ''): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const suffix = hint === '' ? '' : `; ${hint}`;
    if (code === 'ENOENT') throw new Error(`${what} not found: ${file}${suffix}`);
    if (code === 'EISDIR') throw new Error(`${what} ${file} is a directory, expected a file${suffix}`);
    if (code === 'EACCES' || code === 'EPERM') throw new Error(`${what} ${file} is not readable (${code})${suffix}`);
    throw error;
  }
}
