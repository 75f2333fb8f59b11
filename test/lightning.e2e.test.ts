import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { wallet } from './support/cashu.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { expectMoneyConserved, startGateway } from './support/gateway.ts';
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

  it('still pays an invoice made before invoice ids were its own, named by its quote id, to the key derived from it', async () => {
    // What the gateway before did: the quote asked of the mint, its id given as the invoice id.
    const quote = await (await wallet(suite.mintUrl)).createMintQuoteBolt11(9);
    const done = await paid(quote.quote);
    expect(done.api_key).toBe(`sk-${createHash('sha256').update(`lightning key ${suite.mintUrl} ${quote.quote}`).digest('hex')}`);
    expect(done.balance).toBe(9_000);
  });
});

describe('an invoice made before, long ago', () => {
  it('still names its key, once paid by the gateway before (no claim noted), a week after its quote expired', async () => {
    const proxy = new CountingProxy(suite.mintUrl);
    await proxy.start();
    const g = await startGateway(proxy.url, suite.upstream);
    try {
      const status = (id: string) => fetch(`${g.url}/v1/balance/lightning/invoice/${id}/status`).then(async (r) => ({ status: r.status, json: (await r.json()) as Record<string, any> }));
      const quote = await (await wallet(proxy.url)).createMintQuoteBolt11(4);
      const first = await waitFor(async () => ((await status(quote.quote)).json.status === 'paid' ? status(quote.quote) : undefined), 'the invoice paid');
      // As the gateway before left it: redeemed, no claim noted. Eight days on:
      await g.ledger.dropNote('lightning-quote', quote.quote);
      proxy.rewrite = (method, path, json) => (method === 'GET' && path.startsWith('/v1/mint/quote/bolt11') ? { ...json, expiry: Math.floor(Date.now() / 1000) - 8 * 24 * 3600 } : json);
      const again = await status(quote.quote);
      expect([again.status, again.json.status, again.json.api_key]).toEqual([200, 'paid', first.json.api_key]);
    } finally {
      await g.close();
      await proxy.stop();
    }
  });
});

describe('what a stranger leaves in the ledger', () => {
  it('an id that is not one (a path, a query) is not passed to the mint, nor noted', async () => {
    // A quote of the stranger's own, paid: ids that the mint's URL would turn back into it.
    const quote = await (await wallet(suite.mintUrl)).createMintQuoteBolt11(1);
    for (const id of [`a%2F..%2F${quote.quote}`, `b%2F%2E%2E%2F${quote.quote}`, `${quote.quote}%3Fx=1`, `${quote.quote}%23x`]) {
      const r = await call('GET', `/v1/balance/lightning/invoice/${id}/status`);
      expect([id, r.status, r.json.error?.code]).toEqual([id, 404, 'invoice_not_found']);
      expect(await suite.gw.ledger.getNote('lightning-quote', decodeURIComponent(id))).toBeUndefined();
    }
    // The quote itself is still an invoice made before, paid once.
    expect((await paid(quote.quote)).balance).toBe(1_000);
  });

  it('an unpaid invoice is forgotten some time after its quote expired; a paid one is kept', async () => {
    const proxy = new CountingProxy(suite.mintUrl);
    await proxy.start();
    const g = await startGateway(proxy.url, suite.upstream);
    const week = 7 * 24 * 3600;
    try {
      let expiry = 0;
      proxy.rewrite = (method, path, json) => (method === 'POST' && path.startsWith('/v1/mint/quote/bolt11') ? { ...json, expiry } : json);
      const make = async () => {
        const r = await fetch(`${g.url}/v1/balance/lightning/invoice`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ amount_sats: 3 }) });
        return ((await r.json()) as { invoice_id: string }).invoice_id;
      };
      const quoteOf = (id: string) => g.ledger.getNote('lightning-invoice', id);
      // A quote that expired over a week ago (as the mint says): its notes still last a week from now.
      expiry = Math.floor(Date.now() / 1000) - week - 60;
      const old = await make();
      expect(await quoteOf(old)).toBeDefined();
      expect(await g.ledger.claimNote('lightning-invoice', old, 'x', Date.now() + (week - 60) * 1000)).not.toBe('x');
      // Those of an invoice made a week ago, say, go in 3 s: paid before, they stay.
      const id = await make();
      const quote = (await quoteOf(id))!;
      expect(quote).toBeDefined();
      await g.ledger.putNote('lightning-invoice', id, quote, Date.now() + 3_000);
      await g.ledger.putNote('lightning-quote', quote, id, Date.now() + 3_000);
      const status = () => fetch(`${g.url}/v1/balance/lightning/invoice/${id}/status`).then((r) => r.json() as Promise<Record<string, any>>);
      const first = await waitFor(async () => ((await status()).status === 'paid' ? status() : undefined), 'the invoice paid');
      await new Promise((r) => setTimeout(r, 4_500));
      expect(await quoteOf(id)).toBe(quote);
      expect(await status()).toMatchObject({ status: 'paid', api_key: first.api_key, balance: 3_000 });
      expect((await fetch(`${g.url}/v1/balance/lightning/invoice/${quote}/status`)).status).toBe(404);
      await expectMoneyConserved(g);
    } finally {
      await g.close();
      await proxy.stop();
    }
  });
});

describe('what the mint learns of an invoice', () => {
  it('is not enough to take the key of an invoice paid and not asked about until its notes went', async () => {
    const proxy = new CountingProxy(suite.mintUrl);
    await proxy.start();
    const g = await startGateway(proxy.url, suite.upstream);
    try {
      const created = await fetch(`${g.url}/v1/balance/lightning/invoice`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ amount_sats: 6 }),
      });
      const inv = (await created.json()) as { invoice_id: string };
      const quote = (await g.ledger.getNote('lightning-invoice', inv.invoice_id))!;
      const w = await wallet(suite.mintUrl);
      await waitFor(async () => ((await w.checkMintQuoteBolt11(quote)).state === 'PAID' ? true : undefined), 'the client paid');
      // Eight days on: the quote expired over a week ago, and its notes are gone.
      proxy.rewrite = (method, path, json) => (method === 'GET' && path.startsWith('/v1/mint/quote/bolt11') ? { ...json, expiry: Math.floor(Date.now() / 1000) - 8 * 24 * 3600 } : json);
      await g.ledger.putNote('lightning-invoice', inv.invoice_id, quote, Date.now() - 1);
      await g.ledger.putNote('lightning-quote', quote, inv.invoice_id, Date.now() - 1);
      const asMint = await fetch(`${g.url}/v1/balance/lightning/invoice/${quote}/status`).then(async (r) => ({ status: r.status, json: (await r.json()) as Record<string, any> }));
      expect([asMint.status, asMint.json.api_key]).toEqual([404, undefined]);
    } finally {
      await g.close();
      await proxy.stop();
    }
  });

  it('is not enough to take the key by saying its quote expired long ago: the invoice is still the client\'s for a week', async () => {
    const proxy = new CountingProxy(suite.mintUrl);
    await proxy.start();
    const g = await startGateway(proxy.url, suite.upstream);
    try {
      let quote = '';
      // The mint says the quote expired over a week ago (its clock, or its lie), and is paid all the same.
      proxy.rewrite = (method, path, json) => {
        if (method === 'POST' && path.startsWith('/v1/mint/quote/bolt11')) {
          quote = json.quote as string;
          return { ...json, expiry: Math.floor(Date.now() / 1000) - 8 * 24 * 3600 };
        }
        return json;
      };
      const created = await fetch(`${g.url}/v1/balance/lightning/invoice`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ amount_sats: 11 }),
      });
      const inv = (await created.json()) as { invoice_id: string };
      proxy.rewrite = undefined;
      const w = await wallet(suite.mintUrl);
      await waitFor(async () => ((await w.checkMintQuoteBolt11(quote)).state === 'PAID' ? true : undefined), 'the client paid');
      const status = (id: string) => fetch(`${g.url}/v1/balance/lightning/invoice/${id}/status`).then(async (r) => ({ status: r.status, json: (await r.json()) as Record<string, any> }));
      // The mint, before the client asks, asks about its quote id.
      const asMint = await status(quote);
      expect([asMint.status, asMint.json.api_key]).toEqual([404, undefined]);
      const owner = await status(inv.invoice_id);
      expect([owner.json.status, owner.json.balance]).toEqual(['paid', 11_000]);
      await expectMoneyConserved(g);
    } finally {
      await g.close();
      await proxy.stop();
    }
  });

  it('is not enough to learn the key a top-up made before funded, by asking about its quote id', async () => {
    const first = await call('POST', '/v1/balance/lightning/invoice', { amount_sats: 5 });
    const { api_key } = await paid(first.json.invoice_id);
    // A top-up as the gateway before made it: the quote's own id given as the invoice id, the key it funds noted.
    const quote = await (await wallet(suite.mintUrl)).createMintQuoteBolt11(4);
    await suite.gw.ledger.putNote('lightning-topup', quote.quote, (api_key as string).slice(3), Date.now() + 3600_000);
    // The mint knows that id: asked about it, the gateway credits the owner's key, and does not say which.
    const done = await paid(quote.quote);
    expect(done.api_key).toBeUndefined();
    expect(done.balance).toBeUndefined();
    const info = await call('GET', '/v1/balance/info', undefined, { authorization: `Bearer ${api_key}` });
    expect(info.json.balance).toBe(9_000);
  });

  it('is not enough to take the key by asking about the quote id while the invoice is being made', async () => {
    const proxy = new CountingProxy(suite.mintUrl);
    await proxy.start();
    const g = await startGateway(proxy.url, suite.upstream);
    try {
      const status = (id: string) => fetch(`${g.url}/v1/balance/lightning/invoice/${id}/status`).then(async (r) => ({ status: r.status, json: (await r.json()) as Record<string, any> }));
      let quote = '';
      let asMint: Promise<{ status: number; json: Record<string, any> }> | undefined;
      let held = false;
      let asked!: () => void;
      const askedP = new Promise<void>((r) => (asked = r));
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      // The mint, before it answers the gateway with a new quote, asks the status route about its id,
      // and holds the gateway's question about that quote until the client has paid.
      proxy.onRequest = async (method, path) => {
        if (quote && !held && method === 'GET' && path.startsWith(`/v1/mint/quote/bolt11/${quote}`)) {
          held = true;
          asked();
          await gate;
        }
      };
      proxy.rewrite = async (method, path, json) => {
        if (!quote && method === 'POST' && path.startsWith('/v1/mint/quote/bolt11')) {
          quote = json.quote as string;
          asMint = status(quote);
          await askedP;
        }
        return json;
      };
      const created = await fetch(`${g.url}/v1/balance/lightning/invoice`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ amount_sats: 13 }),
      });
      expect(created.status).toBe(200);
      const inv = (await created.json()) as { invoice_id: string };
      const w = await wallet(suite.mintUrl);
      await waitFor(async () => ((await w.checkMintQuoteBolt11(quote)).state === 'PAID' ? true : undefined), 'the client paid');
      release();
      const stolen = await asMint!;
      expect([stolen.json.status, stolen.json.api_key]).toEqual([undefined, undefined]);
      const owner = await waitFor(async () => {
        const s = await status(inv.invoice_id);
        return s.json.status === 'paid' ? s.json : undefined;
      }, 'the invoice paid');
      expect(owner.api_key).not.toBe(`sk-${createHash('sha256').update(`lightning key ${proxy.url} ${quote}`).digest('hex')}`);
      expect(owner.balance).toBe(13_000);
      await expectMoneyConserved(g);
    } finally {
      await g.close();
      await proxy.stop();
    }
  });

  it('is not enough to take the key it funds: neither its quote id as the invoice id, nor a key derived from it', async () => {
    // The mint sees every quote id (so does anyone reading its logs): here, a proxy in front of it.
    const proxy = new CountingProxy(suite.mintUrl);
    await proxy.start();
    const g = await startGateway(proxy.url, suite.upstream);
    try {
      const created = await fetch(`${g.url}/v1/balance/lightning/invoice`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ amount_sats: 13 }),
      });
      const inv = (await created.json()) as { invoice_id: string };
      const quoteCall = proxy.calls.find((c) => c.startsWith('POST /v1/mint/quote/bolt11'));
      expect(quoteCall).toBeDefined();
      const status = (id: string) => fetch(`${g.url}/v1/balance/lightning/invoice/${id}/status`).then(async (r) => ({ status: r.status, json: (await r.json()) as Record<string, any> }));
      // The gateway asks the mint about the quote by its id: the mint now holds it, whatever the client was told.
      const owner = await waitFor(async () => {
        const s = await status(inv.invoice_id);
        return s.json.status === 'paid' ? s.json : undefined;
      }, 'the invoice paid');
      const quoteIds = proxy.calls.map((c) => /^GET \/v1\/mint\/quote\/bolt11\/([^/?]+)/.exec(c)?.[1]).filter((q): q is string => !!q);
      expect(quoteIds.length).toBeGreaterThan(0);
      const quote = quoteIds[0]!;
      // Asking the gateway about the quote id names no key.
      const asMint = await status(quote);
      expect([asMint.status, asMint.json.error?.code, asMint.json.api_key]).toEqual([404, 'invoice_not_found', undefined]);
      // Nor can the key be derived from it.
      for (const mint of [proxy.url, suite.mintUrl]) {
        const derived = `sk-${createHash('sha256').update(`lightning key ${mint} ${quote}`).digest('hex')}`;
        expect(derived).not.toBe(owner.api_key);
      }
      const balance = await fetch(`${g.url}/v1/balance/info`, { headers: { authorization: `Bearer ${owner.api_key}` } }).then((r) => r.json() as Promise<{ balance: number }>);
      expect(balance.balance).toBe(13_000);
      await expectMoneyConserved(g);
    } finally {
      await g.close();
      await proxy.stop();
    }
  });
});
