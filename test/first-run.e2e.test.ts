import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Writable } from 'node:stream';
import { createHash } from 'node:crypto';
import { FakeUpstream } from './support/upstream.ts';
import { PRICES, expectDrained, expectMoneyConserved, startGateway, type Gateway } from './support/gateway.ts';
import { useGateway } from './support/suite.ts';
import { mintToken, proofStates } from './support/cashu.ts';
import { freePort } from './support/ports.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { createLogger } from '../src/log.ts';
import type { Billed } from './support/wire.ts';

const mintUrl = inject('mintUrl');
const UPSTREAM_KEY = 'sk-upstream-very-secret-key-1234';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** A line of the gateway's log, as far as these tests read it. */
interface LogLine {
  level: number;
  msg: string;
  route?: string;
  msats?: number;
  ms?: number;
  reqId?: string;
  payment?: string;
  [field: string]: unknown;
}

/** The gateway's log as an operator's collector gets it: JSON lines, redacted, at info. */
function captured() {
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      raw.push(String(chunk));
      done();
    },
  });
  const lines = () => raw.map((l) => JSON.parse(l) as LogLine);
  return { log: createLogger('info', sink), raw, lines };
}

async function chat(url: string, headers: Record<string, string>, body: Record<string, unknown> = {}, path = '/v1/chat/completions') {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'hello there' }], max_tokens: 5, ...body }),
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

describe('the operator log: a line per request, credits and refunds, never a secret', () => {
  const upstream = new FakeUpstream();
  const out = captured();
  const s = useGateway({ upstream, env: { LOG_LEVEL: 'info', UPSTREAM_API_KEY: UPSTREAM_KEY }, log: out.log });

  it('logs what paid requests, a credit, a stream, an X-Cashu payment and a refund did', async () => {
    const token = await mintToken(mintUrl, 50);
    const paid = await chat(s.gw.url, { authorization: `Bearer ${token}` });
    expect(paid.status).toBe(200);
    const charged = (JSON.parse(paid.text) as Billed).usage.cost.total_msats;
    const key = `sk-${sha256(token)}`;
    const streamed = await chat(s.gw.url, { authorization: `Bearer ${key}` }, { stream: true });
    expect(streamed.status).toBe(200);
    const oneShot = await mintToken(mintUrl, 20);
    const x = await chat(s.gw.url, { 'x-cashu': oneShot });
    expect(x.status).toBe(200);
    const refund = await fetch(`${s.gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${key}` } });
    expect(refund.status).toBe(200);
    const refundToken = ((await refund.json()) as { token: string }).token;
    expect((await chat(s.gw.url, {})).status).toBe(402);

    const lines = out.lines();
    const requests = lines.filter((l) => l.msg === 'request' && l.route === '/v1/chat/completions');
    expect(requests).toHaveLength(4);
    expect(requests[3]).toMatchObject({ status: 402, payment: 'none' });
    expect(requests[3]!.msats).toBeUndefined();
    expect(requests[0]).toMatchObject({ level: 30, method: 'POST', status: 200, model: 'gpt-test', msats: charged, payment: 'token', key: sha256(token).slice(0, 8) });
    expect(requests[1]).toMatchObject({ status: 200, model: 'gpt-test', payment: 'key', key: sha256(token).slice(0, 8) });
    expect(requests[1]!.msats).toBeGreaterThan(0);
    expect(requests[2]).toMatchObject({ status: 200, payment: 'x-cashu', key: sha256(oneShot).slice(0, 8) });
    for (const r of requests) {
      expect(typeof r.reqId).toBe('string');
      expect(r.ms).toBeGreaterThanOrEqual(0);
    }
    expect(lines.filter((l) => l.msg === 'credited a token').map((l) => l.msats)).toEqual([50_000, 20_000]);
    expect(lines.find((l) => l.msg === 'paid change')).toMatchObject({ unit: 'sat', key: sha256(oneShot).slice(0, 8) });
    expect(lines.find((l) => l.msg === 'refunded a balance')).toMatchObject({ mint: mintUrl, unit: 'sat', key: sha256(token).slice(0, 8) });
    const refunded = lines.find((l) => l.msg === 'request' && l.route === '/v1/balance/refund')!;
    expect(refunded).toMatchObject({ method: 'POST', status: 200 });
    expect(refunded.payment).toBeUndefined();

    const all = out.raw.join('');
    for (const secret of [token, oneShot, refundToken, sha256(token), sha256(oneShot), UPSTREAM_KEY, x.headers.get('x-cashu')!]) {
      expect(all).not.toContain(secret);
    }
  });

  it('turns request lines off with LOG_REQUESTS=false, credits still logged', async () => {
    const quiet = captured();
    const other = await startGateway(mintUrl, upstream, { LOG_LEVEL: 'info', LOG_REQUESTS: 'false' }, { log: quiet.log });
    try {
      const token = await mintToken(mintUrl, 10);
      expect((await chat(other.url, { authorization: `Bearer ${token}` })).status).toBe(200);
      expect(quiet.lines().filter((l) => l.msg === 'request')).toEqual([]);
      expect(quiet.lines().filter((l) => l.msg === 'credited a token')).toHaveLength(1);
      await expectDrained(other, { prices: PRICES });
    } finally {
      await other.close();
    }
  });

  it('answers routes with a trailing slash as without, as Routstr does', async () => {
    for (const path of ['/v1/models/', '/v1/info/', '/health/', '/v1/models']) {
      const res = await fetch(`${s.gw.url}${path}`);
      expect(res.status, path).toBe(200);
      await res.body?.cancel();
    }
    const token = await mintToken(mintUrl, 10);
    expect((await chat(s.gw.url, { authorization: `Bearer ${token}` }, {}, '/v1/chat/completions/')).status).toBe(200);
    const info = await fetch(`${s.gw.url}/v1/balance/info/`, { headers: { authorization: `Bearer ${token}` } });
    expect(info.status).toBe(200);
    await info.body?.cancel();
  });
});

describe('an upstream that is down at start-up', () => {
  const upstream = new FakeUpstream();
  const out = captured();
  let gw: Gateway;
  let port: number;
  beforeAll(async () => {
    port = await freePort();
    // Nothing listens there yet: the Ollama a fresh clone points at, not installed.
    gw = await startGateway(mintUrl, upstream, { LOG_LEVEL: 'info', UPSTREAM_BASE_URL: `http://127.0.0.1:${port}/v1`, MODEL_PRICES: '{}' }, { log: out.log });
  });
  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
  });

  it('says which upstream is unreachable and what to set, in the log and on /ready', async () => {
    const expected = `upstream http://127.0.0.1:${port}/v1 is unreachable (connect ECONNREFUSED 127.0.0.1:${port}): start it, or set UPSTREAM_BASE_URL to a running OpenAI-compatible API (and UPSTREAM_API_KEY if it needs one)`;
    const warned = out.lines().filter((l) => l.level === 40 && l.msg === expected);
    expect(warned).toHaveLength(1);
    const ready = await fetch(`${gw.url}/ready`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { reasons: string[] }).reasons).toEqual([expected]);
  });

  it('answers a chat for a model it cannot know with model_not_found that says why, charging nothing', async () => {
    const token = await mintToken(mintUrl, 10);
    const r = await chat(gw.url, { authorization: `Bearer ${token}` });
    expect(r.status).toBe(404);
    expect(JSON.parse(r.text)).toEqual({
      error: {
        code: 'model_not_found',
        type: 'not_found_error',
        reason: 'upstream_unreachable',
        message: "The model 'gpt-test' is not served here now: the gateway cannot reach the upstream, so the models there are unknown. GET /ready names what to fix.",
      },
    });
    // Neither the upstream's address nor the setting leaks to clients; the token is untouched.
    expect(r.text).not.toContain(String(port));
    expect(await proofStates(mintUrl, token)).toEqual(['UNSPENT', 'UNSPENT']);
    await expectMoneyConserved(gw);
  });

  it('logs the recovery once the upstream answers, and is ready', async () => {
    await upstream.start(port);
    await gw.catalog.refresh();
    expect(out.lines().filter((l) => l.msg === 'upstream reachable again')).toEqual([expect.objectContaining({ level: 30, url: `http://127.0.0.1:${port}/v1`, models: 3 })]);
    const ready = await fetch(`${gw.url}/ready`);
    expect(await ready.json()).toEqual({ status: 'ready', models: 3 });
  });
});

describe('a mint that goes away and comes back', () => {
  it('is logged once when it goes, once when it is back; the requests in between are refused unspent', async () => {
    const upstream = new FakeUpstream();
    await upstream.start();
    const proxy = new CountingProxy(mintUrl);
    await proxy.start();
    const out = captured();
    const gw = await startGateway(mintUrl, upstream, { LOG_LEVEL: 'info', CASHU_MINT_ALIASES: `${mintUrl}=${proxy.url}` }, { log: out.log });
    try {
      expect((await chat(gw.url, { authorization: `Bearer ${await mintToken(mintUrl, 10)}` })).status).toBe(200);
      await proxy.stop();
      const refused = [await mintToken(mintUrl, 10), await mintToken(mintUrl, 10)];
      for (const t of refused) {
        const r = await chat(gw.url, { authorization: `Bearer ${t}` });
        expect(r.status).toBe(503);
        expect(JSON.parse(r.text).error.code).toBe('cashu_mint_unreachable');
        expect(await proofStates(mintUrl, t)).toEqual(['UNSPENT', 'UNSPENT']);
      }
      await proxy.start(Number(new URL(proxy.url).port));
      expect((await chat(gw.url, { authorization: `Bearer ${await mintToken(mintUrl, 10)}` })).status).toBe(200);
      const events = out.lines().filter((l) => l.msg === 'mint unreachable' || l.msg === 'mint reachable again');
      expect(events.map((l) => [l.level, l.msg, l.mint])).toEqual([
        [40, 'mint unreachable', mintUrl],
        [30, 'mint reachable again', mintUrl],
      ]);
      await expectDrained(gw, { prices: PRICES });
    } finally {
      await gw.close();
      await proxy.stop();
      await upstream.stop();
    }
  });
});

describe('starting the gateway', () => {
  it('on a port already taken says so in one line with the fix, no stack trace', async () => {
    const port = await freePort();
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(port, '127.0.0.1', r));
    try {
      const proc = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', resolve('src/main.ts')], {
        env: { PATH: process.env.PATH, HOST: '127.0.0.1', PORT: String(port), DATABASE_URL: ':memory:', CASHU_MINTS: mintUrl, LOG_LEVEL: 'error', MODELS: 'm' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      let stdout = '';
      proc.stderr.on('data', (d) => (stderr += d));
      proc.stdout.on('data', (d) => (stdout += d));
      const code = await new Promise<number | null>((r) => proc.once('exit', r));
      expect(code).toBe(2);
      expect(stderr).toBe(`listen: 127.0.0.1:${port} is already in use: stop the other process there, or set PORT to a free port\n`);
      expect(stdout).not.toMatch(/\bat .*:\d+:\d+/);
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });

  it('`cashu-gateway --help` is ours through the package bin, with no build needed', () => {
    const bin = (JSON.parse(readFileSync('package.json', 'utf8')) as { bin: Record<string, string> }).bin['cashu-gateway']!;
    const run = (...args: string[]) => spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', resolve(bin), ...args], { encoding: 'utf8' });
    const help = run('--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^cashu-gateway \d+\.\d+\.\d+: an OpenAI-compatible AI gateway paid with Cashu ecash\n/);
    const sub = run('help', 'doctor');
    expect(sub.status).toBe(0);
    expect(sub.stdout).toMatch(/^Usage: cashu-gateway doctor\n/);
  });
});
