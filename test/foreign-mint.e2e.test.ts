import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createServer, type Server } from 'node:http';
import { PRICES, expectDrained, expectLedgerConserved, startGateway } from './support/gateway.ts';
import { chat, useGateway, waitFor } from './support/suite.ts';
import { mintToken, proofStates, receive, relabel, tokenValue, wallet } from './support/cashu.ts';
import { startMint, type RunningMint } from './support/mint.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { processEnv, startGatewayProcess, type GatewayProcess } from './support/process.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import { openLedger } from '../src/main.ts';
import type { Ledger } from '../src/ledger/ledger.ts';
import type { CrashStep } from '../src/cashu/crash.ts';
import type { Billed, WireError } from './support/wire.ts';

// Two nutshell mints on loopback: the suite's (trusted) and a second one the gateway does not trust.
let foreign: RunningMint;
/** The untrusted mint behind a proxy that can hold a path back: a slow mint, or a lost answer. */
let proxy: CountingProxy;
vi.setConfig({ testTimeout: 60_000 });

const PEERS = { ALLOW_INSECURE_PEERS_FOR_TESTS_ONLY: 'true', PEER_TIMEOUT_MS: '1000', PEER_MAX_BYTES: '20000' };
const SWAP = { ...PEERS, FOREIGN_MINTS: 'swap', PEER_FAILURE_COOLDOWN_SECONDS: '60' };

// The gateway trusts the suite's mint alone: everything the drain at the end takes out is
// redeemed there (a swap's unused fee reserve stays at the foreign mint, as the melt's own fee).
const suite = useGateway({
  env: SWAP,
  before: async () => {
    // Its own key: the same keysets at both mints would let either mistake the other's proofs for its own.
    foreign = await startMint({ env: { MINT_PRIVATE_KEY: 'FOREIGN_TEST_PRIVATE_KEY' } });
    proxy = new CountingProxy(foreign.url);
    await proxy.start();
  },
  reset: () => proxy.delays.clear(),
  after: async () => {
    await proxy?.stop();
    await foreign?.stop();
  },
});
const { mintUrl, upstream } = suite;

/** The answers read below: a key credited (made or topped up), its refund, or the door's error. */
interface Credited {
  api_key: string;
  balance: number;
  foreign_mint_fee_msats: number;
  token: string;
}

async function post<T = Credited>(path: string, body: unknown, headers: Record<string, string> = {}, g: { url: string } = suite.gw) {
  const res = await fetch(`${g.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, json: (await res.json()) as T };
}

/** A token of the untrusted mint, naming it at `as` (by default the proxy in front of it). */
async function foreignToken(sats: number, as = proxy.url): Promise<string> {
  const t = await mintToken(foreign.url, sats);
  return as === foreign.url ? t : relabel(foreign.url, t, { mint: as });
}

/** The states the untrusted mint itself gives the token's proofs (NUT-07), each state once. */
const foreignStates = async (token: string) => [...new Set(await proofStates(foreign.url, await relabel(foreign.url, token, { mint: foreign.url })))];

/** A loopback server answering every request with `answer`. */
async function hostile(answer: (res: import('node:http').ServerResponse) => void): Promise<{ url: string; hits: () => number; stop: () => Promise<void> }> {
  let hits = 0;
  const server: Server = createServer((req, res) => {
    hits++;
    req.resume();
    answer(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return { url, hits: () => hits, stop: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

describe('a token from another mint, swapped over Lightning (FOREIGN_MINTS=swap)', () => {
  it('is melted at its own mint to pay a mint quote at the trusted one; the fee is shown and the key holds the rest', async () => {
    const token = await foreignToken(100);
    const before = await suite.gw.ledger.totals();
    const r = await post('/v1/balance/create', { initial_balance_token: token });
    expect(r.status).toBe(200);
    // nutshell reserves max(2 sats, 1 %) for a Lightning payment: 98 sats are minted here, 2 pay the foreign mint.
    expect(r.json).toMatchObject({ balance: 98_000, foreign_mint_fee_msats: 2000 });
    expect(r.json.api_key).toBe(`sk-${sha256Hex(token)}`);
    expect(await foreignStates(token)).toEqual(['SPENT']);
    const after = await suite.gw.ledger.totals();
    expect(after.credited - before.credited).toBe(98_000);
    // The melt quote at the foreign mint is paid, and the op that journaled it is done.
    const op = (await suite.gw.ledger.getOp((await suite.gw.ledger.getToken(sha256Hex(token)))!.opId))!;
    expect([op.kind, op.state, op.mint]).toEqual(['foreign', 'done', mintUrl]);
    const journal = (op.outputs as Array<{ meltQuote: string; mintQuote: string }>)[0]!;
    expect((await (await wallet(foreign.url)).checkMeltQuoteBolt11(journal.meltQuote)).state).toBe('PAID');
    expect((await (await wallet(mintUrl)).checkMintQuoteBolt11(journal.mintQuote)).state).toBe('ISSUED');

    // The same token again is the same key: no second swap, not even a call to its mint.
    proxy.reset();
    const again = await post('/v1/balance/create', { initial_balance_token: token });
    expect([again.status, again.json.api_key, again.json.balance]).toEqual([200, r.json.api_key, 98_000]);
    expect(proxy.calls).toEqual([]);
    expect(await suite.gw.ledger.totals()).toEqual(after);

    // What the key holds is the trusted mint's ecash: its refund is redeemable there.
    const refund = await post('/v1/balance/refund', {}, { authorization: `Bearer ${r.json.api_key}` });
    expect(refund.status).toBe(200);
    expect(await receive(mintUrl, refund.json.token)).toBe(98);
  });

  it('presented twice at once: one swap, one credit, the same key for both', async () => {
    const token = await foreignToken(20);
    const before = await suite.gw.ledger.totals();
    proxy.reset();
    const [a, b] = await Promise.all([0, 1].map(() => post('/v1/balance/create', { initial_balance_token: token })));
    expect([a!.status, b!.status, a!.json.api_key, a!.json.balance]).toEqual([200, 200, b!.json.api_key, 18_000]);
    expect(proxy.calls.filter((c) => c === 'POST /v1/melt/bolt11')).toHaveLength(1);
    expect((await suite.gw.ledger.totals()).credited - before.credited).toBe(18_000);
  });

  it('tops up a key, saying what the swap cost', async () => {
    const created = await post('/v1/balance/create', { initial_balance_token: await mintToken(mintUrl, 10) });
    const r = await post('/v1/balance/topup', { cashu_token: await foreignToken(300) }, { authorization: `Bearer ${created.json.api_key}` });
    expect(r.status).toBe(200);
    // 300 sats: the reserve is 1 % of 297, rounded up to 3 sats.
    expect(r.json).toEqual({ msats: 297_000, foreign_mint_fee_msats: 3000 });
    const key = (await suite.gw.ledger.getKey(created.json.api_key.slice(3)))!;
    expect(key.balance).toBe(307_000);
  });

  it('pays for one request with X-Cashu; the change comes back as the trusted mint\'s ecash', async () => {
    const token = await foreignToken(60);
    const res = await chat(suite.gw, { 'x-cashu': token }, { messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 });
    expect(res.status).toBe(200);
    const cost = ((await res.json()) as Billed).usage.cost.total_msats;
    const change = res.headers.get('x-cashu')!;
    // 60 sats: 58 minted here (a 2-sat reserve), less the request's cost.
    expect(await tokenValue(mintUrl, change)).toBe(Math.floor((58_000 - cost) / 1000));
    expect(await receive(mintUrl, change)).toBe(Math.floor((58_000 - cost) / 1000));
    expect(await foreignStates(token)).toEqual(['SPENT']);
  });

  it('refuses a swap that would cost more than the cap: the token stays unspent with its owner', async () => {
    const strict = await startGateway(mintUrl, upstream, { ...SWAP, FOREIGN_MINT_MAX_FEE_PERCENT: '1', FOREIGN_MINT_MIN_FEE_SATS: '1' });
    try {
      const token = await foreignToken(50);
      const r = await post<WireError>('/v1/balance/create', { initial_balance_token: token }, {}, strict);
      expect([r.status, r.json.error.code, r.json.error.foreign_mint_fee_msats, r.json.error.max_fee_msats]).toEqual([400, 'foreign_mint_fee_too_high', 2000, 1000]);
      expect(await foreignStates(token)).toEqual(['UNSPENT']);
      expect((await strict.ledger.totals()).credited).toBe(0);
      expect(await strict.ledger.getToken(sha256Hex(token))).toBeUndefined();
      // Under the cap (1 % of 300 sats is 3, the swap's fee) the same gateway takes one.
      const ok = await post('/v1/balance/create', { initial_balance_token: await foreignToken(300) }, {}, strict);
      expect([ok.status, ok.json.foreign_mint_fee_msats]).toEqual([200, 3000]);
      // Its own ledger, which took a swap: drained too, at the trusted mint.
      await expectDrained(strict, { prices: PRICES });
    } finally {
      await strict.close();
    }
  });

  it('is refused by default (FOREIGN_MINTS=refuse), before its mint is contacted', async () => {
    const plain = await startGateway(mintUrl, upstream, PEERS);
    try {
      proxy.reset();
      const token = await foreignToken(10);
      const r = await post<WireError>('/v1/balance/create', { initial_balance_token: token }, {}, plain);
      expect([r.status, r.json.error.code]).toEqual([400, 'untrusted_mint']);
      expect(proxy.calls).toEqual([]);
    } finally {
      await plain.close();
    }
  });
});

describe('a hostile mint named in a token: refused, the token unspent, nothing credited', () => {
  it('a mint on a private address, or over plain http elsewhere, is never contacted', async () => {
    const before = await suite.gw.ledger.totals();
    for (const [mint, reason] of [
      ['https://10.0.0.1/mint', 'private_address'],
      ['https://192.168.1.1', 'private_address'],
      ['https://169.254.169.254', 'private_address'],
      ['https://[fd00::1]', 'private_address'],
      ['http://mint.example.com', 'insecure_url'],
    ] as const) {
      const token = await foreignToken(10, mint);
      const r = await post<WireError>('/v1/balance/create', { initial_balance_token: token });
      expect([mint, r.status, r.json.error.code, r.json.error.reason]).toEqual([mint, 400, 'foreign_mint_unusable', reason]);
      expect(await foreignStates(token)).toEqual(['UNSPENT']);
    }
    expect(await suite.gw.ledger.totals()).toEqual(before);
  });

  const cases: Array<[name: string, reason: string, answer: (res: import('node:http').ServerResponse) => void]> = [
    ['redirects', 'redirect', (res) => res.writeHead(302, { location: `${mintUrl}/v1/info` }).end()],
    ['answers too much', 'too_large', (res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name: 'x'.repeat(30_000) }))],
    ['answers garbage', 'not_json', (res) => res.writeHead(200, { 'content-type': 'application/json' }).end('<html>')],
    ['never answers', 'timeout', () => {}],
  ];
  it.each(cases)('a mint that %s: reason %s, and it is not asked again during the cooldown', async (_name, reason, answer) => {
    const peer = await hostile(answer);
    try {
      const before = await suite.gw.ledger.totals();
      const token = await foreignToken(10, peer.url);
      const r = await post<WireError>('/v1/balance/create', { initial_balance_token: token });
      expect([r.status, r.json.error.code, r.json.error.reason]).toEqual([400, 'foreign_mint_unusable', reason]);
      // Asked one thing: its info, which failed.
      expect(peer.hits()).toBe(1);
      const again = await post<WireError>('/v1/balance/create', { initial_balance_token: await foreignToken(10, peer.url) });
      expect([again.status, again.json.error.reason]).toEqual([400, reason]);
      expect(Number(again.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(peer.hits()).toBe(1);
      expect(await foreignStates(token)).toEqual(['UNSPENT']);
      expect(await suite.gw.ledger.totals()).toEqual(before);
    } finally {
      await peer.stop();
    }
  });

  it('a slow mint (the real one, held back) times out with the token unspent', async () => {
    const slow = new CountingProxy(foreign.url);
    await slow.start();
    try {
      slow.delays.set('/v1/keysets', 3000);
      const token = await foreignToken(10, slow.url);
      const r = await post<WireError>('/v1/balance/create', { initial_balance_token: token });
      expect([r.status, r.json.error.code, r.json.error.reason]).toEqual([400, 'foreign_mint_unusable', 'timeout']);
      expect(await foreignStates(token)).toEqual(['UNSPENT']);
    } finally {
      await slow.stop();
    }
  });

  it('msat proofs labelled sat are refused before anything is quoted, the token unspent', async () => {
    const msat = await mintToken(foreign.url, 4000, 'msat');
    const token = await relabel(foreign.url, msat, { mint: proxy.url, unit: 'sat' });
    proxy.reset();
    const r = await post<WireError>('/v1/balance/create', { initial_balance_token: token });
    expect([r.status, r.json.error.code]).toEqual([400, 'invalid_cashu_token']);
    expect(proxy.calls.some((c) => c.includes('quote'))).toBe(false);
    expect([...new Set(await proofStates(foreign.url, msat))]).toEqual(['UNSPENT']);
  });

  it('a token already spent at its mint is refused as spent, nothing credited', async () => {
    const token = await foreignToken(20);
    await receive(foreign.url, await relabel(foreign.url, token, { mint: foreign.url }));
    const before = await suite.gw.ledger.totals();
    const r = await post<WireError>('/v1/balance/create', { initial_balance_token: token });
    expect([r.status, r.json.error.code]).toEqual([400, 'cashu_token_already_spent']);
    expect(await suite.gw.ledger.totals()).toEqual(before);
    expect(await suite.gw.ledger.getToken(sha256Hex(token))).toBeUndefined();
  });
});

describe('a swap whose melt answer is lost', () => {
  it('is settled from both quotes: the melt landed late, the key is credited exactly once', async () => {
    // The melt reaches the foreign mint after the gateway stopped waiting for it.
    proxy.delays.set('/v1/melt/bolt11', 1500);
    const token = await foreignToken(40);
    const r = await post('/v1/balance/create', { initial_balance_token: token });
    expect([r.status, r.json.balance, r.json.foreign_mint_fee_msats]).toEqual([200, 38_000, 2000]);
    expect(await foreignStates(token)).toEqual(['SPENT']);
  });
});

describe('a crash during a swap', () => {
  let ledger: Ledger;
  let env: Record<string, string>;
  /** Recovery leaves an operation to its owner for two mint timeouts. */
  const LEASE_MS = 1000;

  beforeAll(async () => {
    env = await processEnv(mintUrl, upstream.url, PRICES, { ...SWAP, MINT_TIMEOUT_MS: String(LEASE_MS / 2) });
    const first = await startGatewayProcess(env);
    await first.stop();
    ledger = await openLedger(env.DATABASE_URL!);
  });
  afterAll(async () => {
    try {
      // The processes are gone; one in-process gateway on their database drains what they took.
      if (env) {
        const g = await startGateway(mintUrl, upstream, env);
        try {
          await expectDrained(g, { prices: PRICES });
        } finally {
          await g.close();
        }
      }
    } finally {
      await ledger?.close();
    }
  });

  async function crashDuring(step: CrashStep, token: string): Promise<void> {
    const g = await startGatewayProcess({ ...env, GATEWAY_CRASH_AT: step });
    try {
      await expect(post('/v1/balance/create', { initial_balance_token: token }, {}, g)).rejects.toThrow();
      await g.exited;
      expect(g.proc.signalCode).toBe('SIGKILL');
    } finally {
      if (g.proc.exitCode === null && g.proc.signalCode === null) g.proc.kill('SIGKILL');
    }
  }

  async function restart(): Promise<GatewayProcess> {
    // Recovery at start-up takes only operations whose lease has run out: wait for that state.
    await waitFor(async () => (await ledger.pendingOps()).every((o) => Date.now() - o.updatedAt >= LEASE_MS), 'the crashed swap\'s lease run out');
    const g = await startGatewayProcess(env);
    await waitFor(async () => (await ledger.pendingOps()).length === 0, 'the crashed swap recovered', 30_000);
    return g;
  }

  it('before the melt: recovery sees the melt unpaid and the proofs unspent, and gives the token back', async () => {
    const token = await foreignToken(30);
    await crashDuring('foreign:before-melt', token);
    expect((await ledger.getToken(sha256Hex(token)))?.state).toBe('redeeming');
    const g = await restart();
    try {
      expect(await ledger.getToken(sha256Hex(token))).toBeUndefined();
      expect(await foreignStates(token)).toEqual(['UNSPENT']);
      // Its owner may present it again, and this time it is swapped.
      const r = await post('/v1/balance/create', { initial_balance_token: token }, {}, g);
      expect([r.status, r.json.balance]).toEqual([200, 28_000]);
      await expectLedgerConserved(ledger, [mintUrl]);
    } finally {
      await g.stop();
    }
  });

  it('after the melt: recovery sees the melt paid, mints at the trusted mint and credits once', async () => {
    const token = await foreignToken(30);
    await crashDuring('foreign:after-melt', token);
    expect(await foreignStates(token)).toEqual(['SPENT']);
    const g = await restart();
    try {
      const key = (await ledger.getKey(sha256Hex(token)))!;
      expect(key.balance).toBe(28_000);
      const r = await post('/v1/balance/create', { initial_balance_token: token }, {}, g);
      expect([r.status, r.json.balance, r.json.foreign_mint_fee_msats]).toEqual([200, 28_000, 2000]);
      await expectLedgerConserved(ledger, [mintUrl]);
    } finally {
      await g.stop();
    }
  });
});
