import { pino, type Logger } from 'pino';

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

export function createLogger(level: string): Logger {
  return pino({ level, redact: { paths: REDACT, censor: '[redacted]' }, base: { service: 'cashu-gateway' } });
}
