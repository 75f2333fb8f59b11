import { describe, expect, it } from 'vitest';
import { Amount, blindMessage, createP2PKsecret, getPubKeyFromPrivKey, verifyP2PKSpendingConditions, type OutputData } from '@cashu/cashu-ts';
import { createHash } from 'node:crypto';
import { blindingFactor, native, unblindAll, UNBLIND_IN } from '../../src/cashu/curve.ts';
import { blindOutputs, curveThread, deferredOutputs, DeferredOutputData, signDigests, unblinded } from '../../src/cashu/off-loop.ts';

const factory = (() => {
  const t = deferredOutputs();
  return t.type === 'factory' ? t.factory : undefined;
})()!;
const keys = { id: '00abcdef01234567', keys: {} } as never;

describe('the curve worker', () => {
  it('starts here, so the worker path is the one tested', async () => {
    expect(native).toBeDefined();
    expect(await curveThread.ready()).toBe(true);
  });

  it('blinds deferred outputs in one batch to B_ = Y + rG, on the worker', async () => {
    expect(await curveThread.ready()).toBe(true);
    const outputs = Array.from({ length: 40 }, (_, i) => factory(2 ** (i % 8), keys) as OutputData);
    expect(outputs.every((o) => o instanceof DeferredOutputData && o.blindedMessage.B_ === '')).toBe(true);
    expect(unblinded(outputs)).toBe(true);
    const before = curveThread.answered;
    await blindOutputs(outputs);
    expect(curveThread.answered).toBe(before + 1);
    expect(unblinded(outputs)).toBe(false);
    for (const o of outputs) expect(o.blindedMessage.B_).toBe(blindMessage(o.secret, o.blindingFactor).B_.toHex(true));
    expect(new Set(outputs.map((o) => o.blindedMessage.B_)).size).toBe(40);
  });

  it('signs as NUT-11 asks, each proof with its own signature, on the worker', async () => {
    expect(await curveThread.ready()).toBe(true);
    const priv = blindingFactor(native!);
    const pubkey = Buffer.from(getPubKeyFromPrivKey(priv)).toString('hex');
    const proofs = Array.from({ length: 5 }, () => ({ id: '00abcdef01234567', amount: Amount.from(8), secret: createP2PKsecret(pubkey), C: `02${'ab'.repeat(32)}` }));
    const before = curveThread.answered;
    const signatures = await signDigests(priv, proofs.map((p) => createHash('sha256').update(p.secret, 'utf8').digest()));
    expect(curveThread.answered).toBe(before + 1);
    const signed = proofs.map((p, i) => ({ ...p, witness: { signatures: [signatures[i]!] } }));
    expect(signed.map((p) => verifyP2PKSpendingConditions(p).success)).toEqual([true, true, true, true, true]);
    // Each is over its own secret.
    expect(verifyP2PKSpendingConditions({ ...signed[0]!, witness: signed[1]!.witness }).success).toBe(false);
  });

  it('a job whose worker is stopped under it is done on the main thread, with the same answer', async () => {
    expect(await curveThread.ready()).toBe(true);
    // Garbage points: every item fails, the same way in both places.
    const input = crypto.getRandomValues(new Uint8Array(3 * UNBLIND_IN));
    const before = curveThread.answered;
    const job = curveThread.run({ op: 'unblind', input });
    await curveThread.stop();
    expect(await job).toEqual(unblindAll(native!, input));
    expect(curveThread.answered).toBe(before);
    // A later job starts a new worker.
    expect(await curveThread.ready()).toBe(true);
    expect(await curveThread.run({ op: 'unblind', input })).toEqual(unblindAll(native!, input));
    expect(curveThread.answered).toBe(before + 1);
  });
});
