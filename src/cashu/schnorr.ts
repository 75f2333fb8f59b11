import { createHash } from 'node:crypto';
import type { Proof, SwapPreview, Wallet } from '@cashu/cashu-ts';
import { isLocked, lockedOnlyTo, type P2pkKey } from './p2pk.ts';
import { canSign, finishProofs, signDigests, unblinded } from './off-loop.ts';

/**
 * Signs the inputs of our own swap that are locked to our key alone (NUT-11, SIG_INPUTS), as
 * the mint asks: a BIP-340 signature on the SHA-256 of the secret, in the witness, made by
 * libsecp256k1 (tiny-secp256k1's WebAssembly, in the curve worker once it runs: about 0.2 ms each,
 * against 2 ms for cashu-ts's pure JavaScript, for every locked proof of every sweep and refill).
 * Returns the preview to complete and the key cashu-ts must still sign the rest with, if any
 * input is not of that plain kind.
 */
export async function signOurInputs(preview: SwapPreview, key: P2pkKey): Promise<{ preview: SwapPreview; privkey: string | undefined }> {
  if (!canSign) return { preview, privkey: key.privkey };
  let rest = false;
  const ours: number[] = [];
  preview.inputs.forEach((p, i) => {
    // Any NUT-10 secret (JSON, however it is spaced) that is not plainly ours goes to cashu-ts.
    if (!p.secret.trimStart().startsWith('[')) return;
    if (!isLocked(p) || p.witness || !lockedOnlyTo(p, key.pubkey)) rest = true;
    else ours.push(i);
  });
  if (ours.length === 0) return { preview, privkey: rest ? key.privkey : undefined };
  const digests = ours.map((i) => createHash('sha256').update(preview.inputs[i]!.secret, 'utf8').digest());
  const signatures = await signDigests(Buffer.from(key.privkey, 'hex'), digests);
  const inputs = [...preview.inputs];
  ours.forEach((i, n) => (inputs[i] = { ...inputs[i]!, witness: { signatures: [signatures[n]!] } } as Proof));
  return { preview: { ...preview, inputs }, privkey: rest ? key.privkey : undefined };
}

/**
 * Completes a swap of our own proofs: those locked to our key signed here, and the proofs of
 * deferred outputs (off-loop.ts) finished once the mint answered.
 */
export async function completeOurSwap(wallet: Wallet, preview: SwapPreview, key: P2pkKey): ReturnType<Wallet['completeSwap']> {
  // A deferred output is blinded before its swap is journaled; one that is not is a bug here, and
  // must not reach the mint as an empty B_.
  if (unblinded(preview.keepOutputs) || unblinded(preview.sendOutputs)) throw new Error('swap outputs were not blinded');
  const signed = await signOurInputs(preview, key);
  const done = await wallet.completeSwap(signed.preview, signed.privkey);
  await finishProofs([...done.keep, ...done.send]);
  return done;
}
