import { channel } from 'node:diagnostics_channel';
import { Pool, type Dispatcher } from 'undici';
import type { Config } from '../config.ts';
import { onRequests, type RequestTiming } from './undici-timing.ts';

/** How an upstream is spoken to; see src/engine/format.ts. */
export type UpstreamKind = 'openai' | 'openai-responses' | 'anthropic';

/** What an observer of upstream calls (the metrics) learns about each one. */
export interface UpstreamTiming {
  /** The upstream's base URL, without credentials. */
  upstream: string;
  op: 'post' | 'models';
  path: string;
  /** The HTTP status, or 'error' when no response headers came (refused, timed out, aborted). */
  status: number | 'error';
  /** Time to the response headers. */
  seconds: number;
}

/** Published once per upstream call, when its response headers arrive or it fails. */
export const upstreamTimings = channel('cashu-gateway:upstream');

/** The base URLs of the pools open now, each with how many pools share it. */
const open = new Map<string, number>();
let stopTiming: (() => void) | undefined;

/** The open upstream a request went to (the longest base URL it falls under), and its path below that. */
function upstreamOf(origin: string, path: string): { upstream: string; path: string } | undefined {
  let best: { upstream: string; path: string } | undefined;
  for (const base of open.keys()) {
    if (!base.startsWith(origin) || (best && best.upstream.length >= base.length)) continue;
    const prefix = base.slice(origin.length);
    if (path.startsWith(`${prefix}/`)) best = { upstream: base, path: path.slice(prefix.length).split('?', 1)[0]! };
  }
  return best;
}

/** A POST is a call, a GET of /models the listing; nothing else is sent to an upstream. */
function opOf(method: string, path: string): UpstreamTiming['op'] | undefined {
  if (method === 'POST') return 'post';
  return method === 'GET' && path === '/models' ? 'models' : undefined;
}

/** Times calls to the open upstreams while anyone listens on `upstreamTimings`. */
function publishTiming(t: RequestTiming): void {
  const to = upstreamOf(t.origin, t.path)!;
  upstreamTimings.publish({ upstream: to.upstream, op: opOf(t.method, to.path)!, path: to.path, status: t.status, seconds: t.seconds } satisfies UpstreamTiming);
}

function timeCallsTo(base: string): void {
  open.set(base, (open.get(base) ?? 0) + 1);
  stopTiming ??= onRequests(publishTiming, (origin, path, method) => {
    if (!upstreamTimings.hasSubscribers) return false;
    const to = upstreamOf(origin, path);
    return to !== undefined && opOf(method, to.path) !== undefined;
  });
}

function stopTimingCallsTo(base: string): void {
  const n = (open.get(base) ?? 1) - 1;
  if (n > 0) return void open.set(base, n);
  open.delete(base);
  if (open.size === 0) {
    stopTiming?.();
    stopTiming = undefined;
  }
}

export interface UpstreamModel {
  id: string;
  created?: number;
  owned_by?: string;
  /** A context length the upstream knows for certain (the embedded model's); HTTP upstreams leave it unset. */
  contextLength?: number;
}

/** An upstream's answer: the status, and a body read as a stream of bytes. */
export interface UpstreamResponse {
  statusCode: number;
  body: AsyncIterable<Uint8Array> & { destroy(): void };
}

/** How one request goes to an upstream. */
export interface PostOptions {
  /** Stops the request (a stream whose client left). */
  signal?: AbortSignal | undefined;
  /** The client's few passed-on headers. */
  headers?: Record<string, string> | undefined;
  /**
   * A whole (non-streamed) answer: its headers come only once it is all made, so they are waited
   * for as long as a body may be silent, not for the time that finds a stream's upstream dead.
   */
  whole?: boolean | undefined;
}

/**
 * What the engine needs of an upstream: the HTTP pool below, or a model run in this process
 * (./local.ts), which answers the same requests with the same bytes.
 */
export interface UpstreamClient {
  readonly kind: UpstreamKind;
  readonly allowedParameters: ReadonlySet<string>;
  /** Names the upstream in logs and metrics: never credentials. */
  readonly baseUrl: string;
  redact(text: string): string;
  post(path: string, body: string, opts?: PostOptions): Promise<UpstreamResponse>;
  /**
   * Whether a `post` that failed with `err` surely never reached anyone who bills for it (the
   * connection was never made), so that another upstream may be tried without paying twice.
   */
  unsent(err: unknown): boolean;
  models(): Promise<UpstreamModel[]>;
  close(): Promise<void>;
}

/**
 * One keep-alive connection pool per upstream, created at start-up. An SSE stream holds its
 * connection for its whole life, so the pool is sized for many concurrent streams.
 */
export class Upstream implements UpstreamClient {
  readonly #pool: Pool;
  readonly #prefix: string;
  readonly #headers: Record<string, string>;
  /** Base URL for logs and metrics: never credentials. */
  readonly #label: string;
  readonly #secret: string;
  readonly #wholeHeadersTimeout: number;
  #closed = false;
  readonly kind: UpstreamKind;
  /** Cost-bearing parameters the operator lets through to this upstream. */
  readonly allowedParameters: ReadonlySet<string>;

  constructor(
    cfg: Pick<Config, 'UPSTREAM_BASE_URL' | 'UPSTREAM_API_KEY' | 'UPSTREAM_HEADERS_TIMEOUT_MS' | 'UPSTREAM_BODY_TIMEOUT_MS' | 'UPSTREAM_CONNECTIONS'>,
    opts: { kind?: UpstreamKind; allowedParameters?: readonly string[]; anthropicVersion?: string } = {},
  ) {
    this.kind = opts.kind ?? 'openai';
    this.allowedParameters = new Set(opts.allowedParameters ?? []);
    this.#secret = cfg.UPSTREAM_API_KEY;
    const url = new URL(cfg.UPSTREAM_BASE_URL);
    this.#prefix = url.pathname.replace(/\/+$/, '');
    this.#wholeHeadersTimeout = Math.max(cfg.UPSTREAM_HEADERS_TIMEOUT_MS, cfg.UPSTREAM_BODY_TIMEOUT_MS);
    this.#pool = new Pool(url.origin, {
      connections: cfg.UPSTREAM_CONNECTIONS,
      pipelining: 1,
      headersTimeout: cfg.UPSTREAM_HEADERS_TIMEOUT_MS,
      bodyTimeout: cfg.UPSTREAM_BODY_TIMEOUT_MS,
      connectTimeout: 10_000,
      // Under uvicorn's 5 s (vLLM and many Python servers), which closes idle connections without
      // announcing a Keep-Alive timeout; servers that announce one are followed by undici.
      keepAliveTimeout: 4_000,
    });
    this.#headers = { 'content-type': 'application/json', 'user-agent': 'cashu-gateway' };
    if (this.kind === 'anthropic') {
      this.#headers['anthropic-version'] = opts.anthropicVersion ?? '2023-06-01';
      if (cfg.UPSTREAM_API_KEY) this.#headers['x-api-key'] = cfg.UPSTREAM_API_KEY;
    } else if (cfg.UPSTREAM_API_KEY) {
      this.#headers.authorization = `Bearer ${cfg.UPSTREAM_API_KEY}`;
    }
    this.#label = url.origin + this.#prefix;
    timeCallsTo(this.#label);
  }

  /** Removes this upstream's key from text it sent back (an error message may echo it). */
  redact(text: string): string {
    return this.#secret.length >= 4 ? text.replaceAll(this.#secret, '[redacted]') : text;
  }

  /** The base URL (config refuses URLs with credentials, so it is safe to print). */
  get baseUrl(): string {
    return this.#label;
  }

  async post(path: string, body: string, opts: PostOptions = {}): Promise<Dispatcher.ResponseData> {
    const { signal, headers: extra, whole } = opts;
    // The client's few passed-on headers never override ours (the key, the version).
    const headers = extra ? { ...extra, ...this.#headers } : this.#headers;
    // A stream's headers come at once, so a long wait for them means a dead upstream; a whole
    // answer's come when it is done, which a reasoning model or a large `n` takes minutes to be.
    const headersTimeout = whole ? this.#wholeHeadersTimeout : undefined;
    const send = () => this.#pool.request({ method: 'POST', path: this.#prefix + path, headers, body, signal, ...(headersTimeout ? { headersTimeout } : {}) });
    try {
      return await send();
    } catch (e) {
      // A keep-alive connection the upstream closed just as we reused it fails with no answer at
      // all. The request almost surely reached no handler, so it goes once more, on a fresh
      // connection, as the OpenAI SDKs do on connection errors.
      if (signal?.aborted || !closedWithoutAnswer(e)) throw e;
      return send();
    }
  }

  unsent(err: unknown): boolean {
    return neverConnected(err);
  }

  async models(): Promise<UpstreamModel[]> {
    const res = await this.#pool.request({ method: 'GET', path: `${this.#prefix}/models`, headers: this.#headers });
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new Error(`upstream /models answered ${res.statusCode}`);
    }
    const json = (await res.body.json()) as { data?: UpstreamModel[] };
    return Array.isArray(json.data) ? json.data.filter((m) => typeof m?.id === 'string') : [];
  }

  async close(): Promise<void> {
    if (!this.#closed) stopTimingCallsTo(this.#label);
    this.#closed = true;
    await this.#pool.close();
  }
}

function closedWithoutAnswer(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === 'UND_ERR_SOCKET' || code === 'ECONNRESET';
}

/**
 * Failures of the connection's setup (refused, no route, no such host, no TLS handshake): the
 * request was never written. Anything else (a timeout, a connection lost) may have come after the
 * upstream read the request and began the work it bills for.
 */
const NEVER_CONNECTED = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT',
]);

function neverConnected(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  // TLS refused before any byte of the request: a bad certificate, a server that speaks no TLS.
  return NEVER_CONNECTED.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_') || code.includes('CERT');
}
