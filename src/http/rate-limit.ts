import type { FastifyInstance } from 'fastify';
import { HttpError } from './errors.ts';
import { paying } from '../cashu/credential.ts';

/** Routes for machines that watch the gateway; they are never limited. */
const EXEMPT = new Set(['/health', '/ready', '/metrics']);

/**
 * Token buckets, one per client: `perMinute` requests may come at once, and the bucket refills at
 * `perMinute` a minute. Full buckets are forgotten, so memory follows the clients of the last minute.
 */
export class Buckets {
  readonly #capacity: number;
  readonly #perMs: number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(perMinute: number) {
    this.#capacity = perMinute;
    this.#perMs = perMinute / 60_000;
  }

  /** Takes one request from `id`'s bucket; returns 0, or the seconds until one is available. */
  take(id: string, now = Date.now()): number {
    const b = this.#buckets.get(id);
    const tokens = b ? Math.min(this.#capacity, b.tokens + (now - b.at) * this.#perMs) : this.#capacity;
    if (tokens >= 1) {
      this.#buckets.set(id, { tokens: tokens - 1, at: now });
      return 0;
    }
    this.#buckets.set(id, { tokens, at: now });
    return Math.max(1, Math.ceil((1 - tokens) / this.#perMs / 1000));
  }

  /** Drops buckets that have refilled: they are the same as no bucket. */
  sweep(now = Date.now()): void {
    for (const [id, b] of this.#buckets) {
      if (b.tokens + (now - b.at) * this.#perMs >= this.#capacity) this.#buckets.delete(id);
    }
  }

  get size(): number {
    return this.#buckets.size;
  }
}

function limited(scope: 'IP address' | 'API key', perMinute: number, retryAfter: number): HttpError {
  return new HttpError(429, 'rate_limit_exceeded', `Rate limit reached for this ${scope}: ${perMinute} requests per minute. Try again in ${retryAfter} s.`, {
    type: 'rate_limit_error',
    headers: { 'retry-after': String(retryAfter) },
  });
}

/**
 * Limits requests per client IP and per API key before anything else happens (no body is parsed,
 * no token redeemed). 0 turns a limit off.
 */
export function rateLimit(app: FastifyInstance, opts: { perMinuteIp: number; perMinuteKey: number }): void {
  const byIp = opts.perMinuteIp > 0 ? new Buckets(opts.perMinuteIp) : undefined;
  const byKey = opts.perMinuteKey > 0 ? new Buckets(opts.perMinuteKey) : undefined;
  if (!byIp && !byKey) return;
  const sweeper = setInterval(() => {
    byIp?.sweep();
    byKey?.sweep();
  }, 60_000);
  sweeper.unref();
  app.addHook('onClose', async () => clearInterval(sweeper));
  app.addHook('onRequest', async (req) => {
    if (EXEMPT.has(req.routeOptions.url ?? '')) return;
    if (byIp) {
      const wait = byIp.take(req.ip);
      if (wait) throw limited('IP address', opts.perMinuteIp, wait);
    }
    if (byKey) {
      // The key the request would spend from, found without a database read: a token and its
      // `sk-` key share one limit, and any other value is limited by its hash.
      const key = paying(req.credential)?.keyHash;
      if (key === undefined) return;
      const wait = byKey.take(key);
      if (wait) throw limited('API key', opts.perMinuteKey, wait);
    }
  });
}
