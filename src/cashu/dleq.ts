import { createRequire } from 'node:module';
import { createHash, randomBytes } from 'node:crypto';
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

/** The few libsecp256k1 calls we need, from the `secp256k1` package's N-API binding. */
interface Secp256k1 {
  publicKeyCreate(seckey: Uint8Array, compressed?: boolean): Uint8Array;
  publicKeyCombine(keys: Uint8Array[], compressed?: boolean): Uint8Array;
  publicKeyNegate(key: Uint8Array, compressed?: boolean): Uint8Array;
  publicKeyTweakMul(key: Uint8Array, tweak: Uint8Array, compressed?: boolean): Uint8Array;
  publicKeyConvert(key: Uint8Array, compressed?: boolean): Uint8Array;
  privateKeyVerify(seckey: Uint8Array): boolean;
}

/**
 * libsecp256k1 when its prebuilt binding loads (about 2 ms for an 8-proof token), else cashu-ts's
 * own check (pure JavaScript, constant-time multiplications: about 50 ms for the same token).
 */
const native: Secp256k1 | undefined = (() => {
  try {
    return createRequire(import.meta.url)('secp256k1/bindings') as Secp256k1;
  } catch {
    return undefined;
  }
})();

export const nativeDleq = native !== undefined;

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const bytes = (h: string) => Uint8Array.from(Buffer.from(h, 'hex'));

const DOMAIN = Buffer.from('Secp256k1_HashToCurve_Cashu_');

/**
 * NUT-00 hash_to_curve, the point whose x is the first hash of (the secret's hash, a counter) that
 * lies on the curve: libsecp256k1 decompresses each candidate, where cashu-ts takes a square root
 * in pure JavaScript for every proof checked and every output made.
 */
export function hashToCurveBytes(secret: Uint8Array): Uint8Array {
  if (!native) return hashToCurve(secret).toBytes(true);
  const msg = createHash('sha256').update(DOMAIN).update(secret).digest();
  const counter = Buffer.alloc(4);
  const candidate = Buffer.alloc(33);
  candidate[0] = 2;
  for (let i = 0; i < 2 ** 16; i++) {
    counter.writeUInt32LE(i);
    createHash('sha256').update(msg).update(counter).digest().copy(candidate, 1);
    try {
      return native.publicKeyConvert(candidate, true);
    } catch {
      // Not an x on the curve: the next counter.
    }
  }
  throw new Error('No valid point found');
}

/** NUT-12: with R1 = sG - eA and R2 = sB' - eC', e must equal hash(R1, R2, A, C'). */
function dleqHolds(lib: Secp256k1, A: Uint8Array, B: Uint8Array, C: Uint8Array, e: Uint8Array, s: Uint8Array, eHex: string): boolean {
  const R1 = lib.publicKeyCombine([lib.publicKeyCreate(s), lib.publicKeyNegate(lib.publicKeyTweakMul(A, e))]);
  const R2 = lib.publicKeyCombine([lib.publicKeyTweakMul(B, s), lib.publicKeyNegate(lib.publicKeyTweakMul(C, e))]);
  const uncompressed = [R1, R2, A, C].map((p) => hex(lib.publicKeyConvert(p, false))).join('');
  return createHash('sha256').update(uncompressed, 'utf8').digest('hex') === eHex.toLowerCase();
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
  try {
    const A = bytes(key);
    const r = bytes(d.r);
    const Y = hashToCurveBytes(new TextEncoder().encode(proof.secret));
    const B = native.publicKeyCombine([Y, native.publicKeyCreate(r)]);
    const C = native.publicKeyCombine([bytes(proof.C), native.publicKeyTweakMul(A, r)]);
    return dleqHolds(native, A, B, C, bytes(d.e), bytes(d.s), d.e);
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
    const r = bytes(this.blindingFactor.toString(16).padStart(64, '0'));
    if (sig.dleq) {
      let valid = false;
      try {
        valid = dleqHolds(native, K, bytes(this.blindedMessage.B_), C_, bytes(sig.dleq.e), bytes(sig.dleq.s), sig.dleq.e);
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
  let r = randomBytes(32);
  while (!native.privateKeyVerify(r)) r = randomBytes(32);
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
