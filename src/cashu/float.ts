import { randomUUID } from 'node:crypto';
import type { SwapPreview, Wallet } from '@cashu/cashu-ts';
import type { StoredProof, Unit } from '../ledger/ledger.ts';
import { CashuError } from './errors.ts';
import { nativeOutputsSplit } from './dleq.ts';
import { journaled, sum, toInput, toProof, toStored } from './proofs.ts';
import type { Parts } from './parts.ts';
import { completeOurSwap } from './schnorr.ts';

/**
 * The largest denomination the float keeps: with 1, 2, 4 … 128 any change up to 255 sats adds up
 * from stored proofs (a token of 8 proofs), and larger change takes larger proofs first.
 */
export const FLOAT_TOP = 128;

/** The float grows to at most this many proofs of a denomination when payouts outrun its refills. */
export const FLOAT_MAX = 64;

/** Refills of one mint's float under way at once, when payouts outrun one at a time. */
const MAX_REFILLS = 3;

/**
 * New proofs one refill asks for at most. Checking and unblinding the mint's signatures takes
 * about 0.3 ms each on the event loop: 512 at once held every request for 160 ms.
 */
const REFILL_OUTPUTS = 48;

/**
 * The change float: `changeFloat` unlocked proofs of each of 1, 2, 4 … FLOAT_TOP at each mint,
 * so change after a request (a P2PK-locked one above all, which asks the mint nothing to be taken)
 * is handed over as stored proofs, with no swap. Whenever change was paid, or locked proofs
 * arrived, the float is topped up a moment later (at once when a quarter of it is gone) off the
 * request path, by a journaled swap of the gateway's larger proofs (locked ones first, which that
 * swap also redeems). No request ever waits for it.
 */
export class ChangeFloat {
  readonly #p: Parts;
  readonly #delayMs: number;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #running = new Map<string, Set<Promise<void>>>();
  readonly #again = new Set<string>();
  /** Proofs of each denomination to keep, by mint and unit, once the configured float ran short. */
  readonly #target = new Map<string, number>();
  /** Payouts from the float of a mint and unit so far, and how many there had been when its latest refill started. */
  readonly #payouts = new Map<string, number>();
  readonly #lastStart = new Map<string, number>();
  /** Proofs that refills under way will add, by denomination: counted as held by the next one. */
  readonly #coming = new Map<string, Map<number, number>>();
  #stopped = false;

  constructor(parts: Parts, delayMs: number) {
    this.#p = parts;
    this.#delayMs = delayMs;
  }

  /**
   * Tops up the float of one mint and unit soon, batching whatever else drains it meanwhile, after
   * `payouts` were paid from it. The short delay keeps the refill's own mint call clear of the
   * request that asked for it.
   */
  soon(mint: string, unit: Unit, payouts = 1): void {
    if (this.#p.changeFloat <= 0 || this.#stopped) return;
    const at = `${unit} ${mint}`;
    const total = (this.#payouts.get(at) ?? 0) + payouts;
    this.#payouts.set(at, total);
    // A quarter of the float paid out since the last refill began is no trickle to batch: the next
    // starts now, beside one still under way if need be, so the rest lasts through its round trip.
    const low = total - (this.#lastStart.get(at) ?? 0) >= Math.max(1, this.target(mint, unit) / 4);
    const running = this.#running.get(at)?.size ?? 0;
    if (running > 0 && !(low && running < MAX_REFILLS)) {
      this.#again.add(at);
      return;
    }
    const timer = this.#timers.get(at);
    if (timer && !low) return;
    clearTimeout(timer);
    const next = setTimeout(() => this.#start(mint, unit), low ? 0 : this.#delayMs);
    next.unref();
    this.#timers.set(at, next);
  }

  #start(mint: string, unit: Unit): void {
    const at = `${unit} ${mint}`;
    this.#timers.delete(at);
    const from = this.#payouts.get(at) ?? 0;
    this.#lastStart.set(at, from);
    const runs = this.#running.get(at) ?? new Set();
    this.#running.set(at, runs);
    const run: Promise<void> = this.#refill(mint, unit)
      .catch((e: Error) => this.#p.log.error({ mint, err: e.message }, 'change float refill failed'))
      .finally(() => {
        runs.delete(run);
        if (runs.size === 0) this.#running.delete(at);
        // A float grown is filled to its new size, as one that payouts drained meanwhile is.
        if ((this.#grow(at, (this.#payouts.get(at) ?? 0) - from) || this.#again.has(at)) && !this.#running.has(at)) {
          this.#again.delete(at);
          this.soon(mint, unit, 0);
        }
      });
    runs.add(run);
  }

  /**
   * After a refill: the payouts made while it was under way are what the float must hold beyond
   * its low mark to outlast the next one. Growing to four times that, before the float runs dry
   * rather than after, keeps payouts off the mint at whatever rate and latency they come.
   */
  #grow(at: string, during: number): boolean {
    const now = this.#target.get(at) ?? this.#p.changeFloat;
    if (4 * during <= now) return false;
    let next = now;
    while (next < 4 * during) next *= 2;
    next = Math.min(Math.max(now, FLOAT_MAX), next);
    this.#target.set(at, next);
    return next > now;
  }

  /**
   * Change had to be swapped on the request path: payouts drained the float faster than its
   * refills (each a mint round trip away) filled it. Keeping twice as many of each denomination
   * from now on lets the float cover as many payouts as arrive during a refill, whatever the
   * mint's latency, up to FLOAT_MAX.
   */
  short(mint: string, unit: Unit): void {
    const base = this.#p.changeFloat;
    if (base <= 0) return;
    const at = `${unit} ${mint}`;
    const now = this.#target.get(at) ?? base;
    this.#target.set(at, Math.min(Math.max(base, FLOAT_MAX), now * 2));
    this.soon(mint, unit);
  }

  /** How many of each denomination the float of a mint and unit keeps now. */
  target(mint: string, unit: Unit): number {
    return this.#target.get(`${unit} ${mint}`) ?? this.#p.changeFloat;
  }

  /** Resolves once no refill is scheduled or running: the wallet's background work has settled. */
  async idle(): Promise<void> {
    while (this.#timers.size || this.#running.size) {
      if (this.#running.size) await Promise.all([...this.#running.values()].flatMap((r) => [...r]));
      else await new Promise((r) => setTimeout(r, this.#delayMs));
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    await Promise.all([...this.#running.values()].flatMap((r) => [...r]));
  }

  async #refill(mint: string, unit: Unit): Promise<void> {
    const { ledger, mints } = this.#p;
    if (mints.isDown(mint)) return;
    const wallet = await mints.wallet(mint, unit);
    const keyset = wallet.keyChain.getCheapestKeyset();
    const counts = await ledger.unspentCounts(mint, unit);
    const at = `${unit} ${mint}`;
    const coming = this.#coming.get(at) ?? new Map<number, number>();
    this.#coming.set(at, coming);
    const opId = randomUUID();
    let wanted: number[] = [];
    let inputs: StoredProof[] = [];
    const book = (sign: 1 | -1) => {
      for (const d of wanted) coming.set(d, (coming.get(d) ?? 0) + sign);
    };
    try {
      // A grown float the spare proofs cannot fill is filled to the configured size at least.
      for (const target of new Set([this.target(mint, unit), this.#p.changeFloat])) {
        book(-1);
        const have = new Map<number, number>();
        for (const d of Object.keys(keyset.keys).map(Number)) if (d <= FLOAT_TOP) have.set(d, (counts.get(d) ?? 0) + (coming.get(d) ?? 0));
        // The scarcest denominations first, one of each at a time, so a refill cut at its size
        // mends the whole float a little rather than a few denominations fully.
        wanted = [];
        for (let n = Math.min(...have.values()); n < target && wanted.length < REFILL_OUTPUTS; n++) {
          for (const [d, k] of [...have].sort((a, b) => a[0] - b[0])) if (k <= n && wanted.length < REFILL_OUTPUTS) wanted.push(d);
        }
        if (wanted.length === 0) return;
        // Booked before the pick awaits, so a refill starting meanwhile does not ask for the same.
        book(1);
        inputs = await ledger.startRefill({ opId, mint, unit, amount: wanted.reduce((a, b) => a + b, 0), above: FLOAT_TOP });
        if (inputs.length > 0) break;
      }
      if (inputs.length === 0) return;
      await this.#swap(wallet, mint, opId, inputs, wanted);
    } finally {
      book(-1);
    }
  }

  async #swap(wallet: Wallet, mint: string, opId: string, inputs: StoredProof[], wanted: number[]): Promise<void> {
    const { ledger, log, journal, p2pk } = this.#p;
    let preview: SwapPreview;
    try {
      // What the inputs keep after the fee: the smallest missing proofs first, the rest as usual.
      let kept = sum(inputs) - wallet.getFeesForProofs(inputs.map(toProof)).toNumber();
      const split: number[] = [];
      for (const d of wanted) {
        if (d > kept) continue;
        split.push(d);
        kept -= d;
      }
      preview = await wallet.prepareSwapToReceive(inputs.map(toInput), undefined, nativeOutputsSplit(split));
    } catch (e) {
      await ledger.abandonSweep(opId);
      log.warn({ mint, err: (e as Error).message }, 'change float not refilled this time');
      return;
    }
    await ledger.journalOutputs(opId, journaled(preview.keepOutputs), inputs);
    try {
      await journal.send({ id: opId, kind: 'sweep', mint }, () => completeOurSwap(wallet, preview, p2pk), {
        answer: ({ keep }) => ledger.finishSweep(opId, keep.map(toStored)),
        done: async () => undefined,
        failed: () => undefined,
      });
    } catch (e) {
      // The mint is down, or the swap may still land: recovery settles it; the next change asks again.
      if (!(e instanceof CashuError)) throw e;
    }
  }
}
