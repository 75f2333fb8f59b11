import { z } from 'zod';
import { EngineError } from '../engine/errors.ts';
import type { Bill, Codec, Estimate, Exchange, Metered, ParsedRequest, StreamReader, UpstreamEvent, UpstreamKind, WireError, WireFormat } from '../engine/format.ts';
import { billedUsage, chatReasoning, generatedOf, limitOpenAI, meterBody, openaiUsage, safeParse } from './openai.ts';
import { exchangeFor } from './compose.ts';
import { asksLongCache, PER_MESSAGE, PER_REPLY, PromptParts } from './prompt.ts';
import { refuseUnpriced } from './unpriced.ts';

/** OpenAI chat completions, legacy completions and embeddings: the formats the gateway began with. */

const positiveInt = z.number().int().positive();
const choices = z.number().int().min(1).max(128).nullish();
const common = { model: z.string().min(1), stream: z.boolean().optional(), max_tokens: positiveInt.nullish(), n: choices };
const text = z.union([z.string(), z.array(z.unknown()).min(1)]);

const schemas = {
  chat: z.looseObject({ ...common, messages: z.array(z.looseObject({ role: z.string() })).min(1), max_completion_tokens: positiveInt.nullish() }),
  completion: z.looseObject({ ...common, prompt: text, best_of: choices }),
  embedding: z.looseObject({ model: z.string().min(1), input: text }),
};
type Kind = keyof typeof schemas;

/** OpenAI's error shape, with our stable code and the facts beside it. */
export function openaiErrorBody(err: WireError): { error: Record<string, unknown> } {
  return { error: { message: err.message, type: err.type, code: err.code, ...err.extra } };
}

export function invalid(issues: z.core.$ZodIssue[]): EngineError {
  const issue = issues[0]!;
  const where = issue.path.length ? `'${issue.path.join('.')}': ` : '';
  return new EngineError('invalid_request', `Invalid request body: ${where}${issue.message}`);
}

const PATH: Record<Kind, string> = { chat: '/chat/completions', completion: '/completions', embedding: '/embeddings' };

const FINISHED = /"finish_reason":\s*"/;

/** The chat stream as it passes through: events forwarded untouched, the usage chunk and `[DONE]` held for the bill. */
class OpenAIStream implements StreamReader {
  readonly #kind: Kind;
  /** Raw `data:` payloads of the choices sent, parsed only if the gateway must count them. */
  readonly #sent: string[] = [];
  #usage: Record<string, unknown> | undefined;
  #last: Record<string, unknown> | undefined;
  #first: Record<string, unknown> | undefined;
  #finished = false;

  constructor(kind: Kind) {
    this.#kind = kind;
  }

  get metered(): Metered {
    const sent = this.#sent;
    const head = this.#head();
    return {
      usage: openaiUsage(this.#usage),
      model: typeof head.model === 'string' ? head.model : undefined,
      finished: this.#finished,
      get generated() {
        let s = '';
        for (const d of sent) s += generatedOf(safeParse(d)?.choices, 'delta');
        return s;
      },
    };
  }

  #head(): Record<string, unknown> {
    this.#first ??= this.#sent.length ? safeParse(this.#sent[0]!) : undefined;
    return this.#last ?? this.#first ?? {};
  }

  push(ev: UpstreamEvent): string {
    const data = ev.data;
    if (data === '[DONE]') return '';
    // A choice's finish_reason: the answer is complete, its usage still to come. Not parsed for it;
    // inside a string the quotes would be escaped.
    if (!this.#finished && FINISHED.test(data)) this.#finished = true;
    // Only a chunk that mentions usage is parsed on the way through.
    if (data.includes('"usage"')) {
      const chunk = safeParse(data);
      if (chunk && openaiUsage(chunk.usage)) {
        this.#usage = chunk.usage as Record<string, unknown>;
        this.#last = chunk;
        if (Array.isArray(chunk.choices) && chunk.choices.length === 0) return '';
        delete chunk.usage;
        const clean = JSON.stringify(chunk);
        this.#sent.push(clean);
        return `data: ${clean}\n\n`;
      }
    }
    this.#sent.push(data);
    return `${ev.raw ?? `data: ${data}`}\n\n`;
  }

  close(bill: Bill): string {
    const head = this.#head();
    const trailer: Record<string, unknown> = {
      id: head.id ?? `chatcmpl-${bill.requestId}`,
      object: head.object ?? (this.#kind === 'chat' ? 'chat.completion.chunk' : 'text_completion'),
      created: head.created ?? Math.floor(Date.now() / 1000),
      model: head.model ?? '',
      choices: [],
      usage: billedUsage(this.#usage, bill),
    };
    if (bill.change) trailer.x_cashu = bill.change;
    return `data: ${JSON.stringify(trailer)}\n\ndata: [DONE]\n\n`;
  }

  fail(err: WireError): string {
    return `data: ${JSON.stringify(openaiErrorBody(err))}\n\n`;
  }
}

function openaiExchange(kind: Kind, body: Record<string, unknown>): Exchange {
  return {
    path: PATH[kind],
    body,
    ...(kind === 'chat' && chatReasoning(body)),
    read: (up) => ({ body: up, metered: meterBody(up) }),
    bill: (out, bill) => {
      out.usage = billedUsage(out.usage, bill);
    },
    stream: () => new OpenAIStream(kind),
  };
}

function parser(kind: Kind) {
  return (raw: unknown): ParsedRequest => {
    const parsed = schemas[kind].safeParse(raw);
    if (!parsed.success) throw invalid(parsed.error.issues);
    const body = parsed.data as Record<string, unknown>;
    const parts = new PromptParts();
    let requested: number | undefined;
    if (kind === 'chat') {
      parts.extraTokens += PER_REPLY;
      for (const m of body.messages as Array<Record<string, unknown>>) {
        parts.extraTokens += PER_MESSAGE;
        parts.addContent(m.content);
        if (typeof m.name === 'string') parts.extraTokens += 1;
        // Every other field of a message is prompt too, whatever its name: tool calls, a name, and
        // what upstreams read back from an earlier turn (DeepSeek's and vLLM's `reasoning_content`,
        // OpenRouter's `reasoning`, a `refusal`, which a Responses upstream gets as the turn's text).
        for (const [k, v] of Object.entries(m)) {
          if (k === 'role' || k === 'content') continue;
          if (typeof v === 'string') parts.addText(v);
          else parts.addJson(v);
        }
      }
      // Tool and format definitions are prompt too.
      for (const extra of [body.tools, body.functions, body.response_format]) parts.addJson(extra);
      const limits = [body.max_completion_tokens, body.max_tokens].filter((v): v is number => typeof v === 'number');
      requested = limits.length ? Math.min(...limits) : undefined;
    } else if (kind === 'completion') {
      addInput(parts, body.prompt);
      requested = (body.max_tokens as number | null | undefined) ?? undefined;
    } else {
      addInput(parts, body.input);
    }
    const stream = kind !== 'embedding' && body.stream === true;
    if (stream) {
      // Ask the upstream to report usage at the end of the stream; billing needs it.
      const opts = body.stream_options;
      body.stream_options = { ...(opts && typeof opts === 'object' ? opts : {}), include_usage: true };
    }
    const n = Math.max((body.n as number | null | undefined) ?? 1, kind === 'completion' ? ((body.best_of as number | null | undefined) ?? 1) : 1);
    const estimate: Estimate = { text: parts.text, extraTokens: parts.extraTokens, requestedCompletionTokens: requested, choices: n, images: parts.images };
    if (parts.wholeContext) estimate.wholeContext = true;
    // Breakpoints pass through to an upstream that caches (OpenRouter to Anthropic), which bills them.
    if (kind === 'chat' && asksLongCache(body.messages)) estimate.longCacheWrites = true;
    return {
      model: body.model as string,
      stream,
      estimate,
      exchange(upstream: UpstreamKind, limits) {
        const refused = refuseUnpriced(kind, body, limits.allowed ?? NONE);
        if (refused) return refused;
        if (upstream !== 'openai') {
          if (kind !== 'chat') return new EngineError('unsupported_by_upstream', `This model's upstream does not serve ${PATH[kind]}.`);
          return exchangeFor(chatCodec, { model: body.model as string, stream, estimate, body }, upstream, limits);
        }
        // Only top-level fields (and Ollama's options, copied) are changed: a shallow copy will do.
        const out = { ...body };
        if (kind !== 'embedding') limitOpenAI(out, limits.maxCompletionTokens);
        return openaiExchange(kind, out);
      },
    };
  };
}

const NONE: ReadonlySet<string> = new Set();

/** A legacy prompt or embedding input: a string, strings, or token arrays (counted by length). */
function addInput(parts: PromptParts, input: unknown): void {
  if (typeof input === 'string') return parts.addText(input);
  if (!Array.isArray(input)) return;
  if (input.every((x) => typeof x === 'number')) {
    parts.extraTokens += input.length;
    return;
  }
  for (const x of input) addInput(parts, x);
}

function openaiFormat(name: Kind): WireFormat {
  return { name, parse: parser(name), errorBody: openaiErrorBody };
}

export const chatFormat = openaiFormat('chat');
export const completionFormat = openaiFormat('completion');
export const embeddingFormat = openaiFormat('embedding');

/** Chat as a codec: the pivot itself, so every translation is the identity. */
export const chatCodec: Codec = {
  kind: 'openai',
  path: '/chat/completions',
  requestToChat: (body) => structuredClone(body),
  requestFromChat: (chat) => structuredClone(chat),
  responseToChat: (body) => body,
  responseFromChat: (chat) => chat,
  decoder: () => ({
    push: (ev) => {
      if (ev.data === '[DONE]') return [];
      const c = safeParse(ev.data);
      return c ? [c] : [];
    },
  }),
  encoder() {
    let head: Record<string, unknown> | undefined;
    let usage: unknown;
    return {
      push(chunk) {
        head ??= chunk;
        if (chunk.usage) {
          usage = chunk.usage;
          if (Array.isArray(chunk.choices) && chunk.choices.length === 0) return '';
          const { usage: _, ...rest } = chunk;
          return `data: ${JSON.stringify(rest)}\n\n`;
        }
        return `data: ${JSON.stringify(chunk)}\n\n`;
      },
      close(bill: Bill) {
        const trailer: Record<string, unknown> = {
          id: head?.id ?? `chatcmpl-${bill.requestId}`,
          object: 'chat.completion.chunk',
          created: head?.created ?? Math.floor(Date.now() / 1000),
          model: head?.model ?? '',
          choices: [],
          usage: billedUsage(usage, bill),
        };
        if (bill.change) trailer.x_cashu = bill.change;
        return `data: ${JSON.stringify(trailer)}\n\ndata: [DONE]\n\n`;
      },
      fail: (err: WireError) => `data: ${JSON.stringify(openaiErrorBody(err))}\n\n`,
    };
  },
  usageOf: openaiUsage,
  limit: (body, max) => limitOpenAI(body, max, 'max_completion_tokens'),
};
