import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import type pinoPretty from 'pino-pretty';

/** Credentials and ecash travel in these fields; they never reach a log line. */
const REDACT = [
  'req.headers.authorization',
  'req.headers["x-cashu"]',
  'res.headers["x-cashu"]',
  'headers.authorization',
  'headers["x-cashu"]',
  'token',
  'cashu_token',
  'initial_balance_token',
  // Node's HTTP parse errors carry the raw request bytes, headers and all.
  'err.rawPacket',
  'rawPacket',
];

/**
 * Human-readable lines when a person watches (stdout is a terminal), JSON lines otherwise (a log
 * collector, a pipe, a file). LOG_FORMAT=json or LOG_FORMAT=pretty overrides the guess.
 */
function prettyStream(): DestinationStream | undefined {
  const format = process.env.LOG_FORMAT;
  if (format === 'json' || (format !== 'pretty' && !process.stdout.isTTY)) return undefined;
  // Loaded only here: a production process writing JSON never pays for it.
  const pretty = createRequire(import.meta.url)('pino-pretty') as typeof pinoPretty;
  return pretty({ sync: true, colorize: Boolean(process.stdout.isTTY), translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' });
}

/** `to`: where JSON lines go instead of standard output (a test reading what an operator would). */
export function createLogger(level: string, to?: DestinationStream): Logger {
  const opts = { level, redact: { paths: REDACT, censor: '[redacted]' }, base: { service: 'cashu-gateway' } };
  if (to) return pino(opts, to);
  const pretty = prettyStream();
  return pretty ? pino(opts, pretty) : pino(opts);
}
