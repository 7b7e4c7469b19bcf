import { readFile } from 'node:fs/promises';

/**
 * Reads a UTF-8 text file that the user named. The usual file-system failures become one-line
 * errors that name the file's role (`role`, e.g. "pairs file") and how to point at another
 * one (`hint`, e.g. "set --pairs").
 */
export async function readTextFile(file: string, role: string, hint = ''): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const suffix = hint === '' ? '' : `; ${hint}`;
    if (code === 'ENOENT') throw new Error(`${role} not found: ${file}${suffix}`);
    if (code === 'EISDIR') throw new Error(`${role} ${file} is a directory, expected a file${suffix}`);
    if (code === 'EACCES' || code === 'EPERM') throw new Error(`${role} ${file} is not readable (${code})${suffix}`);
    throw error;
  }
}
