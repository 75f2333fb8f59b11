import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Payer } from '../engine/engine.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** What the request was charged, once the engine has settled it. */
    chargedMsats: number | undefined;
    /** A hijacked stream: its handler logs its line once settled, as 'finish' may come first. */
    streamed: boolean;
  }
}

/**
 * Who paid, as the access line says it: never the token or the key, at most 8 characters of its
 * hash. Only the paid routes read a payer; other lines say nothing of one.
 */
function payment(payer: Payer | null): { payment?: string; key?: string } {
  if (!payer) return {};
  if (payer.kind === 'none' || payer.kind === 'free') return { payment: payer.kind };
  const key = (payer.kind === 'token' ? payer.creditTo : payer.keyHash).slice(0, 8);
  if (payer.oneShot) return { payment: 'x-cashu', key };
  return { payment: payer.kind === 'token' ? 'token' : 'key', key };
}

function modelOf(req: FastifyRequest): string | undefined {
  const body = req.body as { model?: unknown } | undefined;
  // A client's string, so kept short: it is not trusted to be a served model's id.
  return body && typeof body === 'object' && typeof body.model === 'string' ? body.model.slice(0, 80) : undefined;
}

export type AccessLogger = (req: FastifyRequest, reply: FastifyReply, status?: number) => void;

/**
 * One info line per request, when its response is done: what an operator tailing the log needs to
 * see that paid traffic flows. A request's path is logged as its route, so no query string (and
 * nothing a client put there) reaches the log. A stream's response may finish before its
 * charge is settled, so its handler calls the returned function itself once it is.
 */
export function accessLog(app: FastifyInstance, log: Logger, on: boolean): AccessLogger {
  app.decorateRequest('chargedMsats', undefined);
  app.decorateRequest('streamed', false);
  const line: AccessLogger = (req, reply, status = reply.statusCode) => {
    log.info(
      {
        reqId: req.id,
        method: req.method,
        route: req.routeOptions.url ?? 'unmatched',
        status,
        model: modelOf(req),
        msats: req.chargedMsats,
        ...payment(req.payer),
        ms: Math.round(reply.elapsedTime),
      },
      'request',
    );
  };
  if (!on) return () => {};
  app.addHook('onResponse', async (req, reply) => {
    if (!req.streamed) line(req, reply);
  });
  return line;
}
