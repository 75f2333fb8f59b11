import { describe, expect, it } from 'vitest';
import { Amount, getEncodedToken, type Proof } from '@cashu/cashu-ts';
import { decodeWithKeysets, resolveKeysetId } from '../../src/cashu/keysets.ts';

// NUT-00's own V4 test vector: one proof of the v1 keyset 00ad268c4d1f5826, with `=` padding.
const VECTOR = 'cashuBpGF0gaJhaUgArSaMTR9YJmFwgaNhYQFhc3hAOWE2ZGJiODQ3YmQyMzJiYTc2ZGIwZGYxOTcyMTZiMjlkM2I4Y2MxNDU1M2NkMjc4MjdmYzFjYzk0MmZlZGI0ZWFjWCEDhhhUP_trhpXfStS6vN6So0qWvc2X3O4NfM-Y1HISZ5JhZGlUaGFuayB5b3VhbXVodHRwOi8vbG9jYWxob3N0OjMzMzhhdWNzYXQ=';
const V1 = { id: '00ad268c4d1f5826', unit: 'sat' };
const v2 = (tail: string, unit = 'sat') => ({ id: `01${tail.repeat(64 / tail.length)}`, unit });
const A = v2('a1b2c3d4');
const B = v2('a1b2c3d4', 'msat'); // same first 8 bytes as A: a mint that lists both makes A's short id ambiguous
const C = v2('77');

function proof(id: string, amount: number): Proof {
  return { id, amount: Amount.from(amount), secret: `secret-${amount}-${id.slice(-4)}`, C: `02${'c3'.repeat(32)}` };
}

/** A cashuB as every cashu-ts wallet writes it: keyset ids cut to their 8-byte short form. */
const tokenOf = (...proofs: Proof[]) => getEncodedToken({ mint: 'http://mint.test', unit: 'sat', proofs });

describe('resolving keyset ids (NUT-02)', () => {
  it('takes a v1 id, a full v2 id and a short v2 id to the mint keyset they name', () => {
    expect(resolveKeysetId(V1.id, [V1, A, C])).toBe(V1);
    expect(resolveKeysetId(A.id, [V1, A, C])).toBe(A);
    expect(resolveKeysetId(A.id.slice(0, 16), [V1, A, C])).toBe(A);
    expect(resolveKeysetId(A.id.slice(0, 16).toUpperCase(), [V1, A, C])).toBe(A);
    expect(resolveKeysetId(A.id, [A, B])).toBe(A);
  });

  it('refuses a short id two keysets share, and ids the mint does not list', () => {
    expect(() => resolveKeysetId(A.id.slice(0, 16), [A, B])).toThrow(expect.objectContaining({ code: 'ambiguous_keyset_id' }));
    for (const id of [C.id.slice(0, 16), '00ffd48b8f5ecf80', A.id.slice(0, 18), A.id.slice(0, 14), `${C.id.slice(0, 65)}8`, 'I2yN+iRYfkzT']) {
      expect(() => resolveKeysetId(id, [V1, A]), id).toThrow(expect.objectContaining({ code: 'unknown_keyset' }));
    }
  });
});

describe('decoding a token against its mint keysets', () => {
  it('gives short ids back in full, in every encoding NUT-00 allows', () => {
    const token = tokenOf(proof(A.id, 1), proof(A.id, 4), proof(C.id, 2));
    expect(token).toContain('cashuB');
    const body = token.slice(6);
    const std = body.replace(/-/g, '+').replace(/_/g, '/');
    const padded = (s: string) => s + '='.repeat((4 - (s.length % 4)) % 4);
    for (const variant of [token, `cashuB${padded(body)}`, `cashuB${std}`, `cashuB${padded(std)}`]) {
      const decoded = decodeWithKeysets(variant, [V1, A, C], 'sat');
      expect(decoded.proofs.map((p) => [p.id, p.amount.toNumber()]), variant.slice(0, 12)).toEqual([[A.id, 1], [A.id, 4], [C.id, 2]]);
    }
    const json = { token: [{ mint: 'http://mint.test', proofs: [{ id: A.id.slice(0, 16), amount: 8, secret: 's', C: `02${'c3'.repeat(32)}` }] }], unit: 'sat' };
    for (const enc of ['base64url', 'base64'] as const) {
      const cashuA = `cashuA${Buffer.from(JSON.stringify(json)).toString(enc)}`;
      expect(decodeWithKeysets(cashuA, [A], 'sat').proofs.map((p) => p.id)).toEqual([A.id]);
    }
    expect(decodeWithKeysets(VECTOR, [V1], 'sat').proofs.map((p) => [p.id, p.amount.toNumber()])).toEqual([[V1.id, 1]]);
  });

  it('refuses before any mint call: ambiguous, unknown, or another unit keyset', () => {
    const token = tokenOf(proof(A.id, 1));
    expect(() => decodeWithKeysets(token, [A, B], 'sat')).toThrow(expect.objectContaining({ code: 'ambiguous_keyset_id' }));
    expect(() => decodeWithKeysets(token, [V1, C], 'sat')).toThrow(expect.objectContaining({ code: 'unknown_keyset' }));
    expect(() => decodeWithKeysets(tokenOf(proof(B.id, 1)), [B], 'sat')).toThrow(expect.objectContaining({ code: 'keyset_unit_mismatch' }));
    expect(() => decodeWithKeysets('cashuBnot-a-token', [A], 'sat')).toThrow(expect.objectContaining({ code: 'invalid_cashu_token' }));
  });
});
