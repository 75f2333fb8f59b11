import type { Codec, WireFormat } from '../engine/format.ts';
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
};

registerCodec(messagesCodec);

/** `POST /v1/messages`, for Claude Code and every Anthropic SDK. */
export const messagesFormat: WireFormat = codecFormat({ name: 'messages', codec: messagesCodec, parse: parseMessages, errorBody: messagesErrorBody });
