import { describe, expect, it } from 'vitest';
import { completionLimit, costOf, msatsPricing, promptAllowance, reservationFor, satsPricing, type Price } from '../../src/engine/pricing.ts';

// Every expected value below is worked out by hand from the rates (micro-msats per token) and the
// token counts, in the comment beside it; none is read back from the code under test.

/** 2 msats a prompt token, 5 a completion token, nothing else set. */
const plain: Price = { promptRate: 2_000_000, completionRate: 5_000_000, maxCompletionTokens: 1000, contextLength: 8000 };

/** Every rate and fee set, each different, none a whole msat where it matters. */
const full: Price = {
  promptRate: 2_000_000, // 2 msats
  completionRate: 5_000_000, // 5 msats
  cachedRate: 500_000, // 0.5 msat
  cacheWriteRate: 2_500_000, // 2.5 msats
  requestFee: 1_500_000, // 1.5 msats, billed 2
  imageFee: 3_333_333, // 3.333333 msats
  maxCompletionTokens: 1000,
  contextLength: 8000,
};

describe('costOf: each part at its own rate, each rounded up', () => {
  it.each([
    {
      name: 'bills plain, cached and cache-written input, images, output and the request fee separately',
      // 100 prompt tokens: 30 cached, 20 written, 50 plain; 10 completion tokens; 3 images.
      // input = 50×2 + 30×0.5 + 20×2.5 + ⌈3×3.333333⌉ = 100 + 15 + 50 + 10 = 175
      // output = 10×5 = 50; request = ⌈1.5⌉ = 2; total = 227
      usage: { promptTokens: 100, completionTokens: 10, cachedTokens: 30, cacheWriteTokens: 20 },
      price: full,
      images: 3,
      cost: { inputMsats: 175, outputMsats: 50, totalMsats: 227, requestMsats: 2 },
    },
    {
      name: 'rounds up each part on its own, and an exact product is not rounded up',
      // 3 cached at 0.5 = 1.5 → 2; 1 written at 2.5 → 3; 1 plain at 2 = 2 (exact, stays 2); 1 image 3.333333 → 4.
      // input = 2 + 2 + 3 + 4 = 11; output 1×5 = 5; request 2; total 18.
      usage: { promptTokens: 5, completionTokens: 1, cachedTokens: 3, cacheWriteTokens: 1 },
      price: full,
      images: 1,
      cost: { inputMsats: 11, outputMsats: 5, totalMsats: 18, requestMsats: 2 },
    },
    {
      name: 'bills cache reads and writes at the prompt rate when the model has no rate for them',
      // 100 prompt tokens, 30 cached + 20 written + 50 plain, all at 2: 200; 10 completion at 5: 50.
      usage: { promptTokens: 100, completionTokens: 10, cachedTokens: 30, cacheWriteTokens: 20 },
      price: plain,
      cost: { inputMsats: 200, outputMsats: 50, totalMsats: 250 },
    },
    {
      name: 'never counts more cached tokens than the prompt has',
      // 150 cached of a 100-token prompt: 100 cached at 0.5 = 50, nothing plain, nothing written.
      usage: { promptTokens: 100, completionTokens: 0, cachedTokens: 150, cacheWriteTokens: 20 },
      price: full,
      cost: { inputMsats: 50, outputMsats: 0, totalMsats: 52, requestMsats: 2 },
    },
  ])('$name', ({ usage, price, images, cost }) => {
    expect(costOf(usage, price, images)).toStrictEqual(cost);
  });

  it('never counts more cache writes than the uncached rest of the prompt', () => {
    // 100 prompt, 30 cached, 90 written asked: 70 written at 2.5 = 175, 30 cached at 0.5 = 15, none plain.
    expect(costOf({ promptTokens: 100, completionTokens: 0, cachedTokens: 30, cacheWriteTokens: 90 }, full).inputMsats).toBe(190);
    // No cache reads: 90 written at 2.5 = 225, 10 plain at 2 = 20.
    expect(costOf({ promptTokens: 100, completionTokens: 0, cacheWriteTokens: 90 }, full).inputMsats).toBe(245);
    // Writes with no reads, within the prompt: 40 written at 2.5 = 100, 60 plain at 2 = 120.
    expect(costOf({ promptTokens: 100, completionTokens: 0, cacheWriteTokens: 40 }, full).inputMsats).toBe(220);
  });

  it('charges no image fee for images on a model without one, and none for no images', () => {
    // 10 prompt at 2 = 20; 4 completion at 5 = 20.
    expect(costOf({ promptTokens: 10, completionTokens: 4 }, plain, 3)).toStrictEqual({ inputMsats: 20, outputMsats: 20, totalMsats: 40 });
    // The full price with no images: 20 + 20 + request 2.
    expect(costOf({ promptTokens: 10, completionTokens: 4 }, full, 0)).toStrictEqual({
      inputMsats: 20,
      outputMsats: 20,
      totalMsats: 42,
      requestMsats: 2,
    });
    expect(costOf({ promptTokens: 10, completionTokens: 4 }, full)).toStrictEqual({ inputMsats: 20, outputMsats: 20, totalMsats: 42, requestMsats: 2 });
  });

  it('bills reasoning tokens as the completion tokens they are part of', () => {
    // 20 completion tokens of which 15 reasoning: 20 × 5 = 100, not 5 × 5.
    expect(costOf({ promptTokens: 0, completionTokens: 20, reasoningTokens: 15 }, plain)).toStrictEqual({ inputMsats: 0, outputMsats: 100, totalMsats: 100 });
  });

  it('a fee of less than a msat is still a whole msat', () => {
    // 1 micro-msat request fee → 1 msat; 1 image at 1 micro-msat → 1 msat.
    const tiny: Price = { ...plain, requestFee: 1, imageFee: 1 };
    expect(costOf({ promptTokens: 0, completionTokens: 0 }, tiny, 1)).toStrictEqual({ inputMsats: 1, outputMsats: 0, totalMsats: 2, requestMsats: 1 });
  });
});

describe('promptAllowance', () => {
  it('pads the counted prompt by a tenth, rounded up, and 8 tokens', () => {
    expect(promptAllowance(0)).toBe(8);
    expect(promptAllowance(1)).toBe(1 + 1 + 8);
    expect(promptAllowance(100)).toBe(100 + 10 + 8);
    expect(promptAllowance(101)).toBe(101 + 11 + 8);
    expect(promptAllowance(109)).toBe(109 + 11 + 8);
  });
});

describe('completionLimit', () => {
  it('is what the request asked for, up to the cap, and the cap when it asked for nothing', () => {
    expect(completionLimit(undefined, plain)).toBe(1000);
    expect(completionLimit(0, plain)).toBe(0);
    expect(completionLimit(12, plain)).toBe(12);
    expect(completionLimit(1000, plain)).toBe(1000);
    expect(completionLimit(1001, plain)).toBe(1000);
  });
});

describe('reservationFor: the most a request can cost', () => {
  it('reserves the padded prompt at the prompt rate when cache writes cost no more', () => {
    // 100 counted → 118; 118 × 2 = 236; 50 completion × 5 = 250.
    expect(reservationFor(100, 50, plain)).toBe(486);
    // A write rate below the prompt rate is not the worst case: still 236 + 250.
    expect(reservationFor(100, 50, { ...plain, cacheWriteRate: 1_000_000 })).toBe(486);
    // A write rate equal to the prompt rate costs the same either way.
    expect(reservationFor(100, 50, { ...plain, cacheWriteRate: 2_000_000 })).toBe(486);
  });

  it('reserves the whole padded prompt as cache writes when writes cost more', () => {
    // full: 118 written × 2.5 = 295; 50 × 5 = 250; request 2 → 547.
    expect(reservationFor(100, 50, full)).toBe(547);
    // Writes at 2.000001 msats: ⌈118 × 2.000001⌉ = ⌈236.000118⌉ = 237; + 250.
    expect(reservationFor(100, 50, { ...plain, cacheWriteRate: 2_000_001 })).toBe(487);
  });

  it('reserves the completion allowance for every choice and the image fee for every image', () => {
    // 118 × 2 = 236; 3 choices × 50 × 5 = 750.
    expect(reservationFor(100, 50, plain, 3)).toBe(986);
    // full with 2 choices and 3 images: 295 + ⌈3 × 3.333333⌉ = 10 → 305; 2 × 50 × 5 = 500; request 2.
    expect(reservationFor(100, 50, full, 2, 3)).toBe(807);
    // One choice, no images by default.
    expect(reservationFor(100, 50, full, 1, 0)).toBe(547);
  });
});

describe('msatsPricing', () => {
  it.each([
    {
      name: 'gives every rate and fee in msats',
      price: full,
      msats: { prompt: 2, completion: 5, cached: 0.5, write: 2.5, request: 1.5, image: 3.333333 },
    },
    {
      name: 'gives cache reads and writes at the prompt rate, and no fees, when the model has none',
      price: plain,
      msats: { prompt: 2, completion: 5, cached: 2, write: 2, request: 0, image: 0 },
    },
  ])('$name', ({ price, msats: m }) => {
    expect(msatsPricing(price)).toStrictEqual({
      prompt_msats_per_token: m.prompt,
      completion_msats_per_token: m.completion,
      cached_prompt_msats_per_token: m.cached,
      cache_write_msats_per_token: m.write,
      request_msats: m.request,
      image_msats: m.image,
    });
  });
});

describe('satsPricing (RIP-05)', () => {
  // Both: max prompt 8000 × 2 = 16000 msats; max completion 1000 × 5 = 5000 msats.
  it.each([
    {
      name: 'gives sats per token and fee, and the worst cases in sats',
      // max cost: (8000 − 1000) × 2 + 1000 × 5 + request 2 = 19002 msats.
      price: full,
      own: { request: 0.0015, image: 0.003333333, input_cache_read: 0.0005, input_cache_write: 0.0025, max_cost: 19.002 },
    },
    {
      name: 'falls back to the prompt rate for the cache and to no fees',
      // max cost: 7000 × 2 + 1000 × 5 = 19000 msats.
      price: plain,
      own: { request: 0, image: 0, input_cache_read: 0.002, input_cache_write: 0.002, max_cost: 19 },
    },
  ])('$name', ({ price, own }) => {
    expect(satsPricing(price)).toStrictEqual({
      prompt: 0.002,
      completion: 0.005,
      request: own.request,
      image: own.image,
      web_search: 0,
      internal_reasoning: 0.005,
      input_cache_read: own.input_cache_read,
      input_cache_write: own.input_cache_write,
      max_prompt_cost: 16,
      max_completion_cost: 5,
      max_cost: own.max_cost,
    });
  });

  it('holds the completion to the context when the cap is larger than it', () => {
    // cap 10000 > context 8000: completion at most 8000 × 5 = 40000 msats; the prompt gets 0 tokens.
    const s = satsPricing({ ...plain, maxCompletionTokens: 10_000 });
    expect(s.max_completion_cost).toBe(40);
    expect(s.max_cost).toBe(40);
    expect(s.max_prompt_cost).toBe(16);
  });

  it('rounds a sub-msat worst case up to a whole msat before turning it into sats', () => {
    // 0.1 msat a prompt token: 8000 × 0.1 = 800 msats; 0.3 a completion token: 1000 × 0.3 = 300;
    // worst case 7000 × 0.1 + 300 = 1000.
    const s = satsPricing({ ...plain, promptRate: 100_000, completionRate: 300_000 });
    expect([s.max_prompt_cost, s.max_completion_cost, s.max_cost]).toStrictEqual([0.8, 0.3, 1]);
    const t = satsPricing({ ...plain, promptRate: 100, completionRate: 100 });
    // 8000 × 0.0001 = 0.8 → 1; 1000 × 0.0001 = 0.1 → 1; 7000 × 0.0001 = 0.7 → 1, + 1 = 2.
    expect([t.max_prompt_cost, t.max_completion_cost, t.max_cost]).toStrictEqual([0.001, 0.001, 0.002]);
  });
});
