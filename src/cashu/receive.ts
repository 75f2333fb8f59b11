import { randomUUID } from 'node:crypto';
import type { Proof, SwapPreview, Token, Wallet } from '@cashu/cashu-ts';
import { MSATS_PER, type KeyRow, type Unit } from '../ledger/ledger.ts';
import type { TokenInfo } from './token.ts';
import { tokenHashOfQuote } from './credential.ts';
import { CashuError, alreadySpent, busyRefusal, invalidToken, mintBusy, mintUnreachable } from './errors.ts';
import { lockedTo, spendableOnlyByUs, type P2pkKey } from './p2pk.ts';
import { crashPoint } from './crash.ts';
import { decodeWithKeysets } from './keysets.ts';
import { nativeOutputs, nativeOutputsSplit } from './dleq.ts';
import { changeReady, journaled, sum, toStored } from './proofs.ts';
import type { Parts } from './parts.ts';

export interface QuoteRedemption {
  mint: string;
  unit: Unit;
  quote: string;
  amount: number;
  keyHash: string;
  beforeMint?: () => Promise<void>;
}

/** NUT-00 error codes for proofs already spent, or being spent. */
const SPENT = 11001;
const PENDING = 11002;
/** NUT-04: the quote's ecash was issued already (perhaps to us, by a call whose answer was lost). */
const ISSUED = 20002;

/**
 * Receiving: a client's token swapped (or, locked to us, taken offline) into the gateway's proofs,
 * and a paid NUT-04 quote minted to us, each credited to a key.
 */
export class Receive {
  readonly #p: Parts;
  readonly #inflight = new Map<string, { keyHash: string; done: Promise<KeyRow> }>();
  readonly #locktimeMarginSec: number;
  /** x-only keys other doors lock ecash to: a redemption without that door's key refuses such proofs. */
  readonly #doorLocks = new Set<string>();
  /** Called when locked proofs were taken offline, so they are redeemed soon. */
  readonly #tookLocked: (mint: string, unit: Unit) => void;

  constructor(parts: Parts, opts: { locktimeMarginSec: number; tookLocked: (mint: string, unit: Unit) => void }) {
    this.#p = parts;
    this.#locktimeMarginSec = opts.locktimeMarginSec;
    this.#tookLocked = opts.tookLocked;
  }

  addDoorKey(pubkey: string): void {
    this.#doorLocks.add(pubkey.slice(2).toLowerCase());
  }

  redeem(info: TokenInfo, keyHash: string, door?: P2pkKey, changeSoon = false): Promise<KeyRow> {
    const running = this.#inflight.get(info.hash);
    if (running) {
      if (running.keyHash === keyHash) return running.done;
      // The same token is being redeemed for another key: once that settles, decide afresh.
      return running.done.then(
        () => this.redeem(info, keyHash, door, changeSoon),
        () => this.redeem(info, keyHash, door, changeSoon),
      );
    }
    const done = (info.foreign ? this.#redeemForeign(info, keyHash, door) : this.#redeem(info, keyHash, true, door, changeSoon)).finally(() => this.#inflight.delete(info.hash));
    this.#inflight.set(info.hash, { keyHash, done });
    return done;
  }

  async #redeemForeign(info: TokenInfo, keyHash: string, door?: P2pkKey): Promise<KeyRow> {
    const foreign = this.#p.journal.foreign;
    if (!foreign || door) throw new CashuError('untrusted_mint', `Tokens from mint ${JSON.stringify(info.mint)} are not accepted here; accepted mints: ${this.#p.mints.urls.join(', ')}.`);
    return foreign.redeem(info, keyHash);
  }

  async #redeem(info: TokenInfo, keyHash: string, retry: boolean, door?: P2pkKey, changeSoon = false): Promise<KeyRow> {
    const { ledger, log, journal, p2pk } = this.#p;
    const known = await ledger.getToken(info.hash);
    if (known) return this.#fromExisting(info, keyHash, known.keyHash, known.opId, known.state, retry, door);

    const { wallet, token } = await this.#decoded(info);
    const { proofs } = token;
    const doorKey = door?.pubkey.slice(2).toLowerCase();
    if (proofs.some((p) => { const k = lockedTo(p); return k !== undefined && k !== doorKey && this.#doorLocks.has(k); })) {
      // Refused before anything is journaled or sent: the token stays whole for the door it was made for.
      throw new CashuError('cashu_token_wrong_door', "This token is locked to the gateway's Nostr key: it pays Nostr jobs only.");
    }
    if (!door && this.#offlineAcceptable(wallet, proofs, info.unit)) return this.#takeOffline(info, keyHash, proofs, retry);

    let preview: SwapPreview;
    try {
      // The swap is what proves these proofs; checking their DLEQs first (cashu-ts does whenever
      // they are present) would only cost four curve multiplications each.
      // The token may name the mint by an alias; inspectToken already decided which mint it is.
      // Change to pay right after (a one-shot request): what it keeps is split so that any change
      // adds up from it, and the change needs no second swap.
      const kept = sum(proofs.map(toStored)) - wallet.getFeesForProofs(proofs).toNumber();
      const outputs = changeSoon ? nativeOutputsSplit(changeReady(kept, Object.keys(wallet.keyChain.getCheapestKeyset().keys).map(Number))) : nativeOutputs;
      preview = await wallet.prepareSwapToReceive({ ...token, mint: wallet.mint.mintUrl, proofs: proofs.map(({ dleq: _, ...p }) => p) }, undefined, outputs);
    } catch (e) {
      throw invalidToken((e as Error).message);
    }
    const opId = randomUUID();
    const started = await ledger.startRedemption({
      tokenHash: info.hash, keyHash, opId, mint: info.mint, unit: info.unit, inputs: preview.inputs.map(toStored), outputs: journaled(preview.keepOutputs),
    });
    if ('replayed' in started) throw alreadySpent();
    if (!started.started) {
      const t = started.token;
      return this.#fromExisting(info, keyHash, t.keyHash, t.opId, t.state, retry, door);
    }

    const swap = async () => {
      crashPoint('redeem:before-swap');
      // Our key signs inputs locked to it; it is ignored for ordinary proofs.
      const { keep } = await wallet.completeSwap(preview, door ? [door.privkey, p2pk.privkey] : p2pk.privkey);
      crashPoint('redeem:after-swap');
      return keep;
    };
    return journal.send({ id: opId, kind: 'receive', mint: info.mint, tokenHash: info.hash }, swap, {
      answer: async (keep) => {
        const proofs = keep.map(toStored);
        const msats = sum(proofs) * MSATS_PER[info.unit];
        const key = await ledger.finishRedemption({ tokenHash: info.hash, opId, proofs, creditMsats: msats });
        crashPoint('redeem:after-commit');
        log.info({ mint: info.mint, unit: info.unit, msats, key: keyHash.slice(0, 8) }, 'credited a token');
        return key;
      },
      refused: (e) => {
        if (e.code === SPENT || e.code === PENDING) return alreadySpent();
        if (busyRefusal(e.message)) return mintBusy();
        return new CashuError('invalid_cashu_token', `The mint refused the token: ${e.message}`);
      },
      done: async () => (await ledger.getKey(keyHash))!,
      failed: () => {
        throw alreadySpent();
      },
    });
  }

  /**
   * The token with its keyset ids resolved against the mint's keysets (NUT-02); an id the mint did
   * not list when we loaded it may be a keyset it has since rotated in, so it is reloaded once.
   */
  async #decoded(info: TokenInfo): Promise<{ wallet: Wallet; token: Token }> {
    const decode = (w: Wallet) => {
      const chain = w.keyChain;
      return decodeWithKeysets(info.token, chain.getAllKeysetIds().map((id) => ({ id, unit: chain.getKeyset(id).unit })), info.unit);
    };
    const wallet = await this.#p.mints.reachable(info.mint, info.unit);
    try {
      return { wallet, token: decode(wallet) };
    } catch (e) {
      if (!(e instanceof CashuError) || e.code !== 'unknown_keyset') throw e;
      const fresh = await this.#p.mints.reloaded(info.mint, info.unit);
      if (!fresh) throw e;
      return { wallet: fresh, token: decode(fresh) };
    }
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
      if (!spendableOnlyByUs(p, keyset, this.#p.p2pk.pubkey, notBefore)) return false;
    }
    return true;
  }

  /** Credits proofs locked to our key without asking the mint; the sweep redeems them later. */
  async #takeOffline(info: TokenInfo, keyHash: string, locked: Proof[], retry: boolean): Promise<KeyRow> {
    const { ledger, log } = this.#p;
    const proofs = locked.map(toStored);
    const msats = sum(proofs) * MSATS_PER[info.unit];
    const outcome = await ledger.acceptLocked({ tokenHash: info.hash, keyHash, mint: info.mint, unit: info.unit, proofs, creditMsats: msats });
    if (outcome === 'replayed') throw alreadySpent();
    if (outcome === 'accepted') {
      log.info({ mint: info.mint, unit: info.unit, msats, key: keyHash.slice(0, 8), locked: true }, 'credited a token');
      this.#tookLocked(info.mint, info.unit);
    }
    const t = (await ledger.getToken(info.hash))!;
    return this.#fromExisting(info, keyHash, t.keyHash, t.opId, t.state, retry);
  }

  async #fromExisting(
    info: TokenInfo, keyHash: string, creditedTo: string, opId: string, state: 'redeeming' | 'credited', retry: boolean, door?: P2pkKey,
  ): Promise<KeyRow> {
    if (state === 'redeeming') {
      // Another process is redeeming it, or one crashed doing so: wait for, or settle, its outcome.
      const outcome = await this.#p.journal.awaitOp(opId);
      if (outcome === 'failed' && retry) return this.#redeem(info, keyHash, false, door);
      if (outcome !== 'done') throw mintUnreachable();
    }
    if (creditedTo !== keyHash) throw alreadySpent();
    return (await this.#p.ledger.getKey(keyHash))!;
  }

  /**
   * Mints the ecash a paid NUT-04 quote is owed to the gateway and credits `keyHash`, through the
   * same journaled path as a token: outputs written first, signatures recoverable (NUT-09).
   * Returns undefined while the quote is unpaid. `beforeMint` runs once the mint says the quote is
   * paid, before its ecash is asked for: what it writes is in the ledger before any of it is ours.
   */
  async redeemQuote(q: QuoteRedemption): Promise<KeyRow | undefined> {
    const { ledger, journal, mints } = this.#p;
    const tokenHash = tokenHashOfQuote(q.mint, q.quote);
    const known = await ledger.getToken(tokenHash);
    if (known?.state === 'credited') return ledger.getKey(known.keyHash);
    if (known && (await journal.awaitOp(known.opId)) !== 'failed') {
      const again = await ledger.getToken(tokenHash);
      return again?.state === 'credited' ? ledger.getKey(again.keyHash) : undefined;
    }
    const wallet = await mints.reachable(q.mint, q.unit);
    const state = (await wallet.checkMintQuoteBolt11(q.quote)).state;
    if (state !== 'PAID') return undefined;
    await q.beforeMint?.();
    const preview = await wallet.prepareMint('bolt11', q.amount, { quote: q.quote }, undefined, nativeOutputs);
    const opId = randomUUID();
    const started = await ledger.startRedemption({
      tokenHash, keyHash: q.keyHash, opId, mint: q.mint, unit: q.unit, inputs: [], outputs: journaled(preview.outputData),
    });
    if (!started.started) return this.redeemQuote(q);
    return journal.send({ id: opId, kind: 'receive', mint: q.mint, tokenHash }, () => wallet.completeMint(preview), {
      answer: async (minted) => {
        const proofs = minted.map(toStored);
        const key = await ledger.finishRedemption({ tokenHash, opId, proofs, creditMsats: sum(proofs) * MSATS_PER[q.unit] });
        crashPoint('quote:after-commit');
        return key;
      },
      refused: (e) => (e.code === ISSUED ? 'unknown' : new CashuError('mint_quote_failed', e.message)),
      done: () => ledger.getKey(q.keyHash),
    });
  }
}
