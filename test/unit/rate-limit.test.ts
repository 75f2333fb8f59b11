import { describe, expect, it } from 'vitest';
import { Buckets } from '../../src/http/rate-limit.ts';
import { mintEndpoint } from '../../src/http/mint-timing.ts';

describe('token buckets', () => {
  it('lets a burst of the per-minute number through, then one request per refill interval', () => {
    const b = new Buckets(5);
    const t0 = 1_000_000;
    expect([1, 2, 3, 4, 5].map(() => b.take('a', t0))).toEqual([0, 0, 0, 0, 0]);
    // 5 a minute: one more every 12 s.
    expect(b.take('a', t0)).toBe(12);
    expect(b.take('a', t0 + 6_000)).toBe(6);
    expect(b.take('a', t0 + 11_001)).toBe(1);
    expect(b.take('a', t0 + 12_000)).toBe(0);
    expect(b.take('a', t0 + 12_000)).toBe(12);
    // Another client has its own bucket.
    expect(b.take('b', t0 + 12_000)).toBe(0);
  });

  it('never holds more than the per-minute number, and forgets clients whose bucket refilled', () => {
    const b = new Buckets(2);
    const t0 = 0;
    b.take('a', t0);
    b.take('b', t0);
    b.take('b', t0);
    expect(b.size).toBe(2);
    // An hour idle refills to 2, not 120.
    expect([b.take('a', 3_600_000), b.take('a', 3_600_000), b.take('a', 3_600_000)]).toEqual([0, 0, 30]);
    b.sweep(3_600_000 + 60_000);
    expect(b.size).toBe(0);
    b.take('c', 0);
    b.sweep(29_999);
    expect(b.size).toBe(1);
  });
});

describe('mint endpoint labels', () => {
  it('match a mint by URL prefix, including a mint under a path, and fold ids', () => {
    const mints = ['http://127.0.0.1:3338', 'https://mint.example/Bitcoin'];
    expect(mintEndpoint('http://127.0.0.1:3338/v1/swap', mints)).toEqual({ mint: 'http://127.0.0.1:3338', endpoint: '/v1/swap' });
    expect(mintEndpoint('https://mint.example/Bitcoin/v1/keys/00ad268c4d1f5826?x=1', mints)).toEqual({
      mint: 'https://mint.example/Bitcoin',
      endpoint: '/v1/keys/:id',
    });
    expect(mintEndpoint('http://127.0.0.1:3338/v1/mint/quote/bolt11/dBk3bCqmdjrtbGAd-L1Jk0jM8yKYmf3BxcQpcb9-', mints)!.endpoint).toBe('/v1/mint/quote/bolt11/:id');
    // Another port, or a host that merely starts the same, is not the mint.
    expect(mintEndpoint('http://127.0.0.1:33380/v1/swap', mints)).toBeUndefined();
    expect(mintEndpoint('https://mint.example/Bitcoin2/v1/swap', mints)).toBeUndefined();
  });
});
