import { describe, expect, it } from 'vitest';
import { isOwnBug } from '../../src/main.ts';
import { demandedPow } from '../../src/nostr/relays.ts';

describe('what an unhandled rejection does to the process', () => {
  it('keeps running for what a peer caused, and exits for a programming error of our own', () => {
    // nostr-tools' rejection when a relay never OKs an AUTH, and the strings it rejects with.
    expect(isOwnBug(new Error('auth timed out'))).toBe(false);
    expect(isOwnBug('connection failed')).toBe(false);
    // undici's TypeError for a refused connection is raised inside Node, not by us.
    const fetchFailed = new TypeError('fetch failed');
    fetchFailed.stack = 'TypeError: fetch failed\n    at node:internal/deps/undici/undici:13502:13';
    expect(isOwnBug(fetchFailed)).toBe(false);
    const library = new TypeError("Cannot read properties of undefined (reading 'filters')");
    library.stack = `TypeError: x\n    at AbstractRelay._onmessage (file:///app/node_modules/nostr-tools/lib/esm/abstract-pool.js:482:42)`;
    expect(isOwnBug(library)).toBe(false);
    let ours: unknown;
    try {
      (undefined as unknown as { x: () => void }).x();
    } catch (e) {
      ours = e;
    }
    expect(isOwnBug(ours)).toBe(true);
  });
});

describe('the difficulty a relay demands', () => {
  it('reads NIP-01 pow: reasons and the "N PoW required" form, and nothing else', () => {
    expect(demandedPow('pow: difficulty 12 is less than 20')).toBe(20);
    expect(demandedPow('pow: difficulty 25>=30')).toBe(30);
    expect(demandedPow('rejected: 16 PoW required')).toBe(16);
    expect(demandedPow('auth-required: we only accept events from registered users')).toBeUndefined();
    expect(demandedPow('blocked: no pow for you')).toBeUndefined();
  });
});
