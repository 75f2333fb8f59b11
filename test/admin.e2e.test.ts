import { describe, expect, inject, it } from 'vitest';
import { finalizeEvent, generateSecretKey, getPublicKey } from 'nostr-tools/pure';
import { hashPayload } from 'nostr-tools/nip98';
import * as nip19 from 'nostr-tools/nip19';
import { FakeUpstream } from './support/upstream.ts';
import { mintToken, receive, wallet } from './support/cashu.ts';
import { externalInvoice } from './support/invoice.ts';
import { bearer, chat as send, expectUntouched, useGateway } from './support/suite.ts';
import type { ModelList } from './support/wire.ts';
import type { keyView } from '../src/http/balance.ts';

const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
const adminSk = generateSecretKey();

/** A NIP-98 Authorization header, as an admin client makes it (or mis-makes it, for the tests). */
function nip98(url: string, method: string, opts: { sk?: Uint8Array; createdAt?: number; body?: unknown } = {}): string {
  // A random tag makes two calls in the same second distinct events (identical ones are replays).
  const tags = [
    ['u', url],
    ['method', method],
    ['r', Math.random().toString(36).slice(2)],
  ];
  if (opts.body !== undefined) tags.push(['payload', hashPayload(opts.body)]);
  const event = finalizeEvent({ kind: 27235, created_at: opts.createdAt ?? Math.floor(Date.now() / 1000), tags, content: '' }, opts.sk ?? adminSk);
  return `Nostr ${Buffer.from(JSON.stringify(event)).toString('base64')}`;
}

async function admin(method: string, path: string, opts: { auth?: string; body?: unknown } = {}) {
  const url = `${suite.gw.url}${path}`;
  const res = await fetch(url, {
    method,
    headers: { authorization: opts.auth ?? nip98(url, method, { body: opts.body }), ...(opts.body ? { 'content-type': 'application/json' } : {}) },
    body: opts.body ? JSON.stringify(opts.body) : undefined,
  });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

async function chat(key: string) {
  const res = await send(suite.gw, bearer(key), { messages: [{ role: 'user', content: 'admin test' }], max_tokens: 3 });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

async function newKey(sats: number): Promise<string> {
  const res = await fetch(`${suite.gw.url}/v1/balance/create`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ initial_balance_token: await mintToken(mintUrl, sats) }),
  });
  return `sk-${((await res.json()) as { api_key: string }).api_key.slice(3)}`;
}

/** The gateway's proofs at the test mint, in msats. */
async function held(): Promise<number> {
  return (await suite.gw.ledger.heldProofs(mintUrl, 'sat')).reduce((s, p) => s + p.amount, 0) * 1000;
}

const suite = useGateway({
  upstream,
  env: {
    ADMIN_NPUBS: nip19.npubEncode(getPublicKey(adminSk)),
    MODEL_PRICES: JSON.stringify({ 'gpt-test': { prompt: 100, completion: 500 } }),
  },
  // The dearest prices the tests set at run time: no charge may be above them.
  prices: { 'gpt-test': { prompt: 500, completion: 500 } },
});

describe('NIP-98 authentication', () => {
  it('accepts a fresh event signed by an admin for this URL and method', async () => {
    const res = await admin('GET', '/admin/balances');
    expect(res.status).toBe(200);
    expect(Array.isArray(res.json.keys)).toBe(true);
  });

  it('refuses an expired event, a wrong URL or method, a replay, a stranger and no header', async () => {
    const url = `${suite.gw.url}/admin/balances`;
    const old = await admin('GET', '/admin/balances', { auth: nip98(url, 'GET', { createdAt: Math.floor(Date.now() / 1000) - 300 }) });
    expect([old.status, old.json.error.code]).toEqual([401, 'unauthorized']);
    const wrongUrl = await admin('GET', '/admin/balances', { auth: nip98(`${suite.gw.url}/admin/earnings`, 'GET') });
    expect(wrongUrl.status).toBe(401);
    const wrongMethod = await admin('GET', '/admin/balances', { auth: nip98(url, 'POST') });
    expect(wrongMethod.status).toBe(401);
    const header = nip98(url, 'GET');
    expect((await admin('GET', '/admin/balances', { auth: header })).status).toBe(200);
    const replay = await admin('GET', '/admin/balances', { auth: header });
    expect([replay.status, replay.json.error.message]).toEqual([401, 'NIP-98 authorization failed: this event was used already.']);
    const stranger = await admin('GET', '/admin/balances', { auth: nip98(url, 'GET', { sk: generateSecretKey() }) });
    expect([stranger.status, stranger.json.error.code]).toEqual([403, 'forbidden']);
    const none = await fetch(url);
    expect(none.status).toBe(401);
    const bodyMismatch = await fetch(`${suite.gw.url}/admin/prices/gpt-test`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: nip98(`${suite.gw.url}/admin/prices/gpt-test`, 'PUT', { body: { prompt_msats_per_token: 1, completion_msats_per_token: 1 } }) },
      body: JSON.stringify({ prompt_msats_per_token: 0, completion_msats_per_token: 0 }),
    });
    expect(bodyMismatch.status).toBe(401);
    const prices = await admin('GET', '/admin/prices');
    expect(prices.json.models.find((m: { id: string }) => m.id === 'gpt-test')).toMatchObject({ prompt_msats_per_token: 100, completion_msats_per_token: 500 });
  });

  it('refuses an event that is JSON but no object (null, a string, a number) with 401, not a 500', async () => {
    for (const json of ['null', '"event"', '42', 'true', '[]']) {
      const res = await admin('GET', '/admin/balances', { auth: `Nostr ${Buffer.from(json).toString('base64')}` });
      expect([json, res.status, res.json.error.code]).toEqual([json, 401, 'unauthorized']);
    }
  });

  it('moves no money for a refused caller: a stranger, or an event signed for another method, can neither withdraw the earnings nor revoke a key', async () => {
    const key = await newKey(20);
    expect((await chat(key)).status).toBe(200);
    const before = await suite.gw.ledger.totals();
    expect(before.charged - before.withdrawn - before.fees).toBeGreaterThan(0);
    const url = `${suite.gw.url}/admin/withdraw`;
    const stranger = await admin('POST', '/admin/withdraw', { auth: nip98(url, 'POST', { sk: generateSecretKey() }) });
    expect([stranger.status, stranger.json.error.code]).toEqual([403, 'forbidden']);
    const revokeUrl = `${suite.gw.url}/admin/keys/${key}/revoke`;
    expect((await admin('POST', `/admin/keys/${key}/revoke`, { auth: nip98(revokeUrl, 'GET') })).status).toBe(401);
    expect((await admin('POST', `/admin/keys/${key}/revoke`, { auth: nip98(revokeUrl, 'POST', { sk: generateSecretKey() }) })).status).toBe(403);
    expect(await suite.gw.ledger.totals()).toEqual(before);
    expect((await suite.gw.ledger.getKey(key.slice(3)))!.revoked).toBe(false);
    expect((await chat(key)).status).toBe(200);
  });
});

describe('the admin API', () => {
  it('shows balances and earnings, revokes a key, and withdraws the earnings as a token the mint accepts', async () => {
    const token = await mintToken(mintUrl, 60);
    const key = `sk-${(await (await fetch(`${suite.gw.url}/v1/balance/create`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ initial_balance_token: token }),
    }).then((r) => r.json())) as { api_key: string }).api_key.slice(3)}`;
    const charged = [await chat(key), await chat(key)].reduce((s, r) => s + (r.json.usage.cost.total_msats as number), 0);

    const balances = await admin('GET', '/admin/balances');
    expect((balances.json.keys as Array<ReturnType<typeof keyView>>).find((k) => k.api_key === key)).toMatchObject({ balance: 60_000 - charged, reserved: 0, revoked: false });
    const earnings = await admin('GET', '/admin/earnings');
    expect(earnings.json.earnings_msats).toBe(earnings.json.charged - earnings.json.withdrawn - earnings.json.fees);
    expect(earnings.json.charged).toBeGreaterThanOrEqual(charged);

    expect((await admin('POST', `/admin/keys/${key}/revoke`)).json).toEqual({ api_key: key, revoked: true });
    const refused = await expectUntouched(suite.gw, key.slice(3), () => chat(key));
    expect([refused.status, refused.json.error.code]).toEqual([401, 'key_revoked']);
    // The holder's money is still theirs.
    const refund = await fetch(`${suite.gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${key}` } });
    expect(refund.status).toBe(200);
    expect((await admin('POST', `/admin/keys/sk-${'0'.repeat(64)}/revoke`)).status).toBe(404);

    const before = await suite.gw.ledger.totals();
    const w = await admin('POST', '/admin/withdraw');
    expect(w.json.unit).toBe('sat');
    expect(w.json.amount).toBe(Math.floor((before.charged - before.withdrawn - before.fees) / 1000));
    expect(await receive(mintUrl, w.json.token)).toBe(w.json.amount);
  });

  it('lists and changes prices at run time', async () => {
    const list = await admin('GET', '/admin/prices');
    expect((list.json.models as Array<{ id: string }>).find((m) => m.id === 'gpt-test')).toMatchObject({ prompt_msats_per_token: 100, completion_msats_per_token: 500 });
    const set = await admin('PUT', '/admin/prices/gpt-test', { body: { prompt_msats_per_token: 7, completion_msats_per_token: 11 } });
    expect(set.json).toEqual({ id: 'gpt-test', prompt_msats_per_token: 7, completion_msats_per_token: 11 });
    const models = (await (await fetch(`${suite.gw.url}/v1/models`)).json()) as ModelList;
    expect(models.data.find((m) => m.id === 'gpt-test')!.msats_pricing).toMatchObject({ prompt_msats_per_token: 7, completion_msats_per_token: 11 });
    const r = await chat(`sk-${(await (await fetch(`${suite.gw.url}/v1/balance/create`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ initial_balance_token: await mintToken(mintUrl, 20) }),
    }).then((x) => x.json())) as { api_key: string }).api_key.slice(3)}`);
    expect(r.json.usage.cost.total_msats).toBe(r.json.usage.prompt_tokens * 7 + r.json.usage.completion_tokens * 11);
    expect((await admin('PUT', '/admin/prices/nope', { body: { prompt_msats_per_token: 1, completion_msats_per_token: 1 } })).status).toBe(404);
  });

  it('pays a Lightning invoice from the earnings through a melt, the fee booked as the mint charged it', async () => {
    await admin('PUT', '/admin/prices/gpt-test', { body: { prompt_msats_per_token: 500, completion_msats_per_token: 500 } });
    const key = await newKey(100);
    for (let i = 0; i < 4; i++) expect((await chat(key)).status).toBe(200);
    const before = await suite.gw.ledger.totals();
    const heldBefore = await held();
    // FakeWallet asks a 2-sat fee reserve and charges 1 sat; the rest of the reserve comes back as change.
    const sats = Math.floor((before.charged - before.withdrawn - before.fees) / 1000) - 2;
    expect(sats).toBeGreaterThan(0);
    const invoice = externalInvoice(sats);

    const paid = await admin('POST', '/admin/withdraw', { body: { invoice } });
    expect(paid.status).toBe(200);
    expect(paid.json).toMatchObject({ state: 'paid', amount: sats, fee: 1, unit: 'sat', mint: mintUrl });
    expect(paid.json.preimage).toMatch(/^[0-9a-f]{64}$/);
    const quote = await (await wallet(mintUrl)).checkMeltQuoteBolt11(paid.json.quote);
    expect([quote.state, quote.amount.toNumber(), quote.request]).toEqual(['PAID', sats, invoice]);

    const after = await suite.gw.ledger.totals();
    expect(after.withdrawn - before.withdrawn).toBe(sats * 1000);
    expect(after.fees - before.fees).toBe(1000);
    expect(heldBefore - (await held())).toBe((sats + 1) * 1000);
    const earnings = await admin('GET', '/admin/earnings');
    expect(earnings.json.earnings_msats).toBe(before.charged - before.withdrawn - before.fees - (sats + 1) * 1000);
  });

  it('refuses an invoice it cannot pay, and books nothing', async () => {
    const before = await suite.gw.ledger.totals();
    const heldBefore = await held();
    const earned = Math.floor((before.charged - before.withdrawn - before.fees) / 1000);
    const tooBig = await admin('POST', '/admin/withdraw', { body: { invoice: externalInvoice(earned + 10) } });
    expect([tooBig.status, tooBig.json.error.code]).toEqual([400, 'earnings_too_low']);
    const garbage = await admin('POST', '/admin/withdraw', { body: { invoice: 'lnbc1notaninvoice' } });
    expect([garbage.status, garbage.json.error.code]).toEqual([400, 'invoice_rejected']);
    const amountless = await admin('POST', '/admin/withdraw', { body: { invoice: externalInvoice(0) } });
    expect([amountless.status, amountless.json.error.code]).toEqual([400, 'invoice_rejected']);
    const wrong = await admin('POST', '/admin/withdraw', { body: { invoice: 42 } });
    expect([wrong.status, wrong.json.error.code]).toEqual([400, 'invalid_request']);
    expect(await suite.gw.ledger.totals()).toEqual(before);
    expect(await held()).toBe(heldBefore);
  });
});
