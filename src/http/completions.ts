import { once } from 'node:events';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Engine, Payer, Receipt, StreamSink } from '../engine/engine.ts';
import type { Catalog } from '../engine/catalog.ts';
import { prepareJob, type Job, type JobKind } from '../engine/job.ts';
import type { Metrics } from './metrics.ts';
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

interface Deps {
  engine: Engine;
  catalog: Catalog;
  /** A client that stops reading a stream for this long is treated as gone. */
  stallMs: number;
  metrics?: Metrics | undefined;
}

async function serve(deps: Deps, req: FastifyRequest, reply: FastifyReply, job: Job, payer: Payer, ac: AbortController) {
  if (!job.stream) {
    const { body, receipt } = await deps.engine.complete(job, payer, ac.signal);
    costHeaders(reply, receipt);
    return reply.send(body);
  }
  const raw = reply.raw;
  const sink: StreamSink = {
    open: () => {
      reply.hijack();
      deps.metrics?.streamOpened(reply);
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
    },
    write: async (text) => {
      if (raw.write(text) || raw.destroyed) return;
      try {
        await once(raw, 'drain', { signal: AbortSignal.any([ac.signal, AbortSignal.timeout(deps.stallMs)]) });
      } catch (e) {
        // Stopped reading: drop the client, which aborts the upstream and bills what was sent.
        raw.destroy();
        ac.abort();
        throw e;
      }
    },
    end: () => raw.end(),
  };
  try {
    await deps.engine.stream(job, payer, sink, ac.signal);
  } catch (e) {
    if (!raw.headersSent) throw e;
    req.log.error({ err: (e as Error).message }, 'stream failed after it started');
    raw.destroy();
    await deps.engine.release(payer);
  }
}

export function completionRoutes(app: FastifyInstance, deps: Deps): void {
  for (const [path, kind] of ROUTES) {
    const handler = async (req: FastifyRequest, reply: FastifyReply) => {
      const job = await prepareJob(kind, req.body, deps.catalog);
      // Listen before paying: a client that leaves during a mint swap must not be billed in full.
      const ac = abortOnClose(reply);
      const payer = await deps.engine.pay(job, paymentOf(req));
      try {
        return await serve(deps, req, reply, job, payer, ac);
      } catch (e) {
        await deps.engine.release(payer);
        throw e;
      }
    };
    app.post(path, handler);
    app.post(path.replace(/^\/v1/, ''), handler);
  }
}
