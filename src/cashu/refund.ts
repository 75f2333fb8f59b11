import { randomUUID } from 'node:crypto';
import { getEncodedToken, isMintOperationError, splitAmount, type SwapPreview, type Wallet } from '@cashu/cashu-ts';
import { pickPlan, type RefundRow, type StoredProof } from '../ledger/ledger.ts';
import { CashuError, keyBusy, mintUnreachable } from './errors.ts';
import { isLocked } from './p2pk.ts';
import { crashPoint } from './crash.ts';
import { nativeLockedOutputs } from './dleq.ts';
import { blindOutputs, deferredOutputs } from './off-loop.ts';
import { journaled, proofsWeHave, sum, toProof, toStored } from './proofs.ts';
import type { Parts } from './parts.ts';
import { completeOurSwap } from './schnorr.ts';

/**
 * The most proofs a payout hands over as they are. Its token travels in an X-Cashu header, and
 * clients read about 16 KB of headers (Node's and undici's default): some 290 bytes a proof with
 * its DLEQ, 64 of them did not fit, and every retry answered the same token. More are swapped for
 * the fewest of the amount (one per bit of it): otherwise a stranger who leaves the wallet only
 * small proofs makes another key's refund one no client can read.
 */
const MAX_AS_IS = 32;

/** Whether a payout's inputs can be handed over as they are, with no swap; `many`: however many. */
function asIs(inputs: StoredProof[], amount: number, lockTo: string | undefined, many = false): boolean {
  return sum(inputs) === amount && (many || inputs.length <= MAX_AS_IS) && !inputs.some(isLocked) && !lockTo;
}

/**
 * Pays out a key's refundable balance as a token (whole sats for a sat key; the msat remainder
 * stays on the key). With `retry`, a call with nothing left to refund returns the last token;
 * without, it returns undefined (change after a one-shot request). With `lockTo` (a compressed
 * pubkey) the token is P2PK-locked to it (NUT-11).
 */
export async function refund(p: Parts, keyHash: string, retry: boolean, lockTo?: string): Promise<RefundRow | undefined> {
  // Sats the inputs must be worth beyond the refund (the swap's fee); once it cannot be had, no more tries.
  let extra = 0;
  let settled = false;
  // Proofs the mint said were spent elsewhere have been booked as lost: once, the refund is tried again with others.
  let replaced = false;
  for (let attempt = 1; ; attempt++) {
    const opId = randomUUID();
    const r = await p.ledger.startRefund({ keyHash, opId, refundId: randomUUID(), mints: [...p.mints.urls], ...(extra > 0 && { extra }) });
    switch (r.kind) {
      case 'no_key':
        throw new CashuError('invalid_api_key', 'Unknown API key.');
      case 'busy':
        throw keyBusy();
      case 'no_liquidity':
        if (extra > 0) {
          // Not enough to pay for a better swap: the refund as first picked is still owed.
          p.log.info({ amount: r.amount, extra, unit: r.unit }, 'no proofs to pay the swap fee of a refund; trying without');
          extra = 0;
          settled = true;
          continue;
        }
        p.log.error({ amount: r.amount, unit: r.unit }, 'wallet cannot cover a refund');
        throw new CashuError('refund_unavailable', 'The gateway cannot pay this refund right now.', { retryAfter: 60 });
      case 'nothing': {
        if (!retry) return undefined;
        const latest = r.latest;
        if (latest?.state === 'pending') {
          await p.journal.awaitOp(latest.opId);
          const again = await p.ledger.latestRefund(keyHash);
          if (again?.state === 'done') return again;
          if (!again || again.opId !== latest.opId) return refund(p, keyHash, retry, lockTo);
          throw mintUnreachable();
        }
        if (latest) return latest;
        throw new CashuError('balance_too_low', 'There is no balance to refund on this key.');
      }
      case 'started': {
        const more = settled || attempt > 3 ? undefined : await extraFor(p, r.refund, r.inputs, extra, lockTo);
        if (more !== undefined) {
          // Nothing was sent yet: put the proofs back and take ones worth the swap's fee too.
          await p.ledger.abandonRefund(opId);
          extra = more;
          continue;
        }
        let paid: RefundRow;
        try {
          // Settled: no proofs to pay a swap's fee, so a token of many proofs is still better than none.
          paid = await payRefund(p, r.refund, r.inputs, lockTo, !retry, settled);
        } catch (e) {
          if (!(e instanceof InputsLost) || replaced) throw e;
          replaced = true;
          p.log.warn({ mint: r.refund.mint, lost: e.lost }, 'a refund met proofs spent elsewhere; trying again with others');
          continue;
        }
        p.refill(paid.mint, paid.unit);
        p.log.info({ mint: paid.mint, unit: paid.unit, msats: paid.msats, key: keyHash.slice(0, 8), state: paid.state }, retry ? 'refunded a balance' : 'paid change');
        return paid;
      }
    }
  }
}

/** The operator's earnings as a token, booked in the same transaction that sets the proofs aside. */
export async function withdraw(p: Parts, again = false): Promise<RefundRow | undefined> {
  const r = await p.ledger.startWithdraw({ opId: randomUUID(), refundId: randomUUID(), mints: [...p.mints.urls] });
  if (r.kind === 'nothing') return undefined;
  if (r.kind === 'no_liquidity') {
    throw new CashuError('refund_unavailable', `The wallet holds no proofs that can pay ${r.amount} ${r.unit} of earnings.`);
  }
  try {
    return await payRefund(p, r.refund, r.inputs);
  } catch (e) {
    // The lost proofs are booked against the earnings: what is left of them is tried again, once.
    if (e instanceof InputsLost && !again) return withdraw(p, true);
    throw e;
  }
}

/**
 * A payout's swap the mint refused, having said (NUT-07) that some of its inputs were spent, not
 * by us: those are booked as lost (markSpent) and the others put back, so the same payout from
 * other proofs may well be taken. Seen by a client only if that fails too.
 */
class InputsLost extends CashuError {
  readonly lost: number;

  constructor(lost: StoredProof[]) {
    super('refund_unavailable', 'The mint refused the refund; your balance is unchanged.');
    this.lost = lost.length;
  }
}

/**
 * What an ordinary (unlocked) token must be worth to credit `sats` after the swap that redeems
 * it: the mint's input fee on the fewest proofs of that amount, at the dearest trusted mint.
 * A mint that cannot be reached adds nothing (its fee is not known), and is not asked again
 * until it is back, so unpaid requests cannot make the gateway call a mint that is down.
 */
export async function unlockedCover(p: Parts, sats: number): Promise<number> {
  let cover = sats;
  for (const mint of p.mints.urls) {
    if (p.mints.isDown(mint)) continue;
    let wallet: Wallet;
    try {
      wallet = await p.mints.wallet(mint, 'sat');
    } catch (e) {
      p.mints.down(mint, e);
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
 * At a mint with input fees, whether a refund's inputs must be taken again worth `amount + extra`:
 * a swap must cover its own fee (the operator's cost, not the holder's), and proofs handed over
 * as they are cost their holder a fee each, so many small ones are swapped for the fewest proofs
 * of the amount when the holder would lose more than the swap costs. Undefined: pay with these.
 */
async function extraFor(p: Parts, refund: RefundRow, inputs: StoredProof[], extra: number, lockTo?: string): Promise<number | undefined> {
  // A mint known to be down is not asked: proofs that need no swap can still be handed over.
  if (p.mints.isDown(refund.mint)) return undefined;
  let wallet: Wallet;
  try {
    wallet = await p.mints.wallet(refund.mint, refund.unit);
  } catch {
    return undefined;
  }
  const { amount } = refund;
  const fee = wallet.getFeesForProofs(inputs.map(toProof)).toNumber();
  if (fee === 0) return undefined;
  if (!asIs(inputs, amount, lockTo)) return sum(inputs) >= amount + fee ? undefined : fee;
  if (extra > 0) return undefined;
  const keyset = wallet.keyChain.getCheapestKeyset();
  const feeFor = (n: number) => wallet.getFeesForKeyset(n, keyset.id).toNumber();
  const saving = fee - feeFor(splitAmount(amount, keyset.keys).length);
  if (saving <= 0) return undefined;
  const cost = await swapCost(p, refund, inputs, feeFor);
  return cost !== undefined && cost < saving ? cost : undefined;
}

/** The fee of a swap from the fewest proofs we hold that pay `refund` and that fee too. */
async function swapCost(p: Parts, refund: RefundRow, inputs: StoredProof[], feeFor: (n: number) => number): Promise<number | undefined> {
  const counts = await p.ledger.unspentCounts(refund.mint, refund.unit, true);
  // The inputs are set aside for this refund, so not among those held: they are ours to use.
  for (const i of inputs) counts.set(i.amount, (counts.get(i.amount) ?? 0) + 1);
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

async function payRefund(p: Parts, refund: RefundRow, inputs: StoredProof[], lockTo?: string, change = false, many = false): Promise<RefundRow> {
  const { ledger, log, mints, journal } = p;
  const { mint, unit, amount, opId } = refund;
  crashPoint('refund:after-debit');
  // Our own proofs that add up exactly are handed over as they are: no mint call at all. Proofs
  // locked to our key are useless to anyone else, and change to lock needs new outputs: swap.
  if (asIs(inputs, amount, lockTo, many)) {
    const token = getEncodedToken({ mint, unit, proofs: inputs.map(toProof) });
    const done = await ledger.finishRefund({ opId, token, sent: inputs, keep: [] });
    crashPoint('refund:after-commit');
    return done;
  }
  // Change locked to its owner always needs new outputs; unlocked change swapped is the float run short.
  if (change && !lockTo) p.changeSwapped(mint, unit);
  let wallet: Wallet;
  try {
    wallet = await mints.wallet(mint, unit);
  } catch (e) {
    await ledger.abandonRefund(opId);
    mints.down(mint, e);
    throw mintUnreachable();
  }
  let preview: SwapPreview;
  try {
    // The token is worth exactly what was booked; redeeming it costs the holder the mint's fee,
    // as any token from that mint does, whichever way the refund was made.
    preview = await wallet.prepareSwapToSend(
      amount,
      inputs.map(toProof),
      { includeFees: false, proofsWeHave: await proofsWeHave(ledger, mint, unit, p.changeFloat) },
      { send: lockTo ? nativeLockedOutputs(lockTo) : deferredOutputs(), keep: deferredOutputs() },
    );
    await blindOutputs([...(preview.sendOutputs ?? []), ...(preview.keepOutputs ?? [])]);
  } catch (e) {
    // Nothing was sent: these inputs cannot make this payout (say, too little for the mint's fee).
    await ledger.abandonRefund(opId);
    log.error({ mint, amount, inputs: sum(inputs), err: (e as Error).message }, 'refund swap could not be prepared');
    throw new CashuError('refund_unavailable', `The refund could not be prepared: ${(e as Error).message}; your balance is unchanged.`);
  }
  await ledger.journalOutputs(opId, [...journaled(preview.sendOutputs, true), ...journaled(preview.keepOutputs)], preview.inputs.map(toStored));
  const swap = async () => {
    crashPoint('refund:before-swap');
    const proofs = await completeOurSwap(wallet, preview, p.p2pk);
    crashPoint('refund:after-swap');
    return proofs;
  };
  return journal.send({ id: opId, kind: 'refund', mint }, swap, {
    answer: async ({ send, keep }) => {
      const token = getEncodedToken({ mint, unit, proofs: send });
      // cashu-ts hands back the proofs it left out of the swap among `keep`; they are stored already.
      const unselected = new Set((preview.unselectedProofs ?? []).map((u) => u.secret));
      const done = await ledger.finishRefund({ opId, token, sent: send.map(toStored), keep: keep.filter((k) => !unselected.has(k.secret)).map(toStored) });
      crashPoint('refund:after-commit');
      return done;
    },
    // Whatever the refusal, the mint is asked which inputs it holds spent: a proof spent elsewhere
    // (the operator's wallet, a swap that landed while we thought it failed) would otherwise be
    // put back and picked again, and every payout that takes it refused, for ever. Those are
    // booked as lost, the others put back (journal.ts), and the payout may be tried again.
    refused: () => 'final',
    done: async () => (await ledger.latestRefund(refund.keyHash))!,
    failed: (e, lost) => {
      if (lost.length > 0) throw new InputsLost(lost);
      if (isMintOperationError(e)) throw new CashuError('refund_unavailable', 'The mint refused the refund; your balance is unchanged.');
      throw mintUnreachable();
    },
  });
}
