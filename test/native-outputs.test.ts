import { describe, expect, inject, it } from 'vitest';
import { OutputData, hasValidDleq, type Proof, type SerializedBlindedSignature } from '@cashu/cashu-ts';
import { mintProofs, wallet } from './support/cashu.ts';
import { NativeOutputData, hasValidProofDleq, nativeDleq, nativeOutputs } from '../src/cashu/dleq.ts';
import { blindOutputs, curveThread, deferredOutputs, DeferredOutputData, finishProofs } from '../src/cashu/off-loop.ts';
import { completeOurSwap } from '../src/cashu/schnorr.ts';

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

describe('the gateway’s own swaps, their curve work on the worker', () => {
  const key = { privkey: '22'.repeat(32), pubkey: '' };

  it('blinds, swaps and unblinds to proofs the mint takes, each as cashu-ts makes it', async () => {
    expect(await curveThread.ready()).toBe(true);
    const w = await wallet(mintUrl);
    const preview = await w.prepareSwapToReceive(await mintProofs(mintUrl, 255), undefined, deferredOutputs([1, 2, 4]));
    expect(preview.keepOutputs!.every((o) => o instanceof DeferredOutputData)).toBe(true);
    await blindOutputs(preview.keepOutputs);
    const before = curveThread.answered;
    const { keep } = await completeOurSwap(w, preview, key);
    expect(curveThread.answered).toBe(before + 1);
    expect(keep.map((p) => p.amount.toNumber()).sort((a, b) => a - b).slice(0, 3)).toEqual([1, 2, 4]);
    expect(keep.reduce((s, p) => s + p.amount.toNumber(), 0)).toBe(255);
    const keyset = w.keyChain.getCheapestKeyset();
    // The same proofs cashu-ts makes from the same outputs and the mint's signatures, DLEQ included.
    const restored = await w.mint.restore({ outputs: preview.keepOutputs!.map((o) => o.blindedMessage) });
    const byB = new Map(preview.keepOutputs!.map((o) => [o.blindedMessage.B_, o]));
    const again = restored.signatures.map((sig, i) => viaCashuTs(byB.get(restored.outputs[i]!.B_)!, sig, keyset));
    expect(again.length).toBe(keep.length);
    expect(new Set(keep.map((p) => p.C))).toEqual(new Set(again.map((p) => p.C)));
    expect(keep.every((p) => p.C.length === 66 && p.dleq?.r)).toBe(true);
    expect((await w.checkProofsStates(keep)).map((s) => s.state)).toEqual(Array(keep.length).fill('UNSPENT'));
    const received = await w.receive({ mint: mintUrl, unit: 'sat', proofs: keep });
    expect(received.reduce((s, p) => s + p.amount.toNumber(), 0)).toBe(255);
  });

  it('refuses a mint signature whose DLEQ does not hold, as cashu-ts does, and leaves no proof behind', async () => {
    expect(await curveThread.ready()).toBe(true);
    const { keyset, outputs, signatures } = await signed(3);
    const deferred = outputs.map((o) => new DeferredOutputData(o.blindedMessage, o.blindingFactor, o.secret));
    const forged = { ...signatures[0]!, C_: signatures[1]!.C_ };
    const proofs = [deferred[0]!.toProof(forged, keyset), deferred[1]!.toProof(signatures[1]!, keyset)];
    await expect(finishProofs(proofs)).rejects.toThrow('DLEQ verification failed on mint response');
    expect(proofs.map((p) => p.C)).toEqual(['', '']);
    const good = [deferred[0]!.toProof(signatures[0]!, keyset), deferred[1]!.toProof(signatures[1]!, keyset)];
    await finishProofs(good);
    expect(good).toEqual([viaCashuTs(outputs[0]!, signatures[0]!, keyset), viaCashuTs(outputs[1]!, signatures[1]!, keyset)]);
  });

  it('does not send a deferred output that was never blinded', async () => {
    const w = await wallet(mintUrl);
    const inputs = await mintProofs(mintUrl, 4);
    const preview = await w.prepareSwapToReceive(inputs, undefined, deferredOutputs());
    await expect(completeOurSwap(w, preview, key)).rejects.toThrow('swap outputs were not blinded');
    expect((await w.checkProofsStates(inputs)).map((s) => s.state)).toEqual(Array(inputs.length).fill('UNSPENT'));
  });
});

describe('a proof’s DLEQ, checked to take a locked token offline', () => {
  it('holds for no proof cashu-ts refuses, however its hex is written, and for upper case hex as cashu-ts does', async () => {
    const w = await wallet(mintUrl);
    const [p] = await mintProofs(mintUrl, 1);
    const keyset = w.keyChain.getKeyset(p!.id);
    const variants = (v: string) => [v, v.toUpperCase(), `${v}0`, v.slice(0, -1), `${v}zz`, `${v} `, ` ${v}`, v.slice(2), `00${v}`, `${v}00`, `0x${v}`];
    const rows: Array<[string, Proof]> = [];
    for (const f of ['e', 's', 'r'] as const) variants(p!.dleq![f]!).forEach((v, i) => rows.push([`${f} #${i}`, { ...p!, dleq: { ...p!.dleq!, [f]: v } } as Proof]));
    variants(p!.C).forEach((C, i) => rows.push([`C #${i}`, { ...p!, C }]));
    const cashuTs = (proof: Proof) => {
      try {
        return hasValidDleq(proof, keyset, { require: true });
      } catch {
        return false;
      }
    };
    const looser = rows.filter(([, proof]) => hasValidProofDleq(proof, keyset) && !cashuTs(proof)).map(([name]) => name);
    expect(looser).toEqual([]);
    const held = rows.filter(([, proof]) => hasValidProofDleq(proof, keyset)).map(([name]) => name);
    expect(held).toEqual(['e #0', 'e #1', 's #0', 's #1', 'r #0', 'r #1', 'C #0', 'C #1']);
  });
});
