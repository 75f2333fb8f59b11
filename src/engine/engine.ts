import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { CashuWallets } from '../cashu/wallet.ts';
import { paymentRequest } from '../cashu/payment-request.ts';
import { inspectToken, isCashuToken } from '../cashu/token.ts';
import type { Ledger } from '../ledger/ledger.ts';
import { SseSplitter, eventData } from '../upstream/sse.ts';
import { GatewayError } from './errors.ts';
import { UPSTREAM_PATH, type Job } from './job.ts';
import { costOf, type Cost, type Usage } from './pricing.ts';
import { countText } from './tokens.ts';

/** How a request pays: a one-shot `X-Cashu` token, or an `Authorization: Bearer` credential. */
export interface Payment {
  xCashu?: string | undefined;
  bearer?: string | undefined;
  /** Lock a one-shot payer's change to this compressed pubkey (NUT-11). */
  lockChangeTo?: string | undefined;
}

export interface Payer {
  keyHash: string;
  reservationId: string;
  /** Paid by `X-Cashu`: whatever the request does not cost comes back as change. */
  oneShot: boolean;
  lockChangeTo?: string | undefined;
}

export interface Receipt {
  usage: Usage;
  cost: Cost;
  balance: number;
  /** Change for a one-shot payer, as a Cashu token. */
  change?: string | undefined;
}

export interface StreamSink {
  /** Called once, before the first byte, when the upstream has accepted the request. */
  open(): void;
  write(text: string): Promise<void>;
  end(): void;
}

const SK = /^sk-([0-9a-f]{64})$/;

export class Engine {
  readonly #ledger: Ledger;
  readonly #wallets: CashuWallets;
  readonly #trusted: ReadonlySet<string>;
  readonly #log: Logger;

  constructor(deps: { ledger: Ledger; wallets: CashuWallets; log: Logger }) {
    this.#ledger = deps.ledger;
    this.#wallets = deps.wallets;
    this.#trusted = new Set(deps.wallets.mints);
    this.#log = deps.log;
  }

  get trustedMints(): ReadonlySet<string> {
    return this.#trusted;
  }

  /**
   * 402. A client that paid with X-Cashu reads that header back as its refund (Routstr's
   * clients do), so it only carries a NUT-18 payment request when no token was presented.
   */
  paymentRequired(msats: number, code: string, message: string, presentedXCashu = false): GatewayError {
    const headers: Record<string, string> = { 'cache-control': 'no-store' };
    if (!presentedXCashu) headers['x-cashu'] = paymentRequest(msats, this.#wallets.mints, this.#wallets.p2pk.pubkey);
    return new GatewayError(402, code, message, { headers, extra: { amount_required_msats: msats } });
  }

  /** Finds who pays and reserves the job's maximum cost from their balance. */
  async pay(job: Job, payment: Payment): Promise<Payer> {
    const raw = payment.xCashu ?? payment.bearer;
    if (!raw) {
      throw this.paymentRequired(job.maxMsats, 'payment_required', 'Payment required: send a Cashu token as the API key or in the X-Cashu header.');
    }
    let keyHash: string;
    if (payment.xCashu !== undefined || isCashuToken(raw)) {
      const info = inspectToken(raw, this.#trusted);
      keyHash = info.hash;
      const known = await this.#ledger.getKey(keyHash);
      if (!known) {
        // Too small to ever pay for this job: refuse before the mint is asked, the token untouched.
        // A token already claimed (say, as a top-up) goes on to be refused as spent instead.
        if (info.msats < job.maxMsats && !(await this.#ledger.getToken(info.hash))) {
          throw this.paymentRequired(
            job.maxMsats,
            'insufficient_balance',
            `Insufficient payment: this request needs up to ${job.maxMsats} msats; the token is worth ${info.msats} msats.`,
            payment.xCashu !== undefined,
          );
        }
        await this.#wallets.redeem(info, keyHash);
      } else if (payment.xCashu !== undefined && known.balance === 0) {
        throw new GatewayError(400, 'cashu_token_already_spent', 'This Cashu token has already been spent.');
      }
    } else {
      // An unknown key fails its reservation; it is looked up only then, off the hot path.
      const m = SK.exec(raw);
      if (!m) throw new GatewayError(401, 'invalid_api_key', 'Invalid API key.');
      keyHash = m[1]!;
    }
    return this.payFromKey(job, keyHash, { oneShot: payment.xCashu !== undefined, lockChangeTo: payment.lockChangeTo });
  }

  /** Reserves the job's maximum cost from a key already credited (a token, a paid quote, a nutzap). */
  async payFromKey(job: Job, keyHash: string, opts: { oneShot: boolean; lockChangeTo?: string | undefined }): Promise<Payer> {
    const reservationId = randomUUID();
    if (!(await this.#ledger.reserve(keyHash, job.maxMsats, reservationId))) {
      const key = await this.#ledger.getKey(keyHash);
      if (!key) throw new GatewayError(401, 'invalid_api_key', 'Invalid API key.');
      if (key.revoked) throw new GatewayError(401, 'key_revoked', 'This API key has been revoked; its balance can still be refunded.');
      const available = key.balance - key.reserved;
      const err = this.paymentRequired(
        job.maxMsats,
        'insufficient_balance',
        `Insufficient balance: this request needs up to ${job.maxMsats} msats; ${available} msats available.`,
        opts.oneShot,
      );
      // A one-shot payer whose token fell short (mint fees) gets it back at once.
      const refund = opts.oneShot ? await this.#change(keyHash, opts.lockChangeTo) : undefined;
      if (refund) {
        err.extra.refund_token = refund;
        err.headers['x-cashu'] = refund;
      }
      throw err;
    }
    return { keyHash, reservationId, oneShot: opts.oneShot, lockChangeTo: opts.lockChangeTo };
  }

  /** Settles the charge and, for a one-shot payer, pays the rest back as change. */
  async #settle(payer: Payer | null, cost: Cost): Promise<{ charged: number; balance: number; change?: string }> {
    if (!payer) return { charged: 0, balance: 0 };
    const s = await this.#ledger.settle(payer.reservationId, cost.totalMsats);
    if (s.chargedMsats < cost.totalMsats) {
      this.#log.warn({ short: cost.totalMsats - s.chargedMsats }, 'charge exceeded what the key holds');
    }
    if (!payer.oneShot) return { charged: s.chargedMsats, balance: s.balance };
    const change = await this.#change(payer.keyHash, payer.lockChangeTo);
    const key = await this.#ledger.getKey(payer.keyHash);
    return { charged: s.chargedMsats, balance: key?.balance ?? 0, change };
  }

  async #change(keyHash: string, lockTo?: string): Promise<string | undefined> {
    try {
      return (await this.#wallets.change(keyHash, lockTo))?.token ?? undefined;
    } catch (e) {
      // The balance stays on the key; POST /v1/balance/refund with the same token collects it.
      this.#log.warn({ err: (e as Error).message }, 'could not make change');
      return undefined;
    }
  }

  /**
   * For the doors: whatever went wrong after payment, the reservation does not outlive the
   * request. A no-op when the request already settled or failed cleanly.
   */
  async release(payer: Payer): Promise<void> {
    try {
      await this.#ledger.settle(payer.reservationId, 0);
    } catch {
      return;
    }
    if (payer.oneShot) await this.#change(payer.keyHash, payer.lockChangeTo);
  }

  /** Nothing is charged: the reservation is released and a one-shot payer gets everything back. */
  async #fail(payer: Payer | null, err: GatewayError): Promise<GatewayError> {
    if (!payer) return err;
    await this.#ledger.settle(payer.reservationId, 0);
    if (!payer.oneShot) return err;
    const change = await this.#change(payer.keyHash, payer.lockChangeTo);
    if (!change) return err;
    return new GatewayError(err.status, err.code, err.message, {
      type: err.type,
      headers: { ...err.headers, 'x-cashu': change },
      extra: { ...err.extra, refund_token: change },
    });
  }

  /**
   * Calls the model's upstreams in order, moving on after a refused connection, a timeout, a 5xx
   * or a 429: all before the first byte reaches the client, so failover is invisible to it.
   */
  async #call(job: Job, payer: Payer | null, signal: AbortSignal | undefined) {
    const body = JSON.stringify(job.body);
    let failure: GatewayError | undefined;
    for (const upstream of job.model.upstreams) {
      if (signal?.aborted) break;
      let res;
      try {
        res = await upstream.post(UPSTREAM_PATH[job.kind], body, signal);
      } catch (e) {
        this.#log.warn({ err: (e as Error).message }, 'upstream request failed');
        failure = new GatewayError(502, 'upstream_error', 'The upstream model provider could not be reached.');
        continue;
      }
      if (res.statusCode < 400) return res;
      const text = await res.body.text().catch(() => '');
      failure = upstreamError(res.statusCode, text);
      // A request refused as such (a 4xx we pass on as one) would be refused by the next upstream
      // too; a refusal of our key (401, 403), a 429 or a 5xx is this upstream's problem.
      if (failure.status < 500 && failure.status !== 429) break;
    }
    throw await this.#fail(payer, failure ?? new GatewayError(502, 'upstream_error', 'No upstream serves this model.'));
  }

  /** Runs a job; a null payer is a free job (nothing reserved, nothing charged). */
  async complete(job: Job, payer: Payer | null, signal?: AbortSignal): Promise<{ body: Record<string, unknown>; receipt: Receipt }> {
    const res = await this.#call(job, payer, signal);
    let body: Record<string, unknown>;
    try {
      body = (await res.body.json()) as Record<string, unknown>;
    } catch {
      throw await this.#fail(payer, new GatewayError(502, 'upstream_error', 'The upstream answered with a body that is not JSON.'));
    }
    const usage = usageOf(body.usage) ?? {
      promptTokens: job.promptTokens,
      completionTokens: countText(completionText(body)),
    };
    const cost = costOf(usage, job.model.price);
    const s = await this.#settle(payer, cost);
    const charged = chargedCost(cost, s.charged);
    body.usage = usageBody(body.usage, usage, charged);
    return { body, receipt: { usage, cost: charged, balance: s.balance, change: s.change } };
  }

  /**
   * Passes the upstream's SSE events to the client as they arrive, withholding only the usage
   * chunk and `[DONE]`: those are re-emitted at the end with the charge (and change) added.
   */
  async stream(job: Job, payer: Payer, sink: StreamSink, signal: AbortSignal): Promise<Receipt | undefined> {
    const res = await this.#call(job, payer, signal);
    sink.open();
    const split = new SseSplitter();
    const sent: string[] = [];
    let usage: Usage | undefined;
    let last: Record<string, unknown> | undefined;
    const handle = async (events: string[]) => {
      let out = '';
      for (const ev of events) {
        const data = eventData(ev);
        if (data === '[DONE]') continue;
        if (data !== undefined && data.includes('"usage"')) {
          const chunk = safeParse(data);
          const u = chunk && usageOf(chunk.usage);
          if (u) {
            usage = u;
            last = chunk;
            if (Array.isArray(chunk.choices) && chunk.choices.length === 0) continue;
            delete chunk.usage;
            out += `data: ${JSON.stringify(chunk)}\n\n`;
            sent.push(data);
            continue;
          }
        }
        if (data !== undefined) sent.push(data);
        out += `${ev}\n\n`;
      }
      if (out) await sink.write(out);
    };
    let failure: GatewayError | undefined;
    try {
      for await (const chunk of res.body) await handle(split.push(chunk as Uint8Array));
      await handle(split.flush());
    } catch (e) {
      if (!signal.aborted) {
        this.#log.warn({ err: (e as Error).message }, 'upstream stream broke');
        failure = new GatewayError(502, 'upstream_error', 'The upstream stream ended with an error.');
      }
    }
    if (failure) {
      const err = await this.#fail(payer, failure);
      if (!signal.aborted) {
        await sink.write(`data: ${JSON.stringify(err.body())}\n\n`).catch(() => {});
        sink.end();
      }
      return undefined;
    }
    // A client that left is billed for what it was sent; a stream without usage, from our own count.
    const billed: Usage = (!signal.aborted && usage) || {
      promptTokens: usage?.promptTokens ?? job.promptTokens,
      completionTokens: countText(sent.map(deltaText).join('')),
    };
    const cost = costOf(billed, job.model.price);
    const s = await this.#settle(payer, cost);
    const charged = chargedCost(cost, s.charged);
    if (!signal.aborted) {
      const first = sent.length ? safeParse(sent[0]!) : undefined;
      const trailer: Record<string, unknown> = {
        id: last?.id ?? first?.id ?? `chatcmpl-${payer.reservationId}`,
        object: last?.object ?? first?.object ?? (job.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion'),
        created: last?.created ?? first?.created ?? Math.floor(Date.now() / 1000),
        model: last?.model ?? first?.model ?? job.model.id,
        choices: [],
        usage: usageBody(last?.usage, billed, charged),
      };
      if (s.change) trailer.x_cashu = s.change;
      await sink.write(`data: ${JSON.stringify(trailer)}\n\ndata: [DONE]\n\n`).catch(() => {});
      sink.end();
    }
    return { usage: billed, cost: charged, balance: s.balance, change: s.change };
  }
}

function upstreamError(status: number, text: string): GatewayError {
  const parsed = safeParse(text);
  const inner = parsed?.error as Record<string, unknown> | undefined;
  const message = typeof inner?.message === 'string' ? inner.message : `The upstream answered HTTP ${status}.`;
  // The operator's key was refused: the provider's message may echo part of it, so it stays here.
  if (status === 401 || status === 403) return new GatewayError(502, 'upstream_error', `The upstream refused the gateway's credentials (HTTP ${status}).`);
  if (status >= 500) return new GatewayError(502, 'upstream_error', `Upstream error: ${message}`);
  if (status === 429) return new GatewayError(429, 'upstream_rate_limited', `Upstream rate limit: ${message}`);
  return new GatewayError(status, 'upstream_error', message, { type: 'invalid_request_error' });
}

function safeParse(s: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(s) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** OpenAI's `prompt_tokens`/`completion_tokens`, or the `input_tokens`/`output_tokens` some upstreams use. */
export function usageOf(u: unknown): Usage | undefined {
  if (!u || typeof u !== 'object') return undefined;
  const o = u as Record<string, unknown>;
  const prompt = o.prompt_tokens ?? o.input_tokens;
  const completion = o.completion_tokens ?? o.output_tokens ?? 0;
  if (typeof prompt !== 'number' || typeof completion !== 'number') return undefined;
  // A count no upstream could mean (negative, huge, not finite) is ignored: we count ourselves.
  if (!(prompt >= 0 && completion >= 0 && prompt < 1e9 && completion < 1e9)) return undefined;
  return { promptTokens: Math.ceil(prompt), completionTokens: Math.ceil(completion) };
}

function chargedCost(cost: Cost, charged: number): Cost {
  if (charged === cost.totalMsats) return cost;
  const input = Math.min(cost.inputMsats, charged);
  return { inputMsats: input, outputMsats: charged - input, totalMsats: charged };
}

function usageBody(original: unknown, usage: Usage, cost: Cost): Record<string, unknown> {
  const base = original && typeof original === 'object' ? (original as Record<string, unknown>) : {
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    total_tokens: usage.promptTokens + usage.completionTokens,
  };
  return {
    ...base,
    cost: { base_msats: 0, input_msats: cost.inputMsats, output_msats: cost.outputMsats, total_msats: cost.totalMsats },
    cost_sats: cost.totalMsats / 1000,
  };
}

function completionText(body: Record<string, unknown>): string {
  let s = '';
  if (Array.isArray(body.choices)) {
    for (const c of body.choices as Record<string, unknown>[]) {
      const msg = c?.message as Record<string, unknown> | undefined;
      if (typeof msg?.content === 'string') s += msg.content;
      if (msg?.tool_calls) s += JSON.stringify(msg.tool_calls);
      if (typeof c?.text === 'string') s += c.text;
    }
  }
  return s;
}

function deltaText(data: string): string {
  const chunk = safeParse(data);
  if (!chunk || !Array.isArray(chunk.choices)) return '';
  let s = '';
  for (const c of chunk.choices as Record<string, unknown>[]) {
    const delta = c?.delta as Record<string, unknown> | undefined;
    if (typeof delta?.content === 'string') s += delta.content;
    if (delta?.tool_calls) s += JSON.stringify(delta.tool_calls);
    if (typeof c?.text === 'string') s += c.text;
  }
  return s;
}
