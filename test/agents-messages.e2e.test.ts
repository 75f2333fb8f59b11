import { describe, expect, it } from 'vitest';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { FakeUpstream, REPLY_WORDS, upstreamPromptTokens } from './support/upstream.ts';
import { ANTHROPIC_KEY, FakeAnthropic, THINKING, TOOL_INPUT } from './support/anthropic-upstream.ts';
import { mintToken, proofStates, tokenValue } from './support/cashu.ts';
import { settledSpend as settled, useGateway, waitFor } from './support/suite.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import type { WireCost } from './support/wire.ts';

/**
 * Anthropic Messages (Claude Code, the Anthropic SDKs) paid with Cashu: served natively by an
 * Anthropic upstream and translated to a chat-completions upstream, priced to the cached token.
 */
const chatUpstream = new FakeUpstream();
const claude = new FakeAnthropic();

// msats per token.
const CLAUDE = { prompt: 3, completion: 15, cached: 0.3, write: 3.75 };
const GPT = { prompt: 2, completion: 5 };

const suite = useGateway({
  upstream: chatUpstream,
  doubles: [claude],
  upstreams: [
    { name: 'claude', kind: 'anthropic', upstream: claude, api_key: ANTHROPIC_KEY, models: ['claude-test'], prices: { 'claude-test': CLAUDE } },
    { name: 'chat', upstream: chatUpstream, models: ['gpt-test'], prices: { 'gpt-test': GPT } },
  ],
  reset: () => {
    claude.cache = { read: 0, write: 0 };
    claude.modes.length = 0;
    claude.finalDelayMs = 0;
    claude.summarizedThinkingTokens = 0;
  },
});
const { mintUrl } = suite;

/** The charge the gateway adds to a usage object the SDKs type without it. */
type Costed = { cost: WireCost };
const ceil = (tokens: number, msatsPerToken: number) => Math.ceil((tokens * Math.round(msatsPerToken * 1e6)) / 1e6);
const anthropic = (apiKey: string) => new Anthropic({ baseURL: suite.gw.url, apiKey, maxRetries: 0 });

describe('a document the gateway cannot see is reserved as filling the context', () => {
  it('a PDF by URL, which Anthropic fetches and bills whole: a token worth a page is refused unspent, in Anthropic\'s shape', async () => {
    const models = (await (await fetch(`${suite.gw.url}/v1/models`)).json()) as { data: Array<{ id: string; context_length: number }> };
    const ctx = models.data.find((m) => m.id === 'claude-test')!.context_length;
    // 30 sats covered the one page the document was reserved at before.
    const token = await mintToken(mintUrl, 30);
    const sent = claude.requests.length;
    const res = await fetch(`${suite.gw.url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-cashu': token, 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({
        model: 'claude-test',
        max_tokens: 64,
        messages: [{ role: 'user', content: [{ type: 'document', source: { type: 'url', url: 'https://example.com/250k-tokens.pdf' } }, { type: 'text', text: 'Summarise.' }] }],
      }),
    });
    const json = (await res.json()) as { type: string; error: { type: string; amount_required_msats?: number } };
    expect(res.status).toBe(402);
    expect(json.type).toBe('error');
    expect(json.error.amount_required_msats).toBeGreaterThanOrEqual(ceil(ctx - 64, CLAUDE.prompt) + ceil(64, CLAUDE.completion));
    expect(new Set(await proofStates(mintUrl, token))).toEqual(new Set(['UNSPENT']));
    expect(claude.requests.length).toBe(sent);
  });
});

describe('POST /v1/messages to an Anthropic upstream', () => {
  it('answers the official SDK paid with a Cashu token, billing cache reads and writes to the msat', async () => {
    const token = await mintToken(mintUrl, 200);
    claude.cache = { read: 40, write: 12 };
    const msg = await anthropic(token).messages.create({
      model: 'claude-test',
      max_tokens: 64,
      system: [{ type: 'text', text: 'You are terse. '.repeat(20), cache_control: { type: 'ephemeral' } }],
      messages: [{ role: 'user', content: 'What is six times seven? '.repeat(30) }],
    });
    expect(msg.content).toEqual([{ type: 'text', text: REPLY_WORDS.join(' '), citations: null }]);
    // What the upstream was sent: our key and version, never the client's token.
    const sent = claude.requests.at(-1)!;
    expect(sent.headers.apiKey).toBe(ANTHROPIC_KEY);
    expect(sent.headers.version).toBe('2023-06-01');
    // Hand-computed from what the double reported: input excludes cache reads and writes.
    const prompt = upstreamPromptTokens(sent.body);
    expect(msg.usage).toMatchObject({ input_tokens: prompt - 52, cache_read_input_tokens: 40, cache_creation_input_tokens: 12, output_tokens: REPLY_WORDS.length });
    const input = ceil(prompt - 52, CLAUDE.prompt) + ceil(40, CLAUDE.cached) + ceil(12, CLAUDE.write);
    const output = ceil(REPLY_WORDS.length, CLAUDE.completion);
    expect((msg.usage as unknown as Costed).cost).toMatchObject({ input_msats: input, output_msats: output, total_msats: input + output });
    const key = await suite.gw.ledger.getKey(sha256Hex(token));
    expect(key!.totalSpent).toBe(input + output);
  });

  for (const stream of [false, true]) {
    it(`bills writes to the 1-hour cache at twice the prompt price, reserving for them (${stream ? 'streamed' : 'whole'})`, async () => {
      const body = {
        model: 'claude-test',
        max_tokens: 64,
        stream,
        messages: [{ role: 'user', content: [
          { type: 'text', text: 'The same long context. '.repeat(1500), cache_control: { type: 'ephemeral', ttl: '1h' } },
          { type: 'text', text: 'What is six times seven?' },
        ] }],
      };
      // A token that covers the worst case of 5-minute writes but not of 1-hour ones is refused.
      const prompt = upstreamPromptTokens(body);
      claude.cache = { read: 0, write: prompt - 20 };
      const post = (token: string) => fetch(`${suite.gw.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': token, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const short = await mintToken(mintUrl, Math.ceil((prompt * 1.1 * CLAUDE.write + 64 * CLAUDE.completion) / 1000) + 2);
      expect((await post(short)).status).toBe(402);
      const token = await mintToken(mintUrl, 200);
      const res = await post(token);
      expect(res.status).toBe(200);
      const text = await res.text();
      // What the double reported for what it was sent: the writes, and the rest plain.
      const sent = upstreamPromptTokens(claude.requests.at(-1)!.body);
      const written = Math.min(prompt - 20, sent);
      // Anthropic bills a 1-hour write at 2x base input (6 msats here), not the 5-minute 1.25x.
      const input = ceil(sent - written, CLAUDE.prompt) + ceil(written, 2 * CLAUDE.prompt);
      const output = ceil(REPLY_WORDS.length, CLAUDE.completion);
      expect(text).toContain(`"total_msats":${input + output}`);
      const key = await suite.gw.ledger.getKey(sha256Hex(token));
      expect(key!.totalSpent).toBe(input + output);
    });
  }

  it('streams to the SDK, the final message_delta carrying the usage and the charge', async () => {
    const token = await mintToken(mintUrl, 200);
    const stream = anthropic(token).messages.stream({ model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'Count.' }] });
    let text = '';
    let charged: number | undefined;
    stream.on('text', (t) => (text += t));
    stream.on('streamEvent', (e) => {
      // The SDK keeps only Anthropic's own usage fields in its snapshot; the charge rides in the raw event.
      if (e.type === 'message_delta') charged = (e.usage as unknown as Costed).cost.total_msats;
    });
    const final = await stream.finalMessage();
    expect(text).toBe(REPLY_WORDS.join(' '));
    expect(final.stop_reason).toBe('end_turn');
    const prompt = upstreamPromptTokens(claude.requests.at(-1)!.body);
    const total = ceil(prompt, CLAUDE.prompt) + ceil(REPLY_WORDS.length, CLAUDE.completion);
    expect(final.usage.output_tokens).toBe(REPLY_WORDS.length);
    expect(charged).toBe(total);
  });

  it('passes tool use through, and returns an X-Cashu payer its change in the header', async () => {
    const token = await mintToken(mintUrl, 200);
    claude.modes.push('tool');
    const { data, response } = await new Anthropic({ baseURL: suite.gw.url, apiKey: 'unused', maxRetries: 0, defaultHeaders: { 'x-cashu': token } }).messages
      .create({
        model: 'claude-test',
        max_tokens: 64,
        tools: [{ name: 'get_weather', description: 'Weather in a city', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }],
        messages: [{ role: 'user', content: 'Weather in Paris?' }],
      })
      .withResponse();
    expect(data.stop_reason).toBe('tool_use');
    expect(data.content.find((b) => b.type === 'tool_use')).toMatchObject({ name: 'get_weather', input: TOOL_INPUT });
    const cost = (data.usage as unknown as Costed).cost.total_msats;
    const change = response.headers.get('x-cashu')!;
    expect(await tokenValue(mintUrl, change)).toBe(Math.floor((200_000 - cost) / 1000));
  });

  it('counts tokens for a client with a key, and refuses one without', async () => {
    const token = await mintToken(mintUrl, 50);
    const counted = await anthropic(token).messages.countTokens({ model: 'claude-test', messages: [{ role: 'user', content: 'one two three four five six seven eight' }] });
    // Eight words, each a token in any BPE tokenizer, plus the turn's framing.
    expect(counted.input_tokens).toBeGreaterThanOrEqual(8);
    expect(counted.input_tokens).toBeLessThan(30);
    const res = await fetch(`${suite.gw.url}/v1/messages/count_tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'claude-test', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'authentication_error', code: 'invalid_api_key' } });
  });

  it('answers errors in Anthropic shape with our stable codes', async () => {
    const res = await fetch(`${suite.gw.url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'claude-test', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(402);
    expect(res.headers.get('x-cashu')).toMatch(/^creqA/);
    expect(await res.json()).toMatchObject({ type: 'error', error: { code: 'payment_required' } });
    const err = await anthropic(await mintToken(mintUrl, 50))
      .messages.create({ model: 'claude-test', max_tokens: 10, messages: [] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
  });
});

describe('what Claude Code sends', () => {
  it('passes free betas on, drops the rest, and takes system turns inside messages', async () => {
    const token = await mintToken(mintUrl, 200);
    const client = new Anthropic({ baseURL: suite.gw.url, apiKey: token, maxRetries: 0, defaultHeaders: { 'anthropic-beta': 'context-management-2025-06-27, context-1m-2025-08-07' } });
    const msg = await client.messages.create({
      model: 'claude-test',
      max_tokens: 20,
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'system', content: [{ type: 'text', text: '# Environment: a test' }] } as unknown as Anthropic.MessageParam,
      ],
    });
    expect(msg.content[0]).toMatchObject({ type: 'text' });
    const sent = claude.requests.at(-1)!;
    expect(sent.headers.beta).toBe('context-management-2025-06-27');
    expect((sent.body.messages as Array<{ role: string }>)[1]!.role).toBe('system');
    // The same turn, to a chat upstream, is a system message there.
    await client.messages.create({
      model: 'gpt-test',
      max_tokens: 20,
      messages: [{ role: 'user', content: 'Hi' }, { role: 'system', content: '# Environment: a test' } as unknown as Anthropic.MessageParam],
    });
    expect(chatUpstream.requests.at(-1)!.body.messages).toEqual([
      { role: 'user', content: 'Hi' },
      { role: 'system', content: '# Environment: a test' },
    ]);
  });

  it('passes the computer-use betas on: computer use is billed as tokens, its tool reserved as any typed tool', async () => {
    const token = await mintToken(mintUrl, 200);
    const client = new Anthropic({ baseURL: suite.gw.url, apiKey: token, maxRetries: 0, defaultHeaders: { 'anthropic-beta': 'computer-use-2025-11-24' } });
    await client.messages.create({
      model: 'claude-test',
      max_tokens: 20,
      tools: [{ type: 'computer_20251124', name: 'computer', display_width_px: 1024, display_height_px: 768 }] as unknown as Anthropic.Tool[],
      messages: [{ role: 'user', content: 'Take a screenshot' }],
    });
    expect(claude.requests.at(-1)!.headers.beta).toBe('computer-use-2025-11-24');
    const older = new Anthropic({ baseURL: suite.gw.url, apiKey: await mintToken(mintUrl, 200), maxRetries: 0, defaultHeaders: { 'anthropic-beta': 'computer-use-2025-01-24,computer-use-2024-10-22' } });
    await older.messages.create({ model: 'claude-test', max_tokens: 20, messages: [{ role: 'user', content: 'Hi' }] });
    expect(claude.requests.at(-1)!.headers.beta).toBe('computer-use-2025-01-24,computer-use-2024-10-22');
  });

  it('refuses server-side tools billed per use, before anything is reserved', async () => {
    const token = await mintToken(mintUrl, 200);
    const err = await anthropic(token)
      .messages.create({ model: 'claude-test', max_tokens: 20, tools: [{ type: 'web_search_20250305', name: 'web_search' } as unknown as Anthropic.Tool], messages: [{ role: 'user', content: 'Search.' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    expect(((err as InstanceType<typeof Anthropic.BadRequestError>).error as { error: { code: string } }).error.code).toBe('unpriced_parameter');
    expect(await suite.gw.ledger.getKey(sha256Hex(token))).toBeUndefined();
  });
});

describe('translated between Messages and chat completions', () => {
  it('serves a Messages client from a chat-completions upstream', async () => {
    const token = await mintToken(mintUrl, 200);
    const msg = await anthropic(token).messages.create({
      model: 'gpt-test',
      max_tokens: 20,
      system: 'Be brief.',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'Describe.' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }] }],
    });
    expect(msg.content).toEqual([{ type: 'text', text: REPLY_WORDS.join(' '), citations: null }]);
    const sent = chatUpstream.requests.at(-1)!;
    expect(sent.path).toBe('/chat/completions');
    expect(sent.body.messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: [{ type: 'text', text: 'Describe.' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] },
    ]);
    const total = ceil(upstreamPromptTokens(sent.body), GPT.prompt) + ceil(REPLY_WORDS.length, GPT.completion);
    expect((msg.usage as unknown as Costed).cost.total_msats).toBe(total);
  });

  it('serves an OpenAI chat client from an Anthropic upstream, streaming', async () => {
    const token = await mintToken(mintUrl, 200);
    const client = new OpenAI({ baseURL: `${suite.gw.url}/v1`, apiKey: token, maxRetries: 0 });
    const stream = await client.chat.completions.create({ model: 'claude-test', max_tokens: 30, stream: true, messages: [{ role: 'user', content: 'Hi' }] });
    let text = '';
    let cost: number | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      const u = chunk.usage as unknown as Partial<Costed> | undefined;
      if (u?.cost) cost = u.cost.total_msats;
    }
    expect(text).toBe(REPLY_WORDS.join(' '));
    const sent = claude.requests.at(-1)!;
    expect(sent.body).toMatchObject({ model: 'claude-test', max_tokens: 30, messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi' }] }] });
    expect(cost).toBe(ceil(upstreamPromptTokens(sent.body), CLAUDE.prompt) + ceil(REPLY_WORDS.length, CLAUDE.completion));
  });
});

/** POSTs a Messages request as the holder of `key`. */
function postMessages(key: string, body: Record<string, unknown>, signal?: AbortSignal): Promise<Response> {
  return fetch(`${suite.gw.url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': key, 'anthropic-version': '2023-06-01' },
    body: JSON.stringify(body),
    ...(signal && { signal }),
  });
}

/** Reads a stream until its text holds `marker`, and leaves the rest unread. */
async function readUntil(res: Response, marker: string): Promise<void> {
  const reader = res.body!.getReader();
  let text = '';
  while (!text.includes(marker)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the stream ended before ${marker}`);
    text += new TextDecoder().decode(value);
  }
}

/** What the key of a token used as the API key spent, once its request settled. */
const settledSpend = (token: string) => settled(suite.gw, sha256Hex(token));

describe('a client that leaves a Messages stream before its final usage', () => {
  const ask = { model: 'claude-test', max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'Answer, then stop.' }] };

  it('pays at least for the text it was sent, not the one output token message_start reports', async () => {
    const token = await mintToken(mintUrl, 200);
    claude.finalDelayMs = 400;
    const ac = new AbortController();
    await readUntil(await postMessages(token, ask, ac.signal), '"type":"content_block_stop"');
    ac.abort();
    const spent = await settledSpend(token);
    const prompt = upstreamPromptTokens(claude.requests.at(-1)!.body);
    expect(spent).toBeGreaterThanOrEqual(ceil(prompt, CLAUDE.prompt) + ceil(REPLY_WORDS.length, CLAUDE.completion));
  });

  it('while the model thinks more than it streams, the upstream is read to its end and its whole usage billed', async () => {
    const token = await mintToken(mintUrl, 200);
    claude.modes.push('thinking');
    claude.summarizedThinkingTokens = 1_000;
    claude.finalDelayMs = 400;
    const early = claude.closedEarly;
    const ac = new AbortController();
    // The thinking block (index 0) and the text (index 1) are in: leave before the usage.
    await readUntil(await postMessages(token, ask, ac.signal), '"type":"content_block_stop","index":1');
    ac.abort();
    const spent = await settledSpend(token);
    const prompt = upstreamPromptTokens(claude.requests.at(-1)!.body);
    const output = REPLY_WORDS.length + THINKING.split(' ').length + 1_000;
    expect(spent).toBe(ceil(prompt, CLAUDE.prompt) + ceil(output, CLAUDE.completion));
    expect(claude.closedEarly).toBe(early);
  });

  it('a model seen thinking, on a turn without: leaving stops the upstream, whose stream shows thinking when there is any', async () => {
    const teach = await mintToken(mintUrl, 200);
    claude.modes.push('thinking');
    claude.summarizedThinkingTokens = 1_000;
    expect((await postMessages(teach, { ...ask, stream: false })).status).toBe(200);
    const token = await mintToken(mintUrl, 200);
    claude.finalDelayMs = 400;
    const early = claude.closedEarly;
    const ac = new AbortController();
    await readUntil(await postMessages(token, ask, ac.signal), '"type":"content_block_stop"');
    ac.abort();
    const spent = await settledSpend(token);
    const prompt = upstreamPromptTokens(claude.requests.at(-1)!.body);
    // The prompt as message_start reported it; the answer's ten words, one token each, as counted.
    expect(spent).toBe(ceil(prompt, CLAUDE.prompt) + ceil(REPLY_WORDS.length, CLAUDE.completion));
    await waitFor(() => claude.closedEarly === early + 1, 'the upstream seeing its stream stopped');
  });
});

describe('a whole answer the gateway cannot pass on', () => {
  it('a tool call the length limit cut is refused with 502, and the work the upstream did is paid', async () => {
    const token = await mintToken(mintUrl, 200);
    chatUpstream.modes.push('cut_tool_call');
    const res = await postMessages(token, {
      model: 'gpt-test', max_tokens: 5, messages: [{ role: 'user', content: 'Weather in Paris? '.repeat(50) }],
      tools: [{ name: 'get_weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }],
      tool_choice: { type: 'tool', name: 'get_weather' },
    });
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { type: string; message: string } }).error.message).toContain('tool call');
    const u = chatUpstream.reported.at(-1)!;
    expect(await settledSpend(token)).toBe(ceil(u.prompt_tokens as number, GPT.prompt) + ceil(u.completion_tokens as number, GPT.completion));
  });
});
