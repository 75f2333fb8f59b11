import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { finalizeEvent, generateSecretKey, getPublicKey } from 'nostr-tools/pure';
import { FakeUpstream } from './support/upstream.ts';
import { PRICES, expectDrained, expectMoneyConserved, startGateway, durableDatabaseUrl, type Gateway } from './support/gateway.ts';
import type { WireError } from './support/wire.ts';

/**
 * Guards that protect money must hold for every gateway on one ledger, and across a restart:
 * what one instance learned (a top-up's key, a used NIP-98 event) the others know too.
 */
const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
const adminSk = generateSecretKey();
const PUBLIC_URL = 'https://gateway.example';
let databaseUrl: string;
let a: Gateway;
let b: Gateway;


const env = () => ({ DATABASE_URL: databaseUrl, PUBLIC_URL, ADMIN_NPUBS: getPublicKey(adminSk) });

/** The answers read below: an invoice made, an invoice's status, the door's error. */
interface Invoice {
  invoice_id: string;
}
interface InvoiceStatus {
  status: string;
  api_key: string;
  balance: number;
}

async function call<T>(gw: Gateway, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${gw.url}${path}`, {
    method,
    headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, json: (await res.json()) as T };
}

async function paid(gw: Gateway, invoiceId: string) {
  const until = Date.now() + 10_000;
  for (;;) {
    const s = await call<InvoiceStatus>(gw, 'GET', `/v1/balance/lightning/invoice/${invoiceId}/status`);
    if (s.json.status === 'paid') return s.json;
    if (Date.now() > until) throw new Error(`invoice never paid: ${JSON.stringify(s.json)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function nip98(path: string, method: string): string {
  const event = finalizeEvent(
    { kind: 27235, created_at: Math.floor(Date.now() / 1000), tags: [['u', `${PUBLIC_URL}${path}`], ['method', method]], content: '' },
    adminSk,
  );
  return `Nostr ${Buffer.from(JSON.stringify(event)).toString('base64')}`;
}

beforeAll(async () => {
  await upstream.start();
  databaseUrl = await durableDatabaseUrl();
  a = await startGateway(mintUrl, upstream, env());
  b = await startGateway(mintUrl, upstream, env());
});
afterAll(async () => {
  try {
    // One ledger under both instances: with the first gone, the second drains all of it.
    await a?.close();
    if (b) await expectDrained(b, { prices: PRICES });
  } finally {
    await b?.close();
    await upstream.stop();
  }
});
afterEach(async () => {
  await expectMoneyConserved(b);
});

describe('Lightning top-ups', () => {
  it('credit the key the invoice was made for, whichever instance sees it paid, after a restart too', async () => {
    const first = await call<Invoice>(a, 'POST', '/v1/balance/lightning/invoice', { amount_sats: 5 });
    const { api_key } = await paid(a, first.json.invoice_id);
    const top = await call<Invoice>(a, 'POST', '/v1/balance/lightning/invoice', { amount_sats: 7, purpose: 'topup' }, { authorization: `Bearer ${api_key}` });
    expect(top.status).toBe(200);
    // The instance that made the invoice goes away before anyone asks about it.
    await a.close();
    try {
      const done = await paid(b, top.json.invoice_id);
      expect(done.api_key).toBe(api_key);
      expect(done.balance).toBe(12_000);
    } finally {
      a = await startGateway(mintUrl, upstream, env());
    }
  });
});

describe('NIP-98 admin requests', () => {
  it('are used once across every instance', async () => {
    const auth = nip98('/admin/earnings', 'GET');
    const first = await call(a, 'GET', '/admin/earnings', undefined, { authorization: auth });
    expect(first.status).toBe(200);
    const replay = await call<WireError>(b, 'GET', '/admin/earnings', undefined, { authorization: auth });
    expect([replay.status, replay.json.error.message]).toEqual([401, 'NIP-98 authorization failed: this event was used already.']);
  });

  it('without PUBLIC_URL are answered only on loopback, since the URL they sign would come from the client', async () => {
    const open = await startGateway(mintUrl, upstream, { ADMIN_NPUBS: getPublicKey(adminSk), TRUST_PROXY: 'true' });
    try {
      const path = '/admin/earnings';
      const sign = (host: string) => {
        const event = finalizeEvent({ kind: 27235, created_at: Math.floor(Date.now() / 1000), tags: [['u', `http://${host}${path}`], ['method', 'GET']], content: '' }, adminSk);
        return `Nostr ${Buffer.from(JSON.stringify(event)).toString('base64')}`;
      };
      const local = await call(open, 'GET', path, undefined, { authorization: sign(new URL(open.url).host) });
      expect(local.status).toBe(200);
      const remote = await call<WireError>(open, 'GET', path, undefined, { authorization: sign('other.example'), 'x-forwarded-host': 'other.example', 'x-forwarded-for': '203.0.113.9' });
      expect([remote.status, remote.json.error.code]).toEqual([403, 'public_url_required']);
    } finally {
      await open.close();
    }
  });
});
