import type { FastifyRequest } from 'fastify';
import type { Payment } from '../engine/engine.ts';

/**
 * Who pays, as the request says: `X-Cashu` for one request, else the API key, which OpenAI
 * clients send as `Authorization: Bearer` and Anthropic clients (`ANTHROPIC_API_KEY`) as `x-api-key`.
 */
export function paymentOf(req: FastifyRequest): Payment {
  const x = req.headers['x-cashu'];
  const auth = req.headers.authorization;
  const apiKey = req.headers['x-api-key'];
  const bearer =
    typeof auth === 'string' && /^bearer\s+/i.test(auth)
      ? auth.replace(/^bearer\s+/i, '').trim()
      : typeof apiKey === 'string'
        ? apiKey.trim()
        : undefined;
  return { xCashu: typeof x === 'string' && x.trim() ? x.trim() : undefined, bearer: bearer || undefined };
}
