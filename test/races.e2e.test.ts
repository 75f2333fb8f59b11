import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startGateway, testDatabaseUrl, type Gateway } from './support/gateway.ts';
import { mintToken, receive } from './support/cashu.ts';
import { chat as post, fundedKey, useGateway } from './support/suite.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import type { Billed, WireError } from './support/wire.ts';

const mintUrl = inject('mintUrl');
const onPostgres = process.env.TEST_LEDGER === 'postgres';
let db: string;
// The first gateway is checked after every test and drained at the end; the second shares its books.
const s = useGateway({ env: async () => ({ DATABASE_URL: (db = await testDatabaseUrl()) }) });
const gateways: Gateway[] = [];

interface Refunded {
  token: string;
  sats: string;
}
/** Any answer here: a billed chat, a refund, a top-up's credit when it is a 200, the door's error otherwise. */
type Answer = Partial<Billed & Refunded & WireError & { msats: number }>;

async function chat(gw: Gateway, headers: Record<string, string>) {
  const res = await post(gw, headers, { messages: [{ role: 'user', content: 'race' }], max_tokens: 2 });
  const json = (await res.json()) as Answer;
  return { status: res.status, change: res.headers.get('x-cashu'), json };
}

beforeAll(async () => {
  gateways.push(s.gw);
  // On PostgreSQL a second gateway process shares the database: together they must act as one.
  if (onPostgres) gateways.push(await startGateway(mintUrl, s.upstream, { DATABASE_URL: db }));
});
afterAll(async () => {
  for (const gw of gateways.slice(1)) await gw.close();
});

describe(`races${onPostgres ? ' across two instances' : ''}`, () => {
  it('credits one token presented 100 times at once, as Bearer and as X-Cashu, exactly once', async () => {
    const token = await mintToken(mintUrl, 300);
    const before = await gateways[0]!.ledger.totals();
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        chat(gateways[i % gateways.length]!, i % 2 ? { 'x-cashu': token } : { authorization: `Bearer ${token}` }),
      ),
    );
    const after = await gateways[0]!.ledger.totals();
    expect(after.credited - before.credited).toBe(300_000);
    for (const r of results) expect([200, 402, 425]).toContain(r.status);
    expect(results.filter((r) => r.status === 200).length).toBeGreaterThan(0);
    // What the requests were charged, what came back as change, and what is left add up to the token.
    const charged = results.reduce((sum, r) => sum + (r.status === 200 ? r.json.usage!.cost.total_msats : 0), 0);
    const changes = [...new Set(results.map((r) => r.change).filter((c): c is string => !!c))];
    let changeSats = 0;
    for (const c of changes) changeSats += await receive(mintUrl, c);
    const key = (await gateways[0]!.ledger.getKey(sha256Hex(token)))!;
    expect(charged + changeSats * 1000 + key.balance).toBe(300_000);
    expect(key.reserved).toBe(0);
  });

  it('never overdraws a small balance under 100 concurrent requests', async () => {
    const { key: api_key } = await fundedKey(gateways[0]!, mintUrl, 1);
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) => chat(gateways[i % gateways.length]!, { authorization: `Bearer ${api_key}` })),
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 402);
    expect(ok.length + refused.length).toBe(100);
    expect(refused.every((r) => r.json.error?.code === 'insufficient_balance')).toBe(true);
    expect(ok.length).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    const charged = ok.reduce((sum, r) => sum + r.json.usage!.cost.total_msats, 0);
    const key = (await gateways[0]!.ledger.getKey(api_key.slice(3)))!;
    expect(key.balance).toBe(1000 - charged);
    expect(key.balance).toBeGreaterThanOrEqual(0);
    expect(key.reserved).toBe(0);
  });

  it('pays one refund when many are asked for at once, and returns the same token to every asker', async () => {
    const token = await mintToken(mintUrl, 21);
    await chat(gateways[0]!, { authorization: `Bearer ${token}` });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        fetch(`${gateways[i % gateways.length]!.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${token}` } }).then(
          async (r) => ({ status: r.status, json: (await r.json()) as Refunded }),
        ),
      ),
    );
    const tokens = new Set(results.filter((r) => r.status === 200).map((r) => r.json.token));
    expect(tokens.size).toBe(1);
    const [refund] = [...tokens];
    expect(await receive(mintUrl, refund!)).toBe(20);
  });

  it('loses nothing when refunds race top-ups and requests on one key', async () => {
    const gw0 = gateways[0]!;
    const { key: api_key } = await fundedKey(gw0, mintUrl, 10);
    const topups = await Promise.all(Array.from({ length: 8 }, () => mintToken(mintUrl, 5)));
    const auth = { authorization: `Bearer ${api_key}` };
    const ops = [
      ...topups.map((t, i) =>
        fetch(`${gateways[i % gateways.length]!.url}/v1/balance/topup`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...auth },
          body: JSON.stringify({ cashu_token: t }),
        }).then(async (r) => ({ kind: 'topup', status: r.status, json: (await r.json()) as Answer })),
      ),
      ...Array.from({ length: 8 }, (_, i) =>
        fetch(`${gateways[i % gateways.length]!.url}/v1/balance/refund`, { method: 'POST', headers: auth }).then(async (r) => ({
          kind: 'refund',
          status: r.status,
          json: (await r.json()) as Answer,
        })),
      ),
      ...Array.from({ length: 8 }, (_, i) => chat(gateways[i % gateways.length]!, auth).then((r) => ({ kind: 'chat', ...r }))),
    ];
    const results = await Promise.all(ops);
    for (const r of results.filter((x) => x.kind === 'topup')) expect([r.status, r.json.msats]).toEqual([200, 5000]);
    const charged = results
      .filter((r) => r.kind === 'chat' && r.status === 200)
      .reduce((sum, r) => sum + r.json.usage!.cost.total_msats, 0);
    let refundedSats = 0;
    for (const t of new Set(results.filter((r) => r.kind === 'refund' && r.status === 200).map((r) => r.json.token!))) {
      refundedSats += await receive(mintUrl, t);
    }
    // Refund what is left, then everything that came in is accounted for to the msat.
    const last = await fetch(`${gw0.url}/v1/balance/refund`, { method: 'POST', headers: auth });
    const lastJson = (await last.json()) as { token: string };
    const seen = new Set(results.filter((r) => r.kind === 'refund').map((r) => r.json.token));
    if (!seen.has(lastJson.token)) refundedSats += await receive(mintUrl, lastJson.token);
    const key = (await gw0.ledger.getKey(api_key.slice(3)))!;
    expect(charged + refundedSats * 1000 + key.balance).toBe(10_000 + 8 * 5_000);
    expect(key.reserved).toBe(0);
  });

  it('credits a token once when it tops up one key while being used as a key itself', async () => {
    const gw0 = gateways[0]!;
    const { key: api_key } = await fundedKey(gw0, mintUrl, 2);
    const token = await mintToken(mintUrl, 30);
    const before = await gw0.ledger.totals();
    const [topup, asKey, asX] = await Promise.all([
      fetch(`${gw0.url}/v1/balance/topup`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${api_key}` },
        body: JSON.stringify({ cashu_token: token }),
      }).then(async (r) => ({ status: r.status, json: (await r.json()) as Answer })),
      chat(gateways[gateways.length - 1]!, { authorization: `Bearer ${token}` }),
      chat(gw0, { 'x-cashu': token }),
    ]);
    for (const r of [topup, asKey, asX]) expect([200, 400]).toContain(r.status);
    expect((await gw0.ledger.totals()).credited - before.credited).toBe(30_000);
    const toppedUp = topup.status === 200;
    expect(topup.json.msats ?? 0).toBe(toppedUp ? 30_000 : 0);
    const key = (await gw0.ledger.getKey(api_key.slice(3)))!;
    expect(key.balance).toBe(2_000 + (toppedUp ? 30_000 : 0));
  });
});
