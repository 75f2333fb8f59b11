import { z } from 'zod';
import type { ChatHistoryItem } from 'node-llama-cpp';

/**
 * A chat completions request as the embedded model takes it: the conversation in node-llama-cpp's
 * terms, and the sampling asked for. What a small local model cannot do (tools, images, several
 * choices, log-probabilities, forced JSON) is refused, never silently dropped.
 */
export interface LocalChat {
  /** The conversation, closed by an empty model turn so the template adds the generation prompt. */
  history: ChatHistoryItem[];
  /** Characters of text in the conversation, to refuse what cannot fit before tokenizing it. */
  chars: number;
  maxTokens?: number | undefined;
  stream: boolean;
  stop: string[];
  sampling: Sampling;
}

export interface Sampling {
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  seed?: number | undefined;
  frequencyPenalty?: number | undefined;
  presencePenalty?: number | undefined;
}

/**
 * llama.cpp's own server defaults: OpenAI's (temperature 1, nothing cut) make a model this small
 * ramble, and clients that care send their own.
 */
const DEFAULTS = { temperature: 0.8, topP: 0.95, topK: 40, minP: 0.05 };

const part = z.looseObject({ type: z.string() });
const message = z.looseObject({
  role: z.string(),
  content: z.union([z.string(), z.array(part)]).nullish(),
});
const positiveInt = z.number().int().positive();
const schema = z.looseObject({
  messages: z.array(message).min(1),
  stream: z.boolean().nullish(),
  max_tokens: positiveInt.nullish(),
  max_completion_tokens: positiveInt.nullish(),
  n: z.literal(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().nonnegative().nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(4)]).nullish(),
});

/** Fields asking for what this upstream does not do; each is refused when it asks for anything. */
const UNSUPPORTED: Record<string, string> = {
  tools: 'tool calls',
  functions: 'function calls',
  logprobs: 'log-probabilities',
  top_logprobs: 'log-probabilities',
  audio: 'audio output',
};

/** The request, or why it is refused (a message for a 400). */
export function readLocalChat(raw: unknown): LocalChat | string {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.join('.');
    if (where === 'n') return 'The local model makes one choice per request (n must be 1).';
    return `Invalid request for the local model: '${where}': ${issue.message}`;
  }
  const body = parsed.data;
  for (const [field, what] of Object.entries(UNSUPPORTED)) {
    const v = body[field];
    if (v != null && v !== false && !(Array.isArray(v) && v.length === 0)) return `The local model does not do ${what} ('${field}').`;
  }
  const format = body.response_format as { type?: unknown } | null | undefined;
  if (format != null && format.type !== 'text') return "The local model writes plain text only ('response_format').";
  const history: ChatHistoryItem[] = [];
  let chars = 0;
  for (const [i, m] of body.messages.entries()) {
    const text = textOf(m.content);
    if (text === undefined) return `The local model reads text only (messages.${i}.content).`;
    if (m.tool_calls != null || m.function_call != null) return `The local model does not do tool calls (messages.${i}).`;
    chars += text.length;
    if (m.role === 'system' || m.role === 'developer') history.push({ type: 'system', text });
    else if (m.role === 'user') history.push({ type: 'user', text });
    else if (m.role === 'assistant') history.push({ type: 'model', response: [text] });
    else return `The local model does not take messages of role '${m.role}' (messages.${i}).`;
  }
  history.push({ type: 'model', response: [] });
  const limits = [body.max_tokens, body.max_completion_tokens].filter((v): v is number => typeof v === 'number');
  return {
    history,
    chars,
    maxTokens: limits.length ? Math.min(...limits) : undefined,
    stream: body.stream === true,
    stop: body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop,
    sampling: {
      temperature: body.temperature ?? DEFAULTS.temperature,
      topP: body.top_p ?? DEFAULTS.topP,
      topK: body.top_k ?? DEFAULTS.topK,
      minP: body.min_p ?? DEFAULTS.minP,
      seed: body.seed ?? undefined,
      frequencyPenalty: body.frequency_penalty ?? undefined,
      presencePenalty: body.presence_penalty ?? undefined,
    },
  };
}

/** A message's text: a string, or text parts joined; undefined when a part is not text. */
function textOf(content: string | Array<Record<string, unknown>> | null | undefined): string | undefined {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  let out = '';
  for (const p of content) {
    if (p.type !== 'text' || typeof p.text !== 'string') return undefined;
    out += p.text;
  }
  return out;
}

/**
 * Cuts generated text at the first stop sequence. A piece that might be the start of one is held
 * back until the text shows it is not, so no part of a stop sequence ever reaches the client.
 */
export class StopCutter {
  readonly #stops: string[];
  readonly #hold: number;
  #held = '';
  stopped = false;

  constructor(stops: string[]) {
    this.#stops = stops;
    this.#hold = Math.max(0, ...stops.map((s) => s.length - 1));
  }

  /** Takes the next piece of text; returns what may be sent now. */
  push(text: string): string {
    if (this.stopped) return '';
    this.#held += text;
    let cut = -1;
    for (const s of this.#stops) {
      const at = this.#held.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      const out = this.#held.slice(0, cut);
      this.#held = '';
      return out;
    }
    let keep = Math.min(this.#hold, this.#held.length);
    // Never between the halves of a surrogate pair.
    if (keep > 0 && keep < this.#held.length && isHighSurrogate(this.#held.charCodeAt(this.#held.length - keep - 1))) keep++;
    const out = this.#held.slice(0, this.#held.length - keep);
    this.#held = this.#held.slice(this.#held.length - keep);
    return out;
  }

  /** The end of the text: what was held back was no stop sequence after all. */
  flush(): string {
    const out = this.#held;
    this.#held = '';
    return out;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
