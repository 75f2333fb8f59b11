import { randomUUID } from 'node:crypto';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import type { ChatWrapper, Llama, LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp';
import { upstreamTimings, type PostOptions, type UpstreamClient, type UpstreamModel, type UpstreamResponse, type UpstreamTiming } from './client.ts';
import { readLocalChat, StopCutter, type LocalChat } from './local-chat.ts';

/**
 * A GGUF model run in this process by llama.cpp (node-llama-cpp's prebuilt binaries), answering
 * chat completions as an OpenAI-compatible upstream would, byte for byte: the engine, the formats
 * and the billing treat it like any other. It is an upstream object rather than a server on a
 * loopback port, so there is no port to take, no HTTP to parse twice, and a client leaving stops
 * generation through the same AbortSignal that would close an HTTP upstream's connection.
 *
 * Inference runs in llama.cpp's native threads: the event loop only sees one small callback per
 * token. Usage is the model's own: prompt tokens are the conversation rendered by the GGUF's chat
 * template and tokenized by its tokenizer; completion tokens are the tokens generated (including
 * any a stop sequence cut from the text, not the end-of-generation token).
 */

export interface LocalModelOptions {
  path: string;
  /** The model id announced and served. */
  id: string;
  /** llama.cpp threads for each evaluation; see the README for why more is often slower. */
  threads: number;
  /** Context per sequence, in tokens (held to what the model was trained on). */
  contextSize: number;
  /** Requests evaluated at once, each in its own sequence; others wait their turn. */
  parallel: number;
}

interface Loaded {
  llama: Llama;
  model: LlamaModel;
  wrapper: ChatWrapper;
  contextSize: number;
  /** Characters in the longest token: a prompt longer than contextSize × this cannot fit. */
  longestToken: number;
}

interface Generated {
  completionTokens: number;
  finish: 'stop' | 'length';
}

/** Requests waiting for a sequence, per sequence; past it the local model answers 429 (busy). */
const WAITING_PER_SEQUENCE = 16;

export class LocalUpstream implements UpstreamClient {
  readonly kind = 'openai' as const;
  readonly allowedParameters: ReadonlySet<string> = new Set();
  readonly #opts: LocalModelOptions;
  #loading: Promise<Loaded> | undefined;
  readonly #free: LlamaContextSequence[] = [];
  readonly #waiting: Array<(seq: LlamaContextSequence) => void> = [];

  constructor(opts: LocalModelOptions) {
    this.#opts = opts;
  }

  get id(): string {
    return this.#opts.id;
  }

  get baseUrl(): string {
    return `local:${this.#opts.id}`;
  }

  /** Nothing secret is ever sent to it. */
  redact(text: string): string {
    return text;
  }

  /** It bills nobody: whatever failed here, the next upstream is paid once, for the answer charged. */
  unsent(): boolean {
    return true;
  }

  /** Loaded on first use: node-llama-cpp and the model cost nothing until the catalog asks. */
  #load(): Promise<Loaded> {
    this.#loading ??= load(this.#opts).then((l) => {
      this.#free.push(...l.sequences);
      return l;
    });
    return this.#loading;
  }

  async models(): Promise<UpstreamModel[]> {
    const l = await this.#load();
    return [{ id: this.#opts.id, owned_by: 'local', contextLength: l.contextSize }];
  }

  async post(path: string, body: string, opts: PostOptions = {}): Promise<UpstreamResponse> {
    const { signal } = opts;
    const start = performance.now();
    const res = await this.#answer(path, body, signal);
    if (upstreamTimings.hasSubscribers) {
      upstreamTimings.publish({ upstream: this.baseUrl, op: 'post', path, status: res.statusCode, seconds: (performance.now() - start) / 1000 } satisfies UpstreamTiming);
    }
    return res;
  }

  async #answer(path: string, body: string, signal: AbortSignal | undefined): Promise<UpstreamResponse> {
    if (path !== '/chat/completions') return refusal(400, `The local model serves chat completions only, not ${path}.`);
    let raw: unknown;
    try {
      raw = JSON.parse(body);
    } catch {
      return refusal(400, 'The request body is not JSON.');
    }
    const chat = readLocalChat(raw);
    if (typeof chat === 'string') return refusal(400, chat);
    const l = await this.#load();
    // Tokenizing runs on the event loop: what cannot fit is refused before it is read.
    if (chat.chars > l.contextSize * l.longestToken) return tooLong(l.contextSize);
    let tokens: Token[];
    try {
      tokens = l.wrapper.generateContextState({ chatHistory: chat.history }).contextText.tokenize(l.model.tokenizer);
    } catch (e) {
      // A template may refuse a conversation (say, roles that do not alternate).
      return refusal(400, `The model's chat template refused the conversation: ${(e as Error).message}`);
    }
    if (tokens.length >= l.contextSize) return tooLong(l.contextSize, tokens.length);
    const seq = await this.#acquire(signal);
    if (!seq) return refusal(429, 'The local model is busy; try again shortly.', 'rate_limit_exceeded');
    const head = { id: `chatcmpl-${randomUUID()}`, created: Math.floor(Date.now() / 1000), model: this.#opts.id };
    const usage = (g: Generated) => ({ prompt_tokens: tokens.length, completion_tokens: g.completionTokens, total_tokens: tokens.length + g.completionTokens });
    const maxTokens = Math.min(chat.maxTokens ?? Infinity, l.contextSize - tokens.length);
    if (!chat.stream) {
      let text = '';
      let g: Generated;
      try {
        g = await generate(l.model, seq, tokens, maxTokens, chat, () => signal?.aborted === true, (t) => (text += t));
      } finally {
        this.#release(seq);
      }
      const choice = { index: 0, message: { role: 'assistant', content: text }, finish_reason: g.finish };
      return json(200, { ...head, object: 'chat.completion', choices: [choice], usage: usage(g) });
    }
    const out = new Readable({ read() {} });
    const send = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      out.push(Buffer.from(`data: ${JSON.stringify({ ...head, object: 'chat.completion.chunk', choices, ...extra })}\n\n`));
    // The generation runs to its end whoever reads it, so the sequence always comes back.
    void (async () => {
      send([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]);
      const g = await generate(l.model, seq, tokens, maxTokens, chat, () => signal?.aborted === true || out.destroyed, (t) => {
        if (t) send([{ index: 0, delta: { content: t }, finish_reason: null }]);
      });
      // Also when the client left: the usage of what was generated is what it pays.
      send([{ index: 0, delta: {}, finish_reason: g.finish }]);
      send([], { usage: usage(g) });
      out.push(Buffer.from('data: [DONE]\n\n'));
      out.push(null);
    })()
      .catch((e: Error) => out.destroy(e))
      .finally(() => this.#release(seq));
    return { statusCode: 200, body: out };
  }

  /** A free sequence, waiting for one if need be; undefined when too many already wait. */
  #acquire(signal: AbortSignal | undefined): Promise<LlamaContextSequence | undefined> {
    signal?.throwIfAborted();
    const free = this.#free.pop();
    if (free) return Promise.resolve(free);
    if (this.#waiting.length >= WAITING_PER_SEQUENCE * this.#opts.parallel) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const take = (seq: LlamaContextSequence) => {
        signal?.removeEventListener('abort', leave);
        resolve(seq);
      };
      const leave = () => {
        this.#waiting.splice(this.#waiting.indexOf(take), 1);
        reject(signal!.reason as Error);
      };
      signal?.addEventListener('abort', leave, { once: true });
      this.#waiting.push(take);
    });
  }

  #release(seq: LlamaContextSequence): void {
    const next = this.#waiting.shift();
    if (next) next(seq);
    else this.#free.push(seq);
  }

  async close(): Promise<void> {
    const l = await this.#loading?.catch(() => undefined);
    await l?.llama.dispose();
  }
}

async function load(o: LocalModelOptions): Promise<Loaded & { sequences: LlamaContextSequence[] }> {
  const { getLlama, JinjaTemplateChatWrapper, resolveChatWrapper, LlamaLogLevel } = await import('node-llama-cpp');
  // Never a build from source at run time: that would fetch llama.cpp from the network.
  const llama = await getLlama({ gpu: 'auto', build: 'never', skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: o.threads });
  const model = await llama.loadModel({ modelPath: o.path });
  const context = await model.createContext({ contextSize: Math.min(o.contextSize, model.trainContextSize), sequences: o.parallel, threads: o.threads });
  // The GGUF's own template, rendered as the model was trained to read it; the caller's text stays
  // text, so a '<|im_end|>' typed in a message is never read as a control token.
  const template = model.fileInfo.metadata.tokenizer?.chat_template;
  const wrapper = typeof template === 'string' ? new JinjaTemplateChatWrapper({ template, tokenizer: model.tokenizer }) : resolveChatWrapper(model);
  const vocab = model.fileInfo.metadata.tokenizer?.ggml?.tokens?.length ?? 0;
  let longestToken = 1;
  for (let t = 0; t < vocab; t++) longestToken = Math.max(longestToken, model.detokenize([t as Token], false).length);
  const sequences = Array.from({ length: o.parallel }, () => context.getSequence());
  return { llama, model, wrapper, contextSize: context.contextSize, longestToken, sequences };
}

/**
 * Evaluates the prompt (reusing what the sequence already holds of it, as a chat's next turn
 * does) and generates until the model ends, a stop sequence, `maxTokens`, or `stopped()`.
 */
async function generate(
  model: LlamaModel, seq: LlamaContextSequence, prompt: Token[], maxTokens: number, chat: LocalChat, stopped: () => boolean, emit: (text: string) => void,
): Promise<Generated> {
  await seq.adaptStateToTokens(prompt, false);
  // At least one prompt token is evaluated, or there would be nothing to sample from.
  if (seq.nextTokenIndex >= prompt.length) await seq.eraseContextTokenRanges([{ start: prompt.length - 1, end: seq.nextTokenIndex }]);
  const s = chat.sampling;
  const generated: Token[] = [];
  const penalize = s.frequencyPenalty || s.presencePenalty;
  const cutter = new StopCutter(chat.stop);
  let before: Token[] = prompt.slice(-8);
  let pending: Token[] = [];
  let finish: Generated['finish'] = 'length';
  const flush = () => {
    const text = model.detokenize(pending, false, before);
    before = [...before, ...pending].slice(-8);
    pending = [];
    return text;
  };
  if (maxTokens > 0 && !stopped()) {
    for await (const token of seq.evaluate(prompt.slice(seq.nextTokenIndex), {
      temperature: s.temperature,
      topP: s.topP,
      topK: s.topK,
      minP: s.minP,
      seed: s.seed,
      repeatPenalty: penalize ? { punishTokens: () => generated, penalty: 1, frequencyPenalty: s.frequencyPenalty, presencePenalty: s.presencePenalty } : undefined,
    })) {
      if (model.isEogToken(token)) {
        finish = 'stop';
        break;
      }
      generated.push(token);
      pending.push(token);
      const text = model.detokenize(pending, false, before);
      // A character split across tokens waits for its last byte.
      if (pending.length < 4 && text.endsWith('\uFFFD')) continue;
      before = [...before, ...pending].slice(-8);
      pending = [];
      emit(cutter.push(text));
      if (cutter.stopped) {
        finish = 'stop';
        break;
      }
      if (generated.length >= maxTokens || stopped()) break;
    }
  }
  if (!cutter.stopped) emit(cutter.push(flush()) + cutter.flush());
  // Short of max_tokens, the answer stopped: the caller left, or llama.cpp ended the turn at an
  // end-of-generation token without yielding it to the loop.
  if (finish === 'length' && generated.length < maxTokens) finish = 'stop';
  return { completionTokens: generated.length, finish };
}

/** `models/SmolLM2-135M-Instruct.Q4_1.gguf` → `smollm2-135m-instruct`: the name, without the quantization. */
export function modelIdFromPath(path: string): string {
  return basename(path)
    .replace(/\.gguf$/i, '')
    .replace(/[.-](?:i?q\d\w*|f16|f32|bf16)$/i, '')
    .toLowerCase();
}

function json(statusCode: number, body: unknown): UpstreamResponse {
  return { statusCode, body: Readable.from([Buffer.from(JSON.stringify(body))]) };
}

function refusal(status: number, message: string, code = 'invalid_request'): UpstreamResponse {
  return json(status, { error: { message, type: 'invalid_request_error', code } });
}

function tooLong(contextSize: number, tokens?: number): UpstreamResponse {
  const what = tokens === undefined ? 'The prompt' : `The prompt (${tokens} tokens)`;
  return refusal(400, `${what} does not fit the local model's context of ${contextSize} tokens.`, 'context_length_exceeded');
}
