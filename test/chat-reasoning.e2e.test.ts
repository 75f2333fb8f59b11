import { describe, expect, it } from 'vitest';
import { chatFormat } from '../src/formats/chat.ts';
import type { StreamSink } from '../src/engine/engine.ts';
import { httpError } from '../src/http/errors.ts';
import { REPLY_WORDS, SILENT_REASONING_TOKENS, upstreamPromptTokens } from './support/upstream.ts';
import { msats } from './support/gateway.ts';
import { clientLeft, fundedKey, settledSpend, useGateway, waitFor } from './support/suite.ts';

/**
 * A reasoning model behind a chat-completions upstream (OpenAI's o-series and gpt-5) thinks
 * without streaming any of it, for seconds to minutes, then answers; only the final usage counts
 * that reasoning. A client that leaves while it thinks, or mid-answer, pays for the reasoning.
 */
const PRICE = { prompt: 2, completion: 8 };
// A model per test: what the gateway learns of one must not decide another's test.
const MODELS = ['o-asked', 'o-asked-mid', 'o-asked-unanswered', 'o-seen', 'o-seen-mid', 'o-messages', 'o-thinking', 'o-cancelled', 'plain', 'openai/o3', 'o-configured'];
const prices = Object.fromEntries(MODELS.map((m) => [m, PRICE]));
const suite = useGateway({
  // 'o-configured' is one the operator says reasons; 'openai/o3' one known to by its id.
  env: { MODEL_PRICES: JSON.stringify({ ...prices, 'o-configured': { ...PRICE, reasoning: true } }) },
  prices,
  reset: () => {
    upstream.modes.length = 0;
    upstream.hold = undefined;
  },
});
const { upstream, mintUrl } = suite;

const messages = [{ role: 'user', content: 'Tell me a story.' }];

function post(key: string, body: Record<string, unknown>, signal: AbortSignal, path = '/v1/chat/completions'): Promise<Response> {
  return fetch(`${suite.gw.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ messages, stream: true, ...body }),
    signal,
  });
}

/** Reads a stream until its text holds `marker`, and leaves the rest unread. */
async function readUntil(res: Response, marker: string): Promise<void> {
  const reader = res.body!.getReader();
  for (let text = ''; !text.includes(marker); ) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the stream ended before ${marker}`);
    text += new TextDecoder().decode(value);
  }
}

/** What the upstream bills for the last request of a 'silent_reasoning' model: the prompt it read, the answer and the reasoning. */
function silentReasoningCost(): number {
  const prompt = upstreamPromptTokens(upstream.requests.at(-1)!.body);
  return msats(prompt, PRICE.prompt) + msats(REPLY_WORDS.length + SILENT_REASONING_TOKENS, PRICE.completion);
}

/**
 * A client that opens a stream of `body` and leaves once it has read `marker` (the upstream
 * holding its stream there until the gateway has seen it go); what its key spent.
 */
async function leave(body: Record<string, unknown>, after: number, marker: string, path?: string): Promise<number> {
  const { key, hash } = await fundedKey(suite.gw, mintUrl, 100);
  upstream.modes.push('silent_reasoning');
  upstream.hold = { after, until: clientLeft(suite.gw) };
  const ac = new AbortController();
  await readUntil(await post(key, body, ac.signal, path), marker);
  ac.abort();
  return settledSpend(suite.gw, hash);
}

/** Teaches the gateway that `model` reasons: a whole answer of it reporting reasoning tokens. */
async function answerOnce(model: string, stream = false): Promise<void> {
  const { key } = await fundedKey(suite.gw, mintUrl, 100);
  upstream.modes.push('silent_reasoning');
  const res = await post(key, { model, stream }, AbortSignal.timeout(10_000));
  expect(res.status).toBe(200);
  await res.text();
}

describe('a client that leaves a chat stream of a reasoning model pays for the reasoning', () => {
  it('asked to reason (reasoning_effort): leaving while it thinks, before any answer, pays the usage the upstream reports', async () => {
    const early = upstream.closedEarly;
    const spent = await leave({ model: 'o-asked', reasoning_effort: 'low' }, 0, '"role":"assistant"');
    expect(spent).toBe(silentReasoningCost());
    expect(upstream.reported.at(-1)!.completion_tokens).toBe(REPLY_WORDS.length + SILENT_REASONING_TOKENS);
    expect(upstream.closedEarly).toBe(early);
  });

  it('asked to reason: leaving mid-answer pays the reasoning done before it, not only the words it saw', async () => {
    const spent = await leave({ model: 'o-asked-mid', reasoning_effort: 'minimal' }, 3, '"content":" is"');
    expect(spent).toBe(silentReasoningCost());
  });

  it('asked to reason: leaving before the upstream has even answered pays the usage it then reports', async () => {
    const { key, hash } = await fundedKey(suite.gw, mintUrl, 100);
    upstream.modes.push('silent_reasoning');
    upstream.hold = { after: 'headers', until: clientLeft(suite.gw) };
    const sent = upstream.requests.length;
    const ac = new AbortController();
    const res = post(key, { model: 'o-asked-unanswered', reasoning: { effort: 'high', exclude: true } }, ac.signal).catch(() => undefined);
    await waitFor(() => upstream.requests.length > sent, 'the request reaching the upstream');
    ac.abort();
    await res;
    expect(await settledSpend(suite.gw, hash)).toBe(silentReasoningCost());
  });

  it('a model the gateway has seen reason (in a whole answer), not asked to: leaving while it thinks pays its usage', async () => {
    await answerOnce('o-seen');
    expect(await leave({ model: 'o-seen' }, 0, '"role":"assistant"')).toBe(silentReasoningCost());
  });

  it('a model seen reason (in a stream), not asked to: leaving mid-answer pays its usage', async () => {
    await answerOnce('o-seen-mid', true);
    expect(await leave({ model: 'o-seen-mid' }, 3, '"content":" is"')).toBe(silentReasoningCost());
  });

  for (const model of ['openai/o3', 'o-configured']) {
    it(`a model known to reason (${model}), never asked nor seen to: leaving while it thinks, on its first request, pays its usage`, async () => {
      expect(await leave({ model }, 0, '"role":"assistant"')).toBe(silentReasoningCost());
    });
  }

  it('through the Messages door, translated to chat: leaving while the model thinks (thinking enabled) pays its usage', async () => {
    const body = { model: 'o-messages', max_tokens: 4_096, thinking: { type: 'enabled', budget_tokens: 2_048 } };
    expect(await leave(body, 0, 'message_start', '/v1/messages')).toBe(silentReasoningCost());
    expect(upstream.requests.at(-1)!.body.reasoning_effort).toBe('low');
  });
});

describe('asked to reason as Anthropic asks, on the chat door', () => {
  it("by 'thinking' (Anthropic's OpenAI-compatible endpoint takes it and streams none of the thinking): leaving while it thinks pays its usage", async () => {
    const body = { model: 'o-thinking', thinking: { type: 'enabled', budget_tokens: 2_048 } };
    expect(await leave(body, 0, '"role":"assistant"')).toBe(silentReasoningCost());
  });
});

describe('what still stops the upstream at once', () => {
  it('a model neither asked to reason nor seen to: leaving mid-answer stops it and pays the prompt and the words generated', async () => {
    const { key, hash } = await fundedKey(suite.gw, mintUrl, 100);
    const early = upstream.closedEarly;
    const reported = upstream.reported.length;
    // Held until the upstream is stopped: were it read on, the request would never settle.
    upstream.hold = { after: 3, until: new Promise(() => {}) };
    const ac = new AbortController();
    await readUntil(await post(key, { model: 'plain' }, ac.signal), '"content":" is"');
    ac.abort();
    // "Tell me a story." is 11 tokens with the message's framing; each word written is one token.
    expect(await settledSpend(suite.gw, hash)).toBe(msats(11, PRICE.prompt) + msats(3, PRICE.completion));
    expect(upstream.wordsWritten).toBe(3);
    expect(upstream.closedEarly).toBe(early + 1);
    expect(upstream.reported.length).toBe(reported);
  });

  it('a withdrawn job (a NIP-09 cancel) of a model asked to reason: the upstream is stopped while it thinks, the prompt paid', async () => {
    const { hash } = await fundedKey(suite.gw, mintUrl, 100);
    const early = upstream.closedEarly;
    upstream.modes.push('silent_reasoning');
    upstream.hold = { after: 0, until: new Promise(() => {}) };
    const engine = suite.gw.engine;
    const payer = { kind: 'key', keyHash: hash, oneShot: false } as const;
    const job = await engine.job(chatFormat, { model: 'o-cancelled', messages, stream: true, reasoning_effort: 'high' }, payer);
    const cancel = new AbortController();
    const sink: StreamSink = {
      open: () => {},
      write: async (text) => {
        if (text.includes('"role":"assistant"')) cancel.abort();
      },
      end: () => {},
      wire: httpError,
    };
    const { receipt } = await engine.run(job, payer, { sink, cancel: cancel.signal });
    expect(receipt.cost.totalMsats).toBe(msats(11, PRICE.prompt));
    expect(await settledSpend(suite.gw, hash)).toBe(msats(11, PRICE.prompt));
    await waitFor(() => upstream.closedEarly === early + 1, 'the upstream seeing its stream stopped');
  });
});
