import { describe, expect, inject, it } from 'vitest';
import { getDecodedToken, getEncodedToken, getPubKeyFromPrivKey } from '@cashu/cashu-ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { lockedToken, mintToken, proofStates, receive, relabel, wallet } from './support/cashu.ts';
import { PRICES, TEST_P2PK_PRIVKEY, expectDrained, expectMoneyConserved, startGateway } from './support/gateway.ts';
import { externalInvoice } from './support/invoice.ts';
import { bearer, chat, expectUntouched, fundedKey, useGateway } from './support/suite.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import { toProof } from '../src/cashu/proofs.ts';

/**
 * A broken mint, made of the real one behind a proxy that refuses a path, or forwards a call and
 * loses the answer. Whatever it does, the payer's key holds exactly what it held or gets exactly
 * its money, nothing stays reserved or pending once it is settled, and the mint's own view of
 * every proof the gateway holds (NUT-07, checked after each test) agrees with the ledger. The test
 * itself asks the mint directly, never through the proxy.
 */
const proxy = new CountingProxy(inject('mintUrl'));
const suite = useGateway({
  before: () => proxy.start(),
  // A short lease (twice the timeout), so an operation whose answer was lost is settled soon; and
  // a locked proof the mint refuses alone may be written off a second after.
  env: () => ({ CASHU_MINTS: proxy.url, MINT_TIMEOUT_MS: '500', P2PK_WRITE_OFF_AFTER_SECONDS: '1' }),
  reset: () => {
    proxy.faults.clear();
    proxy.rewrite = undefined;
  },
  after: () => proxy.stop(),
});

interface RefundJson {
  token?: string;
  sats?: string;
  state?: string;
  fee_sats?: string | null;
  refund_id?: string;
  error?: { code: string };
}

async function refund(key: string, body: Record<string, unknown> = {}): Promise<{ status: number; json: RefundJson }> {
  const res = await fetch(`${suite.gw.url}/v1/balance/refund`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(key) }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as RefundJson };
}

/** A token naming the proxy, as one naming the mint behind it. */
const direct = (token: string) => relabel(suite.mintUrl, token, { mint: suite.mintUrl });

const swaps = () => proxy.calls.filter((c) => c === 'POST /v1/swap').length;

/** A key of 20 sats that has paid for one answer, so its refund is not a whole set of proofs: it takes a swap. */
async function spentKey(): Promise<{ key: string; hash: string; balance: number }> {
  const { key, hash } = await fundedKey(suite.gw, proxy.url, 20);
  expect((await chat(suite.gw, bearer(key), { max_tokens: 1 })).status).toBe(200);
  const k = (await suite.gw.ledger.getKey(hash))!;
  expect(k.balance % 1000).not.toBe(0);
  return { key, hash, balance: k.balance };
}

/** The refund the key is owed, taken whole: the token is worth every sat of it at the mint, and only the sub-sat rest stays. */
async function expectRefundedWhole(hash: string, balance: number, r: { status: number; json: RefundJson }): Promise<void> {
  const owed = Math.floor(balance / 1000);
  expect([r.status, r.json.sats]).toEqual([200, String(owed)]);
  expect(await receive(suite.mintUrl, await direct(r.json.token!))).toBe(owed);
  const k = (await suite.gw.ledger.getKey(hash))!;
  expect([k.balance, k.reserved]).toEqual([balance - owed * 1000, 0]);
  expect(await suite.gw.ledger.pendingOps()).toEqual([]);
}

describe('a mint that refuses a refund', () => {
  it('leaves the key exactly as it was, and the refund is paid whole once the mint takes it', async () => {
    const { key, hash, balance } = await spentKey();
    const before = swaps();
    proxy.faults.set('/v1/swap', { fail: 400, body: { detail: 'Transaction is not valid.', code: 11000 } });
    const refused = await expectUntouched(suite.gw, hash, () => refund(key));
    expect([refused.status, refused.json.error?.code]).toEqual([503, 'refund_unavailable']);
    expect(swaps(), 'the refund reached the mint').toBe(before + 1);
    expect(await suite.gw.ledger.pendingOps()).toEqual([]);

    proxy.faults.clear();
    await expectRefundedWhole(hash, balance, await refund(key));
  });
});

describe('a mint that loses its answer', () => {
  it('to a refund swap: the signatures are restored (NUT-09) and the refund is paid once, in full', async () => {
    const { key, hash, balance } = await spentKey();
    proxy.faults.set('/v1/swap', { drop: true });
    const r = await refund(key);
    expect(proxy.dropped).toContain('/v1/swap');
    await expectRefundedWhole(hash, balance, r);
    // The same refund asked again is the same token, not a second payout.
    proxy.faults.clear();
    const again = await refund(key);
    expect([again.status, again.json.token]).toEqual([200, r.json.token]);
  });

  it('to a refund swap, with the mint unreachable for recovery too: pending until it answers, then paid once', async () => {
    const { key, hash, balance } = await spentKey();
    proxy.faults.set('/v1/swap', { drop: true });
    proxy.faults.set('/v1/restore', { fail: 503, body: { detail: 'unavailable' } });
    const open = await refund(key);
    expect([open.status, open.json.error?.code]).toEqual([503, 'cashu_mint_unreachable']);
    // The mint did the swap: the key is debited for the refund in flight, its inputs spent at the mint.
    const pending = await suite.gw.ledger.pendingOps();
    expect(pending.map((o) => o.kind)).toEqual(['refund']);
    expect((await suite.gw.ledger.getKey(hash))!.balance).toBe(balance % 1000);
    const inputs = pending[0]!.inputs;
    const states = await (await wallet(suite.mintUrl)).checkProofsStates(inputs.map((p) => ({ secret: p.secret, id: p.id })));
    expect(new Set(states.map((s) => s.state))).toEqual(new Set(['SPENT']));

    proxy.faults.clear();
    // Past the operation's lease the retry settles it from the mint's signatures.
    await expectRefundedWhole(hash, balance, await refund(key));
  });

  it('busy (a lock it could not get): 503 cashu_mint_busy with Retry-After, the token unspent and taken on the retry', async () => {
    const token = await mintToken(proxy.url, 20);
    // nutshell's own answer when it cannot lock the proofs: code 0, like malformed input.
    proxy.faults.set('/v1/swap', { fail: 400, body: { detail: 'failed to acquire database lock on proofs_pending', code: 0 } });
    const res = await expectUntouched(suite.gw, sha256Hex(token), () => chat(suite.gw, { 'x-cashu': token }, { max_tokens: 1 }));
    expect([res.status, res.headers.get('retry-after')]).toEqual([503, '1']);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('cashu_mint_busy');
    expect(await proofStates(suite.mintUrl, await direct(token))).toEqual(['UNSPENT', 'UNSPENT']);
    expect(await suite.gw.ledger.pendingOps()).toEqual([]);
    proxy.faults.clear();
    const again = await chat(suite.gw, { 'x-cashu': token }, { max_tokens: 1 });
    expect(again.status).toBe(200);
    expect(await receive(suite.mintUrl, await direct(again.headers.get('x-cashu')!))).toBeGreaterThan(0);
  });

  it('to the swap of a paying token: the key is credited once, with all of it', async () => {
    const token = await mintToken(proxy.url, 20);
    const before = await suite.gw.ledger.totals();
    proxy.faults.set('/v1/swap', { drop: true });
    const res = await chat(suite.gw, bearer(token), { max_tokens: 1 });
    expect(res.status).toBe(200);
    expect(proxy.dropped).toContain('/v1/swap');
    expect(await proofStates(suite.mintUrl, await direct(token))).toEqual(['SPENT', 'SPENT']);
    const k = (await suite.gw.ledger.getKey(sha256Hex(token)))!;
    const after = await suite.gw.ledger.totals();
    expect(after.credited - before.credited).toBe(20_000);
    expect([k.balance + k.totalSpent, k.reserved]).toEqual([20_000, 0]);
    expect(after.charged - before.charged).toBe(k.totalSpent);
  });
});

describe('a mint with no liquidity to pay a Lightning refund', () => {
  it('leaves the key exactly as it was and the quote unpaid; once it can pay, the key pays exactly the invoice and the fee', async () => {
    const { key, hash } = await fundedKey(suite.gw, proxy.url, 30);
    proxy.faults.set('/v1/melt/bolt11', { fail: 400, body: { detail: 'Lightning payment failed: no route with enough liquidity.', code: 20004 } });
    const failed = await expectUntouched(suite.gw, hash, () => refund(key, { invoice: externalInvoice(20) }));
    expect([failed.status, failed.json.error?.code]).toEqual([502, 'payment_failed']);
    const melt = (await suite.gw.ledger.latestMelt(hash))!;
    expect(melt.state).toBe('failed');
    expect((await (await wallet(suite.mintUrl)).checkMeltQuoteBolt11(melt.quote)).state).toBe('UNPAID');

    proxy.faults.clear();
    const paid = await refund(key, { invoice: externalInvoice(20) });
    expect([paid.status, paid.json.state, paid.json.sats]).toEqual([200, 'paid', '20']);
    const fee = Number(paid.json.fee_sats);
    const k = (await suite.gw.ledger.getKey(hash))!;
    expect([k.balance, k.reserved]).toEqual([30_000 - (20 + fee) * 1000, 0]);
  });
});

describe('a mint that refuses a locked proof as bad, but cannot say (NUT-07) it is unspent', () => {
  it('writes nothing off while the proof\'s state is pending or unknown, and sweeps it once the mint takes it', async () => {
    const ourPubkey = Buffer.from(getPubKeyFromPrivKey(Buffer.from(TEST_P2PK_PRIVKEY, 'hex'))).toString('hex');
    const later = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const w = await wallet(proxy.url);
    const victim = await lockedToken(proxy.url, 4, ourPubkey);
    const other = await lockedToken(proxy.url, 2, ourPubkey);
    for (const t of [victim, other]) expect((await chat(suite.gw, bearer(t), { max_tokens: 1 })).status).toBe(200);
    const victimC = getDecodedToken(victim, w.keyChain.getAllKeysetIds()).proofs.map((p) => p.C);
    const before = await suite.gw.ledger.totals();
    // The bluntest refusal there is, of the victim only: its signature does not verify (10001).
    proxy.faults.set('/v1/swap', { fail: 400, body: { detail: 'proofs could not be verified', code: 10001 }, when: (b) => victimC.some((c) => b.includes(c)) });
    // The other is taken; the victim, refused alone, is a suspect.
    expect(await suite.gw.wallets.sweepLocked()).toBe(1);
    await later(1_100);
    // Past the write-off age, refused as bad again, but the mint's NUT-07 answer is PENDING, then a
    // proxy's error page: no proof that it is unspent, so nothing is written off.
    const unknown = [
      () => (proxy.rewrite = (_m, path, json) => (path === '/v1/checkstate' ? { states: (json.states as Array<Record<string, unknown>>).map((st) => ({ ...st, state: 'PENDING' })) } : json)),
      () => proxy.faults.set('/v1/checkstate', { fail: 502, body: '<html><body>502 Bad Gateway</body></html>' }),
    ];
    for (const fault of unknown) {
      fault();
      expect(await suite.gw.wallets.sweepLocked()).toBe(0);
      expect((await suite.gw.ledger.totals()).fees).toBe(before.fees);
      expect((await suite.gw.ledger.pendingOps()).map((o) => o.kind)).toEqual(['sweep']);
      expect(await proofStates(suite.mintUrl, await direct(victim))).toEqual(['UNSPENT']);
      proxy.rewrite = undefined;
      proxy.faults.delete('/v1/checkstate');
      // Once it answers, recovery (past the op's lease) hears it is unspent and puts it back.
      await later(1_100);
      await suite.gw.wallets.recoverAll();
      expect(await suite.gw.ledger.pendingOps()).toEqual([]);
      expect(await suite.gw.ledger.heldProofs(proxy.url, 'sat')).toContainEqual(expect.objectContaining({ C: victimC[0] }));
    }
    proxy.faults.clear();
    expect(await suite.gw.wallets.sweepLocked()).toBe(1);
    for (const t of [victim, other]) expect(await proofStates(suite.mintUrl, await direct(t))).toEqual(['SPENT']);
    const after = await suite.gw.ledger.totals();
    expect([after.fees, after.credited, after.refunded, after.withdrawn]).toEqual([before.fees, before.credited, before.refunded, before.withdrawn]);
  });
});

describe('a journaled swap that keeps nothing (its inputs worth no more than the fee), its answer lost', () => {
  it('is settled from the inputs\' state alone: there is nothing to restore, and nutshell refuses a restore of nothing', async () => {
    const ourPubkey = Buffer.from(getPubKeyFromPrivKey(Buffer.from(TEST_P2PK_PRIVKEY, 'hex'))).toString('hex');
    const token = await lockedToken(proxy.url, 2, ourPubkey);
    expect((await chat(suite.gw, bearer(token), { max_tokens: 1 })).status).toBe(200);
    const [proof] = getDecodedToken(token, (await wallet(proxy.url)).keyChain.getAllKeysetIds()).proofs;
    // Journaled as such a swap is (no outputs), then left as a crash leaves it.
    const opId = crypto.randomUUID();
    const inputs = await suite.gw.ledger.startSweep({ opId, mint: proxy.url, unit: 'sat', limit: 1, only: [proof!.secret] });
    expect(inputs).toHaveLength(1);
    await suite.gw.ledger.journalOutputs(opId, [], inputs);
    await new Promise((r) => setTimeout(r, 1_100));
    await suite.gw.wallets.recoverAll();
    expect(await suite.gw.ledger.pendingOps()).toEqual([]);
    expect(await suite.gw.ledger.heldProofs(proxy.url, 'sat')).toContainEqual(expect.objectContaining({ secret: proof!.secret }));
    expect(await suite.gw.wallets.sweepLocked()).toBe(1);
    expect(await proofStates(suite.mintUrl, await direct(token))).toEqual(['SPENT']);
  });
});

describe('a held proof the mint says is spent (spent elsewhere, behind the gateway\'s back)', () => {
  it('is written off when a refund swap picking it is refused, and the refund is paid at once from other proofs', async () => {
    // A gateway of its own, with no change float: what it holds is exactly what was paid in.
    const gw = await startGateway(suite.mintUrl, suite.upstream, { CHANGE_FLOAT_PROOFS: '0' });
    try {
      const refundOn = async (key: string) => {
        const res = await fetch(`${gw.url}/v1/balance/refund`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(key) }, body: '{}' });
        return { status: res.status, json: (await res.json()) as RefundJson };
      };
      // Key c pays for a long prompt (over 2 sats, so the loss below stays within the earnings).
      const c = await fundedKey(gw, suite.mintUrl, 8);
      expect((await chat(gw, bearer(c.key), { max_tokens: 1, messages: [{ role: 'user', content: 'word '.repeat(1000) }] })).status).toBe(200);
      // Key a: 6 sats less an answer. Its refund of 5 sats takes the 4 and the 2 (no exact set,
      // and the fewest that cover it): a swap that needs both.
      const a = await fundedKey(gw, suite.mintUrl, 6);
      expect((await chat(gw, bearer(a.key), { max_tokens: 1 })).status).toBe(200);
      const balance = (await gw.ledger.getKey(a.hash))!.balance;
      expect(Math.floor(balance / 1000)).toBe(5);
      const held = await gw.ledger.heldProofs(suite.mintUrl, 'sat');
      expect(held.map((p) => p.amount).sort((x, y) => x - y)).toEqual([2, 4, 8]);
      // The 2 is spent at the mint by someone else (the operator's wallet, say): the gateway is not told.
      const stolen = held.find((p) => p.amount === 2)!;
      expect(await receive(suite.mintUrl, getEncodedToken({ mint: suite.mintUrl, unit: 'sat', proofs: [toProof(stolen)] }))).toBe(2);
      const before = await gw.ledger.totals();

      // The mint refuses the swap (an input is spent): the gateway asks it (NUT-07) which, books
      // that one as lost, and pays the refund from the others.
      const r = await refundOn(a.key);
      expect([r.status, r.json.sats, r.json.error?.code]).toEqual([200, '5', undefined]);
      expect(await receive(suite.mintUrl, r.json.token!)).toBe(5);
      const k = (await gw.ledger.getKey(a.hash))!;
      expect([k.balance, k.reserved]).toEqual([balance % 1000, 0]);
      expect(await gw.ledger.pendingOps()).toEqual([]);
      expect((await gw.ledger.heldProofs(suite.mintUrl, 'sat')).map((p) => p.secret)).not.toContain(stolen.secret);
      // The lost sat is the operator's cost, booked as such, not silently dropped.
      expect((await gw.ledger.totals()).fees - before.fees).toBe(2000);
      await expectMoneyConserved(gw);
      await expectDrained(gw, { prices: PRICES });
    } finally {
      await gw.close();
    }
  });

  it('in a withdrawal of the earnings: the loss comes out of them, and what is left is paid at once', async () => {
    const gw = await startGateway(suite.mintUrl, suite.upstream, { CHANGE_FLOAT_PROOFS: '0' });
    try {
      // Key c's long prompt earns the operator over 5 sats; key a puts a 4 and a 2 in the wallet.
      const c = await fundedKey(gw, suite.mintUrl, 8);
      expect((await chat(gw, bearer(c.key), { max_tokens: 1, messages: [{ role: 'user', content: 'word '.repeat(2100) }] })).status).toBe(200);
      await fundedKey(gw, suite.mintUrl, 6);
      const t = await gw.ledger.totals();
      const earnings = t.charged - t.withdrawn - t.fees;
      expect(Math.floor(earnings / 1000)).toBe(5);
      const held = await gw.ledger.heldProofs(suite.mintUrl, 'sat');
      expect(held.map((p) => p.amount).sort((x, y) => x - y)).toEqual([2, 4, 8]);
      // 5 sats take the 4 and the 2, a swap that needs both; the 2 is spent behind the gateway's back.
      const stolen = held.find((p) => p.amount === 2)!;
      expect(await receive(suite.mintUrl, getEncodedToken({ mint: suite.mintUrl, unit: 'sat', proofs: [toProof(stolen)] }))).toBe(2);

      const w = (await gw.wallets.withdraw())!;
      const owed = Math.floor((earnings - 2000) / 1000);
      expect([w.state, w.amount]).toEqual(['done', owed]);
      expect(await receive(suite.mintUrl, w.token!)).toBe(owed);
      const after = await gw.ledger.totals();
      expect([after.fees - t.fees, after.withdrawn - t.withdrawn]).toEqual([2000, owed * 1000]);
      expect(await gw.ledger.pendingOps()).toEqual([]);
      await expectDrained(gw, { prices: PRICES });
    } finally {
      await gw.close();
    }
  });
});

describe('a mint that took a refund swap and says it refused it', () => {
  it('its inputs spent: restored and paid once, nothing booked as lost', async () => {
    const gw = await startGateway(proxy.url, suite.upstream, { CHANGE_FLOAT_PROOFS: '0', MINT_TIMEOUT_MS: '500' });
    try {
      const { key, hash } = await fundedKey(gw, proxy.url, 20);
      expect((await chat(gw, bearer(key), { max_tokens: 1 })).status).toBe(200);
      const balance = (await gw.ledger.getKey(hash))!.balance;
      const owed = Math.floor(balance / 1000);
      const fees = (await gw.ledger.totals()).fees;
      const dropped = proxy.dropped.length;
      proxy.faults.set('/v1/swap', { drop: true, answer: { status: 400, body: { detail: 'Token already spent.', code: 11001 } } });
      const r = await fetch(`${gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${key}` } });
      expect(proxy.dropped.slice(dropped), 'the mint took the swap').toEqual(['/v1/swap']);
      proxy.faults.clear();
      const json = (await r.json()) as RefundJson;
      expect([r.status, json.sats]).toEqual([200, String(owed)]);
      expect((await gw.ledger.totals()).fees - fees, 'msats written off').toBe(0);
      const again = await fetch(`${gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${key}` } });
      expect([again.status, ((await again.json()) as RefundJson).token]).toEqual([200, json.token]);
      expect(await receive(suite.mintUrl, await direct(json.token!))).toBe(owed);
      await expectMoneyConserved(gw);
    } finally {
      await gw.close();
    }
  });
});
