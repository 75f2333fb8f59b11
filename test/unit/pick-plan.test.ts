import { describe, expect, it } from 'vitest';
import { meltFee, pickPlan, swapFee, type StoredProof } from '../../src/ledger/ledger.ts';

/** The plan as a plain object, largest denomination first, so a stray zero entry shows. */
const plan = (counts: Array<[number, number]>, amount: number) => {
  const p = pickPlan(counts, amount);
  return p && Object.fromEntries([...p].sort((a, b) => b[0] - a[0]));
};

const proofs = (...amounts: number[]): StoredProof[] => amounts.map((amount, i) => ({ secret: `s${i}`, id: '00ad', amount, C: '02' }));

const fewest = (counts: Array<[number, number]>, amount: number) => {
  const p = pickPlan(counts, amount, true);
  return p && Object.fromEntries([...p].sort((a, b) => b[0] - a[0]));
};

describe('pickPlan for a swap (fewest proofs, exact or not)', () => {
  it('takes one large proof rather than thirty small ones that add up exactly', () => {
    expect(plan([[128, 1], [8, 8], [4, 9], [2, 9], [1, 8]], 125)).toStrictEqual({ 8: 8, 4: 9, 2: 9, 1: 7 });
    expect(fewest([[128, 1], [8, 8], [4, 9], [2, 9], [1, 8]], 125)).toStrictEqual({ 128: 1 });
  });

  it('takes two of a denomination rather than running down the smaller ones', () => {
    // 125 from 64, 64, 16 × 3, 8, 4, 1: 64 + 16 × 3 + 8 + 4 + 1 is exact but six proofs.
    expect(fewest([[64, 2], [16, 3], [8, 1], [4, 1], [1, 1]], 125)).toStrictEqual({ 64: 2 });
  });

  it('keeps an exact plan that is already the fewest, and says when nothing covers the amount', () => {
    expect(fewest([[64, 1], [32, 1], [16, 1], [8, 2]], 112)).toStrictEqual({ 64: 1, 32: 1, 16: 1 });
    expect(fewest([[8, 2]], 17)).toBeUndefined();
    expect(fewest([[8, 2]], 0)).toStrictEqual({});
  });

  it('on a tie in proofs, keeps the exact plan: nothing to give back', () => {
    // 24: 16 + 8 exactly (two proofs), or 16 × 2 (two proofs, 8 over).
    expect(fewest([[16, 2], [8, 1]], 24)).toStrictEqual({ 16: 1, 8: 1 });
  });

  it('on a tie between inexact plans, keeps the first found: the larger proof', () => {
    // 19 with no 1s or 2s: 16 + 8 and 16 + 4 are both two proofs; the search meets 16 + 8 first.
    expect(fewest([[16, 1], [8, 5], [4, 5]], 19)).toStrictEqual({ 16: 1, 8: 1 });
  });

  it('when nothing adds up exactly, takes the fewest that cover it, not the greedy run plus one', () => {
    // 25 from 16, 16, 8: greedy 16 + 8 leaves 1 and would add a 16 (three proofs); 16 × 2 is two.
    expect(fewest([[16, 2], [8, 1]], 25)).toStrictEqual({ 16: 2 });
  });
});

describe('pickPlan', () => {
  it('takes nothing for nothing', () => {
    expect(plan([[8, 1]], 0)).toStrictEqual({});
    expect(plan([], 0)).toStrictEqual({});
  });

  it('finds an exact match largest first, whatever order the counts come in', () => {
    // 26 = 3 × 8 + 2 × 1
    expect(plan([[1, 3], [8, 5]], 26)).toStrictEqual({ 8: 3, 1: 2 });
    expect(plan([[8, 5], [1, 3]], 26)).toStrictEqual({ 8: 3, 1: 2 });
    // 37 = 32 + 4 + 1, skipping 64 and 8
    expect(plan([[4, 1], [64, 1], [1, 1], [32, 1], [8, 1]], 37)).toStrictEqual({ 32: 1, 4: 1, 1: 1 });
  });

  it('takes every proof when they add up to exactly the amount', () => {
    expect(plan([[8, 1], [2, 1]], 10)).toStrictEqual({ 8: 1, 2: 1 });
    expect(plan([[4, 3]], 12)).toStrictEqual({ 4: 3 });
  });

  it('adds one more of the smallest denomination with proofs left when no exact match exists', () => {
    // 30 from 64, 16, 8: 16 + 8 leaves 6; the smallest with a proof left is 64.
    expect(plan([[64, 1], [16, 1], [8, 1]], 30)).toStrictEqual({ 64: 1, 16: 1, 8: 1 });
    // 10 from 64 and 32: nothing fits; 32 is the smallest left.
    expect(plan([[64, 1], [32, 1]], 10)).toStrictEqual({ 32: 1 });
    // 20 from two 16s: one fits, the other covers the 4 left.
    expect(plan([[16, 2]], 20)).toStrictEqual({ 16: 2 });
    // 9 from 8, 8, 4: 8 taken, 1 left; 4 is smaller than the other 8 and has a proof left.
    expect(plan([[8, 2], [4, 1]], 9)).toStrictEqual({ 8: 1, 4: 1 });
    // 7 from 8, 2, 2: both 2s fit (3 left), the 8 is the only one left.
    expect(plan([[2, 2], [8, 1]], 7)).toStrictEqual({ 8: 1, 2: 2 });
  });

  it('cannot cover an amount larger than every proof together', () => {
    expect(plan([[4, 1], [2, 1], [1, 1]], 8)).toBeUndefined();
    // Every proof taken and 1 still missing: nothing is left to add.
    expect(plan([[8, 1], [2, 1]], 11)).toBeUndefined();
    expect(plan([], 1)).toBeUndefined();
  });

  it('does not change the counts it was given', () => {
    const counts: Array<[number, number]> = [[1, 3], [8, 5]];
    pickPlan(counts, 26);
    expect(counts).toStrictEqual([[1, 3], [8, 5]]);
  });
});

describe('swapFee', () => {
  it('is what went in minus what was kept and what was paid out', () => {
    // 8 + 4 + 2 in, 1 kept, 10 paid out: 3.
    expect(swapFee(proofs(8, 4, 2), proofs(1), 10)).toBe(3);
    expect(swapFee(proofs(8, 4, 2), [], 14)).toBe(0);
    expect(swapFee(proofs(8), proofs(4, 2, 1), 0)).toBe(1);
  });

  it('is never negative', () => {
    expect(swapFee(proofs(4), proofs(4), 2)).toBe(0);
    expect(swapFee([], [], 5)).toBe(0);
  });
});

describe('meltFee', () => {
  it('is what went in minus the change and the amount paid', () => {
    // 16 + 8 in, 2 back, 20 paid: 2.
    expect(meltFee(proofs(16, 8), proofs(2), 20)).toBe(2);
    expect(meltFee(proofs(16, 4), proofs(1, 2), 16)).toBe(1);
  });

  it('shows a mint that returned more than it was owed as a negative fee', () => {
    expect(meltFee(proofs(8), [], 10)).toBe(-2);
    expect(meltFee(proofs(8), proofs(4), 5)).toBe(-1);
  });
});
