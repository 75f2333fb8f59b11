import { describe, expect, it } from 'vitest';
import type { Bill } from '../../src/engine/format.ts';
import { billedUsage, costBody, generatedOf, limitOpenAI, meterBody, openaiUsage, safeParse } from '../../src/formats/openai.ts';

// What an upstream reports is untrusted: these are the shapes it may take, and what the gateway
// must make of each. Every expectation is written out by hand.

describe('openaiUsage: the counts', () => {
  it("reads OpenAI's prompt and completion counts", () => {
    expect(openaiUsage({ prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 })).toStrictEqual({ promptTokens: 10, completionTokens: 5 });
  });

  it('reads input_tokens and output_tokens when the OpenAI names are absent', () => {
    expect(openaiUsage({ input_tokens: 7, output_tokens: 3 })).toStrictEqual({ promptTokens: 7, completionTokens: 3 });
  });

  it("prefers OpenAI's names when both are sent, even a zero", () => {
    expect(openaiUsage({ prompt_tokens: 10, input_tokens: 99, completion_tokens: 5, output_tokens: 77 })).toStrictEqual({ promptTokens: 10, completionTokens: 5 });
    expect(openaiUsage({ prompt_tokens: 0, input_tokens: 99, completion_tokens: 0, output_tokens: 77 })).toStrictEqual({ promptTokens: 0, completionTokens: 0 });
  });

  it('takes a missing completion count as none (an embedding)', () => {
    expect(openaiUsage({ prompt_tokens: 8, total_tokens: 8 })).toStrictEqual({ promptTokens: 8, completionTokens: 0 });
    expect(openaiUsage({ input_tokens: 8 })).toStrictEqual({ promptTokens: 8, completionTokens: 0 });
    expect(openaiUsage({ prompt_tokens: 8, completion_tokens: null })).toStrictEqual({ promptTokens: 8, completionTokens: 0 });
  });

  it('rounds a fractional count up', () => {
    expect(openaiUsage({ prompt_tokens: 10.2, completion_tokens: 0.5 })).toStrictEqual({ promptTokens: 11, completionTokens: 1 });
  });

  it('accepts counts from 0 up to just under a billion', () => {
    expect(openaiUsage({ prompt_tokens: 0, completion_tokens: 999_999_999 })).toStrictEqual({ promptTokens: 0, completionTokens: 999_999_999 });
  });

  it('is nothing when there is no usage object', () => {
    for (const u of [undefined, null, 0, 12, '', 'usage', true]) expect(openaiUsage(u)).toBeUndefined();
  });

  it('is nothing when the prompt count is missing', () => {
    expect(openaiUsage({})).toBeUndefined();
    expect(openaiUsage({ completion_tokens: 5 })).toBeUndefined();
  });

  it('ignores a count no upstream could mean: negative, a billion or more, not a finite number', () => {
    const bad: unknown[] = [-1, -0.5, 1e9, 1e12, Infinity, -Infinity, NaN, '10', {}, [3], true];
    for (const b of bad) {
      expect(openaiUsage({ prompt_tokens: b, completion_tokens: 5 }), `prompt ${String(b)}`).toBeUndefined();
      expect(openaiUsage({ prompt_tokens: 10, completion_tokens: b }), `completion ${String(b)}`).toBeUndefined();
    }
  });
});

describe('openaiUsage: the details', () => {
  it('reads cache reads from prompt_tokens_details or input_tokens_details', () => {
    expect(openaiUsage({ prompt_tokens: 10, completion_tokens: 5, prompt_tokens_details: { cached_tokens: 4 } })).toStrictEqual({
      promptTokens: 10,
      completionTokens: 5,
      cachedTokens: 4,
    });
    expect(openaiUsage({ input_tokens: 10, output_tokens: 5, input_tokens_details: { cached_tokens: 4 } })).toStrictEqual({
      promptTokens: 10,
      completionTokens: 5,
      cachedTokens: 4,
    });
    // prompt_tokens_details wins over input_tokens_details.
    expect(
      openaiUsage({ prompt_tokens: 10, prompt_tokens_details: { cached_tokens: 2 }, input_tokens_details: { cached_tokens: 6 } })?.cachedTokens,
    ).toBe(2);
  });

  it('holds cache reads to the prompt and rounds them up', () => {
    expect(openaiUsage({ prompt_tokens: 10, prompt_tokens_details: { cached_tokens: 25 } })?.cachedTokens).toBe(10);
    expect(openaiUsage({ prompt_tokens: 10, prompt_tokens_details: { cached_tokens: 10 } })?.cachedTokens).toBe(10);
    expect(openaiUsage({ prompt_tokens: 10, prompt_tokens_details: { cached_tokens: 3.1 } })?.cachedTokens).toBe(4);
  });

  it('reads cache writes and holds them to the prompt the reads left', () => {
    expect(openaiUsage({ prompt_tokens: 10, completion_tokens: 1, cache_creation_input_tokens: 6 })).toStrictEqual({
      promptTokens: 10,
      completionTokens: 1,
      cacheWriteTokens: 6,
    });
    // 10 prompt, 4 read: at most 6 written.
    expect(openaiUsage({ prompt_tokens: 10, prompt_tokens_details: { cached_tokens: 4 }, cache_creation_input_tokens: 8 })).toStrictEqual({
      promptTokens: 10,
      completionTokens: 0,
      cachedTokens: 4,
      cacheWriteTokens: 6,
    });
    // No reads: at most the whole prompt.
    expect(openaiUsage({ prompt_tokens: 10, cache_creation_input_tokens: 12 })?.cacheWriteTokens).toBe(10);
    expect(openaiUsage({ prompt_tokens: 10, cache_creation_input_tokens: 8.2 })?.cacheWriteTokens).toBe(9);
  });

  it('reads reasoning from completion_tokens_details or output_tokens_details, held to the completion', () => {
    expect(openaiUsage({ prompt_tokens: 1, completion_tokens: 9, completion_tokens_details: { reasoning_tokens: 6 } })).toStrictEqual({
      promptTokens: 1,
      completionTokens: 9,
      reasoningTokens: 6,
    });
    expect(openaiUsage({ input_tokens: 1, output_tokens: 9, output_tokens_details: { reasoning_tokens: 6 } })?.reasoningTokens).toBe(6);
    expect(
      openaiUsage({ prompt_tokens: 1, completion_tokens: 9, completion_tokens_details: { reasoning_tokens: 2 }, output_tokens_details: { reasoning_tokens: 7 } })
        ?.reasoningTokens,
    ).toBe(2);
    expect(openaiUsage({ prompt_tokens: 1, completion_tokens: 9, completion_tokens_details: { reasoning_tokens: 50 } })?.reasoningTokens).toBe(9);
    expect(openaiUsage({ prompt_tokens: 1, completion_tokens: 9, completion_tokens_details: { reasoning_tokens: 1.5 } })?.reasoningTokens).toBe(2);
  });

  it('leaves out a detail of zero and one no upstream could mean, keeping the counts', () => {
    const counts = { promptTokens: 10, completionTokens: 5 };
    for (const bad of [0, -3, 1e9, NaN, Infinity, '4', null, undefined]) {
      const u = openaiUsage({
        prompt_tokens: 10,
        completion_tokens: 5,
        prompt_tokens_details: { cached_tokens: bad },
        completion_tokens_details: { reasoning_tokens: bad },
        cache_creation_input_tokens: bad,
      });
      expect(u, String(bad)).toStrictEqual(counts);
    }
    // Details that are not objects at all.
    expect(openaiUsage({ prompt_tokens: 10, completion_tokens: 5, prompt_tokens_details: null, completion_tokens_details: 'x' })).toStrictEqual(counts);
  });
});

const bill = (over: Partial<Bill['cost']> = {}): Bill => ({
  usage: { promptTokens: 12, completionTokens: 30 },
  cost: { inputMsats: 24, outputMsats: 150, totalMsats: 176, requestMsats: 2, ...over },
  requestId: 'r1',
});

describe('billedUsage and costBody', () => {
  it("adds the cost to the upstream's own usage, keeping every field it sent", () => {
    const original = { prompt_tokens: 11, completion_tokens: 29, total_tokens: 40, prompt_tokens_details: { cached_tokens: 3 } };
    expect(billedUsage(original, bill())).toStrictEqual({
      prompt_tokens: 11,
      completion_tokens: 29,
      total_tokens: 40,
      prompt_tokens_details: { cached_tokens: 3 },
      cost: { base_msats: 2, input_msats: 24, output_msats: 150, total_msats: 176 },
      cost_sats: 0.176,
    });
  });

  it('builds the usage from what the gateway counted when the upstream sent none', () => {
    const expected = {
      prompt_tokens: 12,
      completion_tokens: 30,
      total_tokens: 42,
      cost: { base_msats: 2, input_msats: 24, output_msats: 150, total_msats: 176 },
      cost_sats: 0.176,
    };
    for (const none of [undefined, null, 7, 'usage']) expect(billedUsage(none, bill())).toStrictEqual(expected);
  });

  it('shows no per-request fee as a base of 0', () => {
    expect(costBody(bill({ requestMsats: undefined, totalMsats: 174 }))).toStrictEqual({ base_msats: 0, input_msats: 24, output_msats: 150, total_msats: 174 });
  });
});

describe('safeParse and meterBody', () => {
  it('parses a JSON object and nothing else', () => {
    expect(safeParse('{"a":1}')).toStrictEqual({ a: 1 });
    for (const s of ['[1]', 'null', '3', '"x"', 'true', '{', '']) expect(safeParse(s), s).toBeUndefined();
  });

  it("meters a whole answer: the upstream's usage, its model and everything it generated", () => {
    const m = meterBody({
      model: 'gpt-x',
      usage: { prompt_tokens: 3, completion_tokens: 4 },
      choices: [{ message: { content: 'hi', reasoning: 'think' } }],
    });
    expect(m.usage).toStrictEqual({ promptTokens: 3, completionTokens: 4 });
    expect(m.model).toBe('gpt-x');
    expect(m.generated).toBe('hithink');
    const bare = meterBody({ model: 42, choices: [{ delta: { content: 'no' } }] });
    expect(bare.usage).toBeUndefined();
    expect(bare.model).toBeUndefined();
    expect(bare.generated).toBe('');
  });
});

describe('generatedOf: every generated field', () => {
  it('takes text, content, both reasoning fields, refusals, tool and function calls and audio transcripts', () => {
    const choices = [
      {
        text: 'T',
        message: {
          content: 'C',
          reasoning_content: 'RC',
          reasoning: 'R',
          refusal: 'F',
          tool_calls: [{ id: 'a', function: { name: 'f', arguments: '{}' } }],
          function_call: { name: 'g', arguments: '1' },
          audio: { transcript: 'A' },
        },
      },
      { message: { content: 'second' } },
    ];
    expect(generatedOf(choices, 'message')).toBe('TCRCRF[{"id":"a","function":{"name":"f","arguments":"{}"}}]{"name":"g","arguments":"1"}Asecond');
  });

  it('reads the delta of a streamed chunk, not its message', () => {
    const choices = [{ delta: { content: 'd', tool_calls: [{ index: 0 }] }, message: { content: 'm' } }];
    expect(generatedOf(choices, 'delta')).toBe('d[{"index":0}]');
    expect(generatedOf(choices, 'message')).toBe('m');
  });

  it('takes a legacy completion text without any message', () => {
    expect(generatedOf([{ text: 'plain' }, { text: ' more', message: null }], 'message')).toBe('plain more');
  });

  it('skips what is not text: null fields, non-string fields, broken choices', () => {
    const choices = [
      null,
      7,
      'str',
      { text: 5 },
      { message: 'not an object' },
      { message: { content: null, reasoning: 3, refusal: {}, tool_calls: null, function_call: null, audio: { transcript: 9 } } },
      { message: { audio: null } },
      { message: { content: 'ok' } },
    ];
    expect(generatedOf(choices, 'message')).toBe('ok');
  });

  it('is empty for anything but an array of choices', () => {
    for (const c of [undefined, null, 'text', { text: 'x' }, 3]) expect(generatedOf(c, 'message')).toBe('');
  });
});

describe('limitOpenAI: every output limit field held to the maximum', () => {
  it('sets max_tokens, or the primary field asked for, when the body sends no limit', () => {
    const a: Record<string, unknown> = { model: 'm' };
    limitOpenAI(a, 100);
    expect(a).toStrictEqual({ model: 'm', max_tokens: 100 });
    const b: Record<string, unknown> = { model: 'm' };
    limitOpenAI(b, 100, 'max_completion_tokens');
    expect(b).toStrictEqual({ model: 'm', max_completion_tokens: 100 });
  });

  it('clamps every alias present, negative and huge ones included, and adds no other', () => {
    const body: Record<string, unknown> = { max_tokens: 5000, max_completion_tokens: 0, n_predict: -1, max_new_tokens: 1e12, num_predict: 7 };
    limitOpenAI(body, 100);
    expect(body).toStrictEqual({ max_tokens: 100, max_completion_tokens: 100, n_predict: 100, max_new_tokens: 100, num_predict: 100 });
  });

  it('clamps each alias alone without adding the primary field', () => {
    for (const f of ['max_tokens', 'max_completion_tokens', 'n_predict', 'max_new_tokens', 'num_predict']) {
      const body: Record<string, unknown> = { [f]: 'lots' };
      limitOpenAI(body, 64, f === 'max_tokens' ? 'max_completion_tokens' : 'max_tokens');
      expect(body, f).toStrictEqual({ [f]: 64 });
    }
  });

  it('takes a null limit as absent', () => {
    const body: Record<string, unknown> = { max_tokens: null };
    limitOpenAI(body, 50, 'max_completion_tokens');
    expect(body).toStrictEqual({ max_tokens: null, max_completion_tokens: 50 });
  });

  it("clamps Ollama's options.num_predict in a copy, and still sets the primary field", () => {
    const options = { num_predict: 99_999, temperature: 0.5 };
    const body: Record<string, unknown> = { options };
    limitOpenAI(body, 32);
    expect(body).toStrictEqual({ options: { num_predict: 32, temperature: 0.5 }, max_tokens: 32 });
    expect(options).toStrictEqual({ num_predict: 99_999, temperature: 0.5 });
  });

  it('leaves options without a num_predict, and options that are not an object, as they are', () => {
    for (const options of [{ temperature: 1 }, { num_predict: null }, null, 'fast', 3]) {
      const body: Record<string, unknown> = { options };
      limitOpenAI(body, 10);
      expect(body.options, JSON.stringify(options)).toBe(options);
      expect(body.max_tokens).toBe(10);
    }
  });
});
