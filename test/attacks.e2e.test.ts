import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createServer, type Server } from 'node:http';
import { bearer, chat, expectUntouched, fundedKey, useGateway } from './support/suite.ts';
import { mintToken, receive, wallet } from './support/cashu.ts';
import { externalInvoice } from './support/invoice.ts';
import { LnurlDouble } from './support/lnurl.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import { allowedAddress, PeerFetch } from '../src/net/peer-fetch.ts';
import { decodeBolt11 } from '../src/net/bolt11.ts';
import { bech32 } from '@scure/base';

/**
 * A hostile review of child keys, refunds to Lightning and the peer rules, each attack written as
 * it would be tried. Every one here is refused; money is checked after each (useGateway) and the
 * file ends drained.
 */
const lnurl = new LnurlDouble();
const s = useGateway({
  env: { ALLOW_INSECURE_PEERS_FOR_TESTS_ONLY: 'true', PEER_TIMEOUT_MS: '1000', PEER_MAX_BYTES: '20000' },
  before: () => lnurl.start(),
  after: () => lnurl.stop(),
});
vi.setConfig({ testTimeout: 60_000 });

type Json = Record<string, any>;

async function call(method: string, path: string, headers: Record<string, string>, body?: unknown) {
  const res = await fetch(`${s.gw.url}${path}`, {
    method,
    headers: { ...headers, ...(body !== undefined && { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Json };
}

const free = async (hash: string) => {
  const k = (await s.gw.ledger.getKey(hash))!;
  return k.balance - k.reserved;
};

describe('a refund race: the balance leaves once', () => {
  it('a refund to a Lightning invoice and one as a token at once: what both paid out and what is left is the balance, to the msat', async () => {
    // Whichever lands first, the other is refused or takes only what is left (one round: cheap).
    {
      const { key, hash } = await fundedKey(s.gw, s.mintUrl, 60);
      const invoice = externalInvoice(20);
      const before = await s.gw.ledger.totals();
      const [ln, tok] = await Promise.all([
        call('POST', '/v1/balance/refund', bearer(key), { invoice }),
        call('POST', '/v1/balance/refund', bearer(key)),
      ]);
      expect(ln.status === 200 || tok.status === 200, JSON.stringify([ln.json, tok.json])).toBe(true);
      let out = 0;
      if (tok.status === 200) out += (await receive(s.mintUrl, tok.json.token as string)) * 1000;
      else expect(['request_in_progress', 'balance_too_low']).toContain(tok.json.error.code);
      if (ln.status === 200) {
        expect(ln.json.state).toBe('paid');
        const melt = (await s.gw.ledger.latestMelt(hash))!;
        expect((await (await wallet(s.mintUrl)).checkMeltQuoteBolt11(melt.quote)).state).toBe('PAID');
        expect(melt.amount).toBe(20);
        out += (melt.amount + melt.fee!) * 1000;
      } else {
        expect(['request_in_progress', 'balance_too_low'], JSON.stringify(ln.json)).toContain(ln.json.error.code);
      }
      const left = await free(hash);
      expect(out + left).toBe(60_000);
      const after = await s.gw.ledger.totals();
      expect(after.refunded - before.refunded).toBe(60_000 - left);
    }
  });
});

describe('BOLT 11 amounts in every multiplier', () => {
  /** An invoice with a valid bech32 checksum and `hrp`: what the gateway reads before any mint sees it. */
  const forged = (hrp: string) => bech32.encode(hrp, bech32.toWords(new Uint8Array(120)), false);

  it('reads m, u, n and p as BOLT 11 says; a sub-msat or zero-led amount is refused', () => {
    expect(decodeBolt11(forged('lnbc2m')).amountMsats).toBe(200_000_000n);
    expect(decodeBolt11(forged('lnbc2500u')).amountMsats).toBe(250_000_000n);
    expect(decodeBolt11(forged('lnbc15n')).amountMsats).toBe(1_500n);
    expect(decodeBolt11(forged('lnbcrt10p')).amountMsats).toBe(1n);
    expect(decodeBolt11(forged('lnbc1')).amountMsats).toBe(100_000_000_000n);
    expect(() => decodeBolt11(forged('lnbc1p'))).toThrow(/below one msat/);
    expect(() => decodeBolt11(forged('lnbc015n'))).toThrow(/leading zeros/);
    expect(() => decodeBolt11(forged('lnxy15n'))).toThrow(/unknown prefix/);
  });

  it('a sat key is not refunded to an invoice for a fraction of a sat: refused before the mint is asked, nothing moved', async () => {
    const { key, hash } = await fundedKey(s.gw, s.mintUrl, 10);
    await expectUntouched(s.gw, hash, async () => {
      const r = await call('POST', '/v1/balance/refund', bearer(key), { invoice: forged('lnbc15n') });
      expect([r.status, r.json.error.code]).toEqual([400, 'invalid_invoice']);
    });
    expect(await s.gw.ledger.latestMelt(hash)).toBeUndefined();
  });
});

describe('a child key against its parent', () => {
  async function family(sats: number, limit: number) {
    const parent = await fundedKey(s.gw, s.mintUrl, sats);
    const made = await call('POST', '/v1/balance/child-key', bearer(parent.key), { balance_limit: limit });
    expect(made.status, JSON.stringify(made.json)).toBe(200);
    const child = made.json.api_keys[0] as string;
    return { parent, child, childHash: child.slice(3) };
  }

  it('cannot refund its parent\'s balance to Lightning, by invoice or by address: nothing asked of the address, nothing paid', async () => {
    const { parent, child } = await family(40, 5_000);
    const hits = lnurl.hits.length;
    await expectUntouched(s.gw, parent.hash, async () => {
      const inv = await call('POST', '/v1/balance/refund', bearer(child), { invoice: externalInvoice(10) });
      expect([inv.status, inv.json.error.code]).toEqual([400, 'child_key_not_allowed']);
      const addr = await call('POST', '/v1/balance/refund', bearer(child), { lightning_address: lnurl.address('alice') });
      expect([addr.status, addr.json.error.code]).toEqual([400, 'child_key_not_allowed']);
      // Sent as x-api-key (Anthropic clients) rather than Bearer: the same door, the same refusal.
      const viaApiKey = await call('POST', '/v1/balance/refund', { 'x-api-key': child }, { invoice: externalInvoice(10) });
      expect([viaApiKey.status, viaApiKey.json.error.code]).toEqual([400, 'child_key_not_allowed']);
    });
    expect(lnurl.hits.length).toBe(hits);
    expect(await s.gw.ledger.latestMelt(parent.hash)).toBeUndefined();
  });

  it('sent as X-Cashu it is no token: refused, the parent and the child untouched', async () => {
    const { parent, child, childHash } = await family(40, 5_000);
    const before = await s.gw.ledger.getChildKey(childHash);
    await expectUntouched(s.gw, parent.hash, async () => {
      const r = await chat(s.gw, { 'x-cashu': child, authorization: `Bearer ${child}` }, { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
      expect(r.status).toBe(400);
      expect(((await r.json()) as Json).error.code).toBe('invalid_cashu_token');
      const refund = await call('POST', '/v1/balance/refund', { 'x-cashu': child });
      expect(refund.status).toBe(404);
    });
    expect(await s.gw.ledger.getChildKey(childHash)).toEqual(before);
  });

  it('reads neither its parent\'s key nor any token hash from its info or history; the parent\'s history names no token hash either', async () => {
    const { parent, child } = await family(40, 5_000);
    const topup = await mintToken(s.mintUrl, 3);
    const t = await call('POST', '/v1/balance/topup', bearer(parent.key), { cashu_token: topup });
    expect(t.status, JSON.stringify(t.json)).toBe(200);
    const spent = await call('POST', '/v1/chat/completions', bearer(child), { model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
    expect(spent.status, JSON.stringify(spent.json)).toBe(200);

    const secrets = [parent.hash, sha256Hex(parent.token), sha256Hex(topup)];
    for (const path of ['/v1/balance/info', '/v1/balance/history']) {
      const r = await call('GET', path, bearer(child));
      expect(r.status).toBe(200);
      const text = JSON.stringify(r.json);
      for (const secret of secrets) expect(text, `${path} for the child`).not.toContain(secret);
    }
    const childHistory = await call('GET', '/v1/balance/history', bearer(child));
    expect(childHistory.json.transactions.map((x: Json) => x.type)).toEqual(['charge']);

    const ph = await call('GET', '/v1/balance/history', bearer(parent.key));
    expect(ph.json.transactions.map((x: Json) => x.type).sort()).toEqual(['charge', 'credit', 'credit']);
    const text = JSON.stringify(ph.json);
    for (const secret of secrets) expect(text, 'the parent\'s history').not.toContain(secret);
    // The parent does see which child spent: that key is the parent's to know.
    expect(ph.json.transactions.find((x: Json) => x.type === 'charge').child_key).toBe(child);
  });
});

describe('the peer rules against addresses that are loopback or private in disguise', () => {
  let server: Server;
  let port = 0;
  let reached = 0;
  beforeAll(async () => {
    server = createServer((_req, res) => {
      reached++;
      res.end('{}');
    });
    await new Promise<void>((r) => server.listen(0, '::', r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  // IPv4-compatible (::a.b.c.d, deprecated) and SIIT's IPv4-translated (::ffff:0:a.b.c.d) forms
  // carry an IPv4 address inside IPv6; wherever a host maps them, they reach that IPv4 address.
  const disguised = ['::7f00:1', '::a9fe:a9fe', '::a00:1', '::ffff:0:7f00:1', '::ffff:0:a9fe:a9fe', '::ffff:7f00:1', '::ffff:a9fe:a9fe', '::', '0.0.0.0'];

  it('judges each form by the IPv4 address it carries', () => {
    for (const a of disguised) expect(allowedAddress(a, { allowLoopback: false }), a).toBe(false);
    // Loopback let through for tests is loopback only, not the private addresses beside it.
    for (const a of ['::a9fe:a9fe', '::ffff:0:a9fe:a9fe', '::ffff:a9fe:a9fe']) expect(allowedAddress(a, { allowLoopback: true }), a).toBe(false);
    for (const a of ['2606:4700::1111', '1.1.1.1', '::ffff:1.1.1.1']) expect(allowedAddress(a, { allowLoopback: false }), a).toBe(true);
  });

  it('refuses them as URL literals, in every spelling the URL parser accepts, before any connection', async () => {
    const peers = new PeerFetch({ timeoutMs: 1000, maxBytes: 1000, allowLoopback: false });
    try {
      const urls = [
        `https://[::7f00:1]:${port}/`,
        `https://[0:0:0:0:0:0:127.0.0.1]:${port}/`,
        `https://[::ffff:0:127.0.0.1]:${port}/`,
        `https://[::ffff:127.0.0.1]:${port}/`,
        `https://[::]:${port}/`,
        `https://0:${port}/`,
        `https://2130706433:${port}/`,
        `https://0x7f.1:${port}/`,
        `https://127.0.0.1.:${port}/`,
        `https://[::ffff:169.254.169.254]/latest/meta-data/`,
        `https://169.254.169.254/latest/meta-data/`,
      ];
      for (const u of urls) await expect(peers.send(u, { method: 'GET' }), u).rejects.toMatchObject({ reason: 'private_address' });
      expect(reached).toBe(0);
    } finally {
      await peers.close();
    }
  });
});

describe('a stranger who leaves the wallet only small proofs', () => {
  it('cannot make another key\'s refund a token too large for a client to read: it is swapped for few proofs', async () => {
    // The victim's 64 sats are one 64-sat proof; the stranger funds 64 sats one at a time (64
    // one-sat proofs) and refunds first, exactly: it is paid the victim's proof, and the wallet
    // holds only ones. Handed over as they were, the victim's refund was 64 proofs, an X-Cashu
    // header of some 19 KB: past the 16 KB every Node client (fetch, undici) reads, for every retry.
    const victim = await fundedKey(s.gw, s.mintUrl, 64);
    const stranger = await fundedKey(s.gw, s.mintUrl, 1);
    for (let i = 0; i < 63; i++) {
      expect((await call('POST', '/v1/balance/topup', bearer(stranger.key), { cashu_token: await mintToken(s.mintUrl, 1) })).status).toBe(200);
    }
    await s.gw.wallets.idle();
    const theirs = await call('POST', '/v1/balance/refund', bearer(stranger.key));
    expect(theirs.status).toBe(200);
    expect(await receive(s.mintUrl, theirs.json.token as string)).toBe(64);
    await s.gw.wallets.idle();

    const res = await fetch(`${s.gw.url}/v1/balance/refund`, { method: 'POST', headers: bearer(victim.key) }).catch((e: Error & { cause?: { code?: string } }) => e.cause?.code ?? e.message);
    expect(res).toBeInstanceOf(Response);
    const r = res as Response;
    const body = (await r.json()) as Json;
    expect([r.status, body.sats, r.headers.get('x-cashu')]).toEqual([200, '64', body.token]);
    const w = await wallet(s.mintUrl);
    expect(w.decodeToken(body.token as string).proofs.length).toBeLessThanOrEqual(32);
    expect(await receive(s.mintUrl, body.token as string)).toBe(64);
  });
});
