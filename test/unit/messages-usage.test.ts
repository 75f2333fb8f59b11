import { describe, expect, it } from 'vitest';
import { chatUsageBody, chatUsageOf, messagesUsageBody, messagesUsageOf } from '../../src/formats/messages-usage.ts';
import { openaiUsage } from '../../src/formats/openai.ts';

// Usage an upstream reports is untrusted; every expectation is written out by hand.

describe("messagesUsageOf: Anthropic's usage", () => {
  it('counts the cache reads and writes into the prompt, which Anthropic leaves out of input_tokens', () => {
    expect(messagesUsageOf({ input_tokens: 10, output_tokens: 4, cache_read_input_tokens: 100, cache_creation_input_tokens: 20 })).toStrictEqual({
      promptTokens: 130,
      completionTokens: 4,
      cachedTokens: 100,
      cacheWriteTokens: 20,
    });
  });

  it('reads thinking tokens, held to the output', () => {
    expect(messagesUsageOf({ input_tokens: 3, output_tokens: 50, output_tokens_details: { thinking_tokens: 30 } })).toStrictEqual({ promptTokens: 3, completionTokens: 50, reasoningTokens: 30 });
    expect(messagesUsageOf({ input_tokens: 3, output_tokens: 5, output_tokens_details: { thinking_tokens: 80 } })).toStrictEqual({ promptTokens: 3, completionTokens: 5, reasoningTokens: 5 });
  });

  it("takes a missing count as none (message_start's partial usage), rounds fractions up, and leaves out zero details", () => {
    expect(messagesUsageOf({ output_tokens: 7 })).toStrictEqual({ promptTokens: 0, completionTokens: 7 });
    expect(messagesUsageOf({ input_tokens: 2.1, output_tokens: 0.5, cache_read_input_tokens: 0, cache_creation_input_tokens: null })).toStrictEqual({ promptTokens: 3, completionTokens: 1 });
  });

  it('is nothing without a count, or with a count no upstream could mean', () => {
    for (const u of [undefined, null, 'usage', {}, { cache_read_input_tokens: 5 }]) expect(messagesUsageOf(u), JSON.stringify(u)).toBeUndefined();
    for (const bad of [-1, 1e9, Number.NaN, '12']) {
      expect(messagesUsageOf({ input_tokens: 1, output_tokens: 1, cache_read_input_tokens: bad }), String(bad)).toBeUndefined();
      expect(messagesUsageOf({ input_tokens: bad, output_tokens: 1 }), String(bad)).toBeUndefined();
    }
    expect(messagesUsageOf({ input_tokens: 1, output_tokens: 1, output_tokens_details: { thinking_tokens: -3 } })).toBeUndefined();
  });
});

describe('messagesUsageBody', () => {
  it("writes our usage in Anthropic's words, input_tokens without the cached and cache-written ones", () => {
    expect(messagesUsageBody({ promptTokens: 130, completionTokens: 4, cachedTokens: 100, cacheWriteTokens: 20, reasoningTokens: 2 })).toStrictEqual({
      input_tokens: 10,
      output_tokens: 4,
      cache_creation_input_tokens: 20,
      cache_read_input_tokens: 100,
      output_tokens_details: { thinking_tokens: 2 },
    });
    expect(messagesUsageBody({ promptTokens: 9, completionTokens: 1 })).toStrictEqual({ input_tokens: 9, output_tokens: 1, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 });
  });

  it('never writes a negative input count, even when the cache counts exceed the prompt', () => {
    expect(messagesUsageBody({ promptTokens: 5, completionTokens: 0, cachedTokens: 8 }).input_tokens).toBe(0);
  });

  it('reads back what it wrote', () => {
    const usage = { promptTokens: 130, completionTokens: 40, cachedTokens: 100, cacheWriteTokens: 20, reasoningTokens: 12 };
    expect(messagesUsageOf(messagesUsageBody(usage))).toStrictEqual(usage);
  });
});

describe("chatUsageOf: chat's usage, as a codec meets it", () => {
  it.each([
    {
      name: 'reads the counts and the details, the cache writes under their Anthropic name',
      reported: { prompt: 130, completion: 40, cached: 100, reasoning: 12, writes: 20 },
      read: { promptTokens: 130, completionTokens: 40, cachedTokens: 100, cacheWriteTokens: 20, reasoningTokens: 12 },
    },
    {
      name: 'holds cache reads to the prompt, writes to what the reads left, reasoning to the completion',
      reported: { prompt: 50, completion: 10, cached: 45, reasoning: 11, writes: 20 },
      read: { promptTokens: 50, completionTokens: 10, cachedTokens: 45, cacheWriteTokens: 5, reasoningTokens: 10 },
    },
  ])('$name', ({ reported: r, read }) => {
    expect(chatUsageOf({
      prompt_tokens: r.prompt,
      completion_tokens: r.completion,
      prompt_tokens_details: { cached_tokens: r.cached },
      completion_tokens_details: { reasoning_tokens: r.reasoning },
      cache_creation_input_tokens: r.writes,
    })).toStrictEqual(read);
  });

  it('needs a prompt count, and believes no count an upstream could not mean', () => {
    expect(chatUsageOf({ completion_tokens: 3 })).toBeUndefined();
    expect(chatUsageOf({ prompt_tokens: 3 })).toStrictEqual({ promptTokens: 3, completionTokens: 0 });
    expect(chatUsageOf({ prompt_tokens: 3, completion_tokens: -1 })).toBeUndefined();
    expect(chatUsageOf({ prompt_tokens: 3, prompt_tokens_details: { cached_tokens: 2e9 } })).toBeUndefined();
    expect(chatUsageOf(null)).toBeUndefined();
  });
});

describe('chatUsageBody', () => {
  it('writes the total and only the details there are', () => {
    expect(chatUsageBody({ promptTokens: 130, completionTokens: 40, cachedTokens: 100, cacheWriteTokens: 20, reasoningTokens: 12 })).toStrictEqual({
      prompt_tokens: 130,
      completion_tokens: 40,
      total_tokens: 170,
      prompt_tokens_details: { cached_tokens: 100 },
      completion_tokens_details: { reasoning_tokens: 12 },
      cache_creation_input_tokens: 20,
    });
    expect(chatUsageBody({ promptTokens: 1, completionTokens: 2 })).toStrictEqual({ prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 });
  });

  it('carries an Anthropic usage through chat and back unchanged', () => {
    const anthropic = { input_tokens: 10, output_tokens: 4, cache_creation_input_tokens: 20, cache_read_input_tokens: 100 };
    expect(messagesUsageBody(chatUsageOf(chatUsageBody(messagesUsageOf(anthropic)!))!)).toStrictEqual(anthropic);
  });
});

describe('1-hour cache writes, which Anthropic bills at 2x base input (5-minute ones at 1.25x)', () => {
  const split = { input_tokens: 10, output_tokens: 4, cache_read_input_tokens: 0, cache_creation_input_tokens: 10_030, cache_creation: { ephemeral_5m_input_tokens: 30, ephemeral_1h_input_tokens: 10_000 } };

  it('reads cache_creation by TTL when it is there', () => {
    expect(messagesUsageOf(split)).toStrictEqual({ promptTokens: 10_040, completionTokens: 4, cacheWriteTokens: 10_030, cacheWrite1hTokens: 10_000 });
  });

  it('falls back to cache_creation_input_tokens, all at the 5-minute rate, when it is not', () => {
    expect(messagesUsageOf({ input_tokens: 10, output_tokens: 4, cache_creation_input_tokens: 20 })).toStrictEqual({ promptTokens: 30, completionTokens: 4, cacheWriteTokens: 20 });
  });

  it('believes neither the sum below its parts nor the parts beyond any count an upstream could mean', () => {
    expect(messagesUsageOf({ input_tokens: 0, output_tokens: 1, cache_creation: { ephemeral_1h_input_tokens: 50 } })).toStrictEqual({ promptTokens: 50, completionTokens: 1, cacheWriteTokens: 50, cacheWrite1hTokens: 50 });
    expect(messagesUsageOf({ input_tokens: 0, output_tokens: 1, cache_creation: { ephemeral_1h_input_tokens: -5 } })).toBeUndefined();
  });

  it('keeps the split through chat (the pivot every translation and the meter read) and back', () => {
    const usage = messagesUsageOf(split)!;
    expect(chatUsageOf(chatUsageBody(usage))).toStrictEqual(usage);
    expect(openaiUsage(chatUsageBody(usage))).toStrictEqual(usage);
    expect(messagesUsageOf(messagesUsageBody(usage))).toStrictEqual(usage);
  });
});
