import { Amount, OutputData, type OutputDataLike, type Proof, type SerializedOutputData } from '@cashu/cashu-ts';
import type { Ledger, StoredProof, Unit } from '../ledger/ledger.ts';

/** A journaled blinded output; `send` marks the outputs that become the user's refund token. */
export interface JournaledOutput {
  send: boolean;
  o: SerializedOutputData;
}

/** Blinded outputs as the journal keeps them, written before the mint is called. */
export function journaled(outputs: readonly OutputDataLike[] | undefined, send = false): JournaledOutput[] {
  return (outputs ?? []).map((o) => ({ send, o: OutputData.serialize(o) }));
}

export function toStored(p: Pick<Proof, 'id' | 'secret' | 'C' | 'dleq'> & { amount: Amount | number }): StoredProof {
  const amount = typeof p.amount === 'number' ? p.amount : p.amount.toNumber();
  return { id: p.id, amount, secret: p.secret, C: p.C, dleq: p.dleq };
}

export function toProof(p: StoredProof): Proof {
  const proof: Proof = { id: p.id, amount: Amount.from(p.amount), secret: p.secret, C: p.C };
  if (p.dleq) proof.dleq = p.dleq as Proof['dleq'];
  return proof;
}

/**
 * A proof of ours as the input of our own swap, without its DLEQ: that was checked when the proof
 * came in, and the mint checks the input itself. cashu-ts would check it again in pure JavaScript,
 * a few milliseconds a proof on the event loop: the background sweep of a busy minute's locked
 * proofs held requests up for seconds.
 */
export function toInput(p: StoredProof): Proof {
  return { id: p.id, amount: Amount.from(p.amount), secret: p.secret, C: p.C };
}

export function sum(proofs: StoredProof[]): number {
  let s = 0;
  for (const p of proofs) s += p.amount;
  return s;
}

/**
 * The unspent proofs we hold, as cashu-ts wants them to split what we keep: it tops up each
 * denomination to the wallet's `denominationTarget` first, smallest first (the change float).
 */
export async function proofsWeHave(ledger: Ledger, mint: string, unit: Unit, changeFloat: number): Promise<Array<{ amount: number }> | undefined> {
  if (changeFloat <= 0) return undefined;
  // cashu-ts shapes the split only when told of some proof; a zero amount matches no denomination.
  const have: Array<{ amount: number }> = [{ amount: 0 }];
  for (const [amount, n] of await ledger.unspentCounts(mint, unit)) {
    for (let i = 0; i < Math.min(n, changeFloat); i++) have.push({ amount });
  }
  return have;
}

/**
 * The first denominations of `amount` so that every smaller amount adds up exactly from its
 * proofs: 1, 2, 4… while they fit (the rest is split as usual, in powers of two no larger than
 * what came before plus one). Change after a request is then paid from what the swap that
 * redeemed its token returned, with no second swap.
 */
export function changeReady(amount: number, denominations: readonly number[]): number[] {
  const have = new Set(denominations);
  const out: number[] = [];
  let total = 0;
  for (let d = 1; have.has(d) && total + d <= amount; d *= 2) {
    out.push(d);
    total += d;
  }
  return out;
}
