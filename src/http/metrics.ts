import { createHash, timingSafeEqual } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, register as processRegistry } from 'prom-client';
import type { Config } from '../config.ts';
import type { Catalog } from '../engine/catalog.ts';
import { HttpError, isExpected } from './errors.ts';
import type { Ledger } from '../ledger/ledger.ts';
import { upstreamTimings, type UpstreamTiming } from '../upstream/client.ts';
import { changeSwaps, type ChangeSwap } from '../cashu/float.ts';
import { onRequests } from '../upstream/undici-timing.ts';
import { mintEndpoint } from './mint-timing.ts';

/** Latency buckets in seconds: a mint swap takes milliseconds, an upstream's first byte up to minutes. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

let processMetrics = false;

type MoneyKind = 'credited' | 'charged' | 'refunded' | 'withdrawn' | 'fees';

function sameSecret(a: string, b: string): boolean {
  const h = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(a), h(b));
}

/**
 * The gateway's Prometheus metrics. Each app has its own registry (several gateways may share a
 * process, as in the tests); the Node process metrics are collected once, in prom-client's
 * default registry, and merged in at scrape time.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<'method' | 'route' | 'model' | 'status'>;
  readonly upstreamSeconds: Histogram<'upstream' | 'op' | 'path' | 'status'>;
  readonly mintSeconds: Histogram<'mint' | 'endpoint' | 'status'>;
  readonly openStreams: Gauge;
  readonly internalErrors: Counter<'route'>;
  readonly changeSwaps: Counter<'mint'>;
  readonly #ledgerUp: Gauge;
  readonly #money: Record<MoneyKind, Counter>;
  readonly #held: Record<'balances' | 'reserved', Gauge>;
  readonly #models: Gauge;
  readonly #deps: { cfg: Config; ledger: Ledger; catalog: Catalog };

  constructor(deps: { cfg: Config; ledger: Ledger; catalog: Catalog }) {
    this.#deps = deps;
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'gateway_http_requests_total',
      help: 'HTTP requests answered, by route, model (from the body; "other" when not served here), and status (499: the client left first).',
      labelNames: ['method', 'route', 'model', 'status'],
      registers,
    });
    this.upstreamSeconds = new Histogram({
      name: 'gateway_upstream_request_seconds',
      help: 'Time from sending a request to the upstream to its response headers; status "error" when none came.',
      labelNames: ['upstream', 'op', 'path', 'status'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.mintSeconds = new Histogram({
      name: 'gateway_mint_request_seconds',
      help: 'Time from sending a request to a Cashu mint to its response headers; status "error" when none came.',
      labelNames: ['mint', 'endpoint', 'status'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.openStreams = new Gauge({ name: 'gateway_open_streams', help: 'Server-sent event streams being written to clients now.', registers });
    this.internalErrors = new Counter({
      name: 'gateway_internal_errors_total',
      help: 'Requests that failed with an unexpected error (500), such as a ledger (database) failure.',
      labelNames: ['route'],
      registers,
    });
    this.changeSwaps = new Counter({
      name: 'gateway_change_swaps_total',
      help: 'Change the change float could not pay from stored proofs, swapped at the mint on the request path instead.',
      labelNames: ['mint'],
      registers,
    });
    this.#ledgerUp = new Gauge({ name: 'gateway_ledger_up', help: '1 when the ledger answered the last scrape, else 0.', registers });
    const money = (what: string, help: string) =>
      new Counter({ name: `gateway_${what}_msats_total`, help: `${help}, in msats, from the ledger at scrape time.`, registers });
    this.#money = {
      credited: money('credited', 'Ecash redeemed and credited to keys'),
      charged: money('charged', 'Charged for requests'),
      refunded: money('refunded', 'Refunded to clients as ecash (refunds and change)'),
      withdrawn: money('withdrawn', 'Earnings the operator withdrew'),
      fees: money('mint_fees', "Input fees mints took on the gateway's own swaps"),
    };
    this.#held = {
      balances: new Gauge({ name: 'gateway_balances_msats', help: 'Spendable balances on keys (reservations not included), in msats.', registers }),
      reserved: new Gauge({ name: 'gateway_reserved_msats', help: 'Reserved by requests in flight, in msats.', registers }),
    };
    this.#models = new Gauge({ name: 'gateway_models', help: 'Models served now.', registers });
  }

  /** Reads the ledger's totals; a failure shows as gateway_ledger_up 0. */
  async #refresh(): Promise<void> {
    this.#models.set(this.#deps.catalog.list().length);
    let t;
    try {
      t = await this.#deps.ledger.totals();
    } catch {
      // The counters keep their last values: dropping them would read as a counter reset.
      this.#ledgerUp.set(0);
      return;
    }
    this.#ledgerUp.set(1);
    for (const [k, c] of Object.entries(this.#money) as Array<[MoneyKind, Counter]>) {
      c.reset();
      c.inc(t[k]);
    }
    this.#held.balances.set(t.balances);
    this.#held.reserved.set(t.reserved);
  }

  /** Scrapes that arrive together share one read of the ledger (it sums every entry). */
  #refreshing: Promise<void> | undefined;

  async scrape(): Promise<{ contentType: string; text: string }> {
    this.#refreshing ??= this.#refresh().finally(() => {
      this.#refreshing = undefined;
    });
    await this.#refreshing;
    const merged = Registry.merge([this.registry, processRegistry]);
    return { contentType: merged.contentType, text: await merged.metrics() };
  }

  /** Counts a 500 that was not an expected failure (the engine's or the wallet's). */
  internalError(req: FastifyRequest, err: unknown, status: number): void {
    if (status >= 500 && !isExpected(err)) this.internalErrors.inc({ route: req.routeOptions.url ?? 'unmatched' });
  }

  /** Opens a stream gauge slot that closes with the response, however it ends. */
  streamOpened(reply: FastifyReply): void {
    this.openStreams.inc();
    reply.raw.once('close', () => this.openStreams.dec());
  }

  attach(app: FastifyInstance): void {
    if (!processMetrics) {
      processMetrics = true;
      collectDefaultMetrics({ register: processRegistry });
    }
    const { catalog, cfg } = this.#deps;
    // Counted when the response closes: streamed replies are hijacked, and skip onResponse hooks.
    app.addHook('onRequest', async (req, reply) => {
      reply.raw.once('close', () => {
        const body = req.body as Record<string, unknown> | undefined;
        const asked = body && typeof body === 'object' && typeof body.model === 'string' ? body.model : undefined;
        // Only served models become labels: a client must not be able to mint new series at will.
        const model = asked === undefined ? '' : catalog.get(asked) ? asked : 'other';
        const status = reply.raw.headersSent ? String(reply.raw.statusCode) : '499';
        this.requests.inc({ method: req.method, route: req.routeOptions.url ?? 'unmatched', model, status });
      });
    });

    // Calls are attributed by upstream URL, not by gateway: one process normally runs one gateway.
    const onUpstream = (msg: unknown) => {
      const t = msg as UpstreamTiming;
      this.upstreamSeconds.observe({ upstream: t.upstream, op: t.op, path: t.path, status: String(t.status) }, t.seconds);
    };
    subscribe(upstreamTimings.name, onUpstream);
    // A mint reached through an alias is labelled by its public URL, as everywhere else.
    const reached = cfg.CASHU_MINTS.map((m) => cfg.CASHU_MINT_ALIASES[m] ?? m);
    const stopMints = onRequests(
      (t) => {
        const m = mintEndpoint(t.origin + t.path, reached)!;
        this.mintSeconds.observe({ mint: cfg.CASHU_MINTS[reached.indexOf(m.mint)]!, endpoint: `${t.method} ${m.endpoint}`, status: String(t.status) }, t.seconds);
      },
      (origin, path) => mintEndpoint(origin + path, reached) !== undefined,
    );
    // Like the calls above, counted by mint: only a trusted mint pays change, so the labels are few.
    const onChangeSwap = (msg: unknown) => {
      const { mint } = msg as ChangeSwap;
      if (cfg.CASHU_MINTS.includes(mint)) this.changeSwaps.inc({ mint });
    };
    subscribe(changeSwaps.name, onChangeSwap);
    app.addHook('onClose', async () => {
      unsubscribe(upstreamTimings.name, onUpstream);
      unsubscribe(changeSwaps.name, onChangeSwap);
      stopMints();
    });

    app.get('/metrics', async (req, reply) => {
      if (cfg.METRICS_TOKEN && !sameSecret(req.headers.authorization ?? '', `Bearer ${cfg.METRICS_TOKEN}`)) {
        throw new HttpError(401, 'invalid_api_key', 'GET /metrics needs Authorization: Bearer <METRICS_TOKEN>.');
      }
      const { contentType, text } = await this.scrape();
      reply.header('content-type', contentType).header('cache-control', 'no-store');
      return text;
    });
  }
}
