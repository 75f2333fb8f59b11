import { once } from 'node:events';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { shallow, type Engine, type Payer, type Receipt, type StreamSink } from '../engine/engine.ts';
import type { WireFormat } from '../engine/format.ts';
import { chatFormat, completionFormat, embeddingFormat } from '../formats/chat.ts';
import { countTokensEstimate, messagesFormat } from '../formats/messages.ts';
import { responsesFormat } from '../formats/responses.ts';
import type { AccessLogger } from './access-log.ts';
import { httpError, isExpected } from './errors.ts';
import type { Metrics } from './metrics.ts';

/** Each route is one wire format; the engine does the rest. */
const ROUTES: Array<[string, WireFormat]> = [
  ['/v1/chat/completions', chatFormat],
  ['/v1/completions', completionFormat],
  ['/v1/embeddings', embeddingFormat],
  ['/v1/messages', messagesFormat],
  ['/v1/responses', responsesFormat],
];

export function costHeaders(reply: FastifyReply, r: Receipt): void {
  reply.header('x-cost-msats', String(r.cost.totalMsats));
  reply.header('x-routstr-cost-msats', String(r.cost.totalMsats));
  reply.header('x-routstr-input-cost-msats', String(r.cost.inputMsats));
  reply.header('x-routstr-output-cost-msats', String(r.cost.outputMsats));
  if (r.change) reply.header('x-cashu', r.change);
}

/** Tells the engine when the client goes away before the response is finished. */
function closeSignal(reply: FastifyReply): AbortController {
  const ac = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  return ac;
}

export interface CompletionDeps {
  engine: Engine;
  /** The largest body the server reads (BODY_LIMIT_BYTES). */
  bodyLimit: number;
  /** A client that stops reading a stream for this long is treated as gone. */
  stallMs: number;
  metrics?: Metrics | undefined;
  /** Logs a hijacked (streamed) request's line, which onResponse never sees. */
  access?: AccessLogger | undefined;
}

function sseSink(deps: CompletionDeps, reply: FastifyReply, ac: AbortController): StreamSink {
  const raw = reply.raw;
  return {
    open: () => {
      reply.hijack();
      reply.request.streamed = true;
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
        // Stopped reading: drop the client, which stops the upstream and bills what was generated.
        raw.destroy();
        ac.abort();
        throw e;
      }
    },
    end: () => raw.end(),
    wire: httpError,
  };
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who pays, read once from the headers before the body is read. */
    payer: Payer | null;
  }
}

/** Bodies larger than this from someone who has shown no credential are not read at all. */
const UNPAID_BODY_BYTES = 256 * 1024;

/**
 * Reads the credential from the headers before the body is read or parsed: a malformed token, an
 * unknown key, or a large body from someone with no credential at all is answered without any
 * work on the body.
 */
async function admit(deps: CompletionDeps, req: FastifyRequest): Promise<void> {
  let payer = deps.engine.payerOf(req.credential);
  if (payer.kind === 'key') payer = await deps.engine.admit(payer);
  if (payer.kind === 'none') {
    const length = Number(req.headers['content-length'] ?? Number.NaN);
    if (!(length <= UNPAID_BODY_BYTES)) throw await deps.engine.unpaidBound(Number.isFinite(length) ? length : deps.bodyLimit);
  }
  req.payer = payer;
}

/** The HTTP door for one wire format: read who pays, price, run; the engine owns the rest. */
export function formatHandler(deps: CompletionDeps, format: WireFormat) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    const payer = req.payer ?? deps.engine.payerOf(req.credential);
    const job = await deps.engine.job(format, req.body, payer, req.headers);
    // Listen before paying: a client that leaves during a mint swap must not be billed in full.
    const ac = closeSignal(reply);
    const sink = job.stream ? sseSink(deps, reply, ac) : undefined;
    try {
      const out = await deps.engine.run(job, payer, { signal: ac.signal, sink });
      req.chargedMsats = out.receipt.cost.totalMsats;
      if (job.stream) return deps.access?.(req, reply, reply.raw.statusCode);
      costHeaders(reply, out.receipt);
      return reply.send(out.body);
    } catch (e) {
      if (!reply.raw.headersSent) throw e;
      req.log.error({ err: (e as Error).message }, 'stream failed after it started');
      reply.raw.destroy();
      deps.access?.(req, reply, reply.raw.statusCode);
    }
  };
}

/**
 * Routes for wire formats, each answering errors in its own protocol's shape (an Anthropic
 * client gets `{"type":"error","error":{…}}`), with the same stable codes.
 */
export function formatRoutes(app: FastifyInstance, deps: CompletionDeps, routes: ReadonlyArray<readonly [string, WireFormat]>): void {
  for (const [path, format] of routes) {
    app.register(async (scope) => {
      formatScope(scope, deps, format);
      const handler = formatHandler(deps, format);
      scope.post(path, handler);
      scope.post(path.replace(/^\/v1/, ''), handler);
    });
  }
}

/** A scope whose errors are in the format's shape and whose payer is read before the body. */
function formatScope(scope: FastifyInstance, deps: CompletionDeps, format: WireFormat): void {
  scope.setErrorHandler((err: FastifyError, req, reply) => {
    const e = httpError(err);
    deps.metrics?.internalError(req, err, e.status);
    if (e.status >= 500 && !isExpected(err)) req.log.error({ err }, 'unhandled error');
    else if (e.status >= 500) req.log.warn({ code: e.code, path: req.routeOptions.url }, e.message);
    reply.code(e.status).headers(e.headers).send(format.errorBody(e));
  });
  scope.addHook('onRequest', (req) => admit(deps, req));
}

/** Anthropic's `POST /v1/messages/count_tokens`: free for a client with a credential. */
function countTokensRoute(app: FastifyInstance, deps: CompletionDeps): void {
  app.register(async (scope) => {
    formatScope(scope, deps, messagesFormat);
    const handler = async (req: FastifyRequest) => {
      const { model, estimate } = shallow(() => countTokensEstimate(req.body));
      return { input_tokens: await deps.engine.countTokens(model, estimate, req.payer ?? { kind: 'none' }) };
    };
    scope.post('/v1/messages/count_tokens', handler);
    scope.post('/messages/count_tokens', handler);
  });
}

export function completionRoutes(app: FastifyInstance, deps: CompletionDeps): void {
  formatRoutes(app, deps, ROUTES);
  countTokensRoute(app, deps);
}
