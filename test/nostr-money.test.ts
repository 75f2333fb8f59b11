import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSecretKey, type Event } from 'nostr-tools/pure';
import { minePow } from 'nostr-tools/nip13';
import * as nip44 from 'nostr-tools/nip44';
import { finalizeEvent } from 'nostr-tools/pure';
import { FakeUpstream, replyWords, upstreamPromptTokens } from './support/upstream.ts';
import { PRICES, expectDrained, expectMoneyConserved, startGateway, testDatabaseUrl, type Gateway } from './support/gateway.ts';
import { startRelay, type RunningRelay } from './support/relay.ts';
import { lockedToken, mintProofs, mintToken, wallet } from './support/cashu.ts';
import { freePort } from './support/ports.ts';
import { Requester, tag } from './support/requester.ts';
import { nostrDoorKeys } from '../src/nostr/door-keys.ts';
import type { Totals } from '../src/ledger/ledger.ts';
import { waitFor } from './support/suite.ts';

/**
 * The Nostr door's money, to the msat: what each job is charged, what comes back as change, where
 * the sub-sat rest goes, and that nobody but the requester can take any of it.
 */
const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
let relay: RunningRelay;
let gw: Gateway;
let nsec: string;
let gatewayPubkey: string;
let doorLock: string;
let me: Requester;
/** The other gateways still running: each is drained at the end of the file, then closed. */
const extra = new Set<Gateway>();

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
/** What the upstream double says it was asked and answered, priced as gpt-test (2 and 5 msats a token). */
const chargeOf = (body: Record<string, unknown>) => upstreamPromptTokens(body) * 2 + replyWords(body).length * 5;
const diff = (a: Totals, b: Totals) => ({
  credited: b.credited - a.credited,
  charged: b.charged - a.charged,
  refunded: b.refunded - a.refunded,
  balances: b.balances - a.balances,
  reserved: b.reserved - a.reserved,
});

async function http(path: string, init: { method?: string; headers?: Record<string, string>; body?: unknown } = {}, on = gw) {
  const res = await fetch(`${on.url}${path}`, {
    method: init.method ?? (init.body ? 'POST' : 'GET'),
    headers: { 'content-type': 'application/json', ...init.headers },
    body: init.body ? JSON.stringify(init.body) : undefined,
  });
  return { status: res.status, body: (await res.json()) as { error?: { code?: string } } & Record<string, unknown> };
}

async function gateway(env: Record<string, string> = {}): Promise<Gateway> {
  const g = await startGateway(mintUrl, upstream, { RELAYS: relay.url, DVM_DEFAULT_MODEL: 'gpt-test', DVM_QUOTE_POLL_MS: '200', ...env });
  extra.add(g);
  return g;
}

/** Stops a gateway whose ledger a later one (sharing its database) or the test itself drains. */
async function stop(g: Gateway): Promise<void> {
  extra.delete(g);
  await g.close();
}

/** Waits until the gateway's subscriptions are live: its 10019 is out, so it has connected. */
async function ready(g: Gateway, urls = [relay.url]): Promise<Event> {
  return me.waitFor({ kinds: [10019], authors: [g.nostr!.id.pubkey] }, () => true, 15_000, urls);
}

beforeAll(async () => {
  await upstream.start();
  relay = await startRelay();
  me = new Requester([relay.url]);
  nsec = Buffer.from(generateSecretKey()).toString('hex');
  gw = await startGateway(mintUrl, upstream, { RELAYS: relay.url, NSEC: nsec, DVM_DEFAULT_MODEL: 'gpt-test', DVM_QUOTE_POLL_MS: '200' });
  gatewayPubkey = gw.nostr!.id.pubkey;
  doorLock = tag(await ready(gw), 'pubkey')![1]!;
});
afterAll(async () => {
  try {
    // Every ledger that took money, to the msat and at the mint: the main gateway's and each
    // other one's (a restarted instance's ledger holds what its predecessors took too).
    for (const g of [...(gw ? [gw] : []), ...extra]) await expectDrained(g, { prices: PRICES });
  } finally {
    me?.close();
    for (const g of extra) await g.close().catch(() => {});
    await gw?.close();
    await relay?.stop();
    await upstream.stop();
  }
});
afterEach(async () => {
  upstream.modes.length = 0;
  await expectMoneyConserved(gw);
});

describe('ecash in a job pays that job only', () => {
  it('refuses ecash locked to the Nostr key at the HTTP door, before and after the job, and runs the job with exact change', async () => {
    expect(doorLock).not.toBe(gw.wallets.p2pk.pubkey);
    const token = await lockedToken(mintUrl, 30, doorLock);
    const t0 = await gw.ledger.totals();
    // A stranger who read the public job gets there first, over HTTP: nothing.
    const create = await http('/v1/balance/create', { body: { initial_balance_token: token } });
    expect([create.status, create.body.error?.code]).toEqual([400, 'cashu_token_wrong_door']);
    const chat = await http('/v1/chat/completions', {
      headers: { 'x-cashu': token },
      body: { model: 'gpt-test', messages: [{ role: 'user', content: 'mine now' }], max_tokens: 1 },
    });
    expect([chat.status, chat.body.error?.code]).toEqual([400, 'cashu_token_wrong_door']);
    expect(diff(t0, await gw.ledger.totals())).toEqual({ credited: 0, charged: 0, refunded: 0, balances: 0, reserved: 0 });

    // The requester's job still runs on it.
    const req = await me.publish(me.job(gatewayPubkey, [['i', 'Locked and safe', 'text'], ['param', 'max_tokens', '4'], ['cashu', token]]));
    const res = await me.result(req.id);
    const charge = chargeOf(upstream.requests.at(-1)!.body);
    expect(Number(tag(res, 'amount')![1])).toBe(charge);
    const change = Math.floor((30_000 - charge) / 1000);
    const rest = (30_000 - charge) % 1000;
    expect(await me.spendLocked(mintUrl, tag(res, 'cashu')![1]!)).toBe(change);
    const done = await me.feedback(req.id, 'success');
    expect(tag(done, 'status')![2]).toContain(`${rest} msats under a sat`);
    const t1 = await gw.ledger.totals();
    expect(diff(t0, t1)).toEqual({ credited: 30_000, charged: charge + rest, refunded: change * 1000, balances: 0, reserved: 0 });
    expect(await gw.ledger.getKey(nostrDoorKeys(gw.nostr!.id.sk).jobKey(req.id))).toMatchObject({ balance: 0, reserved: 0 });

    // And after: the token is spent, its job key cannot be named.
    for (const [path, headers] of [
      ['/v1/balance/info', { authorization: `Bearer ${token}` }],
      ['/v1/balance/refund', { authorization: `Bearer ${token}` }],
      ['/v1/balance/refund', { 'x-cashu': token }],
    ] as const) {
      const r = await http(path, { method: path.endsWith('refund') ? 'POST' : 'GET', headers, body: path.endsWith('refund') ? {} : undefined });
      expect(r.status).toBeGreaterThanOrEqual(400);
    }
    expect(diff(t1, await gw.ledger.totals())).toEqual({ credited: 0, charged: 0, refunded: 0, balances: 0, reserved: 0 });
  });

  it('is refused by an HTTP-only gateway too (the mint wants the Nostr key), and the job still runs on it', async () => {
    const httpOnly = await startGateway(mintUrl, upstream);
    extra.add(httpOnly);
    const token = await lockedToken(mintUrl, 12, doorLock);
    const r = await http('/v1/balance/create', { body: { initial_balance_token: token } }, httpOnly);
    expect([r.status, r.body.error?.code]).toEqual([400, 'invalid_cashu_token']);
    expect(await httpOnly.ledger.pendingOps()).toEqual([]);
    expect((await httpOnly.ledger.totals()).credited).toBe(0);
    const req = await me.publish(me.job(gatewayPubkey, [['i', 'Still mine', 'text'], ['param', 'max_tokens', '2'], ['cashu', token]]));
    const res = await me.result(req.id);
    const charge = chargeOf(upstream.requests.at(-1)!.body);
    expect(await me.spendLocked(mintUrl, tag(res, 'cashu')![1]!)).toBe(Math.floor((12_000 - charge) / 1000));
    await expectMoneyConserved(httpOnly);
  });

  it('leaves nothing of a public, unlocked token that a stranger can read or spend over HTTP after the job', async () => {
    const token = await mintToken(mintUrl, 30);
    const req = await me.publish(me.job(gatewayPubkey, [['i', 'Plain token', 'text'], ['param', 'max_tokens', '3'], ['cashu', token]]));
    const res = await me.result(req.id);
    const charge = chargeOf(upstream.requests.at(-1)!.body);
    expect(Number(tag(res, 'amount')![1])).toBe(charge);
    expect(await me.spendLocked(mintUrl, tag(res, 'cashu')![1]!)).toBe(Math.floor((30_000 - charge) / 1000));
    const before = upstream.requests.length;
    // Today's key names: sha256 of the token, over HTTP.
    const info = await http('/v1/balance/info', { headers: { authorization: `Bearer ${token}` } });
    expect(info.status).toBeGreaterThanOrEqual(400);
    const spend = await http('/v1/chat/completions', {
      headers: { authorization: `Bearer sk-${sha256(token)}` },
      body: { model: 'gpt-test', messages: [{ role: 'user', content: 'x' }], max_tokens: 1 },
    });
    expect(spend.status).toBe(401);
    expect(upstream.requests.length).toBe(before);
  });

  it('does not let a copy of the token in someone else’s job spend it', async () => {
    const token = await lockedToken(mintUrl, 20, doorLock);
    const req = await me.publish(me.job(gatewayPubkey, [['i', 'Mine', 'text'], ['param', 'max_tokens', '2'], ['cashu', token]]));
    await me.result(req.id);
    const thief = new Requester([relay.url]);
    try {
      const copy = await thief.publish(thief.job(gatewayPubkey, [['i', 'Theirs', 'text'], ['param', 'max_tokens', '2'], ['cashu', token]]));
      const error = await thief.feedback(copy.id, 'error');
      expect(tag(error, 'cashu')).toBeUndefined();
      expect(tag(error, 'status')![2]).toMatch(/another requester|already been spent/);
    } finally {
      thief.close();
    }
  });
});

describe('job keys and the sub-sat rest', () => {
  it('credits a bolt11 payment to a key nobody can derive, returns whole sats and books the rest', async () => {
    const t0 = await gw.ledger.totals();
    const req = await me.publish(me.job(gatewayPubkey, [['i', 'Pay me by Lightning', 'text'], ['param', 'max_tokens', '400']]));
    const ask = await me.feedback(req.id, 'payment-required');
    const paid = Number(tag(ask, 'amount')![1]);
    expect(tag(ask, 'status')![2]).toContain(doorLock);
    // nutshell's FakeWallet pays the invoice; the gateway mints to the job's key and runs it.
    const res = await me.result(req.id);
    const charge = chargeOf(upstream.requests.at(-1)!.body);
    expect(Number(tag(res, 'amount')![1])).toBe(charge);
    const change = Math.floor((paid - charge) / 1000);
    expect(change).toBeGreaterThan(0);
    expect(await me.spendLocked(mintUrl, tag(res, 'cashu')![1]!)).toBe(change);
    await me.feedback(req.id, 'success');
    const rest = (paid - charge) % 1000;
    expect(diff(t0, await gw.ledger.totals())).toEqual({ credited: paid, charged: charge + rest, refunded: change * 1000, balances: 0, reserved: 0 });
    // The old derivation, sha256("nostr job " + id), names no key, and neither does anything public.
    for (const key of [sha256(`nostr job ${req.id}`), req.id, sha256(req.id)]) {
      expect((await http('/v1/balance/info', { headers: { authorization: `Bearer sk-${key}` } })).status).toBe(401);
    }
    const jobKey = nostrDoorKeys(gw.nostr!.id.sk).jobKey(req.id);
    expect(jobKey).toMatch(/^nostr:[0-9a-f]{64}$/);
    expect((await http('/v1/balance/info', { headers: { authorization: `Bearer sk-${jobKey.slice(6)}` } })).status).toBe(401);
    expect(await gw.ledger.getKey(jobKey)).toMatchObject({ balance: 0, reserved: 0 });
  });

  it('charges an encrypted job exactly too, change included', async () => {
    const t0 = await gw.ledger.totals();
    const token = await lockedToken(mintUrl, 25, doorLock);
    const inner = JSON.stringify([['i', 'Secret sums', 'text'], ['param', 'max_tokens', '5'], ['cashu', token]]);
    const req = await me.publish(me.job(gatewayPubkey, [['encrypted']], nip44.encrypt(inner, nip44.getConversationKey(me.sk, gatewayPubkey))));
    const res = await me.result(req.id);
    const charge = chargeOf(upstream.requests.at(-1)!.body);
    expect(Number(tag(res, 'amount')![1])).toBe(charge);
    const change = Math.floor((25_000 - charge) / 1000);
    expect(await me.spendLocked(mintUrl, tag(res, 'cashu')![1]!)).toBe(change);
    // The rest was booked before the result went out.
    expect(diff(t0, await gw.ledger.totals())).toEqual({ credited: 25_000, charged: 25_000 - change * 1000, refunded: change * 1000, balances: 0, reserved: 0 });
  });
});

describe('nutzaps', () => {
  async function nutzap(to: string, lock: string, ref: string, sats: number): Promise<Event> {
    const w = await wallet(mintUrl);
    const { send } = await w.ops.send(sats, await mintProofs(mintUrl, sats)).asP2PK({ pubkey: lock }).run();
    const proofTags = send.map((p) => ['proof', JSON.stringify({ id: p.id, amount: p.amount.toNumber(), secret: p.secret, C: p.C, dleq: p.dleq })]);
    return me.publish({ kind: 9321, created_at: Math.floor(Date.now() / 1000), content: '', tags: [...proofTags, ['u', mintUrl], ['e', ref], ['p', to]] });
  }

  it('gives an underpaying nutzap its money back, locked to its sender', async () => {
    // Quotes are checked rarely here, so the nutzap is what pays.
    const slow = await gateway({ NSEC: Buffer.from(generateSecretKey()).toString('hex'), DVM_QUOTE_POLL_MS: '600000' });
    const lock = tag(await ready(slow), 'pubkey')![1]!;
    const target = slow.nostr!.id.pubkey;
    const t0 = await slow.ledger.totals();
    const req = await me.publish(me.job(target, [['i', 'Underpaid', 'text'], ['param', 'max_tokens', '400']]));
    const ask = await me.feedback(req.id, 'payment-required');
    expect(Number(tag(ask, 'amount')![1]) / 1000).toBeGreaterThan(2);
    const before = upstream.requests.length;
    await nutzap(target, lock, ask.id, 2);
    const error = await me.feedback(req.id, 'error', 15_000, (e) => tag(e, 'cashu') !== undefined);
    expect(tag(error, 'status')![2]).toMatch(/Insufficient/);
    expect(await me.spendLocked(mintUrl, tag(error, 'cashu')![1]!)).toBe(2);
    expect(upstream.requests.length).toBe(before);
    expect(diff(t0, await slow.ledger.totals())).toEqual({ credited: 2000, charged: 0, refunded: 2000, balances: 0, reserved: 0 });
    await expectMoneyConserved(slow);
  });
});

describe('NIP-90 bid', () => {
  it('answers a bid below the price with an error naming the price, and asks for nothing', async () => {
    const before = upstream.requests.length;
    const req = await me.publish(me.job(gatewayPubkey, [['i', 'Cheap please', 'text'], ['param', 'max_tokens', '400'], ['bid', '1']]));
    const answer = await me.waitFor({ kinds: [7000], '#e': [req.id] }, (e) => ['error', 'payment-required'].includes(tag(e, 'status')![1]!));
    expect(tag(answer, 'status')![1]).toBe('error');
    const price = Number(/costs up to (\d+) msats/.exec(tag(answer, 'status')![2]!)?.[1]);
    expect(price).toBeGreaterThan(1);
    expect(tag(answer, 'status')![2]).toContain('the bid is 1 msats');
    expect(upstream.requests.length).toBe(before);
  });

  it('holds a cashu-paid job to its bid too, and returns the token whole, locked to the requester', async () => {
    const t0 = await gw.ledger.totals();
    const before = upstream.requests.length;
    const token = await lockedToken(mintUrl, 30, doorLock);
    const req = await me.publish(me.job(gatewayPubkey, [['i', 'Within my bid?', 'text'], ['param', 'max_tokens', '4'], ['bid', '10'], ['cashu', token]]));
    const answer = await me.waitFor({ kinds: [6050, 7000], '#e': [req.id] }, (e) => e.kind === 6050 || tag(e, 'status')![1] === 'error');
    expect(answer.kind).toBe(7000);
    expect(tag(answer, 'status')![2]).toContain('the bid is 10 msats');
    expect(await me.spendLocked(mintUrl, tag(answer, 'cashu')![1]!)).toBe(30);
    expect(upstream.requests.length).toBe(before);
    expect(diff(t0, await gw.ledger.totals())).toEqual({ credited: 30_000, charged: 0, refunded: 30_000, balances: 0, reserved: 0 });
  });
});

describe('a payment after a cancel or the deadline', () => {
  const gateways = {} as Record<'cancel' | 'deadline', Gateway>;
  beforeAll(async () => {
    // The invoice is paid at once (FakeWallet) but first looked at later: 4 s after it was asked
    // for (time enough for the cancel to arrive), or 1.5 s, past a 1 s deadline.
    gateways.cancel = await gateway({ NSEC: Buffer.from(generateSecretKey()).toString('hex'), DVM_QUOTE_POLL_MS: '4000' });
    gateways.deadline = await gateway({ NSEC: Buffer.from(generateSecretKey()).toString('hex'), DVM_QUOTE_POLL_MS: '1500', DVM_PAYMENT_TIMEOUT_SECONDS: '1' });
    await ready(gateways.cancel);
    await ready(gateways.deadline);
  });

  for (const how of ['cancel', 'deadline'] as const) {
    it(`returns a payment made after the ${how}, whole and locked to the requester, without running the job`, async () => {
      const late = gateways[how];
      const target = late.nostr!.id.pubkey;
      const t0 = await late.ledger.totals();
      const before = upstream.requests.length;
      const req = await me.publish(me.job(target, [['i', `Late after ${how}`, 'text'], ['param', 'max_tokens', '400']]));
      const ask = await me.feedback(req.id, 'payment-required');
      const sats = Number(tag(ask, 'amount')![1]) / 1000;
      if (how === 'cancel') {
        await me.publish({ kind: 5, created_at: Math.floor(Date.now() / 1000), tags: [['e', req.id], ['k', '5050']], content: '' });
        const cancelled = await me.feedback(req.id, 'error', 15_000, (e) => /cancelled/.test(tag(e, 'status')![2]!));
        expect(tag(cancelled, 'cashu')).toBeUndefined();
      } else {
        await me.feedback(req.id, 'error', 15_000, (e) => /No payment arrived in time/.test(tag(e, 'status')![2]!));
      }
      const refund = await me.feedback(req.id, 'error', 15_000, (e) => tag(e, 'cashu') !== undefined);
      expect(tag(refund, 'status')![2]).toMatch(how === 'cancel' ? /after the job was cancelled/ : /after the deadline/);
      expect(await me.spendLocked(mintUrl, tag(refund, 'cashu')![1]!)).toBe(sats);
      expect(upstream.requests.length).toBe(before);
      expect(diff(t0, await late.ledger.totals())).toEqual({ credited: sats * 1000, charged: 0, refunded: sats * 1000, balances: 0, reserved: 0 });
      await expectMoneyConserved(late);
    });
  }
});

/** One ledger for two gateway processes (or one restarted): a file for SQLite, a database for PostgreSQL. */
async function sharedLedger(): Promise<string> {
  const url = await testDatabaseUrl();
  return url === ':memory:' ? `sqlite:${join(mkdtempSync(join(tmpdir(), 'dvm-')), 'ledger.db')}` : url;
}

describe('guards kept in the ledger', () => {
  it('runs a job once on two instances of one npub, and gives no free job again after a restart', async () => {
    const env = { NSEC: Buffer.from(generateSecretKey()).toString('hex'), DATABASE_URL: await sharedLedger(), FREE_REQUESTS_PER_PUBKEY: '1' };
    const a = await gateway(env);
    const b = await gateway(env);
    await ready(a);
    const target = a.nostr!.id.pubkey;
    const before = upstream.requests.length;
    const first = await me.publish(me.job(target, [['i', 'Free, once', 'text'], ['param', 'max_tokens', '2']]));
    await me.result(first.id);
    // A paid job after it, seen by both: by the time it is answered, both have handled the first.
    const second = await me.publish(me.job(target, [['i', 'Paid', 'text'], ['param', 'max_tokens', '2'], ['cashu', await lockedToken(mintUrl, 20, nostrDoorKeys(a.nostr!.id.sk).p2pk.pubkey)]]));
    await me.result(second.id);
    expect(upstream.requests.length - before).toBe(2);
    expect((await me.pool.querySync([relay.url], { kinds: [6050], '#e': [first.id] })).length).toBe(1);
    // A restarted instance sees both jobs again (they are within DVM_MAX_AGE_SECONDS): it runs neither,
    // and the free job is used up.
    await stop(a);
    await stop(b);
    // It never looks at its quote: the mint's FakeWallet pays every invoice at once, and a quote
    // being minted while the books are read below is a mint operation rightly pending.
    const again = await gateway({ ...env, DVM_QUOTE_POLL_MS: '600000' });
    await ready(again);
    const third = await me.publish(me.job(target, [['i', 'Free again?', 'text'], ['param', 'max_tokens', '2']]));
    await me.feedback(third.id, 'payment-required');
    expect(upstream.requests.length - before).toBe(2);
    await expectMoneyConserved(again);
  });

  it('picks up a payment watch after a restart, and runs the job it pays for', async () => {
    const env = { NSEC: Buffer.from(generateSecretKey()).toString('hex'), DATABASE_URL: await sharedLedger() };
    // This one never looks at its quote; the invoice is paid at once.
    const a = await gateway({ ...env, DVM_QUOTE_POLL_MS: '600000' });
    await ready(a);
    const target = a.nostr!.id.pubkey;
    const req = await me.publish(me.job(target, [['i', 'Paid while down', 'text'], ['param', 'max_tokens', '400']]));
    const ask = await me.feedback(req.id, 'payment-required');
    const paid = Number(tag(ask, 'amount')![1]);
    await stop(a);
    const b = await gateway(env);
    const res = await me.result(req.id);
    const charge = chargeOf(upstream.requests.at(-1)!.body);
    expect(Number(tag(res, 'amount')![1])).toBe(charge);
    expect(await me.spendLocked(mintUrl, tag(res, 'cashu')![1]!)).toBe(Math.floor((paid - charge) / 1000));
    // The first quote paid for it: the restarted gateway asked for nothing again.
    const asks = await me.pool.querySync([relay.url], { kinds: [7000], '#e': [req.id] });
    expect(asks.filter((e) => tag(e, 'status')?.[1] === 'payment-required').map((e) => e.id)).toEqual([ask.id]);
    const t = await b.ledger.totals();
    expect([t.credited, t.charged, t.refunded, t.balances, t.reserved]).toEqual([paid, paid - Math.floor((paid - charge) / 1000) * 1000, Math.floor((paid - charge) / 1000) * 1000, 0, 0]);
    await expectMoneyConserved(b);
  });
});

describe('a restart with no relay holding the job any more', () => {
  it('picks up the payment watch from the ledger and runs the job it pays for', async () => {
    const fresh = await startRelay();
    try {
      const env = { NSEC: Buffer.from(generateSecretKey()).toString('hex'), DATABASE_URL: await sharedLedger() };
      const a = await gateway({ ...env, DVM_QUOTE_POLL_MS: '600000' });
      await ready(a);
      const req = await me.publish(me.job(a.nostr!.id.pubkey, [['i', 'Paid while down', 'text'], ['param', 'max_tokens', '400']]));
      const ask = await me.feedback(req.id, 'payment-required');
      const paid = Number(tag(ask, 'amount')![1]);
      await stop(a);
      // Restarted on a relay that has never seen the job, its feedback, or anything of ours.
      const b = await gateway({ ...env, RELAYS: fresh.url });
      const res = await me.result(req.id, 20_000, [fresh.url]);
      const charge = chargeOf(upstream.requests.at(-1)!.body);
      expect(Number(tag(res, 'amount')![1])).toBe(charge);
      expect(await me.spendLocked(mintUrl, tag(res, 'cashu')![1]!)).toBe(Math.floor((paid - charge) / 1000));
      await expectMoneyConserved(b);
    } finally {
      await fresh.stop();
    }
  });
});

describe('a result no relay takes', () => {
  it('keeps the result and its change, and delivers them once a relay takes them', { timeout: 90_000 }, async () => {
    // The gateway's relays: one that demands proof of work it does not do, one that is down.
    const pow = await startRelay({ requirePow: 12 });
    const port = await freePort();
    const later = `ws://127.0.0.1:${port}`;
    let back: RunningRelay | undefined;
    const g = await gateway({ RELAYS: `${pow.url},${later}`, NSEC: Buffer.from(generateSecretKey()).toString('hex') });
    try {
      const target = g.nostr!.id.pubkey;
      const lock = nostrDoorKeys(g.nostr!.id.sk).p2pk.pubkey;
      // Only the requester mines, so its job is taken and every answer refused.
      const job = finalizeEvent(minePow({ ...me.job(target, [['i', 'Anyone there?', 'text'], ['param', 'max_tokens', '3'], ['cashu', await lockedToken(mintUrl, 20, lock)]]), pubkey: me.pubkey }, 12), me.sk);
      const t0 = await g.ledger.totals();
      // Published until the gateway's subscription is up (a relay keeps it either way).
      await me.publish(job, [pow.url]);
      await waitFor(() => g.ledger.getNote('nostr-undelivered', job.id), 'the undelivered result kept', 45_000);
      const charge = chargeOf(upstream.requests.at(-1)!.body);
      const change = Math.floor((20_000 - charge) / 1000);
      // Charged, and the change is out of the gateway's books, but held in the kept result.
      expect(diff(t0, await g.ledger.totals())).toEqual({ credited: 20_000, charged: 20_000 - change * 1000, refunded: change * 1000, balances: 0, reserved: 0 });
      back = await startRelay({ port });
      const res = await me.result(job.id, 45_000, [later]);
      expect(Number(tag(res, 'amount')![1])).toBe(charge);
      expect(await me.spendLocked(mintUrl, tag(res, 'cashu')![1]!)).toBe(change);
      await me.waitFor({ kinds: [7000], '#e': [job.id] }, (e) => tag(e, 'status')?.[1] === 'success', 45_000, [later]);
      expect(await g.ledger.getNote('nostr-undelivered', job.id)).toBeUndefined();
      await expectDrained(g, { prices: PRICES });
    } finally {
      await stop(g);
      await back?.stop();
      await pow.stop();
    }
  });
});
