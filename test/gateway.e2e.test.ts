import { describe, expect, it } from 'vitest';
import OpenAI, { APIError } from 'openai';
import { PaymentRequest } from '@cashu/cashu-ts';
import { createHash } from 'node:crypto';
import { REPLY_WORDS, upstreamPromptTokens } from './support/upstream.ts';
import { PRICES, msats } from './support/gateway.ts';
import { expectUntouched, useGateway } from './support/suite.ts';
import { asCashuA, mintToken, proofStates, receive, relabel, tokenValue } from './support/cashu.ts';
import type { BilledChunk, BilledUsage, WireError } from './support/wire.ts';

const suite = useGateway();
const { mintUrl, upstream } = suite;

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const client = (apiKey: string) => new OpenAI({ baseURL: `${suite.gw.url}/v1`, apiKey, maxRetries: 0 });
const messages = [{ role: 'user' as const, content: 'What is six times seven?' }];

function expectedCost(model: keyof typeof PRICES, prompt: number, completion: number) {
  const p = PRICES[model];
  const input = msats(prompt, p.prompt);
  const output = msats(completion, p.completion);
  return { input, output, total: input + output };
}

async function apiError(p: Promise<unknown>): Promise<APIError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof APIError) return e;
    throw e;
  }
  throw new Error('expected the request to fail');
}

async function post(path: string, init: { headers?: Record<string, string>; body?: unknown } = {}) {
  const res = await fetch(`${suite.gw.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...init.headers },
    body: JSON.stringify(init.body ?? {}),
  });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, any> };
}

async function info(apiKey: string) {
  const res = await fetch(`${suite.gw.url}/v1/balance/info`, { headers: { authorization: `Bearer ${apiKey}` } });
  return (await res.json()) as Record<string, any>;
}

describe('discovery', () => {
  it('lists the upstream models with Routstr sats_pricing, defaulting unpriced models to a non-zero price', async () => {
    const models = (await (await fetch(`${suite.gw.url}/v1/models`)).json()) as { data: Record<string, any>[] };
    const byId = new Map(models.data.map((m) => [m.id, m]));
    expect([...byId.keys()].sort()).toEqual(['gpt-cheap', 'gpt-test', 'text-embed']);
    expect(byId.get('gpt-test')!.sats_pricing.prompt).toBeCloseTo(0.002, 12);
    expect(byId.get('gpt-test')!.sats_pricing.completion).toBeCloseTo(0.005, 12);
    expect(byId.get('gpt-cheap')!.sats_pricing.prompt).toBeCloseTo(0.00015, 12);
    const def = byId.get('text-embed')!.sats_pricing;
    expect(def.prompt).toBeCloseTo(0.001, 12);
    expect(def.completion).toBeCloseTo(0.003, 12);
    // (context - max completion) prompt tokens at 1 msat plus max completion at 3 msats, in sats.
    expect(def.max_cost).toBeCloseTo(((128000 - 4096) * 1 + 4096 * 3) / 1000, 9);
  });

  it('describes itself at /v1/info', async () => {
    const body = (await (await fetch(`${suite.gw.url}/v1/info`)).json()) as Record<string, any>;
    expect(body.mints).toEqual([mintUrl]);
    expect(body.units).toEqual(['sat', 'msat']);
    expect(body.payment_methods).toContain('cashu');
    expect(typeof body.version).toBe('string');
  });
});

describe('a Cashu token as the API key', () => {
  it('funds sk-<sha256(token)> and bills non-streaming and streaming completions exactly usage × price', async () => {
    const token = await mintToken(mintUrl, 500);
    const oa = client(token);

    const res = await oa.chat.completions.create({ model: 'gpt-test', messages });
    expect(res.choices[0]!.message.content).toBe(REPLY_WORDS.join(' '));
    const prompt = upstreamPromptTokens({ messages });
    expect(res.usage!.prompt_tokens).toBe(prompt);
    expect(res.usage!.completion_tokens).toBe(REPLY_WORDS.length);
    const c1 = expectedCost('gpt-test', prompt, REPLY_WORDS.length);
    expect((res.usage as BilledUsage).cost).toMatchObject({ input_msats: c1.input, output_msats: c1.output, total_msats: c1.total });

    const stream = await oa.chat.completions.create({ model: 'gpt-test', messages, stream: true, max_tokens: 4 });
    let text = '';
    let final: BilledChunk | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) final = chunk as BilledChunk;
    }
    expect(text).toBe(REPLY_WORDS.slice(0, 4).join(' '));
    expect(upstream.requests.at(-1)!.body.stream_options).toEqual({ include_usage: true });
    const c2 = expectedCost('gpt-test', prompt, 4);
    expect(final!.choices).toEqual([]);
    expect(final!.usage.cost).toMatchObject({ input_msats: c2.input, output_msats: c2.output, total_msats: c2.total });

    const key = `sk-${sha256(token)}`;
    const bal = await info(key);
    expect(bal.api_key).toBe(key);
    expect(bal.balance).toBe(500_000 - c1.total - c2.total);
    expect(bal.reserved).toBe(0);
    // The token string keeps working as the key and spends the same balance.
    expect((await info(token)).balance).toBe(bal.balance);
  });

  it('bills sub-msat prices rounded up per part, and legacy completions and embeddings too', async () => {
    const token = await mintToken(mintUrl, 100);
    const oa = client(token);
    const chat = await oa.chat.completions.create({ model: 'gpt-cheap', messages });
    const c1 = expectedCost('gpt-cheap', chat.usage!.prompt_tokens, chat.usage!.completion_tokens);
    expect((chat.usage as BilledUsage).cost.total_msats).toBe(c1.total);

    const comp = await oa.completions.create({ model: 'gpt-test', prompt: 'Say hi', max_tokens: 3 });
    expect(comp.choices[0]!.text).toBe('The answer is');
    const c2 = expectedCost('gpt-test', upstreamPromptTokens({ prompt: 'Say hi' }), 3);
    expect((comp.usage as BilledUsage).cost.total_msats).toBe(c2.total);

    const emb = await oa.embeddings.create({ model: 'text-embed', input: 'hello world' });
    expect(emb.data[0]!.embedding).toEqual([0.1, 0.2, 0.3]);
    const embCost = msats(upstreamPromptTokens({ input: 'hello world' }), 1);
    expect((emb.usage as BilledUsage).cost.total_msats).toBe(embCost);

    expect((await info(token)).balance).toBe(100_000 - c1.total - c2.total - embCost);
  });

  it('refunds whole sats as a token the mint accepts, keeps the msat remainder, and repeats the same token on retry', async () => {
    const token = await mintToken(mintUrl, 64);
    const oa = client(token);
    const res = await oa.chat.completions.create({ model: 'gpt-cheap', messages });
    const cost = (res.usage as BilledUsage).cost.total_msats as number;
    const left = 64_000 - cost;

    const r1 = await post('/v1/balance/refund', { headers: { authorization: `Bearer ${token}` } });
    expect(r1.status).toBe(200);
    expect(r1.json.sats).toBe(String(Math.floor(left / 1000)));
    expect(r1.headers.get('x-cashu')).toBe(r1.json.token);
    const r2 = await post('/v1/balance/refund', { headers: { authorization: `Bearer sk-${sha256(token)}` } });
    expect(r2.json.token).toBe(r1.json.token);

    expect((await info(token)).balance).toBe(left % 1000);
    expect(await receive(mintUrl, r1.json.token)).toBe(Math.floor(left / 1000));
  });

  it('accepts a legacy cashuA token and an msat token, refunding msat to the msat', async () => {
    const a = await asCashuA(mintUrl, await mintToken(mintUrl, 30));
    const r = await client(a).chat.completions.create({ model: 'gpt-test', messages, max_tokens: 2 });
    expect((await info(a)).balance).toBe(30_000 - (r.usage as BilledUsage).cost.total_msats);

    const m = await mintToken(mintUrl, 45_123, 'msat');
    const rm = await client(m).chat.completions.create({ model: 'gpt-cheap', messages });
    const cost = (rm.usage as BilledUsage).cost.total_msats as number;
    const refund = await post('/v1/balance/refund', { headers: { authorization: `Bearer ${m}` } });
    expect(refund.json.msats).toBe(String(45_123 - cost));
    expect(await receive(mintUrl, refund.json.token)).toBe(45_123 - cost);
    expect((await info(m)).balance).toBe(0);
  });

  it('credits a token presented many times at once exactly once', async () => {
    const token = await mintToken(mintUrl, 200);
    const before = await suite.gw.ledger.totals();
    const oa = client(token);
    const results = await Promise.allSettled(
      Array.from({ length: 12 }, () => oa.chat.completions.create({ model: 'gpt-test', messages, max_tokens: 1 })),
    );
    expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
    const after = await suite.gw.ledger.totals();
    expect(after.credited - before.credited).toBe(200_000);
    const spent = results.reduce((s, r) => s + ((r as PromiseFulfilledResult<any>).value.usage.cost.total_msats as number), 0);
    expect((await info(token)).balance).toBe(200_000 - spent);
  });
});

describe('balance endpoints', () => {
  it('creates a key from a token (idempotently), tops it up, and reports balance and reservations', async () => {
    const token = await mintToken(mintUrl, 12);
    const created = await post('/v1/balance/create', { body: { initial_balance_token: token } });
    expect(created.status).toBe(200);
    expect(created.json).toEqual({ api_key: `sk-${sha256(token)}`, balance: 12_000 });
    // Routstr's GET form with the token in the query returns the same key, credited once.
    const again = await fetch(`${suite.gw.url}/v1/balance/create?initial_balance_token=${encodeURIComponent(token)}`);
    expect(await again.json()).toEqual(created.json);

    const top = await mintToken(mintUrl, 3_500, 'msat');
    const t = await post('/v1/balance/topup', { headers: { authorization: `Bearer ${created.json.api_key}` }, body: { cashu_token: top } });
    expect(t.json).toEqual({ msats: 3_500 });
    // The same top-up token cannot be credited twice, nor used as a key of its own.
    const t2 = await post('/v1/balance/topup', { headers: { authorization: `Bearer ${created.json.api_key}` }, body: { cashu_token: top } });
    expect(t2.json).toEqual({ msats: 3_500 });
    const asKey = await post('/v1/chat/completions', { headers: { authorization: `Bearer ${top}` }, body: { model: 'gpt-test', messages } });
    expect([asKey.status, asKey.json.error.code]).toEqual([400, 'cashu_token_already_spent']);

    const bal = await info(created.json.api_key);
    expect([bal.balance, bal.reserved, bal.unit]).toEqual([15_500, 0, 'sat']);
    const refund = await post('/v1/wallet/refund', { headers: { authorization: `Bearer ${created.json.api_key}` } });
    expect(refund.json.sats).toBe('15');
    expect(await receive(mintUrl, refund.json.token)).toBe(15);
    expect((await info(created.json.api_key)).balance).toBe(500);
  });

  it('refunds an msat key to the last msat, repeats that token on retry, and refuses unknown keys', async () => {
    const token = await mintToken(mintUrl, 1, 'msat');
    const created = await post('/v1/balance/create', { body: { initial_balance_token: token } });
    const r = await post('/v1/balance/refund', { headers: { authorization: `Bearer ${created.json.api_key}` } });
    expect(r.status).toBe(200);
    expect(r.json.msats).toBe('1');
    const retry = await post('/v1/balance/refund', { headers: { authorization: `Bearer ${created.json.api_key}` } });
    expect(retry.json.token).toBe(r.json.token);
    expect(await receive(mintUrl, r.json.token)).toBe(1);
    const none = await post('/v1/balance/refund', { headers: { authorization: `Bearer sk-${'1'.repeat(64)}` } });
    expect([none.status, none.json.error.code]).toEqual([401, 'invalid_api_key']);
    const res = await fetch(`${suite.gw.url}/v1/balance/info`);
    expect(res.status).toBe(401);
  });
});

describe('X-Cashu: pay per request', () => {
  it('returns change worth token minus cost in the X-Cashu header', async () => {
    const token = await mintToken(mintUrl, 50);
    const { data, response } = await client('unused')
      .chat.completions.create({ model: 'gpt-test', messages }, { headers: { 'X-Cashu': token } })
      .withResponse();
    const cost = (data.usage as BilledUsage).cost.total_msats as number;
    const change = response.headers.get('x-cashu')!;
    expect(change).toMatch(/^cashuB/);
    expect(await tokenValue(mintUrl, change)).toBe(Math.floor((50_000 - cost) / 1000));
    expect(await receive(mintUrl, change)).toBe(Math.floor((50_000 - cost) / 1000));
    // The msat remainder stays on the token's key.
    expect((await info(`sk-${sha256(token)}`)).balance).toBe((50_000 - cost) % 1000);
  });

  it('streams, puts the change in the final usage chunk, and hands the same change out again at /v1/balance/refund', async () => {
    const token = await mintToken(mintUrl, 40, 'sat');
    const stream = await client('unused').chat.completions.create(
      { model: 'gpt-test', messages, stream: true },
      { headers: { 'X-Cashu': token } },
    );
    let final: BilledChunk | undefined;
    for await (const chunk of stream) if (chunk.usage) final = chunk as BilledChunk;
    const cost = final!.usage.cost.total_msats as number;
    expect(cost).toBe(expectedCost('gpt-test', upstreamPromptTokens({ messages }), REPLY_WORDS.length).total);
    expect(await tokenValue(mintUrl, final!.x_cashu!)).toBe(Math.floor((40_000 - cost) / 1000));

    const again = await post('/v1/balance/refund', { headers: { 'x-cashu': token } });
    expect(again.status).toBe(200);
    expect(again.json.token).toBe(final!.x_cashu!);
    expect(await receive(mintUrl, final!.x_cashu!)).toBe(Math.floor((40_000 - cost) / 1000));
  });

  it('takes its own change back as payment', async () => {
    const token = await mintToken(mintUrl, 40);
    const first = await post('/v1/chat/completions', { headers: { 'x-cashu': token }, body: { model: 'gpt-test', messages, max_tokens: 1 } });
    const change = first.headers.get('x-cashu')!;
    const second = await post('/v1/chat/completions', { headers: { 'x-cashu': change }, body: { model: 'gpt-test', messages, max_tokens: 1 } });
    expect(second.status).toBe(200);
    const value = await tokenValue(mintUrl, change);
    expect(await tokenValue(mintUrl, second.headers.get('x-cashu')!)).toBe(Math.floor((value * 1000 - second.json.usage.cost.total_msats) / 1000));
    const third = await client(second.headers.get('x-cashu')!).chat.completions.create({ model: 'gpt-test', messages, max_tokens: 1 });
    expect((third.usage as BilledUsage).cost.total_msats).toBeGreaterThan(0);
  });

  it('refuses the same X-Cashu token once it has been used up', async () => {
    const token = await mintToken(mintUrl, 20, 'msat');
    const err = await apiError(
      client('unused').chat.completions.create({ model: 'gpt-test', messages, max_tokens: 1 }, { headers: { 'X-Cashu': token } }),
    );
    // 20 msats cannot cover the reservation: refused before the mint is asked. The X-Cashu
    // header of the answer is not a payment request, which a Routstr client would take for change.
    expect(err.status).toBe(402);
    expect(err.headers?.get('x-cashu')).toBeNull();
    expect(await proofStates(mintUrl, token)).toEqual(['UNSPENT', 'UNSPENT']);

    const big = await mintToken(mintUrl, 30);
    const oa = client('unused');
    const opts = { headers: { 'X-Cashu': big } };
    const { response } = await oa.chat.completions.create({ model: 'gpt-test', messages }, opts).withResponse();
    await receive(mintUrl, response.headers.get('x-cashu')!);
    const second = await expectUntouched(suite.gw, sha256(big), () => apiError(oa.chat.completions.create({ model: 'gpt-test', messages }, opts)));
    expect(second.status).toBe(402);
    expect(second.code).toBe('insufficient_balance');
  });
});

describe('errors: a clear code and nothing charged', () => {
  it('answers a request with no payment with 402 and a NUT-18 payment request', async () => {
    const before = await suite.gw.ledger.totals();
    const res = await post('/v1/chat/completions', { body: { model: 'gpt-test', messages } });
    expect(res.status).toBe(402);
    expect(res.json.error.code).toBe('payment_required');
    const pr = PaymentRequest.fromEncodedRequest(res.headers.get('x-cashu')!);
    expect(pr.unit).toBe('sat');
    expect(pr.mints).toEqual([mintUrl]);
    expect(pr.amount!.toNumber()).toBe(Math.ceil(res.json.error.amount_required_msats / 1000));
    expect(await suite.gw.ledger.totals()).toEqual(before);
  });

  it('gives each bad token its code and leaves the token with its owner', async () => {
    const before = await suite.gw.ledger.totals();
    const good = await mintToken(mintUrl, 10);
    const cases: Array<[string, number, string]> = [
      [await relabel(mintUrl, good, { mint: 'http://127.0.0.1:9/evil' }), 400, 'untrusted_mint'],
      [await relabel(mintUrl, good, { unit: 'usd' }), 400, 'unsupported_unit'],
      ['cashuBnot-a-token', 400, 'invalid_cashu_token'],
    ];
    for (const [token, status, code] of cases) {
      for (const headers of [{ authorization: `Bearer ${token}` }, { 'x-cashu': token }] as Record<string, string>[]) {
        const res = await post('/v1/chat/completions', { headers, body: { model: 'gpt-test', messages } });
        expect([res.status, res.json.error.code]).toEqual([status, code]);
      }
    }
    expect(await proofStates(mintUrl, good)).toEqual(['UNSPENT', 'UNSPENT']);
    expect(await suite.gw.ledger.totals()).toEqual(before);
  });

  it('refuses a token already spent elsewhere', async () => {
    const token = await mintToken(mintUrl, 8);
    await receive(mintUrl, token);
    const before = await suite.gw.ledger.totals();
    const err = await apiError(client(token).chat.completions.create({ model: 'gpt-test', messages, max_tokens: 1 }));
    expect([err.status, err.code]).toEqual([400, 'cashu_token_already_spent']);
    const x = await post('/v1/chat/completions', { headers: { 'x-cashu': token }, body: { model: 'gpt-test', messages, max_tokens: 1 } });
    expect([x.status, x.json.error.code]).toEqual([400, 'cashu_token_already_spent']);
    expect(await suite.gw.ledger.totals()).toEqual(before);
  });

  it('rejects unknown keys, unknown models and malformed bodies', async () => {
    const e1 = await apiError(client(`sk-${'0'.repeat(64)}`).chat.completions.create({ model: 'gpt-test', messages }));
    expect([e1.status, e1.code]).toEqual([401, 'invalid_api_key']);
    const e2 = await apiError(client('nonsense').chat.completions.create({ model: 'gpt-test', messages }));
    expect([e2.status, e2.code]).toEqual([401, 'invalid_api_key']);
    const token = await mintToken(mintUrl, 10);
    const e3 = await apiError(client(token).chat.completions.create({ model: 'no-such-model', messages }));
    expect([e3.status, e3.code]).toEqual([404, 'model_not_found']);
    const e4 = await post('/v1/chat/completions', { headers: { authorization: `Bearer ${token}` }, body: { model: 'gpt-test' } });
    expect([e4.status, e4.json.error.code]).toEqual([400, 'invalid_request']);
    const raw = await fetch(`${suite.gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' });
    expect(raw.status).toBe(400);
    expect(((await raw.json()) as WireError).error.code).toBe('invalid_json');
    expect(await proofStates(mintUrl, token)).toEqual(['UNSPENT', 'UNSPENT']);
  });

  it('charges nothing when the upstream fails, and gives an X-Cashu payer everything back', async () => {
    const token = await mintToken(mintUrl, 30);
    const oa = client(token);
    await oa.chat.completions.create({ model: 'gpt-test', messages, max_tokens: 1 });
    const before = await info(token);
    upstream.modes.push('fail_500');
    const e1 = await apiError(oa.chat.completions.create({ model: 'gpt-test', messages }));
    expect([e1.status, e1.code]).toEqual([502, 'upstream_error']);
    upstream.modes.push('fail_400');
    const e2 = await apiError(oa.chat.completions.create({ model: 'gpt-test', messages }));
    expect(e2.status).toBe(400);
    expect(e2.message).toContain("Unsupported parameter: 'foo'");
    const after = await info(token);
    expect([after.balance, after.reserved, after.total_spent]).toEqual([before.balance, before.reserved, before.total_spent]);

    const x = await mintToken(mintUrl, 25);
    upstream.modes.push('fail_500');
    const res = await post('/v1/chat/completions', { headers: { 'x-cashu': x }, body: { model: 'gpt-test', messages } });
    expect(res.status).toBe(502);
    expect(res.json.error.refund_token).toBe(res.headers.get('x-cashu'));
    expect(await receive(mintUrl, res.json.error.refund_token)).toBe(25);
    // All 25 sats went back: the one-shot key is empty, nothing charged, nothing held.
    const k = (await suite.gw.ledger.getKey(sha256(x)))!;
    expect([k.balance, k.reserved, k.totalSpent]).toEqual([0, 0, 0]);
  });

  it('holds the upstream to the reserved completion limit, and reserves for tools and every choice', async () => {
    const token = await mintToken(mintUrl, 40);
    const oa = client(token);
    await oa.chat.completions.create({ model: 'gpt-test', messages });
    expect(upstream.requests.at(-1)!.body.max_tokens).toBe(4096);
    await oa.chat.completions.create({ model: 'gpt-test', messages, max_tokens: 999_999 });
    expect(upstream.requests.at(-1)!.body.max_tokens).toBe(4096);
    await oa.chat.completions.create({ model: 'gpt-test', messages, max_completion_tokens: 7 });
    expect(upstream.requests.at(-1)!.body).toMatchObject({ max_completion_tokens: 7 });
    expect(upstream.requests.at(-1)!.body.max_tokens).toBeUndefined();

    // 40 sats covers one choice of 1000 tokens at 5 msats, not eight of them.
    const one = { model: 'gpt-test', messages, max_tokens: 1000 };
    expect((await post('/v1/chat/completions', { headers: { authorization: `Bearer ${token}` }, body: one })).status).toBe(200);
    const eight = await expectUntouched(suite.gw, sha256(token), () => post('/v1/chat/completions', { headers: { authorization: `Bearer ${token}` }, body: { ...one, n: 8 } }));
    expect([eight.status, eight.json.error.code]).toEqual([402, 'insufficient_balance']);
    const tools = [{ type: 'function', function: { name: 'f', description: 'x '.repeat(20_000), parameters: {} } }];
    const withTools = await expectUntouched(suite.gw, sha256(token), () =>
      post('/v1/chat/completions', {
        headers: { authorization: `Bearer ${token}` },
        body: { ...one, max_tokens: 1, tools },
      }),
    );
    expect(withTools.status).toBe(402);
    expect(withTools.json.error.amount_required_msats).toBeGreaterThan(20_000 * 2);
  });

  it('bills a response without usage from its own token count, never for free', async () => {
    const token = await mintToken(mintUrl, 30);
    upstream.modes.push('no_usage');
    const res = await client(token).chat.completions.create({ model: 'gpt-test', messages });
    const cost = (res.usage as BilledUsage).cost;
    expect(cost.input_msats).toBeGreaterThan(0);
    expect(cost.output_msats).toBe(msats(res.usage!.completion_tokens, 5));
    expect(res.usage!.completion_tokens).toBeGreaterThan(0);
    upstream.modes.push('no_usage');
    const stream = await client(token).chat.completions.create({ model: 'gpt-test', messages, stream: true });
    let final: BilledChunk | undefined;
    for await (const chunk of stream) if (chunk.usage) final = chunk as BilledChunk;
    expect(final!.usage.completion_tokens).toBe(res.usage!.completion_tokens);
    expect(final!.usage.cost.total_msats).toBe(cost.total_msats);
    expect((await info(token)).balance).toBe(30_000 - 2 * cost.total_msats);
  });
});
