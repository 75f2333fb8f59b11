import { createHash, randomBytes } from 'node:crypto';
import type { Proof, SwapPreview, Wallet } from '@cashu/cashu-ts';
import { isLocked, lockedOnlyTo, type P2pkKey } from './p2pk.ts';

/**
 * BIP-340 signatures in libsecp256k1 (compiled to WebAssembly by tiny-secp256k1): about 0.2 ms
 * each, against 2 ms for cashu-ts's pure JavaScript, which signed every locked proof of every
 * sweep and refill on the event loop while requests waited. Without it, cashu-ts signs.
 */
const tiny = await import('tiny-secp256k1').catch(() => undefined);

/**
 * Signs the inputs of our own swap that are locked to our key alone (NUT-11, SIG_INPUTS), as
 * the mint asks: a Schnorr signature on the SHA-256 of the secret, in the witness. Returns the
 * preview to complete and the key cashu-ts must still sign the rest with, if any input is not
 * of that plain kind.
 */
export function signOurInputs(preview: SwapPreview, key: P2pkKey): { preview: SwapPreview; privkey: string | undefined } {
  if (!tiny) return { preview, privkey: key.privkey };
  const priv = Buffer.from(key.privkey, 'hex');
  let rest = false;
  const inputs = preview.inputs.map((p): Proof => {
    // Any NUT-10 secret (JSON, however it is spaced) that is not plainly ours goes to cashu-ts.
    if (!p.secret.trimStart().startsWith('[')) return p;
    if (!isLocked(p) || p.witness || !lockedOnlyTo(p, key.pubkey)) {
      rest = true;
      return p;
    }
    const digest = createHash('sha256').update(p.secret, 'utf8').digest();
    const signature = Buffer.from(tiny.signSchnorr(digest, priv, randomBytes(32))).toString('hex');
    return { ...p, witness: { signatures: [signature] } };
  });
  return { preview: { ...preview, inputs }, privkey: rest ? key.privkey : undefined };
}

/** Completes a swap of our own proofs, those locked to our key signed here. */
export function completeOurSwap(wallet: Wallet, preview: SwapPreview, key: P2pkKey): ReturnType<Wallet['completeSwap']> {
  const signed = signOurInputs(preview, key);
  return wallet.completeSwap(signed.preview, signed.privkey);
}
