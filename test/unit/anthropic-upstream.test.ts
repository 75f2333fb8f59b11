import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UpstreamEvent } from '../../src/engine/format.ts';
import { messagesCodec, messagesRelay } from '../../src/formats/messages.ts';
import { SseSplitter, eventData } from '../../src/upstream/sse.ts';
import { ANTHROPIC_KEY, FakeAnthropic, THINKING, TOOL_INPUT } from '../support/anthropic-upstream.ts';
import { upstreamPromptTokens } from '../support/upstream.ts';

/**
 * The Anthropic double against the official SDK: if the SDK reads it as it reads the real API,
 * the gateway's tests against it mean something.
 */
const upstream = new FakeAnthropic();
let client: Anthropic;

beforeAll(async () => {
  const url = await upstream.start();
  client = new Anthropic({ apiKey: ANTHROPIC_KEY, baseURL: url.replace(/\/v1$/, ''), maxRetries: 0 });
});
afterAll(() => upstream.stop());

const ask = { model: 'claude-test', max_tokens: 64, messages: [{ role: 'user' as const, content: 'What is the answer to life, the universe and everything? '.repeat(10) }] };

/** The double's raw stream for a body, as the engine hands it to a format. */
async function rawEvents(body: Record<string, unknown>): Promise<UpstreamEvent[]> {
  const res = await fetch(`${upstream.url}/messages`, {
    method: 'POST',
    headers: { 'x-api-key': ANTHROPIC_KEY, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  const split = new SseSplitter();
  const raw: string[] = [];
  try {
    for await (const chunk of res.body!) raw.push(...split.push(chunk as Uint8Array));
  } catch (e) {
    // A cut connection: keep what arrived, as the engine does.
    if (!(e instanceof TypeError && e.message === 'terminated')) throw e;
  }
  return raw.map((ev) => ({ name: /^event: (.*)$/m.exec(ev)?.[1], data: eventData(ev) ?? '' }));
}

describe('FakeAnthropic', () => {
  it('answers the SDK with a message, its headers recorded, usage with cache reads and writes', async () => {
    upstream.cache = { read: 20, write: 5 };
    const msg = await client.messages.create(ask);
    upstream.cache = { read: 0, write: 0 };
    const prompt = upstreamPromptTokens(ask);
    expect(msg.content).toEqual([{ type: 'text', text: 'The answer is forty two and that is all folks', citations: null }]);
    expect(msg.stop_reason).toBe('end_turn');
    expect(msg.usage).toEqual({ input_tokens: prompt - 25, cache_read_input_tokens: 20, cache_creation_input_tokens: 5, output_tokens: 10 });
    expect(messagesCodec.usageOf(msg.usage)).toEqual({ promptTokens: prompt, completionTokens: 10, cachedTokens: 20, cacheWriteTokens: 5 });
    const rec = upstream.requests.at(-1)!;
    expect(rec.path).toBe('/messages');
    // The SDK sends its apiKey as a bearer token and its own API version.
    expect(rec.headers).toMatchObject({ apiKey: ANTHROPIC_KEY, bearer: true });
    expect(rec.headers.version).toMatch(/^\d{4}-\d{2}-\d{2}$/);
  });

  it('refuses a missing or wrong key with 401 authentication_error, and a missing version with 400', async () => {
    const before = upstream.requests.length;
    const wrong = new Anthropic({ apiKey: 'sk-ant-wrong', baseURL: upstream.url.replace(/\/v1$/, ''), maxRetries: 0 });
    const err = await wrong.messages.create(ask).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.AuthenticationError);
    expect((err as InstanceType<typeof Anthropic.APIError>).error).toMatchObject({ type: 'error', error: { type: 'authentication_error' } });
    const noKey = await fetch(`${upstream.url}/messages`, { method: 'POST', headers: { 'anthropic-version': '2023-06-01' }, body: JSON.stringify(ask) });
    expect(noKey.status).toBe(401);
    const asHeader = await fetch(`${upstream.url}/messages`, { method: 'POST', headers: { 'x-api-key': ANTHROPIC_KEY, 'anthropic-version': '2023-06-01' }, body: JSON.stringify(ask) });
    expect(asHeader.status).toBe(200);
    expect(upstream.requests.at(-1)!.headers).toMatchObject({ apiKey: ANTHROPIC_KEY, bearer: false, version: '2023-06-01' });
    const noVersion = await fetch(`${upstream.url}/messages`, { method: 'POST', headers: { 'x-api-key': ANTHROPIC_KEY }, body: JSON.stringify(ask) });
    expect(noVersion.status).toBe(400);
    expect(await noVersion.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', message: 'anthropic-version: header is required' } });
    expect(upstream.requests.length).toBe(before + 1);
  });

  it('answers its error modes with the SDK error classes Anthropic statuses map to', async () => {
    upstream.modes.push('overloaded', 'fail_429', 'fail_400', 'fail_500');
    const classes = [Anthropic.InternalServerError, Anthropic.RateLimitError, Anthropic.BadRequestError, Anthropic.InternalServerError];
    const statuses = [529, 429, 400, 500];
    for (const [i, cls] of classes.entries()) {
      const err = await client.messages.create(ask).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(cls);
      expect((err as InstanceType<typeof Anthropic.APIError>).status).toBe(statuses[i]);
    }
  });

  it('stops at max_tokens and at a stop sequence, as the API reports them', async () => {
    const short = await client.messages.create({ ...ask, max_tokens: 3 });
    expect([short.stop_reason, short.usage.output_tokens]).toEqual(['max_tokens', 3]);
    const stopped = await client.messages.create({ ...ask, stop_sequences: ['forty'] });
    expect([stopped.stop_reason, stopped.stop_sequence, stopped.content[0]]).toEqual(['stop_sequence', 'forty', { type: 'text', text: 'The answer is', citations: null }]);
  });

  it('streams a tool call the SDK assembles, and the codec decodes to the same call and usage', async () => {
    const tools = [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object' as const, properties: { city: { type: 'string' } } } }];
    upstream.modes.push('tool');
    upstream.cache = { read: 30, write: 0 };
    const final = await client.messages.stream({ ...ask, tools }).finalMessage();
    expect(final.content[1]).toEqual({ type: 'tool_use', id: 'toolu_01A09q90qw90lq917835lq9', name: 'get_weather', input: TOOL_INPUT });
    expect(final.stop_reason).toBe('tool_use');
    expect(final.usage).toMatchObject({ cache_read_input_tokens: 30, output_tokens: 22 });

    upstream.modes.push('tool');
    const decoder = messagesCodec.decoder();
    const chunks = (await rawEvents({ ...ask, tools })).flatMap((ev) => decoder.push(ev));
    upstream.cache = { read: 0, write: 0 };
    const args = chunks.flatMap((c) => ((c.choices as Array<{ delta: { tool_calls?: Array<{ function: { arguments?: string } }> } }>)[0]?.delta.tool_calls ?? []))
      .map((t) => t.function.arguments ?? '').join('');
    expect(JSON.parse(args)).toEqual(TOOL_INPUT);
    const usage = chunks.at(-1)!.usage as Record<string, unknown>;
    expect(usage).toEqual({
      prompt_tokens: upstreamPromptTokens({ ...ask, tools, stream: true }),
      completion_tokens: 22,
      total_tokens: upstreamPromptTokens({ ...ask, tools, stream: true }) + 22,
      prompt_tokens_details: { cached_tokens: 30 },
    });
  });

  it('streams thinking with its signature, which the relay meters and passes through', async () => {
    upstream.modes.push('thinking');
    const relay = messagesRelay();
    let text = '';
    for (const ev of await rawEvents({ ...ask, thinking: { type: 'enabled', budget_tokens: 1024 } })) text += relay.push(ev);
    expect(text).toContain('"signature_delta"');
    expect(relay.metered.generated).toBe(`${THINKING}The answer is forty two and that is all folks`);
    expect(relay.metered.usage).toMatchObject({ completionTokens: 10 + THINKING.split(' ').length, reasoningTokens: THINKING.split(' ').length });
  });

  it('sends an error event mid-stream, which the SDK raises as overloaded', async () => {
    upstream.modes.push('error_event');
    const err = await client.messages.stream(ask).finalMessage().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect((err as InstanceType<typeof Anthropic.APIError>).error).toEqual({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
  });

  it('cuts a stream mid-answer: the decoder reports no usage, so the engine counts what arrived', async () => {
    upstream.modes.push('cut');
    const decoder = messagesCodec.decoder();
    const evs = await rawEvents(ask);
    const chunks = evs.flatMap((ev) => decoder.push(ev));
    expect(evs.map((e) => e.name)).not.toContain('message_delta');
    expect(chunks.map((c) => (c.choices as Array<{ delta: { content?: string } }>)[0]?.delta.content).join('')).toBe('The answer is');
    // message_start's output_tokens (1) is not the answer's: no usage chunk may claim it is.
    expect(chunks.some((c) => c.usage !== undefined)).toBe(false);
  });

  it('counts tokens and lists models in Anthropic shapes', async () => {
    const counted = await client.messages.countTokens({ model: 'claude-test', messages: ask.messages });
    expect(counted.input_tokens).toBe(upstreamPromptTokens({ messages: ask.messages }));
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['claude-test', 'claude-cheap']);
  });
});
