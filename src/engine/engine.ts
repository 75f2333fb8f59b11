import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { CashuWallets } from '../cashu/wallet.ts';
import { paymentRequest, satsFor } from '../cashu/payment-request.ts';
import { paying, type Credential } from '../cashu/credential.ts';
import { inspectToken, type TokenInfo } from '../cashu/token.ts';
import type { ChildKeyRow, KeyRow, Ledger } from '../ledger/ledger.ts';
import { SseSplitter, eventData, eventName } from '../upstream/sse.ts';
import { TopLevelFields } from '../upstream/top-field.ts';
import type { UpstreamClient, UpstreamResponse } from '../upstream/client.ts';
import type { Catalog, ModelEntry } from './catalog.ts';
import { EngineError, type EngineCode } from './errors.ts';
import type { Bill, ClientHeaders, Estimate, Exchange, Metered, ParsedRequest, StreamReader, WireError, WireFormat } from './format.ts';
import { completionLimit, costOf, mostUsage, reservationFor, type Cost, type Usage } from './pricing.ts';
import { cheapToCount, countPieces, IMAGE_TOKENS, tokenBound } from './tokens.ts';

/** The refusals that name a price. */
type PaymentCode = Extract<EngineCode, 'payment_required' | 'insufficient_balance' | 'balance_limit_exceeded'>;

/** Who pays for a job. Reading one looks nothing up and redeems nothing. */
export type Payer =
  /** No credential at all: the job gets a 402 naming its price. */
  | { kind: 'none' }
  /** The engine's own free work (a DVM free tier): nothing reserved, nothing charged. */
  | { kind: 'free' }
  /** A Cashu token, redeemed to `creditTo` on first use. */
  | { kind: 'token'; token: TokenInfo; creditTo: string; oneShot: boolean; lockChangeTo?: string | undefined }
  /** A key already credited (an `sk-` key, a paid quote, a nutzap). */
  | {
      kind: 'key';
      keyHash: string;
      oneShot: boolean;
      lockChangeTo?: string | undefined;
      /** Admitted as a balance key, not a child: the run need not look for a child of that hash. */
      balanceKey?: boolean;
    };

/** A request priced and ready to run, whichever door it came through. */
export interface Job {
  format: WireFormat;
  request: ParsedRequest;
  model: ModelEntry;
  stream: boolean;
  promptTokens: number;
  /** The completion limit every upstream is held to. */
  maxCompletion: number;
  images: number;
  /** The most this job can cost, reserved before the upstream is called. */
  maxMsats: number;
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
  /** How the door states an error that ends a stream under way, for the format to write. */
  wire(err: EngineError): WireError;
}

export interface RunOptions {
  /** The client went away. A stream stops (and pays for what was generated); a whole answer is still made and paid. */
  signal?: AbortSignal | undefined;
  /** Where a streamed job writes; required when `job.stream`. */
  sink?: StreamSink | undefined;
  /**
   * The requester withdrew the job (a NIP-09 deletion). Before any upstream has the request the
   * job stops and nothing is charged; after, a stream stops (and pays for what was generated),
   * and a whole answer is made and paid, as for a client that leaves.
   */
  cancel?: AbortSignal | undefined;
}

export interface Outcome {
  /** The client's body, for a job that is not streamed. */
  body?: Record<string, unknown> | undefined;
  receipt: Receipt;
}

type Route = Array<{ upstream: UpstreamClient; exchange: Exchange }>;

/** A reservation held for a job. */
interface Hold {
  keyHash: string;
  reservationId: string;
  /** Settled or released: the reservation is closed, whichever way the job ended. */
  closed?: boolean;
  /** Paid by `X-Cashu`: whatever the request does not cost comes back as change. */
  oneShot: boolean;
  lockChangeTo?: string | undefined;
  /** Paid through a child key: its parent's balance under its limit. */
  child?: boolean;
}

/** A child key that can no longer pay: revoked by its parent, or past its expiry. */
function refuseDeadChild(child: ChildKeyRow): void {
  if (child.revokedAt !== null) throw new EngineError('key_revoked', 'This API key has been revoked by the key that created it.');
  if (child.expiresAt !== null && Date.now() >= child.expiresAt) throw new EngineError('key_expired', 'This API key has expired (validity date reached).');
}

/** What a child key may still spend: its parent's free balance, within what its limit leaves. */
export function childLeft(child: ChildKeyRow, parent: KeyRow): number {
  const free = Math.max(0, parent.balance - parent.reserved);
  return child.spendLimit === null ? free : Math.max(0, Math.min(free, child.spendLimit - child.spent - child.reserved));
}

/** A prompt's text above this many UTF-16 units per token of context cannot fit any model: 413. */
const CHARS_PER_CONTEXT_TOKEN = 8;
/** Largest whole (non-streamed) answer read from an upstream. */
const MAX_ANSWER_BYTES = 32 * 1024 * 1024;
/**
 * Past this a whole answer is no longer read for its usage: the upstream is gone wrong (an answer
 * that never ends would hold the job, its reservation and a core forever), or the request asked
 * for more than any usage read here could be trusted to bill (n, max_tokens and logprobs at their
 * most); either way it is charged what was reserved for it.
 */
const MAX_WHOLE_BYTES = 256 * 1024 * 1024;
/** Largest stream relayed from an upstream; past it the stream is cut and what was generated is billed. */
const MAX_STREAM_BYTES = 64 * 1024 * 1024;
/**
 * How long a key found to be a live balance key is admitted without reading it again. The
 * reservation checks the key for itself (it holds nothing on a revoked or missing key), so a key
 * revoked meanwhile is refused as before, only after its body is read.
 */
const ADMITTED_MS = 2000;
/** Keys remembered as admitted, at most; only keys that exist get in. */
const ADMITTED_MAX = 4096;

export class Engine {
  readonly #ledger: Ledger;
  readonly #wallets: CashuWallets;
  readonly #catalog: Catalog;
  readonly #log: Logger;
  /** Balance keys admitted lately, with when that stops counting: one read a request less. */
  readonly #admitted = new Map<string, number>();

  constructor(deps: { ledger: Ledger; wallets: CashuWallets; catalog: Catalog; log: Logger }) {
    this.#ledger = deps.ledger;
    this.#wallets = deps.wallets;
    this.#catalog = deps.catalog;
    this.#log = deps.log;
  }

  /**
   * A refusal that names a price. A client that paid with X-Cashu reads that header back as its
   * refund (Routstr's clients do), so it only carries a NUT-18 payment request when no token was
   * presented. Its amount is what an ordinary token must be worth at a mint with input fees; locked proofs are
   * credited whole, so a locked token of that amount gets the fee back as change.
   * The header holds `creqA`, which every NUT-24 wallet decodes; the body holds the same request
   * as `creqA` and NUT-26 `creqB` for a client that prefers bech32m (shorter, QR-friendly).
   */
  async paymentRequired(msats: number, code: PaymentCode, message: string, presentedXCashu = false): Promise<EngineError> {
    const extra: Record<string, unknown> = { amount_required_msats: msats };
    if (presentedXCashu) return new EngineError(code, message, { extra });
    const request = paymentRequest(await this.#wallets.unlockedCover(satsFor(msats)), this.#wallets.mints, this.#wallets.p2pk.pubkey);
    extra.payment_request = request;
    return new EngineError(code, message, { paymentRequest: request.creqA, extra });
  }

  /** Reads who pays, without any lookup: a malformed credential is refused here, before any work. */
  payerOf(credential: Credential): Payer {
    const c = paying(credential);
    if (!c) return { kind: 'none' };
    // Whatever `X-Cashu` holds is read as a token: the header carries nothing else.
    const oneShot = c === credential.xCashu;
    if (oneShot || c.kind === 'token') {
      const token = inspectToken(c, this.#wallets.names, this.#wallets.foreign !== undefined);
      return { kind: 'token', token, creditTo: token.hash, oneShot };
    }
    if (c.kind !== 'key') throw new EngineError('invalid_api_key', 'Invalid API key.');
    return { kind: 'key', keyHash: c.keyHash, oneShot: false };
  }

  /**
   * Prices a request: its model, its payer's key (an unknown key is refused before anything is
   * counted), its prompt counted without holding the event loop, and the most it can cost.
   */
  async job(format: WireFormat, raw: unknown, payer: Payer, headers?: ClientHeaders): Promise<Job> {
    const request = parseShallow(format, raw, headers);
    const model = await this.#catalog.find(request.model);
    if (!model) throw this.#notServed(request.model);
    const { estimate } = request;
    refuseOversized(estimate, model);
    const maxCompletion = completionLimit(estimate.requestedCompletionTokens, model.price);
    const price = (promptTokens: number): Job => ({
      format,
      request,
      model,
      stream: request.stream,
      promptTokens,
      maxCompletion,
      images: estimate.images,
      maxMsats: reservationFor(promptTokens, maxCompletion, model.price, estimate.choices, estimate.images, estimate.longCacheWrites),
    });
    // A prompt partly stored upstream (or a file fetched by it) cannot be counted here: reserve
    // as if it filled the context. A stranger is named the same price, or the token they then
    // send would be refused as too small.
    // Images were allowed IMAGE_TOKENS each (85 at low detail); some models bill one far more.
    const images = estimate.images * Math.max(0, (model.price.imageTokens ?? IMAGE_TOKENS) - IMAGE_TOKENS);
    const prompt = (counted: number) => (estimate.wholeContext ? Math.max(counted + images, model.price.contextLength - maxCompletion) : counted + images);
    if (payer.kind === 'none') {
      // Nobody has offered to pay: name the price from a bound unless counting is nearly free.
      const bound = price(prompt(estimate.extraTokens + (cheapToCount(estimate.text) ? await countPieces(estimate.text) : tokenBound(estimate.text))));
      throw await this.paymentRequired(bound.maxMsats, 'payment_required', 'Payment required: send a Cashu token as the API key or in the X-Cashu header.');
    }
    return price(prompt(estimate.extraTokens + (await countPieces(estimate.text))));
  }

  /**
   * An `sk-` key that pays must exist and not be revoked; checked before anything is counted.
   * Returns the payer as run should take it, knowing what the check read.
   */
  async admit(payer: Payer): Promise<Payer> {
    if (payer.kind !== 'key' || payer.oneShot) return payer;
    return (await this.#admitKey(payer.keyHash)) ? { ...payer, balanceKey: true } : payer;
  }

  /**
   * A 402 for a body too large to read for someone who has shown no credential: priced from a
   * bound (every token is at least one byte) at the dearest model served.
   */
  unpaidBound(bytes: number): Promise<EngineError> {
    let msats = 0;
    for (const m of this.#catalog.list()) msats = Math.max(msats, reservationFor(bytes, m.price.maxCompletionTokens, m.price));
    return this.paymentRequired(msats, 'payment_required', 'Payment required: send a Cashu token as the API key or in the X-Cashu header.');
  }

  /**
   * Counts a prompt for a client that has shown a credential (Anthropic's count_tokens): free,
   * but never for strangers. A token is redeemed on first use, as it would be to pay.
   */
  async countTokens(model: string, estimate: Estimate, payer: Payer): Promise<number> {
    if (payer.kind === 'none') throw new EngineError('invalid_api_key', 'Send an API key (an sk- key or a Cashu token) to count tokens.');
    if (payer.kind === 'token') {
      if (payer.oneShot) throw new EngineError('invalid_request', 'Counting tokens takes an API key, not an X-Cashu payment.');
      if (!(await this.#ledger.getKey(payer.creditTo))) await this.#wallets.redeem(payer.token, payer.creditTo);
    }
    const m = await this.#catalog.find(model);
    if (!m) throw this.#notServed(model);
    refuseOversized(estimate, m);
    return estimate.extraTokens + (await countPieces(estimate.text));
  }

  /**
   * The code clients know (Routstr's and OpenAI's), with the reason when it is an outage: a model
   * missing because its upstream is down is not the client's mistake.
   */
  #notServed(model: string): EngineError {
    const down = this.#catalog.problems().length;
    if (down === 0) return new EngineError('model_not_found', `The model '${model}' does not exist or is not served here.`);
    // Which upstream, and the setting to fix, are the operator's business: /ready says them.
    const which = down === 1 ? 'the upstream' : `${down} of its upstreams`;
    return new EngineError(
      'model_not_found',
      `The model '${model}' is not served here now: the gateway cannot reach ${which}, so the models there are unknown. GET /ready names what to fix.`,
      { extra: { reason: 'upstream_unreachable' } },
    );
  }

  /** Whether the key is a balance key (else a live child key); refuses any other. */
  async #admitKey(keyHash: string): Promise<boolean> {
    const now = Date.now();
    if ((this.#admitted.get(keyHash) ?? 0) > now) return true;
    const key = await this.#ledger.getKey(keyHash);
    if (key?.revoked) throw new EngineError('key_revoked', 'This API key has been revoked; its balance can still be refunded.');
    if (key) {
      if (this.#admitted.size >= ADMITTED_MAX) this.#admitted.clear();
      this.#admitted.set(keyHash, now + ADMITTED_MS);
      return true;
    }
    const child = await this.#ledger.getChildKey(keyHash);
    if (!child) throw new EngineError('invalid_api_key', 'Invalid API key.');
    refuseDeadChild(child);
    return false;
  }

  /**
   * Runs a job start to end: reserves its price, calls the model's upstreams with failover, meters
   * the answer, settles the charge and makes change. Whatever happens, the reservation does not
   * outlive the call.
   */
  async run(job: Job, payer: Payer, opts: RunOptions = {}): Promise<Outcome> {
    // A request no upstream of the model may take is refused before anything is reserved.
    const route = this.#route(job);
    const hold = await this.#reserve(job, payer);
    const settle = (usage: Usage, metered?: Metered, cap?: number): Promise<Receipt> => this.#settle(job, hold, usage, metered, cap);
    try {
      if (job.stream) return { receipt: await this.#stream(job, route, hold, opts, settle) };
      return await this.#complete(job, route, hold, opts.cancel, settle);
    } finally {
      // Whatever ended the job before it settled, its reservation does not outlive it.
      if (hold && !hold.closed) await this.#release(hold);
    }
  }

  async #reserve(job: Job, payer: Payer): Promise<Hold | null> {
    if (payer.kind === 'free') return null;
    if (payer.kind === 'none') throw await this.paymentRequired(job.maxMsats, 'payment_required', 'Payment required: send a Cashu token as the API key or in the X-Cashu header.');
    let keyHash: string;
    if (payer.kind === 'token') {
      const { token, creditTo } = payer;
      keyHash = creditTo;
      const known = await this.#ledger.getKey(creditTo);
      if (!known) {
        // Too small to ever pay for this job: refuse before the mint is asked, the token untouched.
        // A token already claimed (say, as a top-up) goes on to be refused as spent instead.
        if (token.msats < job.maxMsats && !(await this.#ledger.getToken(token.hash))) {
          throw await this.paymentRequired(
            job.maxMsats,
            'insufficient_balance',
            `Insufficient payment: this request needs up to ${job.maxMsats} msats; the token is worth ${token.msats} msats.`,
            payer.oneShot,
          );
        }
        await this.#wallets.redeem(token, creditTo, undefined, payer.oneShot);
      } else if (payer.oneShot && known.balance === 0) {
        throw new EngineError('cashu_token_already_spent', 'This Cashu token has already been spent.');
      }
    } else {
      keyHash = payer.keyHash;
    }
    const hold: Hold = { keyHash, reservationId: randomUUID(), oneShot: payer.oneShot, lockChangeTo: payer.lockChangeTo };
    const child = payer.kind === 'key' && !payer.oneShot && !payer.balanceKey ? await this.#ledger.getChildKey(keyHash) : undefined;
    if (child?.models && !child.models.includes(job.model.id)) {
      throw new EngineError('model_not_allowed', `This key may not use the model '${job.model.id}'; it may use: ${child.models.join(', ')}.`);
    }
    if (child) hold.child = true;
    if (await this.#ledger.reserve(keyHash, job.maxMsats, hold.reservationId, job.model.id)) return hold;
    if (child) throw await this.#childShort(job, keyHash);
    const key = await this.#ledger.getKey(keyHash);
    if (!key) throw new EngineError('invalid_api_key', 'Invalid API key.');
    if (key.revoked) throw new EngineError('key_revoked', 'This API key has been revoked; its balance can still be refunded.');
    const err = await this.paymentRequired(
      job.maxMsats,
      'insufficient_balance',
      `Insufficient balance: this request needs up to ${job.maxMsats} msats; ${key.balance - key.reserved} msats available.`,
      payer.oneShot,
    );
    // A one-shot payer whose token fell short (mint fees) gets it back at once.
    const refund = payer.oneShot ? await this.#change(hold) : undefined;
    throw refund ? err.withRefund(refund) : err;
  }

  /** Why a child key could not hold a job's price: revoked or expired since admitted, its limit, or its parent's balance. */
  async #childShort(job: Job, hash: string): Promise<EngineError> {
    const child = await this.#ledger.getChildKey(hash);
    if (!child) return new EngineError('invalid_api_key', 'Invalid API key.');
    refuseDeadChild(child);
    const parent = await this.#ledger.getKey(child.parentHash);
    if (!parent || parent.revoked) return new EngineError('key_revoked', 'The key this key spends from has been revoked.');
    const left = childLeft(child, parent);
    if (child.spendLimit !== null && child.spendLimit - child.spent - child.reserved < job.maxMsats) {
      return this.paymentRequired(
        job.maxMsats,
        'balance_limit_exceeded',
        `Balance limit exceeded: ${child.spendLimit} msats limit, ${child.spent} already spent (${child.reserved} reserved); this request needs up to ${job.maxMsats} msats.`,
      );
    }
    return this.paymentRequired(job.maxMsats, 'insufficient_balance', `Insufficient balance: this request needs up to ${job.maxMsats} msats; ${left} msats available.`);
  }

  /** What a usage costs on this job; at the higher price when the upstream says it served a pricier model. */
  #cost(job: Job, usage: Usage, served: string | undefined): { cost: Cost; billedAs?: string } {
    const cost = costOf(usage, job.model.price, job.images);
    if (!served || served === job.model.id || served.startsWith(`${job.model.id}-`)) return { cost };
    const other = this.#catalog.get(served);
    this.#log.warn({ priced: job.model.id, served }, 'the upstream served another model than the one priced');
    if (!other) return { cost };
    const alt = costOf(usage, other.price, job.images);
    return alt.totalMsats > cost.totalMsats ? { cost: alt, billedAs: other.id } : { cost };
  }

  /**
   * Settles the charge and, for a one-shot payer, pays the rest back as change. `cap`: the most
   * charged, whatever the usage costs (a usage the gateway measured itself, not the upstream's bill).
   */
  async #settle(job: Job, hold: Hold | null, usage: Usage, metered?: Metered, cap?: number): Promise<Receipt> {
    if (metered?.usage?.reasoningTokens) this.#catalog.sawReasoning(job.model.id);
    const { cost, billedAs } = this.#cost(job, usage, metered?.model);
    const charge = cap === undefined ? cost.totalMsats : Math.min(cost.totalMsats, cap);
    if (!hold) return { usage, cost: chargedCost(cost, charge), balance: 0 };
    // The key's history names the model the charge was priced at, so its rate explains the msats.
    const s = await this.#ledger.settle(hold.reservationId, charge, { inputTokens: usage.promptTokens, outputTokens: usage.completionTokens, model: billedAs });
    hold.closed = true;
    if (s.chargedMsats < charge) this.#log.warn({ short: charge - s.chargedMsats }, 'charge exceeded what the key holds');
    const charged = chargedCost(cost, s.chargedMsats);
    // A child is shown what it may still spend, not its parent's balance.
    if (hold.child) return { usage, cost: charged, balance: await this.#childBalance(hold.keyHash) };
    if (!hold.oneShot) return { usage, cost: charged, balance: s.balance };
    const change = await this.#change(hold);
    const key = await this.#ledger.getKey(hold.keyHash);
    return { usage, cost: charged, balance: key?.balance ?? 0, change };
  }

  async #childBalance(hash: string): Promise<number> {
    const child = await this.#ledger.getChildKey(hash);
    const parent = child && (await this.#ledger.getKey(child.parentHash));
    return child && parent ? childLeft(child, parent) : 0;
  }

  async #change(hold: Hold): Promise<string | undefined> {
    try {
      return (await this.#wallets.change(hold.keyHash, hold.lockChangeTo))?.token ?? undefined;
    } catch (e) {
      // The balance stays on the key; POST /v1/balance/refund with the same token collects it.
      this.#log.warn({ err: (e as Error).message }, 'could not make change');
      return undefined;
    }
  }

  /** Nothing is charged: the reservation is released and a one-shot payer gets everything back. */
  async #release(hold: Hold): Promise<string | undefined> {
    if (hold.closed) return undefined;
    hold.closed = true;
    try {
      await this.#ledger.settle(hold.reservationId, 0);
    } catch (e) {
      this.#log.error({ err: (e as Error).message }, 'could not release a reservation');
      return undefined;
    }
    return hold.oneShot ? this.#change(hold) : undefined;
  }

  /** A failure before anything was delivered: nothing charged, and a one-shot payer's token comes back with the error. */
  async #fail(hold: Hold | null, err: EngineError): Promise<EngineError> {
    if (!hold) return err;
    const change = await this.#release(hold);
    return change ? err.withRefund(change) : err;
  }

  /** The exchange for each upstream of the model, in order; a refusal if none can take the request. */
  #route(job: Job): Route {
    const out: Route = [];
    let refusal: EngineError | undefined;
    for (const upstream of job.model.upstreams) {
      // The exchange copies the body (structuredClone): a field no door reads may be too deep for it.
      const x = shallow(() => job.request.exchange(upstream.kind, { maxCompletionTokens: job.maxCompletion, allowed: upstream.allowedParameters }));
      if (x instanceof EngineError) refusal ??= x;
      else out.push({ upstream, exchange: x });
    }
    if (out.length === 0) throw refusal ?? new EngineError('upstream_error', 'No upstream serves this model.');
    return out;
  }

  /**
   * Calls the model's upstreams in order, moving on only when the one tried surely did no work:
   * a connection never made (nothing was sent), or a 5xx, a 429 or a refusal of the operator's
   * key. All of that is before the first byte reaches the client, so failover is invisible to
   * it. A timeout or a connection lost once the request was sent is not tried elsewhere: that
   * upstream may be making (and billing) the answer, and a second one would bill it again; nor is
   * a proxy's timeout in front of it (a 504 or a 524), for the same reason.
   * `stop` is looked at before each upstream is tried; `abort` stops the request itself.
   */
  async #call(
    route: Route, hold: Hold | null, opts: { stop?: AbortSignal | undefined; abort?: AbortSignal | undefined; client?: AbortSignal | undefined; whole: boolean },
  ): Promise<{ res: UpstreamResponse; exchange: Exchange }> {
    let failure: EngineError | undefined;
    for (const { upstream, exchange } of route) {
      // A client gone (`client`) is not served by the next upstream, even if the one before it was left to run.
      if (opts.stop?.aborted || opts.client?.aborted) break;
      let res;
      const payload = serialize(exchange.body);
      if (payload instanceof EngineError) throw await this.#fail(hold, payload);
      try {
        res = await upstream.post(exchange.path, payload, { signal: opts.abort, headers: exchange.headers, whole: opts.whole });
      } catch (e) {
        if (opts.abort?.aborted) break;
        this.#log.warn({ upstream: upstream.baseUrl, err: upstream.redact((e as Error).message) }, 'upstream request failed');
        failure = timedOut(e)
          ? new EngineError('upstream_error', 'The upstream model provider did not answer in time.')
          : new EngineError('upstream_error', 'The upstream model provider could not be reached.');
        if (upstream.unsent(e)) continue;
        break;
      }
      if (res.statusCode < 400) return { res, exchange };
      const text = await readText(res.body, 64 * 1024).catch(() => '');
      failure = upstreamError(res.statusCode, upstream.redact(text));
      this.#log.warn({ upstream: upstream.baseUrl, status: res.statusCode, message: failure.message }, 'upstream refused the request');
      // A request refused as such (a 4xx we pass on as one) would be refused by the next upstream
      // too; a refusal of our key (401, 403), a 429 or a 5xx is this upstream's problem.
      if (failure.upstreamStatus !== undefined) break;
      // But a 504 or a 524 is a proxy that stopped waiting: the upstream behind it has the
      // request and may still be making (and billing) the answer, as after our own timeout.
      if (PROXY_TIMEOUTS.has(res.statusCode)) break;
    }
    throw await this.#fail(hold, failure ?? new EngineError('client_closed_request', 'The client closed the request.'));
  }

  /**
   * A whole answer. Neither the client leaving nor a cancel stops it once an upstream has the
   * request: that upstream is doing (and billing) the work, and nothing it sends until it is
   * done says how much, so the answer is made and paid as if the client had stayed. A cancel
   * before that (or between upstreams) stops the job, and nothing is charged.
   */
  async #complete(
    job: Job, route: Route, hold: Hold | null, cancel: AbortSignal | undefined, settle: (u: Usage, m?: Metered) => Promise<Receipt>,
  ): Promise<Outcome> {
    const { res, exchange } = await this.#call(route, hold, { stop: cancel, whole: true });
    let upstream: Record<string, unknown> | undefined;
    let whole: Awaited<ReturnType<typeof readAnswer>> | undefined;
    try {
      whole = await readAnswer(res.body, MAX_ANSWER_BYTES, MAX_WHOLE_BYTES);
      const parsed = whole.text === undefined ? undefined : (JSON.parse(whole.text) as unknown);
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) upstream = parsed as Record<string, unknown>;
    } catch {
      /* refused below */
    }
    if (whole && whole.text === undefined) throw await this.#tooLarge(job, exchange, hold, whole, settle);
    if (!upstream) throw await this.#fail(hold, new EngineError('upstream_error', 'The upstream answered with a body that is not a JSON object.'));
    const answer = exchange.read(upstream);
    const receipt = await settle(await this.#usage(job, answer.metered), answer.metered);
    if ('refused' in answer) throw receipt.change ? answer.refused.withRefund(receipt.change) : answer.refused;
    exchange.bill(answer.body, this.#bill(receipt, hold));
    return { body: answer.body, receipt };
  }

  /**
   * A whole answer too large to pass on is refused with a 502; but the upstream made it, and
   * billed it, so the usage it reports (read from the top of the body as it went by) is charged,
   * as for any answer the gateway cannot pass on, at the price of the model it says it served.
   * Without one, nothing is.
   */
  async #tooLarge(
    job: Job, exchange: Exchange, hold: Hold | null, top: { usage?: Record<string, unknown> | undefined; model?: string | undefined; cut?: boolean | undefined }, settle: (u: Usage, m?: Metered) => Promise<Receipt>,
  ): Promise<EngineError> {
    const { usage, model } = top;
    const err = new EngineError('upstream_error', `The upstream's answer is larger than ${MAX_ANSWER_BYTES} bytes, which the gateway does not pass on.`);
    if (top.cut) {
      // Its usage, if it ever comes, is not waited for: the most the request could cost is charged.
      this.#log.warn({ bytes: MAX_WHOLE_BYTES }, 'upstream answer cut unread; what was reserved is charged');
      const { estimate } = job.request;
      const receipt = await settle(mostUsage(job.promptTokens, job.maxCompletion, job.model.price, estimate.choices, estimate.longCacheWrites));
      return receipt.change ? err.withRefund(receipt.change) : err;
    }
    let metered: Metered | undefined;
    try {
      // The exchange reads the usage in its upstream's own terms; the rest of the answer is gone.
      metered = usage ? exchange.read(model === undefined ? { usage } : { usage, model }).metered : undefined;
    } catch {
      metered = undefined;
    }
    if (!metered?.usage) return this.#fail(hold, err);
    this.#log.warn({ bytes: MAX_ANSWER_BYTES }, 'upstream answer too large to pass on; its usage is charged');
    const receipt = await settle(await this.#usage(job, { ...metered, generated: '' }), metered);
    return receipt.change ? err.withRefund(receipt.change) : err;
  }

  /** The usage a job is billed: the upstream's final report, or, short of one, what was generated counted. */
  async #usage(job: Job, metered: Metered): Promise<Usage> {
    const { usage } = metered;
    if (usage && !metered.partial) return usage;
    // No upstream generates past the limit it was held to, whatever our tokenizer makes of the text.
    const counted = Math.min(await countPieces([metered.generated]), job.maxCompletion * Math.max(1, job.request.estimate.choices));
    if (!usage) return { promptTokens: job.promptTokens, completionTokens: counted };
    // The prompt's side as reported (cache reads and writes included); the output at least as counted.
    const { reasoningTokens: _, ...input } = usage;
    return { ...input, completionTokens: Math.max(usage.completionTokens, counted) };
  }

  #bill(receipt: Receipt, hold: Hold | null): Bill {
    return { usage: receipt.usage, cost: receipt.cost, change: receipt.change, requestId: hold?.reservationId ?? randomUUID() };
  }

  /**
   * Passes the upstream's events to the client as they arrive, through the format's reader, which
   * holds back what must carry the charge. A client that leaves stops the upstream and pays for
   * what was generated: the usage already reported, else the prompt and every generated field.
   * While the model does work it does not show (`Metered.hidden`), once only the usage is to
   * come (`Metered.finished`), or whenever a model that reasons (asked to, or seen to:
   * `Catalog.reasons`) is served by an upstream that may not show it (`Exchange.hidesReasoning`),
   * a client that leaves no longer gets the stream, but the upstream is read to its end for the
   * usage that bills that work. A cancel stops the upstream at once.
   */
  async #stream(job: Job, route: Route, hold: Hold | null, opts: RunOptions, settle: (u: Usage, m?: Metered, cap?: number) => Promise<Receipt>): Promise<Receipt> {
    const sink = opts.sink;
    if (!sink) throw new Error('a streamed job needs a sink');
    const signal = opts.cancel && opts.signal ? AbortSignal.any([opts.signal, opts.cancel]) : (opts.signal ?? opts.cancel ?? new AbortController().signal);
    const upstreamStop = new AbortController();
    let reader: StreamReader | undefined;
    const stop = () => upstreamStop.abort();
    // Such an upstream bills reasoning it never streamed, before or between what it shows: only
    // its final usage says what the client caused, even before it answers.
    const reasons = () => route.some(({ exchange: x }) => x.hidesReasoning && (x.reasons || this.#catalog.reasons(job.model.id)));
    const left = () => {
      const m = reader?.metered;
      if (!m?.hidden && !m?.finished && !reasons()) stop();
    };
    if (opts.cancel?.aborted || opts.signal?.aborted) stop();
    opts.cancel?.addEventListener('abort', stop, { once: true });
    opts.signal?.addEventListener('abort', left, { once: true });
    try {
      return await this.#relay(job, route, hold, sink, signal, upstreamStop.signal, settle, (r) => (reader = r));
    } finally {
      opts.cancel?.removeEventListener('abort', stop);
      opts.signal?.removeEventListener('abort', left);
    }
  }

  /**
   * An upstream stream that broke part-way, its client still there. Once some of the answer has
   * reached the client the upstream bills it, and the client has it: the prompt and what was
   * generated are charged (counted, as for a client that leaves), but never more than was
   * reserved, since no upstream's final bill came to say more. Before any of the answer, nothing.
   */
  async #broken(
    job: Job, hold: Hold | null, metered: Metered, wrote: boolean, failure: EngineError, settle: (u: Usage, m?: Metered, cap?: number) => Promise<Receipt>,
  ): Promise<{ err: EngineError; receipt: Receipt }> {
    if (!wrote || metered.generated === '') return { err: await this.#fail(hold, failure), receipt: NOTHING };
    const receipt = await settle(await this.#usage(job, metered), metered, job.maxMsats);
    this.#log.warn({ msats: receipt.cost.totalMsats }, 'upstream stream broke after part of the answer; that part is charged');
    return { err: receipt.change ? failure.withRefund(receipt.change) : failure, receipt };
  }

  async #relay(
    job: Job, route: Route, hold: Hold | null, sink: StreamSink, signal: AbortSignal, upstreamSignal: AbortSignal,
    settle: (u: Usage, m?: Metered, cap?: number) => Promise<Receipt>, opened: (r: StreamReader) => void,
  ): Promise<Receipt> {
    const { res, exchange } = await this.#call(route, hold, { stop: upstreamSignal, abort: upstreamSignal, client: signal, whole: false });
    sink.open();
    const reader = exchange.stream();
    opened(reader);
    const split = new SseSplitter();
    let bytes = 0;
    let failure: EngineError | undefined;
    /** Some of the stream reached the client: a break after that is paid for what it carried. */
    let wrote = false;
    const relay = async (events: string[]) => {
      let out = '';
      let broke: { error: unknown } | undefined;
      try {
        for (const raw of events) {
          const data = eventData(raw);
          if (data !== undefined) out += reader.push({ name: eventName(raw), data, raw });
        }
      } catch (error) {
        // An upstream's error event: what came before it in the same read is the client's all the
        // same (and is charged), so it goes out ahead of the error.
        broke = { error };
      }
      if (out && !signal.aborted) {
        try {
          await sink.write(out);
          wrote = true;
        } catch (e) {
          // The client went while this write waited (it had stopped reading): it left, nothing broke.
          if (!signal.aborted) throw e;
        }
      }
      if (broke) throw broke.error;
    };
    try {
      for await (const chunk of res.body) {
        bytes += (chunk as Uint8Array).length;
        if (bytes > MAX_STREAM_BYTES) {
          this.#log.warn({ bytes }, 'upstream stream too long; cut');
          res.body.destroy();
          break;
        }
        await relay(split.push(chunk as Uint8Array));
      }
      await relay(split.flush());
    } catch (e) {
      // A client that left pays for what was generated, even if the upstream then broke.
      if (!upstreamSignal.aborted && !signal.aborted) {
        this.#log.warn({ err: (e as Error).message }, 'upstream stream broke');
        failure = new EngineError('upstream_error', 'The upstream stream ended with an error.');
      }
    }
    if (failure) {
      const { err, receipt } = await this.#broken(job, hold, reader.metered, wrote, failure, settle);
      if (!signal.aborted) {
        await sink.write(reader.fail(sink.wire(err))).catch(() => {});
        sink.end();
      }
      return receipt;
    }
    const metered = reader.metered;
    const receipt = await settle(await this.#usage(job, metered), metered);
    if (!signal.aborted) {
      await sink.write(reader.close(this.#bill(receipt, hold))).catch(() => {});
      sink.end();
    }
    return receipt;
  }
}

/** What nothing charged is, as a receipt. */
const NOTHING: Receipt = { usage: { promptTokens: 0, completionTokens: 0 }, cost: { inputMsats: 0, outputMsats: 0, totalMsats: 0 }, balance: 0 };

/**
 * A body nested deeper than the stack (JSON.parse takes any depth; walking or serializing it
 * recursively does not) is the client's mistake, not the gateway's: 400, not 500.
 */
function parseShallow(format: WireFormat, raw: unknown, headers: ClientHeaders | undefined): ParsedRequest {
  return shallow(() => format.parse(raw, headers));
}

/**
 * Runs what walks or copies a client's body (parsing it, copying it for an upstream, counting
 * it): a RangeError there is the body's depth, the client's mistake, a 400.
 */
export function shallow<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof RangeError) throw new EngineError('invalid_request', 'Invalid request body: nested too deeply.');
    throw e;
  }
}

/** The body for the upstream; one nested deeper than the stack in a field no format reads is the client's mistake too. */
function serialize(body: Record<string, unknown>): string | EngineError {
  try {
    return JSON.stringify(body);
  } catch (e) {
    if (e instanceof RangeError) return new EngineError('invalid_request', 'Invalid request body: nested too deeply.');
    throw e;
  }
}

/** A prompt no model could take is refused before it is counted. */
function refuseOversized(estimate: Estimate, model: ModelEntry): void {
  let chars = 0;
  for (const t of estimate.text) chars += t.length;
  if (chars > model.price.contextLength * CHARS_PER_CONTEXT_TOKEN) {
    throw new EngineError('prompt_too_large', `The prompt is larger than model '${model.id}' can take (${model.price.contextLength} tokens).`);
  }
}

/**
 * Reads a whole answer up to `max` bytes. A larger one is read to its end all the same, keeping
 * only its top-level `usage` and `model` (`text` undefined): what it cost is still to be billed.
 * Past `cut` bytes it is no longer read (`cut`).
 */
async function readAnswer(
  body: UpstreamResponse['body'], max: number, cut: number,
): Promise<
  { text: string; usage?: undefined; model?: undefined; cut?: undefined } | { text?: undefined; usage: Record<string, unknown> | undefined; model: string | undefined; cut?: boolean }
> {
  const chunks: Buffer[] = [];
  // Scanned only once the answer outgrows `max`, from what was kept so far: an ordinary answer
  // is not walked byte by byte.
  let field: TopLevelFields | undefined;
  let n = 0;
  for await (const c of body) {
    n += (c as Buffer).length;
    if (n > cut) {
      body.destroy();
      return { usage: undefined, model: undefined, cut: true };
    }
    if (field) field.push(c as Buffer);
    else if (n <= max) chunks.push(c as Buffer);
    else {
      field = new TopLevelFields(['usage', 'model']);
      for (const kept of chunks) field.push(kept);
      field.push(c as Buffer);
      chunks.length = 0;
    }
  }
  if (!field) return { text: Buffer.concat(chunks).toString('utf8') };
  const usage = field.get('usage');
  const model = field.get('model');
  return {
    usage: usage && typeof usage === 'object' && !Array.isArray(usage) ? (usage as Record<string, unknown>) : undefined,
    model: typeof model === 'string' ? model : undefined,
  };
}

/** No answer within the upstream's time limits (undici's headers or body timeout). */
function timedOut(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
}

/** Reads a body as text up to `max` bytes; a larger one is refused. */
async function readText(body: UpstreamResponse['body'], max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += (c as Buffer).length;
    if (n > max) {
      body.destroy();
      throw new Error(`upstream answer over ${max} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A gateway's or a proxy's timeout in front of the upstream: nginx's 504, Cloudflare's 524. */
const PROXY_TIMEOUTS: ReadonlySet<number> = new Set([504, 524]);

/** An upstream's refusal as the client may see it: the status, and a message with nothing secret in it. */
function upstreamError(status: number, text: string): EngineError {
  let parsed: Record<string, unknown> | undefined;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = undefined;
  }
  const inner = parsed?.error as Record<string, unknown> | undefined;
  const raw = typeof inner?.message === 'string' ? inner.message : `The upstream answered HTTP ${status}.`;
  const message = scrub(raw);
  // The operator's key was refused: the provider's message may echo part of it, so it stays here.
  if (status === 401 || status === 403) return new EngineError('upstream_error', `The upstream refused the gateway's credentials (HTTP ${status}).`);
  if (status >= 500) return new EngineError('upstream_error', `Upstream error: ${message}`);
  if (status === 429) return new EngineError('upstream_rate_limited', `Upstream rate limit: ${message}`);
  return new EngineError('upstream_error', message, { upstreamStatus: status });
}

/** Whatever looks like a credential goes, whoever's it is; and the message stays short. */
export function scrub(message: string): string {
  const clean = message
    .replace(/\b(?:sk|pk|rk|key)-[A-Za-z0-9_*.-]{6,}/gi, '[redacted]')
    .replace(/\b(Bearer|Basic|Token)\s+[^\s"',]+/gi, '$1 [redacted]')
    .replace(/\bcashu[AB][A-Za-z0-9_=-]{20,}/g, '[redacted]');
  return clean.length > 300 ? `${clean.slice(0, 300)}…` : clean;
}

function chargedCost(cost: Cost, charged: number): Cost {
  if (charged === cost.totalMsats) return cost;
  const input = Math.min(cost.inputMsats, charged);
  return { inputMsats: input, outputMsats: charged - input, totalMsats: charged };
}
