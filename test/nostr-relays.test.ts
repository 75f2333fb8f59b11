import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { SimplePool } from 'nostr-tools/pool';
import { finalizeEvent, generateSecretKey, getPublicKey, type Event, type EventTemplate } from 'nostr-tools/pure';
import type { Filter } from 'nostr-tools/filter';
import { minePow } from 'nostr-tools/nip13';
import * as nip04 from 'nostr-tools/nip04';
import { getTokenMetadata } from '@cashu/cashu-ts';
import { FakeUpstream, REPLY_WORDS } from './support/upstream.ts';
import { PRICES, expectDrained, expectMoneyConserved, startGateway, testDatabaseUrl, type Gateway } from './support/gateway.ts';
import { startRelay, type RunningRelay } from './support/relay.ts';
import { SilentAuthRelay } from './support/relay-double.ts';
import { prepareForeignRelays, requestWithNostrSdk, startNostrRsRelay, startNostrSdkRelay } from './support/relay-rust.ts';
import { startGatewayProcess } from './support/process.ts';
import { expectDatabaseDrained, waitFor as eventually } from './support/suite.ts';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mintToken, wallet } from './support/cashu.ts';
import { checkAnnouncements } from '../src/ops/doctor.ts';
import { loadConfig } from '../src/config.ts';

const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
const pool = new SimplePool();
const gateways: Gateway[] = [];
const relays: RunningRelay[] = [];
const doubles: SilentAuthRelay[] = [];

/** The requester, with its own key; it answers AUTH challenges like any NIP-42 client. */
const sk = generateSecretKey();
const pubkey = getPublicKey(sk);
const skHex = Buffer.from(sk).toString('hex');
const onauth = async (t: EventTemplate) => finalizeEvent(t, sk);

const tag = (e: Event, name: string) => e.tags.find((t) => t[0] === name);

async function gateway(env: Record<string, string>): Promise<Gateway> {
  const gw = await startGateway(mintUrl, upstream, { NSEC: Buffer.from(generateSecretKey()).toString('hex'), DVM_DEFAULT_MODEL: 'gpt-test', ...env });
  gateways.push(gw);
  return gw;
}

function query(urls: string[], filter: Filter): Promise<Event[]> {
  return new Promise((resolve) => {
    const events: Event[] = [];
    pool.subscribeEose(urls, filter, { onauth, maxWait: 3000, onevent: (e) => events.push(e), onclose: () => resolve(events) });
  });
}

/** Waits for the first event matching the filter on the given relays (authenticating if asked). */
function waitFor(urls: string[], filter: Filter, predicate: (e: Event) => boolean = () => true, ms = 20_000): Promise<Event> {
  return eventually(async () => (await query(urls, filter)).find(predicate), `an event matching ${JSON.stringify(filter)}`, ms);
}

/** Spends change locked to the requester's key at the mint, as only the requester can. */
async function spendLocked(token: string): Promise<number> {
  const w = await wallet(mintUrl, getTokenMetadata(token).unit ?? 'sat');
  const proofs = await w.receive(token, { privkey: skHex });
  return proofs.reduce((s, p) => s + p.amount.toNumber(), 0);
}

// The first run on a machine builds nostr-rs-relay with cargo.
beforeAll(async () => {
  await prepareForeignRelays();
  await upstream.start();
}, 30 * 60_000);
afterAll(async () => {
  try {
    // Every gateway here took money for a job (or could have): each drained at the mint.
    for (const gw of gateways) await expectDrained(gw, { prices: PRICES });
  } finally {
    pool.destroy();
    for (const gw of gateways) await gw.close();
    for (const r of relays) await r.stop();
    for (const d of doubles) await d.stop();
    await upstream.stop();
  }
});
afterEach(async () => {
  for (const gw of gateways) await expectMoneyConserved(gw);
});

describe('a relay that challenges (NIP-42) and never answers the AUTH', () => {
  it('cannot stop the gateway: HTTP keeps answering and jobs keep flowing through the other relay', async () => {
    const silent = new SilentAuthRelay();
    await silent.start();
    const good = await startRelay();
    doubles.push(silent);
    relays.push(good);
    const gw = await gateway({ RELAYS: `${silent.url},${good.url}`, PUBLIC_URL: 'https://gateway.example' });

    // The gateway answers the challenge once the relay refuses it for lack of AUTH...
    await eventually(() => (silent.count('AUTH') > 0 ? true : undefined), 'an AUTH sent to the silent relay');
    // ...and after that AUTH timed out (nostr-tools waits 4.4 s) it asks again, still alive.
    const reqsAtAuth = silent.received.findIndex((m) => m[0] === 'AUTH');
    await eventually(() => (silent.received.slice(reqsAtAuth).some((m) => m[0] === 'REQ') ? true : undefined), 'a REQ after the AUTH timed out', 30_000);

    const info = await fetch(`${gw.url}/v1/info`);
    expect(info.status).toBe(200);
    expect((await info.json()).npub).toBe(gw.nostr!.id.npub);

    const token = await mintToken(mintUrl, 30);
    const req = finalizeEvent(
      {
        kind: 5050,
        created_at: Math.floor(Date.now() / 1000),
        tags: [['p', gw.nostr!.id.pubkey], ['i', 'Still there?', 'text'], ['param', 'max_tokens', '2'], ['cashu', token]],
        content: '',
      },
      sk,
    );
    await Promise.any(pool.publish([good.url], req));
    const res = await waitFor([good.url], { kinds: [6050], '#e': [req.id] });
    expect(res.content).toBe(REPLY_WORDS.slice(0, 2).join(' '));
    expect(await spendLocked(tag(res, 'cashu')![1]!)).toBe(Math.floor((30_000 - Number(tag(res, 'amount')![1])) / 1000));
  });
});

describe('nostr-rs-relay 0.8.12 with nip42_auth, which never OKs an AUTH', () => {
  it('leaves the gateway process serving HTTP and jobs past nostr-tools’ AUTH timeout', { timeout: 90_000 }, async () => {
    const rs = await startNostrRsRelay({ nip42: true });
    const good = await startRelay();
    relays.push(rs, good);
    // A process needs a ledger it can reach: a file for SQLite, this project's database for PostgreSQL.
    const own = await testDatabaseUrl();
    const db = own === ':memory:' ? `sqlite:${join(mkdtempSync(join(tmpdir(), 'gw-rs-relay-')), 'gateway.db')}` : own;
    const prices = { 'gpt-test': { prompt: 2, completion: 5 } };
    const nsec = generateSecretKey();
    const proc = await startGatewayProcess({
      UPSTREAM_BASE_URL: upstream.url,
      CASHU_MINTS: mintUrl,
      DATABASE_URL: db,
      MODEL_PRICES: JSON.stringify(prices),
      RELAYS: `${rs.url},${good.url}`,
      NSEC: Buffer.from(nsec).toString('hex'),
      PUBLIC_URL: 'https://gateway.example',
      DVM_DEFAULT_MODEL: 'gpt-test',
    });
    try {
      const started = Date.now();
      const service = getPublicKey(nsec);
      const req = finalizeEvent(
        {
          kind: 5050,
          created_at: Math.floor(Date.now() / 1000),
          tags: [['p', service], ['i', 'Through nostr-rs-relay', 'text'], ['param', 'max_tokens', '2'], ['cashu', await mintToken(mintUrl, 30)]],
          content: '',
        },
        sk,
      );
      await Promise.any(pool.publish([rs.url], req));
      const res = await waitFor([rs.url], { kinds: [6050], '#e': [req.id] });
      expect(res.content).toBe(REPLY_WORDS.slice(0, 2).join(' '));
      // nostr-tools gives up on an unanswered AUTH after 4.4 s; the process must outlive that
      // (it once died then), answering HTTP all along. A window, not a sentinel: this relay
      // challenges but refuses nothing, so the gateway logs nothing (at debug neither) and the
      // relay shows nothing of that moment; only time passing can show nothing went wrong in it.
      while (Date.now() - started < 10_000) {
        expect(proc.proc.exitCode).toBeNull();
        expect((await fetch(`${proc.url}/v1/info`)).status).toBe(200);
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(proc.output()).not.toMatch(/unhandled rejection/);
    } finally {
      await proc.stop();
    }
    // The process has stopped: its ledger, drained through a gateway of our own on it.
    await expectDatabaseDrained(mintUrl, { DATABASE_URL: db, MODEL_PRICES: JSON.stringify(prices) }, prices);
  });
});

describe('rust-nostr relay demanding NIP-42 AUTH to read and to write', () => {
  it('runs an encrypted job posted by rust-nostr’s own client, and its result comes back', async () => {
    const relay = await startNostrSdkRelay({ auth: 'both' });
    relays.push(relay);
    const gw = await gateway({ RELAYS: relay.url, PUBLIC_URL: 'https://gateway.example' });
    const service = gw.nostr!.id.pubkey;
    // The announcements were written (after AUTH), and are readable (after AUTH).
    const provider = await waitFor([relay.url], { kinds: [38421], authors: [service] });
    expect(tag(provider, 'u')).toEqual(['u', 'https://gateway.example']);

    const out = await requestWithNostrSdk({
      relay: relay.url,
      service,
      secretHex: skHex,
      prompt: 'A question only the DVM may read',
      maxTokens: 3,
      cashu: await mintToken(mintUrl, 30),
      scheme: 'nip44',
    });
    expect(out.result).toBe(REPLY_WORDS.slice(0, 3).join(' '));
    expect(upstream.requests.at(-1)!.body.messages).toEqual([{ role: 'user', content: 'A question only the DVM may read' }]);
    const tags = new Map(out.tags.map((t) => [t[0], t]));
    expect(tags.get('e')?.[1]).toBe(out.request);
    expect(tags.get('p')?.[1]).toBe(pubkey);
    expect(tags.get('encrypted')).toEqual(['encrypted']);
    // Nothing of the secret input travels in the clear.
    expect(out.tags.some((t) => t[0] === 'i')).toBe(false);
    const charged = Number(tags.get('amount')![1]);
    expect(await spendLocked(tags.get('cashu')![1]!)).toBe(Math.floor((30_000 - charged) / 1000));
  });
});

describe('rust-nostr relay demanding both NIP-42 AUTH and NIP-13 proof of work', () => {
  it('answers a NIP-04 job from rust-nostr’s client, mined as the relay demands', async () => {
    const relay = await startNostrSdkRelay({ auth: 'both', pow: 8 });
    relays.push(relay);
    const gw = await gateway({ RELAYS: relay.url, NOSTR_POW_BITS: '0' });
    const out = await requestWithNostrSdk({
      relay: relay.url,
      service: gw.nostr!.id.pubkey,
      secretHex: skHex,
      prompt: 'Old-style secret',
      maxTokens: 2,
      cashu: await mintToken(mintUrl, 30),
      scheme: 'nip04',
      pow: 8,
    });
    expect(out.result).toBe(REPLY_WORDS.slice(0, 2).join(' '));
    const tags = new Map(out.tags.map((t) => [t[0], t]));
    expect(Number(tags.get('nonce')![2])).toBeGreaterThanOrEqual(8);
    expect(await spendLocked(tags.get('cashu')![1]!)).toBe(Math.floor((30_000 - Number(tags.get('amount')![1])) / 1000));
  });
});

describe('rust-nostr relay demanding NIP-13 proof of work', () => {
  it('gets announcements and a job result with the work mined on refusal (NOSTR_POW_BITS=0)', async () => {
    const relay = await startNostrSdkRelay({ pow: 10 });
    relays.push(relay);
    const gw = await gateway({ RELAYS: relay.url, PUBLIC_URL: 'https://gateway.example', NOSTR_POW_BITS: '0' });
    const service = gw.nostr!.id.pubkey;
    const handler = await waitFor([relay.url], { kinds: [31990], authors: [service] });
    expect(Number(tag(handler, 'nonce')![2])).toBeGreaterThanOrEqual(10);
    expect(BigInt(`0x${handler.id}`) >> 246n).toBe(0n);
    for (const kind of [0, 38421, 10019]) await waitFor([relay.url], { kinds: [kind], authors: [service] });

    const secret = JSON.stringify([['i', 'Worth the work?', 'text'], ['param', 'max_tokens', '2'], ['cashu', await mintToken(mintUrl, 30)]]);
    const req = finalizeEvent(
      minePow({ kind: 5050, created_at: Math.floor(Date.now() / 1000), pubkey, tags: [['p', service], ['encrypted']], content: nip04.encrypt(sk, service, secret) }, 10),
      sk,
    );
    await Promise.any(pool.publish([relay.url], req));
    const res = await waitFor([relay.url], { kinds: [6050], '#e': [req.id] });
    expect(nip04.decrypt(sk, service, res.content)).toBe(REPLY_WORDS.slice(0, 2).join(' '));
    expect(BigInt(`0x${res.id}`) >> 246n).toBe(0n);
    expect(await spendLocked(tag(res, 'cashu')![1]!)).toBe(Math.floor((30_000 - Number(tag(res, 'amount')![1])) / 1000));
  });

  it('says whether any relay took an event, so an undelivered result is not taken as delivered', async () => {
    const relay = await startNostrSdkRelay({ pow: 30 });
    relays.push(relay);
    const gw = await gateway({ RELAYS: relay.url, NOSTR_POW_BITS: '0' });
    // 30 bits is more than the gateway mines: the relay refuses, and publish says so.
    const sent = await gw.nostr!.relays.publish({ kind: 1, created_at: Math.floor(Date.now() / 1000), tags: [], content: 'refused' });
    expect(sent.accepted).toBe(false);
    expect(sent.event.content).toBe('refused');
    const good = await startRelay();
    relays.push(good);
    const both = await gw.nostr!.relays.publish({ kind: 1, created_at: Math.floor(Date.now() / 1000), tags: [], content: 'taken' }, [good.url]);
    expect(both.accepted).toBe(true);
    expect((await query([good.url], { ids: [both.event.id] })).length).toBe(1);
  });
});

describe('announcements Routstr clients accept', () => {
  /** What Routstr's parse_provider_announcement requires of a 38421: a `d` and a `u` tag. */
  const routstrParses = (e: Event) => e.kind === 38421 && Boolean(tag(e, 'd')?.[1]) && Boolean(tag(e, 'u')?.[1]);

  it('publishes no 38421 without PUBLIC_URL, warns in doctor, and names the npub in /v1/info', async () => {
    const relay = await startRelay();
    relays.push(relay);
    const gw = await gateway({ RELAYS: relay.url });
    const service = gw.nostr!.id.pubkey;
    // The 10019 goes out last: once it is there, everything that will be published has been.
    await waitFor([relay.url], { kinds: [10019], authors: [service] });
    const events = await query([relay.url], { authors: [service] });
    expect(events.map((e) => e.kind).sort()).toEqual([0, 10019, 31990]);
    const info = await (await fetch(`${gw.url}/v1/info`)).json();
    expect(info.npub).toBe(gw.nostr!.id.npub);
    expect(info.http_url).toBeNull();
    const [check] = checkAnnouncements(loadConfig({ UPSTREAM_BASE_URL: upstream.url, CASHU_MINTS: mintUrl, RELAYS: relay.url }));
    expect(check).toMatchObject({ status: 'warn' });
    expect(check!.fix).toMatch(/PUBLIC_URL/);
  });

  it('publishes a 38421 Routstr parses, and /v1/info gives the same URL', async () => {
    const relay = await startRelay();
    relays.push(relay);
    const gw = await gateway({ RELAYS: relay.url, PUBLIC_URL: 'https://dvm.example' });
    const provider = await waitFor([relay.url], { kinds: [38421], authors: [gw.nostr!.id.pubkey] });
    expect(routstrParses(provider)).toBe(true);
    expect(tag(provider, 'u')).toEqual(['u', 'https://dvm.example']);
    const info = await (await fetch(`${gw.url}/v1/info`)).json();
    expect(info).toMatchObject({ npub: gw.nostr!.id.npub, http_url: 'https://dvm.example' });
    const [check] = checkAnnouncements(loadConfig({ UPSTREAM_BASE_URL: upstream.url, CASHU_MINTS: mintUrl, RELAYS: relay.url, PUBLIC_URL: 'https://dvm.example' }));
    expect(check).toMatchObject({ status: 'ok' });
  });
});
