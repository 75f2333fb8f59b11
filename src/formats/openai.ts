import type { Bill, Exchange, Metered } from '../engine/format.ts';
import type { Usage } from '../engine/pricing.ts';
import { cacheWritesOf } from './messages-usage.ts';

/** What every OpenAI-shaped usage and error carries; shared by chat, completions and embeddings. */

export function safeParse(s: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(s) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const believable = (n: unknown): n is number => typeof n === 'number' && n >= 0 && n < 1e9;

/**
 * OpenAI's usage (`prompt_tokens`, `completion_tokens` and their details), or the
 * `input_tokens`/`output_tokens` some OpenAI-compatible upstreams use. A count no upstream could
 * mean (negative, huge, not a number) is ignored: the gateway counts itself instead.
 */
export function openaiUsage(u: unknown): Usage | undefined {
  if (!u || typeof u !== 'object') return undefined;
  const o = u as Record<string, unknown>;
  const prompt = o.prompt_tokens ?? o.input_tokens;
  const completion = o.completion_tokens ?? o.output_tokens ?? 0;
  if (!believable(prompt) || !believable(completion)) return undefined;
  const usage: Usage = { promptTokens: Math.ceil(prompt), completionTokens: Math.ceil(completion) };
  const pd = (o.prompt_tokens_details ?? o.input_tokens_details) as Record<string, unknown> | undefined;
  const cd = (o.completion_tokens_details ?? o.output_tokens_details) as Record<string, unknown> | undefined;
  if (believable(pd?.cached_tokens) && pd.cached_tokens > 0) usage.cachedTokens = Math.min(Math.ceil(pd.cached_tokens), usage.promptTokens);
  // Anthropic's names, which its translation to chat keeps: the writes, split by TTL.
  const writes = cacheWritesOf(o);
  if (writes && writes.write > 0) {
    usage.cacheWriteTokens = Math.min(writes.write, usage.promptTokens - (usage.cachedTokens ?? 0));
    if (writes.long && usage.cacheWriteTokens) usage.cacheWrite1hTokens = Math.min(writes.long, usage.cacheWriteTokens);
  }
  if (believable(cd?.reasoning_tokens) && cd.reasoning_tokens > 0) usage.reasoningTokens = Math.min(Math.ceil(cd.reasoning_tokens), usage.completionTokens);
  return usage;
}

/** The usage object a client sees: the upstream's own (or ours, if it sent none) plus what it cost. */
export function billedUsage(original: unknown, bill: Bill): Record<string, unknown> {
  const { usage, cost } = bill;
  const base =
    original && typeof original === 'object'
      ? (original as Record<string, unknown>)
      : { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens, total_tokens: usage.promptTokens + usage.completionTokens };
  return { ...base, cost: costBody(bill), cost_sats: cost.totalMsats / 1000 };
}

export function costBody(bill: Bill): Record<string, number> {
  const c = bill.cost;
  return { base_msats: c.requestMsats ?? 0, input_msats: c.inputMsats, output_msats: c.outputMsats, total_msats: c.totalMsats };
}

/**
 * Every generated field of a chat or completion choice (or delta): text, reasoning (vLLM and
 * DeepSeek's `reasoning_content`, OpenRouter's `reasoning`), tool calls, refusals, audio
 * transcripts. Counting only `content` would make a reasoning reply nearly free.
 */
export function generatedOf(choices: unknown, key: 'message' | 'delta'): string {
  if (!Array.isArray(choices)) return '';
  let s = '';
  for (const c of choices as Array<Record<string, unknown> | null>) {
    if (!c || typeof c !== 'object') continue;
    if (typeof c.text === 'string') s += c.text;
    const m = c[key] as Record<string, unknown> | undefined;
    if (!m || typeof m !== 'object') continue;
    for (const f of ['content', 'reasoning_content', 'reasoning', 'refusal'] as const) if (typeof m[f] === 'string') s += m[f];
    if (m.tool_calls != null) s += JSON.stringify(m.tool_calls);
    if (m.function_call != null) s += JSON.stringify(m.function_call);
    const audio = m.audio as { transcript?: unknown } | undefined;
    if (typeof audio?.transcript === 'string') s += audio.transcript;
  }
  return s;
}

/**
 * Whether a chat request asks its model to reason: OpenAI's `reasoning_effort` (any value but
 * `none`: `minimal` still reasons, a little), OpenRouter's `reasoning` unless it turns it off
 * (`exclude` hides it, it does not stop it), OpenRouter's older `include_reasoning`, or
 * Anthropic's `thinking` unless disabled (its OpenAI-compatible endpoint, which streams none of it).
 */
function asksReasoning(body: Record<string, unknown>): boolean {
  const effort = body.reasoning_effort;
  if (typeof effort === 'string' && effort !== 'none') return true;
  const r = body.reasoning as Record<string, unknown> | null | undefined;
  if (r && typeof r === 'object' && r.enabled !== false && r.effort !== 'none') return true;
  const t = body.thinking as Record<string, unknown> | null | undefined;
  if (t && typeof t === 'object' && t.type !== 'disabled') return true;
  return body.include_reasoning === true;
}

/** What an exchange with a chat upstream says of its model's reasoning, for a request `body` as sent. */
export function chatReasoning(body: Record<string, unknown>): Pick<Exchange, 'hidesReasoning' | 'reasons'> {
  return { hidesReasoning: true, reasons: asksReasoning(body) };
}

/** Metering of a whole OpenAI-shaped answer. */
export function meterBody(body: Record<string, unknown>): Metered {
  return {
    usage: openaiUsage(body.usage),
    model: typeof body.model === 'string' ? body.model : undefined,
    get generated() {
      return generatedOf(body.choices, 'message');
    },
  };
}

/** Output limits upstreams honour besides OpenAI's: llama.cpp, TGI, Ollama's native option. */
const LIMIT_ALIASES = ['n_predict', 'max_new_tokens', 'num_predict'] as const;

/**
 * Holds an OpenAI-shaped body to `max` output tokens: every limit field present is set to it
 * (both of OpenAI's when both are sent, a negative or huge llama.cpp `n_predict` included), and
 * `max_tokens` when none is, since some OpenAI-compatible servers know no other.
 */
export function limitOpenAI(body: Record<string, unknown>, max: number, primary: 'max_tokens' | 'max_completion_tokens' = 'max_tokens'): void {
  let set = false;
  for (const f of ['max_tokens', 'max_completion_tokens', ...LIMIT_ALIASES]) {
    if (body[f] != null) {
      body[f] = max;
      set = true;
    }
  }
  const options = body.options;
  if (options && typeof options === 'object' && (options as Record<string, unknown>).num_predict != null) {
    body.options = { ...(options as Record<string, unknown>), num_predict: max };
  }
  if (!set) body[primary] = max;
}

