import { EngineError } from '../engine/errors.ts';
import type { Bill } from '../engine/format.ts';
import type { Usage } from '../engine/pricing.ts';
import { given, isObj, suffixOf, type Obj } from './responses-shared.ts';

/** Whole answers between the Responses API and chat completions, and their usage. */

function count(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 && v < 1e9 ? Math.ceil(v) : undefined;
}

/**
 * Responses usage: `input_tokens` counts every input token (cached and cache writes included) and
 * `output_tokens` every output token (reasoning included). A detail larger than its total is not
 * believable and is held to the total, so it can never make a bill smaller than the tokens used.
 */
export function usageOf(raw: unknown): Usage | undefined {
  if (!isObj(raw)) return undefined;
  const promptTokens = count(raw.input_tokens);
  const completionTokens = count(raw.output_tokens ?? 0);
  if (promptTokens === undefined || completionTokens === undefined) return undefined;
  const usage: Usage = { promptTokens, completionTokens };
  const input = isObj(raw.input_tokens_details) ? raw.input_tokens_details : {};
  const output = isObj(raw.output_tokens_details) ? raw.output_tokens_details : {};
  const cached = count(input.cached_tokens);
  const writes = count(input.cache_write_tokens);
  const reasoning = count(output.reasoning_tokens);
  if (cached) usage.cachedTokens = Math.min(cached, promptTokens);
  if (writes) usage.cacheWriteTokens = Math.min(writes, promptTokens - (usage.cachedTokens ?? 0));
  if (reasoning) usage.reasoningTokens = Math.min(reasoning, completionTokens);
  return usage;
}

/** Responses usage as chat writes it (see `Codec` in src/engine/format.ts). */
export function usageToChat(raw: unknown): Obj | undefined {
  const u = usageOf(raw);
  if (!u) return undefined;
  const chat: Obj = {
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.promptTokens + u.completionTokens,
    prompt_tokens_details: { cached_tokens: u.cachedTokens ?? 0 },
    completion_tokens_details: { reasoning_tokens: u.reasoningTokens ?? 0 },
  };
  if (u.cacheWriteTokens) chat.cache_creation_input_tokens = u.cacheWriteTokens;
  return chat;
}

/** Chat usage (or our own `Usage`) in the Responses shape. */
export function usageFromChat(raw: unknown): Obj | undefined {
  if (!isObj(raw)) return undefined;
  const prompt = count(raw.prompt_tokens);
  const completion = count(raw.completion_tokens ?? 0);
  if (prompt === undefined || completion === undefined) return undefined;
  const pd = isObj(raw.prompt_tokens_details) ? raw.prompt_tokens_details : {};
  const cd = isObj(raw.completion_tokens_details) ? raw.completion_tokens_details : {};
  return responsesUsage({
    promptTokens: prompt,
    completionTokens: completion,
    cachedTokens: count(pd.cached_tokens),
    cacheWriteTokens: count(raw.cache_creation_input_tokens),
    reasoningTokens: count(cd.reasoning_tokens),
  });
}

export function responsesUsage(u: Usage): Obj {
  return {
    input_tokens: u.promptTokens,
    input_tokens_details: { cached_tokens: u.cachedTokens ?? 0, cache_write_tokens: u.cacheWriteTokens ?? 0 },
    output_tokens: u.completionTokens,
    output_tokens_details: { reasoning_tokens: u.reasoningTokens ?? 0 },
    total_tokens: u.promptTokens + u.completionTokens,
  };
}

/** What the client paid, in the Responses usage object, as the chat door writes `usage.cost`. */
export function billUsage(bill: Bill): Obj {
  return {
    ...responsesUsage(bill.usage),
    cost: { base_msats: 0, input_msats: bill.cost.inputMsats, output_msats: bill.cost.outputMsats, total_msats: bill.cost.totalMsats },
    cost_sats: bill.cost.totalMsats / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// Responses → chat

export function finishReasonOf(response: Obj, toolCalls: boolean): string {
  if (response.status === 'incomplete') {
    const reason = isObj(response.incomplete_details) ? response.incomplete_details.reason : undefined;
    return reason === 'content_filter' ? 'content_filter' : 'length';
  }
  return toolCalls ? 'tool_calls' : 'stop';
}

export function upstreamFailure(error: unknown): EngineError {
  const e = isObj(error) ? error : {};
  const message = typeof e.message === 'string' ? e.message : 'The upstream could not finish the response.';
  if (e.code === 'rate_limit_exceeded') return new EngineError('upstream_rate_limited', `Upstream rate limit: ${message}`);
  return new EngineError('upstream_error', `Upstream error: ${message}`);
}

export function responseToChat(body: Obj): Obj {
  if (body.status === 'failed' || body.status === 'cancelled') throw upstreamFailure(body.error);
  let text = '';
  let refusal = '';
  let reasoning = '';
  const toolCalls: Obj[] = [];
  for (const item of Array.isArray(body.output) ? body.output : []) {
    if (!isObj(item)) continue;
    if (item.type === 'message' && Array.isArray(item.content)) {
      for (const part of item.content) {
        if (isObj(part) && part.type === 'output_text' && typeof part.text === 'string') text += part.text;
        if (isObj(part) && part.type === 'refusal' && typeof part.refusal === 'string') refusal += part.refusal;
      }
    } else if (item.type === 'function_call') {
      toolCalls.push({ id: item.call_id, type: 'function', function: { name: item.name, arguments: item.arguments ?? '' } });
    } else if (item.type === 'reasoning') {
      reasoning += reasoningText(item);
    }
  }
  const message: Obj = { role: 'assistant', content: text || (toolCalls.length || refusal ? null : '') };
  if (refusal) message.refusal = refusal;
  if (toolCalls.length) message.tool_calls = toolCalls;
  if (reasoning) message.reasoning_content = reasoning;
  const chat: Obj = {
    id: typeof body.id === 'string' ? body.id : 'resp_gateway',
    object: 'chat.completion',
    created: typeof body.created_at === 'number' ? Math.floor(body.created_at) : 0,
    model: body.model,
    choices: [{ index: 0, message, finish_reason: finishReasonOf(body, toolCalls.length > 0), logprobs: null }],
  };
  const usage = usageToChat(body.usage);
  if (usage) chat.usage = usage;
  if (given(body.service_tier)) chat.service_tier = body.service_tier;
  return chat;
}

/** A reasoning item's summary, or its full text when the upstream gave that instead. */
function reasoningText(item: Obj): string {
  const parts = [...(Array.isArray(item.summary) ? item.summary : []), ...(Array.isArray(item.content) ? item.content : [])];
  return parts.map((p) => (isObj(p) && typeof p.text === 'string' ? p.text : '')).filter(Boolean).join('\n\n');
}

// ---------------------------------------------------------------------------------------------
// chat → Responses

/** What a Response echoes of its request; without the request, the API's defaults. */
export function responseEcho(request: Obj | undefined): Obj {
  const r = request ?? {};
  return {
    instructions: r.instructions ?? null,
    max_output_tokens: r.max_output_tokens ?? null,
    metadata: r.metadata ?? {},
    parallel_tool_calls: r.parallel_tool_calls ?? true,
    previous_response_id: null,
    reasoning: { effort: isObj(r.reasoning) ? r.reasoning.effort ?? null : null, summary: isObj(r.reasoning) ? r.reasoning.summary ?? null : null },
    store: false,
    temperature: r.temperature ?? null,
    text: isObj(r.text) ? r.text : { format: { type: 'text' } },
    tool_choice: r.tool_choice ?? 'auto',
    tools: Array.isArray(r.tools) ? r.tools : [],
    top_p: r.top_p ?? null,
    truncation: r.truncation ?? 'disabled',
    user: r.user ?? null,
  };
}

export interface Ids {
  response: string;
  message: string;
  reasoning: string;
}

export function idsFor(chatId: unknown, fallback: string): Ids {
  const s = suffixOf(chatId, fallback);
  return { response: `resp_${s}`, message: `msg_${s}`, reasoning: `rs_${s}` };
}

export function statusOf(finish: unknown): { status: string; incomplete_details: Obj | null } {
  if (finish === 'length') return { status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' } };
  if (finish === 'content_filter') return { status: 'incomplete', incomplete_details: { reason: 'content_filter' } };
  // No finish at all: the upstream stopped short (a cut stream), and the answer may be partial.
  if (finish == null) return { status: 'incomplete', incomplete_details: null };
  return { status: 'completed', incomplete_details: null };
}

function messageItem(id: string, text: string, refusal: string, status: string): Obj {
  const content: Obj[] = [];
  if (text || !refusal) content.push({ type: 'output_text', text, annotations: [], logprobs: [] });
  if (refusal) content.push({ type: 'refusal', refusal });
  return { id, type: 'message', status, role: 'assistant', content };
}

export function reasoningItem(id: string, text: string): Obj {
  return { id, type: 'reasoning', summary: [{ type: 'summary_text', text }] };
}

export function functionCallItem(call: { id: string; callId: string; name: string; arguments: string }, status: string): Obj {
  return { id: call.id, type: 'function_call', status, arguments: call.arguments, call_id: call.callId, name: call.name };
}

export function responseFromChat(chat: Obj, request?: Obj): Obj {
  const choice = Array.isArray(chat.choices) && isObj(chat.choices[0]) ? chat.choices[0] : {};
  const msg = isObj(choice.message) ? choice.message : {};
  const ids = idsFor(chat.id, 'gateway');
  const { status, incomplete_details } = statusOf(choice.finish_reason);
  const output: Obj[] = [];
  const reasoning = typeof msg.reasoning_content === 'string' ? msg.reasoning_content : typeof msg.reasoning === 'string' ? msg.reasoning : '';
  if (reasoning) output.push(reasoningItem(ids.reasoning, reasoning));
  const text = typeof msg.content === 'string' ? msg.content : '';
  const refusal = typeof msg.refusal === 'string' ? msg.refusal : '';
  const calls = Array.isArray(msg.tool_calls) ? msg.tool_calls.filter(isObj) : [];
  if (text || refusal || calls.length === 0) output.push(messageItem(ids.message, text, refusal, status === 'completed' ? 'completed' : 'incomplete'));
  for (const c of calls) {
    const fn = isObj(c.function) ? c.function : {};
    const callId = String(c.id ?? '');
    output.push(functionCallItem({ id: `fc_${suffixOf(callId, ids.message)}`, callId, name: String(fn.name ?? ''), arguments: String(fn.arguments ?? '') }, 'completed'));
  }
  const body: Obj = {
    id: ids.response,
    object: 'response',
    created_at: typeof chat.created === 'number' ? chat.created : 0,
    status,
    error: null,
    incomplete_details,
    model: chat.model,
    output,
    ...responseEcho(request),
  };
  const usage = usageFromChat(chat.usage);
  if (usage) body.usage = usage;
  if (given(chat.service_tier)) body.service_tier = chat.service_tier;
  return body;
}
