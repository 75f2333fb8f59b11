import { describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import OpenAI, { APIError } from 'openai';
import { FakeUpstream, REPLY_WORDS, upstreamPromptTokens } from './support/upstream.ts';
import { FakeResponsesUpstream, responsesInputTokens } from './support/responses-upstream.ts';
import { mintToken, proofStates, tokenValue } from './support/cashu.ts';
import { settledSpend, useGateway } from './support/suite.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import type { WireCost } from './support/wire.ts';

/**
 * The OpenAI Responses API (Codex, the newer OpenAI SDKs) paid with Cashu: served natively by a
 * Responses upstream and translated to a chat-completions upstream, priced to the cached token.
 */
const chatUpstream = new FakeUpstream();
const resp = new FakeResponsesUpstream();

const RESP = { prompt: 2, completion: 8, cached: 0.5 };
const GPT = { prompt: 2, completion: 5 };

const suite = useGateway({
  upstream: chatUpstream,
  doubles: [resp],
  upstreams: [
    { name: 'responses', kind: 'openai-responses', upstream: resp, models: ['gpt-resp'], prices: { 'gpt-resp': RESP } },
    { name: 'chat', upstream: chatUpstream, models: ['gpt-test'], prices: { 'gpt-test': GPT } },
  ],
  reset: () => {
    resp.cachedTokens = 0;
    resp.reasoningTokens = 0;
    resp.finalDelayMs = 0;
  },
});
const { mintUrl } = suite;

const ceil = (tokens: number, msatsPerToken: number) => Math.ceil((tokens * Math.round(msatsPerToken * 1e6)) / 1e6);
const client = (apiKey: string, headers: Record<string, string> = {}) => new OpenAI({ baseURL: `${suite.gw.url}/v1`, apiKey, maxRetries: 0, defaultHeaders: headers });
/** The charge the gateway adds to a usage object the SDK types without it. */
type Costed = { cost: WireCost };

describe('POST /v1/responses to a Responses upstream', () => {
  it('answers responses.create, storing nothing upstream, and bills cached input to the msat', async () => {
    const token = await mintToken(mintUrl, 200);
    resp.cachedTokens = 20;
    const res = await client(token).responses.create({ model: 'gpt-resp', instructions: 'Be brief.', input: 'What is six times seven? '.repeat(10), max_output_tokens: 64 });
    expect(res.output_text).toBe(REPLY_WORDS.join(' '));
    const sent = resp.requests.at(-1)!.body;
    // Every payer shares the operator's account upstream: nothing is stored there.
    expect(sent.store).toBe(false);
    const u = res.usage!;
    expect(u.input_tokens_details.cached_tokens).toBe(20);
    const input = ceil(u.input_tokens - 20, RESP.prompt) + ceil(20, RESP.cached);
    const output = ceil(u.output_tokens, RESP.completion);
    expect((u as unknown as Costed).cost).toMatchObject({ input_msats: input, output_msats: output, total_msats: input + output });
    expect((await suite.gw.ledger.getKey(sha256Hex(token)))!.totalSpent).toBe(input + output);
  });

  it('streams to responses.stream, the completed event carrying the usage and the charge', async () => {
    const token = await mintToken(mintUrl, 200);
    const stream = client(token).responses.stream({ model: 'gpt-resp', input: 'Count.', max_output_tokens: 64 });
    let text = '';
    stream.on('response.output_text.delta', (e) => (text += e.delta));
    const final = await stream.finalResponse();
    expect(text).toBe(REPLY_WORDS.join(' '));
    const u = final.usage!;
    expect((u as unknown as Costed).cost.total_msats).toBe(ceil(u.input_tokens, RESP.prompt) + ceil(u.output_tokens, RESP.completion));
  });

  it('refuses a stored conversation (another payer could read it) with a 400, charging nothing', async () => {
    const token = await mintToken(mintUrl, 200);
    const err = await client(token)
      .responses.create({ model: 'gpt-resp', input: 'And then?', previous_response_id: 'resp_somebody_elses', max_output_tokens: 64 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect([(err as APIError).status, (err as APIError).code]).toEqual([400, 'stateful_not_supported']);
    expect(await suite.gw.ledger.getKey(sha256Hex(token))).toBeUndefined();
  });
});

describe('what the gateway cannot count is reserved as filling the context', () => {
  const post = (body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${suite.gw.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  /** The least a whole-context reservation of gpt-resp costs with 64 output tokens. */
  async function wholeContextMsats(): Promise<number> {
    const models = (await (await fetch(`${suite.gw.url}/v1/models`)).json()) as { data: Array<{ id: string; context_length: number }> };
    const ctx = models.data.find((m) => m.id === 'gpt-resp')!.context_length;
    return ceil(ctx - 64, RESP.prompt) + ceil(64, RESP.completion);
  }

  it('a file by URL, which the upstream fetches and bills whole: a token worth a page is refused unspent', async () => {
    const body = {
      model: 'gpt-resp',
      input: [{ role: 'user', content: [{ type: 'input_text', text: 'Summarise.' }, { type: 'input_file', file_url: 'https://example.com/250k-tokens.pdf' }] }],
      max_output_tokens: 64,
    };
    const whole = await wholeContextMsats();
    const sent = resp.requests.length;
    // A stranger is named the whole price, not a page's.
    const unpaid = await post(body);
    expect(unpaid.status).toBe(402);
    expect(((await unpaid.json()) as { error: { amount_required_msats: number } }).error.amount_required_msats).toBeGreaterThanOrEqual(whole);
    // 20 sats covered the one page the file was reserved at before.
    const token = await mintToken(mintUrl, 20);
    const res = await post(body, { 'x-cashu': token });
    const json = (await res.json()) as { error: { code: string; amount_required_msats: number } };
    expect([res.status, json.error?.code]).toEqual([402, 'insufficient_balance']);
    expect(json.error.amount_required_msats).toBeGreaterThanOrEqual(whole);
    expect(new Set(await proofStates(mintUrl, token))).toEqual(new Set(['UNSPENT']));
    expect(resp.requests.length).toBe(sent);
  });

  it('an item_reference (a stored item another payer could read) is refused with a 400, charging nothing', async () => {
    const token = await mintToken(mintUrl, 200);
    const sent = resp.requests.length;
    const err = await client(token)
      .responses.create({ model: 'gpt-resp', input: [{ role: 'user', content: 'Again:' }, { type: 'item_reference', id: 'msg_somebody_elses' }], max_output_tokens: 64 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect([(err as APIError).status, (err as APIError).code, (err as APIError).param]).toEqual([400, 'stateful_not_supported', 'input.1']);
    expect(await suite.gw.ledger.getKey(sha256Hex(token))).toBeUndefined();
    expect(resp.requests.length).toBe(sent);
  });
});

describe('translated between Responses and chat completions', () => {
  it('serves responses.create from a chat upstream: instructions, an image, the charge, X-Cashu change', async () => {
    const token = await mintToken(mintUrl, 200);
    const { data, response } = await client('unused', { 'x-cashu': token })
      .responses.create({
        model: 'gpt-test',
        instructions: 'Be brief.',
        input: [{ role: 'user', content: [{ type: 'input_text', text: 'Describe.' }, { type: 'input_image', image_url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'low' }] }],
        max_output_tokens: 20,
      })
      .withResponse();
    expect(data.output_text).toBe(REPLY_WORDS.join(' '));
    const sent = chatUpstream.requests.at(-1)!;
    expect(sent.path).toBe('/chat/completions');
    expect(sent.body.messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: [{ type: 'text', text: 'Describe.' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'low' } }] },
    ]);
    const total = ceil(upstreamPromptTokens(sent.body), GPT.prompt) + ceil(REPLY_WORDS.length, GPT.completion);
    expect((data.usage as unknown as Costed).cost.total_msats).toBe(total);
    expect(await tokenValue(mintUrl, response.headers.get('x-cashu')!)).toBe(Math.floor((200_000 - total) / 1000));
  });

  it('streams a chat upstream as Responses events to the SDK', async () => {
    const token = await mintToken(mintUrl, 200);
    const stream = client(token).responses.stream({ model: 'gpt-test', input: 'Hi', max_output_tokens: 20 });
    const final = await stream.finalResponse();
    expect(final.output_text).toBe(REPLY_WORDS.join(' '));
    const sent = chatUpstream.requests.at(-1)!;
    expect(sent.body.stream).toBe(true);
    const total = ceil(upstreamPromptTokens(sent.body), GPT.prompt) + ceil(REPLY_WORDS.length, GPT.completion);
    expect((final.usage as unknown as Costed).cost.total_msats).toBe(total);
  });
});

describe('a client that leaves a Responses stream before its final usage', () => {
  it('while the model reasons unseen, the upstream is read to its end and the reasoning billed', async () => {
    const token = await mintToken(mintUrl, 500);
    resp.replies.push({ summary: 'Thinking about it.', text: REPLY_WORDS.join(' ') });
    resp.reasoningTokens = 3_000;
    resp.finalDelayMs = 400;
    const early = resp.closedEarly;
    const ac = new AbortController();
    const res = await fetch(`${suite.gw.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ model: 'gpt-resp', input: 'Think, then answer.', stream: true, max_output_tokens: 4_000 }),
      signal: ac.signal,
    });
    // The whole answer is in; leave before response.completed, which alone reports the reasoning.
    const reader = res.body!.getReader();
    for (let text = ''; !text.includes('response.output_text.done'); ) {
      const { value, done } = await reader.read();
      if (done) throw new Error('the stream ended early');
      text += new TextDecoder().decode(value);
    }
    ac.abort();
    const spent = await settledSpend(suite.gw, sha256Hex(token));
    const input = responsesInputTokens(resp.requests.at(-1)!.body);
    expect(spent).toBe(ceil(input, RESP.prompt) + ceil(3_000 + REPLY_WORDS.length, RESP.completion));
    expect(resp.closedEarly).toBe(early);
  });

  it('a client that stops reading and then hangs up still pays the whole usage: leaving is not an upstream failure', async () => {
    const token = await mintToken(mintUrl, 500);
    // Long enough that the gateway waits for the client's socket to drain.
    const words = Array.from({ length: 1_000 }, (_, i) => `${i}${'w'.repeat(3_000)}`);
    resp.replies.push({ summary: 'Thinking about it.', text: words.join(' ') });
    resp.reasoningTokens = 1_000;
    const body = JSON.stringify({ model: 'gpt-resp', input: 'Think, then write a lot.', stream: true, max_output_tokens: 4_000 });
    const url = new URL(suite.gw.url);
    const socket = connect(Number(url.port), url.hostname);
    socket.write(`POST /v1/responses HTTP/1.1\r\nhost: ${url.host}\r\nauthorization: Bearer ${token}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    let read = 0;
    await new Promise<void>((resolve) => {
      socket.on('data', (c: Buffer) => {
        read += c.length;
        if (read > 300_000) {
          socket.pause();
          resolve();
        }
      });
    });
    await new Promise((r) => setTimeout(r, 1_500));
    socket.destroy();
    const spent = await settledSpend(suite.gw, sha256Hex(token));
    const input = responsesInputTokens(resp.requests.at(-1)!.body);
    expect(spent).toBe(ceil(input, RESP.prompt) + ceil(1_000 + words.length, RESP.completion));
  });
});
