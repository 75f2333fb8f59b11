import { describe, expect, it } from 'vitest';
import { isLocked } from '../../src/cashu/p2pk.ts';

describe('isLocked', () => {
  it('tells a NUT-10 P2PK secret from a plain one', () => {
    expect(isLocked({ secret: '["P2PK",{"nonce":"ab","data":"02cd"}]' })).toBe(true);
    expect(isLocked({ secret: '9f2c4e' })).toBe(false);
    expect(isLocked({ secret: '["HTLC",{"nonce":"ab","data":"02cd"}]' })).toBe(false);
    expect(isLocked({ secret: 'x["P2PK"' })).toBe(false);
  });
});
