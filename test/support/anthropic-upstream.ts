import type { IncomingMessage, ServerResponse } from 'node:http';
import { apiPath, json as jsonBody, readBody, ScriptedUpstream } from './scripted-upstream.ts';
import { REPLY_WORDS, upstreamPromptTokens } from './upstream.ts';

/**
 * A scripted Anthropic Messages upstream that answers like the real API: `x-api-key` and
 * `anthropic-version` checked, whole messages and the named event stream (`message_start`,
 * `content_block_*`, `ping`, `message_delta`, `message_stop`), usage with cache reads and writes
 * as Anthropic reports them (`input_tokens` without either), its error bodies and statuses.
 */
export type AnthropicMode =
  | 'ok' | 'tool' | 'thinking' | 'fail_400' | 'fail_429' | 'fail_500' | 'overloaded' | 'error_event' | 'cut' | 'stall';

export interface AnthropicRecorded {
  path: string;
  body: Record<string, unknown>;
  headers: { apiKey?: string | undefined; bearer: boolean; version?: string | undefined; beta?: string | undefined };
}

export const ANTHROPIC_KEY = 'sk-ant-upstream-test-key';
export const TOOL_INPUT = { city: 'Paris', unit: 'celsius' };
export const THINKING = 'The user wants the answer; it is forty two.';

export class FakeAnthropic extends ScriptedUpstream<AnthropicMode, AnthropicRecorded> {
  /** What the next answers report as read from and written to the prompt cache. */
  cache = { read: 0, write: 0 };
  /** Thinking tokens billed beyond those streamed: Claude 4 streams a summary of its thinking ('thinking' mode). */
  summarizedThinkingTokens = 0;
  /** Delay before a stream's `message_delta`: a client may leave once it has the answer, before the usage. */
  finalDelayMs = 0;
  /**
   * Input the API bills that the body does not hold: the system prompt it adds when tools are
   * offered, and the definitions of its own schema-less tools (bash, text editor, computer use).
   */
  hiddenPromptTokens = 0;
  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = apiPath(req);
    const raw = await readBody(req);
    const header = (name: string) => {
      const v = req.headers[name];
      return Array.isArray(v) ? v[0] : v;
    };
    // The real API refuses a request without a valid key before anything else, then one without a
    // version. The key comes in `x-api-key`, or as a bearer token (what @anthropic-ai/sdk 1.x sends).
    const bearer = /^Bearer (.+)$/.exec(header('authorization') ?? '')?.[1];
    const apiKey = header('x-api-key') ?? bearer;
    if (apiKey !== ANTHROPIC_KEY) {
      return error(res, 401, 'authentication_error', apiKey ? 'invalid x-api-key' : 'x-api-key header is required');
    }
    const version = header('anthropic-version');
    if (!version) return error(res, 400, 'invalid_request_error', 'anthropic-version: header is required');
    if (req.method === 'GET' && path === '/models') {
      const data = ['claude-test', 'claude-cheap'].map((id) => ({ type: 'model', id, display_name: id, created_at: '2025-01-01T00:00:00Z' }));
      return json(res, 200, { data, has_more: false, first_id: data[0]!.id, last_id: data[data.length - 1]!.id });
    }
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(raw || '{}') as Record<string, unknown>;
    } catch {
      return error(res, 400, 'invalid_request_error', 'There was an issue with the request body: invalid JSON');
    }
    this.requests.push({ path, body, headers: { apiKey, bearer: bearer !== undefined, version, beta: header('anthropic-beta') } });
    if (path === '/messages/count_tokens') return json(res, 200, { input_tokens: upstreamPromptTokens(body) + this.hiddenPromptTokens });
    if (path !== '/messages') return error(res, 404, 'not_found_error', 'Not Found');
    if (typeof body.max_tokens !== 'number') return error(res, 400, 'invalid_request_error', 'max_tokens: Field required');
    const mode = this.nextMode();
    if (mode === 'stall') return;
    if (mode === 'fail_400') return error(res, 400, 'invalid_request_error', 'messages.0.content: Input should be a valid list');
    if (mode === 'fail_429') return error(res, 429, 'rate_limit_error', 'Number of request tokens has exceeded your per-minute rate limit');
    if (mode === 'fail_500') return error(res, 500, 'api_error', 'Internal server error');
    if (mode === 'overloaded') return error(res, 529, 'overloaded_error', 'Overloaded');

    const plan = reply(body, mode);
    if (mode === 'thinking') {
      plan.outputTokens += this.summarizedThinkingTokens;
      plan.thinkingTokens += this.summarizedThinkingTokens;
    }
    const prompt = upstreamPromptTokens(body) + this.hiddenPromptTokens;
    const read = Math.min(this.cache.read, prompt);
    const write = Math.min(this.cache.write, prompt - read);
    // As the API does, the writes go to the cache the request's breakpoints name, split by TTL.
    const long = raw.includes('"ttl":"1h"');
    const usage = (output: number): Record<string, unknown> => ({
      input_tokens: prompt - read - write,
      cache_creation_input_tokens: write,
      ...(long ? { cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: write } } : {}),
      cache_read_input_tokens: read,
      output_tokens: output,
      ...(plan.thinkingTokens ? { output_tokens_details: { thinking_tokens: plan.thinkingTokens } } : {}),
    });
    const id = 'msg_01XFDUDYJgAACzvnptvVoYEL';
    const model = String(body.model);
    if (body.stream !== true) {
      return json(res, 200, {
        id, type: 'message', role: 'assistant', model, content: plan.blocks,
        stop_reason: plan.stopReason, stop_sequence: plan.stopSequence, usage: usage(plan.outputTokens),
      });
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': 'req_test' });
    const closed = this.watchClose(res);
    const send = (name: string, data: Record<string, unknown>) => res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
    send('message_start', {
      type: 'message_start',
      message: { id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { ...usage(1), output_tokens_details: undefined } },
    });
    let sent = 0;
    for (const [index, block] of plan.blocks.entries()) {
      if (closed()) return;
      if (block.type === 'text') {
        send('content_block_start', { type: 'content_block_start', index, content_block: { type: 'text', text: '' } });
        if (index === 0) send('ping', { type: 'ping' });
        for (const piece of pieces(String(block.text))) {
          send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'text_delta', text: piece } });
          if (mode === 'cut' && ++sent === 3) {
            await new Promise((r) => setTimeout(r, 30));
            res.socket?.destroy();
            return;
          }
          if (mode === 'error_event' && ++sent === 2) {
            send('error', { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
            res.end();
            return;
          }
        }
      } else if (block.type === 'thinking') {
        send('content_block_start', { type: 'content_block_start', index, content_block: { type: 'thinking', thinking: '', signature: '' } });
        for (const piece of pieces(String(block.thinking))) {
          send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'thinking_delta', thinking: piece } });
        }
        send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'signature_delta', signature: block.signature } });
      } else if (block.type === 'tool_use') {
        send('content_block_start', { type: 'content_block_start', index, content_block: { type: 'tool_use', id: block.id, name: block.name, input: {} } });
        const json = JSON.stringify(block.input);
        const cut = Math.floor(json.length / 2);
        for (const partial of ['', json.slice(0, cut), json.slice(cut)]) {
          send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: partial } });
        }
      }
      send('content_block_stop', { type: 'content_block_stop', index });
    }
    if (this.finalDelayMs) {
      await new Promise((r) => setTimeout(r, this.finalDelayMs));
      if (closed()) return;
    }
    send('message_delta', { type: 'message_delta', delta: { stop_reason: plan.stopReason, stop_sequence: plan.stopSequence }, usage: { output_tokens: plan.outputTokens, ...(plan.thinkingTokens ? { output_tokens_details: { thinking_tokens: plan.thinkingTokens } } : {}) } });
    send('message_stop', { type: 'message_stop' });
    res.end();
  }
}

interface Plan {
  blocks: Array<Record<string, unknown>>;
  stopReason: string;
  stopSequence: string | null;
  outputTokens: number;
  /** Of the output, the thinking: Anthropic reports it in `output_tokens_details.thinking_tokens`. */
  thinkingTokens: number;
}

/** The answer for a request: REPLY_WORDS up to `max_tokens` or a stop sequence, a tool call, or thinking first. */
function reply(body: Record<string, unknown>, mode: AnthropicMode): Plan {
  const max = body.max_tokens as number;
  const stops = (body.stop_sequences as string[] | undefined) ?? [];
  const words: string[] = [];
  let stopReason = 'end_turn';
  let stopSequence: string | null = null;
  for (const w of REPLY_WORDS) {
    if (stops.includes(w)) {
      stopReason = 'stop_sequence';
      stopSequence = w;
      break;
    }
    if (words.length === max) {
      stopReason = 'max_tokens';
      break;
    }
    words.push(w);
  }
  const blocks: Array<Record<string, unknown>> = [];
  let outputTokens = words.length;
  let thinkingTokens = 0;
  if (mode === 'thinking') {
    blocks.push({ type: 'thinking', thinking: THINKING, signature: 'EqQBCgIYAhIM1gbcDa9GJwZA2b3h' });
    thinkingTokens = THINKING.split(' ').length;
    outputTokens += thinkingTokens;
  }
  blocks.push({ type: 'text', text: words.join(' '), citations: null });
  if (mode === 'tool') {
    const tools = (body.tools as Array<{ name: string }> | undefined) ?? [];
    blocks.push({ type: 'tool_use', id: 'toolu_01A09q90qw90lq917835lq9', name: tools[0]?.name ?? 'get_weather', input: TOOL_INPUT });
    outputTokens += 12;
    stopReason = 'tool_use';
    stopSequence = null;
  }
  return { blocks, stopReason, stopSequence, outputTokens, thinkingTokens };
}

/** A text cut into the small pieces a real stream delivers. */
function pieces(text: string): string[] {
  const words = text.split(' ');
  return words.map((w, i) => (i ? ` ${w}` : w));
}

function json(res: ServerResponse, status: number, body: unknown): void {
  jsonBody(res, status, body, { 'request-id': 'req_test' });
}

function error(res: ServerResponse, status: number, type: string, message: string): void {
  json(res, status, { type: 'error', error: { type, message }, request_id: 'req_test' });
}
