import type { PriceRate } from '../upstream/upstreams.ts';

/** A model's rates (upstream/upstreams.ts: what the operator set), and what it can take. */
export interface Price extends PriceRate {
  maxCompletionTokens: number;
  contextLength: number;
  /** The most one image may bill, in prompt tokens (tokens.ts `imageTokensFor`). */
  imageTokens?: number | undefined;
}

export interface Usage {
  /** Every input token, those read from or written to the provider's cache included. */
  promptTokens: number;
  /** Every output token, reasoning included. */
  completionTokens: number;
  /** Of the prompt: tokens read from the provider's cache. */
  cachedTokens?: number | undefined;
  /** Of the prompt: tokens written to the provider's cache. */
  cacheWriteTokens?: number | undefined;
  /** Of the cache writes: those to Anthropic's 1-hour cache, billed above 5-minute ones. */
  cacheWrite1hTokens?: number | undefined;
  /** Of the completion: reasoning tokens. */
  reasoningTokens?: number | undefined;
}

export interface Cost {
  /** Every input token, cached and cache-written ones included, and per-image fees. */
  inputMsats: number;
  outputMsats: number;
  totalMsats: number;
  /** The per-request fee, when the model has one (part of the total, not of input or output). */
  requestMsats?: number | undefined;
}

const MICRO = 1_000_000n;

function ceilMul(tokens: number, rate: number): number {
  const p = BigInt(tokens) * BigInt(rate);
  return Number((p + MICRO - 1n) / MICRO);
}

/**
 * The rate of a write to the 1-hour cache. Anthropic bills it at 2x base input, where a 5-minute
 * write is 1.25x (the configured `cache_write`): so twice the prompt price, as the provider derives
 * it, and never less than a 5-minute write.
 */
export function cacheWrite1hRate(price: PriceRate): number {
  return Math.max(2 * price.promptRate, price.cacheWriteRate ?? price.promptRate);
}

/**
 * What a usage costs: uncached input at the prompt rate, cache reads and writes at their own
 * rates (1-hour writes at `cacheWrite1hRate`), output (reasoning included) at the completion rate,
 * plus the per-request and per-image fees. Each part is rounded up to a whole msat.
 */
export function costOf(usage: Usage, price: Price, images = 0): Cost {
  const cached = Math.min(usage.cachedTokens ?? 0, usage.promptTokens);
  const written = Math.min(usage.cacheWriteTokens ?? 0, usage.promptTokens - cached);
  const long = Math.min(usage.cacheWrite1hTokens ?? 0, written);
  const plain = usage.promptTokens - cached - written;
  let inputMsats = ceilMul(plain, price.promptRate);
  if (cached) inputMsats += ceilMul(cached, price.cachedRate ?? price.promptRate);
  if (written > long) inputMsats += ceilMul(written - long, price.cacheWriteRate ?? price.promptRate);
  if (long) inputMsats += ceilMul(long, cacheWrite1hRate(price));
  if (images && price.imageFee) inputMsats += ceilMul(images, price.imageFee);
  const outputMsats = ceilMul(usage.completionTokens, price.completionRate);
  const requestMsats = price.requestFee ? ceilMul(1, price.requestFee) : 0;
  const cost: Cost = { inputMsats, outputMsats, totalMsats: inputMsats + outputMsats + requestMsats };
  if (requestMsats) cost.requestMsats = requestMsats;
  return cost;
}

/**
 * Our tokenizer is not the upstream's: pad the prompt estimate so a reservation rarely falls
 * short of what the upstream later reports.
 */
export function promptAllowance(counted: number): number {
  return counted + Math.ceil(counted / 10) + 8;
}

/** The completion limit a request is held to: what it asked for, at most the model's cap. */
export function completionLimit(requested: number | undefined, price: Price): number {
  return Math.min(requested ?? price.maxCompletionTokens, price.maxCompletionTokens);
}

/**
 * The most a request can cost: its padded prompt plus every completion token it may ask for, for
 * each of the `choices` it asks for. `longCache`: it asks for the 1-hour cache (`longCacheWrites`).
 */
export function reservationFor(promptTokens: number, maxCompletion: number, price: Price, choices = 1, images = 0, longCache = false): number {
  return costOf(mostUsage(promptTokens, maxCompletion, price, choices, longCache), price, images).totalMsats;
}

/** The usage `reservationFor` prices: the most a request can be billed for. */
export function mostUsage(promptTokens: number, maxCompletion: number, price: Price, choices = 1, longCache = false): Usage {
  // The worst case writes the whole prompt to the cache, when that costs more than reading it
  // plainly: to the 1-hour cache when the request asks for it anywhere.
  const prompt = promptAllowance(promptTokens);
  const writeRate = longCache ? cacheWrite1hRate(price) : (price.cacheWriteRate ?? 0);
  const writes = writeRate > price.promptRate ? prompt : 0;
  const usage: Usage = { promptTokens: prompt, cacheWriteTokens: writes, completionTokens: maxCompletion * choices };
  if (longCache) usage.cacheWrite1hTokens = writes;
  return usage;
}

/** Our exact prices, in msats: per token, per request and per image. */
export function msatsPricing(price: Price) {
  return {
    prompt_msats_per_token: price.promptRate / 1e6,
    completion_msats_per_token: price.completionRate / 1e6,
    cached_prompt_msats_per_token: (price.cachedRate ?? price.promptRate) / 1e6,
    cache_write_msats_per_token: (price.cacheWriteRate ?? price.promptRate) / 1e6,
    request_msats: (price.requestFee ?? 0) / 1e6,
    image_msats: (price.imageFee ?? 0) / 1e6,
  };
}

/**
 * Routstr's `sats_pricing` (OpenRouter's field names, RIP-05): sats per token (fractional), per
 * request and per image, and worst-case costs in sats.
 */
export function satsPricing(price: Price) {
  const maxCompletion = Math.min(price.maxCompletionTokens, price.contextLength);
  const maxPrompt = ceilMul(price.contextLength, price.promptRate);
  const maxCompletionCost = ceilMul(maxCompletion, price.completionRate);
  const maxCost = costOf(
    { promptTokens: price.contextLength - maxCompletion, completionTokens: maxCompletion },
    price,
  ).totalMsats;
  return {
    prompt: price.promptRate / 1e9,
    completion: price.completionRate / 1e9,
    request: (price.requestFee ?? 0) / 1e9,
    image: (price.imageFee ?? 0) / 1e9,
    web_search: 0,
    // Reasoning is billed as completion tokens.
    internal_reasoning: price.completionRate / 1e9,
    input_cache_read: (price.cachedRate ?? price.promptRate) / 1e9,
    input_cache_write: (price.cacheWriteRate ?? price.promptRate) / 1e9,
    max_prompt_cost: maxPrompt / 1000,
    max_completion_cost: maxCompletionCost / 1000,
    max_cost: maxCost / 1000,
  };
}
