import { randomUUID } from 'node:crypto';
import { isMintOperationError, type SwapPreview, type Wallet } from '@cashu/cashu-ts';
import type { StoredProof, Unit } from '../ledger/ledger.ts';
import { CashuError, busyRefusal, namesBadInput } from './errors.ts';
import { blindOutputs, deferredOutputs } from './off-loop.ts';
import { locktimeOf } from './p2pk.ts';
import { journaled, proofsWeHave, sum, toInput, toStored } from './proofs.ts';
import type { Parts } from './parts.ts';
import { completeOurSwap } from './schnorr.ts';

/**
 * Redeems the locked proofs taken offline, with our key: until then they are only as good as the
 * lock, so this runs well before any locktime. The swap also tops up the change float.
 */
export class Sweep {
  readonly #p: Parts;
  /** How soon after locked proofs arrive they are redeemed (0: only by the periodic sweep). */
  readonly #delayMs: number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  /** Every sweep under way, the periodic one (started from outside) included: stop waits for them. */
  readonly #sweeps = new Set<Promise<number>>();
  #again = false;
  /** Locked proofs the mint refused alone, by unit and mint, kept across sweeps until settled. */
  readonly #suspects = new Map<string, Map<string, Suspect>>();
  /** When the mint last took a sweep's swap, by unit and mint. */
  readonly #taken = new Map<string, number>();
  readonly #writeOffAfterMs: number;
  /** How near its locktime a short batch's proof must be before one of ours pays its fee. */
  readonly #padWithinMs: number;

  constructor(parts: Parts, delayMs: number, writeOffAfterMs: number, padWithinMs = Infinity) {
    this.#p = parts;
    this.#delayMs = delayMs;
    this.#writeOffAfterMs = writeOffAfterMs;
    this.#padWithinMs = padWithinMs;
  }

  /**
   * Cancels the sweep scheduled for locked proofs and waits for those already running: one left
   * at the mint would have its answer land on a closed ledger, its swap open until a restart.
   */
  async stop(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#again = false;
    await this.#running;
    await Promise.allSettled([...this.#sweeps]);
  }

  /**
   * Sweeps every trusted mint and unit, in batches; returns how many proofs were redeemed. A batch
   * the mint refuses is halved until one proof is refused alone: that proof becomes a suspect, and
   * the sweep goes on without it, so that no number of bad proofs holds back the others until
   * their locktime (when their payers may take them back). Suspects are tried alone again in
   * every sweep, and one is written off only if the mint, `writeOffAfterMs` after it first refused
   * it as bad in itself and having taken other swaps since, still refuses it so (namesBadInput)
   * while saying (NUT-07) it is unspent: a mint refusing everything, or refusing for a while by
   * mistake (a full disk answers code 0 to every swap), or now and then with words that blame
   * nothing (a lost database connection, code 0, between swaps it takes), must not have good
   * proofs written off. Those wait as suspects for as long as the mint says so.
   */
  async all(batch = 100): Promise<number> {
    const run = this.#all(batch);
    this.#sweeps.add(run);
    try {
      return await run;
    } finally {
      this.#sweeps.delete(run);
    }
  }

  async #all(batch: number): Promise<number> {
    let swept = 0;
    for (const mint of this.#p.mints.urls) {
      for (const unit of ['sat', 'msat'] as const) swept += await this.#sweep(mint, unit, batch);
    }
    return swept;
  }

  async #sweep(mint: string, unit: Unit, batch: number): Promise<number> {
    const at = `${unit} ${mint}`;
    // Shared with a sweep running beside this one (the periodic one and the one soon after arrivals).
    const suspects = this.#suspects.get(at) ?? new Map<string, Suspect>();
    this.#suspects.set(at, suspects);
    let swept = 0;
    let ended: 'empty' | 'failed' | 'budget' = 'budget';
    // Proofs this sweep found worth no more than the fee to swap them alone: left for the next one.
    const aside = new Set<string>();
    for (let limit = batch, swaps = 0; swaps < MAX_SWAPS; swaps++) {
      const opId = randomUUID();
      const inputs = await this.#p.ledger.startSweep({ opId, mint, unit, limit, except: [...suspects.keys(), ...aside] });
      if (inputs.length === 0) {
        ended = 'empty';
        break;
      }
      const outcome = await this.#batch(opId, mint, unit, inputs);
      if (outcome === 'swept') {
        swept += inputs.length;
        this.#taken.set(at, Date.now());
        limit = batch;
      } else if (outcome === 'failed') {
        // Down or busy: one mint or unit failing must not stop the others.
        ended = 'failed';
        break;
      } else if (outcome === 'short') {
        // Not sent: no fault of theirs. Near its locktime, swapped with one proof of ours that pays
        // the fee: left to wait for other locked proofs, they may wait past it, when their payer
        // (anyone, without a refund key) can take them back. Until then (or with no locktime) they
        // wait for the next sweep's batches: padding each as it comes would cost the operator a
        // whole fee (1 sat at most mints) per 1-sat proof a stranger sends, one per sweep.
        const { outcome: again, swapped } = this.#near(inputs) ? await this.#swapPadded(mint, unit, inputs) : { outcome: 'short' as const, swapped: 0 };
        if (again === 'swept') {
          swept += swapped;
          this.#taken.set(at, Date.now());
        } else if (again === 'bad input' || again === 'refused') {
          // The mint refused them with our proof, which is good: a proof of theirs is, as one
          // refused alone is. Suspects, tried alone (padded) again and written off as the others
          // are: set aside at every sweep, a bad one would stay counted as held for good. Blamed
          // only when it was the one locked proof in the swap.
          const now = Date.now();
          for (const p of inputs) suspects.set(p.secret, { proof: p, since: now, blamed: again === 'bad input' && inputs.length === 1 ? now : undefined });
        } else {
          for (const p of inputs) aside.add(p.secret);
          if (again === 'failed') {
            ended = 'failed';
            break;
          }
        }
        limit = batch;
      } else if (inputs.length > 1) {
        limit = Math.ceil(inputs.length / 2);
      } else {
        const now = Date.now();
        suspects.set(inputs[0]!.secret, { proof: inputs[0]!, since: now, blamed: outcome === 'bad input' ? now : undefined });
        limit = batch;
      }
    }
    // Only once everything else is settled: out of budget, or with the mint down, they wait.
    if (ended === 'empty') swept += await this.#retry(mint, unit, suspects);
    if (suspects.size === 0 && this.#suspects.get(at) === suspects) this.#suspects.delete(at);
    return swept;
  }

  /** Tries suspects alone again, oldest first; writes off those refused as bad long enough. */
  async #retry(mint: string, unit: Unit, suspects: Map<string, Suspect>): Promise<number> {
    const at = `${unit} ${mint}`;
    let swept = 0;
    let tries = 0;
    for (const [secret, suspect] of [...suspects]) {
      if (tries++ >= MAX_RETRIES) break;
      const opId = randomUUID();
      const inputs = await this.#p.ledger.startSweep({ opId, mint, unit, limit: 1, only: [secret] });
      suspects.delete(secret);
      // No longer locked: spent by a float refill, written off, or swept beside this sweep.
      if (inputs.length === 0) continue;
      let outcome = await this.#batch(opId, mint, unit, inputs);
      // Too small to swap alone, near its locktime: with one of ours that pays the fee, as the
      // sweep pads a short batch. Kept a suspect when we hold none to pad with.
      if (outcome === 'short' && this.#near(inputs)) {
        const padded = await this.#swapPadded(mint, unit, inputs);
        if (padded.swapped < 0) {
          suspects.set(secret, suspect);
          continue;
        }
        outcome = padded.outcome;
      }
      const now = Date.now();
      if (outcome === 'bad input') suspect.blamed ??= now;
      if (outcome === 'swept') {
        swept += 1;
        this.#taken.set(at, now);
      } else if (outcome === 'short') {
        // The fee went up: it can no longer be tried alone, so it goes back among the others.
        continue;
      } else if (outcome === 'bad input' && now - suspect.blamed! >= this.#writeOffAfterMs && (this.#taken.get(at) ?? 0) > suspect.blamed!) {
        // The journal asked the mint its state after this refusal: had it said spent, the proof
        // would be booked so (markSpent) and no longer held, and nothing would be written off here.
        await this.#writeOff(mint, suspect.proof);
      } else {
        if (outcome === 'refused' && now - suspect.since >= this.#writeOffAfterMs) {
          this.#p.log.warn({ mint, keyset: suspect.proof.id, amount: suspect.proof.amount, since: new Date(suspect.since).toISOString() }, 'the mint still refuses a locked proof alone without saying it is bad: kept');
        }
        // Kept, at the back of the queue, for the next sweep.
        suspects.set(secret, suspect);
        if (outcome === 'failed') break;
      }
    }
    return swept;
  }

  /** Whether one of `inputs` is near enough its locktime for a proof of ours to pay their fee. */
  #near(inputs: StoredProof[]): boolean {
    const due = Date.now() + this.#padWithinMs;
    return inputs.some((p) => {
      const lt = locktimeOf(p);
      return lt !== undefined && lt * 1000 <= due;
    });
  }

  /**
   * Swaps `inputs` (a short batch) with the smallest proof of ours that pays the fee with them:
   * while the swap is open (its answer lost, say), that proof is out of reach of payouts. Priced as
   * one of the dearest keyset. `swapped`: how many of `inputs` were redeemed; -1 when it was not
   * sent, for want of a proof of ours to pad with (or one beside this sweep took some inputs).
   */
  async #swapPadded(mint: string, unit: Unit, inputs: StoredProof[]): Promise<{ outcome: Outcome; swapped: number }> {
    const padOp = randomUUID();
    const pad = await this.#padNeeded(mint, unit, inputs);
    const padded = pad !== undefined ? await this.#p.ledger.startSweep({ opId: padOp, mint, unit, limit: inputs.length, only: inputs.map((p) => p.secret), pad }) : [];
    if (padded.length === 0) return { outcome: 'short', swapped: -1 };
    const outcome = await this.#batch(padOp, mint, unit, padded);
    return { outcome, swapped: outcome === 'swept' ? padded.length - 1 : 0 };
  }

  /**
   * What a proof of ours must be worth for `inputs` with it to be worth more than the swap's fee.
   * Priced as one of the unit's dearest keyset: ours may be in one dearer than theirs (a mint that
   * rotated its fee), and one too small would leave the batch short at every sweep until its locktime.
   */
  async #padNeeded(mint: string, unit: Unit, inputs: StoredProof[]): Promise<number | undefined> {
    try {
      const wallet = await this.#p.mints.wallet(mint, unit);
      const dearest = wallet.keyChain.getKeysets().reduce((a, b) => (b.fee > a.fee ? b : a));
      const fee = wallet.getFeesForProofs([...inputs.map(toInput), { id: dearest.id }]).toNumber();
      return Math.max(1, fee - sum(inputs) + 1);
    } catch {
      return undefined;
    }
  }

  async #writeOff(mint: string, proof: StoredProof): Promise<void> {
    const lost = await this.#p.ledger.writeOffRefused([proof.secret]);
    // Its secret stays out of the log: the row, state 'refused', is there to be looked at.
    if (lost > 0) this.#p.log.error({ mint, keyset: proof.id, amount: proof.amount, lostMsats: lost }, 'the mint refuses a locked proof it says is unspent, and takes the others: written off');
  }

  /**
   * Redeems locked proofs shortly after they arrive, off the request path: one sweep at a time,
   * batching whatever arrives meanwhile.
   */
  soon(): void {
    if (this.#delayMs <= 0 || this.#timer) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#running = this.all()
        .then(() => undefined, (e: Error) => this.#p.log.error({ err: e.message }, 'sweep failed'))
        .finally(() => {
          this.#running = undefined;
          if (this.#again) {
            this.#again = false;
            this.soon();
          }
        });
    }, this.#delayMs);
    this.#timer.unref();
  }

  /**
   * Whether the batch was redeemed; refused by the mint, naming an input as bad ('bad input') or
   * not (spent inputs among it are then booked as such, the others back among the locked); not
   * sent, being worth no more than the mint's fee to swap it ('short': nothing would come back);
   * or none of these for now (left to the next sweep or to recovery).
   */
  async #batch(opId: string, mint: string, unit: Unit, inputs: StoredProof[]): Promise<Outcome> {
    const { ledger, log, mints, journal, p2pk } = this.#p;
    let wallet: Wallet;
    let preview: SwapPreview;
    try {
      wallet = await mints.wallet(mint, unit);
      if (sum(inputs) <= wallet.getFeesForProofs(inputs.map(toInput)).toNumber()) {
        await ledger.abandonSweep(opId);
        return 'short';
      }
      const have = await proofsWeHave(ledger, mint, unit, this.#p.changeFloat);
      preview = await wallet.prepareSwapToReceive(inputs.map(toInput), have && { proofsWeHave: have }, deferredOutputs());
      await blindOutputs(preview.keepOutputs);
    } catch (e) {
      await ledger.abandonSweep(opId);
      log.warn({ mint, err: (e as Error).message }, 'locked proofs not redeemed this time');
      return 'failed';
    }
    await ledger.journalOutputs(opId, journaled(preview.keepOutputs), inputs);
    try {
      // A refusal is final: recovery marks the inputs the mint says are spent, so the next sweep
      // does not pick them again, and puts the others back.
      return await journal.send({ id: opId, kind: 'sweep', mint }, () => completeOurSwap(wallet, preview, p2pk), {
        answer: async ({ keep }) => {
          await ledger.finishSweep(opId, keep.map(toStored));
          return 'swept' as const;
        },
        done: async () => 'swept' as const,
        failed: async (e) => {
          if (!isMintOperationError(e) || busyRefusal(e.message)) return 'failed' as const;
          // Our view of its keysets is out of date (rotated): no input's fault. nutshell says so
          // for our outputs with its generic code.
          if (KEYSET_CODES.has(e.code) || /keyset id (unknown|inactive)/i.test(e.message)) {
            await mints.reloaded(mint, unit);
            return 'failed' as const;
          }
          return namesBadInput(e) ? ('bad input' as const) : ('refused' as const);
        },
      });
    } catch (e) {
      // The mint is down, or the swap may still land: the next sweep, or recovery, settles it.
      if (e instanceof CashuError) return 'failed';
      throw e;
    }
  }
}

type Outcome = 'swept' | 'refused' | 'bad input' | 'short' | 'failed';

/** A locked proof the mint refused alone: when it first did, and when it first said the proof was bad. */
interface Suspect {
  proof: StoredProof;
  since: number;
  blamed: number | undefined;
}

/** Swaps one sweep makes at one mint and unit before it leaves the rest to the next sweep. */
const MAX_SWAPS = 64;
/** Suspects one sweep tries again alone at one mint and unit. */
const MAX_RETRIES = 16;

/** NUT errors "keyset is not known" and "keyset is inactive". */
const KEYSET_CODES = new Set([12001, 12002]);
