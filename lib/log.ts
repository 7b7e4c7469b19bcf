/**
 * The project's logger: pino, writing to stderr so that stdout carries only results (tables,
 * reports). Lines are human-readable when stderr is a terminal, and one JSON object per line
 * otherwise (CI logs, files, log collectors). `SPHEREFACE_LOG_FORMAT=json|pretty` forces a
 * format, and `SPHEREFACE_LOG_LEVEL` sets the level (default info).
 */
import { pino, type Logger } from 'pino';
import { PinoPretty } from 'pino-pretty';

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function createLogger(): Logger {
  const requested = process.env['SPHEREFACE_LOG_LEVEL'] ?? 'info';
  const level = LEVELS.includes(requested) ? requested : 'info';
  if (level !== requested) {
    process.stderr.write(`SPHEREFACE_LOG_LEVEL="${requested}" is not a log level; expected one of ${LEVELS.join(', ')}. Using info.\n`);
  }
  const format = process.env['SPHEREFACE_LOG_FORMAT'] ?? (process.stderr.isTTY === true ? 'pretty' : 'json');
  if (format !== 'json' && format !== 'pretty') {
    process.stderr.write(`SPHEREFACE_LOG_FORMAT="${format}" is not a log format; expected json or pretty. Using json.\n`);
  }
  if (format !== 'pretty') {
    return pino({ level, base: undefined }, pino.destination({ fd: 2, sync: true }));
  }
  const pretty = PinoPretty({
    destination: 2,
    sync: true,
    colorize: process.stderr.isTTY === true,
    translateTime: 'SYS:HH:MM:ss',
    ignore: 'pid,hostname',
    singleLine: true,
  });
  return pino({ level, base: undefined }, pretty);
}

export const log: Logger = createLogger();
