import { createRequire } from 'node:module';
import { createHash, randomBytes } from 'node:crypto';

/**
 * The curve work of blinding, checking and unblinding, on bytes only, so that the main thread and
 * the curve worker (curve-worker.ts) run the same code.
 */

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
 * libsecp256k1 when its prebuilt binding loads (about 2 ms for an 8-proof token), else undefined
 * and cashu-ts's own pure JavaScript does the work (about 50 ms for the same token).
 */
export const native: Secp256k1 | undefined = (() => {
  try {
    return createRequire(import.meta.url)('secp256k1/bindings') as Secp256k1;
  } catch {
    return undefined;
  }
})();

export const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

const HEX = /^[0-9a-fA-F]*$/;

/** The bytes of a hex string of exactly `length` bytes, else undefined (Buffer.from stops at the first bad digit). */
export function exactBytes(h: string, length: number): Uint8Array | undefined {
  return h.length === length * 2 && HEX.test(h) ? Uint8Array.from(Buffer.from(h, 'hex')) : undefined;
}

const DOMAIN = Buffer.from('Secp256k1_HashToCurve_Cashu_');

/**
 * NUT-00 hash_to_curve, the point whose x is the first hash of (the secret's hash, a counter) that
 * lies on the curve: libsecp256k1 decompresses each candidate.
 */
export function nativeHashToCurve(lib: Secp256k1, secret: Uint8Array): Uint8Array {
  const msg = createHash('sha256').update(DOMAIN).update(secret).digest();
  const counter = Buffer.alloc(4);
  const candidate = Buffer.alloc(33);
  candidate[0] = 2;
  for (let i = 0; i < 2 ** 16; i++) {
    counter.writeUInt32LE(i);
    createHash('sha256').update(msg).update(counter).digest().copy(candidate, 1);
    try {
      return lib.publicKeyConvert(candidate, true);
    } catch {
      // Not an x on the curve: the next counter.
    }
  }
  throw new Error('No valid point found');
}

/** NUT-12: with R1 = sG - eA and R2 = sB' - eC', e must equal hash(R1, R2, A, C'). */
export function dleqHolds(lib: Secp256k1, A: Uint8Array, B: Uint8Array, C: Uint8Array, e: Uint8Array, s: Uint8Array): boolean {
  const R1 = lib.publicKeyCombine([lib.publicKeyCreate(s), lib.publicKeyNegate(lib.publicKeyTweakMul(A, e))]);
  const R2 = lib.publicKeyCombine([lib.publicKeyTweakMul(B, s), lib.publicKeyNegate(lib.publicKeyTweakMul(C, e))]);
  const uncompressed = [R1, R2, A, C].map((p) => hex(lib.publicKeyConvert(p, false))).join('');
  return createHash('sha256').update(uncompressed, 'utf8').digest().equals(e);
}

/** A fresh blinding factor: 32 random bytes that are a valid scalar. */
export function blindingFactor(lib: Secp256k1): Uint8Array {
  let r = randomBytes(32);
  while (!lib.privateKeyVerify(r)) r = randomBytes(32);
  return r;
}

/** The sizes of one output in a packed batch (see blindAll and unblindAll). */
export const SECRET = 64;
export const POINT = 33;
export const SCALAR = 32;
export const UNBLIND_IN = 2 * POINT + SCALAR + POINT + 2 * SCALAR + 1;
export const UNBLIND_OUT = 1 + POINT;

/**
 * B_ = Y + rG for each of a batch: `secrets` holds SECRET bytes an output (the hex secret's
 * characters), `rs` SCALAR bytes; returns POINT bytes an output.
 */
export function blindAll(lib: Secp256k1, secrets: Uint8Array, rs: Uint8Array): Uint8Array {
  const n = rs.length / SCALAR;
  const out = new Uint8Array(n * POINT);
  for (let i = 0; i < n; i++) {
    const Y = nativeHashToCurve(lib, secrets.subarray(i * SECRET, (i + 1) * SECRET));
    out.set(lib.publicKeyCombine([Y, lib.publicKeyCreate(rs.subarray(i * SCALAR, (i + 1) * SCALAR))]), i * POINT);
  }
  return out;
}

/**
 * Checks each signature's DLEQ and unblinds it (C = C_ - rK). An input is K, C_, r, B_, e, s and
 * a flag (1: it has a DLEQ to check); an output is a status (1: good, 0: the DLEQ does not hold or
 * a point is not on the curve) and C.
 */
export function unblindAll(lib: Secp256k1, input: Uint8Array): Uint8Array {
  const n = input.length / UNBLIND_IN;
  const out = new Uint8Array(n * UNBLIND_OUT);
  for (let i = 0; i < n; i++) {
    let at = i * UNBLIND_IN;
    const take = (len: number) => input.subarray(at, (at += len));
    const [K, C_, r, B_, e, s] = [take(POINT), take(POINT), take(SCALAR), take(POINT), take(SCALAR), take(SCALAR)];
    const checked = input[at] === 1;
    try {
      if (checked && !dleqHolds(lib, K, B_, C_, e, s)) continue;
      out.set(lib.publicKeyCombine([C_, lib.publicKeyNegate(lib.publicKeyTweakMul(K, r))]), i * UNBLIND_OUT + 1);
      out[i * UNBLIND_OUT] = 1;
    } catch {
      // A scalar out of range or a point not on the curve: left as status 0.
    }
  }
  return out;
}

/** BIP-340 signing, from tiny-secp256k1 (libsecp256k1 in WebAssembly). */
export interface Schnorr {
  signSchnorr(digest: Uint8Array, priv: Uint8Array, aux: Uint8Array): Uint8Array;
}

/** A BIP-340 signature by `priv` on each SCALAR-byte digest of `digests`, 64 bytes each. */
export function signAll(lib: Schnorr, priv: Uint8Array, digests: Uint8Array): Uint8Array {
  const n = digests.length / SCALAR;
  const out = new Uint8Array(n * 64);
  for (let i = 0; i < n; i++) out.set(lib.signSchnorr(digests.subarray(i * SCALAR, (i + 1) * SCALAR), priv, randomBytes(32)), i * 64);
  return out;
}
