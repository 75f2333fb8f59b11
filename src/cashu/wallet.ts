import type { Wallet } from '@cashu/cashu-ts';
import type { Logger } from 'pino';
import type { KeyRow, Ledger, MeltRow, RefundRow, Unit } from '../ledger/ledger.ts';
import type { MintNames, TokenInfo } from './token.ts';
import type { P2pkKey } from './p2pk.ts';
import { Mints } from './mints.ts';
import { Journal } from './journal.ts';
import { Receive, type QuoteRedemption } from './receive.ts';
import { Sweep } from './sweep.ts';
import { refund, unlockedCover, withdraw } from './refund.ts';
import { melt } from './melt.ts';
import { ChangeFloat, changeSwaps, type ChangeSwap } from './float.ts';
import type { ForeignIntake, Parts } from './parts.ts';

export type { ForeignIntake } from './parts.ts';

/**
 * The gateway's own wallet, as the doors and the engine see it. Each flow lives in its own file
 * (receive, refund, sweep, melt); every mint call that moves money goes through the journal.
 */
export class CashuWallets {
  readonly #parts: Parts;
  readonly #receive: Receive;
  readonly #sweep: Sweep;
  readonly #float: ChangeFloat;
  #changeSwaps = 0;
  /** Trusted mints, primary first: the order refunds are paid from. */
  readonly mints: readonly string[];
  /** Every URL a token may name, to the trusted mint it stands for. */
  readonly names: MintNames;
  /** The key clients lock ecash to (NUT-11) so it can be taken without asking the mint. */
  readonly p2pk: P2pkKey;

  constructor(
    mints: readonly string[],
    ledger: Ledger,
    log: Logger,
    opts: {
      mintTimeoutMs: number; p2pk: P2pkKey; locktimeMarginSec: number; changeFloat?: number; sweepDelayMs?: number; refillDelayMs?: number; writeOffAfterMs?: number; padWithinMs?: number;
      aliases?: Readonly<Record<string, string>>;
    },
  ) {
    const changeFloat = opts.changeFloat ?? 0;
    const known = new Mints(mints, log, { ...(opts.aliases && { aliases: opts.aliases }), changeFloat });
    // An unfinished op belongs to its starter for twice the mint timeout: its own call has surely ended.
    const journal = new Journal(ledger, log, known, 2 * opts.mintTimeoutMs);
    this.#parts = {
      ledger, log, mints: known, journal, p2pk: opts.p2pk, changeFloat,
      refill: (mint, unit) => this.#float.soon(mint, unit),
      changeSwapped: (mint, unit) => {
        this.#changeSwaps++;
        if (changeSwaps.hasSubscribers) changeSwaps.publish({ mint, unit } satisfies ChangeSwap);
        this.#float.short(mint, unit);
      },
    };
    this.#sweep = new Sweep(this.#parts, opts.sweepDelayMs ?? 0, opts.writeOffAfterMs ?? 600_000, opts.padWithinMs);
    this.#float = new ChangeFloat(this.#parts, opts.refillDelayMs ?? 200);
    const tookLocked = (mint: string, unit: Unit) => {
      this.#sweep.soon();
      this.#float.soon(mint, unit);
    };
    this.#receive = new Receive(this.#parts, { locktimeMarginSec: opts.locktimeMarginSec, tookLocked });
    this.mints = mints;
    this.names = known.names;
    this.p2pk = opts.p2pk;
  }

  /** Set when tokens of other mints are accepted; their ops are settled through it. */
  get foreign(): ForeignIntake | undefined {
    return this.#parts.journal.foreign;
  }

  set foreign(intake: ForeignIntake | undefined) {
    this.#parts.journal.foreign = intake;
  }

  /** Waits for, or settles, a journaled operation someone else started. */
  settleOp(opId: string): Promise<'done' | 'failed' | 'pending'> {
    return this.#parts.journal.awaitOp(opId);
  }

  /** Change paid by a swap on the request path because the float could not pay it (since start). */
  get changeSwaps(): number {
    return this.#changeSwaps;
  }

  /** How many proofs of each small denomination the change float of a mint and unit keeps now. */
  floatTarget(mint: string, unit: Unit): number {
    return this.#float.target(mint, unit);
  }

  /**
   * Tops up the change float of every mint and unit the gateway holds proofs of, off the request
   * path: a restarted gateway's first locked requests are then paid their change without a swap.
   */
  async fillFloats(): Promise<void> {
    for (const mint of this.mints) {
      for (const unit of ['sat', 'msat'] as const) {
        if ((await this.#parts.ledger.unspentCounts(mint, unit, true)).size > 0) this.#float.soon(mint, unit);
      }
    }
  }

  /** Resolves once the change float has no refill scheduled or running (it runs on its own, after payouts). */
  idle(): Promise<void> {
    return this.#float.idle();
  }

  /** Cancels the sweep and float refill scheduled and waits for those already running, and for a recovery pass. */
  async stop(): Promise<void> {
    await Promise.all([this.#sweep.stop(), this.#float.stop(), this.#parts.journal.settled()]);
  }

  /**
   * Reserves a P2PK key for one door (the Nostr door): ecash locked to it is redeemed only with
   * `redeem(info, key, door)`, never by the HTTP door, which cannot tell whose job it was sent for.
   */
  addDoorKey(pubkey: string): void {
    this.#receive.addDoorKey(pubkey);
  }

  /** Mint info and keysets are fetched once per (mint, unit), not per request. */
  wallet(mint: string, unit: Unit): Promise<Wallet> {
    return this.#parts.mints.wallet(mint, unit);
  }

  /** What an unlocked token must be worth to credit `sats` after the swap that redeems it (see refund.ts). */
  unlockedCover(sats: number): Promise<number> {
    return unlockedCover(this.#parts, sats);
  }

  /**
   * Swaps a token at its mint and credits `keyHash`. Concurrent presentations of one token share
   * one swap; a token already credited returns its key without touching the mint. With `door`,
   * proofs locked to that door's key are accepted too, and always swapped at the mint (never taken
   * offline, so no proof locked to a door key is ever stored and only this swap needs that key).
   * `changeSoon`: change is paid right after (a one-shot request), so the swap keeps proofs any
   * change adds up from.
   */
  redeem(info: TokenInfo, keyHash: string, door?: P2pkKey, changeSoon = false): Promise<KeyRow> {
    return this.#receive.redeem(info, keyHash, door, changeSoon);
  }

  /** Mints a paid NUT-04 quote to us and credits `keyHash`; undefined while it is unpaid. */
  redeemQuote(q: QuoteRedemption): Promise<KeyRow | undefined> {
    return this.#receive.redeemQuote(q);
  }

  /**
   * Pays out a key's whole refundable balance as a token (whole sats for a sat key; the msat
   * remainder stays on the key). A retry with nothing left to refund returns the last token.
   */
  async refund(keyHash: string): Promise<RefundRow> {
    return (await refund(this.#parts, keyHash, true))!;
  }

  /**
   * Change after a one-shot request: the refundable balance as a token, or undefined if none.
   * With `lockTo` (a compressed pubkey) the token is P2PK-locked to it (NUT-11), so it can travel
   * in a public Nostr event and still be spendable only by its owner.
   */
  change(keyHash: string, lockTo?: string): Promise<RefundRow | undefined> {
    return refund(this.#parts, keyHash, false, lockTo);
  }

  /** The operator's earnings as a token, booked in the same transaction that sets the proofs aside. */
  withdraw(): Promise<RefundRow | undefined> {
    return withdraw(this.#parts);
  }

  /** Pays a Lightning invoice from the earnings, or with `payer` from a key's balance (see melt.ts). */
  melt(invoice: string, payer?: { keyHash: string; unit: Unit }): Promise<MeltRow> {
    return melt(this.#parts, invoice, payer);
  }

  /** Redeems the locked proofs taken offline, in batches, with our key. */
  sweepLocked(batch = 100): Promise<number> {
    return this.#sweep.all(batch);
  }

  /** Resolves every journaled mint operation left unfinished by a crash (ops whose lease has run out). */
  recoverAll(): Promise<void> {
    return this.#parts.journal.recoverAll();
  }
}
