import { describe, expect, it } from 'vitest';
import { splitAmount } from '@cashu/cashu-ts';
import { changeReady } from '../../src/cashu/proofs.ts';

const KEYS = Object.fromEntries(Array.from({ length: 21 }, (_, i) => [String(2 ** i), '02aa']));
const POWERS = Object.keys(KEYS).map(Number);

/** Every amount from 0 to the sum that some subset of `parts` adds up to. */
function reachable(parts: number[]): Set<number> {
  let sums = new Set([0]);
  for (const p of parts) sums = new Set([...sums, ...[...sums].map((s) => s + p)]);
  return sums;
}

describe('changeReady', () => {
  it('splits an amount so that every smaller amount adds up exactly from its proofs', () => {
    for (const amount of [1, 2, 3, 7, 8, 37, 63, 64, 100, 129, 1000]) {
      const first = changeReady(amount, POWERS);
      const rest = amount - first.reduce((s, d) => s + d, 0);
      const parts = [...first, ...splitAmount(rest, KEYS).map((a) => a.toNumber())];
      expect(parts.reduce((s, d) => s + d, 0)).toBe(amount);
      const sums = reachable(parts);
      for (let c = 0; c <= amount; c++) expect(sums.has(c)).toBe(true);
    }
  });

  it('gives nothing for nothing, and stops where the keyset lacks a power of two', () => {
    expect(changeReady(0, POWERS)).toEqual([]);
    expect(changeReady(100, [1, 2, 8, 16])).toEqual([1, 2]);
    expect(changeReady(100, [2, 4])).toEqual([]);
  });
});
