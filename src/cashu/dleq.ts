import { randomBytes } from 'node:crypto';
import {
  Amount,
  OutputData,
  hasValidDleq,
  hashToCurve,
  type AmountLike,
  type HasKeysetKeys,
  type OutputDataFactory,
  type OutputType,
  type Proof,
  type SerializedBlindedSignature,
} from '@cashu/cashu-ts';
import { blindingFactor, dleqHolds, exactBytes, hex, native, nativeHashToCurve } from './curve.ts';

export const nativeDleq = native !== undefined;

const bytes = (h: string) => Uint8Array.from(Buffer.from(h, 'hex'));

/** An output's blinding factor r as the 64 hex digits the protocol writes it in. */
export const blindingHex = (o: Pick<OutputData, 'blindingFactor'>): string => o.blindingFactor.toString(16).padStart(64, '0');

/** NUT-00 hash_to_curve, by libsecp256k1 where cashu-ts takes a square root in JavaScript. */
export function hashToCurveBytes(secret: Uint8Array): Uint8Array {
  return native ? nativeHashToCurve(native, secret) : hashToCurve(secret).toBytes(true);
}

/**
 * NUT-12 DLEQ of a proof (with the sender's blinding factor r): recomputes B' = Y + rG and
 * C' = C + rA, then checks the mint's DLEQ on them.
 */
export function hasValidProofDleq(proof: Proof, keyset: HasKeysetKeys): boolean {
  if (!native) return hasValidDleq(proof, keyset, { require: true });
  const d = proof.dleq;
  const key = keyset.keys[proof.amount.toString()];
  if (!d?.e || !d.s || !d.r || !key) return false;
  // Every field exactly its bytes: Buffer.from stops at the first bad digit, so a C with a digit
  // or garbage past its 33 bytes held here, was credited and stored as sent, and the mint refuses
  // it when the sweep spends it.
  const [C0, r, e, s] = [exactBytes(proof.C, 33), exactBytes(d.r, 32), exactBytes(d.e, 32), exactBytes(d.s, 32)];
  if (!C0 || !r || !e || !s) return false;
  try {
    const A = bytes(key);
    const Y = hashToCurveBytes(new TextEncoder().encode(proof.secret));
    const B = native.publicKeyCombine([Y, native.publicKeyCreate(r)]);
    const C = native.publicKeyCombine([C0, native.publicKeyTweakMul(A, r)]);
    return dleqHolds(native, A, B, C, e, s);
  } catch {
    // A scalar out of range or a point at infinity: not a valid proof.
    return false;
  }
}

/**
 * Outputs whose mint signatures are checked (NUT-12) and unblinded (C = C' - rK) by
 * libsecp256k1. cashu-ts does the same in pure JavaScript, about 5 point multiplications per
 * output at some milliseconds each: on every swap, that blocked the event loop for longer than
 * the upstream call.
 */
export class NativeOutputData extends OutputData {
  static from(o: OutputData): NativeOutputData {
    return new NativeOutputData(o.blindedMessage, o.blindingFactor, o.secret, o.ephemeralE);
  }

  override toProof(sig: SerializedBlindedSignature, keyset: HasKeysetKeys): Proof {
    const key = sig ? keyset.keys[sig.amount.toString()] : undefined;
    if (!native || !key) return super.toProof(sig, keyset);
    const K = bytes(key);
    const C_ = bytes(sig.C_);
    const r = bytes(blindingHex(this));
    if (sig.dleq) {
      let valid = false;
      try {
        const [e, s] = [exactBytes(sig.dleq.e, 32), exactBytes(sig.dleq.s, 32)];
        valid = e !== undefined && s !== undefined && dleqHolds(native, K, bytes(this.blindedMessage.B_), C_, e, s);
      } catch {
        valid = false;
      }
      if (!valid) throw new Error('DLEQ verification failed on mint response');
    }
    const C = native.publicKeyCombine([C_, native.publicKeyNegate(native.publicKeyTweakMul(K, r))]);
    const proof: Proof = { id: sig.id, amount: sig.amount, C: hex(C), secret: new TextDecoder().decode(this.secret) };
    if (sig.dleq) proof.dleq = { s: sig.dleq.s, e: sig.dleq.e, r: hex(r) };
    return proof;
  }
}

/**
 * A random output (NUT-00: a random secret, B_ = Y + rG) blinded by libsecp256k1; cashu-ts makes
 * the same in pure JavaScript, a hash to the curve and a multiplication per output, which a swap
 * of 64 outputs paid for on the event loop.
 */
const randomOutput: OutputDataFactory = (amount: AmountLike, keys: HasKeysetKeys) => {
  if (!native) return NativeOutputData.from(OutputData.createSingleRandomData(amount, keys.id));
  const secret = new TextEncoder().encode(randomBytes(32).toString('hex'));
  const r = blindingFactor(native);
  const B_ = native.publicKeyCombine([hashToCurveBytes(secret), native.publicKeyCreate(r)]);
  return new NativeOutputData({ amount: Amount.from(amount), B_: hex(B_), id: keys.id }, BigInt(`0x${hex(r)}`), secret);
};

/** Random outputs, their signatures handled natively. */
export const nativeOutputs: OutputType = { type: 'factory', factory: randomOutput };

/** The same, split into `denominations` first (the rest as cashu-ts splits it). */
export function nativeOutputsSplit(denominations: number[]): OutputType {
  return { type: 'factory', factory: randomOutput, denominations };
}

/** Outputs locked to `pubkey` (NUT-11), their signatures handled natively. */
export function nativeLockedOutputs(pubkey: string): OutputType {
  return { type: 'factory', factory: (amount, keys) => NativeOutputData.from(OutputData.createSingleP2PKData({ pubkey }, amount, keys.id)) };
}
