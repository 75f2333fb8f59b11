import { beforeAll, describe, expect, it } from 'vitest';
import { getEncodedToken, getPubKeyFromPrivKey } from '@cashu/cashu-ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { PRICES, TEST_P2PK_PRIVKEY } from './support/gateway.ts';
import { chat as sharedChat, useGateway } from './support/suite.ts';
import type { Billed, WireError } from './support/wire.ts';
import { lockedToken, mintProofs, mintToken, proofStates, receive, wallet } from './support/cashu.ts';
import { externalInvoice } from './support/invoice.ts';
import { startCdkMint } from './support/cdk-mint.ts';
import type { RunningMint } from './support/mint.ts';
import { sha256Hex } from '../src/cashu/credential.ts';

// The money cases again, against a second mint implementation: cdk-mintd (Rust, the Cashu
// Development Kit), whose keysets carry NUT-02 v2 ids, so every cashuB token here has short ids.
let mint: RunningMint;
let proxy: CountingProxy;
let mintUrl: string;
const ourPubkey = Buffer.from(getPubKeyFromPrivKey(Buffer.from(TEST_P2PK_PRIVKEY, 'hex'))).toString('hex');
/** gpt-dear earns the operator whole sats quickly, for the withdrawal. */
const CDK_PRICES = { ...PRICES, 'gpt-dear': { prompt: 200, completion: 200 } };

// The first run on a machine builds cdk-mintd with cargo: its own hook, with the time that takes.
beforeAll(async () => {
  mint = await startCdkMint();
  proxy = new CountingProxy(mint.url);
  mintUrl = await proxy.start();
}, 40 * 60_000);
// The gateway trusts cdk-mintd alone, so the drain at the end redeems everything there.
const suite = useGateway({
  env: () => ({ CASHU_MINTS: mintUrl, MODEL_PRICES: JSON.stringify(CDK_PRICES) }),
  prices: CDK_PRICES,
  after: async () => {
    await proxy?.stop();
    await mint?.stop();
  },
});

const chat = async <T = Billed>(headers: Record<string, string>, body: Record<string, unknown> = {}) => {
  const res = await sharedChat(suite.gw, headers, { messages: [{ role: 'user', content: 'cdk' }], max_tokens: 2, ...body });
  return { status: res.status, headers: res.headers, json: (await res.json()) as T };
};

async function keysetIds(): Promise<string[]> {
  const res = (await (await fetch(`${mint.url}/v1/keysets`)).json()) as { keysets: Array<{ id: string; unit: string }> };
  return res.keysets.filter((k) => k.unit === 'sat').map((k) => k.id);
}

describe('cdk-mintd: a second mint implementation, with v2 keysets', () => {
  it('serves v2 keyset ids, which cashu-ts writes short in cashuB tokens', async () => {
    const ids = await keysetIds();
    expect(ids.length).toBeGreaterThan(0);
    for (const id of ids) expect(id).toMatch(/^01[0-9a-f]{64}$/);
    const proofs = await mintProofs(mintUrl, 3);
    expect(proofs.every((p) => ids.includes(p.id))).toBe(true);
    const token = getEncodedToken({ mint: mintUrl, unit: 'sat', proofs });
    // The 8-byte short id is in the CBOR; the 33-byte id is not.
    const cbor = Buffer.from(token.slice(6), 'base64');
    expect(cbor.includes(Buffer.from(proofs[0]!.id.slice(0, 16), 'hex'))).toBe(true);
    expect(cbor.includes(Buffer.from(proofs[0]!.id, 'hex'))).toBe(false);
    expect(await receive(mintUrl, token)).toBe(3);
  });

  it('credits a token, spends it, and refunds the rest as a token the mint honours', async () => {
    const token = await mintToken(mintUrl, 50);
    const res = await chat({ authorization: `Bearer ${token}` });
    expect(res.status).toBe(200);
    const cost = res.json.usage.cost.total_msats;
    expect((await suite.gw.ledger.getKey(sha256Hex(token)))!.balance).toBe(50_000 - cost);
    // The gateway swapped the token at the mint: the client's proofs are spent.
    expect(new Set(await proofStates(mintUrl, token))).toEqual(new Set(['SPENT']));

    const refund = await fetch(`${suite.gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    const body = (await refund.json()) as { token: string; sats: string };
    expect([refund.status, body.sats]).toEqual([200, String(Math.floor((50_000 - cost) / 1000))]);
    expect(await receive(mintUrl, body.token)).toBe(Math.floor((50_000 - cost) / 1000));
    expect((await suite.gw.ledger.getKey(sha256Hex(token)))!.balance).toBe((50_000 - cost) % 1000);
  });

  it('pays one request with X-Cashu and returns the change in X-Cashu', async () => {
    const token = await mintToken(mintUrl, 30);
    const before = await suite.gw.ledger.totals();
    const res = await chat({ 'x-cashu': token });
    expect(res.status).toBe(200);
    const cost = res.json.usage.cost.total_msats;
    const change = res.headers.get('x-cashu')!;
    expect(await receive(mintUrl, change)).toBe(Math.floor((30_000 - cost) / 1000));
    const after = await suite.gw.ledger.totals();
    expect([after.credited - before.credited, after.charged - before.charged]).toEqual([30_000, cost]);
  });

  it('takes ecash locked to the gateway key offline (no mint call), then redeems it in a sweep', async () => {
    const locked = await lockedToken(mintUrl, 20, ourPubkey);
    proxy.reset();
    const res = await chat({ authorization: `Bearer ${locked}` });
    expect(res.status).toBe(200);
    expect(proxy.calls).toEqual([]);
    expect((await suite.gw.ledger.getKey(sha256Hex(locked)))!.balance).toBe(20_000 - res.json.usage.cost.total_msats);
    expect(new Set(await proofStates(mintUrl, locked))).toEqual(new Set(['UNSPENT']));

    expect(await suite.gw.wallets.sweepLocked()).toBeGreaterThanOrEqual(1);
    expect(new Set(await proofStates(mintUrl, locked))).toEqual(new Set(['SPENT']));
  });

  it('refuses an unknown short keyset id with unknown_keyset, and the proofs stay with their owner', async () => {
    const proofs = await mintProofs(mintUrl, 4);
    const forged = getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: proofs.map((p) => ({ ...p, id: `01${'9d'.repeat(32)}` })) });
    proxy.reset();
    const res = await chat<WireError>({ authorization: `Bearer ${forged}` });
    expect([res.status, res.json.error.code]).toEqual([400, 'unknown_keyset']);
    expect(proxy.calls.filter((c) => c.includes('/v1/swap'))).toEqual([]);
    const w = await wallet(mintUrl);
    expect((await w.checkProofsStates(proofs)).map((s) => s.state)).toEqual(proofs.map(() => 'UNSPENT'));
  });

  it('withdraws earnings to a Lightning invoice through a melt the mint pays', async () => {
    const key = await mintToken(mintUrl, 200);
    const pricey = { model: 'gpt-dear', max_tokens: 3 };
    // Earn enough, then withdraw 7 sats; the fake wallet's fee reserve is 1 sat at least.
    for (;;) {
      const t = await suite.gw.ledger.totals();
      if (t.charged - t.withdrawn - t.fees >= 12_000) break;
      expect((await chat({ authorization: `Bearer ${key}` }, pricey)).status).toBe(200);
    }
    const before = await suite.gw.ledger.totals();
    const melt = await suite.gw.wallets.melt(externalInvoice(7));
    expect(melt.state).toBe('paid');
    expect((await (await wallet(mintUrl)).checkMeltQuoteBolt11(melt.quote)).state).toBe('PAID');
    const after = await suite.gw.ledger.totals();
    expect(after.withdrawn - before.withdrawn).toBe(7_000);
    expect(after.fees - before.fees).toBeGreaterThanOrEqual(0);
    expect(after.fees - before.fees).toBeLessThanOrEqual(melt.feeReserve * 1000);
  });
});
