import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { encode } from 'gpt-tokenizer/encoding/cl100k_base';
import { countTokens } from '../../src/engine/cl100k.ts';

const resolve = createRequire(import.meta.url).resolve;

/** tiktoken's own test plans (shipped with gpt-tokenizer): each sample's expected token ids. */
function plans(): Array<{ sample: string; tokens: number }> {
  const text = readFileSync(resolve('gpt-tokenizer/data/TestPlans.txt'), 'utf8');
  const out: Array<{ sample: string; tokens: number }> = [];
  for (const block of text.split(/\n\n(?=EncodingName:)/)) {
    const m = /^EncodingName: cl100k_base\nSample: (.*)\nEncoded: \[(.*)\]/s.exec(block);
    if (m) out.push({ sample: m[1]!, tokens: m[2]!.trim() === '' ? 0 : m[2]!.split(',').length });
  }
  return out;
}

/** Text no fixed sample covers: random picks from parts that stress the split and the merges. */
function soup(seed: number, n: number): string[] {
  const parts = [
    'a', 'Z', ' ', '  ', '\n', '\r\n', '\t', '1', '23', '4567', 'é', 'ß', '日本', '한국어', '🙂', '👨‍👩‍👧',
    '\ud800', '\udc00', "'s", "'LL", "'Re", '<|endoftext|>', '.', '!!!', '  \n ', '\u00a0', 'Ω', '١٢٣', '\u200b',
    'x'.repeat(50), 'antidisestablishmentarianism', 'ZGVhZGJlZWY=', '{"a":[1,2]}',
  ];
  let s = seed;
  const next = () => (s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  return Array.from({ length: n }, () => Array.from({ length: 1 + Math.floor(next() * 60) }, () => parts[Math.floor(next() * parts.length)]).join(''));
}

describe('cl100k token counts', () => {
  it("match tiktoken's own test plans", () => {
    const all = plans();
    expect(all.length).toBeGreaterThan(60);
    for (const p of all) expect({ sample: p.sample, n: countTokens(p.sample) }).toEqual({ sample: p.sample, n: p.tokens });
  });

  it('count by hand where the split is known', () => {
    expect(countTokens('')).toBe(0);
    expect(countTokens('hello world')).toBe(2);
    // Digits go in groups of three; a lone surrogate is U+FFFD's three bytes, as the upstream sees it.
    expect(countTokens('1234567')).toBe(3);
    expect(countTokens("it's")).toBe(2);
    expect(countTokens('\ud800')).toBe(countTokens('\ufffd'));
    expect(countTokens('\ufffd')).toBe(1);
  });

  it("match gpt-tokenizer's encoder on text of every kind", () => {
    const texts = [...soup(7, 1500), readFileSync(resolve('gpt-tokenizer/data/TestPlans.txt'), 'utf8'), readFileSync(new URL('../../README.md', import.meta.url), 'utf8')];
    let s = 11;
    const next = () => (s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    // Any UTF-16 unit at all, lone surrogates included.
    for (let k = 0; k < 300; k++) texts.push(Array.from({ length: 1 + Math.floor(next() * 200) }, () => String.fromCharCode(Math.floor(next() * 0x10000))).join(''));
    // Runs without a break, longer than the counter's first buffers: the merge's worst case.
    const letters = (from: number, span: number, n: number) => Array.from({ length: n }, () => String.fromCharCode(from + Math.floor(next() * span))).join('');
    texts.push('x'.repeat(5000), '가'.repeat(2000), letters(0xac00, 11172, 3000), letters(0x61, 26, 6000), letters(0x430, 32, 4000), 'ab'.repeat(3000));
    const differ = texts.filter((t) => countTokens(t) !== encode(t, { disallowedSpecial: new Set() }).length);
    expect(differ).toEqual([]);
  });
});
