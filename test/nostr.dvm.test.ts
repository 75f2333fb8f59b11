import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { SimplePool } from 'nostr-tools/pool';
import { finalizeEvent, generateSecretKey, getPublicKey, type Event, type EventTemplate } from 'nostr-tools/pure';
import type { Filter } from 'nostr-tools/filter';
import * as nip04 from 'nostr-tools/nip04';
import * as nip44 from 'nostr-tools/nip44';
import { getTokenMetadata } from '@cashu/cashu-ts';
import { FakeUpstream, REPLY_WORDS } from './support/upstream.ts';
import { PRICES, expectDrained, expectMoneyConserved, msats, startGateway, type Gateway } from './support/gateway.ts';
import { startRelay, type RunningRelay } from './support/relay.ts';
import { mintProofs, mintToken, wallet } from './support/cashu.ts';
import { nostrDoorKeys } from '../src/nostr/door-keys.ts';
import { waitFor as waitUntil } from './support/suite.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { HandshakeServer, HoldingRelay } from './support/relay-double.ts';
import { Dvm } from '../src/nostr/dvm.ts';
import { inspectToken } from '../src/cashu/token.ts';
import type { Ledger } from '../src/ledger/ledger.ts';

const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
const relays: RunningRelay[] = [];
let urls: string[];
let gw: Gateway;
let gatewayPubkey: string;
const pool = new SimplePool();

/** The requester: any Nostr client, with its own key. */
const sk = generateSecretKey();
const pubkey = getPublicKey(sk);
const skHex = Buffer.from(sk).toString('hex');

function publish(t: EventTemplate, to = urls): Event {
  const e = finalizeEvent(t, sk);
  void Promise.allSettled(pool.publish(to, e));
  return e;
}

/** Waits for the first event matching the filter (and predicate) on our relays. */
function waitFor(filter: Filter, predicate: (e: Event) => boolean = () => true, ms = 15_000): Promise<Event> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sub.close();
      reject(new Error(`no event matching ${JSON.stringify(filter)} within ${ms} ms`));
    }, ms);
    const sub = pool.subscribe(urls, filter, {
      onevent: (e) => {
        if (!predicate(e)) return;
        clearTimeout(timer);
        sub.close();
        resolve(e);
      },
    });
  });
}

const tag = (e: Event, name: string) => e.tags.find((t) => t[0] === name);
const jobRequest = (tags: string[][], content = ''): EventTemplate => ({
  kind: 5050,
  created_at: Math.floor(Date.now() / 1000),
  tags: [['p', gatewayPubkey], ...tags],
  content,
});
const feedback = (requestId: string, status: string) =>
  waitFor({ kinds: [7000], '#e': [requestId] }, (e) => tag(e, 'status')?.[1] === status);
const result = (requestId: string) => waitFor({ kinds: [6050], '#e': [requestId] });

/** Spends change locked to the requester's key at the mint, as only the requester can. */
async function spendLocked(token: string): Promise<number> {
  const w = await wallet(mintUrl, getTokenMetadata(token).unit ?? 'sat');
  const proofs = await w.receive(token, { privkey: skHex });
  return proofs.reduce((s, p) => s + p.amount.toNumber(), 0);
}

/**
 * Cancels a job (a kind 5 deletion), and returns once `gateway` has read the cancel: a job it
 * refuses at once (over the prompt cap) follows it through the same relays, which pass events
 * on in the order they took them, so by that job's error the deletion has been read.
 */
async function cancelRead(jobId: string, gateway: string): Promise<void> {
  const deletion = finalizeEvent({ kind: 5, created_at: Math.floor(Date.now() / 1000), tags: [['e', jobId], ['k', '5050']], content: '' }, sk);
  await Promise.all(pool.publish(urls, deletion));
  const sentinel = publish({ ...jobRequest([]), tags: [['p', gateway], ['i', 'x'.repeat(40_000), 'text']] });
  await feedback(sentinel.id, 'error');
}

/** Until every announcement of `author` is on every relay. */
async function announced(author: string, kinds = [0, 31990, 38421, 10019]): Promise<void> {
  await waitUntil(async () => {
    for (const url of urls) if (new Set((await pool.querySync([url], { authors: [author], kinds })).map((e) => e.kind)).size < kinds.length) return false;
    return true;
  }, `the announcements of ${author.slice(0, 8)}`);
}

beforeAll(async () => {
  await upstream.start();
  // The second relay passes forged events on, so the gateway's own checks are what drop them.
  relays.push(await startRelay(), await startRelay({ verifySignatures: false }));
  urls = relays.map((r) => r.url);
  gw = await startGateway(mintUrl, upstream, {
    RELAYS: urls.join(','),
    NSEC: Buffer.from(generateSecretKey()).toString('hex'),
    PUBLIC_URL: 'https://gateway.example',
    DVM_DEFAULT_MODEL: 'gpt-test',
    DVM_QUOTE_POLL_MS: '200',
  });
  // No wait for the subscription: it asks for stored events back to DVM_MAX_AGE, so a job the
  // relays hold before it is up is delivered all the same. The announcements are waited for.
  gatewayPubkey = gw.nostr!.id.pubkey;
  await announced(gatewayPubkey);
});
afterAll(async () => {
  try {
    if (gw) await expectDrained(gw, { prices: PRICES });
  } finally {
    pool.destroy();
    await gw?.close();
    for (const r of relays) await r.stop();
    await upstream.stop();
  }
});
afterEach(async () => {
  upstream.modes.length = 0;
  await expectMoneyConserved(gw);
});


/** Another DVM beside the suite's, on the same relays and upstream, with its own key. */
function dvmGateway(env: Record<string, string>): ReturnType<typeof startGateway> {
  return startGateway(mintUrl, upstream, { RELAYS: urls.join(','), NSEC: Buffer.from(generateSecretKey()).toString('hex'), DVM_DEFAULT_MODEL: 'gpt-test', ...env });
}
/** A cancelled 30-sat job's feedback: its whole token back, no upstream called, nothing charged. */
async function expectRefundedWhole(error: Event, dvm: Gateway, mint: string, upstreamBefore: number): Promise<void> {
  expect(tag(error, 'status')![2]).toMatch(/cancelled/);
  const back = await (await wallet(mint)).receive(tag(error, 'cashu')![1]!, { privkey: skHex });
  expect(back.reduce((s, p) => s + p.amount.toNumber(), 0)).toBe(30);
  expect(upstream.requests.length).toBe(upstreamBefore);
  expect((await dvm.ledger.totals()).charged).toBe(0);
}

/**
 * Another DVM whose mint holds every swap until `release()`: `atSwap` resolves once one is held.
 * `token` (30 sats at that mint) pays a job; `stop` lets the mint go and closes both (`closed`: a
 * close the test began itself).
 */
async function heldSwapDvm() {
  const proxy = new CountingProxy(mintUrl);
  await proxy.start();
  const gw = await startGateway(proxy.url, upstream, { RELAYS: urls.join(','), NSEC: Buffer.from(generateSecretKey()).toString('hex'), DVM_DEFAULT_MODEL: 'gpt-test' });
  const token = await mintToken(proxy.url, 30);
  const { reached: atSwap, release } = proxy.hold('/v1/swap');
  const stop = async (closed?: Promise<void>) => {
    release();
    await (closed ? closed.catch(() => {}) : gw.close());
    await proxy.stop();
  };
  return { proxy, gw, token, target: gw.nostr!.id.pubkey, atSwap, release, stop };
}

describe('announcements', () => {
  it('publishes kind 0, NIP-89 31990, Routstr 38421 and NIP-61 10019, parseable as their NIPs say', async () => {
    const events = await pool.querySync(urls, { authors: [gatewayPubkey], kinds: [0, 31990, 38421, 10019] });
    const byKind = new Map(events.map((e) => [e.kind, e]));
    expect(JSON.parse(byKind.get(0)!.content)).toMatchObject({ name: 'Cashu AI Gateway' });

    const handler = byKind.get(31990)!;
    expect(tag(handler, 'k')).toEqual(['k', '5050']);
    expect(tag(handler, 'd')?.[1]).toBeTruthy();
    const info = JSON.parse(handler.content);
    expect(info).toMatchObject({ supportsEncryption: true, acceptsNutZaps: true });
    expect(info.nip90Params.model.values).toContain('gpt-test');
    expect(info.pricing.models['gpt-test']).toEqual({
      prompt_msats_per_token: 2,
      completion_msats_per_token: 5,
      cached_prompt_msats_per_token: 2,
      cache_write_msats_per_token: 2,
      request_msats: 0,
      image_msats: 0,
    });

    const provider = byKind.get(38421)!;
    expect(tag(provider, 'u')).toEqual(['u', 'https://gateway.example']);
    expect(tag(provider, 'mint')).toEqual(['mint', mintUrl]);
    expect(tag(provider, 'version')?.[1]).toMatch(/^\d+\.\d+\.\d+/);
    expect(provider.tags).toContainEqual(['model', 'gpt-test', '2', '5']);

    const nutzapInfo = byKind.get(10019)!;
    // The Nostr door's own lock key, not the HTTP door's: ecash sent in public events pays jobs only.
    expect(tag(nutzapInfo, 'pubkey')).toEqual(['pubkey', nostrDoorKeys(gw.nostr!.id.sk).p2pk.pubkey]);
    expect(tag(nutzapInfo, 'pubkey')![1]).not.toBe(gw.wallets.p2pk.pubkey);
    expect(nutzapInfo.tags.filter((t) => t[0] === 'relay').map((t) => t[1]).sort()).toEqual([...urls].sort());
    expect(tag(nutzapInfo, 'mint')).toEqual(['mint', mintUrl, 'sat']);

    // Announcing again with nothing changed publishes nothing.
    expect(
      await gw.nostr!.announcer.announce({
        name: 'Cashu AI Gateway',
        about: gw.nostr ? JSON.parse(byKind.get(0)!.content).about : '',
        version: tag(provider, 'version')![1]!,
        pubkey: gatewayPubkey,
        publicUrl: 'https://gateway.example',
        mints: [mintUrl],
        relays: urls,
        p2pkPubkey: nostrDoorKeys(gw.nostr!.id.sk).p2pk.pubkey,
        models: gw.catalog.list(),
      }),
    ).toBe(0);
  });
});

describe('jobs', () => {
  it('runs a job paid with a cashu tag, once although it arrives through two relays, with change locked to the requester', async () => {
    const token = await mintToken(mintUrl, 30);
    const before = upstream.requests.length;
    const req = publish(jobRequest([['i', 'What is six times seven?', 'text'], ['param', 'model', 'gpt-test'], ['param', 'max_tokens', '4'], ['cashu', token]]));
    const processing = feedback(req.id, 'processing');
    const res = await result(req.id);
    await processing;
    await feedback(req.id, 'success');
    expect(res.content).toBe(REPLY_WORDS.slice(0, 4).join(' '));
    expect(tag(res, 'p')).toEqual(['p', pubkey]);
    expect(tag(res, 'i')).toEqual(['i', 'What is six times seven?', 'text']);
    expect(JSON.parse(tag(res, 'request')![1]!).id).toBe(req.id);
    const charged = Number(tag(res, 'amount')![1]);
    expect(charged).toBeGreaterThan(0);
    // The change is public but locked to the requester's key: they, and only they, can spend it.
    const change = tag(res, 'cashu')![1]!;
    await expect((await wallet(mintUrl)).receive(change)).rejects.toThrow();
    expect(await spendLocked(change)).toBe(Math.floor((30_000 - charged) / 1000));
    // Delivered by both relays at once: one result, one run of the upstream.
    expect(upstream.requests.length - before).toBe(1);
    expect((await pool.querySync(urls, { kinds: [6050], '#e': [req.id] })).length).toBe(1);
  });

  it('runs a job once when a second relay delivers it after it ran', async () => {
    const [first, second] = urls;
    const before = upstream.requests.length;
    const req = publish(jobRequest([['i', 'Once only?', 'text'], ['param', 'max_tokens', '2'], ['cashu', await mintToken(mintUrl, 30)]]), [first!]);
    await result(req.id);
    await feedback(req.id, 'success');
    // The same event, late, through the other relay; then a sentinel through that relay alone. The
    // relay delivers them in order, and the sentinel has a token to redeem and an answer to wait
    // for, where a second run of the job would be refused at once (its key holds only the rest
    // under a sat): by the sentinel's success, a second run has left its error feedback, or its
    // request at the upstream.
    await Promise.allSettled(pool.publish([second!], req));
    const sentinel = publish(jobRequest([['i', 'And now?', 'text'], ['param', 'max_tokens', '1'], ['cashu', await mintToken(mintUrl, 10)]]), [second!]);
    await result(sentinel.id);
    await feedback(sentinel.id, 'success');
    expect(upstream.requests.slice(before).map((r) => (r.body.messages as Array<{ content: string }>)[0]!.content)).toEqual(['Once only?', 'And now?']);
    const statuses = (await pool.querySync(urls, { kinds: [7000], '#e': [req.id] })).map((e) => tag(e, 'status')?.[1]);
    expect(statuses.sort()).toEqual(['processing', 'success']);
    expect((await pool.querySync(urls, { kinds: [6050], '#e': [req.id] })).length).toBe(1);
  });

  for (const scheme of ['nip44', 'nip04'] as const) {
    it(`reads an encrypted job (${scheme}) and answers in the same scheme`, async () => {
      const token = await mintToken(mintUrl, 30);
      const secretTags = [['i', 'A secret question', 'text'], ['param', 'max_tokens', '3'], ['cashu', token]];
      const plain = JSON.stringify(secretTags);
      const content =
        scheme === 'nip04' ? nip04.encrypt(sk, gatewayPubkey, plain) : nip44.encrypt(plain, nip44.getConversationKey(sk, gatewayPubkey));
      const req = publish(jobRequest([['encrypted']], content));
      const res = await result(req.id);
      expect(tag(res, 'encrypted')).toEqual(['encrypted']);
      expect(tag(res, 'i')).toBeUndefined();
      const text = scheme === 'nip04' ? nip04.decrypt(sk, gatewayPubkey, res.content) : nip44.decrypt(res.content, nip44.getConversationKey(sk, gatewayPubkey));
      expect(text).toBe(REPLY_WORDS.slice(0, 3).join(' '));
      expect(res.content.includes('?iv=')).toBe(scheme === 'nip04');
      expect(upstream.requests.at(-1)!.body.messages).toEqual([{ role: 'user', content: 'A secret question' }]);
    });
  }

  it('asks for payment with a bolt11 from a mint quote, and runs the job once the quote is paid', async () => {
    // Room for 400 tokens makes a quote of a few sats; the short reply leaves whole sats of change.
    const req = publish(jobRequest([['i', 'Pay me by Lightning', 'text'], ['param', 'max_tokens', '400']]));
    const ask = await feedback(req.id, 'payment-required');
    const amount = tag(ask, 'amount')!;
    expect(Number(amount[1])).toBeGreaterThan(0);
    expect(amount[2]).toMatch(/^lnbc/);
    // nutshell's FakeWallet settles the invoice; the gateway mints the ecash to itself and runs.
    const res = await result(req.id);
    expect(res.content).toBe(REPLY_WORDS.join(' '));
    const charged = Number(tag(res, 'amount')![1]);
    expect(Math.floor((Number(amount[1]) - charged) / 1000)).toBeGreaterThan(0);
    expect(await spendLocked(tag(res, 'cashu')![1]!)).toBe(Math.floor((Number(amount[1]) - charged) / 1000));
  });

  it('chains a job on an earlier job result', async () => {
    const token = await mintToken(mintUrl, 30);
    const first = publish(jobRequest([['i', 'Start', 'text'], ['param', 'max_tokens', '5'], ['cashu', token]]));
    const firstResult = await result(first.id);
    const second = publish(jobRequest([['i', first.id, 'job'], ['param', 'max_tokens', '1'], ['cashu', await mintToken(mintUrl, 30)]]));
    await result(second.id);
    expect(upstream.requests.at(-1)!.body.messages).toEqual([{ role: 'user', content: firstResult.content }]);
  });

  it('finishes a job cancelled while the upstream makes its answer: delivered, charged to the msat, change locked to the requester', async () => {
    // The upstream has the job and is making (and billing) its answer: as over HTTP, where a
    // client that leaves a whole answer pays for it, a cancel now no longer makes it free.
    let release!: () => void;
    upstream.answerGate = new Promise<void>((r) => (release = r));
    let req: Event;
    try {
      const before = upstream.requests.length;
      req = publish(jobRequest([['i', 'Think it over', 'text'], ['param', 'max_tokens', '4'], ['cashu', await mintToken(mintUrl, 30)]]));
      await waitUntil(() => upstream.requests.length > before, 'the job at the upstream');
      await cancelRead(req.id, gatewayPubkey);
    } finally {
      release();
      upstream.answerGate = undefined;
    }
    const res = await result(req.id);
    const success = await feedback(req.id, 'success');
    expect(tag(success, 'status')![2]).toMatch(/cancel came after the model had the job/);
    expect(res.content).toBe(REPLY_WORDS.slice(0, 4).join(' '));
    const u = upstream.reported.at(-1) as { prompt_tokens: number; completion_tokens: number };
    const charged = msats(u.prompt_tokens, PRICES['gpt-test'].prompt) + msats(u.completion_tokens, PRICES['gpt-test'].completion);
    expect(Number(tag(res, 'amount')![1])).toBe(charged);
    expect(await spendLocked(tag(res, 'cashu')![1]!)).toBe(Math.floor((30_000 - charged) / 1000));
  });

  for (const who of ['author', 'stranger'] as const) {
    it(`${who === 'author' ? 'refunds a job whole when its cancel comes' : 'runs a job whose id a stranger deletes'} while its token is being redeemed, before any upstream has it`, async () => {
      // The mint holds the job's swap: the cancel is read before the job is running.
      const { proxy, gw: slowMint, token, target, atSwap, release, stop } = await heldSwapDvm();
      try {
        const before = upstream.requests.length;
        const req = publish({ ...jobRequest([]), tags: [['p', target], ['i', 'Never mind', 'text'], ['param', 'max_tokens', '2'], ['cashu', token]] });
        await atSwap;
        if (who === 'author') await cancelRead(req.id, target);
        else {
          const deletion = finalizeEvent({ kind: 5, created_at: Math.floor(Date.now() / 1000), tags: [['e', req.id], ['k', '5050']], content: '' }, generateSecretKey());
          await Promise.all(pool.publish(urls, deletion));
          const sentinel = publish({ ...jobRequest([]), tags: [['p', target], ['i', 'x'.repeat(40_000), 'text']] });
          await feedback(sentinel.id, 'error');
        }
        release();
        if (who === 'stranger') {
          const res = await result(req.id);
          expect(res.content).toBe(REPLY_WORDS.slice(0, 2).join(' '));
          expect(upstream.requests.length).toBe(before + 1);
        } else {
          await expectRefundedWhole(await feedback(req.id, 'error'), slowMint, proxy.url, before);
        }
        await expectDrained(slowMint, { prices: PRICES });
      } finally {
        await stop();
      }
    });
  }

  it("keeps an author's cancel of a job being redeemed through a stranger's flood of deletions", async () => {
    const { proxy, gw: slowMint, token, target, atSwap, release, stop } = await heldSwapDvm();
    try {
      const before = upstream.requests.length;
      const req = publish({ ...jobRequest([]), tags: [['p', target], ['i', 'Never mind, really', 'text'], ['param', 'max_tokens', '2'], ['cashu', token]] });
      await atSwap;
      await cancelRead(req.id, target);
      // A stranger deletes 10,001 made-up ids, costing it one key and a few signatures.
      const stranger = generateSecretKey();
      for (let i = 0; i < 11; i++) {
        const ids = Array.from({ length: 1000 }, () => Buffer.from(generateSecretKey()).toString('hex'));
        const deletion = finalizeEvent({ kind: 5, created_at: Math.floor(Date.now() / 1000), tags: ids.map((id) => ['e', id]), content: '' }, stranger);
        await Promise.allSettled(pool.publish(urls, deletion));
      }
      const sentinel = publish({ ...jobRequest([]), tags: [['p', target], ['i', 'x'.repeat(40_000), 'text']] });
      await feedback(sentinel.id, 'error');
      release();
      // Its answer: the cancel's refund, not a result charged for.
      const error = await waitFor({ kinds: [6050, 7000], '#e': [req.id] }, (e) => e.kind === 6050 || tag(e, 'status')?.[1] === 'error', 30_000);
      expect(error.kind).toBe(7000);
      await expectRefundedWhole(error, slowMint, proxy.url, before);
      await expectDrained(slowMint, { prices: PRICES });
    } finally {
      await stop();
    }
  }, 90_000);

  it('ends a job cancelled during a stalled answer at the whole-answer timeout, nothing charged, the payment back locked to the requester', async () => {
    const stalls = await dvmGateway({
      // A whole answer waits for its headers the longer of the two.
      UPSTREAM_HEADERS_TIMEOUT_MS: '2000',
      UPSTREAM_BODY_TIMEOUT_MS: '2000',
    });
    try {
      const target = stalls.nostr!.id.pubkey;
      upstream.modes.push('stall');
      const before = upstream.requests.length;
      const req = publish({ ...jobRequest([]), tags: [['p', target], ['i', 'Take your time', 'text'], ['param', 'max_tokens', '2'], ['cashu', await mintToken(mintUrl, 30)]] });
      await waitUntil(() => upstream.requests.length > before, 'the job at the upstream');
      await cancelRead(req.id, target);
      // The cancel did not stop it; the upstream's silence did, and then nothing is charged.
      const error = await feedback(req.id, 'error');
      expect(tag(error, 'status')![2]).toMatch(/did not answer in time/);
      expect(await spendLocked(tag(error, 'cashu')![1]!)).toBe(30);
      expect((await stalls.ledger.totals()).charged).toBe(0);
      await expectDrained(stalls, { prices: PRICES });
    } finally {
      await stalls.close();
    }
  });

  it('finishes a whole answer under way when the gateway stops, and delivers it with its change', async () => {
    const stopping = await dvmGateway({});
    let closed: Promise<void> | undefined;
    let release!: () => void;
    upstream.answerGate = new Promise<void>((r) => (release = r));
    try {
      const target = stopping.nostr!.id.pubkey;
      const before = upstream.requests.length;
      const req = publish({ ...jobRequest([]), tags: [['p', target], ['i', 'Before you go', 'text'], ['param', 'max_tokens', '3'], ['cashu', await mintToken(mintUrl, 30)]] });
      await waitUntil(() => upstream.requests.length > before, 'the job at the upstream');
      const delivered = result(req.id);
      closed = stopping.close();
      release();
      upstream.answerGate = undefined;
      const res = await delivered;
      expect(res.content).toBe(REPLY_WORDS.slice(0, 3).join(' '));
      const u = upstream.reported.at(-1) as { prompt_tokens: number; completion_tokens: number };
      const charged = msats(u.prompt_tokens, PRICES['gpt-test'].prompt) + msats(u.completion_tokens, PRICES['gpt-test'].completion);
      expect(Number(tag(res, 'amount')![1])).toBe(charged);
      expect(await spendLocked(tag(res, 'cashu')![1]!)).toBe(Math.floor((30_000 - charged) / 1000));
      await closed;
    } finally {
      release();
      upstream.answerGate = undefined;
      await (closed ?? stopping.close());
    }
  });

  it('returns the payment of a job whose token is at the mint when the gateway stops', async () => {
    const { proxy, gw: stopping, token, target, atSwap, release, stop } = await heldSwapDvm();
    let closed: Promise<void> | undefined;
    try {
      const before = upstream.requests.length;
      const req = publish({ ...jobRequest([]), tags: [['p', target], ['i', 'Last one', 'text'], ['param', 'max_tokens', '2'], ['cashu', token]] });
      await atSwap;
      const error = feedback(req.id, 'error');
      closed = stopping.close();
      // The stop is under way (relays, ledger) while the mint still holds the swap.
      await new Promise((r) => setTimeout(r, 500));
      release();
      const e = await error;
      const back = await (await wallet(proxy.url)).receive(tag(e, 'cashu')![1]!, { privkey: skHex });
      expect(back.reduce((s, p) => s + p.amount.toNumber(), 0)).toBe(30);
      expect(upstream.requests.length).toBe(before);
      await closed;
    } finally {
      await stop(closed);
    }
  });

  it('returns the payment of a job whose swap the mint took with its answer lost, once the swap is settled', async () => {
    const proxy = new CountingProxy(mintUrl);
    await proxy.start();
    const lossy = await startGateway(proxy.url, upstream, { RELAYS: urls.join(','), NSEC: Buffer.from(generateSecretKey()).toString('hex'), DVM_DEFAULT_MODEL: 'gpt-test', MINT_TIMEOUT_MS: '500' });
    try {
      const target = lossy.nostr!.id.pubkey;
      const token = await mintToken(proxy.url, 30);
      // The mint swaps the job's token and its answer is lost; asking it again is lost too.
      proxy.faults.set('/v1/swap', { drop: true });
      proxy.faults.set('/v1/restore', { drop: true });
      proxy.faults.set('/v1/checkstate', { drop: true });
      const before = upstream.requests.length;
      const req = publish({ ...jobRequest([]), tags: [['p', target], ['i', 'Lost on the way', 'text'], ['param', 'max_tokens', '2'], ['cashu', token]] });
      const first = await feedback(req.id, 'error');
      expect(tag(first, 'cashu')).toBeUndefined();
      // The mint answers again: the swap is found done and the job's key credited.
      proxy.faults.clear();
      await waitUntil(async () => {
        await lossy.wallets.recoverAll();
        return (await lossy.ledger.pendingOps()).length === 0;
      }, 'the swap settled');
      const back = await waitFor({ kinds: [7000], '#e': [req.id] }, (e) => tag(e, 'cashu') !== undefined, 40_000);
      const proofs = await (await wallet(proxy.url)).receive(tag(back, 'cashu')![1]!, { privkey: skHex });
      expect(proofs.reduce((s, p) => s + p.amount.toNumber(), 0)).toBe(30);
      expect(upstream.requests.length).toBe(before);
      await expectDrained(lossy, { prices: PRICES });
    } finally {
      proxy.faults.clear();
      await lossy.close();
      await proxy.stop();
    }
  }, 90_000);

  it('runs a job paid with a NIP-61 nutzap locked to the key in its 10019', async () => {
    // Quotes are checked rarely here, so the nutzap is what pays.
    const slowQuotes = await dvmGateway({
      DVM_QUOTE_POLL_MS: '600000',
    });
    try {
      const target = slowQuotes.nostr!.id.pubkey;
      await announced(target, [10019]);
      const req = publish({ ...jobRequest([]), tags: [['p', target], ['i', 'Paid by nutzap', 'text'], ['param', 'max_tokens', '400']] });
      const ask = await feedback(req.id, 'payment-required');
      const sats = Number(tag(ask, 'amount')![1]) / 1000;
      const [info] = await pool.querySync(urls, { kinds: [10019], authors: [target] });
      const lockTo = tag(info!, 'pubkey')![1]!;
      const w = await wallet(mintUrl);
      const { send } = await w.ops.send(sats, await mintProofs(mintUrl, sats)).asP2PK({ pubkey: lockTo }).run();
      // NIP-61: one `proof` tag per proof, as JSON with its DLEQ, so the gateway can check it offline.
      const proofTags = send.map((p) => ['proof', JSON.stringify({ id: p.id, amount: p.amount.toNumber(), secret: p.secret, C: p.C, dleq: p.dleq })]);
      publish({
        kind: 9321,
        created_at: Math.floor(Date.now() / 1000),
        content: '',
        tags: [...proofTags, ['u', mintUrl], ['e', ask.id], ['p', target]],
      });
      const res = await result(req.id);
      expect(res.content).toBe(REPLY_WORDS.join(' '));
      expect(await spendLocked(tag(res, 'cashu')![1]!)).toBe(Math.floor((sats * 1000 - Number(tag(res, 'amount')![1])) / 1000));
      await expectDrained(slowQuotes, { prices: PRICES });
    } finally {
      await slowQuotes.close();
    }
  });

  it("gives a stranger's nutzap on a job paid and being prepared none of the requester's payment: the job runs on it", async () => {
    // A relay that never answers a REQ: reading the job's input event takes its 3 s, the job paid meanwhile.
    const silent = new HandshakeServer();
    const silentUrl = await silent.start();
    const slow = await dvmGateway({ RELAYS: `${urls[0]},${silentUrl}`, DVM_QUOTE_POLL_MS: '200' });
    try {
      const target = slow.nostr!.id.pubkey;
      await waitUntil(async () => (await pool.querySync([urls[0]!], { authors: [target], kinds: [10019] })).length > 0, 'its 10019');
      const note = finalizeEvent({ kind: 1, created_at: Math.floor(Date.now() / 1000), tags: [], content: 'Read me, slowly.' }, sk);
      await Promise.all(pool.publish(urls, note));
      const req = publish({ ...jobRequest([]), tags: [['p', target], ['i', note.id, 'event'], ['param', 'max_tokens', '400']] });
      await feedback(req.id, 'payment-required');
      // The invoice is paid (FakeWallet) and minted to the job's key: the job reads its input again.
      await new Promise((r) => setTimeout(r, 1_500));
      // A stranger nutzaps 1 sat to the job.
      const stranger = generateSecretKey();
      const [info] = await pool.querySync(urls, { kinds: [10019], authors: [target] });
      const w = await wallet(mintUrl);
      const { send } = await w.ops.send(1, await mintProofs(mintUrl, 1)).asP2PK({ pubkey: tag(info!, 'pubkey')![1]! }).run();
      const proofTags = send.map((p) => ['proof', JSON.stringify({ id: p.id, amount: p.amount.toNumber(), secret: p.secret, C: p.C, dleq: p.dleq })]);
      const zap = finalizeEvent({ kind: 9321, created_at: Math.floor(Date.now() / 1000), content: '', tags: [...proofTags, ['u', mintUrl], ['e', req.id], ['p', target]] }, stranger);
      await Promise.allSettled(pool.publish(urls, zap));
      const res = await result(req.id);
      expect(res.content).toBe(REPLY_WORDS.join(' '));
      // Nothing of the requester's went to the stranger: no feedback gave back more than its 1 sat.
      await new Promise((r) => setTimeout(r, 1_000));
      const back = (await pool.querySync([urls[0]!], { kinds: [7000], '#e': [req.id] })).filter((e) => tag(e, 'cashu'));
      for (const e of back) expect(getTokenMetadata(tag(e, 'cashu')![1]!).amount.toNumber()).toBeLessThanOrEqual(1);
      await expectMoneyConserved(slow);
    } finally {
      await slow.close();
      await silent.stop();
    }
  }, 60_000);

  it('drops forged events quietly, and refuses prompts over the cap', async () => {
    const before = upstream.requests.length;
    const good = finalizeEvent(jobRequest([['i', 'forged', 'text'], ['cashu', await mintToken(mintUrl, 30)]]), sk);
    const forged = JSON.parse(JSON.stringify({ ...good, content: 'tampered' })) as Event;
    const raw = new WebSocket(urls[1]!);
    await new Promise((r) => raw.addEventListener('open', r, { once: true }));
    const stored = new Promise((r) => raw.addEventListener('message', r, { once: true }));
    raw.send(JSON.stringify(['EVENT', forged]));
    expect(JSON.parse(String(((await stored) as MessageEvent).data))).toEqual(['OK', forged.id, true, '']);
    raw.close();

    // A job sent after it through the same relay reaches the gateway after it; once that one is
    // answered, the forged event had been read, and nothing answered it or asked the upstream.
    const big = publish(jobRequest([['i', 'x'.repeat(40_000), 'text'], ['cashu', await mintToken(mintUrl, 30)]]), [urls[1]!]);
    const error = await feedback(big.id, 'error');
    expect(tag(error, 'status')![2]).toMatch(/32000 characters/);
    expect(await pool.querySync(urls, { kinds: [7000, 6050], '#e': [forged.id] })).toEqual([]);
    expect(upstream.requests.length).toBe(before);
  });

  it('gives each requester the configured number of free jobs, then asks for payment', async () => {
    const free = await dvmGateway({
      FREE_REQUESTS_PER_PUBKEY: '1',
      DVM_QUOTE_POLL_MS: '600000',
    });
    try {
      const target = free.nostr!.id.pubkey;
      const job = (text: string) => publish({ ...jobRequest([]), tags: [['p', target], ['i', text, 'text'], ['param', 'max_tokens', '2']] });
      const first = job('free?');
      const res = await result(first.id);
      expect(res.content).toBe(REPLY_WORDS.slice(0, 2).join(' '));
      expect(tag(res, 'cashu')).toBeUndefined();
      expect((await free.ledger.totals()).charged).toBe(0);
      const second = job('free again?');
      await feedback(second.id, 'payment-required');
      await expectDrained(free, { prices: PRICES });
    } finally {
      await free.close();
    }
  });

  it('reads an event input, and charges a job what the same prompt costs over HTTP', async () => {
    const note = finalizeEvent({ kind: 1, created_at: Math.floor(Date.now() / 1000), tags: [], content: 'Summarise this note, please.' }, sk);
    // Stored by the relays (their OK) before the job that names it is sent.
    await Promise.all(pool.publish(urls, note));
    const req = publish(jobRequest([['i', note.id, 'event'], ['param', 'max_tokens', '3'], ['cashu', await mintToken(mintUrl, 30)]]));
    const res = await result(req.id);
    expect(upstream.requests.at(-1)!.body.messages).toEqual([{ role: 'user', content: 'Summarise this note, please.' }]);
    const http = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await mintToken(mintUrl, 30)}` },
      body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Summarise this note, please.' }], max_tokens: 3 }),
    });
    const body = (await http.json()) as { usage: { cost: { total_msats: number } } };
    expect(Number(tag(res, 'amount')![1])).toBe(body.usage.cost.total_msats);
  });
});

/**
 * The ledger as a DVM sees it, and every call it makes once `stopped()` has been said: a DVM's
 * work that outlives its stop reads and writes a ledger about to close (or closed).
 */
function lateCalls(ledger: Ledger) {
  const late: string[] = [];
  let stopped = false;
  const spy = new Proxy(ledger, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        if (stopped) late.push(String(prop));
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { ledger: spy, late, stopped: () => void (stopped = true) };
}

/** Unhandled rejections while `fn` runs (and a moment after). */
async function unhandledDuring(fn: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const on = (reason: unknown) => void seen.push(reason);
  process.on('unhandledRejection', on);
  try {
    await fn();
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    process.off('unhandledRejection', on);
  }
  return seen;
}

describe('stopping the DVM', () => {
  it('waits for a kept result being offered again at start-up, and touches the ledger no more', async () => {
    const holding = new HoldingRelay();
    await holding.start();
    const kept = await dvmGateway({});
    try {
      const deps = kept.nostr!.dvm.deps;
      // The gateway's own DVM is done with its start-up look at the ledger, and out of the way:
      // the one under test shares its relay connections.
      await kept.nostr!.dvm.stop();
      // A result a previous run made and no relay took: offered again at start.
      const req = finalizeEvent({ ...jobRequest([['i', 'Kept for later', 'text']]), tags: [['p', kept.nostr!.id.pubkey], ['i', 'Kept for later', 'text']] }, sk);
      const res = kept.nostr!.relays.sign({ kind: 6050, created_at: Math.floor(Date.now() / 1000), tags: [['e', req.id], ['p', pubkey]], content: 'kept' });
      const u = { request: req, result: res, relays: [holding.url], success: [['status', 'success', 'Done.']] };
      await deps.ledger.putNote('nostr-undelivered', req.id, JSON.stringify(u), Date.now() + 3600_000);
      const spy = lateCalls(deps.ledger);
      const dvm = new Dvm({ ...deps, ledger: spy.ledger });
      const success = feedback(req.id, 'success');
      const unhandled = await unhandledDuring(async () => {
        dvm.start();
        // The offer is under way: the holding relay has the result and has not said OK.
        await waitUntil(() => holding.events.includes(res.id), 'the result at the holding relay');
        const stopped = dvm.stop().then(spy.stopped);
        await new Promise((r) => setTimeout(r, 300));
        holding.release();
        await stopped;
        await success;
      });
      expect(unhandled).toEqual([]);
      expect(spy.late).toEqual([]);
      expect(await deps.ledger.getNote('nostr-undelivered', req.id)).toBeUndefined();
      await expectDrained(kept, { prices: PRICES });
    } finally {
      holding.release();
      await kept.close();
      await holding.stop();
    }
  });

  it('waits for the payout of a job a stopped gateway left unanswered, started at start-up', async () => {
    const proxy = new CountingProxy(mintUrl);
    await proxy.start();
    const left = await startGateway(proxy.url, upstream, { RELAYS: urls.join(','), NSEC: Buffer.from(generateSecretKey()).toString('hex'), DVM_DEFAULT_MODEL: 'gpt-test' });
    try {
      const deps = left.nostr!.dvm.deps;
      await left.nostr!.dvm.stop();
      // A job paid 30 sats, its key credited and its note open, by a run that died before answering.
      const req = finalizeEvent({ ...jobRequest([]), tags: [['p', left.nostr!.id.pubkey], ['i', 'Left behind', 'text']] }, sk);
      await deps.wallets.redeem(inspectToken(await mintToken(proxy.url, 30), deps.wallets.names), deps.keys.jobKey(req.id), deps.keys.p2pk);
      await deps.ledger.putNote('nostr-open', req.id, JSON.stringify({ request: req, payer: pubkey, leaseUntil: 0 }), Date.now() + 3600_000);
      const { reached: atSwap, release } = proxy.hold('/v1/swap');
      const spy = lateCalls(deps.ledger);
      const dvm = new Dvm({ ...deps, ledger: spy.ledger });
      const error = feedback(req.id, 'error');
      const unhandled = await unhandledDuring(async () => {
        dvm.start();
        // The payout (the key's change, locked to the payer) is at the mint.
        await atSwap;
        const stopped = dvm.stop().then(spy.stopped);
        await new Promise((r) => setTimeout(r, 300));
        release();
        await stopped;
      });
      expect(unhandled).toEqual([]);
      expect(spy.late).toEqual([]);
      const back = await (await wallet(proxy.url)).receive(tag(await error, 'cashu')![1]!, { privkey: skHex });
      expect(back.reduce((s, p) => s + p.amount.toNumber(), 0)).toBe(30);
      expect(await deps.ledger.noteIds('nostr-open')).toEqual([]);
      await expectDrained(left, { prices: PRICES });
    } finally {
      proxy.onRequest = undefined;
      await left.close();
      await proxy.stop();
    }
  });
});

describe('a relay that is down', () => {
  it('blocks neither start-up nor the HTTP API', async () => {
    const { freePort } = await import('./support/ports.ts');
    const down = await startGateway(mintUrl, upstream, { RELAYS: `ws://127.0.0.1:${await freePort()}`, NSEC: Buffer.from(generateSecretKey()).toString('hex') });
    try {
      const info = await fetch(`${down.url}/v1/info`);
      expect(info.status).toBe(200);
      const chat = await fetch(`${down.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${await mintToken(mintUrl, 30)}` },
        body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'still here?' }], max_tokens: 1 }),
      });
      expect(chat.status).toBe(200);
      await expectDrained(down, { prices: PRICES });
    } finally {
      await down.close();
    }
  });
});

describe('a relay that demands proof of work', () => {
  it('gets its announcements with the NIP-13 work done (NOSTR_POW_BITS)', async () => {
    // This relay's OK for a refused event carries no event id, so a client cannot learn why it was
    // refused: the work is configured up front rather than discovered.
    const pow = await startRelay({ requirePow: 12 });
    const mined = await startGateway(mintUrl, upstream, { RELAYS: pow.url, NSEC: Buffer.from(generateSecretKey()).toString('hex'), NOSTR_POW_BITS: '12' });
    try {
      const target = mined.nostr!.id.pubkey;
      const handler = await waitUntil(async () => (await pool.querySync([pow.url], { kinds: [31990], authors: [target] }))[0], 'the mined 31990 on the relay');
      const nonce = handler.tags.find((t) => t[0] === 'nonce')!;
      expect(Number(nonce[2])).toBeGreaterThanOrEqual(12);
      expect(BigInt(`0x${handler.id}`) >> 244n).toBe(0n);
      // Nothing here took money; the drain says so at the mint.
      await expectDrained(mined, { prices: PRICES });
    } finally {
      await mined.close();
      await pow.stop();
    }
  });
});
