import { describe, expect, inject, it } from 'vitest';
import { PaymentRequest, decodePaymentRequest, getDecodedToken, getEncodedToken } from '@cashu/cashu-ts';
import { FakeUpstream } from './support/upstream.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { useGateway } from './support/suite.ts';
import { asCashuA, mintToken, proofStates, receive, wallet } from './support/cashu.ts';
import { sha256Hex } from '../src/cashu/credential.ts';

// Every token encoding NUT-00 allows, NUT-02 keyset ids as the token writes them, and the 402's
// payment request in both NUT-18 (creqA) and NUT-26 (creqB) form, against the real nutshell mint.
const realMint = inject('mintUrl');
const upstream = new FakeUpstream();
const proxy = new CountingProxy(realMint);
let mintUrl: string;
const messages = [{ role: 'user', content: 'encodings' }];

async function post(path: string, headers: Record<string, string>, body: unknown) {
  const res = await fetch(`${suite.gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, any> };
}

const padded = (s: string) => s + '='.repeat((4 - (s.length % 4)) % 4);
const standard = (s: string) => s.replace(/-/g, '+').replace(/_/g, '/');

const suite = useGateway({
  upstream,
  before: async () => (mintUrl = await proxy.start()),
  env: () => ({ CASHU_MINTS: mintUrl }),
  after: () => proxy.stop(),
});

describe('tokens in every encoding', () => {
  const variants: Array<[string, (cashuB: string) => Promise<string>]> = [
    ['cashuB, URL-safe, unpadded (as cashu-ts writes it)', async (t) => t],
    ['cashuB, URL-safe, padded', async (t) => `cashuB${padded(t.slice(6))}`],
    ['cashuB, standard base64, padded', async (t) => `cashuB${padded(standard(t.slice(6)))}`],
    ['cashuB with the cashu: URI prefix', async (t) => `cashu:${t}`],
    ['cashuA, URL-safe, unpadded', (t) => asCashuA(mintUrl, t)],
    ['cashuA, standard base64, padded', async (t) => `cashuA${padded(standard((await asCashuA(mintUrl, t)).slice(6)))}`],
    ['cashuA with the cashu: URI prefix', async (t) => `cashu:${await asCashuA(mintUrl, t)}`],
  ];
  for (const [name, encode] of variants) {
    it(`credits ${name} exactly once, to the key of the token as written without its prefix`, async () => {
      const token = await encode(await mintToken(mintUrl, 13));
      const created = await post('/v1/balance/create', {}, { initial_balance_token: token });
      expect([created.status, created.json]).toEqual([200, { api_key: `sk-${sha256Hex(token.replace(/^cashu:/, ''))}`, balance: 13_000 }]);
      const again = await post('/v1/balance/create', {}, { initial_balance_token: token });
      expect(again.json.balance).toBe(13_000);
      expect((await suite.gw.ledger.totals()).credited).toBeGreaterThanOrEqual(13_000);
    });
  }

  it('pays one request with X-Cashu in cashuA with the URI prefix, change back as a cashuB', async () => {
    const token = `cashu:${await asCashuA(mintUrl, await mintToken(mintUrl, 40))}`;
    const res = await post('/v1/chat/completions', { 'x-cashu': token }, { model: 'gpt-test', messages, max_tokens: 2 });
    expect(res.status).toBe(200);
    const change = res.headers.get('x-cashu')!;
    expect(change).toMatch(/^cashuB/);
    expect(await receive(mintUrl, change)).toBe(Math.floor((40_000 - res.json.usage.cost.total_msats) / 1000));
  });
});

describe('keyset ids as the token writes them (NUT-02)', () => {
  it('refuses a keyset id the mint does not list with unknown_keyset, before any swap, the proofs untouched', async () => {
    const good = await mintToken(mintUrl, 9);
    const w = await wallet(mintUrl);
    const proofs = getDecodedToken(good, w.keyChain.getAllKeysetIds()).proofs;
    // A v2 id no keyset of this mint has; cashu-ts writes only its 8-byte short form.
    const forged = getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: proofs.map((p) => ({ ...p, id: `01${'5e'.repeat(32)}` })) });
    proxy.reset();
    for (const headers of [{ authorization: `Bearer ${forged}` }, { 'x-cashu': forged }] as Record<string, string>[]) {
      const res = await post('/v1/chat/completions', headers, { model: 'gpt-test', messages, max_tokens: 2 });
      expect([res.status, res.json.error.code]).toEqual([400, 'unknown_keyset']);
    }
    expect(proxy.calls.filter((c) => c.includes('/v1/swap'))).toEqual([]);
    expect(await suite.gw.ledger.getKey(sha256Hex(forged))).toBeUndefined();
    expect(new Set(await proofStates(mintUrl, good))).toEqual(new Set(['UNSPENT']));
  });

  it('refuses sat-labelled proofs of the msat keyset with keyset_unit_mismatch', async () => {
    const msat = await mintToken(mintUrl, 2_000, 'msat');
    const w = await wallet(mintUrl, 'msat');
    const labelled = getEncodedToken({ ...getDecodedToken(msat, w.keyChain.getAllKeysetIds()), unit: 'sat' });
    const res = await post('/v1/balance/create', {}, { initial_balance_token: labelled });
    expect([res.status, res.json.error.code]).toEqual([400, 'keyset_unit_mismatch']);
    expect(new Set(await proofStates(mintUrl, msat))).toEqual(new Set(['UNSPENT']));
  });
});

describe('the 402 payment request', () => {
  it('gives X-Cashu as creqA and the body both creqA and creqB, all one request', async () => {
    const before = await suite.gw.ledger.totals();
    const res = await post('/v1/chat/completions', {}, { model: 'gpt-test', messages });
    expect([res.status, res.json.error.code]).toEqual([402, 'payment_required']);
    const { creqA, creqB } = res.json.error.payment_request as { creqA: string; creqB: string };
    expect(res.headers.get('x-cashu')).toBe(creqA);
    expect(creqA).toMatch(/^creqA/);
    expect(creqB).toMatch(/^CREQB1/);
    const a = PaymentRequest.fromEncodedRequest(creqA);
    const sats = Math.ceil(res.json.error.amount_required_msats / 1000);
    for (const b of [decodePaymentRequest(creqB), decodePaymentRequest(creqB.toLowerCase())]) {
      expect([b.amount!.toNumber(), b.unit, b.mints, b.singleUse, b.nut10]).toEqual([sats, 'sat', [mintUrl], true, a.nut10]);
    }
    expect(a.amount!.toNumber()).toBe(sats);
    expect(a.nut10?.kind).toBe('P2PK');
    expect(await suite.gw.ledger.totals()).toEqual(before);
  });
});
