import { describe, expect, inject, it } from 'vitest';
import { OutputData, type Proof, type SerializedBlindedSignature } from '@cashu/cashu-ts';
import { mintProofs, wallet } from './support/cashu.ts';
import { NativeOutputData, nativeDleq, nativeOutputs } from '../src/cashu/dleq.ts';

const mintUrl = inject('mintUrl');

/** Real signatures from nutshell for fresh outputs, and the keyset that made them. */
async function signed(amount: number) {
  const w = await wallet(mintUrl);
  const keyset = w.keyChain.getCheapestKeyset();
  const outputs = OutputData.createRandomData(amount, keyset).map(NativeOutputData.from);
  const inputs = await mintProofs(mintUrl, amount);
  const { signatures } = await w.mint.swap({
    inputs: inputs.map((p) => ({ id: p.id, amount: p.amount, secret: p.secret, C: p.C })),
    outputs: outputs.map((o) => o.blindedMessage),
  });
  return { w, keyset, outputs, signatures };
}

const viaCashuTs = (o: OutputData, sig: SerializedBlindedSignature, keyset: Parameters<OutputData['toProof']>[1]): Proof =>
  OutputData.prototype.toProof.call(o, sig, keyset);

describe('mint signatures checked and unblinded by libsecp256k1', () => {
  it('loads the native binding on this machine', () => {
    expect(nativeDleq).toBe(true);
  });

  it('makes exactly the proofs cashu-ts makes, and the mint takes them', async () => {
    const { w, keyset, outputs, signatures } = await signed(255);
    expect(signatures.length).toBe(8);
    const proofs = outputs.map((o, i) => o.toProof(signatures[i]!, keyset));
    expect(proofs).toEqual(outputs.map((o, i) => viaCashuTs(o, signatures[i]!, keyset)));
    expect(proofs.every((p) => p.dleq?.r && p.dleq.e && p.dleq.s)).toBe(true);
    expect((await w.checkProofsStates(proofs)).map((s) => s.state)).toEqual(Array(8).fill('UNSPENT'));
    const received = await w.receive({ mint: mintUrl, unit: 'sat', proofs });
    expect(received.reduce((s, p) => s + p.amount.toNumber(), 0)).toBe(255);
  });

  it('refuses a signature whose DLEQ does not hold, as cashu-ts does', async () => {
    const { keyset, outputs, signatures } = await signed(3);
    const sig = signatures[0]!;
    const forged = { ...sig, C_: signatures[1]!.C_ };
    expect(() => outputs[0]!.toProof(forged, keyset)).toThrow('DLEQ verification failed');
    expect(() => viaCashuTs(outputs[0]!, forged, keyset)).toThrow('DLEQ verification failed');
    const badE = { ...sig, dleq: { ...sig.dleq!, e: sig.dleq!.s } };
    expect(() => outputs[0]!.toProof(badE, keyset)).toThrow('DLEQ verification failed');
  });

  it('is what the gateway wallet asks cashu-ts for', async () => {
    const w = await wallet(mintUrl);
    const preview = await w.prepareSwapToReceive(await mintProofs(mintUrl, 10), undefined, nativeOutputs);
    expect(preview.keepOutputs!.length).toBeGreaterThan(0);
    expect(preview.keepOutputs!.every((o) => o instanceof NativeOutputData)).toBe(true);
    const { keep } = await w.completeSwap(preview);
    expect(keep.reduce((s, p) => s + p.amount.toNumber(), 0)).toBe(10);
  });
});
