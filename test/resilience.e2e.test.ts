import { describe, expect, inject, it } from 'vitest';
import OpenAI from 'openai';
import { FakeUpstream, REPLY_WORDS } from './support/upstream.ts';
import { PRICES, expectDrained, msats, startGateway, durableDatabaseUrl } from './support/gateway.ts';
import { mintToken, proofStates, receive } from './support/cashu.ts';
import { startMint, startMintAgain, type RunningMint } from './support/mint.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import { bearer, chat as send, expectDatabaseDrained, leaveMidStream, useGateway, waitFor } from './support/suite.ts';
import type { Billed, ModelList, WireError } from './support/wire.ts';

const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
let second: RunningMint;
const s = useGateway({
  upstream,
  before: async () => (second = await startMint()),
  env: () => ({ CASHU_MINTS: `${mintUrl},${second.url}`, MINT_TIMEOUT_MS: '3000' }),
  reset: () => (upstream.modes.length = 0),
  after: async () => second?.stop(),
});

const messages = [{ role: 'user' as const, content: 'Tell me a story.' }];

/** What GET /v1/balance/info says of a key, as far as these tests read it. */
interface KeyInfo {
  balance: number;
  reserved: number;
}

async function info(apiKey: string) {
  const res = await fetch(`${s.gw.url}/v1/balance/info`, { headers: { authorization: `Bearer ${apiKey}` } });
  return (await res.json()) as KeyInfo;
}

async function chat(headers: Record<string, string>, body: Record<string, unknown> = {}) {
  const res = await send(s.gw, headers, { messages, ...body });
  return { status: res.status, headers: res.headers, text: await res.text() };
}


describe('the mint is unreachable', () => {
  it('answers 503 with Retry-After, leaves the token spendable, and redeems it once the mint is back', async () => {
    // Load the gateway's wallet for the second mint first, so the failure hits the swap itself.
    const warm = await mintToken(second.url, 5);
    expect((await chat({ authorization: `Bearer ${warm}` }, { max_tokens: 1 })).status).toBe(200);

    const token = await mintToken(second.url, 20);
    const before = await s.gw.ledger.totals();
    await second.stop();
    for (const headers of [{ authorization: `Bearer ${token}` }, { 'x-cashu': token }] as Record<string, string>[]) {
      const res = await chat(headers, { max_tokens: 1 });
      expect(res.status).toBe(503);
      expect(JSON.parse(res.text).error.code).toBe('cashu_mint_unreachable');
      expect(res.headers.get('retry-after')).toBeTruthy();
    }
    expect(await s.gw.ledger.totals()).toEqual(before);

    second = await startMintAgain(second);
    expect(await proofStates(second.url, token)).toEqual(['UNSPENT', 'UNSPENT']);
    const ok = await chat({ authorization: `Bearer ${token}` }, { max_tokens: 1 });
    expect(ok.status).toBe(200);
    const cost = JSON.parse(ok.text).usage.cost.total_msats as number;
    expect((await info(token)).balance).toBe(20_000 - cost);
    expect((await s.gw.ledger.totals()).credited - before.credited).toBe(20_000);
  });
});

describe('the mint is slow', () => {
  it('never gives up a swap that may still land: the token is credited once when it does', async () => {
    const { CountingProxy } = await import('./support/counting-proxy.ts');
    const proxy = new CountingProxy(mintUrl);
    const slowMint = await proxy.start();
    const slow = await startGateway(slowMint, upstream, { MINT_TIMEOUT_MS: '500' });
    try {
      const warm = await mintToken(slowMint, 5);
      const call = (t: string) => send(slow, bearer(t), { messages, max_tokens: 1 });
      expect((await call(warm)).status).toBe(200);

      const token = await mintToken(slowMint, 20);
      proxy.delays.set('/v1/swap', 1_500);
      const first = await call(token);
      expect(first.status).toBe(503);
      expect(Number(first.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      // The held swap reaches the mint after the gateway timed out: the mint spends the token.
      await waitFor(async () => (await proofStates(mintUrl, token)).every((s) => s === 'SPENT'), 'the held swap reaching the mint');
      proxy.delays.clear();
      // Until the lease runs out the swap is presumed still in hand (503, nothing credited); past
      // it, the next use recovers the signatures (NUT-09) and credits the token, once.
      const hash = sha256Hex(token);
      const again = await waitFor(async () => {
        const r = await call(token);
        if (r.status === 200) return r;
        expect([r.status, await slow.ledger.getKey(hash)]).toEqual([503, undefined]);
        return undefined;
      }, 'the swap recovered past its lease');
      const cost = ((await again.json()) as Billed).usage.cost.total_msats;
      expect((await slow.ledger.getKey(sha256Hex(token)))!.balance).toBe(20_000 - cost);
      await expectDrained(slow, { prices: PRICES });
    } finally {
      await slow.close();
      await proxy.stop();
    }
  });
});

describe('streams that end early', () => {
  it('bills a client that disconnects for what it was sent, and stops the upstream', async () => {
    const token = await mintToken(mintUrl, 100);
    const oa = new OpenAI({ baseURL: `${s.gw.url}/v1`, apiKey: token, maxRetries: 0 });
    await oa.chat.completions.create({ model: 'gpt-test', messages, max_tokens: 1 });
    const start = (await info(token)).balance;

    upstream.modes.push('slow');
    await leaveMidStream((signal) => oa.chat.completions.create({ model: 'gpt-test', messages, stream: true }, { signal }));
    // The request settles once the upstream is stopped: wait for that state, not for a time.
    const after = await waitFor(async () => {
      const i = await info(token);
      return upstream.closedEarly === 1 && i.reserved === 0 && i;
    }, 'the left stream settling');
    expect(upstream.closedEarly).toBe(1);
    expect(after.reserved).toBe(0);
    const charged = start - after.balance;
    // "Tell me a story." is 5 tokens (Tell, ␣me, ␣a, ␣story, .), plus 3 for the message and 3 for
    // the reply's priming: 11 prompt tokens at 2 msats. Each word the double wrote is one token at
    // 5 msats. The gateway bills what reached it: at least the three words the client read, at
    // most every word the double wrote (those still on their way when the upstream was stopped,
    // more of them on a busy machine, never reached it). Never the rest of the reply.
    const written = upstream.wordsWritten;
    expect(written).toBeGreaterThanOrEqual(3);
    expect(written).toBeLessThan(REPLY_WORDS.length);
    const words = (charged - msats(11, 2)) / 5;
    expect(Number.isInteger(words) && words >= 3 && words <= written).toBe(true);
  });

  it('charges what was sent when the upstream cuts a stream, and gives an X-Cashu payer the rest in the stream', async () => {
    const token = await mintToken(mintUrl, 30);
    await chat({ authorization: `Bearer ${token}` }, { max_tokens: 1 });
    const before = await info(token);
    upstream.modes.push('cut');
    const res = await chat({ authorization: `Bearer ${token}` }, { stream: true });
    expect(res.status).toBe(200);
    expect(res.text).toContain('"code":"upstream_error"');
    expect(res.text).not.toContain('[DONE]');
    // The 11 prompt tokens at 2 msats and the three words the client got at 5 (as above).
    const after = await info(token);
    expect([after.balance, after.reserved]).toEqual([before.balance - msats(11, 2) - msats(3, 5), 0]);

    const x = await mintToken(mintUrl, 30);
    upstream.modes.push('cut');
    const xr = await chat({ 'x-cashu': x }, { stream: true });
    const errorEvent = xr.text.split('\n\n').find((e) => e.includes('"error"'))!;
    const refund = JSON.parse(errorEvent.replace(/^data: /, '')).error.refund_token as string;
    // 37 msats charged of 30 sats: 29 whole sats back, 963 msats left on the key.
    expect(await receive(mintUrl, refund)).toBe(29);
  });
});

describe('the database loses an answer', () => {
  it("a request whose settle committed, its answer lost on the way back, completes: charged once, the X-Cashu payer's change paid", async () => {
    // SQLite commits in this process: its answer is never lost on the way.
    if (process.env.TEST_LEDGER !== 'postgres') return;
    const { PostgresProxy } = await import('./support/pg-proxy.ts');
    const proxy = new PostgresProxy(await durableDatabaseUrl());
    const gw = await startGateway(mintUrl, upstream, { DATABASE_URL: await proxy.start() });
    try {
      const x = await mintToken(mintUrl, 20);
      const before = await gw.ledger.totals();
      // The settle's own statement (its text goes with it the first time a connection prepares it).
      proxy.lose('AS held, k.balance, k.reserved, LEAST');
      const res = await send(gw, { 'x-cashu': x }, { messages, max_tokens: 2 });
      const body = (await res.json()) as Billed & WireError;
      expect(proxy.broken).toEqual(['lost']);
      const u = upstream.reported.at(-1) as { prompt_tokens: number; completion_tokens: number };
      const cost = msats(u.prompt_tokens, PRICES['gpt-test'].prompt) + msats(u.completion_tokens, PRICES['gpt-test'].completion);
      const after = await gw.ledger.totals();
      const key = (await gw.ledger.getKey(sha256Hex(x)))!;
      const change = res.headers.get('x-cashu');
      // The answer, what was charged, and where the rest went: to the payer, not left on the key.
      expect([res.status, body.error?.code, after.charged - before.charged, after.reserved, key.balance, key.totalSpent, change !== null])
        .toEqual([200, undefined, cost, 0, (20_000 - cost) % 1000, cost, true]);
      expect(body.usage.cost.total_msats).toBe(cost);
      expect(await receive(mintUrl, change!)).toBe(Math.floor((20_000 - cost) / 1000));
      expect(after.credited - before.credited).toBe(20_000);
      await expectDrained(gw, { prices: PRICES });
    } finally {
      await gw.close();
      await proxy.stop();
    }
  });
});

describe('the upstream fails', () => {
  it('releases everything when the upstream times out or refuses the connection', async () => {
    const token = await mintToken(mintUrl, 20);
    await chat({ authorization: `Bearer ${token}` }, { max_tokens: 1 });
    const before = await info(token);

    // A whole answer's headers come once it is made: it waits as long as a body may be silent.
    const slow = await startGateway(mintUrl, upstream, { UPSTREAM_HEADERS_TIMEOUT_MS: '300', UPSTREAM_BODY_TIMEOUT_MS: '300' });
    try {
      upstream.modes.push('stall');
      const x = await mintToken(mintUrl, 20);
      const res = await send(slow, { 'x-cashu': x }, { messages, max_tokens: 2 });
      const json = (await res.json()) as WireError & { error: { refund_token: string } };
      expect([res.status, json.error.code]).toEqual([502, 'upstream_error']);
      expect(await receive(mintUrl, json.error.refund_token)).toBe(20);
      await expectDrained(slow, { prices: PRICES });
    } finally {
      await slow.close();
    }

    const { freePort } = await import('./support/ports.ts');
    const closed = `http://127.0.0.1:${await freePort()}/v1`;
    const refused = await startGateway(mintUrl, upstream, { UPSTREAM_BASE_URL: closed, MODELS: 'gpt-test' });
    try {
      const own = await mintToken(mintUrl, 20);
      const res = await send(refused, bearer(own), { messages, max_tokens: 2 });
      expect(res.status).toBe(502);
      const key = (await refused.ledger.getKey(sha256Hex(own)))!;
      expect([key.balance, key.reserved]).toEqual([20_000, 0]);
      await expectDrained(refused, { prices: PRICES });
    } finally {
      await refused.close();
    }
    const after = await info(token);
    expect([after.balance, after.reserved]).toEqual([before.balance, 0]);
  });

  it('waits for a whole answer longer than UPSTREAM_HEADERS_TIMEOUT_MS, and bills it to the msat', async () => {
    // The headers of a whole answer come only once it is all made (a long reasoning answer, a
    // large n): the wait meant to find a dead stream would throw away work the upstream bills.
    const patient = await startGateway(mintUrl, upstream, { UPSTREAM_HEADERS_TIMEOUT_MS: '300' });
    upstream.answerDelayMs = 1500;
    try {
      const token = await mintToken(mintUrl, 20);
      const res = await send(patient, bearer(token), { messages, max_tokens: 4 });
      const body = (await res.json()) as Billed & { choices: Array<{ message: { content: string } }> };
      expect(res.status).toBe(200);
      expect(body.choices[0]!.message.content).toBe(REPLY_WORDS.slice(0, 4).join(' '));
      const u = upstream.reported.at(-1) as { prompt_tokens: number; completion_tokens: number };
      const cost = msats(u.prompt_tokens, PRICES['gpt-test'].prompt) + msats(u.completion_tokens, PRICES['gpt-test'].completion);
      expect(body.usage.cost.total_msats).toBe(cost);
      const key = (await patient.ledger.getKey(sha256Hex(token)))!;
      expect([key.balance, key.reserved, key.totalSpent]).toEqual([20_000 - cost, 0, cost]);
      await expectDrained(patient, { prices: PRICES });
    } finally {
      upstream.answerDelayMs = 0;
      await patient.close();
    }
  });

  it('sends a request once more when the upstream drops the connection unanswered, and only once', async () => {
    const token = await mintToken(mintUrl, 20);
    await chat({ authorization: `Bearer ${token}` }, { max_tokens: 1 });
    const before = await info(token);
    const served = upstream.requests.length;

    upstream.modes.push('drop');
    const retried = await chat({ authorization: `Bearer ${token}` }, { max_tokens: 2 });
    expect(retried.status).toBe(200);
    const cost = JSON.parse(retried.text).usage.cost.total_msats as number;
    expect(upstream.requests.length - served).toBe(1);
    expect((await info(token)).balance).toBe(before.balance - cost);

    // Dropped twice: not a stale connection but a failing upstream. 502, and nothing charged.
    const dropsBefore = upstream.dropped;
    upstream.modes.push('drop', 'drop');
    const failed = await chat({ authorization: `Bearer ${token}` }, { max_tokens: 2 });
    expect([failed.status, JSON.parse(failed.text).error.code]).toEqual([502, 'upstream_error']);
    expect(upstream.dropped - dropsBefore).toBe(2);
    const after = await info(token);
    expect([after.balance, after.reserved]).toEqual([before.balance - cost, 0]);
  });

  it('keeps a long stream reserved until it ends: a refund meanwhile is told to wait', async () => {
    const token = await mintToken(mintUrl, 50);
    upstream.modes.push('slow');
    const pending = chat({ authorization: `Bearer ${token}` }, { stream: true });
    // The token is swapped, then the stream reserved: wait for that, not for a fixed time.
    for (const until = Date.now() + 10_000; (await info(token)).reserved === 0; ) {
      if (Date.now() > until) throw new Error('the stream never started');
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await info(token)).reserved).toBeGreaterThan(0);
    const early = await fetch(`${s.gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(early.status).toBe(425);
    expect(early.headers.get('retry-after')).toBe('2');
    const done = await pending;
    expect(done.text).toContain('[DONE]');
    const cost = JSON.parse(done.text.split('\n\n').filter((e) => e.includes('"cost"'))[0]!.slice(6)).usage.cost.total_msats as number;
    expect(await info(token)).toMatchObject({ balance: 50_000 - cost, reserved: 0 });
  });
});

describe('the README start command', () => {
  it('starts the gateway with npm start, serves paid requests, and never logs a token or key', async () => {
    const { spawn } = await import('node:child_process');
    const { freePort } = await import('./support/ports.ts');
    const port = await freePort();
    // A database that outlives the process, so what it took in is drained once it has stopped.
    const db = await durableDatabaseUrl();
    const proc = spawn('npm', ['start', '--silent'], {
      env: {
        ...process.env, PORT: String(port), HOST: '127.0.0.1', UPSTREAM_BASE_URL: upstream.url, CASHU_MINTS: mintUrl, DATABASE_URL: db,
        MODEL_PRICES: JSON.stringify(PRICES), LOG_LEVEL: 'trace', UPSTREAM_API_KEY: 'sk-upstream-secret',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: npm runs the gateway as a child, which must stop with it.
      detached: true,
    });
    const exited = new Promise((r) => proc.once('exit', r));
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (out += d));
    try {
      // npm start compiles first: on a busy machine that alone can take a while.
      for (const until = Date.now() + 60_000; !out.includes('gateway ready') && Date.now() < until; ) await new Promise((r) => setTimeout(r, 100));
      expect(out).toContain('gateway ready');
      const infoRes = (await (await fetch(`http://127.0.0.1:${port}/v1/info`)).json()) as { mints: string[] };
      expect(infoRes.mints).toEqual([mintUrl]);
      const models = (await (await fetch(`http://127.0.0.1:${port}/v1/models`)).json()) as ModelList;
      expect(models.data.map((m) => m.id)).toContain('gpt-test');
      expect(models.data.every((m) => m.sats_pricing.prompt > 0 && m.sats_pricing.completion > 0)).toBe(true);

      const base = `http://127.0.0.1:${port}/v1`;
      const bearer = await mintToken(mintUrl, 10);
      const x = await mintToken(mintUrl, 10);
      const call = (headers: Record<string, string>, model = 'gpt-test') =>
        fetch(`${base}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: JSON.stringify({ model, messages, max_tokens: 2 }),
        });
      expect((await call({ authorization: `Bearer ${bearer}` })).status).toBe(200);
      const paid = await call({ 'x-cashu': x });
      expect(paid.status).toBe(200);
      const change = paid.headers.get('x-cashu')!;
      expect((await call({ authorization: `Bearer ${bearer}` }, 'missing')).status).toBe(404);
      expect((await call({ authorization: 'Bearer cashuBbroken' })).status).toBe(400);
      upstream.modes.push('fail_500');
      expect((await call({ authorization: `Bearer ${bearer}` })).status).toBe(502);
      // A header too large for the server: Node's parse error carries the raw request bytes.
      const { request } = await import('node:http');
      await new Promise<void>((done) => {
        const r = request(`${base}/chat/completions`, { method: 'POST', headers: { authorization: `Bearer cashuBsecretmarker${'A'.repeat(70_000)}` } });
        r.on('response', (res) => {
          expect(res.statusCode).toBe(431);
          res.resume().on('end', done);
        });
        r.on('error', () => done());
        r.end();
      });
      const refund = await fetch(`${base}/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${bearer}` } });
      const refundToken = ((await refund.json()) as { token: string }).token;
      // A last request whose line names a model of its own: once it is out, every line before it is.
      const sentinel = `sentinel-${Date.now()}`;
      await call({}, sentinel);
      await waitFor(() => out.includes(sentinel), 'the sentinel request in the log');
      for (const secret of [bearer, x, change, refundToken, 'sk-upstream-secret', bearer.slice(6, 40)]) {
        expect(out).not.toContain(secret);
      }
      expect(out).not.toMatch(/cashu[AB][A-Za-z0-9_-]{20}/);
      expect(out).not.toContain('secretmarker');
      expect(out).not.toContain('rawPacket');
    } finally {
      process.kill(-proc.pid!, 'SIGTERM');
      await exited;
    }
    // npm may exit before the gateway it started: the group is empty once that has stopped too.
    const groupAlive = () => {
      try {
        process.kill(-proc.pid!, 0);
        return true;
      } catch {
        return false;
      }
    };
    await waitFor(() => !groupAlive(), 'the gateway process stopped');
    await expectDatabaseDrained(mintUrl, { DATABASE_URL: db });
  }, 120_000);
});
