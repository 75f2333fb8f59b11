import { OutputData, getEncodedToken, isMintOperationError, type MintOperationError, type SerializedBlindedSignature, type Wallet } from '@cashu/cashu-ts';
import type { Logger } from 'pino';
import { MSATS_PER, type Ledger, type MintOp, type StoredProof } from '../ledger/ledger.ts';
import { NativeOutputData } from './dleq.ts';
import { CashuError, mintUnreachable } from './errors.ts';
import type { Mints } from './mints.ts';
import type { ForeignIntake } from './parts.ts';
import { sum, toProof, toStored, type JournaledOutput } from './proofs.ts';

export type Outcome = 'done' | 'failed' | 'pending';

/** The op a mint call belongs to, journaled before the call: enough to abandon it. */
export interface JournaledOp {
  id: string;
  kind: MintOp['kind'];
  mint: string;
  tokenHash?: string | null;
}

/** What a flow makes of each way its journaled mint call can end. */
export interface Outcomes<T, R> {
  /** The mint's answer. This is no mint call any more: what it throws is not read as the mint's. */
  answer: (value: T) => Promise<R>;
  /**
   * The mint refused. A CashuError: nothing happened, so the op is abandoned and that is thrown.
   * 'final' (the default): settled from the mint's state, inputs it says are spent booked as
   * such and the others put back. 'unknown': read as no answer at all.
   */
  refused?: (e: MintOperationError) => CashuError | 'final' | 'unknown';
  /** The call happened after all: restored from the mint's state. */
  done: () => Promise<R>;
  /**
   * It did not happen and the op is abandoned; `lost`: its inputs the mint said were spent already
   * (not by this op), booked as such (markSpent) rather than put back. Absent: the client comes
   * back later, as while it is open.
   */
  failed?: (e: unknown, lost: StoredProof[]) => R | Promise<R>;
}

/** Only a refused connection proves a request never reached the mint; a timeout proves nothing. */
function neverSent(e: unknown): boolean {
  for (let c: unknown = e, i = 0; c && i < 6; c = (c as { cause?: unknown }).cause, i++) {
    if ((c as { code?: string }).code === 'ECONNREFUSED') return true;
  }
  return false;
}

/**
 * Every mint call that moves money goes through here, after its op (inputs and blinded outputs)
 * is journaled in the ledger: an answer goes to the flow; a refusal or a refused connection
 * abandons the op; a lost answer is settled from what the mint says became of it (NUT-09
 * signatures for our outputs, NUT-07 states of our inputs, a melt quote's state), or left open.
 */
export class Journal {
  readonly #ledger: Ledger;
  readonly #log: Logger;
  readonly #mints: Mints;
  /**
   * How long an unfinished operation belongs to whoever started it. Past that (twice the mint
   * timeout, so its own call has surely ended), any instance may settle it with the mint.
   */
  readonly leaseMs: number;
  /** Settles the Lightning swaps of tokens from other mints (foreign.ts), when they are accepted. */
  foreign: ForeignIntake | undefined;
  #recovering: Promise<void> | undefined;

  constructor(ledger: Ledger, log: Logger, mints: Mints, leaseMs: number) {
    this.#ledger = ledger;
    this.#log = log;
    this.#mints = mints;
    this.leaseMs = leaseMs;
  }

  async send<T, R>(op: JournaledOp, call: () => Promise<T>, on: Outcomes<T, R>): Promise<R> {
    let value: T;
    try {
      value = await call();
    } catch (e) {
      return this.#settle(op, e, on);
    }
    this.#mints.up(op.mint);
    return on.answer(value);
  }

  async #settle<R>(op: JournaledOp, e: unknown, on: Outcomes<never, R>): Promise<R> {
    let final = false;
    if (isMintOperationError(e)) {
      const verdict = on.refused?.(e) ?? 'final';
      // A refused token is the client's business; a refused payout is the operator's.
      this.#log[op.kind === 'receive' ? 'info' : 'error']({ op: op.id, kind: op.kind, mint: op.mint, code: e.code, err: e.message }, 'the mint refused an operation');
      if (verdict instanceof CashuError) {
        await this.#abandon(op);
        throw verdict;
      }
      final = verdict === 'final';
    } else if (neverSent(e)) {
      await this.#abandon(op);
      this.#mints.down(op.mint, e);
      throw mintUnreachable();
    } else {
      // The call may have happened, or may still happen, with its answer lost.
      this.#log.warn({ op: op.id, kind: op.kind, err: (e as Error).message }, 'mint call failed without an answer');
    }
    const lost: StoredProof[] = [];
    const outcome = await this.recover(op.id, final, lost);
    if (outcome === 'done') return on.done();
    if (outcome === 'failed' && on.failed) return on.failed(e, lost);
    throw await this.stillOpen(op.id);
  }

  /**
   * Resolves every journaled operation left unfinished by a crash (ops whose lease has run out):
   * the gateway's own first, then swaps from strangers' mints, which may stall, under their own bound.
   */
  recoverAll(): Promise<void> {
    // One pass at a time: a pass slowed by strangers' mints must not be joined by the next timer's.
    this.#recovering ??= this.#recoverPass().finally(() => (this.#recovering = undefined));
    return this.#recovering;
  }

  /** Waits for a recovery pass under way: what the mint answers it is booked before the ledger closes. */
  async settled(): Promise<void> {
    await this.#recovering?.catch(() => {});
  }

  async #recoverPass(): Promise<void> {
    const due = (await this.#ledger.pendingOps()).filter((op) => Date.now() - op.updatedAt >= this.leaseMs);
    for (const op of due) {
      if (op.kind === 'foreign') continue;
      const outcome = await this.recover(op.id, true);
      this.#log.info({ op: op.id, kind: op.kind, outcome }, 'recovered journaled mint operation');
    }
    await this.foreign?.recoverAll(due.filter((op) => op.kind === 'foreign'));
  }

  /**
   * Waits a little for an operation another request or instance is running; once its lease has
   * run out (its owner crashed or gave up long ago) settles it with the mint.
   */
  async awaitOp(opId: string): Promise<Outcome> {
    const until = Date.now() + 5_000;
    for (;;) {
      const op = await this.#ledger.getOp(opId);
      if (!op || op.state !== 'pending') return op?.state ?? 'failed';
      if (Date.now() - op.updatedAt >= this.leaseMs) return this.recover(opId, true);
      if (Date.now() > until) return 'pending';
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Keeps an op whose call may still land out of everyone's hands for a lease, and says so. */
  async stillOpen(opId: string): Promise<CashuError> {
    await this.#ledger.touchOp(opId);
    return mintUnreachable(Math.ceil(this.leaseMs / 1000));
  }

  /**
   * Asks the mint what became of a journaled op: signatures it holds for our outputs (NUT-09)
   * finish it; inputs still unspent (NUT-07) mean it never happened, and with `abandonIfUnspent`
   * (no call of ours can still arrive) it is abandoned. Inputs it says were spent by someone else
   * are booked as lost, and added to `lost`.
   */
  async recover(opId: string, abandonIfUnspent: boolean, lost?: StoredProof[]): Promise<Outcome> {
    const op = await this.#ledger.getOp(opId);
    if (!op || op.state !== 'pending') return op?.state ?? 'failed';
    if (op.kind === 'foreign') return this.foreign ? this.foreign.recover(op, abandonIfUnspent) : 'pending';
    if (op.outputs === null) {
      await this.#abandon(op);
      return 'failed';
    }
    try {
      const wallet = await this.#mints.wallet(op.mint, op.unit);
      if (op.kind === 'melt') return await this.#recoverMelt(op, wallet, abandonIfUnspent, lost);
      const journaled = (op.outputs as JournaledOutput[]).map((j) => ({ send: j.send, o: NativeOutputData.from(OutputData.deserialize(j.o)) }));
      // A swap that kept nothing (its inputs worth no more than the fee) has nothing to restore:
      // nutshell refuses a restore of no outputs, which would leave the op open for ever.
      const { outputs, signatures } = journaled.length === 0
        ? { outputs: [], signatures: [] }
        : await wallet.mint.restore({ outputs: journaled.map((j) => j.o.blindedMessage) });
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
      return await this.#unlessSpent(op, wallet, abandonIfUnspent, lost);
    } catch (e) {
      this.#log.warn({ op: op.id, err: (e as Error).message }, 'mint operation still unresolved');
      return 'pending';
    }
  }

  /**
   * Settles a journaled melt from its quote: paid means the change is ours (from the quote, or
   * restored from the journaled blanks); unpaid with the inputs unspent means nothing was spent.
   */
  async #recoverMelt(op: MintOp, wallet: Wallet, abandonIfUnspent: boolean, lost?: StoredProof[]): Promise<Outcome> {
    const melt = (await this.#ledger.meltOfOp(op.id))!;
    const quote = await wallet.checkMeltQuoteBolt11(melt.quote);
    if (quote.state === 'PENDING') return 'pending';
    if (quote.state !== 'PAID') return this.#unlessSpent(op, wallet, abandonIfUnspent, lost);
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

  /** The op did not happen (no signatures, no paid quote): its inputs' states say whether it still may. */
  async #unlessSpent(op: MintOp, wallet: Wallet, abandonIfUnspent: boolean, lost?: StoredProof[]): Promise<Outcome> {
    const states = await wallet.checkProofsStates(op.inputs.map((p) => ({ secret: p.secret, id: p.id })));
    if (states.some((s) => s.state === 'PENDING')) return 'pending';
    const spent = op.inputs.filter((_, i) => states[i]?.state === 'SPENT');
    if (spent.length > 0) {
      // Spent, and not by this op: whoever holds those proofs spent them. They are gone.
      if (op.kind !== 'receive') this.#log.error({ op: op.id, kind: op.kind }, 'inputs spent elsewhere and no signatures to restore');
      await this.#ledger.markSpent(spent.map((p) => p.secret));
      lost?.push(...spent);
    } else if (!abandonIfUnspent) {
      // Nothing happened yet, but the call we sent may still arrive: leave it open.
      return 'pending';
    }
    await this.#abandon(op);
    return 'failed';
  }

  async #complete(op: MintOp, send: StoredProof[], keep: StoredProof[]): Promise<void> {
    if (op.kind === 'sweep') return this.#ledger.finishSweep(op.id, [...send, ...keep]);
    if (op.kind === 'receive') {
      const proofs = [...send, ...keep];
      await this.#ledger.finishRedemption({ tokenHash: op.tokenHash!, opId: op.id, proofs, creditMsats: sum(proofs) * MSATS_PER[op.unit] });
      return;
    }
    const token = getEncodedToken({ mint: op.mint, unit: op.unit, proofs: send.map(toProof) });
    await this.#ledger.finishRefund({ opId: op.id, token, sent: send, keep });
  }

  async #abandon(op: JournaledOp): Promise<void> {
    if (op.kind === 'sweep') await this.#ledger.abandonSweep(op.id);
    else if (op.kind === 'melt') await this.#ledger.abandonMelt(op.id);
    else if (op.kind === 'receive') await this.#ledger.abandonRedemption(op.tokenHash!, op.id);
    else await this.#ledger.abandonRefund(op.id);
  }
}
