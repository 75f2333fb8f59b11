import { beforeAll, describe, expect, inject, it } from 'vitest';
import { PaymentRequest, getDecodedToken, getEncodedToken, getPubKeyFromPrivKey } from '@cashu/cashu-ts';
import { FakeUpstream } from './support/upstream.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { TEST_P2PK_PRIVKEY, durableDatabaseUrl, expectLedgerConserved, expectMoneyConserved, startGateway, type Gateway } from './support/gateway.ts';
import { openLedger } from '../src/main.ts';
import { bearer, chat as sharedChat, useGateway } from './support/suite.ts';
import { asCashuA, lockedToken, mintToken, proofStates, receive, relabel, wallet } from './support/cashu.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import { hasValidProofDleq, nativeDleq } from '../src/cashu/dleq.ts';
import { toStored } from '../src/cashu/proofs.ts';
import { Amount, hasValidDleq, type Proof } from '@cashu/cashu-ts';

const realMint = inject('mintUrl');
const upstream = new FakeUpstream();
const proxy = new CountingProxy(realMint);
let mintUrl: string;
const ourPubkey = Buffer.from(getPubKeyFromPrivKey(Buffer.from(TEST_P2PK_PRIVKEY, 'hex'))).toString('hex');
const otherPubkey = Buffer.from(getPubKeyFromPrivKey(Buffer.alloc(32, 7))).toString('hex');
/** How long the mint must go on refusing a proof alone before it is written off, here. */
const WRITE_OFF_AFTER_MS = 1000;
const writeOffAge = () => new Promise((r) => setTimeout(r, WRITE_OFF_AFTER_MS + 100));
const body = { model: 'gpt-test', messages: [{ role: 'user', content: 'locked' }], max_tokens: 2 };

async function chat(headers: Record<string, string>) {
  const res = await sharedChat(suite.gw, headers, body);
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, any> };
}

/** Mint calls the gateway makes while `fn` runs (the test's own wallet calls happen before). */
async function mintCallsDuring(fn: () => Promise<unknown>): Promise<string[]> {
  proxy.reset();
  await fn();
  return [...proxy.calls];
}

const suite = useGateway({
  upstream,
  before: async () => (mintUrl = await proxy.start()),
  env: () => ({ CASHU_MINTS: mintUrl, P2PK_WRITE_OFF_AFTER_SECONDS: String(WRITE_OFF_AFTER_MS / 1000) }),
  after: () => proxy.stop(),
});
beforeAll(async () => {
  // Load the gateway's view of the mint (info, keysets, keys) once, as any first request does.
  expect((await chat({ authorization: `Bearer ${await mintToken(mintUrl, 5)}` })).status).toBe(200);
});

describe('ecash locked to the gateway key (NUT-11 + NUT-12)', () => {
  it('publishes the key in /v1/info and asks for it in the 402 payment request', async () => {
    const info = (await (await fetch(`${suite.gw.url}/v1/info`)).json()) as Record<string, any>;
    expect(info.p2pk_pubkey).toBe(ourPubkey);
    const res = await chat({});
    expect(res.status).toBe(402);
    const pr = PaymentRequest.fromEncodedRequest(res.headers.get('x-cashu')!);
    expect(pr.nut10).toEqual({ kind: 'P2PK', data: ourPubkey, tags: [] });
  });

  it('accepts a locked token with no mint call at all, as Bearer and as X-Cashu', async () => {
    const bearer = await lockedToken(mintUrl, 16, ourPubkey);
    let res!: Awaited<ReturnType<typeof chat>>;
    expect(await mintCallsDuring(async () => (res = await chat({ authorization: `Bearer ${bearer}` })))).toEqual([]);
    expect(res.status).toBe(200);
    expect((await suite.gw.ledger.getKey(sha256Hex(bearer)))!.balance).toBe(16_000 - res.json.usage.cost.total_msats);

    const x = await lockedToken(mintUrl, 16, ourPubkey);
    const calls = await mintCallsDuring(async () => (res = await chat({ 'x-cashu': x })));
    expect(res.status).toBe(200);
    // Taking the payment asks the mint nothing; only making change may (a swap when no stored
    // proofs add up to it exactly).
    expect(calls.every((c) => c === 'POST /v1/swap')).toBe(true);
    expect(calls.length).toBeLessThanOrEqual(1);
    expect(await receive(mintUrl, res.headers.get('x-cashu')!)).toBe(Math.floor((16_000 - res.json.usage.cost.total_msats) / 1000));
  });

  it('refuses a replay of locked proofs under another encoding, without asking the mint', async () => {
    const token = await lockedToken(mintUrl, 8, ourPubkey);
    expect((await chat({ authorization: `Bearer ${token}` })).status).toBe(200);
    const w = await wallet(mintUrl);
    const decoded = getDecodedToken(token, w.keyChain.getAllKeysetIds());
    const again = getEncodedToken({ ...decoded, memo: 'same proofs, new string' });
    const stripped = getEncodedToken(decoded, { removeDleq: true });
    for (const t of [again, stripped]) {
      let res!: Awaited<ReturnType<typeof chat>>;
      expect(await mintCallsDuring(async () => (res = await chat({ 'x-cashu': t })))).toEqual([]);
      expect([res.status, res.json.error.code]).toEqual([400, 'cashu_token_already_spent']);
    }
  });

  it('swaps, with one mint call, locked tokens it cannot take offline: refund path, near locktime, no DLEQ', async () => {
    const now = Math.floor(Date.now() / 1000);
    const tokens = [
      await lockedToken(mintUrl, 8, ourPubkey, { locktime: now + 7 * 86400, refundKeys: [otherPubkey] }),
      await lockedToken(mintUrl, 8, ourPubkey, { locktime: now + 60 }),
      await lockedToken(mintUrl, 8, ourPubkey, { removeDleq: true }),
    ];
    for (const t of tokens) {
      let res!: Awaited<ReturnType<typeof chat>>;
      const calls = await mintCallsDuring(async () => (res = await chat({ authorization: `Bearer ${t}` })));
      expect(res.status).toBe(200);
      expect(calls).toEqual(['POST /v1/swap']);
      expect(await proofStates(mintUrl, t)).toEqual(expect.arrayContaining(['SPENT']));
    }
  });

  it('refuses a token locked to another key: the mint will not let us swap it', async () => {
    const t = await lockedToken(mintUrl, 8, otherPubkey);
    const res = await chat({ authorization: `Bearer ${t}` });
    expect([res.status, res.json.error.code]).toEqual([400, 'invalid_cashu_token']);
    expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['UNSPENT']));
    expect(await suite.gw.ledger.getKey(sha256Hex(t))).toBeUndefined();
  });

  it('redeems the proofs it took offline in the background, turning them into its own at the mint', async () => {
    const t = await lockedToken(mintUrl, 32, ourPubkey);
    expect((await chat({ authorization: `Bearer ${t}` })).status).toBe(200);
    expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['UNSPENT']));
    const swept = await suite.gw.wallets.sweepLocked();
    expect(swept).toBeGreaterThanOrEqual(1);
    // The locked proofs are spent now, and the gateway holds fresh proofs of the same value.
    expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['SPENT']));
    expect(await suite.gw.wallets.sweepLocked()).toBe(0);
  });

  it('never takes a swept proof offline again, even after a token carrying it failed at the mint', async () => {
    const t = await lockedToken(mintUrl, 8, ourPubkey);
    expect((await chat({ authorization: `Bearer ${t}` })).status).toBe(200);
    expect(await suite.gw.wallets.sweepLocked()).toBeGreaterThanOrEqual(1);
    const w = await wallet(mintUrl);
    const swept = getDecodedToken(t, w.keyChain.getAllKeysetIds()).proofs;
    // The swept proofs with a good one of the payer's own: refused before any mint call.
    const own = await mintToken(mintUrl, 2);
    const mixed = getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: [...swept, ...getDecodedToken(own, w.keyChain.getAllKeysetIds()).proofs] });
    let res!: Awaited<ReturnType<typeof chat>>;
    expect(await mintCallsDuring(async () => (res = await chat({ authorization: `Bearer ${mixed}` })))).toEqual([]);
    expect([res.status, res.json.error.code]).toEqual([400, 'cashu_token_already_spent']);
    // And alone, under yet another encoding: still refused, nothing credited.
    const alone = await asCashuA(mintUrl, getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: swept }));
    const again = await chat({ 'x-cashu': alone });
    expect([again.status, again.json.error.code]).toEqual([400, 'cashu_token_already_spent']);
    expect(await suite.gw.ledger.getKey(sha256Hex(alone))).toBeUndefined();
    expect(new Set(await proofStates(mintUrl, own))).toEqual(new Set(['UNSPENT']));
  });

  it('keeps sweeping when one locked proof was spent elsewhere, and books its loss as a fee', async () => {
    const gone = await lockedToken(mintUrl, 1, ourPubkey);
    expect((await chat({ authorization: `Bearer ${gone}` })).status).toBe(200);
    // Spent behind the gateway's back, with its own key (as a leaked key would allow).
    await (await wallet(mintUrl)).receive(gone, { privkey: TEST_P2PK_PRIVKEY });
    const kept = await lockedToken(mintUrl, 16, ourPubkey);
    // Earn at least what will be lost, so the books never show more costs than earnings.
    for (let t = await suite.gw.ledger.totals(); t.charged - t.withdrawn - t.fees < 1_000; t = await suite.gw.ledger.totals()) {
      expect((await chat({ authorization: `Bearer ${kept}` })).status).toBe(200);
    }
    const before = await suite.gw.ledger.totals();

    // The batch holding both is refused; the spent proof is written off, and the same sweep
    // redeems the others.
    expect(await suite.gw.wallets.sweepLocked()).toBeGreaterThanOrEqual(1);
    expect((await suite.gw.ledger.totals()).fees - before.fees).toBe(1_000);
    expect(new Set(await proofStates(mintUrl, kept))).toEqual(new Set(['SPENT']));
    expect(await suite.gw.wallets.sweepLocked()).toBe(0);
  });

  it('sets aside a locked proof the mint refuses though unspent, and sweeps every other one past it', async () => {
    // Stored locked by a gateway that took it offline wrongly (as a hole found in review once
    // did): locked to someone else, so the mint refuses every swap holding it, our key's or not.
    const w = await wallet(mintUrl);
    const foreignLocked = await lockedToken(mintUrl, 2, otherPubkey);
    const planted = getDecodedToken(foreignLocked, w.keyChain.getAllKeysetIds()).proofs.map(toStored);
    expect(await suite.gw.ledger.acceptLocked({ tokenHash: sha256Hex(foreignLocked), keyHash: 'planted', mint: mintUrl, unit: 'sat', proofs: planted, creditMsats: 2_000 })).toBe('accepted');
    // Good locked proofs on either side of it in the sweep's order (oldest first).
    const early = await lockedToken(mintUrl, 8, ourPubkey);
    const late = await lockedToken(mintUrl, 8, ourPubkey);
    for (const t of [early, late]) expect((await chat({ authorization: `Bearer ${t}` })).status).toBe(200);
    for (let t = await suite.gw.ledger.totals(); t.charged - t.withdrawn - t.fees < 2_000; t = await suite.gw.ledger.totals()) {
      expect((await chat({ authorization: `Bearer ${late}` })).status).toBe(200);
    }
    const before = await suite.gw.ledger.totals();

    expect(await suite.gw.wallets.sweepLocked()).toBeGreaterThanOrEqual(2);
    for (const t of [early, late]) expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['SPENT']));
    // Refused alone twice at once is no proof yet: the mint may be failing for a while.
    expect((await suite.gw.ledger.totals()).fees).toBe(before.fees);
    await writeOffAge();
    expect(await suite.gw.wallets.sweepLocked()).toBe(0);
    // Written off to the msat, and still unspent at the mint: nobody took it, it is just not ours.
    expect((await suite.gw.ledger.totals()).fees - before.fees).toBe(2_000);
    expect(new Set(await proofStates(mintUrl, foreignLocked))).toEqual(new Set(['UNSPENT']));
    expect(await suite.gw.ledger.heldProofs(mintUrl, 'sat')).not.toContainEqual(expect.objectContaining({ secret: planted[0]!.secret }));
    // And never tried again.
    expect(await mintCallsDuring(async () => expect(await suite.gw.wallets.sweepLocked()).toBe(0))).toEqual([]);
  });

  it('sets aside any number of refused proofs: two planted among good ones stop nothing, both written off', async () => {
    const w = await wallet(mintUrl);
    const plant = async (sats: number) => {
      const t = await lockedToken(mintUrl, sats, otherPubkey);
      const proofs = getDecodedToken(t, w.keyChain.getAllKeysetIds()).proofs.map(toStored);
      expect(await suite.gw.ledger.acceptLocked({ tokenHash: sha256Hex(t), keyHash: 'planted', mint: mintUrl, unit: 'sat', proofs, creditMsats: sats * 1000 })).toBe('accepted');
      return t;
    };
    // In the sweep's order: bad, good, bad, good.
    const planted = [await plant(2)];
    const good = [await lockedToken(mintUrl, 8, ourPubkey)];
    expect((await chat({ authorization: `Bearer ${good[0]}` })).status).toBe(200);
    planted.push(await plant(1));
    good.push(await lockedToken(mintUrl, 16, ourPubkey));
    for (let t = await suite.gw.ledger.totals(); t.charged - t.withdrawn - t.fees < 3_000; t = await suite.gw.ledger.totals()) {
      expect((await chat({ authorization: `Bearer ${good[1]}` })).status).toBe(200);
    }
    const before = await suite.gw.ledger.totals();

    expect(await suite.gw.wallets.sweepLocked()).toBeGreaterThanOrEqual(2);
    for (const t of good) expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['SPENT']));
    await writeOffAge();
    expect(await suite.gw.wallets.sweepLocked()).toBe(0);
    expect((await suite.gw.ledger.totals()).fees - before.fees).toBe(3_000);
    for (const t of planted) expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['UNSPENT']));
    expect(await mintCallsDuring(async () => expect(await suite.gw.wallets.sweepLocked()).toBe(0))).toEqual([]);
  });

  it('writes off no good proof the mint refused once: it is tried alone again, and redeemed', async () => {
    const tokens = [await lockedToken(mintUrl, 4, ourPubkey), await lockedToken(mintUrl, 1, ourPubkey)];
    for (const t of tokens) expect((await chat({ authorization: `Bearer ${t}` })).status).toBe(200);
    const before = await suite.gw.ledger.totals();
    // The batch of both refused, then the oldest alone: a suspect; the other is taken.
    proxy.faults.set('/v1/swap', { fail: 400, body: { detail: 'Transaction is not valid.', code: 11000 }, times: 2 });
    try {
      expect(await suite.gw.wallets.sweepLocked()).toBe(2);
    } finally {
      proxy.faults.delete('/v1/swap');
    }
    expect((await suite.gw.ledger.totals()).fees).toBe(before.fees);
    for (const t of tokens) expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['SPENT']));
  });

  it('writes off no good proof the mint refuses for a while after taking a swap: it has taken nothing since', async () => {
    const tokens = [await lockedToken(mintUrl, 4, ourPubkey), await lockedToken(mintUrl, 2, ourPubkey), await lockedToken(mintUrl, 1, ourPubkey)];
    for (const t of tokens) expect((await chat({ authorization: `Bearer ${t}` })).status).toBe(200);
    const before = await suite.gw.ledger.totals();
    // The first swap is taken; every one after it is refused with code 0, as a mint whose disk is
    // full answers (it can still read).
    proxy.onRequest = async (_method, path) => {
      if (path === '/v1/swap') proxy.faults.set('/v1/swap', { fail: 400, body: { detail: 'internal error', code: 0 } });
    };
    try {
      expect(await suite.gw.wallets.sweepLocked(2)).toBe(2);
      await writeOffAge();
      expect(await suite.gw.wallets.sweepLocked(2)).toBe(0);
    } finally {
      proxy.onRequest = undefined;
      proxy.faults.delete('/v1/swap');
    }
    expect((await suite.gw.ledger.totals()).fees).toBe(before.fees);
    expect(await suite.gw.wallets.sweepLocked()).toBe(1);
    for (const t of tokens) expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['SPENT']));
    expect((await suite.gw.ledger.totals()).fees).toBe(before.fees);
  });

  it('writes nothing off while the mint refuses every swap, whatever it names, and sweeps once it takes them', async () => {
    const tokens = [await lockedToken(mintUrl, 4, ourPubkey), await lockedToken(mintUrl, 2, ourPubkey), await lockedToken(mintUrl, 1, ourPubkey)];
    for (const t of tokens) expect((await chat({ authorization: `Bearer ${t}` })).status).toBe(200);
    const before = await suite.gw.ledger.totals();
    // A generic refusal (nutshell's 11000 and code 0, cdk's internal error), a rotated keyset, the mint busy.
    for (const body of [{ detail: 'Transaction is not valid.', code: 11000 }, { detail: 'internal error', code: 0 }, { detail: 'Internal Error', code: 50000 }, { detail: 'keyset is inactive', code: 12002 }, { detail: 'keyset id inactive.', code: 11000 }, { detail: 'database is locked', code: 0 }]) {
      proxy.faults.set('/v1/swap', { fail: 400, body });
      try {
        expect(await suite.gw.wallets.sweepLocked()).toBe(0);
      } finally {
        proxy.faults.delete('/v1/swap');
      }
      expect((await suite.gw.ledger.totals()).fees, JSON.stringify(body)).toBe(before.fees);
      for (const t of tokens) expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['UNSPENT']));
    }
    expect(await suite.gw.wallets.sweepLocked()).toBeGreaterThanOrEqual(3);
    for (const t of tokens) expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['SPENT']));
    expect((await suite.gw.ledger.totals()).fees).toBe(before.fees);
  });

  it('writes off no good proof a flaky mint refuses alone with a generic error, however long, while it takes every other swap', async () => {
    const w = await wallet(mintUrl);
    const victim = await lockedToken(mintUrl, 4, ourPubkey);
    const other = await lockedToken(mintUrl, 2, ourPubkey);
    for (const t of [victim, other]) expect((await chat({ authorization: `Bearer ${t}` })).status).toBe(200);
    const victimC = getDecodedToken(victim, w.keyChain.getAllKeysetIds()).proofs.map((p) => p.C);
    expect(victimC).toHaveLength(1);
    const heldSats = async () => (await suite.gw.ledger.heldProofs(mintUrl, 'sat')).reduce((s, p) => s + p.amount, 0);
    const before = { totals: await suite.gw.ledger.totals(), held: await heldSats() };
    // Every swap holding the victim is refused with what a loaded nutshell answers for an exception
    // of its own (code 0, not the lock it is known to name), or with nutshell's bare 11000; the
    // mint takes every other swap, so it looks like the victim's fault.
    const generic = [
      { detail: 'QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00', code: 0 },
      { detail: 'transaction error', code: 11000 },
    ];
    for (const body of generic) {
      proxy.faults.set('/v1/swap', { fail: 400, body, when: (req) => victimC.some((c) => req.includes(c)) });
      try {
        // Refused with the other, then alone: a suspect; the other is taken.
        await suite.gw.wallets.sweepLocked();
        expect(new Set(await proofStates(mintUrl, victim))).toEqual(new Set(['UNSPENT']));
        await writeOffAge();
        // Past the write-off age, the mint takes a newcomer's swap, then refuses the victim alone again.
        const late = await lockedToken(mintUrl, 1, ourPubkey);
        expect((await chat({ authorization: `Bearer ${late}` })).status).toBe(200);
        const calls = await mintCallsDuring(async () => expect(await suite.gw.wallets.sweepLocked()).toBe(1));
        expect(new Set(await proofStates(mintUrl, late))).toEqual(new Set(['SPENT']));
        // The victim's state was asked of the mint (NUT-07), and it is still unspent there and ours here.
        expect(calls).toContain('POST /v1/checkstate');
        expect(new Set(await proofStates(mintUrl, victim)), JSON.stringify(body)).toEqual(new Set(['UNSPENT']));
        expect((await suite.gw.ledger.totals()).fees, JSON.stringify(body)).toBe(before.totals.fees);
        expect(await suite.gw.ledger.heldProofs(mintUrl, 'sat')).toContainEqual(expect.objectContaining({ C: victimC[0] }));
      } finally {
        proxy.faults.delete('/v1/swap');
      }
    }
    // The mint recovers: the victim is swept, nothing was written off, every msat still held.
    expect(await suite.gw.wallets.sweepLocked()).toBe(1);
    for (const t of [victim, other]) expect(new Set(await proofStates(mintUrl, t))).toEqual(new Set(['SPENT']));
    // To the msat: the two newcomers credited, nothing booked as lost, refunded or withdrawn, and
    // the gateway holds what it held plus them.
    const after = await suite.gw.ledger.totals();
    expect([after.credited - before.totals.credited, after.fees, after.refunded, after.withdrawn]).toEqual([2_000, before.totals.fees, before.totals.refunded, before.totals.withdrawn]);
    expect((await heldSats()) * 1000).toBe(before.held * 1000 + 2_000);
    expect(await suite.gw.ledger.heldProofs(mintUrl, 'sat')).not.toContainEqual(expect.objectContaining({ C: victimC[0] }));
    expect(await suite.gw.wallets.sweepLocked()).toBe(0);
  });

  it('still writes off a proof the mint refuses as bad in itself though unspent: a forged signature (NUT-00 10001)', async () => {
    const w = await wallet(mintUrl);
    // Locked to us, and its C altered: the mint's own check of its signature fails, for ever.
    const genuine = await lockedToken(mintUrl, 2, ourPubkey);
    const proof = getDecodedToken(genuine, w.keyChain.getAllKeysetIds()).proofs[0]!;
    // A point on the curve, but not the mint's signature on this secret.
    const forgedC = Buffer.from(getPubKeyFromPrivKey(Buffer.alloc(32, 9))).toString('hex');
    const forged = toStored({ ...proof, C: forgedC, dleq: undefined });
    const forgedToken = getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: [{ ...proof, C: forgedC, dleq: undefined }] });
    expect(await suite.gw.ledger.acceptLocked({ tokenHash: sha256Hex(forgedToken), keyHash: 'planted', mint: mintUrl, unit: 'sat', proofs: [forged], creditMsats: 2_000 })).toBe('accepted');
    const good = await lockedToken(mintUrl, 8, ourPubkey);
    for (let t = await suite.gw.ledger.totals(); t.charged - t.withdrawn - t.fees < 2_000; t = await suite.gw.ledger.totals()) {
      expect((await chat({ authorization: `Bearer ${good}` })).status).toBe(200);
    }
    const before = await suite.gw.ledger.totals();
    expect(await suite.gw.wallets.sweepLocked()).toBeGreaterThanOrEqual(1);
    expect(new Set(await proofStates(mintUrl, good))).toEqual(new Set(['SPENT']));
    expect((await suite.gw.ledger.totals()).fees).toBe(before.fees);
    await writeOffAge();
    const calls = await mintCallsDuring(async () => expect(await suite.gw.wallets.sweepLocked()).toBe(0));
    // Refused alone again, asked about (unspent: its secret was never spent), then written off to the msat.
    expect(calls).toEqual(expect.arrayContaining(['POST /v1/swap', 'POST /v1/checkstate']));
    expect((await suite.gw.ledger.totals()).fees - before.fees).toBe(2_000);
    expect(await suite.gw.ledger.heldProofs(mintUrl, 'sat')).not.toContainEqual(expect.objectContaining({ C: forgedC }));
    // The genuine proof under the same secret is untouched at the mint.
    expect(new Set(await proofStates(mintUrl, genuine))).toEqual(new Set(['UNSPENT']));
    expect(await mintCallsDuring(async () => expect(await suite.gw.wallets.sweepLocked()).toBe(0))).toEqual([]);
  });

  it('takes offline only proofs of the unit the token names: msat proofs labelled sat are not 1000x', async () => {
    const msat = await lockedToken(mintUrl, 64, ourPubkey, { unit: 'msat' });
    const labelled = await relabel(mintUrl, msat, { unit: 'sat' });
    const res = await chat({ authorization: `Bearer ${labelled}` });
    expect(res.status).toBe(400);
    expect(await suite.gw.ledger.getKey(sha256Hex(labelled))).toBeUndefined();
    expect(new Set(await proofStates(mintUrl, msat))).toEqual(new Set(['UNSPENT']));
  });

  it('checks DLEQ proofs with libsecp256k1, agreeing with cashu-ts on good and tampered proofs', async () => {
    expect(nativeDleq).toBe(true);
    const w = await wallet(mintUrl);
    const token = await lockedToken(mintUrl, 255, ourPubkey);
    const proofs = getDecodedToken(token, w.keyChain.getAllKeysetIds()).proofs;
    expect(proofs).toHaveLength(8);
    const flip = (h: string) => (h.slice(0, -1) + (h.at(-1) === '0' ? '1' : '0'));
    for (const p of proofs) {
      const keyset = w.keyChain.getKeyset(p.id);
      const variants: Proof[] = [
        p,
        { ...p, C: flip(p.C) },
        { ...p, secret: `${p.secret} ` },
        { ...p, amount: Amount.from(p.amount.toNumber() === 1 ? 2 : 1) },
        { ...p, dleq: { ...p.dleq!, e: flip(p.dleq!.e) } },
        { ...p, dleq: { ...p.dleq!, s: flip(p.dleq!.s) } },
        { ...p, dleq: { ...p.dleq!, r: flip(p.dleq!.r!) } },
      ];
      const ours = variants.map((v) => hasValidProofDleq(v, keyset));
      const theirs = variants.map((v) => {
        try {
          return hasValidDleq(v, keyset, { require: true });
        } catch {
          return false;
        }
      });
      expect(ours).toEqual(theirs);
      expect(ours).toEqual([true, false, false, false, false, false, false]);
    }
  });
});

/** One paid chat with an X-Cashu token: the change it sent back, and what it cost. */
async function payXCashu(url: string, token: string): Promise<{ change: string; cost: number }> {
  const res = await sharedChat({ url }, { 'x-cashu': token }, body);
  const json = (await res.json()) as { usage: { cost: { total_msats: number } } };
  expect(res.status).toBe(200);
  return { change: res.headers.get('x-cashu')!, cost: json.usage.cost.total_msats };
}

describe('a float of change (CHANGE_FLOAT_PROOFS) topped up by redeeming locked proofs', () => {
  it('pays X-Cashu change from stored proofs: no mint call on the request path once the float is up', async () => {
    // Sweeps soon after arrivals, the periodic one an hour off (and a margin the config accepts for it).
    const floated = await startGateway(mintUrl, upstream, { CHANGE_FLOAT_PROOFS: '4', P2PK_REDEEM_INTERVAL_SECONDS: '3600', P2PK_LOCKTIME_MARGIN_SECONDS: '14400' });
    const pay = (token: string) => payXCashu(floated.url, token);
    const lockedLeft = async () => (await floated.ledger.heldProofs(mintUrl, 'sat')).filter((p) => p.secret.startsWith('["P2PK"')).length;
    try {
      // A balance funded with locked ecash: about a second later the gateway redeems the locked
      // proofs, keeping small denominations first.
      const funding = await lockedToken(mintUrl, 128, ourPubkey);
      const funded = await sharedChat(floated, bearer(funding), body);
      expect(funded.status).toBe(200);
      const swept = async () => (await lockedLeft()) === 0 && (await floated.ledger.pendingOps()).length === 0;
      for (let i = 0; i < 100 && !(await swept()); i++) await new Promise((r) => setTimeout(r, 50));
      expect(await swept()).toBe(true);
      expect(new Set(await proofStates(mintUrl, funding))).toEqual(new Set(['SPENT']));
      const counts = await floated.ledger.unspentCounts(mintUrl, 'sat');
      for (const d of [1, 2, 4, 8, 16]) expect(counts.get(d)).toBeGreaterThanOrEqual(4);

      // Now change adds up from stored proofs: the request asks the mint nothing.
      const token = await lockedToken(mintUrl, 64, ourPubkey);
      let second!: Awaited<ReturnType<typeof payXCashu>>;
      expect(await mintCallsDuring(async () => (second = await pay(token)))).toEqual([]);
      expect(await receive(mintUrl, second.change)).toBe(Math.floor((64_000 - second.cost) / 1000));
      // The second token's locked proofs are swept a moment after they arrived: while that sweep
      // is in flight they are pending, held by no one, so the money is counted once it is done.
      for (let i = 0; i < 100 && !(await swept()); i++) await new Promise((r) => setTimeout(r, 50));
      await expectMoneyConserved(floated);
    } finally {
      await floated.close();
    }
  });
});


describe('an unlocked X-Cashu token', () => {
  it('asks the mint once, the swap that redeems it: the change adds up from what that swap returned', async () => {
    const fresh = await startGateway(mintUrl, upstream);
    const pay = (token: string) => payXCashu(fresh.url, token);
    try {
      // An unpaid request loads the gateway's view of the mint (info, keysets, keys) and stores nothing.
      const unpaid = await fetch(`${fresh.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect(unpaid.status).toBe(402);
      for (const amount of [64, 100, 37, 21, 129]) {
        const token = await mintToken(mintUrl, amount);
        let paid!: Awaited<ReturnType<typeof pay>>;
        expect(await mintCallsDuring(async () => (paid = await pay(token)))).toEqual(['POST /v1/swap']);
        expect(await receive(mintUrl, paid.change)).toBe(Math.floor((amount * 1000 - paid.cost) / 1000));
      }
      await expectMoneyConserved(fresh);
    } finally {
      await fresh.close();
    }
  });
});

describe('a gateway stopped with its own work at the mint', () => {
  /**
   * A gateway on its own database, funded with a locked token, that `setUp` leaves ready for
   * `start` to begin work the mint will hold at `path`: closing it then waits for that work.
   * Once it has closed, the ledger reopened has nothing pending and the books balance.
   */
  async function closesAfter(
    path: string, env: Record<string, string>, setUp: (g: Gateway, held: CountingProxy) => Promise<void>, start: (g: Gateway) => Promise<unknown>,
  ): Promise<unknown> {
    const held = new CountingProxy(realMint);
    const url = await held.start();
    const db = await durableDatabaseUrl();
    const g = await startGateway(url, upstream, { DATABASE_URL: db, ...env });
    let release = () => {};
    let closed: Promise<void> | undefined;
    let result: unknown;
    try {
      const created = await fetch(`${g.url}/v1/balance/create`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ initial_balance_token: await lockedToken(url, 8, ourPubkey) }) });
      expect(created.status).toBe(200);
      await setUp(g, held);
      const holding = held.hold(path);
      release = holding.release;
      const work = start(g);
      await holding.reached;
      let stopped = false;
      closed = g.close().then(() => void (stopped = true));
      await new Promise((r) => setTimeout(r, 300));
      expect(stopped, `closed with ${path} at the mint`).toBe(false);
      release();
      result = await work;
      await closed;
    } finally {
      release();
      await (closed ?? g.close()).catch(() => {});
    }
    const ledger = await openLedger(db);
    try {
      expect(await ledger.pendingOps()).toEqual([]);
      await expectLedgerConserved(ledger, [url]);
    } finally {
      await ledger.close();
      await held.stop();
    }
    return result;
  }

  it('stops once the sweep has its answer booked, not with the ledger closed under it', async () => {
    // As the periodic sweep (P2PK_REDEEM_INTERVAL_SECONDS) runs it.
    expect(await closesAfter('/v1/swap', {}, async () => {}, (g) => g.wallets.sweepLocked())).toBe(1);
  });

  it('stops once a recovery under way has the mint\'s answer booked', async () => {
    await closesAfter('/v1/restore', { MINT_TIMEOUT_MS: '500' }, async (g, held) => {
      // The sweep's swap lands, its answer is lost, and the mint cannot be asked for now: left open.
      held.faults.set('/v1/swap', { drop: true });
      held.faults.set('/v1/restore', { fail: 503, body: { detail: 'unavailable' } });
      await g.wallets.sweepLocked();
      held.faults.clear();
      expect((await g.ledger.pendingOps()).length).toBe(1);
      await new Promise((r) => setTimeout(r, 1_100));
    }, (g) => g.wallets.recoverAll()); // As the periodic recovery runs it.
  });
});
