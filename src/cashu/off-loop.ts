import { Worker } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';
import {
  Amount,
  type AmountLike,
  type HasKeysetKeys,
  type OutputData,
  type OutputDataFactory,
  type OutputType,
  type Proof,
  type SerializedBlindedSignature,
} from '@cashu/cashu-ts';
import { blindingHex, NativeOutputData, nativeOutputs, nativeOutputsSplit } from './dleq.ts';
import { blindAll, blindingFactor, exactBytes, hex, native, POINT, SCALAR, SECRET, signAll, unblindAll, UNBLIND_IN, UNBLIND_OUT, type Schnorr } from './curve.ts';
import type { CurveAnswer, CurveJob } from './curve-worker.ts';

const tiny = (await import('tiny-secp256k1').catch(() => undefined)) as Schnorr | undefined;

/** A worker idle this long is stopped: the idle gateway does not keep a second V8 heap. */
const IDLE_MS = 30_000;
/** A worker that died this many times is not started again: the work stays on the main thread. */
const MAX_DEATHS = 3;

type Job = CurveJob extends infer J ? (J extends { id: number } ? Omit<J, 'id'> : never) : never;

/**
 * One worker thread for the curve work of the gateway's own swaps, started on first use and
 * stopped when idle. Until it is ready, and if it dies, the same functions run here instead: a
 * swap never waits for a thread, and never fails because of one.
 */
class CurveThread {
  #worker: Worker | undefined;
  #ready = false;
  #deaths = 0;
  #next = 0;
  readonly #waiting = new Map<number, { resolve: (out: Uint8Array) => void; reject: (e: Error) => void }>();
  #idle: NodeJS.Timeout | undefined;
  /** Jobs the worker answered: what the tests read to tell the thread did the work. */
  answered = 0;

  async run(job: Job): Promise<Uint8Array> {
    if (this.#ready && this.#worker) {
      try {
        return await this.#post(this.#worker, job);
      } catch {
        // The worker died under the job: it is done here instead.
      }
    } else {
      this.#start();
    }
    return inline(job);
  }

  /** Starts the worker if it is not running, and resolves once jobs go to it (false: they never will). */
  async ready(): Promise<boolean> {
    this.#start();
    while (this.#worker && !this.#ready) await new Promise((r) => setTimeout(r, 5));
    return this.#ready;
  }

  /** Stops the worker now; a later job starts another. */
  async stop(): Promise<void> {
    const w = this.#worker;
    this.#drop();
    await w?.terminate();
  }

  #post(w: Worker, job: Job): Promise<Uint8Array> {
    const id = ++this.#next;
    clearTimeout(this.#idle);
    // Referenced while a job is out, so a one-shot command does not exit waiting for its answer.
    w.ref();
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      w.postMessage({ ...job, id });
    });
  }

  #start(): void {
    if (this.#worker || this.#deaths >= MAX_DEATHS || !native) return;
    const file = import.meta.url.endsWith('.ts') ? './curve-worker.ts' : './curve-worker.js';
    let w: Worker;
    try {
      w = new Worker(new URL(file, import.meta.url), { execArgv: [] });
    } catch {
      this.#deaths = MAX_DEATHS;
      return;
    }
    w.unref();
    this.#worker = w;
    w.once('online', () => {
      if (this.#worker === w) this.#ready = true;
    });
    w.on('message', (a: CurveAnswer) => {
      // A stopped worker's late answer: its jobs were redone here, and the idle timer is the new one's.
      if (this.#worker !== w) return;
      const waiting = this.#waiting.get(a.id);
      this.#waiting.delete(a.id);
      if (this.#waiting.size === 0) this.#rest(w);
      if (!waiting) return;
      if ('out' in a) {
        this.answered++;
        waiting.resolve(a.out);
      } else waiting.reject(new Error(a.error));
    });
    const died = () => {
      if (this.#worker !== w) return;
      this.#deaths++;
      this.#drop();
    };
    w.once('error', died);
    w.once('exit', died);
  }

  #rest(w: Worker): void {
    w.unref();
    clearTimeout(this.#idle);
    this.#idle = setTimeout(() => {
      if (this.#worker === w && this.#waiting.size === 0) void this.stop();
    }, IDLE_MS);
    this.#idle.unref();
  }

  #drop(): void {
    clearTimeout(this.#idle);
    this.#worker = undefined;
    this.#ready = false;
    const waiting = [...this.#waiting.values()];
    this.#waiting.clear();
    for (const w of waiting) w.reject(new Error('curve worker stopped'));
  }
}

function inline(job: Job): Uint8Array {
  if (job.op === 'sign') return signAll(tiny!, job.priv, job.digests);
  return job.op === 'blind' ? blindAll(native!, job.secrets, job.rs) : unblindAll(native!, job.input);
}

export const curveThread = new CurveThread();

/** Whether locked inputs can be signed here or in the worker (else cashu-ts signs them). */
export const canSign = tiny !== undefined;

/** BIP-340 signatures by `priv` on each 32-byte digest, off the main thread once it can be. */
export async function signDigests(priv: Uint8Array, digests: Uint8Array[]): Promise<string[]> {
  const packed = new Uint8Array(digests.length * SCALAR);
  digests.forEach((d, i) => packed.set(d, i * SCALAR));
  const out = await curveThread.run({ op: 'sign', priv, digests: packed });
  return digests.map((_, i) => hex(out.subarray(i * 64, (i + 1) * 64)));
}

/** What a deferred output's proof still needs: made by toProof, finished by finishProofs. */
const unfinished = new WeakMap<Proof, { sig: SerializedBlindedSignature; K: string; out: DeferredOutputData }>();

/**
 * An output whose curve work is done in batches, off the main thread: its B_ by blindOutputs once
 * the swap is prepared, its proof's C (and the mint's DLEQ checked) by finishProofs once the mint
 * answered. Only for swaps completed by completeOurSwap, which finishes them.
 */
export class DeferredOutputData extends NativeOutputData {
  override toProof(sig: SerializedBlindedSignature, keyset: HasKeysetKeys): Proof {
    const key = sig ? keyset.keys[sig.amount.toString()] : undefined;
    if (!key) return super.toProof(sig, keyset);
    const proof: Proof = { id: sig.id, amount: sig.amount, C: '', secret: new TextDecoder().decode(this.secret) };
    if (sig.dleq) proof.dleq = { s: sig.dleq.s, e: sig.dleq.e, r: blindingHex(this) };
    unfinished.set(proof, { sig, K: key, out: this });
    return proof;
  }
}

const deferredOutput: OutputDataFactory = (amount: AmountLike, keys: HasKeysetKeys) => {
  const secret = new TextEncoder().encode(randomBytes(32).toString('hex'));
  const r = blindingFactor(native!);
  return new DeferredOutputData({ amount: Amount.from(amount), B_: '', id: keys.id }, BigInt(`0x${hex(r)}`), secret);
};

/** Random outputs blinded off the main thread (blindOutputs), as the gateway's own swaps take them. */
export function deferredOutputs(denominations?: number[]): OutputType {
  // Without libsecp256k1 there is no worker either: cashu-ts blinds, as before.
  if (!native) return denominations ? nativeOutputsSplit(denominations) : nativeOutputs;
  return { type: 'factory', factory: deferredOutput, ...(denominations && { denominations }) };
}

/** Blinds every deferred output among `outputs` that is not yet blinded (B_ = Y + rG), in one batch. */
export async function blindOutputs(outputs: readonly OutputData[] | undefined): Promise<void> {
  const todo = (outputs ?? []).filter((o): o is DeferredOutputData => o instanceof DeferredOutputData && o.blindedMessage.B_ === '');
  if (todo.length === 0) return;
  const secrets = new Uint8Array(todo.length * SECRET);
  const rs = new Uint8Array(todo.length * SCALAR);
  todo.forEach((o, i) => {
    secrets.set(o.secret, i * SECRET);
    rs.set(Buffer.from(blindingHex(o), 'hex'), i * SCALAR);
  });
  const out = await curveThread.run({ op: 'blind', secrets, rs });
  todo.forEach((o, i) => (o.blindedMessage.B_ = hex(out.subarray(i * POINT, (i + 1) * POINT))));
}

/** Whether any of `outputs` is a deferred one never blinded: it must not reach the journal or the mint. */
export function unblinded(outputs: readonly OutputData[] | undefined): boolean {
  return (outputs ?? []).some((o) => o instanceof DeferredOutputData && o.blindedMessage.B_ === '');
}

/**
 * Finishes the proofs deferred outputs made: checks each mint signature's DLEQ (NUT-12) and
 * unblinds it, in one batch. Throws as cashu-ts does when a signature does not hold.
 */
export async function finishProofs(proofs: readonly Proof[]): Promise<void> {
  const todo = proofs.filter((p) => unfinished.has(p));
  if (todo.length === 0) return;
  const input = new Uint8Array(todo.length * UNBLIND_IN);
  todo.forEach((p, i) => {
    const { sig, K, out } = unfinished.get(p)!;
    const fields = [
      exactBytes(K, POINT),
      exactBytes(sig.C_, POINT),
      exactBytes(blindingHex(out), SCALAR),
      exactBytes(out.blindedMessage.B_, POINT),
      sig.dleq ? exactBytes(sig.dleq.e, SCALAR) : new Uint8Array(SCALAR),
      sig.dleq ? exactBytes(sig.dleq.s, SCALAR) : new Uint8Array(SCALAR),
    ];
    if (fields.some((f) => f === undefined)) throw new Error(sig.dleq ? 'DLEQ verification failed on mint response' : 'Mint returned a malformed signature');
    let at = i * UNBLIND_IN;
    for (const f of fields) {
      input.set(f!, at);
      at += f!.length;
    }
    input[at] = sig.dleq ? 1 : 0;
  });
  const out = await curveThread.run({ op: 'unblind', input });
  todo.forEach((p, i) => {
    const { sig } = unfinished.get(p)!;
    if (out[i * UNBLIND_OUT] !== 1) throw new Error(sig.dleq ? 'DLEQ verification failed on mint response' : 'Mint returned a malformed signature');
  });
  todo.forEach((p, i) => {
    p.C = hex(out.subarray(i * UNBLIND_OUT + 1, (i + 1) * UNBLIND_OUT));
    unfinished.delete(p);
  });
}
