import { createServer } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { CashuWallets } from '../cashu/wallet.ts';
import type { Catalog } from '../engine/catalog.ts';
import type { Engine } from '../engine/engine.ts';
import { HttpError, httpError, isExpected } from './errors.ts';
import type { Ledger } from '../ledger/ledger.ts';
import { balanceRoutes } from './balance.ts';
import { completionRoutes } from './completions.ts';
import { healthRoutes } from './health.ts';
import { infoRoutes } from './info.ts';
import { lightningRoutes } from './lightning.ts';
import { accessLog } from './access-log.ts';
import { adminRoutes } from './admin.ts';
import { Metrics } from './metrics.ts';
import { readCredentials } from './payment.ts';
import { rateLimit } from './rate-limit.ts';

export interface AppDeps {
  cfg: Config;
  log: Logger;
  ledger: Ledger;
  wallets: CashuWallets;
  catalog: Catalog;
  engine: Engine;
  /** The Nostr identity's npub, when the Nostr door is on. */
  npub?: string | undefined;
}

/** Large Cashu tokens ride in headers; Node's default 16 KiB is too tight for a many-proof token. */
const MAX_HEADER_BYTES = 64 * 1024;

/**
 * Slow clients are cut off while they send their request: the headers within HEADERS_TIMEOUT_MS
 * and the whole request within REQUEST_TIMEOUT_MS. Neither applies once the request is in, so a
 * long stream is never timed out. Node checks for expired requests every so often; the check
 * runs often enough that a short timeout is kept to within a quarter of itself.
 */
function serverTimeouts(cfg: Config) {
  const requestTimeout = cfg.REQUEST_TIMEOUT_MS;
  // Node requires headersTimeout <= requestTimeout.
  const headersTimeout = Math.min(cfg.HEADERS_TIMEOUT_MS, requestTimeout);
  const connectionsCheckingInterval = Math.max(50, Math.min(30_000, Math.floor(headersTimeout / 4)));
  return { headersTimeout, requestTimeout, connectionsCheckingInterval };
}

/** A number of hops, as a function: fastify's types leave the number form out. */
function trustProxy(t: Config['TRUST_PROXY']): boolean | string[] | ((addr: string, hop: number) => boolean) {
  return typeof t === 'number' ? (_addr, hop) => hop < t : t;
}

export function buildApp(deps: AppDeps): FastifyInstance {
  const app: FastifyInstance = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    // Per-request lines cost time on the hot path; errors are logged where they happen.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.cfg.BODY_LIMIT_BYTES,
    // Routstr (FastAPI) answers /v1/models and /v1/models/ alike; clients built against it use either.
    routerOptions: { ignoreTrailingSlash: true },
    serverFactory: (handler) => createServer({ maxHeaderSize: MAX_HEADER_BYTES, ...serverTimeouts(deps.cfg) }, handler),
    requestTimeout: 0,
    trustProxy: trustProxy(deps.cfg.TRUST_PROXY),
    // The default handler logs the error with the raw request bytes (tokens included) at trace.
    clientErrorHandler: (err: NodeJS.ErrnoException, socket) => {
      deps.log.debug({ code: err.code }, 'malformed HTTP request');
      if (!socket.writable) return socket.destroy();
      const status =
        err.code === 'HPE_HEADER_OVERFLOW'
          ? '431 Request Header Fields Too Large'
          : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? '408 Request Timeout'
            : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    },
  });

  const metrics = new Metrics(deps);
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const e = httpError(err);
    metrics.internalError(req, err, e.status);
    if (e.status >= 500 && !isExpected(err)) req.log.error({ err }, 'unhandled error');
    else if (e.status >= 500) req.log.warn({ code: e.code, path: req.routeOptions.url }, e.message);
    reply.code(e.status).headers(e.headers).send(e.body());
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send(new HttpError(404, 'not_found', `No route for ${req.method} ${req.url.split('?')[0]}.`).body());
  });

  // Metrics first: their hook must see requests the rate limit turns away.
  metrics.attach(app);
  const access = accessLog(app, deps.log, deps.cfg.LOG_REQUESTS);
  readCredentials(app);
  rateLimit(app, { perMinuteIp: deps.cfg.RATE_LIMIT_PER_MINUTE_IP, perMinuteKey: deps.cfg.RATE_LIMIT_PER_MINUTE_KEY });
  healthRoutes(app, deps);
  infoRoutes(app, deps);
  balanceRoutes(app, deps);
  lightningRoutes(app, deps);
  adminRoutes(app, deps);
  app.decorateRequest('payer', null);
  completionRoutes(app, { engine: deps.engine, bodyLimit: deps.cfg.BODY_LIMIT_BYTES, stallMs: deps.cfg.CLIENT_STALL_TIMEOUT_MS, metrics, access });
  return app;
}
