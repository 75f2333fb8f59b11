import { once } from 'node:events';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Engine, Receipt, StreamSink } from '../engine/engine.ts';
import type { Catalog } from '../engine/catalog.ts';
import { prepareJob, type JobKind } from '../engine/job.ts';
import { paymentOf } from './payment.ts';

const ROUTES: Array<[string, JobKind]> = [
  ['/v1/chat/completions', 'chat'],
  ['/v1/completions', 'completion'],
  ['/v1/embeddings', 'embedding'],
];

function costHeaders(reply: FastifyReply, r: Receipt): void {
  reply.header('x-cost-msats', String(r.cost.totalMsats));
  reply.header('x-routstr-cost-msats', String(r.cost.totalMsats));
  reply.header('x-routstr-input-cost-msats', String(r.cost.inputMsats));
  reply.header('x-routstr-output-cost-msats', String(r.cost.outputMsats));
  if (r.change) reply.header('x-cashu', r.change);
}

/** Aborts the upstream call when the client goes away before the response is finished. */
function abortOnClose(reply: FastifyReply): AbortController {
  const ac = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  return ac;
}

export function completionRoutes(app: FastifyInstance, deps: { engine: Engine; catalog: Catalog }): void {
  const { engine, catalog } = deps;
  for (const [path, kind] of ROUTES) {
    const handler = async (req: import('fastify').FastifyRequest, reply: FastifyReply) => {
      const job = await prepareJob(kind, req.body, catalog);
      const payer = await engine.pay(job, paymentOf(req));
      const ac = abortOnClose(reply);
      if (!job.stream) {
        const { body, receipt } = await engine.complete(job, payer, ac.signal);
        costHeaders(reply, receipt);
        return body;
      }
      const raw = reply.raw;
      const sink: StreamSink = {
        open: () => {
          reply.hijack();
          raw.writeHead(200, {
            'content-type': 'text/event-stream; charset=utf-8',
            'cache-control': 'no-cache, no-transform',
            connection: 'keep-alive',
            'x-accel-buffering': 'no',
          });
        },
        write: async (text) => {
          if (!raw.write(text) && !raw.destroyed) await once(raw, 'drain', { signal: ac.signal });
        },
        end: () => raw.end(),
      };
      try {
        await engine.stream(job, payer, sink, ac.signal);
      } catch (e) {
        if (!reply.sent && !raw.headersSent) throw e;
        req.log.error({ err: (e as Error).message }, 'stream failed after it started');
        raw.destroy();
      }
    };
    app.post(path, handler);
    app.post(path.replace(/^\/v1/, ''), handler);
  }
}
