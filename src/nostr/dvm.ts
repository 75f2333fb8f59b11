import type { Logger } from 'pino';
import type { Event } from 'nostr-tools/pure';
import type { SubCloser } from 'nostr-tools/abstract-pool';
import { Amount, getEncodedToken, type Proof } from '@cashu/cashu-ts';
import type { Catalog } from '../engine/catalog.ts';
import type { Engine, Payer } from '../engine/engine.ts';
import { GatewayError } from '../engine/errors.ts';
import { prepareJob, type Job } from '../engine/job.ts';
import type { CashuWallets } from '../cashu/wallet.ts';
import { inspectToken, sha256Hex } from '../cashu/token.ts';
import type { Identity } from './identity.ts';
import { JOB_REQUEST, JOB_RESULT, completionParams, decrypt, feedbackEvent, parseJobRequest, resultEvent, type JobRequest } from './nip90.ts';
import type { Relays } from './relays.ts';

export const NUTZAP = 9321;
const DELETION = 5;

export interface DvmConfig {
  defaultModel?: string | undefined;
  /** Requests older than this are skipped (at start-up, and if relays deliver them late). */
  maxAgeSec: number;
  maxPromptChars: number;
  ratePerMinute: number;
  freePerPubkey: number;
  /** How long a payment-required job waits for its bolt11 or nutzap. */
  paymentTimeoutSec: number;
  /** How often a pending bolt11 quote is checked. */
  pollMs: number;
}

export interface DvmDeps {
  relays: Relays;
  id: Identity;
  engine: Engine;
  catalog: Catalog;
  wallets: CashuWallets;
  log: Logger;
  cfg: DvmConfig;
}

interface AwaitingPayment {
  request: JobRequest;
  job: Job;
  feedbackId: string;
  quote: string;
  sats: number;
  expires: number;
}

/** A bounded set: the oldest ids go first once it is full. */
class RecentIds {
  readonly #ids = new Set<string>();
  readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  /** True the first time an id is seen. */
  add(id: string): boolean {
    if (this.#ids.has(id)) return false;
    this.#ids.add(id);
    if (this.#ids.size > this.max) this.#ids.delete(this.#ids.values().next().value!);
    return true;
  }
}

/**
 * The NIP-90 door: kind 5050 jobs in, kind 6050 results out, through the same engine, prices and
 * ledger as the HTTP API. Payment by a `cashu` tag, a bolt11 from a NUT-04 quote at the primary
 * mint, or a NIP-61 nutzap; change comes back locked to the requester's key.
 */
export class Dvm {
  readonly #seen = new RecentIds(10_000);
  readonly #running = new Map<string, { ac: AbortController; author: string }>();
  readonly #awaiting = new Map<string, AwaitingPayment>();
  readonly #rate = new Map<string, { minute: number; count: number }>();
  readonly #freeUsed = new Map<string, number>();
  #subs: SubCloser[] = [];
  readonly deps: DvmDeps;

  constructor(deps: DvmDeps) {
    this.deps = deps;
  }

  start(): void {
    const { relays, id, cfg } = this.deps;
    const since = Math.floor(Date.now() / 1000) - cfg.maxAgeSec;
    this.#subs = [
      relays.subscribe({ kinds: [JOB_REQUEST], since }, (e) => void this.#onRequest(e)),
      relays.subscribe({ kinds: [DELETION], since }, (e) => this.#onDeletion(e)),
      relays.subscribe({ kinds: [NUTZAP], '#p': [id.pubkey], since }, (e) => void this.#onNutzap(e)),
    ];
  }

  stop(): void {
    for (const s of this.#subs) s.close();
    for (const r of this.#running.values()) r.ac.abort();
    this.#awaiting.clear();
  }

  async #onRequest(e: Event): Promise<void> {
    const { id, cfg, log } = this.deps;
    // One job per event id, however many relays deliver it.
    if (!this.#seen.add(e.id)) return;
    if (e.created_at < Math.floor(Date.now() / 1000) - cfg.maxAgeSec) return;
    const addressed = e.tags.filter((t) => t[0] === 'p').map((t) => t[1]);
    if (addressed.length > 0 && !addressed.includes(id.pubkey)) return;
    const request = parseJobRequest(e, id.sk);
    if (!request) return;
    if (!this.#withinRate(e.pubkey)) {
      log.info({ job: e.id }, 'job dropped: requester over its rate limit');
      return;
    }
    try {
      await this.#handle(request);
    } catch (err) {
      const message = err instanceof GatewayError ? err.message : 'The job could not be processed.';
      if (!(err instanceof GatewayError)) log.error({ job: e.id, err: (err as Error).message }, 'job failed');
      const extra = err instanceof GatewayError && typeof err.extra.refund_token === 'string' ? [['cashu', err.extra.refund_token]] : [];
      await this.#feedback(request, 'error', message, extra);
    }
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

  async #handle(request: JobRequest): Promise<void> {
    const { catalog, engine, cfg } = this.deps;
    const prompt = (await Promise.all(request.inputs.map((i) => this.#inputText(i.type, i.data)))).join('\n\n');
    if (prompt.length > cfg.maxPromptChars) {
      throw new GatewayError(400, 'prompt_too_large', `The prompt is over ${cfg.maxPromptChars} characters.`);
    }
    const model = request.params.get('model') ?? cfg.defaultModel ?? catalog.list()[0]?.id;
    if (!model) throw new GatewayError(503, 'no_models', 'No model is available right now.');
    const job = await prepareJob(
      'chat',
      { model, messages: [{ role: 'user', content: prompt }], ...completionParams(request.params) },
      catalog,
    );
    // Change travels in a public event: lock it to the requester (compressed form of their key).
    const lockChangeTo = `02${request.event.pubkey}`;
    if (request.cashu) {
      const payer = await engine.pay(job, { xCashu: request.cashu, lockChangeTo });
      return this.#run(request, job, payer);
    }
    const used = this.#freeUsed.get(request.event.pubkey) ?? 0;
    if (used < cfg.freePerPubkey) {
      this.#freeUsed.set(request.event.pubkey, used + 1);
      return this.#run(request, job, null);
    }
    await this.#askForPayment(request, job);
  }

  /** The text of an input: inline, another event's content, or an earlier job's result. */
  async #inputText(type: 'text' | 'event' | 'job', data: string): Promise<string> {
    if (type === 'text') return data;
    const { relays, id } = this.deps;
    if (type === 'event') {
      const [e] = await relays.query({ ids: [data] });
      if (!e) throw new GatewayError(400, 'input_not_found', `Input event ${data} was not found on our relays.`);
      return e.content;
    }
    const [result] = await relays.query({ kinds: [JOB_RESULT], '#e': [data] });
    if (!result) throw new GatewayError(400, 'input_not_found', `No result of job ${data} was found on our relays.`);
    if (!result.tags.some((t) => t[0] === 'encrypted')) return result.content;
    // An encrypted result is readable by its author and its customer; we are one of them.
    const peer = result.pubkey === id.pubkey ? result.tags.find((t) => t[0] === 'p')?.[1] : result.pubkey;
    if (!peer) throw new GatewayError(400, 'input_not_found', `The result of job ${data} cannot be read.`);
    return decrypt(result.content, id.sk, peer).text;
  }

  async #run(request: JobRequest, job: Job, payer: Payer | null): Promise<void> {
    const { engine } = this.deps;
    const ac = new AbortController();
    this.#running.set(request.event.id, { ac, author: request.event.pubkey });
    try {
      await this.#feedback(request, 'processing', 'Generating.');
      let out;
      try {
        out = await engine.complete(job, payer, ac.signal);
      } catch (e) {
        if (ac.signal.aborted && e instanceof GatewayError) {
          throw new GatewayError(499, 'cancelled', 'The job was cancelled.', { extra: e.extra });
        }
        throw e;
      }
      const choice = (out.body.choices as Array<{ message?: { content?: unknown } }> | undefined)?.[0];
      const text = typeof choice?.message?.content === 'string' ? choice.message.content : '';
      await this.deps.relays.publish(resultEvent({ request, sk: this.deps.id.sk }, text, out.receipt.cost.totalMsats, out.receipt.change), request.relays);
      await this.#feedback(request, 'success', 'Done.', [['amount', String(out.receipt.cost.totalMsats)]]);
    } finally {
      this.#running.delete(request.event.id);
    }
  }

  async #feedback(request: JobRequest, status: 'processing' | 'error' | 'payment-required' | 'success', info: string, extra: string[][] = []) {
    return this.deps.relays.publish(feedbackEvent({ request, sk: this.deps.id.sk }, status, info, extra), request.relays);
  }

  /** A key of the gateway's own per job, which the job's payment funds and the job spends. */
  #jobKey(requestId: string): string {
    return sha256Hex(`nostr job ${requestId}`);
  }

  async #askForPayment(request: JobRequest, job: Job): Promise<void> {
    const { wallets, cfg, log } = this.deps;
    const mint = wallets.mints[0]!;
    const sats = Math.max(1, Math.ceil(job.maxMsats / 1000));
    const quote = await (await wallets.wallet(mint, 'sat')).createMintQuoteBolt11(sats, `job ${request.event.id.slice(0, 16)}`);
    const fb = await this.#feedback(request, 'payment-required', `Pay ${sats} sats to run this job, by Lightning or a nutzap; any rest comes back as change.`, [
      ['amount', String(sats * 1000), quote.request],
    ]);
    const waiting: AwaitingPayment = { request, job, feedbackId: fb.event.id, quote: quote.quote, sats, expires: Date.now() + cfg.paymentTimeoutSec * 1000 };
    this.#awaiting.set(request.event.id, waiting);
    const poll = async () => {
      if (this.#awaiting.get(request.event.id) !== waiting) return;
      if (Date.now() > waiting.expires) {
        this.#awaiting.delete(request.event.id);
        await this.#feedback(request, 'error', 'No payment arrived in time.');
        return;
      }
      try {
        const key = await wallets.redeemQuote({ mint, unit: 'sat', quote: waiting.quote, amount: sats, keyHash: this.#jobKey(request.event.id) });
        if (key) return void (await this.#paid(waiting));
      } catch (e) {
        log.warn({ job: request.event.id, err: (e as Error).message }, 'quote check failed');
      }
      setTimeout(() => void poll(), cfg.pollMs).unref();
    };
    setTimeout(() => void poll(), cfg.pollMs).unref();
  }

  /** Runs a job whose payment has been credited to its key; the first payment to arrive wins. */
  async #paid(waiting: AwaitingPayment): Promise<void> {
    const id = waiting.request.event.id;
    if (this.#awaiting.get(id) !== waiting) return;
    this.#awaiting.delete(id);
    try {
      const payer = await this.deps.engine.payFromKey(waiting.job, this.#jobKey(id), { oneShot: true, lockChangeTo: `02${waiting.request.event.pubkey}` });
      await this.#run(waiting.request, waiting.job, payer);
    } catch (err) {
      const message = err instanceof GatewayError ? err.message : 'The job could not be processed.';
      await this.#feedback(waiting.request, 'error', message);
    }
  }

  /** A NIP-61 nutzap: proofs locked to our 10019 key, referencing a job waiting for payment. */
  async #onNutzap(e: Event): Promise<void> {
    const { wallets, log } = this.deps;
    if (!this.#seen.add(e.id)) return;
    const refs = e.tags.filter((t) => t[0] === 'e').map((t) => t[1]);
    const waiting = [...this.#awaiting.values()].find((w) => refs.includes(w.request.event.id) || refs.includes(w.feedbackId));
    if (!waiting) return;
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
    try {
      const info = inspectToken(getEncodedToken({ mint, unit, proofs }), new Set(wallets.mints));
      await wallets.redeem(info, this.#jobKey(waiting.request.event.id));
      await this.#paid(waiting);
    } catch (err) {
      log.warn({ nutzap: e.id, err: (err as Error).message }, 'nutzap not accepted');
    }
  }

  /** NIP-09 deletion by the job's author cancels it, running or waiting for payment. */
  #onDeletion(e: Event): void {
    for (const t of e.tags) {
      if (t[0] !== 'e' || !t[1]) continue;
      const running = this.#running.get(t[1]);
      if (running?.author === e.pubkey) running.ac.abort();
      const waiting = this.#awaiting.get(t[1]);
      if (waiting?.request.event.pubkey === e.pubkey) {
        this.#awaiting.delete(t[1]);
        void this.#feedback(waiting.request, 'error', 'The job was cancelled.');
      }
    }
  }
}
