import { describe, expect, it } from 'vitest';
import { blindMessage, hashToCurve, OutputData, pointFromHex } from '@cashu/cashu-ts';
import { hashToCurveBytes, nativeDleq, nativeOutputs } from '../../src/cashu/dleq.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('blinding in libsecp256k1 gives what the protocol and cashu-ts give', () => {
  it('the binding is loaded here, so the native path is the one tested', () => {
    expect(nativeDleq).toBe(true);
  });

  it('hash_to_curve matches the NUT-00 test vectors', () => {
    const x = (last: number) => Uint8Array.from(Buffer.from(`${'00'.repeat(31)}${last.toString(16).padStart(2, '0')}`, 'hex'));
    expect(hex(hashToCurveBytes(x(0)))).toBe('024cce997d3b518f739663b757deaec95bcd9473c30a14ac2fd04023a739d1a725');
    expect(hex(hashToCurveBytes(x(1)))).toBe('022e7158e11c9506f1aa4248bf531298daa7febd6194f003edcd9b93ade6253acf');
    // This one needs a counter past the first candidate.
    expect(hex(hashToCurveBytes(x(2)))).toBe('026cdbe15362df59cd1dd3c9c11de8aedac2106eca69236ecd9fbe117af897be4f');
  });

  it('hash_to_curve agrees with cashu-ts on random secrets', () => {
    for (let i = 0; i < 200; i++) {
      const secret = new TextEncoder().encode(Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('hex'));
      expect(hex(hashToCurveBytes(secret))).toBe(hex(hashToCurve(secret).toBytes(true)));
    }
  });

  it('a random output is B_ = Y + rG for its own secret and blinding factor, in the keyset and amount asked', () => {
    const factory = nativeOutputs.type === 'factory' ? nativeOutputs.factory : undefined;
    expect(factory).toBeDefined();
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const o = factory!(64, { id: '00abcdef01234567', keys: {} } as never) as OutputData;
      const { B_ } = blindMessage(o.secret, o.blindingFactor);
      expect(o.blindedMessage.B_).toBe(B_.toHex(true));
      expect(pointFromHex(o.blindedMessage.B_).toHex(true)).toBe(o.blindedMessage.B_);
      expect([o.blindedMessage.amount.toNumber(), o.blindedMessage.id]).toEqual([64, '00abcdef01234567']);
      seen.add(new TextDecoder().decode(o.secret));
    }
    expect(seen.size).toBe(50);
  });
});
