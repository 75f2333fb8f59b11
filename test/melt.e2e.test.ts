import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, chat, waitFor } from './support/suite.ts';
import { FakeUpstream } from './support/upstream.ts';
import { expectDrained, startGateway, type Gateway } from './support/gateway.ts';
import { startMint, startMintAgain, type RunningMint } from './support/mint.ts';
import { mintToken, wallet } from './support/cashu.ts';
import { externalInvoice } from './support/invoice.ts';
import type { Totals } from '../src/ledger/ledger.ts';
import { CashuError } from '../src/cashu/errors.ts';
import { httpError } from '../src/http/errors.ts';

// Mints of their own, whose Lightning backend fails or stalls payments, as real nodes sometimes do.
const upstream = new FakeUpstream();
const MINT_TIMEOUT_MS = 500;
/** Dear enough that a few short replies earn the operator whole sats to withdraw. */
const PRICES = { 'gpt-test': { prompt: 1000, completion: 1000 } };

beforeAll(() => upstream.start());
afterAll(() => upstream.stop());

/** A gateway on `mint` that has earned at least `sats` for its operator. */
async function earning(mint: RunningMint, sats: number): Promise<Gateway> {
  const gw = await startGateway(mint.url, upstream, {
    MINT_TIMEOUT_MS: String(MINT_TIMEOUT_MS),
    MODEL_PRICES: JSON.stringify(PRICES),
  });
  const token = await mintToken(mint.url, 100);
  for (;;) {
    const t = await gw.ledger.totals();
    if (t.charged - t.withdrawn - t.fees >= sats * 1000) return gw;
    const res = await chat(gw, bearer(token), { messages: [{ role: 'user', content: 'earn' }], max_tokens: 3 });
    expect(res.status).toBe(200);
  }
}

const earnings = (t: Totals) => t.charged - t.withdrawn - t.fees;

describe('withdrawing to a Lightning invoice the mint cannot pay', () => {
  it('refuses with 502 payment_failed, and the booking and the proofs are back as they were', async () => {
    const mint = await startMint({ lightning: 'fails' });
    const gw = await earning(mint, 10);
    try {
      const before = await gw.ledger.totals();
      const held = await gw.ledger.heldProofs(mint.url, 'sat');
      const refused = await gw.wallets.melt(externalInvoice(7)).then(() => undefined, (e: unknown) => e);
      expect(refused).toBeInstanceOf(CashuError);
      expect(httpError(refused)).toMatchObject({ status: 502, code: 'payment_failed' });
      expect(await gw.ledger.totals()).toEqual(before);
      expect((await gw.ledger.heldProofs(mint.url, 'sat')).map((p) => p.secret).sort()).toEqual(held.map((p) => p.secret).sort());
      // Everything out of this mint: the key refunded, the earnings withdrawn, all redeemed.
      await expectDrained(gw, { prices: PRICES });
    } finally {
      await gw.close();
      await mint.stop();
    }
  });
});

describe('withdrawing to a Lightning invoice whose payment stays in flight', () => {
  it('keeps the amount and reserve booked until the mint settles, then books the fee it really took', async () => {
    let mint = await startMint({ lightning: 'stalls' });
    const gw = await earning(mint, 10);
    try {
      const before = await gw.ledger.totals();
      const inflight = await gw.wallets.melt(externalInvoice(7));
      expect([inflight.state, inflight.amount, inflight.feeReserve]).toEqual(['pending', 7, 2]);
      // The amount and the whole reserve are spoken for meanwhile: they cannot be withdrawn twice.
      expect(earnings(await gw.ledger.totals())).toBe(earnings(before) - 9000);
      expect((await (await wallet(mint.url)).checkMeltQuoteBolt11(inflight.quote)).state).toBe('PENDING');

      // The node settles the payment; the next recovery pass books it from the mint's answer.
      await mint.stop();
      mint = await startMintAgain(mint);
      // Recovery leaves an operation alone while its owner may still hold it (a lease of a few
      // mint timeouts), so passes are run until one books it; meanwhile it stays pending.
      const melt = await waitFor(async () => {
        await gw.wallets.recoverAll();
        const m = (await gw.ledger.meltOfOp(inflight.opId))!;
        if (m.state === 'paid') return m;
        expect(m.state).toBe('pending');
        return undefined;
      }, 'the in-flight melt booked by recovery');
      expect(melt.fee).toBeGreaterThanOrEqual(0);
      expect(melt.fee).toBeLessThanOrEqual(2);
      const after = await gw.ledger.totals();
      expect([after.withdrawn - before.withdrawn, after.fees - before.fees]).toEqual([7000, melt.fee! * 1000]);
      expect(await gw.ledger.pendingOps()).toEqual([]);
      // Everything out of this mint: the key refunded, the earnings withdrawn, all redeemed.
      await expectDrained(gw, { prices: PRICES });
    } finally {
      await gw.close();
      await mint.stop();
    }
  });
});
