import { EngineError } from '../engine/errors.ts';
import type { ClientHeaders, Codec, WireFormat } from '../engine/format.ts';
import type { ClientRequest } from './compose.ts';
import { codecFormat, registerCodec } from './compose.ts';
import { parseMessages } from './messages-parse.ts';
import { messagesRelay } from './messages-relay.ts';
import { billMessage } from './messages-usage.ts';
import { messagesErrorBody } from './messages-errors.ts';
import { messagesDecoder, messagesEncoder } from './messages-stream.ts';
import {
  messagesRequestFromChat,
  messagesRequestToChat,
  messagesResponseFromChat,
  messagesResponseToChat,
} from './messages-translate.ts';
import { messagesUsageOf } from './messages-usage.ts';
import { refuseUnpriced } from './unpriced.ts';

export { countTokensEstimate, parseMessages, type ParsedMessages } from './messages-parse.ts';
export { billMessage } from './messages-usage.ts';
export { messagesGenerated, messagesRelay } from './messages-relay.ts';
export const errorBody = messagesErrorBody;

/** Anthropic's least thinking budget: a request held below it cannot think at all. */
const MIN_THINKING_BUDGET = 1024;

/**
 * Holds a Messages request to `maxTokens` of output. Thinking counts toward `max_tokens` and its
 * budget must stay below it, so a budget the new limit no longer leaves room for is lowered, or
 * thinking is turned off when not even Anthropic's least budget fits.
 */
export function limitMessages(body: Record<string, unknown>, maxTokens: number): void {
  body.max_tokens = maxTokens;
  const thinking = body.thinking as Record<string, unknown> | undefined;
  if (thinking?.type === 'enabled' && typeof thinking.budget_tokens === 'number' && thinking.budget_tokens >= maxTokens) {
    if (maxTokens - 1 >= MIN_THINKING_BUDGET) body.thinking = { ...thinking, budget_tokens: maxTokens - 1 };
    else body.thinking = { type: 'disabled' };
  }
}

export const messagesCodec: Codec = {
  kind: 'anthropic',
  path: '/messages',
  requestToChat: messagesRequestToChat,
  requestFromChat: messagesRequestFromChat,
  responseToChat: messagesResponseToChat,
  responseFromChat: messagesResponseFromChat,
  decoder: messagesDecoder,
  encoder: messagesEncoder,
  usageOf: messagesUsageOf,
  limit: limitMessages,
  relay: messagesRelay,
  billBody: billMessage,
  forward: forwardBetas,
};

registerCodec(messagesCodec);

/**
 * Anthropic betas that change only how a request is written or streamed, not what it costs
 * beyond its tokens; they are passed on to an Anthropic upstream. Others (a 1M context billed at
 * a premium, files, MCP, server-side tools) are dropped. Computer use runs on the client and is
 * billed as tokens: its hidden prompt and tool definition are reserved as a typed tool's.
 */
const FREE_BETAS = new Set([
  'claude-code-20250219',
  'interleaved-thinking-2025-05-14',
  'fine-grained-tool-streaming-2025-05-14',
  'context-management-2025-06-27',
  'token-efficient-tools-2025-02-19',
  'output-128k-2025-02-19',
  'prompt-caching-2024-07-31',
  'mid-conversation-tool-changes-2026-07-01',
  'thinking-token-count-2026-05-13',
  'advanced-tool-use-2025-11-20',
  'effort-2025-11-24',
  'structured-outputs-2025-11-13',
  'computer-use-2024-10-22',
  'computer-use-2025-01-24',
  'computer-use-2025-11-24',
]);

function forwardBetas(headers: ClientHeaders): Record<string, string> | undefined {
  const raw = headers['anthropic-beta'];
  const betas = (Array.isArray(raw) ? raw.join(',') : (raw ?? '')).split(',').map((b) => b.trim()).filter((b) => FREE_BETAS.has(b));
  return betas.length ? { 'anthropic-beta': betas.join(',') } : undefined;
}

/** Anthropic's own tools that run on its platform and are billed per use, which no price here covers. */
const SERVER_TOOL = /^(web_search|web_fetch|code_execution|tool_search)/;

/**
 * Unpriced parameters (the priority tier, US-only inference, fast mode, MCP servers, containers)
 * on every upstream kind, as the chat door does; then, on an Anthropic upstream, server-side
 * tools, which cost per use: refused unless the operator allows them.
 */
function guardServerTools(req: ClientRequest, kind: string, allowed: ReadonlySet<string>): EngineError | ClientRequest {
  const unpriced = refuseUnpriced('messages', req.body, allowed);
  if (unpriced) return unpriced;
  if (kind !== 'anthropic') return req;
  const tools = (req.body.tools as Array<{ type?: unknown }> | undefined) ?? [];
  for (const [i, t] of tools.entries()) {
    const type = typeof t.type === 'string' ? t.type : '';
    const family = SERVER_TOOL.exec(type)?.[1];
    if (family && !allowed.has(family)) {
      return new EngineError('unpriced_parameter', `'tools.${i}': the '${type}' tool runs on the provider's platform and is billed per use, which this gateway does not price.`, {
        extra: { param: `tools.${i}` },
      });
    }
  }
  return req;
}

/** `POST /v1/messages`, for Claude Code and every Anthropic SDK. */
export const messagesFormat: WireFormat = codecFormat({
  name: 'messages',
  codec: messagesCodec,
  parse: parseMessages,
  errorBody: messagesErrorBody,
  guard: guardServerTools,
});
