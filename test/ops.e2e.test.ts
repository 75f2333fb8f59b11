import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { FakeUpstream, REPLY_WORDS } from './support/upstream.ts';
import { PRICES, expectDrained, expectMoneyConserved, startGateway, type Gateway, type PriceTable } from './support/gateway.ts';
import { mintToken, proofStates } from './support/cashu.ts';
import { bearer, chat as send, expectUntouched } from './support/suite.ts';
import { scrape, series } from './support/prometheus.ts';
import { freePort } from './support/ports.ts';
import type { Billed, BilledChunk, WireError } from './support/wire.ts';

const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const messages = [{ role: 'user', content: 'Count the sheep.' }];
/** Dear enough that a few requests earn whole sats to withdraw. */
const DEAR = JSON.stringify({ 'gpt-test': { prompt: 100, completion: 500 } });

/** Every gateway a test started, with the prices it ran at: each is drained at the end of the file. */
const started: Array<{ gw: Gateway; prices: PriceTable }> = [];
async function gateway(env: Record<string, string> = {}): Promise<Gateway> {
  const gw = await startGateway(mintUrl, upstream, env);
  started.push({ gw, prices: env.MODEL_PRICES ? (JSON.parse(env.MODEL_PRICES) as PriceTable) : PRICES });
  return gw;
}

/** A chat completion of `messages`, its answer read. */
async function chat(gw: Gateway, headers: Record<string, string>, body: Record<string, unknown> = {}) {
  const res = await send(gw, headers, { messages, ...body });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Partial<Billed & WireError> };
}

beforeAll(async () => {
  await upstream.start();
});
afterAll(async () => {
  try {
    for (const { gw, prices } of started) await expectDrained(gw, { prices });
  } finally {
    for (const { gw } of started) await gw.close().catch(() => {});
    await upstream.stop();
  }
});
afterEach(() => {
  upstream.modes.length = 0;
  upstream.chunkDelayMs = 0;
});

describe('/metrics', () => {
  it('moves with every billed request: requests, money from the ledger, upstream and mint latency', async () => {
    const gw = await gateway({ MODEL_PRICES: DEAR });
    const before = await scrape(gw.url);
    const token = await mintToken(mintUrl, 64);

    const plain = await chat(gw, { authorization: `Bearer ${token}` }, { max_tokens: 3 });
    expect(plain.status).toBe(200);
    const res = await send(gw, bearer(`sk-${sha256(token)}`), { messages, max_tokens: 2, stream: true });
    const sse = await res.text();
    const trailer = JSON.parse(sse.split('\n\n').filter((e) => e.includes('"usage"')).at(-1)!.slice('data: '.length)) as BilledChunk;
    const charged = plain.json.usage!.cost.total_msats + trailer.usage.cost.total_msats;
    expect(charged).toBeGreaterThan(2000);
    // Unknown models are counted, under one label.
    expect((await expectUntouched(gw, sha256(token), () => chat(gw, { authorization: `Bearer ${token}` }, { model: 'no-such-model-xyz' }))).status).toBe(404);

    const refund = await fetch(`${gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    const refundedSats = Number(((await refund.json()) as { sats: string }).sats);
    expect(refundedSats).toBe(Math.floor((64_000 - charged) / 1000));
    const withdrawal = await gw.wallets.withdraw();
    expect(withdrawal?.amount).toBe(Math.floor(charged / 1000));

    const after = await scrape(gw.url);
    const delta = (name: string, labels: Record<string, string> = {}) => series(after, name, labels) - series(before, name, labels);
    const chatLabels = { method: 'POST', route: '/v1/chat/completions', model: 'gpt-test', status: '200' };
    expect(delta('gateway_http_requests_total', chatLabels)).toBe(2);
    expect(delta('gateway_http_requests_total', { ...chatLabels, model: 'other', status: '404' })).toBe(1);
    expect(delta('gateway_credited_msats_total')).toBe(64_000);
    expect(delta('gateway_charged_msats_total')).toBe(charged);
    expect(delta('gateway_refunded_msats_total')).toBe(refundedSats * 1000);
    expect(delta('gateway_withdrawn_msats_total')).toBe(Math.floor(charged / 1000) * 1000);
    expect(series(after, 'gateway_balances_msats')).toBe(64_000 - charged - refundedSats * 1000);
    expect(series(after, 'gateway_reserved_msats')).toBe(0);
    expect(series(after, 'gateway_ledger_up')).toBe(1);
    expect(series(after, 'gateway_models')).toBe(3);
    // The ledger's own books say the same.
    const t = await gw.ledger.totals();
    expect(series(after, 'gateway_charged_msats_total')).toBe(t.charged);
    expect(series(after, 'gateway_credited_msats_total')).toBe(t.credited);

    // Two chat calls reached the upstream, each timed to its response headers.
    expect(delta('gateway_upstream_request_seconds_count', { upstream: upstream.url, op: 'post', path: '/chat/completions', status: '200' })).toBe(2);
    expect(delta('gateway_upstream_request_seconds_bucket', { upstream: upstream.url, op: 'post', path: '/chat/completions', status: '200', le: '+Inf' })).toBe(2);
    expect(delta('gateway_upstream_request_seconds_sum', { upstream: upstream.url, op: 'post', path: '/chat/completions', status: '200' })).toBeGreaterThan(0);
    // One swap redeemed the token; the refund and the withdrawal each made one more.
    const swaps = delta('gateway_mint_request_seconds_count', { mint: mintUrl, endpoint: 'POST /v1/swap', status: '200' });
    expect(swaps).toBeGreaterThanOrEqual(1);
    expect(swaps).toBeLessThanOrEqual(3);
    expect(series(after, 'gateway_internal_errors_total', { route: '/v1/chat/completions' })).toBe(0);
    // Node's process metrics come along.
    expect(series(after, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    await expectMoneyConserved(gw);
  });

  it('counts open streams while they run, and none once they end', async () => {
    const gw = await gateway();
    const token = await mintToken(mintUrl, 30);
    upstream.chunkDelayMs = 100;
    const res = await send(gw, bearer(token), { messages, stream: true });
    const reader = res.body!.getReader();
    await reader.read();
    expect(series(await scrape(gw.url), 'gateway_open_streams')).toBe(1);
    let text = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    expect(text).toContain('[DONE]');
    const after = await scrape(gw.url);
    expect(series(after, 'gateway_open_streams')).toBe(0);
    expect(series(after, 'gateway_http_requests_total', { method: 'POST', route: '/v1/chat/completions', model: 'gpt-test', status: '200' })).toBe(1);
    await expectMoneyConserved(gw);
  });

  it('asks for METRICS_TOKEN when one is set', async () => {
    const gw = await gateway({ METRICS_TOKEN: 'scrape-secret' });
    expect((await fetch(`${gw.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${gw.url}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    const ok = await scrape(gw.url, { authorization: 'Bearer scrape-secret' });
    expect(series(ok, 'gateway_ledger_up')).toBe(1);
  });
});

describe('/health and /ready', () => {
  it('is ready with a ledger and models', async () => {
    const gw = await gateway();
    const ready = await fetch(`${gw.url}/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', models: 3 });
    const health = await fetch(`${gw.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
  });

  it('is not ready without models, and says why: the upstream it cannot reach', async () => {
    // An upstream nobody listens on, and no configured models.
    const dead = `http://127.0.0.1:${await freePort()}/v1`;
    const gw = await gateway({ UPSTREAM_BASE_URL: dead, MODEL_PRICES: '{}' });
    const ready = await fetch(`${gw.url}/ready`);
    expect(ready.status).toBe(503);
    const body = (await ready.json()) as { status: string; reasons: string[] };
    expect(body.status).toBe('unavailable');
    expect(body.reasons).toHaveLength(1);
    // The cause, not the symptom: which upstream, and the setting that points at it.
    expect(body.reasons[0]).toBe(`upstream ${dead} is unreachable (connect ECONNREFUSED ${dead.slice(7, -3)}): start it, or set UPSTREAM_BASE_URL to a running OpenAI-compatible API (and UPSTREAM_API_KEY if it needs one)`);
    expect((await fetch(`${gw.url}/health`)).status).toBe(200);
    const m = await scrape(gw.url);
    expect(series(m, 'gateway_models')).toBe(0);
    // The failed model listing at start was timed too.
    expect(series(m, 'gateway_upstream_request_seconds_count', { upstream: dead, op: 'models', path: '/models', status: 'error' })).toBe(1);
  });

  it('is not ready when the ledger fails; the failures count as internal errors', async () => {
    const gw = await gateway();
    const token = await mintToken(mintUrl, 10);
    const paid = await chat(gw, { authorization: `Bearer ${token}` }, { max_tokens: 1 });
    expect(paid.status).toBe(200);
    const charged = paid.json.usage!.cost.total_msats;
    expect(series(await scrape(gw.url), 'gateway_charged_msats_total')).toBe(charged);
    await gw.ledger.close();
    const ready = await fetch(`${gw.url}/ready`);
    expect(ready.status).toBe(503);
    const body = (await ready.json()) as { reasons: string[] };
    expect(body.reasons).toHaveLength(1);
    expect(body.reasons[0]).toMatch(/^the ledger failed: /);
    expect((await fetch(`${gw.url}/health`)).status).toBe(200);

    const failed = await chat(gw, { authorization: `Bearer sk-${sha256(token)}` }, { max_tokens: 1 });
    expect(failed.status).toBe(500);
    expect(failed.json.error).toEqual({ message: 'Internal error.', type: 'api_error', code: 'internal_error' });
    const m = await scrape(gw.url);
    expect(series(m, 'gateway_ledger_up')).toBe(0);
    expect(series(m, 'gateway_internal_errors_total', { route: '/v1/chat/completions' })).toBe(1);
    // The ledger failed while the key was checked, from the headers, before the body (and its model) was read.
    expect(series(m, 'gateway_http_requests_total', { method: 'POST', route: '/v1/chat/completions', model: '', status: '500' })).toBe(1);
    // The money counters keep their last values rather than drop to 0 (which would read as a reset).
    expect(series(m, 'gateway_charged_msats_total')).toBe(charged);
    // The test's own close would close the ledger a second time; a closed ledger cannot be drained.
    started.splice(started.findIndex((s) => s.gw === gw), 1);
    gw.catalog.stop();
    await gw.app.close();
  });
});

describe('rate limits', () => {
  it('answers a burst over the per-IP limit with 429, Retry-After and an OpenAI error body', async () => {
    const gw = await gateway({ RATE_LIMIT_PER_MINUTE_IP: '5' });
    const statuses: number[] = [];
    let limited: Response | undefined;
    for (let i = 0; i < 7; i++) {
      const res = await fetch(`${gw.url}/v1/info`);
      statuses.push(res.status);
      if (res.status === 429) limited = res;
      else await res.arrayBuffer();
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
    // One request refills every 12 s at 5 a minute.
    const retry = Number(limited!.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(12);
    expect(await limited!.json()).toEqual({
      error: { message: expect.stringContaining('5 requests per minute'), type: 'rate_limit_error', code: 'rate_limit_exceeded' },
    });
    // Monitoring is never limited, and sees the 429s.
    expect((await fetch(`${gw.url}/health`)).status).toBe(200);
    expect((await fetch(`${gw.url}/ready`)).status).toBe(200);
    const m = await scrape(gw.url);
    expect(series(m, 'gateway_http_requests_total', { method: 'GET', route: '/v1/info', model: '', status: '429' })).toBe(2);
  });

  it('limits each API key, a Cashu token and its sk- key sharing one limit, and spends nothing when it refuses', async () => {
    const gw = await gateway({ RATE_LIMIT_PER_MINUTE_IP: '0', RATE_LIMIT_PER_MINUTE_KEY: '2' });
    const token = await mintToken(mintUrl, 20);
    const asToken = { authorization: `Bearer ${token}` };
    const asKey = { authorization: `Bearer sk-${sha256(token)}` };
    expect((await chat(gw, asToken, { max_tokens: 1 })).status).toBe(200);
    expect((await chat(gw, asKey, { max_tokens: 1 })).status).toBe(200);
    const third = await expectUntouched(gw, sha256(token), () => chat(gw, asToken, { max_tokens: 1 }));
    expect(third.status).toBe(429);
    expect(third.json.error!.code).toBe('rate_limit_exceeded');
    expect(third.json.error!.message).toContain('API key');
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Another payer is not affected.
    const other = await mintToken(mintUrl, 20);
    expect((await chat(gw, { 'x-cashu': other }, { max_tokens: 1 })).status).toBe(200);
    // A token refused at the limit is never redeemed: its key's limit was used up by sk- calls.
    const unused = await mintToken(mintUrl, 7);
    for (let i = 0; i < 2; i++) await fetch(`${gw.url}/v1/balance/info`, { headers: { authorization: `Bearer sk-${sha256(unused)}` } });
    expect((await chat(gw, { authorization: `Bearer ${unused}` })).status).toBe(429);
    expect((await proofStates(mintUrl, unused)).every((s) => s === 'UNSPENT')).toBe(true);
    expect(await gw.ledger.getKey(sha256(unused))).toBeUndefined();
    await expectMoneyConserved(gw);
  });

  it('tells clients apart by X-Forwarded-For only when TRUST_PROXY is set', async () => {
    const trusting = await gateway({ RATE_LIMIT_PER_MINUTE_IP: '1', TRUST_PROXY: 'true' });
    const from = (ip: string) => fetch(`${trusting.url}/v1/info`, { headers: { 'x-forwarded-for': ip } }).then((r) => r.status);
    expect([await from('203.0.113.1'), await from('203.0.113.2'), await from('203.0.113.1')]).toEqual([200, 200, 429]);
    const plain = await gateway({ RATE_LIMIT_PER_MINUTE_IP: '1' });
    const at = (ip: string) => fetch(`${plain.url}/v1/info`, { headers: { 'x-forwarded-for': ip } }).then((r) => r.status);
    expect([await at('203.0.113.1'), await at('203.0.113.2')]).toEqual([200, 429]);
  });
});

describe('request size and slow clients', () => {
  /** Sends raw bytes and returns everything the server answers until it closes the connection. */
  function raw(url: string, chunks: string[]): Promise<string> {
    const { port } = new URL(url);
    return new Promise((resolve, reject) => {
      const s = connect(Number(port), '127.0.0.1');
      let got = '';
      s.on('data', (d) => (got += d));
      s.on('close', () => resolve(got));
      s.on('error', reject);
      for (const c of chunks) s.write(c);
    });
  }

  it('admits a header as large as a many-proof token, refuses larger ones, and limits the body', async () => {
    const gw = await gateway({ BODY_LIMIT_BYTES: '4096' });
    const before = await gw.ledger.totals();
    // 48 KiB of token: not a valid one, but read in full and refused for what it is, not its size.
    const big = await chat(gw, { authorization: `Bearer cashuB${'A'.repeat(48 * 1024)}` });
    expect(big.status).toBe(400);
    expect(big.json.error!.code).toBe('invalid_cashu_token');
    const tooBig = await raw(gw.url, [`GET /v1/info HTTP/1.1\r\nhost: x\r\nx-pad: ${'A'.repeat(70 * 1024)}\r\n\r\n`]);
    expect(tooBig).toMatch(/^HTTP\/1\.1 431 /);
    const body = await chat(gw, {}, { messages: [{ role: 'user', content: 'x'.repeat(5000) }] });
    expect(body.status).toBe(413);
    expect(body.json.error!.code).toBe('request_too_large');
    expect(await gw.ledger.totals()).toEqual(before);
  });

  it('cuts off a client that sends its request too slowly, but never a long response', async () => {
    const gw = await gateway({ HEADERS_TIMEOUT_MS: '300', REQUEST_TIMEOUT_MS: '600' });
    // Headers that never end.
    const stalledHeaders = await raw(gw.url, ['GET /v1/info HTTP/1.1\r\nhost: x\r\n']);
    expect(stalledHeaders).toMatch(/^HTTP\/1\.1 408 /);
    // A body that never comes in full.
    const stalledBody = await raw(gw.url, ['POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"model":']);
    expect(stalledBody).toMatch(/^HTTP\/1\.1 408 /);

    // A stream that lasts several times REQUEST_TIMEOUT_MS runs to its end.
    const token = await mintToken(mintUrl, 30);
    upstream.chunkDelayMs = 250;
    const res = await send(gw, bearer(token), { messages, stream: true });
    const text = await res.text();
    expect(text).toContain('[DONE]');
    const words = text
      .split('\n\n')
      .filter((e) => e.startsWith('data: {'))
      .map((e) => (JSON.parse(e.slice(6)) as BilledChunk).choices[0]?.delta?.content ?? '')
      .join('');
    expect(words).toBe(REPLY_WORDS.join(' '));
    await expectMoneyConserved(gw);
  });
});
