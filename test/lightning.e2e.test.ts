import { describe, expect, it } from 'vitest';
import { useGateway, waitFor } from './support/suite.ts';

const suite = useGateway();

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${suite.gw.url}${path}`, {
    method,
    headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

async function paid(invoiceId: string) {
  return waitFor(async () => {
    const s = await call('GET', `/v1/balance/lightning/invoice/${invoiceId}/status`);
    return s.json.status === 'paid' ? s.json : undefined;
  }, 'the invoice paid');
}

describe('Lightning top-ups through the mint (RIP-08)', () => {
  it('creates a key funded by a paid invoice, credited once however often the status is asked', async () => {
    const inv = await call('POST', '/v1/balance/lightning/invoice', { amount_sats: 21 });
    expect(inv.status).toBe(200);
    expect(inv.json.bolt11).toMatch(/^lnbc/);
    const before = (await suite.gw.ledger.totals()).credited;
    // nutshell's FakeWallet settles the invoice by itself.
    const status = await paid(inv.json.invoice_id);
    expect(status).toMatchObject({ status: 'paid', amount_sats: 21, balance: 21_000 });
    const again = await paid(inv.json.invoice_id);
    expect(again.api_key).toBe(status.api_key);
    expect((await suite.gw.ledger.totals()).credited - before).toBe(21_000);

    const chat = await call('POST', '/v1/chat/completions', { model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }, {
      authorization: `Bearer ${status.api_key}`,
    });
    expect(chat.status).toBe(200);
  });

  it('tops up an existing key', async () => {
    const first = await call('POST', '/v1/balance/lightning/invoice', { amount_sats: 5 });
    const { api_key } = await paid(first.json.invoice_id);
    const top = await call('POST', '/v1/balance/lightning/invoice', { amount_sats: 7, purpose: 'topup' }, { authorization: `Bearer ${api_key}` });
    expect(top.status).toBe(200);
    const done = await paid(top.json.invoice_id);
    expect(done.api_key).toBe(api_key);
    expect(done.balance).toBe(12_000);
    const noKey = await call('POST', '/v1/balance/lightning/invoice', { amount_sats: 7, purpose: 'topup' });
    expect([noKey.status, noKey.json.error.code]).toEqual([401, 'invalid_api_key']);
    const bad = await call('POST', '/v1/balance/lightning/invoice', { amount_sats: 0 });
    expect([bad.status, bad.json.error.code]).toEqual([400, 'invalid_request']);
  });
});
