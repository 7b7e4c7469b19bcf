/**
 * The project's logger: pino, writing to stderr so that stdout carries only results (tables,
 * reports). Lines are human-readable by default; `SPHEREFACE_LOG_FORMAT=json` gives one JSON
 * object per line for log collectors, and `SPHEREFACE_LOG_LEVEL` sets the level (default info).
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
  if (process.env['SPHEREFACE_LOG_FORMAT'] === 'json') {
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
