import type { IncomingMessage, ServerResponse } from 'node:http';
import { apiPath, json, readBody, ScriptedUpstream } from './scripted-upstream.ts';
import { REPLY_WORDS } from './upstream.ts';

/**
 * An upstream double for OpenAI's Responses API (`POST /v1/responses`) that answers as the real
 * API does: the Response object, the semantic event stream with `event:` lines and sequence
 * numbers (and no `[DONE]`), usage with cached, cache-write and reasoning tokens when told to,
 * function calls, `max_output_tokens` ending a response `incomplete`, stored responses continued
 * by `previous_response_id`, the API's error bodies, and a record of every request.
 */
export type ResponsesMode = 'ok' | 'fail_500' | 'fail_400' | 'fail_401' | 'fail_429' | 'cut' | 'failed' | 'error_event' | 'stall';

export interface ScriptedReply {
  text?: string;
  /** A reasoning summary, streamed as `response.reasoning_summary_text.delta`. */
  summary?: string;
  calls?: Array<{ name: string; arguments: string }>;
}

export interface Recorded {
  path: string;
  body: Record<string, unknown>;
  headers: IncomingMessage['headers'];
}

type Obj = Record<string, unknown>;

/** The upstream's own input count: deliberately not our tokenizer, as with a real provider. */
export function responsesInputTokens(body: Obj): number {
  return Math.ceil(JSON.stringify([body.instructions ?? null, body.input ?? null, body.tools ?? null]).length / 4) + 7;
}

const ERRORS: Record<string, [number, Obj]> = {
  fail_500: [500, { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: null }],
  fail_401: [401, { message: 'Incorrect API key provided: sk-upst****cret. You can find your API key at https://platform.openai.com/account/api-keys.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' }],
  fail_400: [400, { message: "Unsupported parameter: 'foo'.", type: 'invalid_request_error', param: 'foo', code: 'unsupported_parameter' }],
  fail_429: [429, { message: 'Rate limit reached for gpt-test in organization org-test on tokens per min (TPM): Limit 30000, Used 30000, Requested 20.', type: 'tokens', param: null, code: 'rate_limit_exceeded' }],
};

export class FakeResponsesUpstream extends ScriptedUpstream<ResponsesMode, Recorded> {
  /** Replies for the next requests, in order; afterwards the ten REPLY_WORDS. */
  readonly replies: ScriptedReply[] = [];
  /** Of each prompt, the tokens reported as read from the cache (at most the prompt). */
  cachedTokens = 0;
  /** Of each prompt, the tokens reported as written to the cache. */
  cacheWriteTokens = 0;
  /** Reasoning tokens each answer reports inside its output tokens. */
  reasoningTokens = 0;
  /** Delay before a stream's terminal event: a client may leave once it has the answer, before the usage. */
  finalDelayMs = 0;
  /** Stored responses: their id → the tokens a continuation carries over. */
  readonly stored = new Map<string, { tokens: number }>();
  #count = 0;
  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = apiPath(req);
    if (req.method === 'GET' && path === '/models') {
      return json(res, 200, { object: 'list', data: [{ id: 'gpt-test', object: 'model', created: 1700000000, owned_by: 'test' }] });
    }
    const body = JSON.parse((await readBody(req)) || '{}') as Obj;
    this.requests.push({ path, body, headers: req.headers });
    if (req.method !== 'POST' || path !== '/responses') {
      return apiError(res, 404, { message: `Invalid URL (${req.method} /v1${path})`, type: 'invalid_request_error', param: null, code: null });
    }
    const mode = this.nextMode();
    if (mode === 'stall') return;
    const scripted = ERRORS[mode];
    if (scripted) return apiError(res, scripted[0], scripted[1]);
    const max = body.max_output_tokens as number | null | undefined;
    if (typeof max === 'number' && max < 16) {
      return apiError(res, 400, {
        message: `Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got ${max} instead.`,
        type: 'invalid_request_error',
        param: 'max_output_tokens',
        code: 'integer_below_min_value',
      });
    }
    let carried = 0;
    if (typeof body.previous_response_id === 'string') {
      const prev = this.stored.get(body.previous_response_id);
      if (!prev) {
        return apiError(res, 400, {
          message: `Previous response with id '${body.previous_response_id}' not found.`,
          type: 'invalid_request_error',
          param: 'previous_response_id',
          code: 'previous_response_not_found',
        });
      }
      carried = prev.tokens;
    }
    const reply = this.replies.shift() ?? { text: REPLY_WORDS.join(' ') };
    const counts = { cached: this.cachedTokens, writes: this.cacheWriteTokens, reasoning: this.reasoningTokens };
    const answer = answerFor(body, carried, ++this.#count, reply, counts);
    if (body.store !== false) this.stored.set(answer.id, { tokens: answer.inputTokens + answer.outputTokens });
    if (body.stream !== true) return json(res, 200, answer.response('completed'));
    await this.#stream(res, answer, mode);
  }

  async #stream(res: ServerResponse, answer: Answer, mode: ResponsesMode): Promise<void> {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
    let seq = 0;
    const send = (type: string, fields: Obj) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...fields })}\n\n`);
    const start = answer.response('in_progress', []);
    send('response.created', { response: start });
    send('response.in_progress', { response: start });
    let deltas = 0;
    for (const [index, item] of answer.items.entries()) {
      const where = { item_id: item.id, output_index: index };
      if (item.type === 'reasoning') {
        const text = ((item.summary as Obj[])[0]!.text as string) ?? '';
        send('response.output_item.added', { output_index: index, item: { id: item.id, type: 'reasoning', summary: [] } });
        send('response.reasoning_summary_part.added', { ...where, summary_index: 0, part: { type: 'summary_text', text: '' } });
        for (const piece of text.match(/\S+\s*/g) ?? []) send('response.reasoning_summary_text.delta', { ...where, summary_index: 0, delta: piece, obfuscation: 'x9' });
        send('response.reasoning_summary_text.done', { ...where, summary_index: 0, text });
        send('response.reasoning_summary_part.done', { ...where, summary_index: 0, part: { type: 'summary_text', text } });
        send('response.output_item.done', { output_index: index, item });
      } else if (item.type === 'message') {
        const text = answer.kept.join(' ');
        send('response.output_item.added', { output_index: index, item: { id: item.id, type: 'message', status: 'in_progress', content: [], role: 'assistant' } });
        const part = { ...where, content_index: 0 };
        send('response.content_part.added', { ...part, part: { type: 'output_text', annotations: [], logprobs: [], text: '' } });
        for (const [i, word] of answer.kept.entries()) {
          send('response.output_text.delta', { ...part, delta: (i ? ' ' : '') + word, logprobs: [], obfuscation: 'pQ3' });
          deltas++;
          if (mode === 'cut' && deltas === 3) {
            // Let the first events reach the reader, then break the connection mid-stream.
            await new Promise((r) => setTimeout(r, 30));
            res.socket?.destroy();
            return;
          }
          if (mode === 'failed' && deltas === 2) {
            send('response.failed', {
              response: { ...answer.response('failed', []), error: { code: 'server_error', message: 'The model produced invalid content.' }, usage: null },
            });
            res.end();
            return;
          }
          if (mode === 'error_event' && deltas === 2) {
            send('error', { error: { type: 'server_error', code: 'server_error', message: 'An error occurred while processing your request.', param: null } });
            res.end();
            return;
          }
        }
        send('response.output_text.done', { ...part, text, logprobs: [] });
        send('response.content_part.done', { ...part, part: { type: 'output_text', annotations: [], logprobs: [], text } });
        send('response.output_item.done', { output_index: index, item });
      } else if (item.type === 'function_call') {
        const args = item.arguments as string;
        send('response.output_item.added', { output_index: index, item: { ...item, status: 'in_progress', arguments: '' } });
        for (let i = 0; i < args.length; i += 8) send('response.function_call_arguments.delta', { ...where, delta: args.slice(i, i + 8), obfuscation: 'a' });
        send('response.function_call_arguments.done', { ...where, arguments: args });
        send('response.output_item.done', { output_index: index, item });
      }
    }
    const final = answer.final();
    if (this.finalDelayMs) {
      const closed = this.watchClose(res);
      await new Promise((r) => setTimeout(r, this.finalDelayMs));
      if (closed()) return;
    }
    send(final.status === 'incomplete' ? 'response.incomplete' : 'response.completed', { response: final });
    res.end();
  }
}

type Answer = ReturnType<typeof answerFor>;

function answerFor(body: Obj, carried: number, n: number, reply: ScriptedReply, counts: { cached: number; writes: number; reasoning: number }) {
  const id = `resp_${String(n).padStart(4, '0')}67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b`;
  const max = typeof body.max_output_tokens === 'number' ? body.max_output_tokens : Infinity;
  const reasoning = counts.reasoning;
  // One token a word: a reply longer than the limit is cut there, and the response is incomplete.
  const words = reply.text ? reply.text.split(' ') : [];
  const room = Math.max(0, max - reasoning);
  const kept = words.slice(0, Math.min(words.length, room));
  const callTokens = (reply.calls ?? []).reduce((t, c) => t + Math.ceil(c.arguments.length / 4), 0);
  const incomplete = kept.length < words.length;
  const inputTokens = responsesInputTokens(body) + carried;
  const outputTokens = reasoning + kept.length + callTokens;
  const items: Obj[] = [];
  const summary = reply.summary;
  if (summary !== undefined) items.push({ id: `rs_${n}67ccd2bf`, type: 'reasoning', summary: [{ type: 'summary_text', text: summary }] });
  if (reply.text !== undefined) {
    items.push({
      id: `msg_${n}67ccd2bf17f0`,
      type: 'message',
      status: incomplete ? 'incomplete' : 'completed',
      content: [{ type: 'output_text', annotations: [], logprobs: [], text: kept.join(' ') }],
      role: 'assistant',
    });
  }
  if (!incomplete) {
    (reply.calls ?? []).forEach((c, i) => {
      items.push({ id: `fc_${n}${i}67ccd2bf`, type: 'function_call', status: 'completed', arguments: c.arguments, call_id: `call_${n}${i}unLAR8MvFNptuiZK6K`, name: c.name });
    });
  }
  const cached = Math.min(counts.cached, inputTokens);
  const response = (status: string, output: Obj[] = items): Obj => ({
    id,
    object: 'response',
    created_at: 1741476542,
    status,
    background: false,
    error: null,
    incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    max_tool_calls: null,
    model: `${String(body.model)}-2025-04-14`,
    output,
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: body.previous_response_id ?? null,
    prompt_cache_key: null,
    reasoning: { effort: (body.reasoning as Obj | undefined)?.effort ?? null, summary: (body.reasoning as Obj | undefined)?.summary ?? null },
    safety_identifier: null,
    service_tier: 'default',
    store: body.store ?? true,
    temperature: body.temperature ?? 1.0,
    text: body.text ?? { format: { type: 'text' }, verbosity: 'medium' },
    tool_choice: body.tool_choice ?? 'auto',
    tools: body.tools ?? [],
    top_logprobs: 0,
    top_p: body.top_p ?? 1.0,
    truncation: body.truncation ?? 'disabled',
    usage:
      status === 'in_progress'
        ? null
        : {
            input_tokens: inputTokens,
            input_tokens_details: { cached_tokens: cached, cache_write_tokens: counts.writes },
            output_tokens: outputTokens,
            output_tokens_details: { reasoning_tokens: reasoning },
            total_tokens: inputTokens + outputTokens,
          },
    user: body.user ?? null,
    metadata: body.metadata ?? {},
  });
  const final = (): Obj => response(incomplete ? 'incomplete' : 'completed');
  return { id, items, kept, inputTokens, outputTokens, response: (s: string, output?: Obj[]) => (s === 'completed' ? final() : response(s, output)), final };
}

function apiError(res: ServerResponse, status: number, error: Obj): void {
  json(res, status, { error });
}
