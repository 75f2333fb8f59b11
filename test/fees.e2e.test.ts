import { afterEach, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { PaymentRequest, Wallet, getDecodedToken, getEncodedToken, getPubKeyFromPrivKey, getTokenMetadata } from '@cashu/cashu-ts';
import { FakeUpstream } from './support/upstream.ts';
import { TEST_P2PK_PRIVKEY, expectMoneyConserved, startGateway, type Gateway } from './support/gateway.ts';
import { lockedToken, mintProofs, mintToken, proofStates, receive, wallet } from './support/cashu.ts';
import { startMint, type RunningMint } from './support/mint.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import { chat as sharedChat, useGateway } from './support/suite.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { toStored } from '../src/cashu/proofs.ts';

const upstream = new FakeUpstream();
let feeMint: RunningMint;
const logLines: Array<Record<string, any>> = [];
const ourPubkey = Buffer.from(getPubKeyFromPrivKey(Buffer.from(TEST_P2PK_PRIVKEY, 'hex'))).toString('hex');

/** What the mint takes to redeem a token: 100 ppk per proof, rounded up. */
const redeemFee = (token: string) => Math.ceil(((getTokenMetadata(token).proofAmounts?.length ?? 0) * 100) / 1000);
const proofCount = (token: string) => getTokenMetadata(token).proofAmounts?.length ?? 0;
/** The fewest proofs a wallet can make for an amount from a keyset of every power of two. */
const fewest = (sats: number) => sats.toString(2).replaceAll('0', '').length;

/** A gateway of its own, so the proofs it holds are only those the test gave it. */
async function freshGateway(env: Record<string, string> = {}): Promise<Gateway> {
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logLines.push(JSON.parse(line));
      cb();
    },
  });
  const g = await startGateway(
    feeMint.url,
    upstream,
    { MODEL_PRICES: JSON.stringify(FEE_PRICES), ...env },
    { log: pino({ level: 'info' }, sink) },
  );
  extra.push(g);
  return g;
}
const extra: Gateway[] = [];

async function chat(headers: Record<string, string>, on: Gateway = suite.gw) {
  const res = await sharedChat(on, headers, { messages: [{ role: 'user', content: 'fees' }], max_tokens: 2 });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, any> };
}

/** Requests paid with `token` until the operator has earned 2 sats, what the sweeps below cost in fees. */
async function earn(g: Gateway, token: string): Promise<void> {
  for (let t = await g.ledger.totals(); t.charged - t.withdrawn - t.fees < 2_000; t = await g.ledger.totals()) {
    expect((await chat({ authorization: `Bearer ${token}` }, g)).status).toBe(200);
  }
}

/** A balance key funded with `token`: the status of the answer. */
async function createBalance(g: Gateway, token: string): Promise<number> {
  const res = await fetch(`${g.url}/v1/balance/create`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ initial_balance_token: token }) });
  return res.status;
}

const FEE_PRICES = { 'gpt-test': { prompt: 200, completion: 900 } };
const suite = useGateway({
  upstream,
  before: async () => (feeMint = await startMint({ inputFeePpk: 100 })),
  env: () => ({ CASHU_MINTS: feeMint.url, MODEL_PRICES: JSON.stringify(FEE_PRICES) }),
  prices: FEE_PRICES,
  after: () => feeMint.stop(),
});
afterEach(async () => {
  for (const g of extra.splice(0)) {
    await expectMoneyConserved(g);
    await g.close();
  }
});

describe('a mint that charges input fees (100 ppk)', () => {
  it('credits a token net of the swap fee, and books what the mint takes on refunds and change', async () => {
    const token = await mintToken(feeMint.url, 100);
    const proofs = getTokenMetadata(token).proofAmounts?.length ?? 3;
    const res = await chat({ authorization: `Bearer ${token}` });
    expect(res.status).toBe(200);
    const fee = Math.ceil((proofs * 100) / 1000);
    const key = (await suite.gw.ledger.getKey(sha256Hex(token)))!;
    expect(key.balance).toBe((100 - fee) * 1000 - res.json.usage.cost.total_msats);

    const refund = await fetch(`${suite.gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(refund.status).toBe(200);
    const body = (await refund.json()) as { token: string; sats: string };
    expect(Number(body.sats)).toBe(Math.floor(((100 - fee) * 1000 - res.json.usage.cost.total_msats) / 1000));
    // The token is worth what the refund says; its holder pays the mint's fee to redeem it.
    expect(getTokenMetadata(body.token).amount.toNumber()).toBe(Number(body.sats));
    expect(await receive(feeMint.url, body.token)).toBe(Number(body.sats) - redeemFee(body.token));

    const x = await mintToken(feeMint.url, 60);
    const xFee = Math.ceil(((getTokenMetadata(x).proofAmounts?.length ?? 0) * 100) / 1000);
    const paid = await chat({ 'x-cashu': x });
    expect(paid.status).toBe(200);
    const change = paid.headers.get('x-cashu')!;
    const changeSats = Math.floor(((60 - xFee) * 1000 - paid.json.usage.cost.total_msats) / 1000);
    expect(getTokenMetadata(change).amount.toNumber()).toBe(changeSats);
    expect(await receive(feeMint.url, change)).toBe(changeSats - redeemFee(change));
    // The fees the gateway's own swaps paid are on the books as the operator's cost.
    expect((await suite.gw.ledger.totals()).fees).toBeGreaterThan(0);
  });

  it('pays a P2PK-locked X-Cashu request its change, the swap allowing for the fee at the operator\'s cost', async () => {
    // A gateway whose only proofs are the locked ones: the change must be swapped out of them.
    const g = await freshGateway();
    const x = await lockedToken(feeMint.url, 127, ourPubkey, { swapFee: 1 });
    const paid = await chat({ 'x-cashu': x }, g);
    expect(paid.status).toBe(200);
    const change = paid.headers.get('x-cashu');
    expect(change).toBeTruthy();
    // Locked proofs are credited whole: no swap happened on the way in.
    const changeSats = Math.floor((127 * 1000 - paid.json.usage.cost.total_msats) / 1000);
    expect(getTokenMetadata(change!).amount.toNumber()).toBe(changeSats);
    expect(proofCount(change!)).toBe(fewest(changeSats));
    expect(await receive(feeMint.url, change!)).toBe(changeSats - Math.ceil((fewest(changeSats) * 100) / 1000));
    expect((await g.ledger.totals()).fees).toBeGreaterThan(0);
    expect(logLines.filter((l) => l.msg === 'could not make change')).toEqual([]);
  });

  it('pays change and a refund in the fewest proofs, not the small proofs of the change float', async () => {
    const g = await freshGateway();
    // Locked ecash taken offline, then swept: the sweep keeps it as the float (8 of each small proof).
    const bearer = await lockedToken(feeMint.url, 127, ourPubkey, { swapFee: 1 });
    const res = await chat({ authorization: `Bearer ${bearer}` }, g);
    expect(res.status).toBe(200);
    expect(await g.wallets.sweepLocked()).toBe(7);
    expect((await g.ledger.unspentCounts(feeMint.url, 'sat')).get(1)).toBe(8);

    // Change the float alone could pay, as some thirty small proofs.
    const x = await lockedToken(feeMint.url, 127, ourPubkey, { swapFee: 1 });
    const paid = await chat({ 'x-cashu': x }, g);
    expect(paid.status).toBe(200);
    const change = paid.headers.get('x-cashu')!;
    const changeSats = Math.floor((127 * 1000 - paid.json.usage.cost.total_msats) / 1000);
    expect(getTokenMetadata(change).amount.toNumber()).toBe(changeSats);
    expect(proofCount(change)).toBe(fewest(changeSats));
    expect(await receive(feeMint.url, change)).toBe(changeSats - Math.ceil((fewest(changeSats) * 100) / 1000));

    const refund = await fetch(`${g.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${bearer}` } });
    expect(refund.status).toBe(200);
    const body = (await refund.json()) as { token: string; sats: string };
    const sats = Math.floor((127 * 1000 - res.json.usage.cost.total_msats) / 1000);
    expect(Number(body.sats)).toBe(sats);
    expect(proofCount(body.token)).toBe(fewest(sats));
    expect(await receive(feeMint.url, body.token)).toBe(sats - Math.ceil((fewest(sats) * 100) / 1000));
  });

  it('writes off no locked proof worth no more than the fee to swap it alone: it waits, and is swept with the next', async () => {
    const g = await freshGateway({ P2PK_WRITE_OFF_AFTER_SECONDS: '1' });
    const writeOffAge = () => new Promise((r) => setTimeout(r, 1_100));
    const logged = logLines.length;
    // One proof of 1 sat: alone, the mint's fee (100 ppk, rounded up) takes all of it, and nutshell
    // refuses a swap with nothing to sign ("no outputs provided", 11000) however often it is asked.
    const tiny = await lockedToken(feeMint.url, 1, ourPubkey, { swapFee: 1 });
    expect(proofCount(tiny)).toBe(1);
    const created = await fetch(`${g.url}/v1/balance/create`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ initial_balance_token: tiny }) });
    expect(created.status).toBe(200);
    expect(await g.wallets.sweepLocked()).toBe(0);
    // A proof that can pay its way arrives, and earns the gateway what the sweep's fee costs.
    const big = await lockedToken(feeMint.url, 16, ourPubkey, { swapFee: 1 });
    expect(proofCount(big)).toBe(1);
    await earn(g, big);
    const before = await g.ledger.totals();
    // Swept together: the fee of two inputs (ceil(200 / 1000) = 1 sat) is what the operator pays.
    expect(await g.wallets.sweepLocked()).toBe(2);
    await writeOffAge();
    expect(await g.wallets.sweepLocked()).toBe(0);
    for (const t of [tiny, big]) expect(new Set(await proofStates(feeMint.url, t))).toEqual(new Set(['SPENT']));
    const after = await g.ledger.totals();
    expect([after.fees - before.fees, after.credited, after.refunded, after.withdrawn]).toEqual([1_000, before.credited, before.refunded, before.withdrawn]);
    // Never sent alone to be refused.
    expect(logLines.slice(logged).filter((l) => l.msg === 'the mint refused an operation')).toEqual([]);
  });

  it('redeems a lone locked proof worth no more than its fee before its locktime, so its payer cannot take it back', async () => {
    const g = await freshGateway({ P2PK_LOCKTIME_MARGIN_SECONDS: '0' });
    const create = (token: string) => createBalance(g, token);
    // The gateway holds ecash of its own (swapped in online), and then one locked proof of 1 sat,
    // credited, that no other locked proof joins before its locktime.
    // It has earned what sweeping the proof costs it (the fee, at the operator's cost).
    await earn(g, await mintToken(feeMint.url, 64));
    await g.wallets.idle();
    const locktime = Math.floor(Date.now() / 1000) + 4;
    const tiny = await lockedToken(feeMint.url, 1, ourPubkey, { swapFee: 1, locktime });
    expect(await create(tiny)).toBe(200);
    await g.wallets.sweepLocked();
    await g.wallets.idle();
    while (Date.now() / 1000 <= locktime + 1) await new Promise((r) => setTimeout(r, 250));
    // Past its locktime, with no refund key, NUT-11 lets anyone spend it: its payer, with 4 sats of their own for the fee.
    const w = await wallet(feeMint.url);
    const mine = await mintProofs(feeMint.url, 4);
    const takeBack = getEncodedToken({ mint: feeMint.url, unit: 'sat', proofs: [...getDecodedToken(tiny, w.keyChain.getAllKeysetIds()).proofs, ...mine] });
    await expect(w.receive(takeBack)).rejects.toThrow();
  });

  it('does not pay a fee of its own to redeem each lone 1-sat locked proof a stranger sends while its locktime is far off', async () => {
    const g = await freshGateway({ CHANGE_FLOAT_PROOFS: '0' });
    const create = (token: string) => createBalance(g, token);
    // The gateway holds ecash of its own, which the sweep pads a short batch with.
    await earn(g, await mintToken(feeMint.url, 64));
    await g.wallets.idle();
    const fees = async () => (await g.ledger.totals()).fees;
    const before = await fees();
    // A stranger sends 1-sat locked tokens, credited in full, one per sweep, locktime two hours off.
    const locktime = Math.floor(Date.now() / 1000) + 7200;
    expect(await create(await lockedToken(feeMint.url, 1, ourPubkey, { swapFee: 1, locktime }))).toBe(200);
    await g.wallets.sweepLocked();
    await g.wallets.idle();
    // Swept alone with one of ours it costs the operator 1 sat: all it is worth. It can wait for company.
    expect(await fees()).toBe(before);
    expect(await create(await lockedToken(feeMint.url, 1, ourPubkey, { swapFee: 1, locktime }))).toBe(200);
    await g.wallets.sweepLocked();
    await g.wallets.idle();
    // The two go in one swap: one fee (1 sat at 100 ppk) for both.
    expect(await fees()).toBe(before + 1_000);
    expect((await g.ledger.heldProofs(feeMint.url, 'sat')).filter((p) => p.secret.startsWith('["P2PK"'))).toEqual([]);
  });

  it('writes off, once, a lone locked proof near its locktime that the mint refuses as bad though padded with one of ours, and keeps ours', async () => {
    const g = await freshGateway({ P2PK_LOCKTIME_MARGIN_SECONDS: '0', P2PK_WRITE_OFF_AFTER_SECONDS: '1', CHANGE_FLOAT_PROOFS: '0' });
    // The gateway holds ecash of its own, which the sweep pads a short batch with.
    await earn(g, await mintToken(feeMint.url, 64));
    await g.wallets.idle();
    // A 1-sat proof locked to us, near its locktime, its C altered: the mint's check of its
    // signature fails for ever (NUT-00 10001), with one of ours beside it or not.
    const w = await wallet(feeMint.url);
    const genuine = await lockedToken(feeMint.url, 1, ourPubkey, { swapFee: 1, locktime: Math.floor(Date.now() / 1000) + 50 });
    const proof = getDecodedToken(genuine, w.keyChain.getAllKeysetIds()).proofs[0]!;
    const forgedC = Buffer.from(getPubKeyFromPrivKey(Buffer.alloc(32, 9))).toString('hex');
    const forged = toStored({ ...proof, C: forgedC, dleq: undefined });
    const forgedToken = getEncodedToken({ mint: feeMint.url, unit: 'sat', proofs: [{ ...proof, C: forgedC, dleq: undefined }] });
    expect(await g.ledger.acceptLocked({ tokenHash: sha256Hex(forgedToken), keyHash: 'planted', mint: feeMint.url, unit: 'sat', proofs: [forged], creditMsats: 1_000 })).toBe('accepted');
    const ours = async () => (await g.ledger.heldProofs(feeMint.url, 'sat')).filter((p) => !p.secret.startsWith('["P2PK"')).map((p) => p.secret);
    const oursBefore = await ours();
    const before = await g.ledger.totals();
    // Padded, and refused as bad: once is no proof yet (the mint may be failing for a while).
    await g.wallets.sweepLocked();
    await g.wallets.idle();
    expect((await g.ledger.totals()).fees).toBe(before.fees);
    await new Promise((r) => setTimeout(r, 1_100));
    // The mint takes another swap meanwhile: a good locked proof that pays its own way (1 sat of fee).
    const good = await lockedToken(feeMint.url, 8, ourPubkey, { swapFee: 1 });
    expect(await createBalance(g, good)).toBe(200);
    await g.wallets.sweepLocked();
    await g.wallets.idle();
    expect(await proofStates(feeMint.url, good)).toEqual(['SPENT']);
    // Written off to the msat (1 sat), beside the good one's fee; held no more, as the mint says it never was.
    expect((await g.ledger.totals()).fees - before.fees).toBe(1_000 + 1_000);
    expect((await g.ledger.heldProofs(feeMint.url, 'sat')).map((p) => p.secret)).not.toContain(forged.secret);
    // Ours that padded it is ours still, unspent at the mint: nothing of it written off.
    expect(await ours()).toEqual(expect.arrayContaining(oursBefore));
    // And never tried again; the genuine proof under the same secret is untouched at the mint.
    expect(await g.wallets.sweepLocked()).toBe(0);
    expect((await g.ledger.totals()).fees - before.fees).toBe(2_000);
    expect(await proofStates(feeMint.url, genuine)).toEqual(['UNSPENT']);
    await expectMoneyConserved(g);
  });

  it('pads a short batch with the smallest proof that pays its fee, so one left unresolved does not hold back a refund', async () => {
    const proxy = new CountingProxy(feeMint.url);
    await proxy.start();
    // Its own, checked here: the books are checked against the mint through the proxy, before it stops.
    const g = await startGateway(proxy.url, upstream, { MODEL_PRICES: JSON.stringify(FEE_PRICES), CHANGE_FLOAT_PROOFS: '0', P2PK_LOCKTIME_MARGIN_SECONDS: '0', MINT_TIMEOUT_MS: '500' });
    try {
      const create = async (token: string) => {
        const res = await fetch(`${g.url}/v1/balance/create`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ initial_balance_token: token }) });
        expect(res.status).toBe(200);
        return ((await res.json()) as { api_key: string }).api_key;
      };
      // Key a holds 39 sats (the wallet: 32, 4, 2, 1); key b 7 more (4, 2, 1).
      const a = await create(await mintToken(proxy.url, 40));
      const b = await create(await mintToken(proxy.url, 8));
      // Key b's requests earn the operator what its own swaps cost (the fees are its).
      for (let t = await g.ledger.totals(); t.charged - t.fees < 3_000; t = await g.ledger.totals()) {
        expect((await chat({ authorization: `Bearer ${b}` }, g)).status).toBe(200);
      }
      // A lone 1-sat locked proof near its locktime: padded with one of ours. Its swap lands, its answer is lost, and
      // the mint cannot be asked about it for now: the op stays open, with its inputs.
      await create(await lockedToken(proxy.url, 1, ourPubkey, { swapFee: 1, locktime: Math.floor(Date.now() / 1000) + 30 }));
      proxy.faults.set('/v1/swap', { drop: true });
      proxy.faults.set('/v1/restore', { fail: 503, body: { detail: 'unavailable' } });
      await g.wallets.sweepLocked();
      proxy.faults.clear();
      expect(proxy.dropped).toContain('/v1/swap');
      // Key a's refund of 39 sats needs the 32; the 1 (or a 2) would have paid the fee as well.
      const refund = await fetch(`${g.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${a}` } });
      const status = refund.status;
      await new Promise((r) => setTimeout(r, 1_100));
      await g.wallets.recoverAll();
      await g.wallets.idle();
      expect(await g.ledger.pendingOps()).toEqual([]);
      await expectMoneyConserved(g);
      expect(status).toBe(200);
    } finally {
      await g.close();
      await proxy.stop();
    }
  });

  it('pads a short batch with a proof that pays the fee of its own keyset, when the mint charges its keysets differently', { timeout: 180_000 }, async () => {
    // A mint charging 1 sat an input (1000 ppk), the keyset the gateway's own ecash is in.
    let mint = await startMint({ inputFeePpk: 1000 });
    const g = await startGateway(mint.url, upstream, { MODEL_PRICES: JSON.stringify(FEE_PRICES), P2PK_LOCKTIME_MARGIN_SECONDS: '0' });
    try {
      // Minted by a wallet of its own: the shared one would keep this mint's keysets from before the rotation.
      const dear = new Wallet(mint.url, { unit: 'sat' });
      await dear.loadMint();
      const raw = async (sats: number) => {
        const q = await dear.createMintQuoteBolt11(sats);
        while ((await dear.checkMintQuoteBolt11(q.quote)).state !== 'PAID') await new Promise((r) => setTimeout(r, 100));
        return getEncodedToken({ mint: mint.url, unit: 'sat', proofs: await dear.mintProofsBolt11(sats, q.quote) });
      };
      await earn(g, await raw(64));
      await g.wallets.idle();
      const loaded = Date.now();
      // The mint adds a keyset at 100 ppk; the old one, and the gateway's ecash in it, stays at 1000.
      await mint.stop();
      mint = await startMint({ port: Number(new URL(mint.url).port), dir: mint.dir, inputFeePpk: 100, env: { MINT_DERIVATION_PATH_LIST: `["m/0'/0'/0'", "m/0'/1'/0'", "m/0'/0'/1'"]` } });
      const w = await wallet(mint.url);
      expect(new Set(w.keyChain.getKeysets().map((k) => k.fee))).toEqual(new Set([1000, 100]));
      // The gateway learns a keyset at most once a minute.
      while (Date.now() - loaded < 61_000) await new Promise((r) => setTimeout(r, 500));
      // A lone 1-sat locked proof of the new keyset, near its locktime: alone it is worth no more than its fee.
      const tiny = await lockedToken(mint.url, 1, ourPubkey, { swapFee: 1, locktime: Math.floor(Date.now() / 1000) + 40 });
      expect(w.keyChain.getKeyset(getDecodedToken(tiny, w.keyChain.getAllKeysetIds()).proofs[0]!.id).fee).toBe(100);
      expect(await createBalance(g, tiny)).toBe(200);
      const before = await g.ledger.totals();
      await g.wallets.sweepLocked();
      await g.wallets.idle();
      // Redeemed before its locktime, with one of ours that pays the fee of both its keyset and ours.
      expect(await proofStates(mint.url, tiny)).toEqual(['SPENT']);
      expect((await g.ledger.heldProofs(mint.url, 'sat')).filter((p) => p.secret.startsWith('["P2PK"'))).toEqual([]);
      // One input at 100 ppk and one at 1000: ceil(1100 / 1000) = 2 sats, the operator's.
      expect((await g.ledger.totals()).fees - before.fees).toBe(2_000);
      await expectMoneyConserved(g);
    } finally {
      await g.close();
      await mint.stop();
    }
  });

  it("names in the 402 an amount that an ordinary unlocked token from the mint really covers", async () => {
    const asked = await chat({});
    expect(asked.status).toBe(402);
    const price = asked.json.error?.amount_required_msats ?? asked.json.amount_required_msats;
    expect(price).toBeGreaterThan(0);
    const pr = PaymentRequest.fromEncodedRequest(asked.headers.get('x-cashu')!);
    const amount = pr.amount!.toNumber();
    const x = await mintToken(feeMint.url, amount);
    const paid = await chat({ 'x-cashu': x });
    expect(paid.status).toBe(200);
    // What the token was worth after the gateway's swap, less what the request cost, comes back.
    expect((amount - redeemFee(x)) * 1000).toBeGreaterThanOrEqual(price);
    const changeSats = Math.floor(((amount - redeemFee(x)) * 1000 - paid.json.usage.cost.total_msats) / 1000);
    const change = paid.headers.get('x-cashu');
    expect(changeSats > 0 ? getTokenMetadata(change!).amount.toNumber() : change).toBe(changeSats > 0 ? changeSats : null);
    // A change token worth no more than the mint's fee to redeem it is worth nothing to anyone.
    if (change && changeSats > redeemFee(change)) expect(await receive(feeMint.url, change)).toBe(changeSats - redeemFee(change));
  });
});
