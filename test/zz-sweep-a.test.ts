import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Amount, OutputData, blindMessage, getEncodedToken, getPubKeyFromPrivKey, type Keyset, type Proof } from '@cashu/cashu-ts';
import { FakeUpstream } from './support/upstream.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { TEST_P2PK_PRIVKEY, startGateway, type Gateway } from './support/gateway.ts';
import { lockedToken, mintProofs, mintToken, proofStates, wallet } from './support/cashu.ts';

const realMint = inject('mintUrl');
const upstream = new FakeUpstream();
const proxy = new CountingProxy(realMint);
let mintUrl: string;
const ours = Buffer.from(getPubKeyFromPrivKey(Buffer.from(TEST_P2PK_PRIVKEY, 'hex'))).toString('hex');

beforeAll(async () => {
  await upstream.start();
  mintUrl = await proxy.start();
});
afterAll(async () => {
  await proxy.stop();
  await upstream.stop();
});

async function proofsWithSecret(amount: number, shape: (nonce: string) => unknown[]): Promise<Proof[]> {
  const w = await wallet(realMint);
  const factory = (a: number | Amount, keyset: Keyset) => {
    const bytes = new TextEncoder().encode(JSON.stringify(shape(randomBytes(16).toString('hex'))));
    const { B_, r } = blindMessage(bytes);
    return new OutputData({ amount: Amount.from(a), B_: B_.toHex(true), id: keyset.id } as never, r, bytes);
  };
  return (await w.ops.send(amount, await mintProofs(realMint, amount)).asFactory(factory as never).run()).send;
}

async function create(gw: Gateway, token: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${gw.url}/v1/balance/create`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ initial_balance_token: token }),
  });
  return { status: res.status, body: await res.json() };
}

const longShape = (n: string) => ['P2PK', { nonce: n + 'a'.repeat(1100), data: ours }];

it('F1: a P2PK secret longer than nutshell allows is credited offline, then written off', async () => {
  const gw = await startGateway(mintUrl, upstream, {});
  try {
    // Liquidity, and the wallet loaded.
    expect((await create(gw, await mintToken(mintUrl, 200))).status).toBe(200);
    const long = await proofsWithSecret(64, longShape);
    const tok = getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: long });
    proxy.reset();
    const r = await create(gw, tok);
    console.log('F1 create', r.status, JSON.stringify(r.body), 'mint calls', proxy.calls);
    expect(r.status).toBe(200);
    // A good locked one too, so the sweep takes something.
    expect((await create(gw, await lockedToken(mintUrl, 8, ours))).status).toBe(200);
    const before = await gw.ledger.totals();
    proxy.reset();
    const swept = await gw.wallets.sweepLocked();
    const after = await gw.ledger.totals();
    console.log('F1 swept', swept, 'fees delta', after.fees - before.fees, 'calls', proxy.calls.length);
    console.log('F1 mint states of long proofs', await proofStates(mintUrl, getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: long })));
    // The attacker refunds the credit: real ecash out.
    const ref = await fetch(`${gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${r.body.api_key}` } });
    const rb = (await ref.json()) as any;
    console.log('F1 refund', ref.status, rb.msats ?? rb, rb.token ? 'token' : '');
    const t = await gw.ledger.totals();
    console.log('F1 totals', JSON.stringify(t));
  } finally {
    await gw.close();
  }
});

it('F2: bad proofs ahead of a good one: each sweep isolates at most 8, the good one waits', async () => {
  const gw = await startGateway(mintUrl, upstream, {});
  try {
    expect((await create(gw, await mintToken(mintUrl, 5))).status).toBe(200);
    const bad: Proof[] = [];
    for (let i = 0; i < 20; i++) bad.push(...(await proofsWithSecret(1, longShape)));
    expect((await create(gw, getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: bad }))).status).toBe(200);
    const good = await lockedToken(mintUrl, 8, ours);
    expect((await create(gw, good)).status).toBe(200);
    for (let s = 1; s <= 4; s++) {
      proxy.reset();
      const t0 = Date.now();
      const before = (await gw.ledger.totals()).fees;
      const swept = await gw.wallets.sweepLocked();
      const swaps = proxy.calls.filter((c) => c === 'POST /v1/swap').length;
      console.log(`F2 sweep ${s}: swept ${swept}, swaps ${swaps}, calls ${proxy.calls.length}, ms ${Date.now() - t0}, good ${JSON.stringify(await proofStates(mintUrl, good))}, fees +${(await gw.ledger.totals()).fees - before}`);
    }
  } finally {
    await gw.close();
  }
});

it('F3: a short mint hiccup right after a good batch writes off every good proof left in the sweep', async () => {
  const gw = await startGateway(mintUrl, upstream, {});
  try {
    expect((await create(gw, await mintToken(mintUrl, 5))).status).toBe(200);
    const tokens: string[] = [];
    for (let i = 0; i < 13; i++) {
      const t = await lockedToken(mintUrl, 255, ours);
      tokens.push(t);
      expect((await create(gw, t)).status).toBe(200);
    }
    const before = await gw.ledger.totals();
    const body = { detail: 'internal error', code: 0 };
    let swaps = 0;
    let t0 = 0;
    proxy.onRequest = async (_m, path) => {
      if (path !== '/v1/swap') return;
      if (++swaps === 1) {
        t0 = Date.now();
        proxy.faults.set('/v1/swap', { fail: 400, body });
      }
    };
    proxy.reset();
    let swept;
    try {
      swept = await gw.wallets.sweepLocked();
    } finally {
      proxy.faults.delete('/v1/swap');
      proxy.onRequest = undefined;
    }
    const window = Date.now() - t0;
    const after = await gw.ledger.totals();
    const states = (await Promise.all(tokens.map((t) => proofStates(mintUrl, t)))).flat();
    console.log('F3 swept', swept, 'hiccup lasted (ms)', window, 'swap calls', proxy.calls.filter((c) => c === 'POST /v1/swap').length, 'fees delta msat', after.fees - before.fees, 'unspent at mint', states.filter((s) => s === 'UNSPENT').length);
    const held = (await gw.ledger.heldProofs(mintUrl, 'sat')).filter((p) => p.secret.startsWith('["P2PK"'));
    console.log('F3 locked still held', held.length);
  } finally {
    await gw.close();
  }
});
