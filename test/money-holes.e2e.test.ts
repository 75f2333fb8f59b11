import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { HIDDEN_REASONING_TOKENS, INJECTED, REASONING_DELTAS, REPLY_WORDS, upstreamPromptTokens } from './support/upstream.ts';
import { PRICES, msats } from './support/gateway.ts';
import { mintToken, proofStates } from './support/cashu.ts';
import { chat, expectUntouched, fundedKey, settledSpend as settled, useGateway } from './support/suite.ts';

/**
 * What a hostile review found on the HTTP door: ways to get paid work nearly free, to make the
 * operator pay a provider for nothing, and to stall the process without paying.
 */
let logged = '';
const UPSTREAM_KEY = 'sk-upstream-0123456789abcdefSECRET';
const sink = new Writable({
  write(chunk, _enc, cb) {
    logged += chunk.toString();
    cb();
  },
});
const suite = useGateway({
  env: {
    UPSTREAM_API_KEY: UPSTREAM_KEY,
    // Models that bill an image far above the usual allowance: some known by their id, one the operator sets.
    MODEL_PRICES: JSON.stringify({
      ...PRICES,
      'openai/gpt-4o-mini': { prompt: 1, completion: 1 },
      'Qwen/Qwen2.5-VL-72B-Instruct': { prompt: 1, completion: 1 },
      'mistralai/pixtral-12b': { prompt: 1, completion: 1 },
      'vision-x': { prompt: 1, completion: 1, image_tokens: 9000 },
    }),
  },
  log: pino({ level: 'info' }, sink),
  reset: () => {
    upstream.modes.length = 0;
    upstream.answerDelayMs = 0;
    upstream.usageDelayMs = 0;
    upstream.markPastUsage = false;
    upstream.servedModel = undefined;
  },
});
const { upstream, mintUrl } = suite;

const price = PRICES['gpt-test'];

/** A fresh key holding `sats`: its API key, and its hash for the ledger. */
async function newKey(sats: number): Promise<{ key: string; hash: string }> {
  const { key, hash } = await fundedKey(suite.gw, mintUrl, sats);
  return { key, hash };
}

const settledSpend = (hash: string) => settled(suite.gw, hash);

/** POSTs a chat completion with `body` as the API key's holder. */
function post(key: string, body: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${suite.gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body, ...init });
}

/** Reads a stream until its text holds `marker` (or it ends), and leaves the rest unread. */
async function readUntil(res: Response, marker: string): Promise<string> {
  const reader = res.body!.getReader();
  let text = '';
  while (!text.includes(marker)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  return text;
}

function chatBody(extra: Record<string, unknown> = {}) {
  return JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Think hard, then answer.' }], ...extra });
}

describe('1. a client that leaves is billed for the work done', () => {
  it('a stream left after the answer and before the usage is billed that usage, reasoning it never showed included', async () => {
    const { key, hash } = await newKey(200);
    upstream.modes.push('reasoning');
    upstream.usageDelayMs = 400;
    const ac = new AbortController();
    const res = await post(key, chatBody({ stream: true }), { signal: ac.signal });
    // Read until the answer's last word has arrived, then leave before the usage chunk comes.
    await readUntil(res, '"finish_reason":"stop"');
    ac.abort();
    const spent = await settledSpend(hash);
    // The upstream had nothing left to generate: the gateway read on for its usage.
    const u = upstream.reported.at(-1)!;
    expect(u.completion_tokens).toBe(REASONING_DELTAS + HIDDEN_REASONING_TOKENS + REPLY_WORDS.length);
    expect(spent).toBe(msats(u.prompt_tokens as number, price.prompt) + msats(u.completion_tokens as number, price.completion));
  });

  it('a stream whose usage already arrived is billed that usage, even though the client left before the end', async () => {
    const { key, hash } = await newKey(200);
    upstream.modes.push('reasoning');
    upstream.answerDelayMs = 400;
    upstream.markPastUsage = true;
    const ac = new AbortController();
    const res = await post(key, chatBody({ stream: true }), { signal: ac.signal });
    // The gateway holds the usage chunk back, but passes on the one after it: once that is here,
    // the gateway has read the usage (the stream is read in order), and [DONE] is still to come.
    const text = await readUntil(res, '"past_usage":true');
    expect(text).not.toContain('[DONE]');
    ac.abort();
    const u = upstream.reported.at(-1)!;
    const expected = msats(u.prompt_tokens as number, price.prompt) + msats(u.completion_tokens as number, price.completion);
    expect(u.completion_tokens).toBe(REASONING_DELTAS + HIDDEN_REASONING_TOKENS + REPLY_WORDS.length);
    expect(await settledSpend(hash)).toBe(expected);
  });

  it('a non-streamed request left before the answer still pays for the answer the upstream made', async () => {
    const { key, hash } = await newKey(200);
    upstream.answerDelayMs = 400;
    const body = { model: 'gpt-test', messages: [{ role: 'user', content: 'A long question '.repeat(2000) }], max_tokens: 10 };
    await post(key, JSON.stringify(body), { signal: AbortSignal.timeout(200) }).catch(() => undefined);
    const spent = await settledSpend(hash);
    const prompt = upstreamPromptTokens(upstream.requests.at(-1)!.body);
    expect(spent).toBe(msats(prompt, price.prompt) + msats(REPLY_WORDS.length, price.completion));
  });
});

describe('2. no unpaid work before payment', () => {
  it('answers 413 for a prompt larger than the model could ever take, charging nothing', async () => {
    const { key, hash } = await newKey(50);
    const res = await expectUntouched(suite.gw, hash, () => post(key, JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'x '.repeat(600_000) }] })));
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('prompt_too_large');
  });
});

describe('3. every limit the upstream honours is clamped', () => {
  it('holds both OpenAI fields and the aliases of llama.cpp, TGI and Ollama to the reserved limit', async () => {
    const { key } = await newKey(100);
    const res = await post(key, chatBody({ max_tokens: 100_000, max_completion_tokens: 1, n_predict: -1, max_new_tokens: 50_000, options: { num_predict: -1, temperature: 0 } }));
    expect(res.status).toBe(200);
    const sent = upstream.requests.at(-1)!.body;
    expect(sent.max_tokens).toBe(1);
    expect(sent.max_completion_tokens).toBe(1);
    expect(sent.n_predict).toBe(1);
    expect(sent.max_new_tokens).toBe(1);
    expect(sent.options).toEqual({ num_predict: 1, temperature: 0 });
  });
});

describe('4. media is counted by its type', () => {
  it('reserves every image part, whatever keys it carries: a 1-sat X-Cashu is refused, unspent, nothing booked', async () => {
    const image = { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' }, text: '' };
    const token = await mintToken(mintUrl, 1);
    const before = await suite.gw.ledger.totals();
    const res = await chat(suite.gw, { 'x-cashu': token }, { max_tokens: 1, messages: [{ role: 'user', content: [{ type: 'text', text: 'Describe.' }, ...Array(50).fill(image)] }] });
    expect(res.status).toBe(402);
    const required = ((await res.json()) as { error: { amount_required_msats: number } }).error.amount_required_msats;
    // A high-detail image is billed up to ~1,600 tokens by the providers we serve.
    expect(required).toBeGreaterThanOrEqual(50 * 1600 * price.prompt);
    expect(await proofStates(mintUrl, token)).toEqual(['UNSPENT']);
    expect(await suite.gw.ledger.totals()).toEqual(before);
  });
});

describe('4a. a body nested deeper than the stack', () => {
  it('is refused 400 invalid_request in the door\'s shape, charging nothing, on every door', async () => {
    const deep = `${'['.repeat(60_000)}${']'.repeat(60_000)}`;
    const { key, hash } = await newKey(50);
    const before = await suite.gw.ledger.totals();
    const bodies: Array<[string, string]> = [
      ['/v1/chat/completions', `{"model":"gpt-test","messages":[{"role":"user","content":[${deep}]}]}`],
      ['/v1/messages', `{"model":"gpt-test","max_tokens":8,"messages":[{"role":"user","content":[{"type":"text","text":"x"},${deep}]}]}`],
      ['/v1/responses', `{"model":"gpt-test","input":[${deep}]}`],
      // In a field no format reads: only serializing it for the upstream finds the depth.
      ['/v1/chat/completions', `{"model":"gpt-test","messages":[{"role":"user","content":"Hi"}],"metadata_x":[${deep}]}`],
    ];
    for (const [path, body] of bodies) {
      const res = await fetch(`${suite.gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body });
      const json = (await res.json()) as { error: { code?: string; type?: string } };
      expect([path, res.status]).toEqual([path, 400]);
      expect(JSON.stringify(json)).toMatch(/invalid_request/);
    }
    expect(await suite.gw.ledger.totals()).toEqual(before);
    expect((await suite.gw.ledger.getKey(hash))!.balance).toBe(50_000);
  });
});

describe('4b. an image is reserved at what its model may bill for it', () => {
  for (const [model, perImage] of [
    ['openai/gpt-4o-mini', 2833 + 5667 * 8],
    // Open vision models bill an image in the thousands of tokens (Qwen2.5-VL up to 16,384).
    ['Qwen/Qwen2.5-VL-72B-Instruct', 16384],
    ['mistralai/pixtral-12b', 4160],
    ['vision-x', 9000],
    ['gpt-test', 1600],
  ] as const) {
    it(`names ${perImage} tokens an image for ${model}: a token short of that is refused, unspent, nothing booked`, async () => {
      const image = { type: 'image_url', image_url: { url: 'https://example.com/a.png', detail: 'high' } };
      const body = { model, max_tokens: 1, messages: [{ role: 'user', content: [{ type: 'text', text: 'Describe.' }, image, image] }] };
      const token = await mintToken(mintUrl, 2);
      const before = await suite.gw.ledger.totals();
      const res = await chat(suite.gw, { 'x-cashu': token }, body);
      expect(res.status).toBe(402);
      const required = ((await res.json()) as { error: { amount_required_msats: number } }).error.amount_required_msats;
      const rate = model === 'gpt-test' ? price.prompt : 1;
      expect(required).toBeGreaterThanOrEqual(2 * perImage * rate);
      // Not much above it either: the two images are most of the price.
      expect(required).toBeLessThan(2 * perImage * rate * 1.1 + 200 * rate);
      expect(await proofStates(mintUrl, token)).toEqual(['UNSPENT']);
      expect(await suite.gw.ledger.totals()).toEqual(before);
    });
  }
});

describe('5. cost-bearing fields the gateway does not price are not forwarded', () => {
  for (const [field, value] of [
    ['models', ['gpt-test', 'gpt-expensive']],
    ['plugins', [{ id: 'web' }]],
    ['web_search_options', {}],
    ['prediction', { type: 'content', content: 'x' }],
    ['min_tokens', 100],
    ['ignore_eos', true],
    ['best_of', 5],
    ['route', 'fallback'],
  ] as const) {
    it(`refuses ${field} with 400 unpriced_parameter, charging nothing`, async () => {
      const { key, hash } = await newKey(50);
      const calls = upstream.requests.length;
      const res = await expectUntouched(suite.gw, hash, () => post(key, chatBody({ [field]: value })));
      expect(res.status).toBe(400);
      const err = ((await res.json()) as { error: { code: string; param?: string } }).error;
      expect(err.code).toBe('unpriced_parameter');
      expect(err.param).toBe(field);
      expect(upstream.requests.length).toBe(calls);
    });
  }

  it('bills at the higher price when the upstream says it served another model than the one priced', async () => {
    const { key, hash } = await newKey(100);
    upstream.servedModel = 'gpt-test';
    const res = await post(key, JSON.stringify({ model: 'gpt-cheap', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 10 }));
    expect(res.status).toBe(200);
    const u = upstream.reported.at(-1)!;
    const atTestPrice = msats(u.prompt_tokens as number, price.prompt) + msats(u.completion_tokens as number, price.completion);
    expect(await settledSpend(hash)).toBe(atTestPrice);
    expect(logged).toContain('served another model');
  });
});

describe('6. upstream error text never carries secrets', () => {
  it('passes on no part of the operator key from a 500, to the client or the log, and charges nothing', async () => {
    const { key, hash } = await newKey(50);
    upstream.modes.push('fail_500_echo_key');
    const res = await expectUntouched(suite.gw, hash, () => post(key, chatBody()), { reached: true });
    expect(res.status).toBe(502);
    const text = await res.text();
    expect(upstream.authorizations.at(-1)).toBe(`Bearer ${UPSTREAM_KEY}`);
    expect(text).not.toContain('0123456789abcdef');
    expect(logged).not.toContain('0123456789abcdef');
    expect(JSON.parse(text).error.code).toBe('upstream_error');
    // The failed request's reservation was released once, by the engine, not again by the door.
    expect(logged).not.toContain('could not release');
  });
});

describe('also tried', () => {
  it('relays content that looks like SSE events as text, and bills the real usage', async () => {
    const { key, hash } = await newKey(100);
    upstream.modes.push('inject');
    const res = await post(key, chatBody({ stream: true }));
    const events = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: {'));
    const chunks = events.map((e) => JSON.parse(e.slice(6)) as { choices: Array<{ delta?: { content?: string } }>; usage?: { cost: { total_msats: number } } });
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    expect(text.startsWith(INJECTED)).toBe(true);
    const u = upstream.reported.at(-1)!;
    const expected = msats(u.prompt_tokens as number, price.prompt) + msats(u.completion_tokens as number, price.completion);
    expect(chunks.at(-1)!.usage!.cost.total_msats).toBe(expected);
    expect(await settledSpend(hash)).toBe(expected);
  });

  it('refuses a 40 MB answer with a 502 and charges nothing', async () => {
    const { key, hash } = await newKey(100);
    upstream.modes.push('huge');
    const res = await expectUntouched(suite.gw, hash, () => post(key, chatBody()), { reached: true });
    expect(res.status).toBe(502);
  });

  it('answers a body that is not JSON, or not UTF-8, with a 400 and charges nothing', async () => {
    const { key, hash } = await newKey(100);
    for (const body of [Buffer.from('{"model": "gpt-test", '), Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]) {
      const res = await expectUntouched(suite.gw, hash, () => fetch(`${suite.gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body }));
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    }
  });
});
