import { describe, expect, inject, it } from 'vitest';
import { FakeUpstream } from './support/upstream.ts';
import { expectMoneyConserved, startGateway, type Gateway } from './support/gateway.ts';
import { useGateway, waitFor } from './support/suite.ts';
import { mintToken, wallet } from './support/cashu.ts';
import { externalInvoice } from './support/invoice.ts';
import { LnurlDouble } from './support/lnurl.ts';
import { startMint, startMintAgain } from './support/mint.ts';

const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
const lnurl = new LnurlDouble();

const PEERS = { ALLOW_INSECURE_PEERS_FOR_TESTS_ONLY: 'true', PEER_TIMEOUT_MS: '1000', PEER_MAX_BYTES: '20000' };

async function post(path: string, body: unknown, key?: string, g: Gateway = suite.gw) {
  const res = await fetch(`${g.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

/** A fresh key holding `sats`. */
async function funded(sats: number, g: Gateway = suite.gw, mint = mintUrl): Promise<string> {
  const created = await post('/v1/balance/create', { initial_balance_token: await mintToken(mint, sats) }, undefined, g);
  expect(created.json.balance).toBe(sats * 1000);
  return created.json.api_key as string;
}

const balanceOf = async (key: string, g: Gateway = suite.gw) => {
  const k = (await g.ledger.getKey(key.slice(3)))!;
  return k.balance - k.reserved;
};

const suite = useGateway({ upstream, env: PEERS, before: () => lnurl.start(), after: () => lnurl.stop() });

describe('refunds to a Lightning address (LUD-16, LUD-06)', () => {
  it('pays the balance less the fee reserve, gives back the unused reserve, and a retry pays nothing more', async () => {
    const key = await funded(50);
    const before = await suite.gw.ledger.totals();
    const r = await post('/v1/balance/refund', { lightning_address: lnurl.address('alice') }, key);
    expect(r.status).toBe(200);
    // 50 sats held: the mint reserves 2 for a 48-sat payment, which costs FakeWallet 1.
    expect(r.json).toMatchObject({ lightning_address: lnurl.address('alice'), state: 'paid', sats: '48', fee_reserve_sats: '2', fee_sats: '1', balance: 1000 });
    expect(r.json.invoice).toMatch(/^lnbc480n1/);
    const melt = (await suite.gw.ledger.latestMelt(key.slice(3)))!;
    expect(melt.id).toBe(r.json.refund_id);
    expect((await (await wallet(mintUrl)).checkMeltQuoteBolt11(melt.quote)).state).toBe('PAID');
    expect(await balanceOf(key)).toBe(1000);
    const after = await suite.gw.ledger.totals();
    expect(after.refunded - before.refunded).toBe(49_000);

    const callbacks = lnurl.hits.filter((h) => h === '/cb/alice').length;
    const again = await post('/v1/balance/refund', { lightning_address: lnurl.address('alice') }, key);
    expect(again.status).toBe(200);
    expect(again.json.refund_id).toBe(r.json.refund_id);
    expect(await suite.gw.ledger.totals()).toEqual(after);
    // Not even an invoice was asked for.
    expect(lnurl.hits.filter((h) => h === '/cb/alice').length).toBe(callbacks);
  });

  it('needs a key, and one field or the other', async () => {
    const none = await post('/v1/balance/refund', { lightning_address: lnurl.address('alice') });
    expect([none.status, none.json.error.code]).toEqual([401, 'invalid_api_key']);
    const key = await funded(5);
    const both = await post('/v1/balance/refund', { lightning_address: lnurl.address('alice'), invoice: 'lnbc1' }, key);
    expect([both.status, both.json.error.code]).toEqual([400, 'invalid_request']);
    const bad = await post('/v1/balance/refund', { lightning_address: 'not an address' }, key);
    expect([bad.status, bad.json.error.code]).toEqual([400, 'invalid_lightning_address']);
    expect(await balanceOf(key)).toBe(5000);
  });

  // Each server misbehaves in its own way; none of them costs the key a msat.
  const hostile: Array<[name: string, reason: string]> = [
    ['garbage', 'not_json'],
    ['wrongtag', 'bad_answer'],
    ['refuses', 'refused'],
    ['redirect', 'redirect'],
    ['cbredirect', 'redirect'],
    ['slow', 'timeout'],
    ['huge', 'too_large'],
    ['private', 'private_address'],
    ['greedy', 'wrong_amount'],
  ];
  it.each(hostile)('a server that is %s: 400 with reason %s, the balance whole', async (name, reason) => {
    const key = await funded(20);
    const before = await suite.gw.ledger.totals();
    const r = await post('/v1/balance/refund', { lightning_address: lnurl.address(name) }, key);
    expect([r.status, r.json.error.code, r.json.error.reason]).toEqual([400, 'lightning_address_unusable', reason]);
    expect(await balanceOf(key)).toBe(20_000);
    expect(await suite.gw.ledger.totals()).toEqual(before);
    expect(await suite.gw.ledger.latestMelt(key.slice(3))).toBeUndefined();
  });

  it('a Lightning address on a private IP is never contacted', async () => {
    const key = await funded(10);
    for (const address of ['bob@10.0.0.1', 'bob@192.168.1.1', 'bob@169.254.169.254']) {
      const r = await post('/v1/balance/refund', { lightning_address: address }, key);
      expect([r.status, r.json.error.reason]).toEqual([400, 'private_address']);
    }
    expect(await balanceOf(key)).toBe(10_000);
  });
});

describe('refunds to a Lightning invoice', () => {
  it('pays the invoice from the balance with its fee; the same invoice again is the same refund', async () => {
    const key = await funded(20);
    const invoice = externalInvoice(10);
    const r = await post('/v1/balance/refund', { invoice }, key);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ invoice, state: 'paid', sats: '10', fee_reserve_sats: '2', fee_sats: '1', balance: 9000 });
    expect(r.json.lightning_address).toBeUndefined();
    const after = await suite.gw.ledger.totals();
    const again = await post('/v1/balance/refund', { invoice }, key);
    expect([again.status, again.json.refund_id]).toEqual([200, r.json.refund_id]);
    expect(await suite.gw.ledger.totals()).toEqual(after);
    expect(await balanceOf(key)).toBe(9000);
  });

  it('refuses an invoice the balance cannot cover with the reserve, one without an amount, and garbage', async () => {
    const key = await funded(10);
    const before = await suite.gw.ledger.totals();
    // 9 sats plus the mint's 2-sat reserve is more than the 10 held.
    const big = await post('/v1/balance/refund', { invoice: externalInvoice(9) }, key);
    expect([big.status, big.json.error.code, big.json.error.needed_msats]).toEqual([400, 'balance_too_low', 11_000]);
    const open = await post('/v1/balance/refund', { invoice: externalInvoice(0) }, key);
    expect([open.status, open.json.error.code]).toEqual([400, 'invalid_invoice']);
    const junk = await post('/v1/balance/refund', { invoice: 'lnbc10u1notaninvoice' }, key);
    expect([junk.status, junk.json.error.code]).toEqual([400, 'invalid_invoice']);
    expect(await suite.gw.ledger.totals()).toEqual(before);
    expect(await balanceOf(key)).toBe(10_000);
  });
});

describe('a refund to Lightning the mint cannot pay', () => {
  it('answers 502 payment_failed and the balance is whole again', async () => {
    const failing = await startMint({ lightning: 'fails' });
    const g = await startGateway(failing.url, upstream, PEERS);
    try {
      const key = await funded(30, g, failing.url);
      const before = await g.ledger.totals();
      const r = await post('/v1/balance/refund', { lightning_address: lnurl.address('alice') }, key, g);
      expect([r.status, r.json.error.code]).toEqual([502, 'payment_failed']);
      expect(await balanceOf(key, g)).toBe(30_000);
      expect(await g.ledger.totals()).toEqual(before);
      expect((await g.ledger.latestMelt(key.slice(3)))!.state).toBe('failed');
      await expectMoneyConserved(g);
    } finally {
      await g.close();
      await failing.stop();
    }
  });
});

describe('a refund to Lightning whose payment stays in flight', () => {
  it('is answered as pending, not paid again on retry, and settled from the quote once the node settles', async () => {
    let mint = await startMint({ lightning: 'stalls' });
    const g = await startGateway(mint.url, upstream, { ...PEERS, MINT_TIMEOUT_MS: '500' });
    try {
      const key = await funded(30, g, mint.url);
      const r = await post('/v1/balance/refund', { lightning_address: lnurl.address('alice') }, key, g);
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ state: 'pending', sats: '28', fee_reserve_sats: '2', fee_sats: null, balance: 0 });
      const callbacks = lnurl.hits.filter((h) => h === '/cb/alice').length;
      const again = await post('/v1/balance/refund', { lightning_address: lnurl.address('alice') }, key, g);
      expect([again.status, again.json.refund_id, again.json.state]).toEqual([200, r.json.refund_id, 'pending']);
      expect(lnurl.hits.filter((h) => h === '/cb/alice').length).toBe(callbacks);
      const viaInvoice = await post('/v1/balance/refund', { invoice: externalInvoice(1) }, key, g);
      expect(viaInvoice.json.refund_id).toBe(r.json.refund_id);

      await mint.stop();
      mint = await startMintAgain(mint);
      // Past the op's lease (twice MINT_TIMEOUT_MS), recovery may settle it.
      await waitFor(async () => {
        await g.wallets.recoverAll();
        return (await g.ledger.latestMelt(key.slice(3)))!.state !== 'pending';
      }, 'the melt settled past its lease', 10_000);
      const melt = (await g.ledger.latestMelt(key.slice(3)))!;
      expect([melt.state, melt.amount]).toEqual(['paid', 28]);
      expect(await balanceOf(key, g)).toBe((2 - melt.fee!) * 1000);
      await expectMoneyConserved(g);
    } finally {
      await g.close();
      await mint.stop();
    }
  });
});
