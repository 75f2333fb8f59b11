import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getPubKeyFromPrivKey } from '@cashu/cashu-ts';
import { FakeUpstream } from './support/upstream.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { PRICES, TEST_P2PK_PRIVKEY, expectDrained, expectMoneyConserved, startGateway, testDatabaseUrl, type Gateway } from './support/gateway.ts';
import { lockedToken, proofStates, receive } from './support/cashu.ts';
import { chat as post, floatHolds, waitFor } from './support/suite.ts';
import { scrape, series } from './support/prometheus.ts';
import type { Billed } from './support/wire.ts';

const realMint = inject('mintUrl');
const upstream = new FakeUpstream();
const proxy = new CountingProxy(realMint);
let mintUrl: string;
const ourPubkey = Buffer.from(getPubKeyFromPrivKey(Buffer.from(TEST_P2PK_PRIVKEY, 'hex'))).toString('hex');
const dir = mkdtempSync(join(tmpdir(), 'float-'));
const body = { model: 'gpt-test', messages: [{ role: 'user', content: 'float' }], max_tokens: 2 };
/** The float the gateways below keep: this many proofs of each of 1, 2, 4 … 128 sats. */
const FLOAT = 3;

/** What /metrics says of change swapped on the request path: what the benchmark reads. */
async function changeSwapsMetric(gw: Gateway): Promise<number> {
  return series(await scrape(gw.url), 'gateway_change_swaps_total', { mint: mintUrl });
}

async function chat(gw: Gateway, headers: Record<string, string>) {
  const res = await post(gw, headers, body);
  return { status: res.status, headers: res.headers, json: (await res.json()) as Billed };
}

/**
 * A locked X-Cashu request of `sats`: its change, checked at the mint against what it was owed,
 * and the mint calls made while the request ran.
 */
async function lockedRequest(gw: Gateway, sats: number): Promise<string[]> {
  const token = await lockedToken(mintUrl, sats, ourPubkey);
  const before = proxy.calls.length;
  const res = await post(gw, { 'x-cashu': token }, { max_tokens: 2 });
  const calls = proxy.calls.slice(before);
  expect(res.status).toBe(200);
  const cost = ((await res.json()) as { usage: { cost: { total_msats: number } } }).usage.cost.total_msats;
  const owed = Math.floor((sats * 1000 - cost) / 1000);
  expect(await receive(mintUrl, res.headers.get('x-cashu')!)).toBe(owed);
  return calls;
}

beforeAll(async () => {
  await upstream.start();
  mintUrl = await proxy.start();
});
afterAll(async () => {
  await proxy.stop();
  await upstream.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('the change float: a P2PK-locked X-Cashu request never waits on the mint', () => {
  it('pays change from stored proofs, no mint call on the request path, and refills the float in the background', async () => {
    const gw = await startGateway(mintUrl, upstream, { CHANGE_FLOAT_PROOFS: String(FLOAT) });
    try {
      // An unpaid request loads the gateway's view of the mint; a balance funded with locked
      // ecash is what the float is first made from (the periodic sweep is off here).
      expect((await chat(gw, {})).status).toBe(402);
      const funding = await lockedToken(mintUrl, 1500, ourPubkey);
      expect((await chat(gw, { authorization: `Bearer ${funding}` })).status).toBe(200);
      await waitFor(() => floatHolds(gw, mintUrl, FLOAT), 'the float full again');
      const metric = await changeSwapsMetric(gw);

      for (const amount of [255, 100, 37, 64, 21, 129, 255]) {
        const token = await lockedToken(mintUrl, amount, ourPubkey);
        proxy.reset();
        const res = await chat(gw, { 'x-cashu': token });
        const calls = [...proxy.calls];
        expect(res.status).toBe(200);
        expect(calls, `mint calls on the request path (${amount} sats)`).toEqual([]);
        const owed = Math.floor((amount * 1000 - res.json.usage.cost.total_msats) / 1000);
        expect(owed).toBeGreaterThan(0);
        expect(await receive(mintUrl, res.headers.get('x-cashu')!)).toBe(owed);
        // The float is topped up afterwards, off the request path, from the gateway's own proofs.
        await waitFor(() => floatHolds(gw, mintUrl, FLOAT), 'the float full again');
      }
      expect(gw.wallets.changeSwaps).toBe(0);
      expect(await changeSwapsMetric(gw), 'gateway_change_swaps_total').toBe(metric);
      // The refills took locked proofs first, redeeming them: some of the funding token is spent.
      expect(await proofStates(mintUrl, funding)).toContain('SPENT');
      // What the float holds is the operator's and the payers' money like any other: all of it out.
      await expectDrained(gw, { prices: PRICES });
    } finally {
      await gw.close();
    }
  });

  it('swaps on the request path only when the float cannot pay the change, and counts it', async () => {
    const gw = await startGateway(mintUrl, upstream, { CHANGE_FLOAT_PROOFS: String(FLOAT) });
    try {
      expect((await chat(gw, {})).status).toBe(402);
      // Nothing stored yet but the locked proofs of this very token: change needs a swap.
      const token = await lockedToken(mintUrl, 100, ourPubkey);
      const metric = await changeSwapsMetric(gw);
      proxy.reset();
      const res = await chat(gw, { 'x-cashu': token });
      expect(res.status).toBe(200);
      expect(proxy.calls).toEqual(['POST /v1/swap']);
      expect(gw.wallets.changeSwaps).toBe(1);
      expect(await changeSwapsMetric(gw), 'gateway_change_swaps_total').toBe(metric + 1);
      expect(await receive(mintUrl, res.headers.get('x-cashu')!)).toBe(Math.floor((100_000 - res.json.usage.cost.total_msats) / 1000));
      await waitFor(async () => (await gw.ledger.pendingOps()).length === 0, 'the float refilled after the swap', 10_000);
      await expectDrained(gw, { prices: PRICES });
    } finally {
      await gw.close();
    }
  });
});

describe('the change float keeps up with payouts and a restart', () => {
  it('grows when payouts outrun its refills, so the same burst later needs no swap', async () => {
    const gw = await startGateway(mintUrl, upstream, { CHANGE_FLOAT_PROOFS: '1' });
    try {
      expect((await post(gw, {})).status).toBe(402);
      // Locked funding is what the float's refills are made from.
      expect((await post(gw, { authorization: `Bearer ${await lockedToken(mintUrl, 6000, ourPubkey)}` })).status).toBe(200);
      await waitFor(() => floatHolds(gw, mintUrl, 1), 'a float of one of each');
      expect(gw.wallets.floatTarget(mintUrl, 'sat')).toBe(1);

      // Three payouts of 254 sats at once: a float of one of each cannot pay them all.
      await Promise.all([255, 255, 255].map((s) => lockedRequest(gw, s)));
      const swaps = gw.wallets.changeSwaps;
      expect(swaps).toBeGreaterThan(0);
      // Each time it ran short the float doubled.
      const target = gw.wallets.floatTarget(mintUrl, 'sat');
      expect(target).toBe(2 ** swaps);
      await waitFor(() => floatHolds(gw, mintUrl, target), `a float of ${target} of each`);

      // Two payouts at once, which the float of one could not pay: both paid from it now.
      await Promise.all([255, 255].map((s) => lockedRequest(gw, s)));
      expect(gw.wallets.changeSwaps, 'change swapped on the request path').toBe(swaps);
      await expectMoneyConserved(gw);
      await expectDrained(gw);
    } finally {
      await gw.close();
    }
  });

  it('is topped up at start from the proofs a restarted gateway holds, before any request', async () => {
    const db = process.env.TEST_LEDGER === 'postgres' ? await testDatabaseUrl() : `sqlite:${join(dir, 'ledger.db')}`;
    const first = await startGateway(mintUrl, upstream, { DATABASE_URL: db, CHANGE_FLOAT_PROOFS: '0' });
    try {
      expect((await post(first, {})).status).toBe(402);
      expect((await post(first, { authorization: `Bearer ${await lockedToken(mintUrl, 1500, ourPubkey)}` })).status).toBe(200);
      await expectMoneyConserved(first);
    } finally {
      await first.close();
    }
    proxy.reset();
    const gw = await startGateway(mintUrl, upstream, { DATABASE_URL: db, CHANGE_FLOAT_PROOFS: '2' });
    try {
      await waitFor(() => floatHolds(gw, mintUrl, 2), 'a float of two of each, filled at start');
      expect(proxy.calls).toContain('POST /v1/swap');
      expect(await lockedRequest(gw, 200), 'mint calls on the request path').toEqual([]);
      expect(gw.wallets.changeSwaps).toBe(0);
      await expectMoneyConserved(gw);
      await expectDrained(gw);
    } finally {
      await gw.close();
    }
  });
});
