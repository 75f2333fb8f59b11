import { describe, expect, it } from 'vitest';
import { openLedger } from '../../src/main.ts';
import type { Ledger } from '../../src/ledger/ledger.ts';

/** A key credited with `msats` through the ledger's own door for locked proofs. */
async function funded(ledger: Ledger, keyHash: string, msats: number): Promise<void> {
  const proof = { id: '00ad268c4d1f5826', amount: msats / 1000, secret: `["P2PK",{"nonce":"${keyHash}","data":"02aa"}]`, C: '02bb' };
  expect(await ledger.acceptLocked({ tokenHash: `t-${keyHash}`, keyHash, mint: 'http://mint', unit: 'sat', proofs: [proof], creditMsats: msats })).toBe('accepted');
}

describe('reserve and settle in one event-loop turn (group commit)', () => {
  it('apply in order, as if one after another, and a failing one leaves the rest whole', async () => {
    const ledger = await openLedger(':memory:');
    await funded(ledger, 'k', 10_000);
    const outcomes = await Promise.allSettled([
      ledger.reserve('k', 4_000, 'r1'),
      ledger.reserve('k', 4_000, 'r2'),
      ledger.reserve('k', 4_000, 'r3'),
      ledger.settle('no-such-reservation', 1),
      ledger.settle('r1', 2_500),
    ]);
    expect(outcomes.map((o) => (o.status === 'fulfilled' ? o.value : (o.reason as Error).message))).toEqual([
      true,
      true,
      false,
      'reservation no-such-reservation is not active',
      { chargedMsats: 2_500, balance: 7_500, reserved: 4_000 },
    ]);
    const key = (await ledger.getKey('k'))!;
    expect([key.balance, key.reserved]).toEqual([7_500, 4_000]);
    const t = await ledger.totals();
    expect(t.credited).toBe(t.charged + t.refunded + t.balances + t.reserved);
    expect([t.charged, t.reserved]).toEqual([2_500, 4_000]);
    await ledger.close();
  });

  it('commits what is queued when the ledger closes', async () => {
    const ledger = await openLedger(':memory:');
    await funded(ledger, 'k', 5_000);
    const reserved = ledger.reserve('k', 1_000, 'r1');
    await ledger.close();
    expect(await reserved).toBe(true);
  });
});
