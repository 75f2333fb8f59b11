import { describe, expect, it } from 'vitest';
import { Amount, createP2PKsecret, getPubKeyFromPrivKey, verifyP2PKSpendingConditions, type Proof, type SwapPreview } from '@cashu/cashu-ts';
import { signOurInputs } from '../../src/cashu/schnorr.ts';

const privkey = '5b0f8a1a7f6ad09c1b2a1c6f0c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f';
const key = { privkey, pubkey: Buffer.from(getPubKeyFromPrivKey(Buffer.from(privkey, 'hex'))).toString('hex') };
const other = Buffer.from(getPubKeyFromPrivKey(Buffer.from('11'.repeat(32), 'hex'))).toString('hex');
const proof = (secret: string): Proof => ({ id: '00abcdef01234567', amount: Amount.from(8), secret, C: `02${'ab'.repeat(32)}` });
const lockedTo = (pubkey: string, tags: string[][] = []) => JSON.stringify(['P2PK', { nonce: 'ab'.repeat(16), data: pubkey, tags }]);
const preview = (inputs: Proof[]) => ({ amount: Amount.from(8), fees: Amount.from(0), keysetId: '00abcdef01234567', inputs }) as unknown as SwapPreview;

describe('signing our own locked inputs (NUT-11) in libsecp256k1', () => {
  it('signs each proof locked to our key alone with a signature the protocol accepts, and leaves nothing to cashu-ts', async () => {
    const inputs = [proof(lockedTo(key.pubkey)), proof(lockedTo(key.pubkey, [['sigflag', 'SIG_INPUTS'], ['locktime', '4102444800']])), proof('plain-secret')];
    const { preview: signed, privkey: rest } = await signOurInputs(preview(inputs), key);
    expect(rest).toBeUndefined();
    expect(signed.inputs[2]).toEqual(inputs[2]);
    for (const p of signed.inputs.slice(0, 2)) expect(verifyP2PKSpendingConditions(p).success).toBe(true);
    // A signature is over the proof's own secret: moved to another proof it does not verify.
    expect(verifyP2PKSpendingConditions({ ...inputs[0]!, secret: lockedTo(key.pubkey, [['sigflag', 'SIG_INPUTS']]), witness: signed.inputs[0]!.witness }).success).toBe(false);
  });

  it('leaves a proof that is not ours alone to cashu-ts (another key, SIG_ALL, several keys), with our key to sign it', async () => {
    // A secret spaced otherwise is still P2PK to the mint: never sent on unsigned.
    const spaced = lockedTo(key.pubkey).replace('["P2PK",', ' [ "P2PK" ,');
    for (const secret of [lockedTo(other), lockedTo(key.pubkey, [['sigflag', 'SIG_ALL']]), lockedTo(key.pubkey, [['pubkeys', other]]), spaced]) {
      const { preview: signed, privkey: rest } = await signOurInputs(preview([proof(secret)]), key);
      expect(rest).toBe(privkey);
      expect(signed.inputs[0]!.witness).toBeUndefined();
    }
  });

  it('is what cashu-ts would make: a secret it creates for our key is signed the same way', async () => {
    const secret = createP2PKsecret(key.pubkey);
    const { preview: signed } = await signOurInputs(preview([proof(secret)]), key);
    expect(verifyP2PKSpendingConditions(signed.inputs[0]!).success).toBe(true);
  });
});
