import type { EngineError } from './errors.ts';
import type { Cost, Usage } from './pricing.ts';

/**
 * The contract between the engine and a wire format. The engine prices, reserves, calls upstreams
 * with failover, meters, settles and makes change; a wire format (OpenAI chat, completions,
 * embeddings, Responses, Anthropic Messages) only reads and writes its own protocol. Adding a
 * format is one module implementing `WireFormat` and one route; the engine is not touched.
 */

/** How an upstream is spoken to: chat completions (Ollama, vLLM, OpenRouter…), Responses, or Anthropic Messages. */
export type { UpstreamKind } from '../upstream/client.ts';
import type { UpstreamKind } from '../upstream/client.ts';

/** What a format measured in an upstream's answer so far. */
export interface Metered {
  /** The usage the upstream reported, if it has (the latest report wins). */
  usage?: Usage | undefined;
  /**
   * Every generated field seen so far (text, reasoning, tool calls and their arguments, refusals,
   * audio transcripts), so that a reply without usage is counted from all of it, not only its text.
   */
  generated: string;
  /** The model the upstream says it served, when it says. */
  model?: string | undefined;
  /**
   * The usage so far reports the prompt but not yet the whole output (Anthropic's `message_start`):
   * a stream ending before the final report is billed for what was generated, at least.
   */
  partial?: boolean | undefined;
  /**
   * The model is doing work it bills but does not show (reasoning, summarized or encrypted
   * thinking): nothing generated can be counted for it, so only the upstream's final usage says
   * what it cost, and a client leaving does not stop the upstream before that.
   */
  hidden?: boolean | undefined;
  /**
   * The answer is complete and only its usage is still to come: the upstream has nothing left to
   * generate, so a client leaving now does not stop it before the usage arrives (it may bill
   * reasoning a chat upstream never shows).
   */
  finished?: boolean | undefined;
}

/** The charge as settled, for the format to write into its answer. */
export interface Bill {
  usage: Usage;
  cost: Cost;
  /** Change for a one-shot (X-Cashu) payer, as a Cashu token. */
  change?: string | undefined;
  /** Stable id of this request (the reservation's), for ids the upstream did not give. */
  requestId: string;
}

/**
 * An error as a door states it to a client, for a format to write in its protocol's shape. Which
 * status (and OpenAI error type) a code is, the door decides; a format's protocol may name its own
 * error types by that status (Anthropic's do). Mid-stream, the status is the one the error would
 * have had before the stream started.
 */
export interface WireError {
  readonly status: number;
  readonly code: string;
  readonly message: string;
  /** OpenAI's error type, the gateway's own error shape. */
  readonly type: string;
  /** Facts beside the message, written into the error object. */
  readonly extra: Record<string, unknown>;
}

/** One SSE event from the upstream: its `event:` name (if any) and its joined `data:` lines. */
export interface UpstreamEvent {
  name?: string | undefined;
  data: string;
  /** The event as it came, to forward untouched when nothing in it changes. */
  raw?: string | undefined;
}

/** Reads one upstream stream and writes the client's. Stateful: one per request. */
export interface StreamReader {
  /** Takes one upstream event; returns the text the client gets now ('' to withhold it). */
  push(event: UpstreamEvent): string;
  readonly metered: Metered;
  /** The client's closing events, carrying the charge (and change). */
  close(bill: Bill): string;
  /** An error event in the client's format, once the stream has started. */
  fail(err: WireError): string;
}

/** One request as sent to one kind of upstream, and how to read that upstream's answer. */
export interface Exchange {
  /** Path below the upstream's base URL, e.g. `/chat/completions`. */
  path: string;
  body: Record<string, unknown>;
  /** Request headers of the client's passed on to the upstream (an allowlist, per protocol). */
  headers?: Record<string, string> | undefined;
  /**
   * The upstream's stream may show none of its model's reasoning (chat completions: OpenAI's
   * reasoning models stream none), so its events cannot say whether the model is at work.
   */
  hidesReasoning?: boolean | undefined;
  /** The request asks the model to reason. */
  reasons?: boolean | undefined;
  /**
   * Reads a whole upstream answer; returns the client's body (usage and cost are added by `bill`),
   * or why it cannot be passed on (`refused`). Either way with what was metered: the upstream did
   * the work, so it is billed.
   */
  read(upstream: Record<string, unknown>): { body: Record<string, unknown>; metered: Metered } | { refused: EngineError; metered: Metered };
  /** Writes the charge into a non-streamed client body. */
  bill(body: Record<string, unknown>, bill: Bill): void;
  stream(): StreamReader;
}

/**
 * What the engine prices before anything is sent. The format only collects; the engine counts
 * (after the payer's credential has been checked, and without blocking the event loop).
 */
export interface Estimate {
  /** The prompt's text in pieces: messages, system prompt, tool definitions, schemas. */
  text: string[];
  /** Tokens the text does not show: per-message framing, media allowances (`mediaTokens`). */
  extraTokens: number;
  /** What the client asked for as its completion limit, if it did. */
  requestedCompletionTokens?: number | undefined;
  /** Completions asked for (`n`, `best_of`). */
  choices: number;
  /** Image (and other media) parts, billed by count where a price says so. */
  images: number;
  /** The prompt includes what the upstream stores (an earlier response): reserve the whole context. */
  wholeContext?: boolean | undefined;
  /** The prompt asks for Anthropic's 1-hour cache (`ttl: "1h"`): reserve its writes at that rate. */
  longCacheWrites?: boolean | undefined;
}

export interface ExchangeLimits {
  maxCompletionTokens: number;
  /** Cost-bearing parameters the operator allows for this upstream (refused otherwise). */
  allowed?: ReadonlySet<string> | undefined;
}

export interface ParsedRequest {
  model: string;
  stream: boolean;
  estimate: Estimate;
  /**
   * The exchange for an upstream of `kind`, its completion limit held to `maxCompletionTokens`
   * (every alias the upstream honours set or removed). An EngineError when this request cannot be
   * expressed to that kind of upstream (refused, never silently dropped).
   */
  exchange(kind: UpstreamKind, limits: ExchangeLimits): Exchange | EngineError;
}

/** The client's request headers, as node gives them. */
export type ClientHeaders = Readonly<Record<string, string | string[] | undefined>>;

export interface WireFormat {
  /** Names the format in logs and metrics: `chat`, `completion`, `embedding`, `responses`, `messages`. */
  readonly name: string;
  /** Validates a client body; an EngineError for anything malformed or refused. */
  parse(raw: unknown, headers?: ClientHeaders): ParsedRequest;
  /** An error as this format's clients expect it. */
  errorBody(err: WireError): Record<string, unknown>;
}

/**
 * Every protocol meets the others at OpenAI chat completions: a codec turns its requests, answers
 * and streams into chat's and back. A client of protocol A served by an upstream of protocol B is
 * A → chat → B for the request and B → chat → A for the answer; when A and B are the same, the
 * exchange passes the protocol through untouched and only meters it. Chat objects here are
 * OpenAI's JSON shapes (chat.completion, chat.completion.chunk); their `usage` is OpenAI's, with
 * `prompt_tokens` counting every input token, `prompt_tokens_details.cached_tokens` those read
 * from cache, `completion_tokens_details.reasoning_tokens`, and `cache_creation_input_tokens`
 * (Anthropic's name) for those written to cache.
 */
export interface Codec {
  /** The upstream kind that speaks this protocol natively. */
  readonly kind: UpstreamKind;
  /** Path below an upstream's base URL (e.g. `/messages`). */
  readonly path: string;
  /** An EngineError (stable code) for whatever cannot be expressed on the other side. */
  requestToChat(body: Record<string, unknown>): Record<string, unknown>;
  requestFromChat(chat: Record<string, unknown>): Record<string, unknown>;
  responseToChat(body: Record<string, unknown>): Record<string, unknown>;
  /** `request`, when given, is the client's body, for answers that echo its settings. */
  responseFromChat(chat: Record<string, unknown>, request?: Record<string, unknown>): Record<string, unknown>;
  /** Native stream events in, chat chunks out (usage arrives as a chunk with `usage`). */
  /** `hidden`: whether the events so far show the model doing work it bills but does not stream (`Metered.hidden`). */
  decoder(): { push(event: UpstreamEvent): Array<Record<string, unknown>>; readonly hidden?: boolean };
  /** Chat chunks in, this protocol's SSE text out; `close` writes the final events with the bill. */
  encoder(request?: Record<string, unknown>): { push(chunk: Record<string, unknown>): string; close(bill: Bill): string; fail(err: WireError): string };
  /** The protocol's usage object, normalized; undefined when absent or not believable. */
  usageOf(usage: unknown): Usage | undefined;
  /** Holds a native request body to `maxTokens` of output (every alias the protocol has). */
  limit(body: Record<string, unknown>, maxTokens: number): void;
  /** A reader for this protocol passing through untouched, the events with the final usage re-sent with the bill. */
  relay?(): StreamReader;
  /** Writes the bill into a whole answer of this protocol. */
  billBody?(body: Record<string, unknown>, bill: Bill): void;
  /** The client's headers a native upstream of this protocol should see (e.g. Anthropic's betas). */
  forward?(headers: ClientHeaders): Record<string, string> | undefined;
}
