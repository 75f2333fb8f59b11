import type { Bill } from '../engine/format.ts';
import type { Cost, Usage as PricedUsage } from '../engine/pricing.ts';

/** A count no upstream could mean (negative, huge, not finite) is not believed: we count ourselves. */
function count(v: unknown): number | undefined {
  if (v == null) return 0;
  if (typeof v !== 'number' || !(v >= 0 && v < 1e9)) return undefined;
  return Math.ceil(v);
}

/**
 * The cache writes of an Anthropic usage (or of chat's, which carries Anthropic's names):
 * `cache_creation` splits them by TTL, 1-hour writes billing above 5-minute ones;
 * `cache_creation_input_tokens` is their sum, and all an older API reports. The sum is never
 * believed below its parts: what it holds beyond them is billed as 5-minute writes. Undefined
 * when a count is one no upstream could mean.
 */
export function cacheWritesOf(o: Record<string, unknown>): { write: number; long: number } | undefined {
  const total = count(o.cache_creation_input_tokens);
  const split = o.cache_creation;
  if (!split || typeof split !== 'object') return total === undefined ? undefined : { write: total, long: 0 };
  const short = count((split as Record<string, unknown>).ephemeral_5m_input_tokens);
  const long = count((split as Record<string, unknown>).ephemeral_1h_input_tokens);
  if (total === undefined || short === undefined || long === undefined) return undefined;
  return { write: Math.max(total, short + long), long };
}

/** Sets the cache writes (of the prompt left after `cachedTokens`) on a usage. */
function setWrites(usage: PricedUsage, writes: { write: number; long: number }, room: number): void {
  const write = Math.min(writes.write, room);
  if (write) usage.cacheWriteTokens = write;
  if (write && writes.long) usage.cacheWrite1hTokens = Math.min(writes.long, write);
}

/** Anthropic's `cache_creation`, from our usage: written only when there are 1-hour writes. */
function splitBody(usage: PricedUsage): Record<string, unknown> | undefined {
  const long = usage.cacheWrite1hTokens ?? 0;
  if (!long) return undefined;
  return { ephemeral_5m_input_tokens: Math.max(0, (usage.cacheWriteTokens ?? 0) - long), ephemeral_1h_input_tokens: long };
}

/**
 * Anthropic's usage, normalized. Its `input_tokens` leaves out the tokens read from and written
 * to the cache, which are billed at their own rates; our `promptTokens` counts every input token.
 */
export function messagesUsageOf(u: unknown): PricedUsage | undefined {
  if (!u || typeof u !== 'object') return undefined;
  const o = u as Record<string, unknown>;
  if (typeof o.input_tokens !== 'number' && typeof o.output_tokens !== 'number') return undefined;
  const input = count(o.input_tokens);
  const output = count(o.output_tokens);
  const read = count(o.cache_read_input_tokens);
  const writes = cacheWritesOf(o);
  const details = o.output_tokens_details as Record<string, unknown> | null | undefined;
  const thinking = count(details?.thinking_tokens);
  if (input === undefined || output === undefined || read === undefined || writes === undefined || thinking === undefined) return undefined;
  const usage: PricedUsage = { promptTokens: input + read + writes.write, completionTokens: output };
  if (read) usage.cachedTokens = read;
  setWrites(usage, writes, writes.write);
  if (thinking) usage.reasoningTokens = Math.min(thinking, output);
  return usage;
}

/** Our usage in Anthropic's words: `input_tokens` without the cached and cache-written ones. */
export function messagesUsageBody(usage: PricedUsage): Record<string, unknown> {
  const read = usage.cachedTokens ?? 0;
  const write = usage.cacheWriteTokens ?? 0;
  const body: Record<string, unknown> = {
    input_tokens: Math.max(0, usage.promptTokens - read - write),
    output_tokens: usage.completionTokens,
    cache_creation_input_tokens: write,
    cache_read_input_tokens: read,
  };
  const split = splitBody(usage);
  if (split) body.cache_creation = split;
  if (usage.reasoningTokens) body.output_tokens_details = { thinking_tokens: usage.reasoningTokens };
  return body;
}

/** Chat's usage object (OpenAI's names, plus Anthropic's for cache writes and their split), normalized. */
export function chatUsageOf(u: unknown): PricedUsage | undefined {
  if (!u || typeof u !== 'object') return undefined;
  const o = u as Record<string, unknown>;
  if (typeof o.prompt_tokens !== 'number') return undefined;
  const prompt = count(o.prompt_tokens);
  const completion = count(o.completion_tokens);
  const read = count((o.prompt_tokens_details as Record<string, unknown> | null | undefined)?.cached_tokens);
  const writes = cacheWritesOf(o);
  const reasoning = count((o.completion_tokens_details as Record<string, unknown> | null | undefined)?.reasoning_tokens);
  if (prompt === undefined || completion === undefined || read === undefined || writes === undefined || reasoning === undefined) return undefined;
  const usage: PricedUsage = { promptTokens: prompt, completionTokens: completion };
  if (read) usage.cachedTokens = Math.min(read, prompt);
  setWrites(usage, writes, prompt - (usage.cachedTokens ?? 0));
  if (reasoning) usage.reasoningTokens = Math.min(reasoning, completion);
  return usage;
}

export function chatUsageBody(usage: PricedUsage): Record<string, unknown> {
  const body: Record<string, unknown> = {
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    total_tokens: usage.promptTokens + usage.completionTokens,
  };
  if (usage.cachedTokens) body.prompt_tokens_details = { cached_tokens: usage.cachedTokens };
  if (usage.reasoningTokens) body.completion_tokens_details = { reasoning_tokens: usage.reasoningTokens };
  if (usage.cacheWriteTokens) body.cache_creation_input_tokens = usage.cacheWriteTokens;
  // Chat has no TTLs: Anthropic's split rides under its own name, for the meter to bill it.
  const split = splitBody(usage);
  if (split) body.cache_creation = split;
  return body;
}

/**
 * The charge as the chat door writes it (`input_msats`, `output_msats`, `total_msats`…): every
 * part of the engine's `Cost`, in snake case, so a part the engine adds shows up here unchanged.
 */
export function costBody(cost: Cost): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(cost)) {
    if (typeof v === 'number') out[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = v;
  }
  return out;
}

/** Usage with our charge, as the last `message_delta` and a whole message carry it. */
export function billedUsage(bill: Bill): Record<string, unknown> {
  return { ...messagesUsageBody(bill.usage), cost: costBody(bill.cost) };
}

/** Writes the charge into a whole Messages answer (change travels in the X-Cashu header). */
export function billMessage(body: Record<string, unknown>, bill: Bill): void {
  body.usage = billedUsage(bill);
}
