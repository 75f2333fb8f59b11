import { randomUUID } from 'node:crypto';
import {
  Amount,
  OutputData,
  Wallet,
  getEncodedToken,
  isMintOperationError,
  splitAmount,
  type MeltQuoteBolt11Response,
  type Proof,
  type SerializedBlindedSignature,
  type SerializedOutputData,
  type SwapPreview,
} from '@cashu/cashu-ts';
import type { Logger } from 'pino';
import { MSATS_PER, isLocked, pickPlan, type KeyRow, type Ledger, type MeltRow, type MintOp, type RefundRow, type StoredProof, type Unit } from '../ledger/ledger.ts';
import { mintNames, type MintNames, type TokenInfo } from './token.ts';
import { tokenHashOfQuote } from './credential.ts';
import { CashuError } from './errors.ts';
import { lockedTo, spendableOnlyByUs, type P2pkKey } from './p2pk.ts';
import { crashPoint } from './crash.ts';
import { decodeWithKeysets } from './keysets.ts';
import { NativeOutputData, nativeLockedOutputs, nativeOutputs } from './dleq.ts';

/** A journaled blinded output; `send` marks the outputs that become the user's refund token. */
interface JournaledOutput {
  send: boolean;
  o: SerializedOutputData;
}

const SPENT = 11001;
const PENDING = 11002;

export function toStored(p: Pick<Proof, 'id' | 'secret' | 'C' | 'dleq'> & { amount: Amount | number }): StoredProof {
  const amount = typeof p.amount === 'number' ? p.amount : p.amount.toNumber();
  return { id: p.id, amount, secret: p.secret, C: p.C, dleq: p.dleq };
}

function toProof(p: StoredProof): Proof {
  const proof: Proof = { id: p.id, amount: Amount.from(p.amount), secret: p.secret, C: p.C };
  if (p.dleq) proof.dleq = p.dleq as Proof['dleq'];
  return proof;
}

function sum(proofs: StoredProof[]): number {
  let s = 0;
  for (const p of proofs) s += p.amount;
  return s;
}

function mintUnreachable(retryAfterSec = 5): CashuError {
  return new CashuError('cashu_mint_unreachable', 'The Cashu mint could not be reached; your token was not spent. Try again shortly.', { retryAfter: retryAfterSec });
}

/** Only a refused connection proves a request never reached the mint; a timeout proves nothing. */
function neverSent(e: unknown): boolean {
  for (let c: unknown = e, i = 0; c && i < 6; c = (c as { cause?: unknown }).cause, i++) {
    if ((c as { code?: string }).code === 'ECONNREFUSED') return true;
  }
  return false;
}

/** Tokens of untrusted mints, swapped over Lightning (foreign.ts) when FOREIGN_MINTS=swap. */
export interface ForeignIntake {
  redeem(info: TokenInfo, keyHash: string): Promise<KeyRow>;
  recover(op: MintOp, abandonIfUnspent: boolean): Promise<'done' | 'failed' | 'pending'>;
}

/**
 * The gateway's own wallet: one cashu-ts Wallet per (mint, unit), loaded once and reused, and the
 * journaled swaps that turn a client's token into the gateway's proofs and back into refunds.
 */
export class CashuWallets {
  readonly #wallets = new Map<string, Promise<Wallet>>();
  readonly #inflight = new Map<string, { keyHash: string; done: Promise<KeyRow> }>();
  readonly #ledger: Ledger;
  readonly #log: Logger;
  /** Trusted mints, primary first: the order refunds are paid from. */
  readonly mints: readonly string[];
  /** Every URL a token may name, to the trusted mint it stands for. */
  readonly names: MintNames;
  /** Where a trusted mint is called when that is not its own URL (CASHU_MINT_ALIASES). */
  readonly #reach: Readonly<Record<string, string>>;

  /**
   * How long an unfinished operation belongs to whoever started it. Past that (twice the mint
   * timeout, so its own swap call has surely ended), any instance may settle it with the mint.
   */
  readonly #leaseMs: number;
  /** The key clients lock ecash to (NUT-11) so it can be taken without asking the mint. */
  readonly p2pk: P2pkKey;
  readonly #locktimeMarginSec: number;
  /** x-only keys other doors lock ecash to: a redemption without that door's key refuses such proofs. */
  readonly #doorLocks = new Set<string>();
  readonly #loadedAt = new Map<string, number>();
  /** Mints whose keys could not be loaded, so their return can be logged. */
  readonly #unreachable = new Set<string>();
  /** Proofs of each small denomination to keep on hand, so change needs no swap (0: no float). */
  readonly #changeFloat: number;
  /** How soon after locked proofs arrive they are redeemed (0: only by the periodic sweep). */
  readonly #sweepDelayMs: number;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping: Promise<void> | undefined;
  #sweepAgain = false;
  /** Set when tokens of other mints are accepted; their ops are settled through it. */
  foreign: ForeignIntake | undefined;

  constructor(
    mints: readonly string[],
    ledger: Ledger,
    log: Logger,
    opts: { mintTimeoutMs: number; p2pk: P2pkKey; locktimeMarginSec: number; changeFloat?: number; sweepDelayMs?: number; aliases?: Readonly<Record<string, string>> },
  ) {
    this.mints = mints;
    this.#reach = opts.aliases ?? {};
    this.names = mintNames(mints, this.#reach);
    this.#ledger = ledger;
    this.#log = log;
    this.#leaseMs = 2 * opts.mintTimeoutMs;
    this.p2pk = opts.p2pk;
    this.#locktimeMarginSec = opts.locktimeMarginSec;
    this.#changeFloat = opts.changeFloat ?? 0;
    this.#sweepDelayMs = opts.sweepDelayMs ?? 0;
  }

  /** Cancels the sweep scheduled for locked proofs and waits for one already running. */
  async stop(): Promise<void> {
    clearTimeout(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#sweepAgain = false;
    await this.#sweeping;
  }

  /**
   * Reserves a P2PK key for one door (the Nostr door): ecash locked to it is redeemed only with
   * `redeem(info, key, door)`, never by the HTTP door, which cannot tell whose job it was sent for.
   */
  addDoorKey(pubkey: string): void {
    this.#doorLocks.add(pubkey.slice(2).toLowerCase());
  }

  /** Mint info and keysets are fetched once per (mint, unit), not per request. */
  wallet(mint: string, unit: Unit): Promise<Wallet> {
    const id = `${unit} ${mint}`;
    let w = this.#wallets.get(id);
    if (!w) {
      w = (async () => {
        const wallet = new Wallet(this.#reach[mint] ?? mint, { unit, ...(this.#changeFloat > 0 && { denominationTarget: this.#changeFloat }) });
        await wallet.loadMint();
        return wallet;
      })();
      // A failed load is not cached, so the next request tries the mint again.
      w.catch(() => this.#wallets.delete(id));
      this.#wallets.set(id, w);
      this.#loadedAt.set(id, Date.now());
    }
    return w;
  }

  /**
   * What an ordinary (unlocked) token must be worth to credit `sats` after the swap that redeems
   * it: the mint's input fee on the fewest proofs of that amount, at the dearest trusted mint.
   * A mint that cannot be reached adds nothing (its fee is not known), and is not asked again
   * until it is back, so unpaid requests cannot make the gateway call a mint that is down.
   */
  async unlockedCover(sats: number): Promise<number> {
    let cover = sats;
    for (const mint of this.mints) {
      if (this.#unreachable.has(mint)) continue;
      let wallet: Wallet;
      try {
        wallet = await this.wallet(mint, 'sat');
      } catch (e) {
        this.#mintDown(mint, e);
        continue;
      }
      const keyset = wallet.keyChain.getCheapestKeyset();
      let amount = sats;
      // More sats may need one proof more, whose fee may need more sats: a few rounds settle it.
      for (let i = 0; i < 8; i++) {
        const fee = wallet.getFeesForKeyset(splitAmount(amount, keyset.keys).length, keyset.id).toNumber();
        if (amount - fee >= sats) break;
        amount = sats + fee;
      }
      cover = Math.max(cover, amount);
    }
    return cover;
  }

  /**
   * Reloads a mint's keysets when a token names one we do not know (a rotation), at most once a
   * minute per mint and unit, so made-up keyset ids cannot make us hammer the mint.
   */
  async #reloaded(mint: string, unit: Unit): Promise<Wallet | undefined> {
    const id = `${unit} ${mint}`;
    if (Date.now() - (this.#loadedAt.get(id) ?? 0) < 60_000) return undefined;
    this.#wallets.delete(id);
    return this.wallet(mint, unit).catch(() => undefined);
  }

  /** The token's proofs with their keyset ids resolved against this mint's keysets (NUT-02). */
  #decode(wallet: Wallet, info: TokenInfo) {
    const chain = wallet.keyChain;
    const keysets = chain.getAllKeysetIds().map((id) => ({ id, unit: chain.getKeyset(id).unit }));
    return decodeWithKeysets(info.token, keysets, info.unit);
  }

  /** Every proof locked to us alone, DLEQ-proven, at a mint that supports NUT-11 and NUT-12. */
  #offlineAcceptable(wallet: Wallet, proofs: Proof[], unit: Unit): boolean {
    const info = wallet.getMintInfo();
    if (!info.isSupported(11).supported || !info.isSupported(12).supported) return false;
    const notBefore = Math.floor(Date.now() / 1000) + this.#locktimeMarginSec;
    for (const p of proofs) {
      let keyset;
      try {
        keyset = wallet.keyChain.getKeyset(p.id);
      } catch {
        return false;
      }
      // The token's unit is only its label: a proof of the msat keyset called sat would be 1000x.
      if (keyset.unit !== unit) return false;
      if (!spendableOnlyByUs(p, keyset, this.p2pk.pubkey, notBefore)) return false;
    }
    return true;
  }

  async #walletOr503(mint: string, unit: Unit): Promise<Wallet> {
    try {
      return await this.wallet(mint, unit);
    } catch (e) {
      this.#mintDown(mint, e);
      throw mintUnreachable();
    }
  }

  /** An outage is logged when it starts and when it ends, not on every request it fails. */
  #mintDown(mint: string, e: unknown): void {
    if (this.#unreachable.has(mint)) return;
    this.#unreachable.add(mint);
    this.#log.warn({ mint, err: (e as Error).message }, 'mint unreachable');
  }

  #mintUp(mint: string): void {
    if (this.#unreachable.delete(mint)) this.#log.info({ mint }, 'mint reachable again');
  }

  /**
   * Swaps a token at its mint and credits `keyHash`. Concurrent presentations of one token share
   * one swap; a token already credited returns its key without touching the mint. With `door`,
   * proofs locked to that door's key are accepted too, and always swapped at the mint (never taken
   * offline, so no proof locked to a door key is ever stored and only this swap needs that key).
   */
  redeem(info: TokenInfo, keyHash: string, door?: P2pkKey): Promise<KeyRow> {
    const running = this.#inflight.get(info.hash);
    if (running) {
      if (running.keyHash === keyHash) return running.done;
      // The same token is being redeemed for another key: once that settles, decide afresh.
      return running.done.then(
        () => this.redeem(info, keyHash, door),
        () => this.redeem(info, keyHash, door),
      );
    }
    const done = (info.foreign ? this.#redeemForeign(info, keyHash, door) : this.#redeem(info, keyHash, true, door)).finally(() => this.#inflight.delete(info.hash));
    this.#inflight.set(info.hash, { keyHash, done });
    return done;
  }

  async #redeemForeign(info: TokenInfo, keyHash: string, door?: P2pkKey): Promise<KeyRow> {
    if (!this.foreign || door) throw new CashuError('untrusted_mint', `Tokens from mint ${JSON.stringify(info.mint)} are not accepted here; accepted mints: ${this.mints.join(', ')}.`);
    return this.foreign.redeem(info, keyHash);
  }

  /** Waits for, or settles, a journaled operation someone else started (see #awaitOp). */
  settleOp(opId: string): Promise<'done' | 'failed' | 'pending'> {
    return this.#awaitOp(opId);
  }

  async #redeem(info: TokenInfo, keyHash: string, retry: boolean, door?: P2pkKey): Promise<KeyRow> {
    const known = await this.#ledger.getToken(info.hash);
    if (known) return this.#fromExisting(info, keyHash, known.keyHash, known.opId, known.state, retry, door);

    let wallet = await this.#walletOr503(info.mint, info.unit);
    let decoded;
    try {
      decoded = this.#decode(wallet, info);
    } catch (e) {
      // An id the mint did not list when we loaded it may be a keyset it has since rotated in.
      if (!(e instanceof CashuError) || e.code !== 'unknown_keyset') throw e;
      const fresh = await this.#reloaded(info.mint, info.unit);
      if (!fresh) throw e;
      wallet = fresh;
      decoded = this.#decode(wallet, info);
    }
    const doorKey = door?.pubkey.slice(2).toLowerCase();
    if (decoded.proofs.some((p) => { const k = lockedTo(p); return k !== undefined && k !== doorKey && this.#doorLocks.has(k); })) {
      // Refused before anything is journaled or sent: the token stays whole for the door it was made for.
      throw new CashuError('cashu_token_wrong_door', "This token is locked to the gateway's Nostr key: it pays Nostr jobs only.");
    }
    if (!door && this.#offlineAcceptable(wallet, decoded.proofs, info.unit)) {
      const proofs = decoded.proofs.map(toStored);
      const outcome = await this.#ledger.acceptLocked({
        tokenHash: info.hash,
        keyHash,
        mint: info.mint,
        unit: info.unit,
        proofs,
        creditMsats: sum(proofs) * MSATS_PER[info.unit],
      });
      if (outcome === 'replayed') {
        throw new CashuError('cashu_token_already_spent', 'This Cashu token has already been spent.');
      }
      if (outcome === 'accepted') {
        this.#log.info({ mint: info.mint, unit: info.unit, msats: sum(proofs) * MSATS_PER[info.unit], key: keyHash.slice(0, 8), locked: true }, 'credited a token');
        this.#sweepSoon();
      }
      const t = (await this.#ledger.getToken(info.hash))!;
      return this.#fromExisting(info, keyHash, t.keyHash, t.opId, t.state, retry);
    }
    let preview: SwapPreview;
    try {
      // The swap is what proves these proofs; checking their DLEQs first (cashu-ts does whenever
      // they are present) would only cost four curve multiplications each.
      // The token may name the mint by an alias; inspectToken already decided which mint it is.
      preview = await wallet.prepareSwapToReceive({ ...decoded, mint: wallet.mint.mintUrl, proofs: decoded.proofs.map(({ dleq: _, ...p }) => p) }, undefined, nativeOutputs);
    } catch (e) {
      throw new CashuError('invalid_cashu_token', `The Cashu token is not valid: ${(e as Error).message}`);
    }
    const opId = randomUUID();
    const outputs: JournaledOutput[] = (preview.keepOutputs ?? []).map((o) => ({ send: false, o: OutputData.serialize(o) }));
    const started = await this.#ledger.startRedemption({
      tokenHash: info.hash,
      keyHash,
      opId,
      mint: info.mint,
      unit: info.unit,
      inputs: preview.inputs.map(toStored),
      outputs,
    });
    if ('replayed' in started) {
      throw new CashuError('cashu_token_already_spent', 'This Cashu token has already been spent.');
    }
    if (!started.started) {
      const t = started.token;
      return this.#fromExisting(info, keyHash, t.keyHash, t.opId, t.state, retry, door);
    }

    let keep: Proof[];
    try {
      crashPoint('redeem:before-swap');
      // Our key signs inputs locked to it; it is ignored for ordinary proofs.
      keep = (await wallet.completeSwap(preview, door ? [door.privkey, this.p2pk.privkey] : this.p2pk.privkey)).keep;
      crashPoint('redeem:after-swap');
      this.#mintUp(info.mint);
    } catch (e) {
      if (isMintOperationError(e)) {
        await this.#ledger.abandonRedemption(info.hash, opId);
        this.#log.info({ mint: info.mint, code: e.code, err: e.message }, 'the mint refused a token');
        if (e.code === SPENT || e.code === PENDING) {
          throw new CashuError('cashu_token_already_spent', 'This Cashu token has already been spent.');
        }
        throw new CashuError('invalid_cashu_token', `The mint refused the token: ${e.message}`);
      }
      if (neverSent(e)) {
        await this.#ledger.abandonRedemption(info.hash, opId);
        this.#mintDown(info.mint, e);
        throw mintUnreachable();
      }
      // The swap may have happened, or may still happen, with its answer lost.
      this.#log.warn({ op: opId, err: (e as Error).message }, 'swap failed without an answer');
      const outcome = await this.#recover(opId, false);
      if (outcome === 'done') return (await this.#ledger.getKey(keyHash))!;
      if (outcome === 'failed') throw new CashuError('cashu_token_already_spent', 'This Cashu token has already been spent.');
      throw await this.#stillOpen(opId);
    }
    const proofs = keep.map(toStored);
    const key = await this.#ledger.finishRedemption({
      tokenHash: info.hash,
      opId,
      proofs,
      creditMsats: sum(proofs) * MSATS_PER[info.unit],
    });
    crashPoint('redeem:after-commit');
    this.#log.info({ mint: info.mint, unit: info.unit, msats: sum(proofs) * MSATS_PER[info.unit], key: keyHash.slice(0, 8) }, 'credited a token');
    return key;
  }

  async #fromExisting(
    info: TokenInfo, keyHash: string, creditedTo: string, opId: string, state: 'redeeming' | 'credited', retry: boolean, door?: P2pkKey,
  ): Promise<KeyRow> {
    if (state === 'redeeming') {
      // Another process is redeeming it, or one crashed doing so: wait for, or settle, its outcome.
      const outcome = await this.#awaitOp(opId);
      if (outcome === 'failed' && retry) return this.#redeem(info, keyHash, false, door);
      if (outcome !== 'done') throw mintUnreachable();
    }
    if (creditedTo !== keyHash) {
      throw new CashuError('cashu_token_already_spent', 'This Cashu token has already been spent.');
    }
    return (await this.#ledger.getKey(keyHash))!;
  }

  /**
   * Pays out a key's whole refundable balance as a token (whole sats for a sat key; the msat
   * remainder stays on the key). A retry with nothing left to refund returns the last token.
   */
  async refund(keyHash: string): Promise<RefundRow> {
    return (await this.#refund(keyHash, true))!;
  }

  /**
   * Change after a one-shot request: the refundable balance as a token, or undefined if none.
   * With `lockTo` (a compressed pubkey) the token is P2PK-locked to it (NUT-11), so it can travel
   * in a public Nostr event and still be spendable only by its owner.
   */
  async change(keyHash: string, lockTo?: string): Promise<RefundRow | undefined> {
    return this.#refund(keyHash, false, lockTo);
  }

  async #refund(keyHash: string, retry: boolean, lockTo?: string): Promise<RefundRow | undefined> {
    // Sats the inputs must be worth beyond the refund (the swap's fee); once it cannot be had, no more tries.
    let extra = 0;
    let settled = false;
    for (let attempt = 1; ; attempt++) {
      const opId = randomUUID();
      const r = await this.#ledger.startRefund({ keyHash, opId, refundId: randomUUID(), mints: [...this.mints], ...(extra > 0 && { extra }) });
      switch (r.kind) {
        case 'no_key':
          throw new CashuError('invalid_api_key', 'Unknown API key.');
        case 'busy':
          throw new CashuError('request_in_progress', 'A request on this key is still running; retry when it ends.', { retryAfter: 2 });
        case 'no_liquidity':
          if (extra > 0) {
            // Not enough to pay for a better swap: the refund as first picked is still owed.
            this.#log.info({ amount: r.amount, extra, unit: r.unit }, 'no proofs to pay the swap fee of a refund; trying without');
            extra = 0;
            settled = true;
            continue;
          }
          this.#log.error({ amount: r.amount, unit: r.unit }, 'wallet cannot cover a refund');
          throw new CashuError('refund_unavailable', 'The gateway cannot pay this refund right now.', { retryAfter: 60 });
        case 'nothing': {
          if (!retry) return undefined;
          const latest = r.latest;
          if (latest?.state === 'pending') {
            await this.#awaitOp(latest.opId);
            const again = await this.#ledger.latestRefund(keyHash);
            if (again?.state === 'done') return again;
            if (!again || again.opId !== latest.opId) return this.#refund(keyHash, retry, lockTo);
            throw mintUnreachable();
          }
          if (latest) return latest;
          throw new CashuError('balance_too_low', 'There is no balance to refund on this key.');
        }
        case 'started': {
          const more = settled || attempt > 3 ? undefined : await this.#extraFor(r.refund, r.inputs, extra, lockTo);
          if (more !== undefined) {
            // Nothing was sent yet: put the proofs back and take ones worth the swap's fee too.
            await this.#ledger.abandonRefund(opId);
            extra = more;
            continue;
          }
          const paid = await this.#payRefund(r.refund, r.inputs, lockTo);
          this.#log.info({ mint: paid.mint, unit: paid.unit, msats: paid.msats, key: keyHash.slice(0, 8), state: paid.state }, retry ? 'refunded a balance' : 'paid change');
          return paid;
        }
      }
    }
  }

  /**
   * At a mint with input fees, whether a refund's inputs must be taken again worth `amount + extra`:
   * a swap must cover its own fee (the operator's cost, not the holder's), and proofs handed over
   * as they are cost their holder a fee each, so many small ones are swapped for the fewest proofs
   * of the amount when the holder would lose more than the swap costs. Undefined: pay with these.
   */
  async #extraFor(refund: RefundRow, inputs: StoredProof[], extra: number, lockTo?: string): Promise<number | undefined> {
    // A mint known to be down is not asked: proofs that need no swap can still be handed over.
    if (this.#unreachable.has(refund.mint)) return undefined;
    let wallet: Wallet;
    try {
      wallet = await this.wallet(refund.mint, refund.unit);
    } catch {
      return undefined;
    }
    const { amount } = refund;
    const fee = wallet.getFeesForProofs(inputs.map(toProof)).toNumber();
    if (fee === 0) return undefined;
    if (sum(inputs) !== amount || inputs.some(isLocked) || lockTo) {
      return sum(inputs) >= amount + fee ? undefined : fee;
    }
    if (extra > 0) return undefined;
    const keyset = wallet.keyChain.getCheapestKeyset();
    const feeFor = (n: number) => wallet.getFeesForKeyset(n, keyset.id).toNumber();
    const saving = fee - feeFor(splitAmount(amount, keyset.keys).length);
    if (saving <= 0) return undefined;
    const cost = await this.#swapCost(refund, inputs, feeFor);
    return cost !== undefined && cost < saving ? cost : undefined;
  }

  /** The fee of a swap from the fewest proofs we hold that pay `refund` and that fee too. */
  async #swapCost(refund: RefundRow, inputs: StoredProof[], feeFor: (n: number) => number): Promise<number | undefined> {
    const counts = await this.#ledger.unspentCounts(refund.mint, refund.unit, true);
    // The inputs are set aside for this refund, so not among those held: they are ours to use.
    for (const p of inputs) counts.set(p.amount, (counts.get(p.amount) ?? 0) + 1);
    let cost = 1;
    for (let i = 0; i < 8; i++) {
      const plan = pickPlan([...counts], refund.amount + cost, true);
      if (!plan) return undefined;
      let n = 0;
      for (const k of plan.values()) n += k;
      if (feeFor(n) <= cost) return cost;
      cost = feeFor(n);
    }
    return undefined;
  }

  /**
   * Mints the ecash a paid NUT-04 quote is owed to the gateway and credits `keyHash`, through the
   * same journaled path as a token: outputs written first, signatures recoverable (NUT-09).
   * Returns undefined while the quote is unpaid.
   */
  async redeemQuote(q: { mint: string; unit: Unit; quote: string; amount: number; keyHash: string }): Promise<KeyRow | undefined> {
    const tokenHash = tokenHashOfQuote(q.mint, q.quote);
    const known = await this.#ledger.getToken(tokenHash);
    if (known?.state === 'credited') return this.#ledger.getKey(known.keyHash);
    if (known && (await this.#awaitOp(known.opId)) !== 'failed') {
      const again = await this.#ledger.getToken(tokenHash);
      return again?.state === 'credited' ? this.#ledger.getKey(again.keyHash) : undefined;
    }
    const wallet = await this.#walletOr503(q.mint, q.unit);
    const state = (await wallet.checkMintQuoteBolt11(q.quote)).state;
    if (state !== 'PAID') return undefined;
    const preview = await wallet.prepareMint('bolt11', q.amount, { quote: q.quote }, undefined, nativeOutputs);
    const opId = randomUUID();
    const started = await this.#ledger.startRedemption({
      tokenHash,
      keyHash: q.keyHash,
      opId,
      mint: q.mint,
      unit: q.unit,
      inputs: [],
      outputs: preview.outputData.map((o) => ({ send: false, o: OutputData.serialize(o) })),
    });
    if (!started.started) return this.redeemQuote(q);
    let proofs: StoredProof[];
    try {
      proofs = (await wallet.completeMint(preview)).map(toStored);
    } catch (e) {
      if (neverSent(e) || (isMintOperationError(e) && e.code !== 20002)) {
        await this.#ledger.abandonRedemption(tokenHash, opId);
        throw isMintOperationError(e) ? new CashuError('mint_quote_failed', e.message) : mintUnreachable();
      }
      if ((await this.#recover(opId, false)) === 'done') return this.#ledger.getKey(q.keyHash);
      throw await this.#stillOpen(opId);
    }
    return this.#ledger.finishRedemption({ tokenHash, opId, proofs, creditMsats: sum(proofs) * MSATS_PER[q.unit] });
  }

  /** The operator's earnings as a token, booked in the same transaction that sets the proofs aside. */
  async withdraw(): Promise<RefundRow | undefined> {
    const r = await this.#ledger.startWithdraw({ opId: randomUUID(), refundId: randomUUID(), mints: [...this.mints] });
    if (r.kind === 'nothing') return undefined;
    if (r.kind === 'no_liquidity') {
      throw new CashuError('refund_unavailable', `The wallet holds no proofs that can pay ${r.amount} ${r.unit} of earnings.`);
    }
    return this.#payRefund(r.refund, r.inputs);
  }

  /**
   * Pays a Lightning invoice from the operator's earnings by melting proofs (NUT-05) at the first
   * trusted mint that quotes it and holds enough. The amount and the fee reserve are booked before
   * anything is sent, and the blank outputs for the fee change (NUT-08) are journaled before the
   * mint is called, so an interruption is settled from the quote's state. With `payer`, a key's
   * balance pays instead (a refund to Lightning, see lightning-refund.ts), in the key's unit.
   */
  async melt(invoice: string, payer?: { keyHash: string; unit: Unit }): Promise<MeltRow> {
    let earnings: number | undefined;
    let needMsats = 0;
    let quoted = false;
    let refusal: string | undefined;
    for (const mint of this.mints) {
      for (const unit of payer ? [payer.unit] : (['sat', 'msat'] as const)) {
        let wallet: Wallet;
        let quote: MeltQuoteBolt11Response;
        try {
          wallet = await this.wallet(mint, unit);
          quote = await wallet.createMeltQuoteBolt11(invoice);
        } catch (e) {
          if (isMintOperationError(e)) refusal = e.message;
          continue;
        }
        quoted = true;
        const amount = quote.amount.toNumber();
        const base = amount + quote.fee_reserve.toNumber();
        let need = base;
        for (let attempt = 0; attempt < 4; attempt++) {
          const opId = randomUUID();
          const r = await this.#ledger.startMelt({ opId, meltId: randomUUID(), mint, unit, quote: quote.quote, request: invoice, amount, need, ...(payer && { keyHash: payer.keyHash }) });
          if (r.kind === 'no_key') throw new CashuError('invalid_api_key', 'Unknown API key.');
          if (r.kind === 'busy') {
            throw new CashuError('request_in_progress', 'A request on this key is still running; retry when it ends.', { retryAfter: 2 });
          }
          if (r.kind === 'short') [earnings, needMsats] = [r.earnings, need * MSATS_PER[unit]];
          if (r.kind !== 'started') break;
          // The mint's input fee depends on the proofs taken: if it was not allowed for, take again.
          const inputFee = wallet.getFeesForProofs(r.inputs.map(toProof)).toNumber();
          if (need < base + inputFee) {
            await this.#ledger.abandonMelt(opId);
            need = base + inputFee;
            continue;
          }
          return this.#payMelt(wallet, quote, r.melt, r.inputs);
        }
      }
    }
    if (!quoted) {
      throw refusal
        ? new CashuError('invoice_rejected', `The mint will not pay this invoice: ${refusal}`)
        : mintUnreachable();
    }
    if (earnings !== undefined && payer) {
      throw new CashuError('balance_too_low', `The balance (${earnings} msats) does not cover this invoice with its fee reserve (${needMsats} msats).`, {
        extra: { balance_msats: earnings, needed_msats: needMsats },
      });
    }
    if (earnings !== undefined) {
      throw new CashuError('earnings_too_low', `The earnings (${earnings} msats) do not cover this invoice with its fee reserve.`);
    }
    throw new CashuError('withdraw_unavailable', 'No mint holds proofs enough to pay this invoice with its fee reserve.');
  }

  async #payMelt(wallet: Wallet, quote: MeltQuoteBolt11Response, melt: MeltRow, inputs: StoredProof[]): Promise<MeltRow> {
    const { opId } = melt;
    let outputs: JournaledOutput[];
    let preview;
    try {
      preview = await wallet.prepareMelt('bolt11', quote, inputs.map(toProof), undefined, nativeOutputs);
      outputs = preview.outputData.map((o) => ({ send: false, o: OutputData.serialize(o as OutputData) }));
    } catch (e) {
      await this.#ledger.abandonMelt(opId);
      throw new CashuError('withdraw_failed', `The melt could not be prepared: ${(e as Error).message}`);
    }
    await this.#ledger.journalOutputs(opId, outputs, inputs);
    let state: string;
    try {
      crashPoint('melt:before-melt');
      const res = await wallet.completeMelt(preview, inputs.some(isLocked) ? this.p2pk.privkey : undefined);
      crashPoint('melt:after-melt');
      if (res.quote.state === 'PAID') {
        return await this.#ledger.finishMelt({ opId, change: res.change.map(toStored), preimage: res.quote.payment_preimage ?? null });
      }
      state = res.quote.state;
    } catch (e) {
      if (neverSent(e)) {
        await this.#ledger.abandonMelt(opId);
        throw mintUnreachable();
      }
      // A refusal is final unless the quote says otherwise; a timeout proves nothing either way.
      const outcome = await this.#recover(opId, isMintOperationError(e));
      if (outcome === 'done') return (await this.#ledger.meltOfOp(opId))!;
      if (outcome === 'failed') throw new CashuError('payment_failed', `The invoice was not paid: ${(e as Error).message}`);
      throw await this.#stillOpen(opId);
    }
    // Unpaid is the mint's answer that the payment failed: settled now. In flight (pending): wait
    // a little, then leave it to recovery, which settles it either way.
    const wait = state === 'UNPAID' ? 0 : Math.min(10_000, this.#leaseMs);
    if (wait === 0 && (await this.#recover(opId, true)) === 'failed') {
      throw new CashuError('payment_failed', 'The invoice was not paid; nothing was spent.');
    }
    for (const until = Date.now() + wait; Date.now() < until; ) {
      await new Promise((r) => setTimeout(r, 250));
      const outcome = await this.#recover(opId, false);
      if (outcome === 'done') return (await this.#ledger.meltOfOp(opId))!;
      if (outcome === 'failed') throw new CashuError('payment_failed', 'The invoice was not paid; nothing was spent.');
    }
    await this.#ledger.touchOp(opId);
    return (await this.#ledger.meltOfOp(opId))!;
  }

  /**
   * Settles a journaled melt from its quote: paid means the change is ours (from the quote, or
   * restored from the journaled blanks); unpaid with the inputs unspent means nothing was spent.
   */
  async #recoverMelt(op: MintOp, wallet: Wallet, abandonIfUnspent: boolean): Promise<'done' | 'failed' | 'pending'> {
    const melt = (await this.#ledger.meltOfOp(op.id))!;
    const quote = await wallet.checkMeltQuoteBolt11(melt.quote);
    if (quote.state === 'PENDING') return 'pending';
    if (quote.state === 'PAID') {
      let blanks = (op.outputs as JournaledOutput[]).map((j) => NativeOutputData.from(OutputData.deserialize(j.o)));
      let signatures: SerializedBlindedSignature[] = quote.change ?? [];
      if (signatures.length === 0 && blanks.length > 0) {
        const restored = await wallet.mint.restore({ outputs: blanks.map((o) => o.blindedMessage) });
        const byB = new Map(blanks.map((o) => [o.blindedMessage.B_, o]));
        blanks = restored.outputs.map((o) => byB.get(o.B_)!);
        signatures = restored.signatures;
      }
      const change = wallet.createMeltChangeProofs(blanks, signatures).map(toStored);
      await this.#ledger.finishMelt({ opId: op.id, change, preimage: quote.payment_preimage ?? null });
      return 'done';
    }
    const states = await wallet.checkProofsStates(op.inputs.map((p) => ({ secret: p.secret, id: p.id })));
    if (states.some((s) => s.state === 'PENDING')) return 'pending';
    const spent = op.inputs.filter((_, i) => states[i]?.state === 'SPENT');
    if (spent.length > 0) {
      this.#log.error({ op: op.id }, 'melt inputs spent elsewhere while the quote is unpaid');
      await this.#ledger.markSpent(spent.map((p) => p.secret));
    } else if (!abandonIfUnspent) {
      return 'pending';
    }
    await this.#ledger.abandonMelt(op.id);
    return 'failed';
  }

  async #payRefund(refund: RefundRow, inputs: StoredProof[], lockTo?: string): Promise<RefundRow> {
    const { mint, unit, amount, opId } = refund;
    crashPoint('refund:after-debit');
    // Our own proofs that add up exactly are handed over as they are: no mint call at all. Proofs
    // locked to our key are useless to anyone else, and change to lock needs new outputs: swap.
    if (sum(inputs) === amount && !inputs.some(isLocked) && !lockTo) {
      const token = getEncodedToken({ mint, unit, proofs: inputs.map(toProof) });
      const done = await this.#ledger.finishRefund({ opId, token, sent: inputs, keep: [] });
      crashPoint('refund:after-commit');
      return done;
    }
    let wallet: Wallet;
    try {
      wallet = await this.wallet(mint, unit);
    } catch (e) {
      await this.#ledger.abandonRefund(opId);
      this.#mintDown(mint, e);
      throw mintUnreachable();
    }
    let preview: SwapPreview;
    try {
      // The token is worth exactly what was booked; redeeming it costs the holder the mint's fee,
      // as any token from that mint does, whichever way the refund was made.
      preview = await wallet.prepareSwapToSend(
        amount,
        inputs.map(toProof),
        { includeFees: false, proofsWeHave: await this.#proofsWeHave(mint, unit) },
        { send: lockTo ? nativeLockedOutputs(lockTo) : nativeOutputs, keep: nativeOutputs },
      );
    } catch (e) {
      // Nothing was sent: these inputs cannot make this payout (say, too little for the mint's fee).
      await this.#ledger.abandonRefund(opId);
      this.#log.error({ mint, amount, inputs: sum(inputs), err: (e as Error).message }, 'refund swap could not be prepared');
      throw new CashuError('refund_unavailable', `The refund could not be prepared: ${(e as Error).message}; your balance is unchanged.`);
    }
    const outputs: JournaledOutput[] = [
      ...(preview.sendOutputs ?? []).map((o) => ({ send: true, o: OutputData.serialize(o) })),
      ...(preview.keepOutputs ?? []).map((o) => ({ send: false, o: OutputData.serialize(o) })),
    ];
    await this.#ledger.journalOutputs(opId, outputs, preview.inputs.map(toStored));
    try {
      crashPoint('refund:before-swap');
      const { send, keep } = await wallet.completeSwap(preview, this.p2pk.privkey);
      crashPoint('refund:after-swap');
      this.#mintUp(mint);
      const token = getEncodedToken({ mint, unit, proofs: send });
      // cashu-ts hands back the proofs it left out of the swap among `keep`; they are stored already.
      const unselected = new Set((preview.unselectedProofs ?? []).map((p) => p.secret));
      const done = await this.#ledger.finishRefund({
        opId,
        token,
        sent: send.map(toStored),
        keep: keep.filter((p) => !unselected.has(p.secret)).map(toStored),
      });
      crashPoint('refund:after-commit');
      return done;
    } catch (e) {
      if (isMintOperationError(e)) {
        this.#log.error({ op: opId, code: e.code, err: e.message }, 'mint refused a refund swap');
        await this.#ledger.abandonRefund(opId);
        throw new CashuError('refund_unavailable', 'The mint refused the refund; your balance is unchanged.');
      }
      if (neverSent(e)) {
        await this.#ledger.abandonRefund(opId);
        this.#mintDown(mint, e);
        throw mintUnreachable();
      }
      const outcome = await this.#recover(opId, false);
      if (outcome === 'done') return (await this.#ledger.latestRefund(refund.keyHash))!;
      throw await this.#stillOpen(opId);
    }
  }

  /**
   * Redeems the locked proofs taken offline, in batches, with our key: until then they are only
   * as good as the lock, so this runs well before any locktime.
   */
  async sweepLocked(batch = 100): Promise<number> {
    let swept = 0;
    for (const mint of this.mints) {
      for (const unit of ['sat', 'msat'] as const) {
        for (;;) {
          const opId = randomUUID();
          const inputs = await this.#ledger.startSweep({ opId, mint, unit, limit: batch });
          if (inputs.length === 0) break;
          // One mint or unit failing must not stop the others from being swept.
          if (!(await this.#sweep(opId, mint, unit, inputs))) break;
          swept += inputs.length;
        }
      }
    }
    return swept;
  }

  /**
   * Redeems locked proofs shortly after they arrive, off the request path: one sweep at a time,
   * batching whatever arrives meanwhile. The sweep also tops up the change float.
   */
  #sweepSoon(): void {
    if (this.#sweepDelayMs <= 0 || this.#sweepTimer) return;
    if (this.#sweeping) {
      this.#sweepAgain = true;
      return;
    }
    this.#sweepTimer = setTimeout(() => {
      this.#sweepTimer = undefined;
      this.#sweeping = this.sweepLocked()
        .then(() => undefined, (e: Error) => this.#log.error({ err: e.message }, 'sweep failed'))
        .finally(() => {
          this.#sweeping = undefined;
          if (this.#sweepAgain) {
            this.#sweepAgain = false;
            this.#sweepSoon();
          }
        });
    }, this.#sweepDelayMs);
    this.#sweepTimer.unref();
  }

  /**
   * The unspent proofs we hold, as cashu-ts wants them to split what we keep: it tops up each
   * denomination to the wallet's `denominationTarget` first, smallest first (the change float).
   */
  async #proofsWeHave(mint: string, unit: Unit): Promise<Array<{ amount: number }> | undefined> {
    if (this.#changeFloat <= 0) return undefined;
    // cashu-ts shapes the split only when told of some proof; a zero amount matches no denomination.
    const have: Array<{ amount: number }> = [{ amount: 0 }];
    for (const [amount, n] of await this.#ledger.unspentCounts(mint, unit)) {
      for (let i = 0; i < Math.min(n, this.#changeFloat); i++) have.push({ amount });
    }
    return have;
  }

  async #sweep(opId: string, mint: string, unit: Unit, inputs: StoredProof[]): Promise<boolean> {
    let wallet: Wallet;
    let preview: SwapPreview;
    try {
      wallet = await this.wallet(mint, unit);
      const proofsWeHave = await this.#proofsWeHave(mint, unit);
      preview = await wallet.prepareSwapToReceive(inputs.map(toProof), proofsWeHave && { proofsWeHave }, nativeOutputs);
    } catch (e) {
      await this.#ledger.abandonSweep(opId);
      this.#log.warn({ mint, err: (e as Error).message }, 'locked proofs not redeemed this time');
      return false;
    }
    const outputs: JournaledOutput[] = (preview.keepOutputs ?? []).map((o) => ({ send: false, o: OutputData.serialize(o) }));
    await this.#ledger.journalOutputs(opId, outputs, inputs);
    try {
      const { keep } = await wallet.completeSwap(preview, this.p2pk.privkey);
      await this.#ledger.finishSweep(opId, keep.map(toStored));
      return true;
    } catch (e) {
      if (neverSent(e)) {
        await this.#ledger.abandonSweep(opId);
        return false;
      }
      if (isMintOperationError(e)) this.#log.error({ op: opId, code: e.code, err: e.message }, 'mint refused to redeem locked proofs');
      // A refusal is final: recovery marks the inputs the mint says are spent, so the next sweep
      // does not pick them again, and puts the others back.
      const outcome = await this.#recover(opId, isMintOperationError(e));
      if (outcome === 'pending') await this.#ledger.touchOp(opId);
      return outcome === 'done';
    }
  }

  /** Resolves every journaled swap left unfinished by a crash (ops whose lease has run out). */
  async recoverAll(): Promise<void> {
    for (const op of await this.#ledger.pendingOps()) {
      if (Date.now() - op.updatedAt < this.#leaseMs) continue;
      const outcome = await this.#recover(op.id, true);
      this.#log.info({ op: op.id, kind: op.kind, outcome }, 'recovered journaled mint operation');
    }
  }

  /**
   * Waits a little for an operation another request or instance is running; once its lease has
   * run out (its owner crashed or gave up long ago) settles it with the mint.
   */
  async #awaitOp(opId: string): Promise<'done' | 'failed' | 'pending'> {
    const until = Date.now() + 5_000;
    for (;;) {
      const op = await this.#ledger.getOp(opId);
      if (!op || op.state !== 'pending') return op?.state ?? 'failed';
      if (Date.now() - op.updatedAt >= this.#leaseMs) return this.#recover(opId, true);
      if (Date.now() > until) return 'pending';
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Keeps an op whose swap may still land out of everyone's hands for a lease, and says so. */
  async #stillOpen(opId: string): Promise<CashuError> {
    await this.#ledger.touchOp(opId);
    return mintUnreachable(Math.ceil(this.#leaseMs / 1000));
  }

  /**
   * Asks the mint what became of a journaled swap: signatures it holds for our outputs (NUT-09)
   * finish the operation; inputs still unspent (NUT-07) mean it never happened.
   */
  async #recover(opId: string, abandonIfUnspent: boolean): Promise<'done' | 'failed' | 'pending'> {
    const op = await this.#ledger.getOp(opId);
    if (!op || op.state !== 'pending') return op?.state ?? 'failed';
    if (op.kind === 'foreign') return this.foreign ? this.foreign.recover(op, abandonIfUnspent) : 'pending';
    if (op.outputs === null) {
      await this.#abandon(op);
      return 'failed';
    }
    try {
      const wallet = await this.wallet(op.mint, op.unit);
      if (op.kind === 'melt') return await this.#recoverMelt(op, wallet, abandonIfUnspent);
      const journaled = (op.outputs as JournaledOutput[]).map((j) => ({ send: j.send, o: NativeOutputData.from(OutputData.deserialize(j.o)) }));
      const { outputs, signatures } = await wallet.mint.restore({ outputs: journaled.map((j) => j.o.blindedMessage) });
      if (signatures.length > 0) {
        const sigByB = new Map(outputs.map((o, i) => [o.B_, signatures[i]!]));
        const send: StoredProof[] = [];
        const keep: StoredProof[] = [];
        for (const j of journaled) {
          const sig = sigByB.get(j.o.blindedMessage.B_);
          if (!sig) continue;
          const proof = toStored(j.o.toProof(sig, wallet.keyChain.getKeyset(sig.id)));
          (j.send ? send : keep).push(proof);
        }
        await this.#complete(op, send, keep);
        return 'done';
      }
      // A quote minted to us has no inputs: without signatures, it may be minted again once released.
      if (op.inputs.length === 0) {
        if (!abandonIfUnspent) return 'pending';
        await this.#abandon(op);
        return 'failed';
      }
      const states = await wallet.checkProofsStates(op.inputs.map((p) => ({ secret: p.secret, id: p.id })));
      if (states.some((s) => s.state === 'PENDING')) return 'pending';
      const spent = op.inputs.filter((_, i) => states[i]?.state === 'SPENT');
      if (spent.length > 0) {
        // Spent, and not by this swap: whoever holds those proofs spent them. They are gone.
        if (op.kind !== 'receive') this.#log.error({ op: op.id, kind: op.kind }, 'inputs spent elsewhere and no signatures to restore');
        await this.#ledger.markSpent(spent.map((p) => p.secret));
      } else if (!abandonIfUnspent) {
        // Nothing happened yet, but the swap we sent may still arrive: leave it open.
        return 'pending';
      }
      await this.#abandon(op);
      return 'failed';
    } catch (e) {
      this.#log.warn({ op: op.id, err: (e as Error).message }, 'mint operation still unresolved');
      return 'pending';
    }
  }

  async #complete(op: MintOp, send: StoredProof[], keep: StoredProof[]): Promise<void> {
    if (op.kind === 'sweep') return this.#ledger.finishSweep(op.id, [...send, ...keep]);
    if (op.kind === 'receive') {
      const proofs = [...send, ...keep];
      await this.#ledger.finishRedemption({
        tokenHash: op.tokenHash!,
        opId: op.id,
        proofs,
        creditMsats: sum(proofs) * MSATS_PER[op.unit],
      });
      return;
    }
    const token = getEncodedToken({ mint: op.mint, unit: op.unit, proofs: send.map(toProof) });
    await this.#ledger.finishRefund({ opId: op.id, token, sent: send, keep });
  }

  async #abandon(op: MintOp): Promise<void> {
    if (op.kind === 'sweep') await this.#ledger.abandonSweep(op.id);
    else if (op.kind === 'melt') await this.#ledger.abandonMelt(op.id);
    else if (op.kind === 'receive') await this.#ledger.abandonRedemption(op.tokenHash!, op.id);
    else await this.#ledger.abandonRefund(op.id);
  }
}
