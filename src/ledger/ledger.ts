/** Units a key can be funded in; balances are always msats whatever the unit. */
export type Unit = 'sat' | 'msat';

export const MSATS_PER: Record<Unit, number> = { sat: 1000, msat: 1 };

export interface KeyRow {
  hash: string;
  balance: number;
  reserved: number;
  unit: Unit;
  mint: string;
  totalSpent: number;
  totalRequests: number;
  createdAt: number;
  /** Revoked by the operator: it can no longer pay for requests (its balance can still be refunded). */
  revoked: boolean;
}

/**
 * A sub-key of a balance key: it has no balance of its own, and spends its parent's under its
 * own limit. Its hash is its credential, as a parent's is.
 */
export interface ChildKeyRow {
  hash: string;
  parentHash: string;
  /** The most it may ever spend, in msats; null: as much as the parent holds. */
  spendLimit: number | null;
  spent: number;
  /** Held for its requests in flight, counted against its limit (and held on the parent too). */
  reserved: number;
  /** Models it may use; null: any. */
  models: string[] | null;
  /** Ms since the epoch after which it reserves nothing; null: never. */
  expiresAt: number | null;
  revokedAt: number | null;
  totalRequests: number;
  createdAt: number;
}

export interface NewChildKey {
  hash: string;
  spendLimit: number | null;
  models: string[] | null;
  expiresAt: number | null;
}

/** One money row of a key's history, as the ledger wrote it. */
export interface HistoryRow {
  /** The entry's own id: it grows with each entry written, so it is the page cursor. */
  id: number;
  kind: 'credit' | 'charge' | 'refund';
  /** Negative for a reversal (a refund that did not happen gives its msats back). */
  msats: number;
  createdAt: number;
  /** The reservation (a charge: the request's id), token hash (a credit) or refund id. */
  ref: string;
  /** The child key a charge was made through, if any. */
  via: string | null;
  model: string | null;
  inputTokens: number | null;
  outputTokens: number | null;
}

/** What a settled request used, kept beside its charge for the key's history. */
export interface SettledUsage {
  inputTokens: number;
  outputTokens: number;
  /** The model the charge was priced at, when not the one reserved for (the upstream served another). */
  model?: string | undefined;
}

/** A proof as the gateway stores it; amount is in the keyset's unit. */
export interface StoredProof {
  secret: string;
  id: string;
  amount: number;
  C: string;
  dleq?: { e: string; s: string; r?: string } | undefined;
}

export interface TokenRow {
  hash: string;
  keyHash: string;
  opId: string;
  state: 'redeeming' | 'credited';
  msats: number | null;
}

export interface MintOp {
  id: string;
  /** `foreign`: a token of an untrusted mint melted there to pay a mint quote here (cashu/foreign.ts). */
  kind: 'receive' | 'refund' | 'sweep' | 'melt' | 'foreign';
  mint: string;
  unit: Unit;
  state: 'pending' | 'done' | 'failed';
  keyHash: string;
  tokenHash: string | null;
  inputs: StoredProof[];
  /** Serialized blinded outputs, journaled before the mint is called. */
  outputs: unknown[] | null;
  /** Last time the owner touched it; a recent op is presumed still in its owner's hands. */
  updatedAt: number;
}

export interface RefundRow {
  id: string;
  keyHash: string;
  opId: string;
  msats: number;
  amount: number;
  unit: Unit;
  mint: string;
  token: string | null;
  state: 'pending' | 'done';
}

/** A withdrawal paid to a Lightning invoice by melting proofs (NUT-05). Amounts in the keyset's unit. */
export interface MeltRow {
  id: string;
  opId: string;
  mint: string;
  unit: Unit;
  quote: string;
  request: string;
  /** What the invoice receives. */
  amount: number;
  /** Set aside beyond `amount` for the Lightning fee and the mint's input fee, booked as a fee until settled. */
  feeReserve: number;
  /** What the melt cost beyond `amount`, once paid: inputs spent minus change returned minus amount. */
  fee: number | null;
  preimage: string | null;
  state: 'pending' | 'paid' | 'failed';
}

export interface StartMelt {
  opId: string;
  meltId: string;
  mint: string;
  unit: Unit;
  quote: string;
  request: string;
  amount: number;
  /** amount + fee reserve + input fees: what the inputs must cover and the payer must allow. */
  need: number;
  /**
   * Who pays: the operator's earnings (unset), or a key's balance, a refund to Lightning, booked as
   * `refund` on the key with the unused reserve given back to it when the melt settles.
   */
  keyHash?: string;
}

export type StartMeltResult =
  | { kind: 'started'; melt: MeltRow; inputs: StoredProof[] }
  /** `earnings`: what the payer can spend, in msats (the operator's earnings, or the key's free balance). */
  | { kind: 'short'; earnings: number }
  | { kind: 'no_liquidity' }
  | { kind: 'no_key' }
  | { kind: 'busy' };

export interface Settlement {
  chargedMsats: number;
  balance: number;
  reserved: number;
}

export interface Totals {
  credited: number;
  charged: number;
  refunded: number;
  /** Earnings the operator has taken out. */
  withdrawn: number;
  /** Input fees mints took on the gateway's own swaps (refunds, change, sweeps): the operator's cost. */
  fees: number;
  balances: number;
  reserved: number;
}

/** The pseudo key withdrawals are booked to; not a valid API key. */
export const OPERATOR = 'operator';

export type StartWithdrawResult =
  | { kind: 'started'; refund: RefundRow; inputs: StoredProof[] }
  | { kind: 'nothing' }
  | { kind: 'no_liquidity'; amount: number; unit: Unit };

export interface StartRefund {
  keyHash: string;
  opId: string;
  refundId: string;
  /** Mints to take proofs from, in order of preference. */
  mints: string[];
  /**
   * Sats the inputs must be worth beyond the refund: the mint's fee on the swap that will pay it.
   * With it, the inputs are the fewest proofs worth that much, exact or not (the swap splits them).
   */
  extra?: number;
}

export type StartRefundResult =
  | { kind: 'started'; refund: RefundRow; inputs: StoredProof[] }
  | { kind: 'nothing'; latest: RefundRow | undefined; key: KeyRow }
  | { kind: 'busy'; key: KeyRow }
  | { kind: 'no_key' }
  | { kind: 'no_liquidity'; amount: number; unit: Unit };

/**
 * The one store of money. Every method that moves msats does so in one transaction and leaves an
 * `entries` row, so credited = charged + refunded + balances holds at every commit.
 */
export interface Ledger {
  getKey(hash: string): Promise<KeyRow | undefined>;
  /** Keys by balance, largest first, for the operator. */
  listKeys(limit: number): Promise<KeyRow[]>;
  revokeKey(hash: string): Promise<boolean>;
  getToken(hash: string): Promise<TokenRow | undefined>;

  /**
   * Claims a token for redemption and journals the swap; returns the existing claim if any. Each
   * input proof is claimed too, so proofs we already hold (say, taken offline) are never swapped
   * and credited a second time under another encoding. With kind `foreign` the op is a Lightning
   * swap from another mint: no inputs of `mint`'s, its journal in `outputs`.
   */
  startRedemption(r: {
    tokenHash: string;
    keyHash: string;
    opId: string;
    mint: string;
    unit: Unit;
    inputs: StoredProof[];
    outputs: unknown[];
    kind?: 'receive' | 'foreign';
  }): Promise<{ started: true } | { started: false; token: TokenRow } | { started: false; replayed: true }>;
  /** Stores the swapped proofs and credits the key, creating it if needed. */
  finishRedemption(r: { tokenHash: string; opId: string; proofs: StoredProof[]; creditMsats: number }): Promise<KeyRow>;
  /** The swap did not happen: the token goes back to its owner and may be presented again. */
  abandonRedemption(tokenHash: string, opId: string): Promise<void>;

  /**
   * Takes proofs locked to the gateway's key without asking the mint: each proof's secret is
   * inserted uniquely (a replay is refused) in the same transaction as the credit.
   */
  acceptLocked(r: {
    tokenHash: string;
    keyHash: string;
    mint: string;
    unit: Unit;
    proofs: StoredProof[];
    creditMsats: number;
  }): Promise<'accepted' | 'known' | 'replayed'>;
  /**
   * Sets aside the fewest proofs worth at least `amount` among the locked ones we hold and the
   * unspent ones larger than `above` (locked first), to swap into the change float; opened as a
   * sweep. Empty if they cannot cover it.
   */
  startRefill(r: { opId: string; mint: string; unit: Unit; amount: number; above: number }): Promise<StoredProof[]>;
  /**
   * Sets aside up to `limit` locked proofs of one mint and unit (oldest first, none of the
   * secrets `except`, only those `only` names if given) for redemption with our key. With `pad`,
   * one unspent proof of ours goes with them, to pay a fee they cannot pay alone: the smallest
   * worth at least `pad`, so that as little as can be is out of reach while the swap is open.
   * None if we hold none that large.
   */
  startSweep(r: { opId: string; mint: string; unit: Unit; limit: number; except?: string[]; only?: string[]; pad?: number }): Promise<StoredProof[]>;
  finishSweep(opId: string, proofs: StoredProof[]): Promise<void>;
  abandonSweep(opId: string): Promise<void>;

  /**
   * Holds `msats` of a key's free balance for one request. A child key holds on its parent, and
   * only while it is live and the hold keeps its spent + reserved within its limit.
   */
  reserve(keyHash: string, msats: number, reservationId: string, model?: string): Promise<boolean>;
  /**
   * Charges at most what the key holds (and, through a child, what its limit leaves); releases
   * the rest of the reservation.
   */
  settle(reservationId: string, chargeMsats: number, usage?: SettledUsage): Promise<Settlement>;

  /**
   * Creates child keys of a live balance key; undefined if the parent is not one, 'too_many' (and
   * nothing made) if the parent would then have more than `max` children. Concurrent calls for
   * one parent are counted one after another.
   */
  createChildKeys(parentHash: string, children: NewChildKey[], max?: number): Promise<ChildKeyRow[] | undefined | 'too_many'>;
  getChildKey(hash: string): Promise<ChildKeyRow | undefined>;
  /** A parent's children, oldest first. */
  listChildKeys(parentHash: string): Promise<ChildKeyRow[]>;
  /**
   * Stops a child reserving anything more; false if it is not this parent's or already revoked.
   * Its requests in flight still settle: releasing them uncharged would make them free.
   */
  revokeChildKey(parentHash: string, childHash: string): Promise<boolean>;
  /**
   * A key's credits, charges and refunds, newest first, `before` an entry id (the cursor). For a
   * child key: the charges made through it.
   */
  history(keyHash: string, page: { before?: number | undefined; limit: number }): Promise<HistoryRow[]>;
  hasActiveReservations(keyHash: string): Promise<boolean>;
  /** Marks this process alive; its reservations are its own while it keeps doing so. */
  heartbeat(): Promise<void>;
  /**
   * Releases reservations held by processes that stopped heart-beating (crashed) more than
   * `staleMs` ago, charging nothing. A live process's reservations, long streams included, stay.
   */
  releaseOrphans(staleMs: number): Promise<number>;

  /** Debits the whole refundable balance and sets aside the proofs that will pay it. */
  startRefund(r: StartRefund): Promise<StartRefundResult>;
  /**
   * Journals the blinded outputs before the swap, and narrows the operation's inputs to those the
   * swap spends (the others go back to the wallet).
   */
  /**
   * Sets aside proofs worth the operator's earnings (charged − withdrawn, whole sats first) as a
   * refund operation booked to OPERATOR, so it is journaled and recovered like any refund.
   */
  startWithdraw(r: { opId: string; refundId: string; mints: string[] }): Promise<StartWithdrawResult>;
  journalOutputs(opId: string, outputs: unknown[], swapped: StoredProof[]): Promise<void>;
  /**
   * Books a withdrawal to a Lightning invoice against the earnings (`withdraw` for the amount, `fee`
   * for the reserve) and sets aside proofs covering `need` at one mint and unit, as a melt op.
   */
  startMelt(r: StartMelt): Promise<StartMeltResult>;
  /** The invoice was paid: inputs spent, change kept, the fee booked at what it really cost. */
  finishMelt(r: { opId: string; change: StoredProof[]; preimage: string | null }): Promise<MeltRow>;
  /** The invoice was not paid: proofs back to the wallet, the booking reversed. */
  abandonMelt(opId: string): Promise<void>;
  meltOfOp(opId: string): Promise<MeltRow | undefined>;
  /** A key's most recent melt (a refund to Lightning), whatever its state. */
  latestMelt(keyHash: string): Promise<MeltRow | undefined>;
  /** Inputs listed in `sent` were handed over as they are; the other inputs were swapped. */
  finishRefund(r: { opId: string; token: string; sent: StoredProof[]; keep: StoredProof[] }): Promise<RefundRow>;
  /** The refund swap did not happen: proofs back to the wallet, msats back to the key. */
  abandonRefund(opId: string): Promise<void>;
  latestRefund(keyHash: string): Promise<RefundRow | undefined>;

  pendingOps(): Promise<MintOp[]>;
  /** Restarts a pending op's lease: its swap may still land, so nobody settles it for a while. */
  touchOp(id: string): Promise<void>;
  /**
   * Proofs of ours the mint says are spent, with no signatures for us: they are gone, never
   * released, and their value is booked as an operator cost (`fee`) in the same transaction.
   */
  markSpent(secrets: string[]): Promise<void>;
  /**
   * Held proofs the mint will not take from us though it says they are unspent (a secret it
   * refuses whatever we sign): set aside for good as `refused`, their value booked as an operator
   * cost (`fee`) in the same transaction, so no sweep picks them again. Returns the msats written off.
   */
  writeOffRefused(secrets: string[]): Promise<number>;
  getOp(id: string): Promise<MintOp | undefined>;
  /** Proofs the gateway holds: unspent ones and locked ones not yet redeemed. */
  heldProofs(mint: string, unit: Unit): Promise<StoredProof[]>;
  /**
   * How many unspent proofs of each denomination the gateway holds at a mint, in a unit; with
   * `withLocked`, the locked ones too (a swap can spend them with our key).
   */
  unspentCounts(mint: string, unit: Unit, withLocked?: boolean): Promise<Map<number, number>>;
  totals(): Promise<Totals>;

  /**
   * Marks: small facts every instance sharing this ledger must agree on (replay sets, jobs seen,
   * free-tier counts, which key a top-up invoice funds), so a restart or a second gateway behaves
   * as one. A mark past `expiresAt` (ms since the epoch) counts as absent.
   */
  /** Records `id` in `scope`; false if it is there already and unexpired (a replay). */
  claimOnce(scope: string, id: string, expiresAt: number): Promise<boolean>;
  /** Adds one to a counter unless it has reached `limit`; true if it was added. */
  countUpTo(scope: string, id: string, limit: number, expiresAt: number): Promise<boolean>;
  putNote(scope: string, id: string, value: string, expiresAt: number): Promise<void>;
  /** Writes a note unless one is there and unexpired; the value it holds after (`value` if this call wrote it). */
  claimNote(scope: string, id: string, value: string, expiresAt: number): Promise<string>;
  getNote(scope: string, id: string): Promise<string | undefined>;
  dropNote(scope: string, id: string): Promise<void>;
  /** The ids of a scope's live notes (at most `limit`), for picking up work after a restart. */
  noteIds(scope: string, limit?: number): Promise<string[]>;
  close(): Promise<void>;
}

/**
 * How many proofs of each denomination to take (largest first) for at least `amount`, exactly
 * when the denominations allow it, so a refund can often be paid without a swap. Works from
 * counts per denomination, so a payout reads only the proofs it takes, however large the wallet.
 * With `fewest`, inputs for a swap: the fewest proofs found worth at least `amount`, exact or not
 * (at a mint with input fees every input costs). Returns undefined if the proofs cannot cover it.
 */
export function pickPlan(
  counts: ReadonlyArray<readonly [denomination: number, count: number]>, amount: number, fewest = false,
): Map<number, number> | undefined {
  const plan = new Map<number, number>();
  let left = amount;
  let taken = 0;
  let smallestLeft: number | undefined;
  let best: { plan: Map<number, number>; n: number } | undefined;
  for (const [denomination, count] of [...counts].sort((a, b) => b[0] - a[0])) {
    if (left === 0) break;
    const take = Math.min(count, Math.floor(left / denomination));
    if (take > 0) plan.set(denomination, take);
    left -= take * denomination;
    taken += take;
    if (take < count) {
      smallestLeft = denomination;
      // One more of this denomination covers what is left: a plan that may beat going on.
      if (fewest && left > 0 && (!best || taken + 1 < best.n)) {
        best = { plan: new Map(plan).set(denomination, take + 1), n: taken + 1 };
      }
    }
  }
  if (left === 0) return best && best.n < taken ? best.plan : plan;
  if (best) return best.plan;
  // Every denomination with proofs left over is larger than the gap, so the smallest covers it.
  if (smallestLeft === undefined) return undefined;
  plan.set(smallestLeft, (plan.get(smallestLeft) ?? 0) + 1);
  return plan;
}

/** What a swap cost in mint fees, in the keyset's unit: value in, minus value kept and paid out. */
export function swapFee(inputs: StoredProof[], keep: StoredProof[], paidOut: number): number {
  let fee = -paidOut;
  for (const p of inputs) fee += p.amount;
  for (const p of keep) fee -= p.amount;
  return Math.max(0, fee);
}

/** What a melt cost beyond the amount paid, in the keyset's unit: value in, minus change and amount. */
export function meltFee(inputs: StoredProof[], change: StoredProof[], amount: number): number {
  let fee = -amount;
  for (const p of inputs) fee += p.amount;
  for (const p of change) fee -= p.amount;
  return fee;
}
