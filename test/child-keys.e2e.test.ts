import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, testDatabaseUrl, type Gateway } from './support/gateway.ts';
import { mintToken, proofStates, receive } from './support/cashu.ts';
import { useGateway } from './support/suite.ts';
import type { Billed, WireError } from './support/wire.ts';

const onPostgres = process.env.TEST_LEDGER === 'postgres';
let db: string;
const suite = useGateway({
  env: async () => ({ DATABASE_URL: (db = await testDatabaseUrl()) }),
  reset: () => {
    suite.upstream.answerDelayMs = 0;
  },
});
const { mintUrl, upstream } = suite;
const gateways: Gateway[] = [];

// On PostgreSQL a second gateway process shares the database: a child's limit holds across both.
// It closes before the suite's own gateway drains the ledger they share.
beforeAll(async () => {
  gateways.push(suite.gw);
  if (onPostgres) gateways.push(await startGateway(mintUrl, upstream, { DATABASE_URL: db }));
});
afterAll(async () => {
  for (const g of gateways.slice(1)) await g.close();
});

/** The answers read below, as the balance door writes them. */
interface Created {
  api_key: string;
}
interface ChildKeysMade {
  count: number;
  cost_msats: number;
  parent_balance: number;
  balance_limit: number | null;
  models: string[] | null;
  api_keys: string[];
}
interface ListedChild {
  api_key: string;
  total_spent: number;
  total_requests: number;
  revoked: boolean;
  balance_limit: number | null;
}
interface Info {
  api_key: string;
  is_child: boolean;
  balance: number;
  total_spent: number;
  balance_limit?: number | null;
  child_keys?: ListedChild[];
}
interface Refunded {
  token: string;
}
interface HistoryRow {
  type: 'credit' | 'charge' | 'refund';
  msats: number;
  request_id: string | null;
  model?: string | null;
  child_key?: string | null;
}
interface History {
  transactions: HistoryRow[];
  next_cursor: string | null;
}
/** A chat answer that may be either, as a burst of requests against a limit gets. */
type Either = Partial<Billed> & Partial<WireError>;

async function call<T = WireError>(method: string, path: string, key: string | undefined, body?: unknown, at = suite.gw) {
  const headers: Record<string, string> = {};
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${at.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as T };
}

const chat = <T = Billed>(key: string, model = 'gpt-test', at = suite.gw) =>
  call<T>('POST', '/v1/chat/completions', key, { model, messages: [{ role: 'user', content: 'child' }], max_tokens: 2 }, at);

async function parentKey(sats: number): Promise<string> {
  const r = await call<Created>('POST', '/v1/balance/create', undefined, { initial_balance_token: await mintToken(mintUrl, sats) });
  expect(r.status).toBe(200);
  return r.json.api_key;
}

async function childKey(parent: string, body: Record<string, unknown> = {}): Promise<string> {
  const r = await call<ChildKeysMade>('POST', '/v1/balance/child-key', parent, body);
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return r.json.api_keys[0]!;
}

const ledgerKey = (sk: string) => suite.gw.ledger.getKey(sk.slice(3));
const ledgerChild = (sk: string) => suite.gw.ledger.getChildKey(sk.slice(3));

/** Refunds the parent to the mint, so each test ends holding nothing for it. */
async function refundAll(parent: string): Promise<number> {
  const r = await call<Refunded>('POST', '/v1/balance/refund', parent);
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return receive(mintUrl, r.json.token);
}

describe('child keys', () => {
  it('spend the parent\'s balance under their limit, only on the models allowed, and the parent sees each one\'s spend', async () => {
    const parent = await parentKey(100);
    const made = await call<ChildKeysMade>('POST', '/v1/balance/child-key', parent, { count: 2, balance_limit: 40_000, models: ['gpt-test'], validity_date: Math.floor(Date.now() / 1000) + 3600 });
    expect(made.status).toBe(200);
    expect(made.json).toMatchObject({ count: 2, cost_msats: 0, parent_balance: 100_000, balance_limit: 40_000, models: ['gpt-test'] });
    const [a, b] = made.json.api_keys;
    expect(a).toMatch(/^sk-[0-9a-f]{64}$/);
    expect(a).not.toBe(b);

    const paid = await chat(a!);
    expect(paid.status, JSON.stringify(paid.json)).toBe(200);
    const cost = paid.json.usage.cost.total_msats;
    expect(cost).toBeGreaterThan(0);
    expect(await ledgerKey(parent)).toMatchObject({ balance: 100_000 - cost, reserved: 0, totalSpent: cost });
    expect(await ledgerChild(a!)).toMatchObject({ spent: cost, reserved: 0, totalRequests: 1 });

    // Another model than those allowed: refused before anything is held or charged.
    const other = await chat<WireError>(a!, 'gpt-cheap');
    expect(other.status).toBe(403);
    expect(other.json.error.code).toBe('model_not_allowed');
    expect((await ledgerKey(parent))!.balance).toBe(100_000 - cost);

    const info = await call<Info>('GET', '/v1/balance/info', a);
    expect(info.json).toMatchObject({ api_key: a, is_child: true, total_spent: cost, balance: 40_000 - cost, balance_limit: 40_000 });
    expect(JSON.stringify(info.json)).not.toContain(parent.slice(3));

    const list = await call<{ child_keys: ListedChild[] }>('GET', '/v1/balance/child-key', parent);
    const byKey = new Map(list.json.child_keys.map((c) => [c.api_key, [c.total_spent, c.total_requests, c.revoked, c.balance_limit]]));
    expect(byKey).toEqual(new Map([[a, [cost, 1, false, 40_000]], [b, [0, 0, false, 40_000]]]));
    const parentInfo = await call<Info>('GET', '/v1/balance/info', parent);
    expect(parentInfo.json).toMatchObject({ is_child: false, balance: 100_000 - cost });
    expect(parentInfo.json.child_keys).toHaveLength(2);

    expect(await refundAll(parent)).toBe(Math.floor((100_000 - cost) / 1000));
  });

  it('a child cannot make keys, top up, refund its parent, or revoke; a stranger cannot revoke another\'s child', async () => {
    const parent = await parentKey(50);
    const child = await childKey(parent, { balance_limit: 10_000 });
    const made = await call('POST', '/v1/balance/child-key', child, { balance_limit: 1_000_000 });
    expect([made.status, made.json.error.code]).toEqual([400, 'child_key_not_allowed']);
    const list = await call('GET', '/v1/balance/child-key', child);
    expect([list.status, list.json.error.code]).toEqual([400, 'child_key_not_allowed']);

    // A top-up through a child is refused with the token untouched: still the payer's to spend.
    const token = await mintToken(mintUrl, 5);
    const topup = await call('POST', '/v1/balance/topup', child, { cashu_token: token });
    expect([topup.status, topup.json.error.code]).toEqual([400, 'child_key_not_allowed']);
    expect(new Set(await proofStates(mintUrl, token))).toEqual(new Set(['UNSPENT']));
    expect(await receive(mintUrl, token)).toBe(5);

    const refund = await call('POST', '/v1/balance/refund', child);
    expect([refund.status, refund.json.error.code]).toEqual([400, 'child_key_not_allowed']);
    const revoke = await call('POST', '/v1/balance/child-key/revoke', child, { child_key: child });
    expect([revoke.status, revoke.json.error.code]).toEqual([400, 'child_key_not_allowed']);

    const stranger = await parentKey(1);
    const theirs = await call('POST', '/v1/balance/child-key/revoke', stranger, { child_key: child });
    expect([theirs.status, theirs.json.error.code]).toEqual([404, 'key_not_found']);
    expect((await ledgerChild(child))!.revokedAt).toBeNull();

    const bad = await call('POST', '/v1/balance/child-key', parent, { balance_limit: -1 });
    expect([bad.status, bad.json.error.code]).toEqual([400, 'invalid_request']);
    const past = await call('POST', '/v1/balance/child-key', parent, { validity_date: Math.floor(Date.now() / 1000) - 10 });
    expect([past.status, past.json.error.code]).toEqual([400, 'invalid_request']);
    const reset = await call('POST', '/v1/balance/child-key', parent, { balance_limit_reset: 'daily' });
    expect(reset.status).toBe(400);

    expect((await ledgerKey(parent))!.balance).toBe(50_000);
    expect(await refundAll(parent)).toBe(50);
    expect(await refundAll(stranger)).toBe(1);
  });

  it('a parent never has more than 1,000 children, even when its creates race', async () => {
    const parent = await parentKey(3);
    for (let i = 0; i < 19; i++) expect((await call<ChildKeysMade>('POST', '/v1/balance/child-key', parent, { count: 50 })).status).toBe(200);
    // Room for 50 more: four calls of 50 at once, and only one may be made.
    const raced = await Promise.all(Array.from({ length: 4 }, () => call<ChildKeysMade & WireError>('POST', '/v1/balance/child-key', parent, { count: 50 })));
    expect(raced.map((r) => r.status).sort()).toEqual([200, 400, 400, 400]);
    expect(raced.filter((r) => r.status === 400).map((r) => r.json.error.code)).toEqual(['too_many_child_keys', 'too_many_child_keys', 'too_many_child_keys']);
    expect(await suite.gw.ledger.listChildKeys(parent.slice(3))).toHaveLength(1000);
    expect(await refundAll(parent)).toBe(3);
  });

  it(`concurrent requests through one child never spend past its limit, to the msat${onPostgres ? ', across two instances' : ''}`, async () => {
    const parent = await parentKey(200);
    // The price of one request, as a 402 for a child whose limit cannot cover it says.
    const probe = await childKey(parent, { balance_limit: 1 });
    const refused = await chat<WireError>(probe);
    expect([refused.status, refused.json.error.code]).toEqual([402, 'balance_limit_exceeded']);
    const hold = refused.json.error.amount_required_msats as number;
    expect(hold).toBeGreaterThan(1);

    const limit = Math.floor(hold * 3.5);
    const child = await childKey(parent, { balance_limit: limit });
    upstream.answerDelayMs = 50;
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => chat<Either>(child, 'gpt-test', gateways[i % gateways.length])));
    const ok = results.filter((r) => r.status === 200);
    const over = results.filter((r) => r.status === 402);
    expect(ok.length + over.length).toBe(40);
    expect(over.every((r) => r.json.error?.code === 'balance_limit_exceeded')).toBe(true);
    expect(ok.length).toBeGreaterThanOrEqual(3);
    const charged = ok.reduce((s, r) => s + r.json.usage!.cost.total_msats, 0);
    expect(charged).toBeLessThanOrEqual(limit);
    expect(await ledgerChild(child)).toMatchObject({ spent: charged, reserved: 0 });
    expect(await ledgerKey(parent)).toMatchObject({ balance: 200_000 - charged, reserved: 0, totalSpent: charged });
    const history = await call<History>('GET', '/v1/balance/history?limit=200', child);
    expect(history.json.transactions.reduce((s, t) => s + t.msats, 0)).toBe(charged);
    expect(history.json.transactions).toHaveLength(ok.length);
    expect(await refundAll(parent)).toBe(Math.floor((200_000 - charged) / 1000));
  });

  it('revoked: new requests are refused at once, one in flight still settles and is charged', async () => {
    const parent = await parentKey(50);
    const child = await childKey(parent, { balance_limit: 20_000 });
    upstream.answerDelayMs = 300;
    const inFlight = chat(child);
    const deadline = Date.now() + 10_000;
    while (!(await ledgerChild(child))!.reserved && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    expect((await ledgerChild(child))!.reserved).toBeGreaterThan(0);
    const revoked = await call<{ api_key: string; revoked: boolean }>('POST', '/v1/balance/child-key/revoke', parent, { child_key: child });
    expect(revoked.json).toMatchObject({ api_key: child, revoked: true });
    const after = await chat<WireError>(child);
    expect([after.status, after.json.error.code]).toEqual([401, 'key_revoked']);
    const done = await inFlight;
    expect(done.status).toBe(200);
    const cost = done.json.usage.cost.total_msats;
    expect(await ledgerChild(child)).toMatchObject({ spent: cost, reserved: 0 });
    expect(await ledgerKey(parent)).toMatchObject({ balance: 50_000 - cost, reserved: 0 });
    expect(await refundAll(parent)).toBe(Math.floor((50_000 - cost) / 1000));
  });

  it('expired: refused with key_expired once its validity date passes, nothing held or charged', async () => {
    const parent = await parentKey(20);
    const validUntil = Math.floor(Date.now() / 1000) + 3;
    const child = await childKey(parent, { validity_date: validUntil });
    // Before its date it spends (one request, well within the parent's 20 sats); after it, nothing.
    expect((await chat(child)).status).toBe(200);
    // The clock is what is tested here: wait for the date itself, not for the balance to run out.
    while (Date.now() < validUntil * 1000) await new Promise((r) => setTimeout(r, validUntil * 1000 - Date.now()));
    const r = await chat<WireError>(child);
    expect([r.status, r.json.error.code]).toEqual([403, 'key_expired']);
    const spent = (await ledgerChild(child))!.spent;
    expect(await ledgerKey(parent)).toMatchObject({ balance: 20_000 - spent, reserved: 0 });
    expect(await refundAll(parent)).toBe(Math.floor((20_000 - spent) / 1000));
  });
});

describe('usage history', () => {
  it('lists credits, charges and refunds from the ledger, newest first, in pages', async () => {
    const token = await mintToken(mintUrl, 30);
    const created = await call<Created>('POST', '/v1/balance/create', undefined, { initial_balance_token: token });
    const parent = created.json.api_key;
    await call('POST', '/v1/balance/topup', parent, { cashu_token: await mintToken(mintUrl, 10) });
    const one = await chat(parent);
    const child = await childKey(parent);
    const two = await chat(child);
    expect([one.status, two.status]).toEqual([200, 200]);
    const refunded = await refundAll(parent);

    const h = await call<History>('GET', '/v1/balance/history', parent);
    expect(h.status).toBe(200);
    const rows = h.json.transactions;
    expect(rows.map((t) => [t.type, t.msats])).toEqual([
      ['refund', refunded * 1000],
      ['charge', two.json.usage.cost.total_msats],
      ['charge', one.json.usage.cost.total_msats],
      ['credit', 10_000],
      ['credit', 30_000],
    ]);
    expect(rows[1]).toMatchObject({ model: 'gpt-test', child_key: child, input_tokens: two.json.usage.prompt_tokens, output_tokens: two.json.usage.completion_tokens, unit: 'msat' });
    expect(rows[2]).toMatchObject({ model: 'gpt-test', child_key: null, input_tokens: one.json.usage.prompt_tokens, output_tokens: one.json.usage.completion_tokens });
    expect(rows[1]!.request_id).toMatch(/^[0-9a-f-]{36}$/);
    // A credit's ref is a token's hash, itself a key: never shown.
    expect(rows[3]!.request_id).toBeNull();
    expect(JSON.stringify(h.json)).not.toContain(parent.slice(3));
    expect(h.json.next_cursor).toBeNull();

    const paged: HistoryRow[] = [];
    let cursor: string | null = null;
    do {
      const page: { json: History } = await call<History>('GET', `/v1/balance/history?limit=2${cursor ? `&before=${cursor}` : ''}`, parent);
      paged.push(...page.json.transactions);
      cursor = page.json.next_cursor;
    } while (cursor);
    expect(paged).toEqual(rows);

    const mine = await call<History>('GET', '/v1/balance/history', child);
    expect(mine.json.transactions).toEqual([rows[1]]);
    const bad = await call('GET', '/v1/balance/history?limit=0', parent);
    expect([bad.status, bad.json.error.code]).toEqual([400, 'invalid_request']);
    const nobody = await call('GET', '/v1/balance/history', `sk-${'0'.repeat(64)}`);
    expect(nobody.status).toBe(401);
  });
});
