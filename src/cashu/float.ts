import { randomUUID } from 'node:crypto';
import { channel } from 'node:diagnostics_channel';
import type { SwapPreview } from '@cashu/cashu-ts';
import type { StoredProof, Unit } from '../ledger/ledger.ts';
import { CashuError } from './errors.ts';
import { blindOutputs, deferredOutputs } from './off-loop.ts';
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

/** What an observer (the metrics) learns each time change could not be paid from the float. */
export interface ChangeSwap {
  mint: string;
  unit: Unit;
}

/**
 * Published once per change swapped on the request path because the float could not pay it: a
 * request's own count of its mint waits, which a latency cannot tell from an event-loop stall.
 */
export const changeSwaps = channel('cashu-gateway:change-swap');

/**
 * The change float: `changeFloat` unlocked proofs of each of 1, 2, 4 … FLOAT_TOP at each mint,
 * so change after a request (a P2PK-locked one above all, which asks the mint nothing to be taken)
 * is handed over as stored proofs, with no swap. Whenever change was paid, or locked proofs
 * arrived, the float is topped up a moment later off the request path, by a journaled swap of
 * the gateway's larger proofs (locked ones first, which that swap also redeems). No request ever
 * waits for it.
 */
export class ChangeFloat {
  readonly #p: Parts;
  readonly #delayMs: number;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #running = new Map<string, Promise<void>>();
  readonly #again = new Set<string>();
  /** Proofs of each denomination to keep, by mint and unit, once the configured float ran short. */
  readonly #target = new Map<string, number>();
  #stopped = false;

  constructor(parts: Parts, delayMs: number) {
    this.#p = parts;
    this.#delayMs = delayMs;
  }

  /**
   * Tops up the float of one mint and unit soon, batching whatever else drains it meanwhile. The
   * short delay keeps the refill's own mint call clear of the request that asked for it.
   */
  soon(mint: string, unit: Unit): void {
    if (this.#p.changeFloat <= 0 || this.#stopped) return;
    const at = `${unit} ${mint}`;
    if (this.#timers.has(at)) return;
    if (this.#running.has(at)) {
      this.#again.add(at);
      return;
    }
    const timer = setTimeout(() => {
      this.#timers.delete(at);
      const run = this.#refill(mint, unit)
        .catch((e: Error) => this.#p.log.error({ mint, err: e.message }, 'change float refill failed'))
        .finally(() => {
          this.#running.delete(at);
          if (this.#again.delete(at)) this.soon(mint, unit);
        });
      this.#running.set(at, run);
    }, this.#delayMs);
    timer.unref();
    this.#timers.set(at, timer);
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
      if (this.#running.size) await Promise.all(this.#running.values());
      else await new Promise((r) => setTimeout(r, this.#delayMs));
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    await Promise.all(this.#running.values());
  }

  async #refill(mint: string, unit: Unit): Promise<void> {
    const { ledger, log, mints, journal, p2pk } = this.#p;
    if (mints.isDown(mint)) return;
    const wallet = await mints.wallet(mint, unit);
    const keyset = wallet.keyChain.getCheapestKeyset();
    const counts = await ledger.unspentCounts(mint, unit);
    const opId = randomUUID();
    let wanted: number[] = [];
    let inputs: StoredProof[] = [];
    // A grown float the spare proofs cannot fill is filled to the configured size at least.
    for (const target of new Set([this.target(mint, unit), this.#p.changeFloat])) {
      wanted = [];
      for (const d of Object.keys(keyset.keys).map(Number).sort((a, b) => a - b)) {
        if (d > FLOAT_TOP) break;
        for (let n = counts.get(d) ?? 0; n < target; n++) wanted.push(d);
      }
      if (wanted.length === 0) return;
      inputs = await ledger.startRefill({ opId, mint, unit, amount: wanted.reduce((a, b) => a + b, 0), above: FLOAT_TOP });
      if (inputs.length > 0) break;
    }
    if (inputs.length === 0) return;
    let preview: SwapPreview;
    try {
      // What the inputs keep after the fee: the smallest missing proofs first, the rest as usual.
      let kept = sum(inputs) - wallet.getFeesForProofs(inputs.map(toProof)).toNumber();
      const split: number[] = [];
      for (const d of wanted) {
        if (d > kept) break;
        split.push(d);
        kept -= d;
      }
      preview = await wallet.prepareSwapToReceive(inputs.map(toInput), undefined, deferredOutputs(split));
      await blindOutputs(preview.keepOutputs);
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
