import type { FastifyInstance, FastifyRequest } from 'fastify';
import { presentApiKey, presentToken, type Credential } from '../cashu/credential.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** What the request presents to pay, read once from its headers before anything else. */
    credential: Credential;
  }
}

/**
 * Who pays, as the request says: `X-Cashu` for one request, else the API key, which OpenAI
 * clients send as `Authorization: Bearer` and Anthropic clients (`ANTHROPIC_API_KEY`) as `x-api-key`.
 */
export function credentialOf(req: FastifyRequest): Credential {
  const x = req.headers['x-cashu'];
  const auth = req.headers.authorization;
  const apiKey = req.headers['x-api-key'];
  const bearer =
    typeof auth === 'string' && /^bearer\s+/i.test(auth)
      ? auth.replace(/^bearer\s+/i, '')
      : typeof apiKey === 'string'
        ? apiKey
        : undefined;
  return { xCashu: typeof x === 'string' ? presentToken(x) : undefined, apiKey: presentApiKey(bearer) };
}

/**
 * `req.credential`: read on first use and kept for the request's life, so the rate limit, the
 * routes and the engine share one reading (one parse, one hash), and a route that never asks
 * reads nothing.
 */
export function readCredentials(app: FastifyInstance): void {
  const read = new WeakMap<FastifyRequest, Credential>();
  app.decorateRequest('credential', {
    getter(this: FastifyRequest): Credential {
      let c = read.get(this);
      if (!c) read.set(this, (c = credentialOf(this)));
      return c;
    },
  });
}
