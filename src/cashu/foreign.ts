import { randomUUID } from 'node:crypto';
import {
  JSONInt,
  Mint,
  MintOperationError,
  OutputData,
  Wallet,
  isMintOperationError,
  type Proof,
  type RequestFn,
  type SerializedBlindedSignature,
  type SerializedOutputData,
} from '@cashu/cashu-ts';
import type { Logger } from 'pino';
import { CashuError } from './errors.ts';
import { MSATS_PER, type KeyRow, type Ledger, type MintOp, type StoredProof, type TokenRow, type Unit } from '../ledger/ledger.ts';
import { PeerError, type PeerFetch } from '../net/peer-fetch.ts';
import { crashPoint } from './crash.ts';
import { NativeOutputData, nativeOutputs } from './dleq.ts';
import type { TokenInfo } from './token.ts';
import type { CashuWallets, ForeignIntake } from './wallet.ts';
import { toStored } from './proofs.ts';

/**
 * What a Lightning swap from an untrusted mint journals before the foreign mint is asked to melt:
 * enough to ask both mints, after a crash, what became of it.
 */
interface ForeignJournal {
  foreignMint: string;
  /** The melt quote at the foreign mint, paying `mintQuote`'s invoice. */
  meltQuote: string;
  /** The mint quote at the trusted mint (op.mint) whose invoice the melt pays. */
  mintQuote: string;
  /**
   * When that quote expires (unix seconds), as the trusted mint said on creating it: nutshell
   * says so only then. Absent in swaps journaled before it was kept.
   */
  mintQuoteExpiry?: number | null;
  amount: number;
  /** The token's proofs, the foreign mint's, never ours: kept to ask the foreign mint their state (NUT-07). */
  proofs: StoredProof[];
  /** Blank outputs for minting `amount` at the trusted mint, restorable there (NUT-09). */
  outputs: SerializedOutputData[];
}

export interface ForeignRules {
  maxFeePercent: number;
  minFeeSats: number;
  cooldownMs: number;
  /** Swaps from one mint's host in flight or pending at once. */
  maxPending: number;
  /** Swaps from all other mints in flight or pending at once: host names are free to a stranger too. */
  maxPendingTotal: number;
  /** How long past its expiry the trusted mint's unpaid invoice is still waited for. */
  expiryMarginMs: number;
  /** How long one recovery pass spends on foreign swaps, after the gateway's own operations. */
  recoveryBudgetMs: number;
}

/** A swap journaled and ready for its melt. */
interface Begun {
  opId: string;
  journal: ForeignJournal;
  foreign: Wallet;
  proofs: Proof[];
}

/** How often the mint quote is re-read before leaving it to recovery, once the melt is paid. */
const MINT_WAIT_MS = 10_000;
/** Foreign mints remembered as failed at most. */
const FAILED_MAX = 1000;
/** Melt quotes asked for until the fee reserve fits in the token. */
const QUOTE_ATTEMPTS = 3;
/** Foreign swaps settled in one recovery pass at most; the rest wait for the next. */
const RECOVER_PER_PASS = 50;

/**
 * cashu-ts's request function for a mint a stranger named: every call goes through the peer rules
 * (https only, public addresses only after resolution, no redirects, bounded size and time), and a
 * mint's protocol error keeps its NUT code, as cashu-ts's error contract asks.
 */
export function peerRequest(peers: PeerFetch): RequestFn {
  return async <T>(args: Parameters<RequestFn>[0]): Promise<T> => {
    const body = args.requestBody ? JSONInt.stringify(args.requestBody) : undefined;
    const headers: Record<string, string> = { accept: 'application/json', ...(body !== undefined && { 'content-type': 'application/json' }) };
    const res = await peers.send(args.endpoint, { method: (args.method ?? 'GET').toUpperCase(), ...(body !== undefined && { body }), headers });
    let json: unknown;
    try {
      json = JSONInt.parse(res.text);
    } catch {
      throw new PeerError('not_json', 'the mint answered something that is not JSON');
    }
    if (res.status >= 400) {
      const e = json as { code?: unknown; detail?: unknown };
      if (res.status === 400 && typeof e.code === 'number' && typeof e.detail === 'string') throw new MintOperationError(e.code, e.detail);
      throw new PeerError('status', `the mint answered ${res.status}`);
    }
    if (typeof json !== 'object' || json === null) throw new PeerError('bad_answer', 'the mint answered something that is not an object');
    return json as T;
  };
}

function findPeerError(e: unknown): PeerError | undefined {
  for (let c: unknown = e, i = 0; c && i < 6; c = (c as { cause?: unknown }).cause, i++) if (c instanceof PeerError) return c;
  return undefined;
}

function unusable(mint: string, e: PeerError, retryAfterSec?: number): CashuError {
  return new CashuError('foreign_mint_unusable', `The mint ${mint} could not be used: ${e.message}. Your token was not spent.`, {
    extra: { reason: e.reason },
    ...(retryAfterSec !== undefined && { retryAfter: retryAfterSec }),
  });
}

const spent = () => new CashuError('cashu_token_already_spent', 'This Cashu token has already been spent.');

function inFlight(retryAfterSec: number): CashuError {
  return new CashuError('foreign_swap_pending', 'The Lightning swap from your mint is still in flight; send the same token again shortly to be credited.', {
    retryAfter: retryAfterSec,
  });
}

function busy(mint: string, retryAfterSec: number, all = false): CashuError {
  const which = all ? 'other mints than its own' : `the mint ${mint}`;
  return new CashuError('foreign_mint_busy', `As many swaps from ${which} are in flight as are allowed at once. Your token was not spent; send it again later.`, {
    retryAfter: retryAfterSec,
  });
}

const expired = () =>
  new CashuError('foreign_swap_expired', "Your token's mint did not pay the Lightning invoice before it expired, so nothing was credited. Ask your mint what became of the token.");

/** Swaps are bounded per host: a stranger's ports and paths are free, each a different "mint". */
function hostOf(mint: string): string {
  try {
    return new URL(mint).hostname;
  } catch {
    return mint;
  }
}

function sum(proofs: Array<{ amount: number }>): number {
  return proofs.reduce((s, p) => s + p.amount, 0);
}

/**
 * Tokens from mints outside CASHU_MINTS (FOREIGN_MINTS=swap): the token is melted at its own mint
 * to pay a mint quote at the first trusted mint, and what that mints is credited. The fee (the
 * foreign mint's input fee and Lightning fee reserve, whole: no change is asked of a mint the
 * gateway does not hold ecash of) comes out of the token and is capped. The op is journaled
 * before the melt; after a crash both quotes say what happened.
 */
export class ForeignSwaps implements ForeignIntake {
  readonly #ledger: Ledger;
  readonly #wallets: CashuWallets;
  readonly #peers: PeerFetch;
  readonly #log: Logger;
  readonly #rules: ForeignRules;
  readonly #request: RequestFn;
  /** Mints that failed, and why, until when: a stranger's dead or hostile mint is not asked again at once. */
  readonly #failed = new Map<string, { until: number; error: PeerError }>();
  readonly #leaseMs: number;
  /** Swaps being started, by host, not yet journaled: counted against the bound with the journaled ones. */
  readonly #starting = new Map<string, number>();
  #startingTotal = 0;

  constructor(deps: { ledger: Ledger; wallets: CashuWallets; peers: PeerFetch; log: Logger; leaseMs: number }, rules: ForeignRules) {
    this.#ledger = deps.ledger;
    this.#wallets = deps.wallets;
    this.#peers = deps.peers;
    this.#log = deps.log;
    this.#leaseMs = deps.leaseMs;
    this.#rules = rules;
    this.#request = peerRequest(deps.peers);
  }

  /** The most a swap of `total` (in `unit`) may cost: the percentage, or the floor for small tokens. */
  maxFee(total: number, unit: Unit): number {
    const floor = (this.#rules.minFeeSats * 1000) / MSATS_PER[unit];
    return Math.max(Math.floor((total * this.#rules.maxFeePercent) / 100), floor);
  }

  /** A call to the foreign mint; a peer failure puts the mint in the negative cache. */
  async #ask<T>(mint: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (e) {
      const pe = findPeerError(e);
      if (!pe) throw e;
      if (this.#rules.cooldownMs > 0) this.#rest(mint, pe);
      this.#log.info({ mint, reason: pe.reason, err: pe.message }, 'foreign mint unusable');
      throw unusable(mint, pe);
    }
  }

  /** Strangers choose the names, so the cache is bounded: the expired go first, then the oldest. */
  #rest(mint: string, error: PeerError): void {
    const now = Date.now();
    if (this.#failed.size >= FAILED_MAX) for (const [m, f] of this.#failed) if (f.until <= now) this.#failed.delete(m);
    while (this.#failed.size >= FAILED_MAX) this.#failed.delete(this.#failed.keys().next().value!);
    this.#failed.delete(mint);
    this.#failed.set(mint, { until: now + this.#rules.cooldownMs, error });
  }

  async #foreignWallet(mint: string, unit: Unit): Promise<Wallet> {
    // Refused before any connection: a URL that is not https, or names a private address.
    try {
      this.#peers.check(mint);
    } catch (e) {
      if (e instanceof PeerError) throw unusable(mint, e);
      throw e;
    }
    const wallet = new Wallet(new Mint(mint, { customRequest: this.#request }), { unit });
    // Its info first, alone: a mint that fails is asked one thing, not several at once.
    await this.#ask(mint, () => wallet.mint.getLazyMintInfo());
    await this.#ask(mint, () => wallet.loadMint());
    return wallet;
  }

  async redeem(info: TokenInfo, keyHash: string): Promise<KeyRow> {
    return this.#redeem(info, keyHash, true);
  }

  async #redeem(info: TokenInfo, keyHash: string, retry: boolean): Promise<KeyRow> {
    const known = await this.#ledger.getToken(info.hash);
    if (known) return this.#existing(info, keyHash, known, retry);
    const cooling = this.#failed.get(info.mint);
    if (cooling && cooling.until > Date.now()) throw unusable(info.mint, cooling.error, Math.ceil((cooling.until - Date.now()) / 1000));
    this.#failed.delete(info.mint);

    const host = hostOf(info.mint);
    const starting = this.#starting.get(host) ?? 0;
    const pending = await this.#pendingHosts();
    const here = pending.filter((h) => h === host).length;
    if (starting + here >= this.#rules.maxPending) {
      this.#log.info({ mint: info.mint, max: this.#rules.maxPending }, 'foreign mint at its bound of pending swaps');
      throw busy(info.mint, Math.ceil(this.#leaseMs / 1000));
    }
    if (this.#startingTotal + pending.length >= this.#rules.maxPendingTotal) {
      this.#log.info({ mint: info.mint, max: this.#rules.maxPendingTotal }, 'foreign mints at their bound of pending swaps in all');
      throw busy(info.mint, Math.ceil(this.#leaseMs / 1000), true);
    }
    this.#starting.set(host, starting + 1);
    this.#startingTotal++;
    let begun: Begun | { token: TokenRow };
    try {
      begun = await this.#begin(info, keyHash);
    } finally {
      this.#startingTotal--;
      const n = this.#starting.get(host)! - 1;
      if (n > 0) this.#starting.set(host, n);
      else this.#starting.delete(host);
    }
    if ('token' in begun) return this.#existing(info, keyHash, begun.token, retry);
    const { opId, journal, foreign, proofs } = begun;

    let paid = false;
    try {
      crashPoint('foreign:before-melt');
      paid = (await foreign.mint.meltBolt11({ quote: journal.meltQuote, inputs: proofs })).state === 'PAID';
      crashPoint('foreign:after-melt');
    } catch (e) {
      if (isMintOperationError(e)) {
        // A refusal is final unless the quote says otherwise: the proofs may have been spent meanwhile.
        this.#log.info({ mint: info.mint, code: e.code, err: e.message }, 'the foreign mint refused the melt');
        const outcome = await this.#settle((await this.#ledger.getOp(opId))!, true, foreign);
        if (outcome === 'expired') throw expired();
        if (outcome === 'failed') {
          const states = await foreign.checkProofsStates(proofs).catch(() => []);
          if (states.some((s) => s.state === 'SPENT')) throw spent();
          throw new CashuError('invalid_cashu_token', `The mint refused the token: ${e.message}`);
        }
      } else {
        // Sent, with its answer lost or refused by the peer rules: the melt may have happened.
        this.#log.warn({ op: opId, err: (e as Error).message }, 'foreign melt failed without an answer');
      }
    }
    for (const until = Date.now() + MINT_WAIT_MS; ; ) {
      // Paid: only the trusted mint's quote is left to read. Otherwise both quotes say what happened.
      const outcome = paid ? await this.#finish((await this.#ledger.getOp(opId))!, journal) : await this.#settle((await this.#ledger.getOp(opId))!, false, foreign);
      if (outcome === 'done') break;
      if (outcome === 'expired') throw expired();
      if (outcome === 'failed') throw spent();
      if (Date.now() > until) {
        await this.#ledger.touchOp(opId);
        throw inFlight(Math.ceil(this.#leaseMs / 1000));
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const row = (await this.#ledger.getToken(info.hash))!;
    this.#log.info({ mint: this.#wallets.mints[0], from: info.mint, unit: info.unit, msats: row.msats, fee_msats: info.msats - (row.msats ?? 0), key: keyHash.slice(0, 8) }, 'credited a token from another mint');
    return (await this.#ledger.getKey(keyHash))!;
  }

  /** The host of each swap journaled and still pending. */
  async #pendingHosts(): Promise<string[]> {
    const ops = await this.#ledger.pendingOps();
    return ops.filter((o) => o.kind === 'foreign').map((o) => hostOf((o.outputs as ForeignJournal[])[0]!.foreignMint));
  }

  /** Quotes both sides and journals the swap; or the redemption someone else journaled first. */
  async #begin(info: TokenInfo, keyHash: string): Promise<Begun | { token: TokenRow }> {
    const target = this.#wallets.mints[0]!;
    const unit = info.unit;
    const foreign = await this.#foreignWallet(info.mint, unit);
    let proofs: Proof[];
    try {
      proofs = foreign.decodeToken(info.token).proofs.map(({ dleq: _, ...p }) => p);
      // The token's unit is only its label: a proof of the mint's msat keyset called sat would count 1000x.
      if (proofs.some((p) => foreign.keyChain.getKeyset(p.id).unit !== unit)) throw new Error(`its proofs are not all of its mint's ${unit} keysets`);
    } catch (e) {
      throw new CashuError('invalid_cashu_token', `The Cashu token is not valid: ${(e as Error).message}`);
    }
    const stored = proofs.map(toStored);
    const total = sum(stored);
    const inputFee = foreign.getFeesForProofs(proofs).toNumber();
    const here = await this.#trusted(target, unit);

    // The fee reserve is only known for an invoice, and the invoice's amount depends on it.
    let reserve = 0;
    let picked: { amount: number; mintQuote: string; mintQuoteExpiry: number | null; meltQuote: string } | undefined;
    let needed = 0;
    for (let attempt = 0; attempt < QUOTE_ATTEMPTS && !picked; attempt++) {
      const amount = total - inputFee - reserve;
      if (amount <= 0) break;
      const mq = await here.createMintQuoteBolt11(amount).catch(() => { throw this.#targetDown(); });
      const melt = await this.#ask(info.mint, () => foreign.createMeltQuoteBolt11(mq.request)).catch((e: unknown) => {
        if (isMintOperationError(e)) throw new CashuError('foreign_mint_unusable', `The mint ${info.mint} will not pay out: ${e.message}. Your token was not spent.`, { extra: { reason: 'refused' } });
        throw e;
      });
      if (melt.amount.toNumber() !== amount) {
        throw unusable(info.mint, new PeerError('bad_answer', `it quoted ${melt.amount.toNumber()} for an invoice of ${amount}`));
      }
      const fee = melt.fee_reserve.toNumber();
      needed = amount + fee + inputFee;
      if (needed <= total) picked = { amount, mintQuote: mq.quote, mintQuoteExpiry: mq.expiry, meltQuote: melt.quote };
      else reserve = Math.max(fee, reserve + 1);
    }
    const per = MSATS_PER[unit];
    if (!picked) {
      throw new CashuError('foreign_mint_fee_too_high', `The token (${total * per} msats) does not cover its mint's Lightning fees. Your token was not spent.`, {
        extra: { token_msats: total * per, needed_msats: needed * per },
      });
    }
    const fee = total - picked.amount;
    const cap = this.maxFee(total, unit);
    if (fee > cap) {
      throw new CashuError('foreign_mint_fee_too_high', `Swapping this token from its mint would cost ${fee * per} msats, more than the ${cap * per} msats allowed. Your token was not spent.`, {
        extra: { foreign_mint_fee_msats: fee * per, max_fee_msats: cap * per },
      });
    }

    const preview = await here.prepareMint('bolt11', picked.amount, { quote: picked.mintQuote }, undefined, nativeOutputs);
    const journal: ForeignJournal = {
      foreignMint: info.mint,
      meltQuote: picked.meltQuote,
      mintQuote: picked.mintQuote,
      mintQuoteExpiry: picked.mintQuoteExpiry,
      amount: picked.amount,
      proofs: stored,
      outputs: preview.outputData.map((o) => OutputData.serialize(o as OutputData)),
    };
    const opId = randomUUID();
    const started = await this.#ledger.startRedemption({ kind: 'foreign', tokenHash: info.hash, keyHash, opId, mint: target, unit, inputs: [], outputs: [journal] });
    if ('replayed' in started) throw spent();
    if (!started.started) return { token: started.token };
    return { opId, journal, foreign, proofs };
  }

  async #existing(info: TokenInfo, keyHash: string, known: TokenRow, retry: boolean): Promise<KeyRow> {
    if (known.state === 'redeeming') {
      const outcome = await this.#wallets.settleOp(known.opId);
      if (outcome === 'failed' && retry) return this.#redeem(info, keyHash, false);
      if (outcome !== 'done') throw inFlight(2);
    }
    const again = (await this.#ledger.getToken(info.hash))!;
    if (again.keyHash !== keyHash) throw spent();
    return (await this.#ledger.getKey(keyHash))!;
  }

  async #trusted(mint: string, unit: Unit): Promise<Wallet> {
    try {
      return await this.#wallets.wallet(mint, unit);
    } catch {
      throw this.#targetDown();
    }
  }

  #targetDown(): CashuError {
    return new CashuError('cashu_mint_unreachable', 'The Cashu mint could not be reached; your token was not spent. Try again shortly.', { retryAfter: 5 });
  }

  /**
   * Foreign swaps left pending, settled after the gateway's own operations and within their own
   * bound (a time budget and a count), so that strangers' mints cannot hold up the recovery of
   * honest users' operations. The least recently looked at go first: a pass cut short leaves the
   * others for the next, and a mint in its cooldown is not asked at all.
   */
  async recoverAll(ops: MintOp[]): Promise<void> {
    const until = Date.now() + this.#rules.recoveryBudgetMs;
    const queue = ops.filter((o) => o.kind === 'foreign').sort((a, b) => a.updatedAt - b.updatedAt);
    for (const [i, op] of queue.entries()) {
      if (i >= RECOVER_PER_PASS || Date.now() > until) {
        this.#log.info({ left: queue.length - i }, 'foreign swaps left for the next recovery pass');
        return;
      }
      const outcome = await this.recover(op, true);
      if (outcome === 'pending') await this.#ledger.touchOp(op.id);
      this.#log.info({ op: op.id, kind: op.kind, outcome }, 'recovered journaled mint operation');
    }
  }

  async recover(op: MintOp, abandonIfUnspent: boolean): Promise<'done' | 'failed' | 'pending'> {
    const outcome = await this.#settle(op, abandonIfUnspent);
    return outcome === 'expired' ? 'failed' : outcome;
  }

  /**
   * What became of a journaled swap. The foreign melt quote first: unpaid with the token's proofs
   * unspent means nothing left the token (abandoned, once nobody may still be sending the melt).
   * Anything else (paid, pending, a foreign mint that cannot tell or is resting) defers to the
   * trusted mint's quote, the one mint we trust: paid means the money arrived, and the journaled
   * outputs are minted (or restored, if that already happened); unpaid past its expiry (and a
   * margin for clocks) means no payment can arrive any more, whatever the foreign mint says, and
   * the swap is abandoned ('expired'), booking nothing.
   */
  async #settle(op: MintOp, abandonIfUnspent: boolean, loaded?: Wallet): Promise<'done' | 'failed' | 'pending' | 'expired'> {
    if (op.state !== 'pending') return op.state;
    const j = (op.outputs as ForeignJournal[])[0]!;
    try {
      const cooling = this.#failed.get(j.foreignMint);
      if (!cooling || cooling.until <= Date.now()) {
        const unpaid = await this.#meltUnpaid(op, j, loaded);
        if (unpaid) {
          const states = await this.#ask(j.foreignMint, () => unpaid.checkProofsStates(j.proofs.map((p) => ({ secret: p.secret, id: p.id }))));
          if (states.some((s) => s.state === 'PENDING')) return 'pending';
          // Spent while our melt is unpaid: the holder spent them elsewhere. Unspent: not yet, or never.
          if (!states.some((s) => s.state === 'SPENT') && !abandonIfUnspent) return 'pending';
          await this.#ledger.abandonRedemption(op.tokenHash!, op.id);
          return 'failed';
        }
      }
      const here = await this.#wallets.wallet(op.mint, op.unit);
      const quote = await here.checkMintQuoteBolt11(j.mintQuote);
      if (quote.state !== 'UNPAID') return await this.#finish(op, j);
      const expiry = j.mintQuoteExpiry ?? quote.expiry;
      if (expiry != null && Date.now() > expiry * 1000 + this.#rules.expiryMarginMs) {
        await this.#ledger.abandonRedemption(op.tokenHash!, op.id);
        this.#log.warn({ op: op.id, mint: j.foreignMint }, 'foreign swap abandoned: the invoice expired unpaid');
        return 'expired';
      }
      return 'pending';
    } catch (e) {
      this.#log.warn({ op: op.id, err: (e as Error).message }, 'foreign swap still unresolved');
      return 'pending';
    }
  }

  /**
   * The foreign wallet when its mint says the melt quote is unpaid; undefined for any other
   * answer, or none. The quote is asked of the bare mint, one call; its keys are loaded only when
   * the proofs must be asked about (`loaded`: the wallet the swap began with, if still in hand).
   */
  async #meltUnpaid(op: MintOp, j: ForeignJournal, loaded?: Wallet): Promise<Wallet | undefined> {
    try {
      const mint = loaded?.mint ?? new Mint(j.foreignMint, { customRequest: this.#request });
      const melt = await this.#ask(j.foreignMint, () => mint.checkMeltQuoteBolt11(j.meltQuote));
      if (melt.state !== 'UNPAID') return undefined;
      return loaded ?? (await this.#foreignWallet(j.foreignMint, op.unit));
    } catch (e) {
      this.#log.warn({ op: op.id, mint: j.foreignMint, err: (e as Error).message }, 'foreign mint cannot say what became of a melt');
      return undefined;
    }
  }

  /** Mints the journaled outputs and credits them, once the trusted mint's quote is paid. */
  async #finish(op: MintOp, j: ForeignJournal): Promise<'done' | 'pending'> {
    const minted = await this.#mint(op, j).catch((e: Error) => {
      this.#log.warn({ op: op.id, err: e.message }, 'minting a foreign swap failed for now');
      return undefined;
    });
    if (!minted) return 'pending';
    await this.#ledger.finishRedemption({ tokenHash: op.tokenHash!, opId: op.id, proofs: minted, creditMsats: sum(minted) * MSATS_PER[op.unit] });
    return 'done';
  }

  /** The journaled outputs signed by the trusted mint once its quote is paid; undefined while unpaid. */
  async #mint(op: MintOp, j: ForeignJournal): Promise<StoredProof[] | undefined> {
    const here = await this.#wallets.wallet(op.mint, op.unit);
    const state = (await here.checkMintQuoteBolt11(j.mintQuote)).state;
    if (state === 'UNPAID') return undefined;
    const blanks = j.outputs.map((o) => NativeOutputData.from(OutputData.deserialize(o)));
    let signatures: SerializedBlindedSignature[] | undefined;
    if (state === 'PAID') {
      try {
        signatures = (await here.mint.mintBolt11({ quote: j.mintQuote, outputs: blanks.map((b) => b.blindedMessage) })).signatures;
      } catch (e) {
        // Issued meanwhile (by another instance, or a lost answer): the signatures are restored below.
        if (!isMintOperationError(e)) throw e;
      }
    }
    let ordered = blanks;
    if (!signatures) {
      const restored = await here.mint.restore({ outputs: blanks.map((b) => b.blindedMessage) });
      if (restored.signatures.length === 0) return undefined;
      const byB = new Map(blanks.map((b) => [b.blindedMessage.B_, b]));
      ordered = restored.outputs.map((o) => byB.get(o.B_)!);
      signatures = restored.signatures;
    }
    return ordered.map((b, i) => toStored(b.toProof(signatures[i]!, here.keyChain.getKeyset(signatures[i]!.id))));
  }
}
