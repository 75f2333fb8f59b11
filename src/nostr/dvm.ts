import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Event, EventTemplate } from 'nostr-tools/pure';
import type { SubCloser } from 'nostr-tools/abstract-pool';
import { Amount, getEncodedToken, type Proof } from '@cashu/cashu-ts';
import type { Catalog } from '../engine/catalog.ts';
import type { Engine, Job, Payer as EnginePayer, Receipt } from '../engine/engine.ts';
import { CashuError } from '../cashu/errors.ts';
import { crashPoint } from '../cashu/crash.ts';
import { tokenHashOfQuote } from '../cashu/credential.ts';
import { EngineError } from '../engine/errors.ts';
import { chatFormat } from '../formats/chat.ts';

/** A job's payer: the job's own key, credited by its token, invoice or nutzap. */
type Payer = Extract<EnginePayer, { kind: 'key' }>;
import type { CashuWallets } from '../cashu/wallet.ts';
import { inspectToken, type TokenInfo } from '../cashu/token.ts';
import { MSATS_PER, type Ledger } from '../ledger/ledger.ts';
import type { Identity } from './identity.ts';
import type { NostrDoorKeys } from './door-keys.ts';
import { JOB_FEEDBACK, JOB_REQUEST, JOB_RESULT, completionParams, decrypt, feedbackEvent, parseJobRequest, resultEvent, type JobRequest } from './nip90.ts';
import type { Relays } from './relays.ts';

export const NUTZAP = 9321;
const DELETION = 5;

/** Ledger mark scopes: what every instance on one ledger must agree on. */
const SEEN = 'nostr-seen';
const FREE = 'nostr-free';
const TOKEN_OWNER = 'nostr-token';
const WATCH = 'nostr-watch';
const WATCH_BY_FEEDBACK = 'nostr-watch-feedback';
const PAID = 'nostr-paid';
const UNDELIVERED = 'nostr-undelivered';
const OPEN = 'nostr-open';

/** The free tier is per requester for good, not per restart. */
const FOREVER = Number.MAX_SAFE_INTEGER;
/** How long a result no relay took is offered again. */
const UNDELIVERED_TTL_MS = 7 * 24 * 3600 * 1000;
/** The longest a quote is watched when the mint gives it no expiry. */
const DEFAULT_QUOTE_LIFE_MS = 24 * 3600 * 1000;

export interface DvmConfig {
  defaultModel?: string | undefined;
  /** Requests older than this are skipped (at start-up, and if relays deliver them late). */
  maxAgeSec: number;
  maxPromptChars: number;
  ratePerMinute: number;
  freePerPubkey: number;
  /** How long a payment-required job waits for its bolt11 or nutzap. */
  paymentTimeoutSec: number;
  /** How often a pending bolt11 quote is checked; also the first wait before a result is offered again. */
  pollMs: number;
}

export interface DvmDeps {
  relays: Relays;
  id: Identity;
  keys: NostrDoorKeys;
  engine: Engine;
  catalog: Catalog;
  wallets: CashuWallets;
  ledger: Ledger;
  log: Logger;
  cfg: DvmConfig;
}

/**
 * A job waiting for its payment, as kept in the ledger: enough to run it, or to return a payment
 * that comes too late, from any instance and after a restart. The quote is watched until the mint
 * would no longer take a payment for it, whatever became of the job.
 */
interface Watch {
  request: Event;
  feedbackId: string;
  mint: string;
  quote: string;
  sats: number;
  /** Until when (ms) a payment runs the job. */
  deadline: number;
  /** Until when (ms) the invoice can be paid. */
  quoteExpiry: number;
  /** Why a payment no longer runs the job; it is returned instead. */
  closed?: 'cancelled' | 'expired' | 'done' | undefined;
  /** The instance watching it renews this (ms); past it, another instance may take over. */
  leaseUntil: number;
}

interface Undelivered {
  request: Event;
  result: Event;
  relays: string[];
  /** Feedback to send once the result is out. */
  success: string[][];
}

/**
 * A job whose key is (or is about to be) paid and that is not answered yet, kept from before its
 * payment is taken until its result or its refund is out. One left by a process that died is
 * found at start: the job's key, which nobody else can name, is paid back to `payer`.
 */
interface Open {
  request: Event;
  payer: string;
  /** The instance taking the payment or running the job renews this (ms); past it, another may settle it. */
  leaseUntil: number;
}

/** A job this door refused or ended itself. Feedback carries its message and any refund; no status. */
class JobError extends Error {
  readonly code: string;
  readonly extra: Record<string, unknown>;

  constructor(code: string, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.code = code;
    this.extra = extra;
  }
}

/** An error someone meant (this door's, the engine's, the wallet's), whose message may go to the requester. */
const expected = (err: unknown): err is JobError | EngineError | CashuError => err instanceof JobError || err instanceof EngineError || err instanceof CashuError;
const msg = (err: unknown) => (expected(err) ? err.message : 'The job could not be processed.');
const refundOf = (err: unknown) => (expected(err) && typeof err.extra.refund_token === 'string' ? err.extra.refund_token : undefined);
/** The wallet's word that the mint did not take a payment: no answer (unreachable) may mean it did. */
const refused = (err: unknown) => err instanceof CashuError && err.code !== 'cashu_mint_unreachable';

/**
 * The NIP-90 door: kind 5050 jobs in, kind 6050 results out, through the same engine, prices and
 * ledger as the HTTP API. Payment by a `cashu` tag, a bolt11 from a NUT-04 quote at the primary
 * mint, or a NIP-61 nutzap, each credited to a key of the job's own that only the gateway can
 * derive and the HTTP door cannot name; change comes back locked to the requester's key.
 */
export class Dvm {
  /** Jobs being run: `ac` is their cancel, `done` settles once each has ended (delivered or failed). */
  readonly #running = new Map<string, { ac: AbortController; author: string; done: Promise<void> }>();
  /** Watches this instance polls, by job id, each on its own timer. */
  readonly #watching = new Map<string, Watch>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #resending = new Map<string, NodeJS.Timeout>();
  /** Open jobs another run left, looked at again once their lease is over. */
  readonly #settling = new Map<string, NodeJS.Timeout>();
  readonly #rate = new Map<string, { minute: number; count: number }>();
  /**
   * Cancels read (`job id author`) for jobs not yet running here: one read while its token is
   * redeemed, its input fetched or its payment minted stops the job once it is about to run.
   */
  readonly #cancelled = new Set<string>();
  /**
   * Jobs this instance is taking in (its token redeemed, its input fetched), by id: their author,
   * and whether that author cancelled. Bounded by the jobs in hand, so no flood of deletions of
   * other ids evicts a cancel of one of them, as it can from #cancelled.
   */
  readonly #intake = new Map<string, { author: string; cancelled: boolean }>();
  #subs: SubCloser[] = [];
  /** Handlers of events and quote checks under way: a job may be redeemed or paid in one, not yet running. */
  readonly #busy = new Set<Promise<void>>();
  #stopped = false;
  readonly deps: DvmDeps;

  constructor(deps: DvmDeps) {
    this.deps = deps;
  }

  start(): void {
    const { relays, id, cfg, log } = this.deps;
    const since = Math.floor(Date.now() / 1000) - cfg.maxAgeSec;
    this.#subs = [
      relays.subscribe({ kinds: [JOB_REQUEST], since }, (e) => this.#track(this.#onRequest(e))),
      relays.subscribe({ kinds: [DELETION], since }, (e) => this.#track(this.#onDeletion(e))),
      relays.subscribe({ kinds: [NUTZAP], '#p': [id.pubkey], since }, (e) => this.#track(this.#onNutzap(e))),
    ];
    // Watches and undelivered results of a previous run (or of a stopped instance) are in the
    // ledger, whether or not any relay still holds the job; our own feedback names them too.
    // Tracked as handlers are: a payout one starts (#settleOpen) is waited for by stop().
    const resume = (p: Promise<void>) => this.#track(p.catch((e: Error) => log.warn({ err: e.message }, 'could not look for unfinished jobs')));
    resume(this.#resumeFromLedger());
    resume(this.#resumeFromFeedback());
  }

  /** Stops, and hands the quotes it watched to whichever instance (or restart) sees them next. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const s of this.#subs) s.close();
    // A job not yet at the upstream stops and is refunded; one the upstream has is being made and
    // billed, so it is finished, charged and delivered before the relays and the ledger close.
    // A job whose payment is being taken (its token at the mint, its quote being minted) runs
    // into the stop as soon as it starts (#run), and is refunded before the relays close.
    for (;;) {
      const running = [...this.#running.values()];
      for (const r of running) r.ac.abort();
      if (running.length === 0 && this.#busy.size === 0) break;
      await Promise.all([...running.map((r) => r.done), ...this.#busy]);
    }
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    for (const t of this.#resending.values()) clearTimeout(t);
    this.#resending.clear();
    for (const t of this.#settling.values()) clearTimeout(t);
    this.#settling.clear();
    const watched = [...this.#watching.values()];
    this.#watching.clear();
    for (const w of watched) await this.#saveWatch({ ...w, leaseUntil: 0 }).catch(() => {});
  }

  async #onRequest(e: Event): Promise<void> {
    const { id, cfg, ledger } = this.deps;
    if (e.created_at < Math.floor(Date.now() / 1000) - cfg.maxAgeSec) return;
    const addressed = e.tags.filter((t) => t[0] === 'p').map((t) => t[1]);
    if (addressed.length > 0 && !addressed.includes(id.pubkey)) return;
    // One job per event id, however many relays (and gateway instances, and restarts) see it.
    if (!(await ledger.claimOnce(SEEN, e.id, (e.created_at + cfg.maxAgeSec) * 1000 + 60_000))) {
      await this.#resume(e.id);
      return;
    }
    const request = parseJobRequest(e, id.sk);
    if (!request) return;
    this.#intake.set(e.id, { author: e.pubkey, cancelled: false });
    try {
      await this.#take(request);
    } finally {
      this.#intake.delete(e.id);
    }
  }

  async #take(request: JobRequest): Promise<void> {
    const { log } = this.deps;
    const e = request.event;
    let token: TokenInfo | undefined;
    try {
      if (request.cashu) token = await this.#claimToken(request);
    } catch (err) {
      await this.#feedback(request, 'error', msg(err));
      return;
    }
    if (!this.#withinRate(e.pubkey)) {
      log.info({ job: e.id }, 'job dropped: requester over its rate limit');
      return;
    }
    try {
      await this.#handle(request, token);
    } catch (err) {
      if (!expected(err)) log.error({ job: e.id, err: (err as Error).message }, 'job failed');
      const refund = refundOf(err);
      await this.#feedback(request, 'error', msg(err), refund ? [['cashu', refund]] : []);
    }
    // Answered: its result (or the ledger's copy of it) or its refund is out.
    if (token) await this.#finish(e.id);
  }

  /**
   * A token read from a public job can be copied into another job: it belongs to the first
   * requester seen presenting it, who may present it again (say, after a refused job).
   */
  async #claimToken(request: JobRequest): Promise<TokenInfo> {
    const { ledger, wallets } = this.deps;
    const info = inspectToken(request.cashu!, wallets.names);
    const owner = request.event.pubkey;
    if (await ledger.claimOnce(TOKEN_OWNER, info.hash, FOREVER)) await ledger.putNote(TOKEN_OWNER, info.hash, owner, FOREVER);
    else if ((await ledger.getNote(TOKEN_OWNER, info.hash)) !== owner) {
      throw new JobError('cashu_token_already_spent', 'This Cashu token was presented by another requester first.');
    }
    return info;
  }

  /** Keeps a handler in #busy until it ends; what it throws was its own to log. */
  #track(p: Promise<void>): void {
    const t = p.catch((e: Error) => this.deps.log.error({ err: e.message }, 'nostr event handler failed')).finally(() => this.#busy.delete(t));
    this.#busy.add(t);
  }

  #withinRate(pubkey: string): boolean {
    const minute = Math.floor(Date.now() / 60_000);
    const r = this.#rate.get(pubkey);
    if (!r || r.minute !== minute) {
      this.#rate.set(pubkey, { minute, count: 1 });
      if (this.#rate.size > 10_000) this.#rate.delete(this.#rate.keys().next().value!);
      return true;
    }
    return ++r.count <= this.deps.cfg.ratePerMinute;
  }

  /** Change and refunds travel in public events: locked to the requester (compressed form of their key). */
  #lockTo(pubkey: string): string {
    return `02${pubkey}`;
  }

  async #handle(request: JobRequest, token: TokenInfo | undefined): Promise<void> {
    const { cfg, ledger, keys, wallets } = this.deps;
    if (token) {
      const key = keys.jobKey(request.event.id);
      // Kept before the token is taken: whatever happens to this process, its payment is not lost.
      await this.#open(request.event, request.event.pubkey);
      // Redeemed first, into the job's own key: whatever happens next, the requester gets back
      // what the job does not spend, even ecash locked to us that they could not spend themselves.
      await wallets.redeem(token, key, keys.p2pk);
      let payer: Payer;
      try {
        const job = await this.#prepare(request);
        this.#withinBid(request, job);
        payer = await this.#payFromKey(job, key, request.event.pubkey);
        return await this.#run(request, job, payer);
      } catch (err) {
        throw await this.#withRefund(err, key, request.event.pubkey);
      }
    }
    const job = await this.#prepare(request);
    this.#withinBid(request, job);
    if (cfg.freePerPubkey > 0 && (await ledger.countUpTo(FREE, request.event.pubkey, cfg.freePerPubkey, FOREVER))) {
      return this.#run(request, job, null);
    }
    await this.#askForPayment(request, job);
  }

  async #prepare(request: JobRequest): Promise<Job> {
    const { catalog, cfg } = this.deps;
    const prompt = (await Promise.all(request.inputs.map((i) => this.#inputText(i.type, i.data)))).join('\n\n');
    if (prompt.length > cfg.maxPromptChars) {
      throw new JobError('prompt_too_large', `The prompt is over ${cfg.maxPromptChars} characters.`);
    }
    const model = request.params.get('model') ?? cfg.defaultModel ?? catalog.list()[0]?.id;
    if (!model) throw new JobError('no_models', 'No model is available right now.');
    // Priced without a payer: the job's key is credited (or asked for) only once the price is known.
    return this.deps.engine.job(chatFormat, { model, messages: [{ role: 'user', content: prompt }], ...completionParams(request.params) }, { kind: 'free' });
  }

  /** NIP-90 `bid`: a job that may cost more than the requester offers is not started. */
  #withinBid(request: JobRequest, job: Job): void {
    if (request.bid !== undefined && job.maxMsats > request.bid) {
      throw new JobError('bid_too_low', `This job costs up to ${job.maxMsats} msats; the bid is ${request.bid} msats. Bid at least ${job.maxMsats} msats, or ask for fewer max_tokens.`, {
        amount_required_msats: job.maxMsats,
      });
    }
  }

  /** The error as it goes out, with whatever the job's key still holds returned, locked to `to`. */
  async #withRefund(err: unknown, key: string, to: string): Promise<unknown> {
    if (refundOf(err)) return err;
    const refund = await this.#returnKey(key, to);
    if (!refund) return err;
    if (err instanceof EngineError) return err.withRefund(refund);
    if (err instanceof JobError) return new JobError(err.code, err.message, { ...err.extra, refund_token: refund });
    return new JobError(err instanceof CashuError ? err.code : 'job_failed', msg(err), { refund_token: refund });
  }

  /** Pays out what a job's key holds as a token locked to `to`; undefined when it holds nothing. */
  async #returnKey(key: string, to: string): Promise<string | undefined> {
    try {
      return (await this.deps.wallets.change(key, this.#lockTo(to)))?.token ?? undefined;
    } catch (e) {
      this.deps.log.warn({ err: (e as Error).message }, 'could not return a job payment');
      return undefined;
    }
  }

  // The engine, called from here only: the job's key pays (the engine reserves, runs and settles).
  async #payFromKey(_job: Job, key: string, requester: string): Promise<Payer> {
    return { kind: 'key', keyHash: key, oneShot: true, lockChangeTo: this.#lockTo(requester) };
  }

  async #complete(job: Job, payer: Payer | null, cancel: AbortSignal): Promise<{ body: Record<string, unknown>; receipt: Receipt }> {
    const out = await this.deps.engine.run(job, payer ?? { kind: 'free' }, { cancel });
    return { body: out.body ?? {}, receipt: out.receipt };
  }

  /** The text of an input: inline, another event's content, or an earlier job's result. */
  async #inputText(type: 'text' | 'event' | 'job', data: string): Promise<string> {
    if (type === 'text') return data;
    const { relays, id } = this.deps;
    if (type === 'event') {
      const [e] = await relays.query({ ids: [data] });
      if (!e) throw new JobError('input_not_found', `Input event ${data} was not found on our relays.`);
      return e.content;
    }
    const [result] = await relays.query({ kinds: [JOB_RESULT], '#e': [data] });
    if (!result) throw new JobError('input_not_found', `No result of job ${data} was found on our relays.`);
    if (!result.tags.some((t) => t[0] === 'encrypted')) return result.content;
    // An encrypted result is readable by its author and its customer; we are one of them.
    const peer = result.pubkey === id.pubkey ? result.tags.find((t) => t[0] === 'p')?.[1] : result.pubkey;
    if (!peer) throw new JobError('input_not_found', `The result of job ${data} cannot be read.`);
    return decrypt(result.content, id.sk, peer).text;
  }

  async #run(request: JobRequest, job: Job, payer: Payer | null): Promise<void> {
    const ac = new AbortController();
    let ended!: () => void;
    const done = new Promise<void>((r) => (ended = r));
    this.#running.set(request.event.id, { ac, author: request.event.pubkey, done });
    const cancelled = this.#intake.get(request.event.id)?.cancelled;
    if (this.#cancelled.delete(`${request.event.id} ${request.event.pubkey}`) || cancelled || this.#stopped) ac.abort();
    try {
      // Until the engine reserves on the job's key, the lease says the job is in hand.
      if (payer) await this.#renewOpen(request.event.id);
      await this.#feedback(request, 'processing', 'Generating.');
      let out;
      try {
        out = await this.#complete(job, payer, ac.signal);
      } catch (e) {
        // Stopped by the cancel before any upstream had it; any other failure says what it was.
        if (ac.signal.aborted && e instanceof EngineError && e.code === 'client_closed_request') {
          throw new JobError('cancelled', 'The job was cancelled.', e.extra);
        }
        throw e;
      }
      const choice = (out.body.choices as Array<{ message?: { content?: unknown } }> | undefined)?.[0];
      const text = typeof choice?.message?.content === 'string' ? choice.message.content : '';
      const charged = out.receipt.cost.totalMsats;
      const rest = payer ? await this.#keepRest(payer.keyHash) : 0;
      let info = rest > 0 ? `Done. ${rest} msats under a sat were kept with the charge.` : 'Done.';
      if (ac.signal.aborted && !this.#stopped) info += ' The cancel came after the model had the job: it was finished and charged.';
      // Charged, and the change made, but the result with it not out yet.
      crashPoint('dvm:before-deliver');
      await this.#deliver(request, resultEvent({ request, sk: this.deps.id.sk }, text, charged, out.receipt.change), [
        ['status', 'success', info],
        ['amount', String(charged)],
      ]);
    } finally {
      this.#running.delete(request.event.id);
      ended();
    }
  }

  /**
   * What a job's key holds after its change is made is less than the smallest proof of its unit
   * (under a sat): it cannot be paid out, so it is booked to the operator as part of the job's
   * charge, in its own ledger row, rather than left stranded on a key nobody can name.
   */
  async #keepRest(key: string): Promise<number> {
    const { ledger, log } = this.deps;
    const k = await ledger.getKey(key);
    if (!k) return 0;
    const rest = k.balance - k.reserved;
    if (rest <= 0 || rest >= MSATS_PER[k.unit]) {
      // Whole sats left: the change could not be made; they stay refundable on the job's key.
      if (rest > 0) log.warn({ msats: rest }, 'change for a job was not made; it stays on the job key');
      return 0;
    }
    const id = randomUUID();
    if (!(await ledger.reserve(key, rest, id))) return 0;
    return (await ledger.settle(id, rest)).chargedMsats;
  }

  /**
   * Publishes a result; only once a relay took it is the job done (success feedback). Until then
   * the signed result, change included (locked to the requester, so spendable by them alone), is
   * kept in the ledger and offered again, with backoff, for a week, also after a restart.
   */
  async #deliver(request: JobRequest, result: EventTemplate, success: string[][]): Promise<void> {
    const sent = await this.#publish(result, request.relays);
    const u: Undelivered = { request: request.event, result: sent.event, relays: request.relays, success };
    if (sent.accepted) return this.#delivered(request.event.id, u);
    await this.deps.ledger.putNote(UNDELIVERED, request.event.id, JSON.stringify(u), Date.now() + UNDELIVERED_TTL_MS);
    this.deps.log.warn({ job: request.event.id }, 'no relay took a job result; it is kept and offered again');
    this.#resendLater(request.event.id, u, this.deps.cfg.pollMs);
  }

  /** Sends a kept result again; true if a relay took it. */
  async #offer(jobId: string, u: Undelivered): Promise<boolean> {
    if (!(await this.#publish(u.result, u.relays)).accepted) return false;
    await this.#delivered(jobId, u);
    return true;
  }

  async #delivered(jobId: string, u: Undelivered): Promise<void> {
    await this.deps.ledger.dropNote(UNDELIVERED, jobId);
    const request = parseJobRequest(u.request, this.deps.id.sk);
    const [status, ...extra] = u.success;
    if (request) await this.#feedback(request, 'success', status![2]!, extra);
  }

  #resendLater(jobId: string, u: Undelivered, waitMs: number): void {
    if (this.#stopped || this.#resending.has(jobId)) return;
    const t = setTimeout(() => {
      // Tracked: a resend under way (its ledger reads, its publish, its success feedback) is waited
      // for by stop(), and what it throws is logged, never left unhandled.
      // A ledger that fails this once is tried again, as a relay that took nothing is; the wait
      // doubles from at least pollMs (a resume asks for the first offer at once).
      // Kept in #resending while under way, so that a resume meanwhile does not offer it twice.
      const resend = async () => {
        let delivered = true;
        try {
          if (this.#stopped || !(await this.deps.ledger.getNote(UNDELIVERED, jobId))) return;
          delivered = await this.#offer(jobId, u);
        } catch (e) {
          this.deps.log.warn({ job: jobId, err: (e as Error).message }, 'could not offer a kept result again');
          delivered = false;
        } finally {
          this.#resending.delete(jobId);
        }
        if (!delivered) this.#resendLater(jobId, u, Math.min(Math.max(waitMs * 2, this.deps.cfg.pollMs), 600_000));
      };
      this.#track(resend());
    }, waitMs);
    t.unref();
    this.#resending.set(jobId, t);
  }

  /** Publishes to our relays and the job's; says whether any relay took it. */
  #publish(t: EventTemplate | Event, extra: string[]): Promise<{ event: Event; accepted: boolean }> {
    return this.deps.relays.publish(t, extra);
  }


  async #feedback(request: JobRequest, status: 'processing' | 'error' | 'payment-required' | 'success', info: string, extra: string[][] = []): Promise<Event> {
    return (await this.deps.relays.publish(feedbackEvent({ request, sk: this.deps.id.sk }, status, info, extra), request.relays)).event;
  }

  async #askForPayment(request: JobRequest, job: Job): Promise<void> {
    const { wallets, cfg, ledger, keys } = this.deps;
    const mint = wallets.mints[0]!;
    const sats = Math.max(1, Math.ceil(job.maxMsats / 1000));
    const quote = await (await wallets.wallet(mint, 'sat')).createMintQuoteBolt11(sats, `job ${request.event.id.slice(0, 16)}`);
    const now = Date.now();
    const w: Watch = {
      request: request.event,
      feedbackId: '',
      mint,
      quote: quote.quote,
      sats,
      deadline: now + cfg.paymentTimeoutSec * 1000,
      quoteExpiry: quote.expiry ? quote.expiry * 1000 : now + DEFAULT_QUOTE_LIFE_MS,
      leaseUntil: now + this.#leaseMs(),
    };
    // Kept before the invoice is out: whatever happens to this process, its payment is not lost.
    await this.#saveWatch(w);
    this.#watch(w);
    const fb = await this.#feedback(
      request,
      'payment-required',
      `Pay ${sats} sats to run this job, by Lightning or a nutzap locked to ${keys.p2pk.pubkey}; any rest comes back as change. A payment after a cancel or the deadline comes back whole.`,
      [['amount', String(sats * 1000), quote.request]],
    );
    w.feedbackId = fb.id;
    await ledger.putNote(WATCH_BY_FEEDBACK, fb.id, request.event.id, w.quoteExpiry + 60_000);
    // A stop meanwhile handed the watch over; it stays handed over.
    await this.#saveWatch(this.#stopped ? { ...w, leaseUntil: 0 } : w);
  }

  /** Looks at a watched quote every `pollMs`, the first time `pollMs` after it was taken on. */
  #watch(w: Watch): void {
    const jobId = w.request.id;
    this.#watching.set(jobId, w);
    const next = () => {
      const t = setTimeout(() => {
        const check = this.#check(w).catch((e: Error) => this.deps.log.warn({ job: jobId, err: e.message }, 'quote check failed'));
        this.#track(check);
        void check.finally(() => {
          this.#timers.delete(jobId);
          if (!this.#stopped && this.#watching.get(jobId) === w) next();
        });
      }, this.deps.cfg.pollMs);
      t.unref();
      this.#timers.set(jobId, t);
    };
    next();
  }

  #leaseMs(): number {
    return Math.max(5 * this.deps.cfg.pollMs, 10_000);
  }

  #saveWatch(w: Watch): Promise<void> {
    return this.deps.ledger.putNote(WATCH, w.request.id, JSON.stringify(w), w.quoteExpiry + 60_000);
  }

  async #loadWatch(jobId: string): Promise<Watch | undefined> {
    const raw = await this.deps.ledger.getNote(WATCH, jobId);
    return raw ? (JSON.parse(raw) as Watch) : undefined;
  }

  /** Takes over what another run left: a watch nobody renews, a result no relay took yet. */
  async #resume(jobId: string): Promise<void> {
    if (this.#stopped) return;
    const { ledger } = this.deps;
    const undelivered = await ledger.getNote(UNDELIVERED, jobId);
    if (undelivered && !this.#resending.has(jobId)) this.#resendLater(jobId, JSON.parse(undelivered) as Undelivered, 0);
    await this.#settleOpen(jobId);
    if (this.#watching.has(jobId)) return;
    const w = await this.#loadWatch(jobId);
    if (!w || w.leaseUntil > Date.now()) return;
    w.leaseUntil = Date.now() + this.#leaseMs();
    await this.#saveWatch(w);
    this.#watch(w);
  }

  /** Notes that `jobId`'s key is paid (or about to be) by `payer`, and the job not answered yet. */
  #open(request: Event, payer: string): Promise<void> {
    const o: Open = { request, payer, leaseUntil: Date.now() + this.#leaseMs() };
    return this.deps.ledger.putNote(OPEN, request.id, JSON.stringify(o), Date.now() + UNDELIVERED_TTL_MS);
  }

  /**
   * Puts back the note a refused payment from `payer` replaced (or none), unless another payer has
   * been named since: theirs stands.
   */
  async #restoreOpen(jobId: string, payer: string, note: string | undefined): Promise<void> {
    const { ledger } = this.deps;
    const now = await ledger.getNote(OPEN, jobId);
    if (!now || (JSON.parse(now) as Open).payer !== payer) return;
    if (note) await ledger.putNote(OPEN, jobId, note, Date.now() + UNDELIVERED_TTL_MS);
    else await ledger.dropNote(OPEN, jobId);
  }

  async #renewOpen(jobId: string): Promise<void> {
    const raw = await this.deps.ledger.getNote(OPEN, jobId);
    if (!raw) return;
    const o = JSON.parse(raw) as Open;
    await this.#open(o.request, o.payer);
  }

  /**
   * A job has had its answer. Its note goes only if its key is settled: a swap whose answer the
   * mint lost, or a refund or change it did not make, leaves money on the key that only the note
   * can still return, once the mint has settled it (#settleOpen).
   */
  async #finish(jobId: string): Promise<void> {
    const { ledger, keys } = this.deps;
    const key = keys.jobKey(jobId);
    await this.#keepRest(key);
    const k = await ledger.getKey(key);
    const unsettled =
      (k !== undefined && k.balance - k.reserved > 0) ||
      (await ledger.pendingOps()).some((op) => op.keyHash === key) ||
      (await ledger.latestRefund(key))?.state === 'pending';
    if (!unsettled) return this.#answered(jobId);
    this.deps.log.warn({ job: jobId }, 'a job was answered with money left on its key; it is returned once the mint has settled');
    this.#track(this.#settleOpen(jobId));
  }

  #answered(jobId: string): Promise<void> {
    return this.deps.ledger.dropNote(OPEN, jobId);
  }

  /**
   * A job another run paid for and never answered (it died in between): whatever its key holds is
   * paid back to the payer in a feedback, as a cancelled job's refund is; a refund or change that
   * run made but did not send goes out the same way. The job is not run again.
   */
  async #settleOpen(jobId: string): Promise<void> {
    const { ledger, keys, log } = this.deps;
    if (this.#stopped || this.#running.has(jobId) || this.#settling.has(jobId)) return;
    const raw = await ledger.getNote(OPEN, jobId);
    if (!raw) return;
    const o = JSON.parse(raw) as Open;
    const key = keys.jobKey(jobId);
    const later = (ms: number) => {
      if (this.#stopped || this.#settling.has(jobId)) return;
      const t = setTimeout(() => {
        this.#settling.delete(jobId);
        this.#track(this.#settleOpen(jobId));
      }, ms);
      t.unref();
      this.#settling.set(jobId, t);
    };
    // Still in hand somewhere (taking its payment, or running on a live instance's reservation).
    const wait = o.leaseUntil - Date.now();
    if (wait > 0) return later(wait + 100);
    if (await ledger.hasActiveReservations(key)) return later(this.#leaseMs());
    // A payment being credited, or a refund or change being made, is settled with the mint first
    // (start-up recovery): what the key holds is known only then.
    if ((await ledger.pendingOps()).some((op) => op.keyHash === key)) return later(this.#leaseMs());
    const last = await ledger.latestRefund(key);
    if (last?.state === 'pending') return later(this.#leaseMs());
    await this.#open(o.request, o.payer);
    // Its result was made and kept, change and all: that is offered again (#resume).
    if (await ledger.getNote(UNDELIVERED, jobId)) return this.#answered(jobId);
    await this.#endWatchOfCreditedQuote(jobId);
    const request = parseJobRequest(o.request, this.deps.id.sk);
    let refund = await this.#returnKey(key, o.payer);
    // Nothing left on the key: the change or refund it made last (locked to the payer) never went out.
    if (!refund && last?.token) refund = last.token;
    await this.#keepRest(key);
    const k = await ledger.getKey(key);
    if (k && k.balance - k.reserved > 0) {
      // The mint is away: tried again later.
      log.warn({ job: jobId }, 'could not return the payment of a job left unanswered; tried again later');
      return later(this.#leaseMs());
    }
    if (refund && request) {
      await this.#feedback(request, 'error', 'The gateway stopped before this job was answered. What it was paid is returned, locked to you.', [['cashu', refund]]);
    }
    log.warn({ job: jobId, refunded: refund !== undefined }, 'settled a paid job a stopped gateway left unanswered');
    await this.#answered(jobId);
  }

  /**
   * A job paid back unrun whose invoice was minted to its key before the run took it (a crash in
   * between): its watch would read the credited quote as a payment still to take, so it is closed
   * as a paid job's is, and a payment sent later is returned.
   */
  async #endWatchOfCreditedQuote(jobId: string): Promise<void> {
    const { ledger } = this.deps;
    const w = await this.#loadWatch(jobId);
    if (!w || w.closed || (await ledger.getToken(tokenHashOfQuote(w.mint, w.quote)))?.state !== 'credited') return;
    await ledger.claimOnce(PAID, jobId, w.quoteExpiry + 60_000);
    w.closed = 'done';
    const live = this.#watching.get(jobId);
    if (live) live.closed = 'done';
    await this.#saveWatch(w);
  }

  async #resumeFromLedger(): Promise<void> {
    const { ledger } = this.deps;
    const jobs = new Set([...(await ledger.noteIds(WATCH)), ...(await ledger.noteIds(UNDELIVERED)), ...(await ledger.noteIds(OPEN))]);
    for (const job of jobs) await this.#resume(job);
  }

  async #resumeFromFeedback(): Promise<void> {
    const { relays, id, cfg } = this.deps;
    const since = Math.floor(Date.now() / 1000) - Math.max(cfg.maxAgeSec, cfg.paymentTimeoutSec) - DEFAULT_QUOTE_LIFE_MS / 1000;
    const events = await relays.query({ kinds: [JOB_FEEDBACK], authors: [id.pubkey], since, limit: 2000 });
    const jobs = new Set(events.flatMap((e) => e.tags.filter((t) => t[0] === 'e').map((t) => t[1]!)));
    for (const job of jobs) await this.#resume(job);
  }

  /** One look at a watched quote: the deadline first, then whether the invoice was paid. */
  async #check(w: Watch): Promise<void> {
    const { wallets, keys } = this.deps;
    const jobId = w.request.id;
    const now = Date.now();
    // Another instance may have closed it (a cancel, a nutzap) meanwhile.
    const stored = await this.#loadWatch(jobId);
    if (!stored) return void this.#watching.delete(jobId);
    Object.assign(w, { closed: stored.closed });
    if (!w.closed && now > w.deadline) {
      w.closed = 'expired';
      const request = parseJobRequest(w.request, this.deps.id.sk);
      if (request) await this.#feedback(request, 'error', 'No payment arrived in time. A payment made later is returned, locked to you.');
    }
    // The invoice's payer is named before its ecash is minted to the job's key: a crash or a lost
    // answer from then on returns it to them (#settleOpen), not to whoever the note named before.
    // A job running on this key keeps its own note.
    const beforeMint = () => (this.#running.has(jobId) ? Promise.resolve() : this.#open(w.request, w.request.pubkey));
    const paid = await wallets.redeemQuote({ mint: w.mint, unit: 'sat', quote: w.quote, amount: w.sats, keyHash: keys.jobKey(jobId), beforeMint });
    if (paid && (await this.#onPayment(w, w.request.pubkey))) {
      // The note stays until the quote expires, so that a nutzap sent on top is returned too.
      this.#watching.delete(jobId);
      return;
    }
    if (now > w.quoteExpiry) {
      // The mint takes no payment for it any more: nothing left to watch.
      this.#watching.delete(jobId);
      await this.deps.ledger.dropNote(WATCH, jobId);
      return;
    }
    // Once stopped, the lease handed over stays handed over.
    if (this.#stopped) return;
    w.leaseUntil = now + this.#leaseMs();
    await this.#saveWatch(w);
  }

  /**
   * The job's key has been paid (its invoice, or a nutzap from `payer`). While the job waits, the
   * first payment runs it; anything paid after that, or after a cancel or the deadline, is
   * returned whole, locked to whoever paid it.
   */
  async #onPayment(w: Watch, payer: string): Promise<boolean> {
    const { ledger, keys } = this.deps;
    const jobId = w.request.id;
    const key = keys.jobKey(jobId);
    const request = parseJobRequest(w.request, this.deps.id.sk);
    if (!request) return true;
    if (w.closed || !(await ledger.claimOnce(PAID, jobId, w.quoteExpiry + 60_000))) {
      // The key is another payer's while its note names them (their job paid and not answered,
      // here or on another instance): what it holds goes back to them, this payment with it.
      const open = await ledger.getNote(OPEN, jobId);
      if (open && (JSON.parse(open) as Open).payer !== payer) return false;
      const why = w.closed === 'cancelled' ? 'the job was cancelled' : w.closed === 'expired' ? 'the deadline' : 'the job was paid';
      const refund = await this.#returnKey(key, payer);
      if (refund) await this.#feedback(request, 'error', `A payment arrived after ${why}; it is returned.`, [['cashu', refund]]);
      // Not returned (the job still runs on this key, or the mint is away): tried again next time.
      // A job left open with nothing on its key may still owe the change it made: #settleOpen's.
      if (refund !== undefined && !this.#running.has(jobId)) await this.#answered(jobId);
      return refund !== undefined || !((await ledger.getKey(key))?.balance);
    }
    // Its payer was named before the payment was taken; the lease says the job is in hand now.
    await this.#open(w.request, payer);
    // Closed for good once paid: a second payment is returned.
    w.closed = 'done';
    await this.#saveWatch(w);
    try {
      const job = await this.#prepare(request);
      const p = await this.#payFromKey(job, key, payer);
      await this.#run(request, job, p);
    } catch (err) {
      const e = await this.#withRefund(err, key, payer);
      // An underpaid job may still be paid in full (its invoice): it waits on.
      if (err instanceof EngineError && err.code === 'insufficient_balance') {
        await ledger.dropNote(PAID, jobId);
        w.closed = undefined;
        await this.#saveWatch(w);
      }
      const refund = refundOf(e);
      await this.#feedback(request, 'error', msg(e), refund ? [['cashu', refund]] : []);
    }
    await this.#finish(jobId);
    return true;
  }

  /** A NIP-61 nutzap: proofs locked to the Nostr door's key, referencing a job we asked payment for. */
  async #onNutzap(e: Event): Promise<void> {
    const { wallets, log, ledger, keys, cfg } = this.deps;
    if (e.created_at < Math.floor(Date.now() / 1000) - cfg.maxAgeSec) return;
    if (!(await ledger.claimOnce(SEEN, e.id, (e.created_at + cfg.maxAgeSec) * 1000 + 60_000))) return;
    const refs = e.tags.filter((t) => t[0] === 'e').map((t) => t[1]!);
    let w: Watch | undefined;
    for (const ref of refs) {
      w = (await this.#loadWatch(ref)) ?? (await this.#loadWatch((await ledger.getNote(WATCH_BY_FEEDBACK, ref)) ?? ''));
      if (w) break;
    }
    if (!w) return;
    const mint = e.tags.find((t) => t[0] === 'u')?.[1];
    const unit = e.tags.find((t) => t[0] === 'unit')?.[1] ?? 'sat';
    let proofs: Proof[];
    try {
      proofs = e.tags
        .filter((t) => t[0] === 'proof')
        .map((t) => {
          const p = JSON.parse(t[1]!) as Omit<Proof, 'amount'> & { amount: number };
          return { ...p, amount: Amount.from(p.amount) };
        });
    } catch {
      return;
    }
    if (!mint || proofs.length === 0) return;
    const jobId = w.request.id;
    /** The note this nutzap's replaced, if it replaced one. */
    let replaced: { note: string | undefined } | undefined;
    try {
      const info = inspectToken(getEncodedToken({ mint, unit, proofs }), wallets.names);
      // A job already running on this key keeps its own note (and lease); so does one whose payer's
      // money is on the key (paid, being prepared here or on another instance): a nutzap on top
      // does not name its sender payee of all of it.
      if (!this.#running.has(jobId)) {
        const note = await ledger.getNote(OPEN, jobId);
        const holder = note ? (JSON.parse(note) as Open).payer : undefined;
        if (!holder || holder === e.pubkey || !((await ledger.getKey(keys.jobKey(jobId)))?.balance)) {
          replaced = { note };
          await this.#open(w.request, e.pubkey);
        }
      }
      await wallets.redeem(info, keys.jobKey(jobId), keys.p2pk);
    } catch (err) {
      log.warn({ nutzap: e.id, err: (err as Error).message }, 'nutzap not accepted');
      // Refused: nothing of it is on the job's key, so its sender is no payee of the job. Any other
      // outcome keeps the note: a redemption the mint may still have taken is settled once it is
      // known (#settleOpen).
      if (replaced && refused(err)) await this.#restoreOpen(jobId, e.pubkey, replaced.note);
      return;
    }
    const live = this.#watching.get(w.request.id);
    if (live) w = Object.assign(live, { closed: w.closed });
    await this.#onPayment(w, e.pubkey);
  }

  /** NIP-09 deletion by the job's author cancels it, running or waiting for payment. */
  async #onDeletion(e: Event): Promise<void> {
    for (const t of e.tags) {
      // A deletion naming thousands of ids reads the ledger for each: not past a stop.
      if (this.#stopped) return;
      if (t[0] !== 'e' || !t[1]) continue;
      const running = this.#running.get(t[1]);
      const intake = this.#intake.get(t[1]);
      if (running?.author === e.pubkey) running.ac.abort();
      else if (!running) {
        if (intake?.author === e.pubkey) intake.cancelled = true;
        // Not running yet (or not here): remembered, for anyone's deletion names any id; only
        // the job's author's counts when the job starts.
        this.#cancelled.add(`${t[1]} ${e.pubkey}`);
        if (this.#cancelled.size > 10_000) this.#cancelled.delete(this.#cancelled.values().next().value!);
      }
      const w = this.#watching.get(t[1]) ?? (await this.#loadWatch(t[1]));
      if (!w || w.request.pubkey !== e.pubkey || w.closed) continue;
      // The quote stays watched: a payment made now is returned.
      w.closed = 'cancelled';
      await this.#saveWatch(w);
      const request = parseJobRequest(w.request, this.deps.id.sk);
      if (request) await this.#feedback(request, 'error', 'The job was cancelled. A payment made now is returned, locked to you.');
    }
  }
}
