import type { FastifyRequest } from 'fastify';
import type { Payment } from '../engine/engine.ts';

export function paymentOf(req: FastifyRequest): Payment {
  const x = req.headers['x-cashu'];
  const auth = req.headers.authorization;
  const bearer = typeof auth === 'string' && /^bearer\s+/i.test(auth) ? auth.replace(/^bearer\s+/i, '').trim() : undefined;
  return { xCashu: typeof x === 'string' && x.trim() ? x.trim() : undefined, bearer: bearer || undefined };
}
