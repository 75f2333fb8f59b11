import { describe, expect, it } from 'vitest';
import { isLocked, lockedOnlyTo, spendableOnlyByUs } from '../../src/cashu/p2pk.ts';
import { Amount } from '@cashu/cashu-ts';

describe('isLocked', () => {
  it('tells a NUT-10 P2PK secret from a plain one', () => {
    expect(isLocked({ secret: '["P2PK",{"nonce":"ab","data":"02cd"}]' })).toBe(true);
    expect(isLocked({ secret: '9f2c4e' })).toBe(false);
    expect(isLocked({ secret: '["HTLC",{"nonce":"ab","data":"02cd"}]' })).toBe(false);
    expect(isLocked({ secret: 'x["P2PK"' })).toBe(false);
  });
});

describe('spendableOnlyByUs', () => {
  it('takes offline only a secret written as isLocked reads it: a spaced one would be stored locked but treated as plain later', () => {
    const ours = `02${'cd'.repeat(32)}`;
    const spaced = ` [ "P2PK" ,{"nonce":"ab","data":"${ours}","tags":[]}]`;
    expect(lockedOnlyTo({ secret: spaced }, ours)).toBe(true);
    expect(isLocked({ secret: spaced })).toBe(false);
    const proof = { id: '00abcdef01234567', amount: Amount.from(1), secret: spaced, C: `02${'ab'.repeat(32)}` };
    expect(spendableOnlyByUs(proof, { id: '00abcdef01234567', keys: {} } as never, ours, 0)).toBe(false);
  });
});

describe('lockedOnlyTo', () => {
  const ours = `02${'cd'.repeat(32)}`;
  const secret = (s: unknown) => ({ secret: JSON.stringify(s) });
  it("takes only NUT-10's exact shape, which the mint reads the same way", () => {
    expect(lockedOnlyTo(secret(['P2PK', { nonce: 'ab', data: ours }]), ours)).toBe(true);
    expect(lockedOnlyTo(secret(['P2PK', { nonce: 'ab', data: `03${'cd'.repeat(32)}`, tags: [['sigflag', 'SIG_INPUTS']] }]), ours)).toBe(true);
    // Each of these a mint reads as a plain secret (or a key it cannot parse), spendable by its payer.
    expect(lockedOnlyTo(secret(['P2PK', { data: ours }]), ours)).toBe(false);
    expect(lockedOnlyTo(secret(['P2PK', { nonce: 'ab', data: ours }, 0]), ours)).toBe(false);
    expect(lockedOnlyTo(secret(['P2PK', { nonce: 1, data: ours }]), ours)).toBe(false);
    expect(lockedOnlyTo(secret(['P2PK', { nonce: 'ab', data: `05${'cd'.repeat(32)}` }]), ours)).toBe(false);
    expect(lockedOnlyTo(secret(['P2PK', { nonce: 'ab', data: `02${'cd'.repeat(32)}00` }]), ours)).toBe(false);
    expect(lockedOnlyTo(secret(['P2PK', { nonce: 'ab', data: ours, extra: 1 }]), ours)).toBe(false);
    expect(lockedOnlyTo(secret(['P2PK', { nonce: 'ab', data: ours, tags: 5 }]), ours)).toBe(false);
    expect(lockedOnlyTo(secret(['P2PK', { nonce: 'ab', data: ours, tags: [['locktime', 5]] }]), ours)).toBe(false);
  });

  it('takes no secret longer than a mint may take: 512 characters at most', () => {
    const sized = (n: number) => secret(['P2PK', { nonce: 'a'.repeat(n - secret(['P2PK', { nonce: '', data: ours }]).secret.length), data: ours }]);
    expect(sized(512).secret.length).toBe(512);
    expect(lockedOnlyTo(sized(512), ours)).toBe(true);
    expect(lockedOnlyTo(sized(513), ours)).toBe(false);
  });
});
