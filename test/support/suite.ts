import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, afterEach, beforeAll, expect, inject } from 'vitest';
import { FakeUpstream } from './upstream.ts';
import { PRICES, expectDrained, expectMoneyConserved, startGateway, type Gateway, type Leftovers, type PriceTable } from './gateway.ts';
import { mintToken } from './cashu.ts';
import { upstreamsEnv, type UpstreamEntry } from './upstreams-file.ts';
import { sha256Hex } from '../../src/cashu/credential.ts';
import type { Logger } from 'pino';

export interface Suite {
  readonly mintUrl: string;
  readonly upstream: FakeUpstream;
  /** The gateway, once beforeAll has started it. */
  gw: Gateway;
  /** What the running test may leave behind, and why; reset after each test. */
  leftovers: Leftovers;
}

/**
 * One gateway in front of one FakeUpstream for a whole file, with the money checked after every
 * test (conserved, nothing reserved or pending) and drained at the end (every key refunded, the
 * earnings withdrawn, all of it redeemed at the mint). `prices`: the table charges are checked
 * against at the end (PRICES, or the prices of `upstreams` when given; null: none).
 */
export function useGateway(
  opts: {
    env?: Record<string, string> | (() => Record<string, string> | Promise<Record<string, string>>);
    upstream?: FakeUpstream;
    /** Puts the doubles back after each test, before the money is checked. */
    reset?: () => void;
    prices?: PriceTable | null;
    /** Started before the gateway and stopped after it (a proxy in front of the mint, say). */
    before?: () => Promise<unknown>;
    after?: () => Promise<unknown>;
    /** Other servers the gateway talks to (more upstream doubles), started in order before it and stopped after it. */
    doubles?: Array<{ start(): Promise<unknown>; stop(): Promise<unknown> }>;
    /** The upstreams the gateway is served by alone, written to its UPSTREAMS_FILE once the doubles run. */
    upstreams?: UpstreamEntry[];
    /** Where the gateway logs (silent unless given), for a test that reads the log. */
    log?: Logger;
  } = {},
): Suite {
  const s = { mintUrl: inject('mintUrl'), upstream: opts.upstream ?? new FakeUpstream(), leftovers: {} } as Suite;
  beforeAll(async () => {
    await s.upstream.start();
    for (const d of opts.doubles ?? []) await d.start();
    await opts.before?.();
    const own = typeof opts.env === 'function' ? await opts.env() : (opts.env ?? {});
    const env = opts.upstreams ? { ...upstreamsEnv(opts.upstreams), ...own } : own;
    s.gw = await startGateway(s.mintUrl, s.upstream, env, opts.log ? { log: opts.log } : {});
  });
  afterEach(async () => {
    opts.reset?.();
    const leftovers = s.leftovers;
    s.leftovers = {};
    await expectMoneyConserved(s.gw, leftovers);
  });
  afterAll(async () => {
    try {
      const prices = opts.prices === undefined ? (opts.upstreams ? priceTable(opts.upstreams) : PRICES) : opts.prices;
      if (s.gw) await expectDrained(s.gw, prices ? { prices } : {});
    } finally {
      await s.gw?.close();
      await opts.after?.();
      for (const d of [...(opts.doubles ?? [])].reverse()) await d.stop();
      await s.upstream.stop();
    }
  });
  return s;
}

function priceTable(upstreams: UpstreamEntry[]): PriceTable {
  return Object.assign({}, ...upstreams.map((u) => u.prices)) as PriceTable;
}

/** A chat completion as a client sends it: `model` gpt-test, one user message, anything in `body` on top. */
export function chat(gw: Pick<Gateway, 'url'>, headers: Record<string, string>, body: Record<string, unknown> = {}, path = '/v1/chat/completions'): Promise<Response> {
  return fetch(`${gw.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }], ...body }),
  });
}

export const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

/** A key funded with `sats` of fresh ecash through /v1/balance/create. */
export async function fundedKey(gw: Pick<Gateway, 'url'>, mintUrl: string, sats: number, unit = 'sat'): Promise<{ key: string; hash: string; token: string }> {
  const token = await mintToken(mintUrl, sats, unit);
  const res = await fetch(`${gw.url}/v1/balance/create`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ initial_balance_token: token }) });
  expect(res.status).toBe(200);
  return { key: `sk-${sha256Hex(token)}`, hash: sha256Hex(token), token };
}

/**
 * What a refused or failed request must leave: the payer's key exactly as it was (balance,
 * nothing reserved, nothing spent, no request counted) and no msat charged anywhere. `reached`:
 * the request was reserved for and sent upstream before it failed, so it counts as one request.
 */
export async function expectUntouched<T>(gw: Pick<Gateway, 'ledger'>, hash: string, fn: () => Promise<T>, opts: { reached?: boolean } = {}): Promise<T> {
  const key = await gw.ledger.getKey(hash);
  const totals = await gw.ledger.totals();
  const out = await fn();
  const expected = key && opts.reached ? { ...key, totalRequests: key.totalRequests + 1 } : key;
  expect(await gw.ledger.getKey(hash), `key ${hash.slice(0, 8)}`).toEqual(expected);
  const after = await gw.ledger.totals();
  expect({ charged: after.charged, reserved: after.reserved, credited: after.credited }).toEqual({ charged: totals.charged, reserved: totals.reserved, credited: totals.credited });
  return out;
}

/** The change float holds `n` proofs of each of 1, 2, 4 … 128 sats at `mintUrl`, and no mint operation is in flight. */
export async function floatHolds(gw: Pick<Gateway, 'ledger'>, mintUrl: string, n: number): Promise<boolean> {
  const counts = await gw.ledger.unspentCounts(mintUrl, 'sat');
  return [1, 2, 4, 8, 16, 32, 64, 128].every((d) => (counts.get(d) ?? 0) >= n) && (await gw.ledger.pendingOps()).length === 0;
}

/** A chat chunk as the OpenAI SDK yields it, as far as a reader of its text needs. */
interface ContentChunk {
  choices: Array<{ delta?: { content?: string | null } }>;
}

/**
 * A client that leaves mid-stream: opens the stream with the signal it is given, reads until
 * `pieces` pieces of content have come, then aborts.
 */
export async function leaveMidStream(open: (signal: AbortSignal) => Promise<AsyncIterable<ContentChunk>>, pieces = 3): Promise<void> {
  const ac = new AbortController();
  const stream = await open(ac.signal);
  let received = 0;
  try {
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) received++;
      if (received === pieces) ac.abort();
    }
  } catch {
    /* aborted */
  }
}

/**
 * Polls `probe` until it gives something other than undefined or false, or fails naming `what`
 * after `ms`: the wait is for a state, never for a guessed time.
 */
export async function waitFor<T>(probe: () => Promise<T | undefined | false> | T | undefined | false, what: string, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Settles once a response of the gateway's closes unfinished: the gateway has seen its client
 * leave. Its own listeners run in the same turn, before anything awaiting this one.
 */
export function clientLeft(gw: Pick<Gateway, 'app'>): Promise<void> {
  const server = gw.app.server;
  return new Promise((resolve) => {
    const watch = (_req: IncomingMessage, res: ServerResponse) => {
      res.once('close', () => {
        if (res.writableFinished) return;
        server.off('request', watch);
        resolve();
      });
    };
    server.prependListener('request', watch);
  });
}

/** Waits until nothing is reserved on the key any more (its request has settled), then returns what it spent. */
export function settledSpend(gw: Pick<Gateway, 'ledger'>, hash: string): Promise<number> {
  return waitFor(async () => {
    const k = (await gw.ledger.getKey(hash))!;
    return k.reserved === 0 ? k.totalSpent : undefined;
  }, `the request on key ${hash.slice(0, 8)} settling`, 10_000);
}

/**
 * The end of a file whose gateways ran as child processes: once they have stopped, one more
 * gateway in this process on the database they used (`env` names it and the upstream), drained
 * as useGateway drains its own.
 */
export async function expectDatabaseDrained(mintUrl: string, env: Record<string, string>, prices: PriceTable | null = PRICES): Promise<void> {
  const gw = await startGateway(mintUrl, null, env);
  try {
    await expectDrained(gw, prices ? { prices } : {});
  } finally {
    await gw.close();
  }
}
