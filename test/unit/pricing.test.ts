import { describe, expect, it } from 'vitest';
import { completionLimit, costOf, reservationFor, satsPricing, type Price } from '../../src/engine/pricing.ts';
import { pickPlan } from '../../src/ledger/ledger.ts';
import { imageTokensFor } from '../../src/engine/tokens.ts';

const price = (prompt: number, completion: number): Price => ({
  promptRate: Math.round(prompt * 1e6),
  completionRate: Math.round(completion * 1e6),
  maxCompletionTokens: 1000,
  contextLength: 8000,
});

describe('costOf', () => {
  it('rounds each part up to a whole msat, never down', () => {
    expect(costOf({ promptTokens: 10, completionTokens: 3 }, price(0.15, 0.6))).toEqual({ inputMsats: 2, outputMsats: 2, totalMsats: 4 });
    expect(costOf({ promptTokens: 100, completionTokens: 10 }, price(0.15, 0.6))).toEqual({ inputMsats: 15, outputMsats: 6, totalMsats: 21 });
    expect(costOf({ promptTokens: 0, completionTokens: 0 }, price(2, 5)).totalMsats).toBe(0);
    expect(costOf({ promptTokens: 1, completionTokens: 0 }, price(0.000001, 5)).totalMsats).toBe(1);
  });

  it('stays exact beyond 2^53 intermediate products', () => {
    // 10M tokens at 1000 sats per token: 1e13 msats, product 1e19 micro-msats.
    const c = costOf({ promptTokens: 10_000_000, completionTokens: 0 }, price(1_000_000, 0));
    expect(c.inputMsats).toBe(10_000_000_000_000);
  });
});

describe('reservationFor and completionLimit', () => {
  it('pads the counted prompt and adds the completion allowance for every choice', () => {
    const p = price(2, 5);
    expect(reservationFor(100, 50, p)).toBe((110 + 8) * 2 + 50 * 5);
    expect(reservationFor(7, 1, p)).toBe((7 + 1 + 8) * 2 + 5);
    expect(reservationFor(100, 50, p, 3)).toBe((110 + 8) * 2 + 150 * 5);
  });

  it('holds a request to what it asked for, at most the model cap', () => {
    const p = price(2, 5);
    expect(completionLimit(undefined, p)).toBe(1000);
    expect(completionLimit(999_999, p)).toBe(1000);
    expect(completionLimit(12, p)).toBe(12);
  });
});

describe('1-hour cache writes', () => {
  // Anthropic's rates: 5-minute writes at 1.25x base input, 1-hour writes at 2x.
  const claude: Price = { ...price(3, 15), cacheWriteRate: 3_750_000 };

  it('bill at twice the prompt price, 5-minute writes at the cache-write price', () => {
    // The reviewer's case: 10,000 tokens to the 1-hour cache.
    expect(costOf({ promptTokens: 10_000, completionTokens: 0, cacheWriteTokens: 10_000, cacheWrite1hTokens: 10_000 }, claude).totalMsats).toBe(60_000);
    expect(costOf({ promptTokens: 10_000, completionTokens: 0, cacheWriteTokens: 10_000 }, claude).totalMsats).toBe(37_500);
    expect(costOf({ promptTokens: 100, completionTokens: 0, cacheWriteTokens: 30, cacheWrite1hTokens: 10 }, claude).inputMsats).toBe(70 * 3 + 20 * 3.75 + 10 * 6);
  });

  it('never cost less than a 5-minute write', () => {
    expect(costOf({ promptTokens: 10, completionTokens: 0, cacheWriteTokens: 10, cacheWrite1hTokens: 10 }, { ...price(3, 15), cacheWriteRate: 9_000_000 }).inputMsats).toBe(90);
  });

  it('are reserved for, the whole prompt at the 1-hour rate, when the request asks for the 1-hour cache', () => {
    expect(reservationFor(100, 0, claude)).toBe(Math.ceil(118 * 3.75));
    expect(reservationFor(100, 0, claude, 1, 0, true)).toBe(118 * 6);
    // Even for a model whose cache writes are priced as plain input.
    expect(reservationFor(100, 0, price(3, 15), 1, 0, true)).toBe(118 * 6);
  });
});

describe('imageTokensFor', () => {
  it('knows the models that bill an image far above 1,600 tokens, with or without a prefix or date', () => {
    const cases: Array<[string, number]> = [
      ['gpt-4o-mini', 48169], ['openai/gpt-4o-mini-2024-07-18', 48169], ['gpt-4.1-nano', 3779], ['openai/gpt-5-nano', 3779],
      ['o4-mini', 2642], ['gpt-4.1-mini', 2489], ['gpt-5-mini', 2489], ['gpt-5.1-mini', 2489],
      ['meta-llama/Llama-3.2-90B-Vision-Instruct-Turbo', 6404],
      ['Qwen/Qwen2.5-VL-72B-Instruct', 16386], ['qwen2.5-vl-7b-instruct', 16386], ['Qwen/Qwen3-VL-235B-A22B-Thinking', 16386],
      ['openrouter/qwen/qwen2-vl-72b-instruct', 16386], ['mistralai/pixtral-12b', 4160], ['pixtral-large-latest', 4160],
      ['meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8', 2448], ['meta-llama/llama-4-scout', 2448], ['llama4:scout', 2448],
      ['OpenGVLab/InternVL3-78B', 3328], ['internvl2_5-8b', 3328],
      ['qwen2.5-72b-instruct', 1600], ['qwen3-235b-a22b', 1600], ['mistral-large-latest', 1600], ['meta-llama/Llama-3.3-70B-Instruct', 1600], ['llama-405b', 1600],
      ['gpt-4o', 1600], ['gpt-4.1', 1600], ['claude-sonnet-4-5', 1600], ['o3', 1600], ['gpt-test', 1600],
    ];
    expect(cases.map(([id]) => [id, imageTokensFor(id)])).toEqual(cases);
  });
});

describe('satsPricing', () => {
  it('gives sats per token and worst-case costs in sats', () => {
    const s = satsPricing(price(2, 5));
    expect(s.prompt).toBeCloseTo(0.002, 12);
    expect(s.completion).toBeCloseTo(0.005, 12);
    expect(s.max_cost).toBeCloseTo(((8000 - 1000) * 2 + 1000 * 5) / 1000, 9);
  });
});

describe('pickPlan', () => {
  const plan = (counts: Array<[number, number]>, amount: number) => {
    const p = pickPlan(counts, amount);
    return p && Object.fromEntries([...p].sort((a, b) => b[0] - a[0]));
  };

  it('finds an exact match from descending denominations', () => {
    expect(plan([[64, 1], [32, 1], [8, 1], [4, 1], [1, 1]], 37)).toEqual({ 32: 1, 4: 1, 1: 1 });
    expect(plan([[8, 5], [1, 3]], 26)).toEqual({ 8: 3, 1: 2 });
  });
  it('adds the smallest proof that covers the gap when no exact match exists', () => {
    expect(plan([[64, 1], [16, 1], [8, 1]], 30)).toEqual({ 64: 1, 16: 1, 8: 1 });
    expect(plan([[64, 1], [32, 1]], 10)).toEqual({ 32: 1 });
    expect(plan([[16, 2]], 20)).toEqual({ 16: 2 });
  });
  it('returns undefined when the proofs cannot cover the amount', () => {
    expect(plan([[4, 1], [2, 1], [1, 1]], 8)).toBeUndefined();
    expect(plan([], 1)).toBeUndefined();
  });
});
