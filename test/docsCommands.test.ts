/**
 * Keeps the commands in the README and in docs/*.md from rotting.
 *
 * Every command line in a fenced block that starts with `npx sphereface` (with `\` line
 * continuations joined) is run through the real command-line parser with
 * SPHEREFACE_PARSE_ONLY=1: the `sphereface` command parses and checks every option as for a
 * real run, then stops before doing the work. A renamed command, a removed option or a value that
 * no longer parses fails here. Commands placed right after an HTML comment
 * `<!-- docs-check: run -->` are also run for real, so they must be quick and need only the
 * shared data. Placeholders such as `<path to 068.ckpt>` are left as they are: the parser does
 * not open files.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import t from 'tap';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = path.join(ROOT, 'bin/sphereface.js');
const RUN_MARK = '<!-- docs-check: run -->';

interface DocumentedCommand {
  readonly file: string;
  readonly line: number;
  readonly args: string[];
  readonly run: boolean;
}

/** Splits a shell command line into words, honouring single and double quotes. */
function shellWords(text: string): string[] {
  const words: string[] = [];
  let current = '';
  let quote: string | undefined;
  let inWord = false;
  for (const char of text) {
    if (quote !== undefined) {
      if (char === quote) quote = undefined;
      else current += char;
    } else if (char === '"' || char === "'") {
      quote = char;
      inWord = true;
    } else if (/\s/.test(char)) {
      if (inWord) words.push(current);
      current = '';
      inWord = false;
    } else {
      current += char;
      inWord = true;
    }
  }
  if (quote !== undefined) throw new Error(`unbalanced ${quote} in: ${text}`);
  if (inWord) words.push(current);
  return words;
}

/** Finds the `npx sphereface …` lines in the fenced blocks of one Markdown file. */
function commandsOf(file: string, text: string): DocumentedCommand[] {
  const lines = text.split('\n');
  const found: DocumentedCommand[] = [];
  let inFence = false;
  let fenceRun = false;
  let lastNonBlank = '';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line.trimStart().startsWith('```')) {
      if (!inFence) fenceRun = lastNonBlank.trim() === RUN_MARK;
      inFence = !inFence;
      lastNonBlank = line;
      continue;
    }
    if (line.trim() !== '') lastNonBlank = line;
    if (!inFence || !line.trimStart().startsWith('npx sphereface')) continue;
    const start = i;
    let command = line.trim();
    while (command.endsWith('\\') && i + 1 < lines.length) {
      i += 1;
      command = `${command.slice(0, -1).trimEnd()} ${(lines[i] ?? '').trim()}`;
    }
    // A trailing comment explains the command; it is not part of it.
    const withoutComment = command.replace(/\s+#\s.*$/, '');
    found.push({ file, line: start + 1, args: shellWords(withoutComment).slice(2), run: fenceRun });
  }
  return found;
}

async function documentedCommands(): Promise<DocumentedCommand[]> {
  const files = ['README.md', ...(await readdir(path.join(ROOT, 'docs'))).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)];
  const all: DocumentedCommand[] = [];
  for (const file of files) all.push(...commandsOf(file, await readFile(path.join(ROOT, file), 'utf8')));
  return all;
}

function runCli(args: readonly string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd: ROOT, env, timeout: 120_000, maxBuffer: 8 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

t.test('the extractor finds commands, joins continuations and drops comments', async (t) => {
  const sample = [
    'text',
    RUN_MARK,
    '',
    '```',
    'npx sphereface run a.yaml --set x="a b" \\',
    '  --dry-run   # explains',
    'npm test',
    '```',
    '```',
    'npx sphereface cache stats DIR',
    '```',
  ].join('\n');
  t.same(commandsOf('x.md', sample), [
    { file: 'x.md', line: 5, args: ['run', 'a.yaml', '--set', 'x=a b', '--dry-run'], run: true },
    { file: 'x.md', line: 10, args: ['cache', 'stats', 'DIR'], run: false },
  ]);
});

const commands = await documentedCommands();

t.test('the docs contain commands to check', async (t) => {
  t.ok(commands.length >= 10, `${commands.length} documented commands found`);
});

t.test('every documented command parses', async (t) => {
  const parseOnly = { ...process.env, SPHEREFACE_PARSE_ONLY: '1' };
  // Two at a time: each is a fresh process, and the machine has two cores.
  for (let i = 0; i < commands.length; i += 2) {
    const pair = commands.slice(i, i + 2);
    const results = await Promise.all(pair.map((command) => runCli(command.args, parseOnly)));
    for (const [k, result] of results.entries()) {
      const command = pair[k] as DocumentedCommand;
      const where = `${command.file}:${command.line} sphereface ${command.args.join(' ')}`;
      t.equal(result.code, 0, `${where} parses${result.code === 0 ? '' : `: ${result.stderr.trim().split('\n').slice(-3).join(' | ')}`}`);
      t.match(result.stdout, /^parsed: /m, `${where}: stopped before running`);
    }
  }
});

t.test('the commands marked to run, run', async (t) => {
  const marked = commands.filter((command) => command.run);
  t.ok(marked.length >= 1, `${marked.length} commands marked ${RUN_MARK}`);
  for (const command of marked) {
    const result = await runCli(command.args, process.env);
    t.equal(result.code, 0, `${command.file}:${command.line} sphereface ${command.args.join(' ')}${result.code === 0 ? '' : `: ${result.stderr.trim().split('\n').slice(-3).join(' | ')}`}`);
  }
});
