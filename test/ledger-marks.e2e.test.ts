import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger } from '../src/main.ts';
import type { Ledger } from '../src/ledger/ledger.ts';
import { testDatabaseUrl } from './support/gateway.ts';

describe('marks shared by every instance on one ledger', () => {
  let a: Ledger;
  let b: Ledger;
  beforeAll(async () => {
    // Two handles on one database stand for two gateway processes (or one restarted).
    let url = await testDatabaseUrl();
    if (url === ':memory:') url = `sqlite:${join(mkdtempSync(join(tmpdir(), 'marks-')), 'ledger.db')}`;
    a = await openLedger(url);
    b = await openLedger(url);
  });
  afterAll(async () => {
    await a.close();
    await b.close();
  });

  it('claims an id once, across instances, until it expires', async () => {
    const later = Date.now() + 60_000;
    expect(await a.claimOnce('nip98', 'ev1', later)).toBe(true);
    expect(await b.claimOnce('nip98', 'ev1', later)).toBe(false);
    expect(await a.claimOnce('nip98', 'ev1', later)).toBe(false);
    expect(await b.claimOnce('other', 'ev1', later)).toBe(true);
    expect(await a.claimOnce('nip98', 'old', Date.now() - 1)).toBe(true);
    // An expired claim is no claim: the id may be taken again.
    expect(await b.claimOnce('nip98', 'old', later)).toBe(true);
    expect(await a.claimOnce('nip98', 'old', later)).toBe(false);
  });

  it('counts up to a limit, across instances, and starts again once expired', async () => {
    const later = Date.now() + 60_000;
    expect(await a.countUpTo('free', 'pk', 2, later)).toBe(true);
    expect(await b.countUpTo('free', 'pk', 2, later)).toBe(true);
    expect(await a.countUpTo('free', 'pk', 2, later)).toBe(false);
    expect(await b.countUpTo('free', 'pk', 2, later)).toBe(false);
    expect(await a.countUpTo('free', 'none', 0, later)).toBe(false);
    expect(await a.countUpTo('free', 'gone', 1, Date.now() - 1)).toBe(true);
    expect(await b.countUpTo('free', 'gone', 1, later)).toBe(true);
    expect(await a.countUpTo('free', 'gone', 1, later)).toBe(false);
  });

  it('keeps notes until they expire or are dropped', async () => {
    await a.putNote('topup', 'q1', 'key-a', Date.now() + 60_000);
    expect(await b.getNote('topup', 'q1')).toBe('key-a');
    await b.putNote('topup', 'q1', 'key-b', Date.now() + 60_000);
    expect(await a.getNote('topup', 'q1')).toBe('key-b');
    await a.dropNote('topup', 'q1');
    expect(await b.getNote('topup', 'q1')).toBeUndefined();
    await a.putNote('topup', 'q2', 'key-c', Date.now() - 1);
    expect(await b.getNote('topup', 'q2')).toBeUndefined();
  });
});
