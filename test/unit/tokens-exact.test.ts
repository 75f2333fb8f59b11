import { describe, expect, it } from 'vitest';
import { cheapToCount, countPieces, mediaTokens, tokenBound } from '../../src/engine/tokens.ts';

// Expectations by hand. cl100k splits a run of digits into groups of three from the left and has
// a token for every group ("111" is one token), so n digits are ⌈n/3⌉ tokens, and counting
// 1024-character slices apart is visible: 1025 digits are 342 tokens in one go but 342 + 1 sliced.
const digits = (n: number) => '1'.repeat(n);

describe('countPieces', () => {
  it('counts special-token look-alikes as the text they are, never refusing them', async () => {
    // As one special token it would be 1; as text it is several.
    expect(await countPieces(['<|endoftext|>'])).toBeGreaterThan(1);
  });

  it('counts nothing for empty pieces and each piece on its own', async () => {
    expect(await countPieces([])).toBe(0);
    expect(await countPieces([''])).toBe(0);
    expect(await countPieces(['', 'hello', ''])).toBe(1);
    // Three pieces of one digit are three tokens; joined they would be one.
    expect(await countPieces(['1', '1', '1'])).toBe(3);
    expect(await countPieces(['hello world', digits(9)])).toBe(5);
  });

  it('counts a piece of exactly 1024 characters once', async () => {
    expect(await countPieces([digits(1024)])).toBe(342);
    expect(await countPieces([digits(1024), digits(1024)])).toBe(684);
  });

  it('counts a longer piece a 1024-character slice at a time', async () => {
    expect(await countPieces([digits(1025)])).toBe(343);
    expect(await countPieces([digits(3000)])).toBe(1002);
  });

  it('lets other work run while it counts a long prompt', async () => {
    // 300 KB of text takes far more than the 3 ms the counter may hold the event loop for.
    let ranMeanwhile = false;
    setImmediate(() => {
      ranMeanwhile = true;
    });
    const n = await countPieces([digits(300 * 1024)]);
    expect(n).toBe(300 * 342);
    expect(ranMeanwhile).toBe(true);
  });
});

describe('cheapToCount', () => {
  it('allows up to 4096 characters in all, whatever the pieces', () => {
    expect(cheapToCount([])).toBe(true);
    expect(cheapToCount([digits(4096)])).toBe(true);
    expect(cheapToCount([digits(4097)])).toBe(false);
    expect(cheapToCount([digits(2048), digits(2048)])).toBe(true);
    expect(cheapToCount([digits(2048), digits(2049)])).toBe(false);
    expect(cheapToCount([digits(4000), digits(50), digits(50)])).toBe(false);
  });
});

describe('tokenBound', () => {
  it('is the UTF-8 byte length of all the pieces', () => {
    expect(tokenBound([])).toBe(0);
    expect(tokenBound(['abc'])).toBe(3);
    // é is 2 bytes, € 3, 🙂 4 (one character, two UTF-16 units).
    expect(tokenBound(['é', '€', '🙂'])).toBe(9);
    expect(tokenBound(['ab', '', 'cde'])).toBe(5);
  });
});

describe('mediaTokens', () => {
  it('reserves an image at 85 tokens for low detail and 1600 otherwise', () => {
    expect(mediaTokens('image', { detail: 'low' })).toBe(85);
    expect(mediaTokens('image', { detail: 'high' })).toBe(1600);
    expect(mediaTokens('image', { detail: 'auto' })).toBe(1600);
    expect(mediaTokens('image')).toBe(1600);
  });

  it('reserves audio at 32 tokens per 1,000 characters of it, at least 6000 tokens (10 minutes at OpenAI\'s rate)', () => {
    expect(mediaTokens('audio')).toBe(6000);
    expect(mediaTokens('audio', { bytes: 187_500 })).toBe(6000);
    expect(mediaTokens('audio', { bytes: 187_501 })).toBe(6001);
    expect(mediaTokens('audio', { bytes: 10_000_000, detail: 'low' })).toBe(320_000);
  });

  it('reserves a file at 3000 tokens per started 3 KB, at least one page', () => {
    expect(mediaTokens('file')).toBe(3000);
    expect(mediaTokens('file', { bytes: 0 })).toBe(3000);
    expect(mediaTokens('file', { bytes: 1 })).toBe(3000);
    expect(mediaTokens('file', { bytes: 3072 })).toBe(3000);
    expect(mediaTokens('file', { bytes: 3073 })).toBe(6000);
    expect(mediaTokens('file', { bytes: 30_720, detail: 'low' })).toBe(30_000);
  });
});
