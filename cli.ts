/**
 * The `sphereface` command. It parses arguments, runs a pipeline and prints the result; the
 * work itself lives in `pipelines/`.
 */
import { log } from './lib/log.ts';
import { buildProgram } from './commands/program.ts';

const program = buildProgram();

// A reader that closes stdout early (`| head`) is not an error of ours: stop quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

try {
  await program.parseAsync(process.argv);
} catch (error) {
  const message = error instanceof Error ? error.message : String(error);
  log.error(message);
  if (process.env['SPHEREFACE_DEBUG'] && error instanceof Error) log.error(error.stack ?? '');
  process.exitCode = 1;
}
