import { EngineError } from '../engine/errors.ts';
import type { Bill, ClientHeaders, Codec, Estimate, Exchange, ExchangeLimits, Metered, ParsedRequest, StreamReader, UpstreamEvent, UpstreamKind, WireError, WireFormat } from '../engine/format.ts';
import type { Usage } from '../engine/pricing.ts';
import { chatReasoning, costBody, generatedOf, limitOpenAI, meterBody, openaiUsage, safeParse } from './openai.ts';

/**
 * Builds a wire format from its codec: a client of protocol A served by an upstream of protocol B
 * is A → chat → B for the request and B → chat → A for the answer. When A and B are the same the
 * protocol passes through untouched, and only the events that carry the final usage are held back
 * to be re-sent with the charge.
 */

/** A client request as a protocol's parser reads it. */
export interface ClientRequest {
  model: string;
  stream: boolean;
  estimate: Estimate;
  body: Record<string, unknown>;
  headers?: ClientHeaders | undefined;
}

const codecs = new Map<UpstreamKind, Codec>();

/** Makes a protocol reachable as an upstream kind (each protocol module registers its codec). */
export function registerCodec(codec: Codec): void {
  codecs.set(codec.kind, codec);
}

/** The events a native stream ends with, held back until the charge is known. */
interface Final {
  names: ReadonlySet<string>;
  bill(held: UpstreamEvent[], bill: Bill): string;
}

function sse(name: string | undefined, data: unknown): string {
  return `${name ? `event: ${name}\n` : ''}data: ${JSON.stringify(data)}\n\n`;
}

function withCost(usage: unknown, bill: Bill): Record<string, unknown> {
  return { ...(usage && typeof usage === 'object' ? (usage as Record<string, unknown>) : {}), cost: costBody(bill), cost_sats: bill.cost.totalMsats / 1000 };
}

const FINALS: Partial<Record<UpstreamKind, Final>> = {
  // Anthropic Messages: the last message_delta carries the output usage; message_stop ends the stream.
  anthropic: {
    names: new Set(['message_delta', 'message_stop']),
    bill(held, bill) {
      let out = '';
      for (const ev of held) {
        const data = safeParse(ev.data);
        if (ev.name === 'message_delta' && data) {
          data.usage = withCost(data.usage, bill);
          if (bill.change) data.x_cashu = bill.change;
          out += sse(ev.name, data);
        } else {
          out += `${ev.raw ?? sse(ev.name, data)}\n\n`;
        }
      }
      return out;
    },
  },
  // Responses: response.completed (or .incomplete) carries the whole response and its usage.
  'openai-responses': {
    names: new Set(['response.completed', 'response.incomplete']),
    bill(held, bill) {
      let out = '';
      for (const ev of held) {
        const data = safeParse(ev.data);
        const response = data?.response as Record<string, unknown> | undefined;
        if (data && response) {
          response.usage = withCost(response.usage, bill);
          if (bill.change) response.x_cashu = bill.change;
          out += sse(ev.name, data);
        } else {
          out += `${ev.raw}\n\n`;
        }
      }
      return out;
    },
  },
};

/** Meters chat chunks as they pass: the latest usage, the model, and every generated field. */
class ChunkMeter {
  #usage: Usage | undefined;
  #model: string | undefined;
  #generated = '';
  #finished = false;

  add(chunk: Record<string, unknown>): void {
    const u = openaiUsage(chunk.usage);
    if (u) this.#usage = u;
    if (Array.isArray(chunk.choices) && chunk.choices.some((c) => (c as { finish_reason?: unknown } | null)?.finish_reason)) this.#finished = true;
    if (typeof chunk.model === 'string' && chunk.model) this.#model ??= chunk.model;
    this.#generated += generatedOf(chunk.choices, 'delta');
  }

  get metered(): Metered {
    return { usage: this.#usage, model: this.#model, generated: this.#generated, finished: this.#finished };
  }
}

/** Metered chunks, with whether the upstream's decoder saw work it does not show. */
function meteredBy(meter: ChunkMeter, decoder: { readonly hidden?: boolean }): Metered {
  const m = meter.metered;
  if (decoder.hidden) m.hidden = true;
  return m;
}

/** Chat chunks from a chat upstream's events. */
function chatDecoder() {
  return {
    push(ev: UpstreamEvent): Array<Record<string, unknown>> {
      if (ev.data === '[DONE]') return [];
      const chunk = safeParse(ev.data);
      return chunk ? [chunk] : [];
    },
  };
}

/** Native pass-through: events forwarded as they came, metered through the codec's decoder. */
class NativeStream implements StreamReader {
  readonly #meter = new ChunkMeter();
  readonly #decoder: ReturnType<Codec['decoder']>;
  readonly #final: Final | undefined;
  readonly #held: UpstreamEvent[] = [];
  readonly #codec: Codec;

  constructor(codec: Codec) {
    this.#codec = codec;
    this.#decoder = codec.decoder();
    this.#final = FINALS[codec.kind];
  }

  get metered(): Metered {
    return meteredBy(this.#meter, this.#decoder);
  }

  push(ev: UpstreamEvent): string {
    for (const c of this.#decoder.push(ev)) this.#meter.add(c);
    if (ev.name && this.#final?.names.has(ev.name)) {
      this.#held.push(ev);
      return '';
    }
    return `${ev.raw ?? sse(ev.name, safeParse(ev.data))}\n\n`;
  }

  close(bill: Bill): string {
    return this.#final ? this.#final.bill(this.#held, bill) : this.#held.map((e) => `${e.raw}\n\n`).join('');
  }

  fail(err: WireError): string {
    return this.#codec.encoder().fail(err);
  }
}

/** Translated: upstream events → chat chunks → the client's events. */
class TranslatedStream implements StreamReader {
  readonly #meter = new ChunkMeter();
  readonly #decoder: ReturnType<Codec['decoder']>;
  readonly #encoder: ReturnType<Codec['encoder']>;

  constructor(upstream: Codec | undefined, client: Codec, request: Record<string, unknown>) {
    this.#decoder = upstream ? upstream.decoder() : chatDecoder();
    this.#encoder = client.encoder(request);
  }

  get metered(): Metered {
    return meteredBy(this.#meter, this.#decoder);
  }

  push(ev: UpstreamEvent): string {
    let out = '';
    for (const c of this.#decoder.push(ev)) {
      this.#meter.add(c);
      out += this.#encoder.push(c);
    }
    return out;
  }

  close(bill: Bill): string {
    return this.#encoder.close(bill);
  }

  fail(err: WireError): string {
    return this.#encoder.fail(err);
  }
}

function billBody(out: Record<string, unknown>, bill: Bill): void {
  out.usage = withCost(out.usage, bill);
  if (bill.change) out.x_cashu = bill.change;
}

/** The exchange for an upstream of `kind`, for a client speaking `client`'s protocol. */
export function exchangeFor(client: Codec, req: ClientRequest, kind: UpstreamKind, limits: ExchangeLimits): Exchange | EngineError {
  try {
    if (kind === client.kind) {
      const body = structuredClone(req.body);
      client.limit(body, limits.maxCompletionTokens);
      return {
        path: client.path,
        body,
        headers: req.headers && client.forward?.(req.headers),
        read: (up) => ({ body: up, metered: meterBody(client.responseToChat(up)) }),
        bill: (out, bill) => (client.billBody ?? billBody)(out, bill),
        stream: () => client.relay?.() ?? new NativeStream(client),
      };
    }
    const chat = client.requestToChat(req.body);
    if (req.stream) chat.stream_options = { ...((chat.stream_options as object | undefined) ?? {}), include_usage: true };
    const upstream = kind === 'openai' ? undefined : codecs.get(kind);
    if (kind !== 'openai' && !upstream) return new EngineError('unsupported_by_upstream', `This model's upstream speaks a protocol (${kind}) this gateway cannot translate to.`);
    let body: Record<string, unknown>;
    if (upstream) {
      body = upstream.requestFromChat(chat);
      upstream.limit(body, limits.maxCompletionTokens);
    } else {
      body = chat;
      limitOpenAI(body, limits.maxCompletionTokens);
    }
    return {
      path: upstream?.path ?? '/chat/completions',
      body,
      // Other upstreams' streams show when their model reasons (a reasoning item, a thinking block).
      ...(!upstream && chatReasoning(body)),
      read: (up) => {
        const asChat = upstream ? upstream.responseToChat(up) : up;
        const metered = meterBody(asChat);
        try {
          return { body: client.responseFromChat(asChat, req.body), metered };
        } catch (e) {
          // Say, a tool call cut short by the client's own limit: not the client's to have, but paid for.
          if (e instanceof EngineError) return { refused: e, metered };
          throw e;
        }
      },
      bill: (out, bill) => (client.billBody ?? billBody)(out, bill),
      stream: () => new TranslatedStream(upstream, client, req.body),
    };
  } catch (e) {
    if (e instanceof EngineError) return e;
    throw e;
  }
}

/** A wire format made of a protocol's parser and codec. */
export function codecFormat(opts: {
  name: string;
  codec: Codec;
  parse: (raw: unknown) => ClientRequest;
  errorBody: (err: WireError) => Record<string, unknown>;
  /** Refuses (or adjusts) a request for one upstream kind, given what its operator allows. */
  guard?: (req: ClientRequest, kind: UpstreamKind, allowed: ReadonlySet<string>) => EngineError | ClientRequest;
}): WireFormat {
  const { codec } = opts;
  return {
    name: opts.name,
    errorBody: opts.errorBody,
    parse(raw: unknown, headers?: ClientHeaders): ParsedRequest {
      const req = { ...opts.parse(raw), headers };
      return {
        model: req.model,
        stream: req.stream,
        estimate: req.estimate,
        exchange: (kind, limits) => {
          const guarded = opts.guard ? opts.guard(req, kind, limits.allowed ?? new Set()) : req;
          return guarded instanceof EngineError ? guarded : exchangeFor(codec, guarded, kind, limits);
        },
      };
    },
  };
}
