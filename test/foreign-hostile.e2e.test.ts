import { describe, expect, it, vi } from 'vitest';
import { randomUUID } from 'node:crypto';
import { OutputData, getEncodedToken } from '@cashu/cashu-ts';
import { useGateway, waitFor } from './support/suite.ts';
import type { WireError } from './support/wire.ts';
import { mintProofs, mintToken, proofStates, relabel, wallet } from './support/cashu.ts';
import { startMint, type RunningMint } from './support/mint.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import { toStored } from '../src/cashu/proofs.ts';

// A foreign mint that melts the token but tells the gateway, every time it is asked, that the
// payment is still PENDING; the invoice it was to pay, at the gateway's first trusted mint, is
// never paid. That mint's FakeWallet pays nothing by itself (FAKEWALLET_BRR off), as Lightning
// would not, and its quotes expire after QUOTE_TTL_S. The suite's mint is the second trusted
// mint, where the gateway's own operations happen.
const QUOTE_TTL_S = 20;
const MAX_PENDING = 2;
const MINT_TIMEOUT_MS = 1000;
/** How long recovery leaves an operation to its owner: two mint timeouts (the journal's lease). */
const LEASE_MS = 2 * MINT_TIMEOUT_MS;
let lightless: RunningMint;
let foreign: RunningMint;
let liar: CountingProxy;
vi.setConfig({ testTimeout: 120_000 });

const suite = useGateway({
  before: async () => {
    [lightless, foreign] = await Promise.all([
      startMint({ env: { MINT_PRIVATE_KEY: 'LIGHTLESS_TEST_PRIVATE_KEY', FAKEWALLET_BRR: 'FALSE', MINT_QUOTE_TTL: String(QUOTE_TTL_S) } }),
      startMint({ env: { MINT_PRIVATE_KEY: 'LIAR_TEST_PRIVATE_KEY' } }),
    ]);
    liar = new CountingProxy(foreign!.url);
    // Whatever the melt became, the answer says PENDING: to the melt itself and to every later check of its quote.
    liar.rewrite = (method, path, json) =>
      (method === 'POST' && path === '/v1/melt/bolt11') || path.startsWith('/v1/melt/quote/bolt11/')
        ? { ...json, state: 'PENDING', paid: false, payment_preimage: null }
        : json;
    await liar.start();
  },
  env: () => ({
    CASHU_MINTS: `${lightless.url},${suite.mintUrl}`,
    ALLOW_INSECURE_PEERS_FOR_TESTS_ONLY: 'true',
    FOREIGN_MINTS: 'swap',
    PEER_TIMEOUT_MS: '2000',
    MINT_TIMEOUT_MS: String(MINT_TIMEOUT_MS),
    FOREIGN_MINT_MAX_PENDING_SWAPS: String(MAX_PENDING),
    FOREIGN_MINT_MAX_PENDING_SWAPS_TOTAL: String(MAX_PENDING + 1),
    FOREIGN_SWAP_EXPIRY_MARGIN_SECONDS: '1',
  }),
  after: async () => {
    await liar?.stop();
    await Promise.all([lightless?.stop(), foreign?.stop()]);
  },
});
const { mintUrl } = suite;

/** The answers read below: a key made, or the door's error. */
type Answer = Partial<{ api_key: string; balance: number }> & Partial<WireError>;

async function post(path: string, body: unknown) {
  const res = await fetch(`${suite.gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Answer };
}

/** Polls until every operation still pending has been left alone for its lease: recovery's own test. */
const leasesRunOut = () =>
  waitFor(async () => (await suite.gw.ledger.pendingOps()).every((o) => Date.now() - o.updatedAt >= LEASE_MS), 'every lease run out', 60_000);

const meltCalls = () => liar.calls.filter((c) => c === 'POST /v1/melt/bolt11').length;
const foreignOps = async () => (await suite.gw.ledger.pendingOps()).filter((o) => o.kind === 'foreign');

describe('a foreign mint that answers its melt PENDING forever', () => {
  it('is bounded while pending, gives way to the gateway\'s own recovery, and is abandoned once the invoice expired, crediting nothing', async () => {
    const { gw } = suite;
    const before = await gw.ledger.totals();
    const tokens = await Promise.all([0, 1].map(async () => relabel(foreign.url, await mintToken(foreign.url, 20), { mint: liar.url })));
    liar.reset();
    const asked = tokens.map((t) => post('/v1/balance/create', { initial_balance_token: t }));
    await waitFor(() => meltCalls() === MAX_PENDING, 'both melts sent', 60_000);

    // At the bound, a third token from that mint is refused before its mint is asked anything.
    const third = relabel(foreign.url, await mintToken(foreign.url, 20), { mint: liar.url });
    const quotes = () => liar.calls.filter((c) => c === 'POST /v1/melt/quote/bolt11').length;
    const quoted = quotes();
    const refused = await post('/v1/balance/create', { initial_balance_token: await third });
    expect([refused.status, refused.json.error?.code]).toEqual([503, 'foreign_mint_busy']);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    // The two swaps in flight keep checking their quotes; the third token was never quoted.
    expect(quotes()).toBe(quoted);
    expect(await gw.ledger.getToken(sha256Hex(await third))).toBeUndefined();

    for (const r of await Promise.all(asked)) expect([r.status, r.json.error?.code]).toEqual([503, 'foreign_swap_pending']);
    const swaps = await foreignOps();
    expect(swaps).toHaveLength(2);

    // An operation of the gateway's own, left by a crash before its swap was sent: the token's
    // proofs are journaled as the inputs of a receive at the suite's mint, nothing else happened.
    const honest = await mintProofs(mintUrl, 10);
    const honestToken = getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: honest });
    const preview = await (await wallet(mintUrl)).prepareSwapToReceive({ mint: mintUrl, unit: 'sat', proofs: honest.map(({ dleq: _, ...p }) => p) });
    const outputs = (preview.keepOutputs ?? []).map((o) => ({ send: false, o: OutputData.serialize(o as OutputData) }));
    const honestOp = randomUUID();
    const started = await gw.ledger.startRedemption({
      kind: 'receive', tokenHash: sha256Hex(honestToken), keyHash: sha256Hex(honestToken), opId: honestOp, mint: mintUrl, unit: 'sat', inputs: honest.map(toStored), outputs,
    });
    expect(started).toEqual({ started: true });

    // One recovery pass once every lease has run out: the foreign mint is asked only after the
    // gateway's own operation is settled.
    const seen: string[] = [];
    liar.onRequest = async () => void seen.push((await gw.ledger.getOp(honestOp))!.state);
    await leasesRunOut();
    await gw.wallets.recoverAll();
    expect((await gw.ledger.getOp(honestOp))!.state).toBe('failed');
    expect(seen.length).toBeGreaterThan(0);
    expect(new Set(seen)).toEqual(new Set(['failed']));
    liar.onRequest = undefined;
    // Given back whole: its owner's token is unspent and funds a key.
    expect(await proofStates(mintUrl, honestToken)).toEqual(['UNSPENT', 'UNSPENT']);
    const back = await post('/v1/balance/create', { initial_balance_token: honestToken });
    expect([back.status, back.json.balance]).toEqual([200, 10_000]);

    // Once the trusted mint's invoices are past their expiry (plus the margin) unpaid, no payment
    // can arrive: recovery abandons the swaps, whatever their mint keeps saying.
    await waitFor(async () => {
      await gw.wallets.recoverAll();
      return (await foreignOps()).length === 0;
    }, 'the swaps abandoned', 60_000);
    const here = await wallet(lightless.url);
    for (const op of swaps) {
      expect((await gw.ledger.getOp(op.id))!.state).toBe('failed');
      expect(await gw.ledger.getToken(op.tokenHash!)).toBeUndefined();
      const j = (op.outputs as Array<{ mintQuote: string }>)[0]!;
      expect((await here.checkMintQuoteBolt11(j.mintQuote)).state).toBe('UNPAID');
    }
    for (const t of tokens) expect(await gw.ledger.getToken(sha256Hex(t))).toBeUndefined();
    // The liar did melt the tokens (its own, at no loss to the gateway): its NUT-07 view says so.
    for (const t of tokens) expect([...new Set(await proofStates(foreign.url, await relabel(foreign.url, t, { mint: foreign.url })))]).toEqual(['SPENT']);
    const after = await gw.ledger.totals();
    expect(after.credited - before.credited).toBe(10_000);
  });
  it('is bounded in all as well as per host name: another name for the same mint gets no more than the total', async () => {
    const { gw } = suite;
    const before = await gw.ledger.totals();
    // The same liar under a second host name, as a stranger's own domains would be.
    const alias = liar.url.replace('127.0.0.1', 'localhost');
    const token = async (at: string) => relabel(foreign.url, await mintToken(foreign.url, 20), { mint: at });
    const first = [await token(liar.url), await token(liar.url), await token(alias)];
    for (const r of await Promise.all(first.map((t) => post('/v1/balance/create', { initial_balance_token: t })))) {
      expect([r.status, r.json.error?.code]).toEqual([503, 'foreign_swap_pending']);
    }
    expect(await foreignOps()).toHaveLength(MAX_PENDING + 1);

    // Its host name has one swap pending, under its own bound; all of them together are at theirs.
    const quotes = () => liar.calls.filter((c) => c === 'POST /v1/melt/quote/bolt11').length;
    const quoted = quotes();
    const fourth = await token(alias);
    const refused = await post('/v1/balance/create', { initial_balance_token: fourth });
    expect([refused.status, refused.json.error?.code]).toEqual([503, 'foreign_mint_busy']);
    expect(refused.json.error?.message).toContain('other mints than its own');
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(quotes()).toBe(quoted);
    expect(await gw.ledger.getToken(sha256Hex(fourth))).toBeUndefined();
    expect(await foreignOps()).toHaveLength(MAX_PENDING + 1);

    await waitFor(async () => {
      await gw.wallets.recoverAll();
      return (await foreignOps()).length === 0;
    }, 'the swaps abandoned', 60_000);
    expect(await gw.ledger.totals()).toEqual(before);
  });
  it('that stops answering is asked once per recovery pass, not once per swap, and its swaps still end at the invoice\'s expiry', async () => {
    const { gw } = suite;
    // The bound counts what is pending now: the swaps abandoned above no longer hold it.
    const before = await gw.ledger.totals();
    const tokens = await Promise.all([0, 1].map(async () => relabel(foreign.url, await mintToken(foreign.url, 20), { mint: liar.url })));
    for (const r of await Promise.all(tokens.map((t) => post('/v1/balance/create', { initial_balance_token: t })))) {
      expect([r.status, r.json.error?.code]).toEqual([503, 'foreign_swap_pending']);
    }
    expect(await foreignOps()).toHaveLength(2);
    // Now every call to it hangs past PEER_TIMEOUT_MS.
    liar.delayMs = 5000;
    await leasesRunOut();
    liar.reset();
    // Which swaps' melt quotes it was asked about (the gateway's own timer may run a pass too).
    const asked = () => new Set(liar.calls.filter((c) => c.startsWith('GET /v1/melt/quote/bolt11/')));
    await gw.wallets.recoverAll();
    expect(asked().size).toBe(1);
    expect(await foreignOps()).toHaveLength(2);
    liar.delayMs = 0;
    // Resting, it is not asked again; the trusted mint's quotes alone end the swaps.
    await waitFor(async () => {
      await gw.wallets.recoverAll();
      return (await foreignOps()).length === 0;
    }, 'the swaps abandoned', 60_000);
    expect(asked().size).toBe(1);
    expect(liar.calls.every((c) => c.startsWith('GET /v1/melt/quote/bolt11/'))).toBe(true);
    expect(await gw.ledger.totals()).toEqual(before);
  });
});
