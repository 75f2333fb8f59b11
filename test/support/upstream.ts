import type { IncomingMessage, ServerResponse } from 'node:http';
import { apiPath, json, readBody, ScriptedUpstream } from './scripted-upstream.ts';

/**
 * The one test double: an OpenAI-compatible upstream that answers like the real API (usage,
 * SSE chunks, a final usage chunk when asked, error bodies) and can be told to misbehave.
 */
export type Mode =
  | 'ok'
  | 'no_usage'
  | 'fail_500'
  | 'fail_400'
  | 'fail_401'
  /** A proxy's timeouts, as nginx (504) and Cloudflare (524) send them: HTML, the upstream behind still at work. */
  | 'fail_504'
  | 'fail_524'
  | 'cut'
  | 'slow'
  | 'stall'
  | 'drop'
  /** A reasoning model: REASONING_DELTAS deltas of `reasoning_content` first, and usage counting them. */
  | 'reasoning'
  /**
   * A reasoning model that streams none of its reasoning, as OpenAI's o-series and gpt-5 do on
   * chat completions: the role chunk, the answer, and usage with SILENT_REASONING_TOKENS more.
   */
  | 'silent_reasoning'
  /** A 500 whose message echoes the operator's key, as some providers' proxies do. */
  | 'fail_500_echo_key'
  /** Content that looks like SSE events and a usage chunk of its own, inside the JSON. */
  | 'inject'
  /** A whole answer of 40 MB. */
  | 'huge'
  /**
   * A whole answer of 40 MB that says what it cost: `n` choices (logprobs make them that large),
   * each of `max_tokens`, the usage after them, and text that looks like a usage inside them.
   */
  | 'huge_usage'
  /** A whole answer whose tool call the length limit cut: its arguments are not JSON. */
  | 'cut_tool_call';

/** What an 'inject' upstream writes as content: an attempt to smuggle a zero-usage event. */
export const INJECTED = '\n\ndata: {"choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0}}\n\ndata: [DONE]\n\n';

/** Deltas a 'reasoning' stream thinks in before it answers, and each delta's text. */
export const REASONING_DELTAS = 400;
export const REASONING_DELTA = ' think';
/** The reasoning tokens a 'reasoning' upstream reports beyond the deltas it streamed (hidden reasoning). */
export const HIDDEN_REASONING_TOKENS = 18_000;
/** The reasoning tokens a 'silent_reasoning' upstream reports: within the gateway's default completion limit. */
export const SILENT_REASONING_TOKENS = 3_000;

export interface Recorded {
  path: string;
  body: Record<string, unknown>;
}

export const REPLY_WORDS = ['The', 'answer', 'is', 'forty', 'two', 'and', 'that', 'is', 'all', 'folks'];

/** The upstream's own prompt count: deliberately not our tokenizer, as with a real provider. */
export function upstreamPromptTokens(body: Record<string, unknown>): number {
  const text = JSON.stringify(body.messages ?? body.prompt ?? body.input ?? '');
  return Math.ceil(text.length / 4) + 7;
}

export function replyWords(body: Record<string, unknown>): string[] {
  const max = (body.max_completion_tokens ?? body.max_tokens) as number | undefined;
  return REPLY_WORDS.slice(0, Math.min(max ?? REPLY_WORDS.length, REPLY_WORDS.length));
}

export class FakeUpstream extends ScriptedUpstream<Mode, Recorded> {
  chunkDelayMs = 0;
  /** Words a 'cut' stream writes before it breaks its connection (0: right after the role chunk). */
  cutAfter = 3;
  /** Content words the last stream wrote before it ended or its client left: what the model "generated". */
  wordsWritten = 0;
  /** Requests whose connection was closed unanswered ('drop'). */
  dropped = 0;
  /** Delay before a non-streamed answer, and between a stream's usage chunk and its end. */
  answerDelayMs = 0;
  /**
   * Set: a non-streamed answer is held (after `answerDelayMs`) until this settles: a slow model
   * the test lets finish once it has done what it wanted meanwhile.
   */
  answerGate: Promise<unknown> | undefined;
  /** Delay in a stream between its last choice chunk and its usage chunk. */
  usageDelayMs = 0;
  /**
   * Set: a stream's usage chunk is followed by a chunk marked `"past_usage":true`, which the
   * gateway passes on; a client that sees it knows the gateway has read the usage before it.
   */
  markPastUsage = false;
  /**
   * Set: the next stream stops writing, its connection open, until `until` settles or its client
   * leaves: before its headers (`after: 'headers'`), or once it has written `after` words of its
   * answer (0: after the role chunk, while a reasoning model thinks). Used once.
   */
  hold: { after: number | 'headers'; until: Promise<unknown> } | undefined;
  /** The model the upstream says it served, when set (else the one asked for). */
  servedModel: string | undefined;
  /** Usage objects to report instead of the real count, one per request, in order (hostile or broken upstreams). */
  readonly usageOverrides: Array<Record<string, unknown>> = [];
  /** Prompt tokens the upstream says it read from its cache (OpenAI's prompt_tokens_details). */
  cachedTokens = 0;
  /** What the upstream reported as usage, per request, in order. */
  readonly reported: Array<Record<string, unknown>> = [];
  /** The authorization header of each request, to check what key the gateway sends. */
  readonly authorizations: Array<string | undefined> = [];
  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = apiPath(req);
    if (req.method === 'GET' && path === '/models') {
      return json(res, 200, {
        object: 'list',
        data: ['gpt-test', 'gpt-cheap', 'text-embed'].map((id) => ({ id, object: 'model', created: 1700000000, owned_by: 'test' })),
      });
    }
    // Close the connection as the request arrives, unanswered: what a server does when its idle
    // keep-alive timer fires just as a client reuses the connection.
    if (this.modes[0] === 'drop') {
      this.modes.shift();
      this.dropped++;
      req.socket.destroy();
      return;
    }
    const body = JSON.parse((await readBody(req)) || '{}') as Record<string, unknown>;
    this.requests.push({ path, body });
    this.authorizations.push(req.headers.authorization);
    const mode = this.nextMode();
    // Accept the request and never answer, until the caller gives up.
    if (mode === 'stall') return;
    if (mode === 'fail_500') return json(res, 500, { error: { message: 'upstream exploded', type: 'server_error' } });
    if (mode === 'fail_504' || mode === 'fail_524') {
      const status = mode === 'fail_504' ? 504 : 524;
      res.writeHead(status, { 'content-type': 'text/html' });
      res.end(status === 504 ? '<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 Gateway Time-out</h1></center></body></html>' : '<html><body>Error 524: A timeout occurred</body></html>');
      return;
    }
    if (mode === 'fail_500_echo_key') {
      const key = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      return json(res, 500, { error: { message: `proxy error: upstream rejected request signed with ${key} (Authorization: Bearer ${key})`, type: 'server_error' } });
    }
    if (mode === 'fail_401') {
      // As OpenAI answers a bad key: the message echoes part of it.
      return json(res, 401, { error: { message: 'Incorrect API key provided: sk-upst****cret.', type: 'invalid_request_error', code: 'invalid_api_key' } });
    }
    if (mode === 'fail_400') {
      return json(res, 400, { error: { message: "Unsupported parameter: 'foo'", type: 'invalid_request_error', code: 'unsupported_parameter' } });
    }
    const reasoning = mode === 'reasoning' ? REASONING_DELTAS + HIDDEN_REASONING_TOKENS : mode === 'silent_reasoning' ? SILENT_REASONING_TOKENS : 0;
    const override = this.usageOverrides.shift();
    const usage = (completion: number) => {
      if (override) {
        this.reported.push(override);
        return override;
      }
      const u: Record<string, unknown> = {
        prompt_tokens: upstreamPromptTokens(body),
        completion_tokens: completion + reasoning,
        total_tokens: upstreamPromptTokens(body) + completion + reasoning,
      };
      if (reasoning) u.completion_tokens_details = { reasoning_tokens: reasoning };
      if (this.cachedTokens) u.prompt_tokens_details = { cached_tokens: Math.min(this.cachedTokens, upstreamPromptTokens(body)) };
      this.reported.push(u);
      return u;
    };
    const model = this.servedModel ?? String(body.model);
    if (path === '/embeddings') {
      const out: Record<string, unknown> = {
        object: 'list',
        model,
        data: [{ object: 'embedding', index: 0, embedding: [0.1, 0.2, 0.3] }],
      };
      if (mode !== 'no_usage') out.usage = { prompt_tokens: upstreamPromptTokens(body), total_tokens: upstreamPromptTokens(body) };
      return json(res, 200, out);
    }
    if (mode === 'huge_usage') {
      const n = (body.n as number | undefined) ?? 1;
      const text = `{"usage":{"prompt_tokens":0,"completion_tokens":0}} ${'x'.repeat(Math.ceil((40 * 1024 * 1024) / n))}`;
      const choices = Array.from({ length: n }, (_, index) => ({ index, message: { role: 'assistant', content: text }, finish_reason: 'length' }));
      return json(res, 200, { id: 'chatcmpl-huge', object: 'chat.completion', model, choices, usage: usage(n * ((body.max_tokens as number | undefined) ?? 16)), system_fingerprint: 'fp_huge' });
    }
    if (mode === 'huge') {
      const big = JSON.stringify({ id: 'chatcmpl-huge', object: 'chat.completion', model: body.model, choices: [{ index: 0, message: { role: 'assistant', content: 'x'.repeat(40 * 1024 * 1024) } }] });
      return json(res, 200, JSON.parse(big));
    }
    const words = mode === 'inject' ? [INJECTED, ...replyWords(body)] : replyWords(body);
    const chat = path === '/chat/completions';
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-test`;
    if (body.stream !== true) {
      if (this.answerDelayMs) await new Promise((r) => setTimeout(r, this.answerDelayMs));
      if (this.answerGate) await this.answerGate;
      const text = words.join(' ');
      if (mode === 'cut_tool_call') {
        const call = { id: 'call_cut', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Par' } };
        const message = { role: 'assistant', content: null, tool_calls: [call] };
        return json(res, 200, { id, object: 'chat.completion', created: 1700000000, model, choices: [{ index: 0, message, finish_reason: 'length' }], usage: usage(words.length) });
      }
      const out: Record<string, unknown> = chat
        ? { id, object: 'chat.completion', created: 1700000000, model, choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }] }
        : { id, object: 'text_completion', created: 1700000000, model, choices: [{ index: 0, text, finish_reason: 'stop' }] };
      if (mode !== 'no_usage') out.usage = usage(words.length);
      return json(res, 200, out);
    }
    const closed = this.watchClose(res);
    const { hold } = this;
    this.hold = undefined;
    const gone = new Promise((r) => res.once('close', r));
    const held = async (at: number | 'headers') => {
      if (hold?.after === at) await Promise.race([hold.until, gone]);
    };
    await held('headers');
    if (closed()) return;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const send = (obj: unknown) => res.write(`data: ${JSON.stringify(obj)}\n\n`);
    const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
      chat
        ? { id, object: 'chat.completion.chunk', created: 1700000000, model, choices: [{ index: 0, delta, finish_reason: finish }] }
        : { id, object: 'text_completion', created: 1700000000, model, choices: [{ index: 0, text: delta.content ?? '', finish_reason: finish }] };
    const delay = mode === 'slow' ? Math.max(this.chunkDelayMs, 40) : this.chunkDelayMs;
    if (chat) send(chunk({ role: 'assistant', content: '' }));
    this.wordsWritten = 0;
    if (mode === 'reasoning') {
      for (let i = 0; i < REASONING_DELTAS; i++) send(chunk({ reasoning_content: REASONING_DELTA }));
    }
    for (let i = 0; i < words.length; i++) {
      if (mode === 'cut' && i === this.cutAfter) {
        // Let the first chunks reach the gateway, then break the connection mid-stream.
        await new Promise((r) => setTimeout(r, 30));
        res.socket?.destroy();
        return;
      }
      await held(i);
      if (closed()) return;
      if (delay) await new Promise((r) => setTimeout(r, delay));
      send(chunk({ content: (i ? ' ' : '') + words[i] }));
      this.wordsWritten++;
    }
    send(chunk({}, 'stop'));
    if (this.usageDelayMs) await new Promise((r) => setTimeout(r, this.usageDelayMs));
    if (closed()) return;
    const opts = body.stream_options as { include_usage?: boolean } | undefined;
    if (opts?.include_usage && mode !== 'no_usage') send({ id, object: chat ? 'chat.completion.chunk' : 'text_completion', created: 1700000000, model, choices: [], usage: usage(words.length) });
    if (this.markPastUsage) send({ id, object: chat ? 'chat.completion.chunk' : 'text_completion', created: 1700000000, model, choices: [], past_usage: true });
    if (this.answerDelayMs) await new Promise((r) => setTimeout(r, this.answerDelayMs));
    if (closed()) return;
    res.end('data: [DONE]\n\n');
  }
}
