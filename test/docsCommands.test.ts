/**
 * Keeps the commands in the README and in docs/*.md from rotting.
 *
 * Every command line in a fenced block that starts with `npx sphereface` (with `\` line
 * continuations joined) goes through the real command-line parser (`buildProgram`), which checks
 * every option and value as for a real run and stops just before the command's action. A renamed
 * command, a removed option or a value that no longer parses fails here. Commands placed right
 * after an HTML comment `<!-- docs-check: run -->` are also run for real, in a child process, so
 * they must be quick and need only the shared data; their `data/` and `models/` paths are read
 * from `$SPHEREFACE_DATA` and `$SPHEREFACE_MODELS`, where CI keeps them.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { CommanderError, type Command } from 'commander';
import t from 'tap';

import { buildProgram } from '../commands/program.ts';
import { dataRoot, modelsRoot } from '../lib/paths.ts';

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
      let code = 0;
      if (error !== null) code = typeof error.code === 'number' ? error.code : 1;
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

/** Thrown by the preAction hook to stop after parsing, with the name of the command. */
class Parsed extends Error {}

/** Parses one command line with a fresh program and stops before its action runs. */
async function parseOnly(args: readonly string[]): Promise<{ command?: string; error?: string }> {
  const program = buildProgram();
  let output = '';
  const quiet = (command: Command): void => {
    command.exitOverride();
    command.configureOutput({ writeOut: (text) => void (output += text), writeErr: (text) => void (output += text) });
    command.commands.forEach(quiet);
  };
  quiet(program);
  program.hook('preAction', (_program, action) => {
    throw new Parsed(action.name());
  });
  try {
    await program.parseAsync(['node', 'sphereface', ...args]);
    return { error: 'no command action was reached' };
  } catch (error) {
    if (error instanceof Parsed) return { command: error.message };
    if (error instanceof CommanderError) return { error: `${error.message} ${output}`.trim() };
    throw error;
  }
}

t.test('every documented command parses', async (t) => {
  for (const command of commands) {
    const where = `${command.file}:${command.line} sphereface ${command.args.join(' ')}`;
    const result = await parseOnly(command.args);
    t.equal(result.error, undefined, `${where} parses`);
    t.equal(result.command, command.args[0] === 'cache' ? command.args[1] : command.args[0], `${where}: reaches its action`);
  }
});

t.test('a command with a removed option or a bad value does not parse', async (t) => {
  t.match((await parseOnly(['eval', '--model', 'x:y', '--no-such-option'])).error, /unknown option '--no-such-option'/);
  t.match((await parseOnly(['eval', '--model', 'x:y', '--engine', 'gpu'])).error, /argument 'gpu' is invalid/);
  t.match((await parseOnly(['eval'])).error, /required option '--model <spec>' not specified/);
  t.match((await parseOnly(['no-such-command'])).error, /unknown command 'no-such-command'/);
});

/** Maps the README's `data/` and `models/` paths to the configured folders. */
function withConfiguredRoots(args: readonly string[]): string[] {
  return args.map((arg) => {
    if (arg.startsWith('data/')) return path.join(dataRoot(), arg.slice('data/'.length));
    if (arg.startsWith('models/')) return path.join(modelsRoot(), arg.slice('models/'.length));
    return arg;
  });
}

t.test('the commands marked to run, run', async (t) => {
  const marked = commands.filter((command) => command.run);
  t.ok(marked.length >= 1, `${marked.length} commands marked ${RUN_MARK}`);
  for (const command of marked) {
    const result = await runCli(withConfiguredRoots(command.args), process.env);
    t.equal(result.code, 0, `${command.file}:${command.line} sphereface ${command.args.join(' ')}${result.code === 0 ? '' : `: ${result.stderr.trim().split('\n').slice(-3).join(' | ')}`}`);
  }
});
