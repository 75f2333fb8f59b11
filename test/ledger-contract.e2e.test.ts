import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { openLedger } from '../src/main.ts';
import { OPERATOR, type Ledger, type NewChildKey, type StoredProof, type Totals } from '../src/ledger/ledger.ts';
import { durableDatabaseUrl } from './support/gateway.ts';
import { PostgresProxy } from './support/pg-proxy.ts';

/**
 * The Ledger's contract, run on whichever engine this project tests: no mint and no HTTP, proofs
 * are rows with made-up secrets. After every case the money adds up, and the running totals equal
 * the sums over entries and keys they stand for.
 */

const MINT = 'http://mint.test';
const KEYSET = '00ad268c4d1f5826';

let url: string;
let ledger: Ledger;
const handles: Ledger[] = [];
const proxies: PostgresProxy[] = [];
let n = 0;


/** Another handle on the same database: another gateway process, or this one restarted. */
async function open(through = url): Promise<Ledger> {
  const l = await openLedger(through);
  handles.push(l);
  return l;
}

/** A handle on the PostgreSQL database behind a proxy that breaks its connections when told. */
async function openBehind(): Promise<{ l: Ledger; proxy: PostgresProxy }> {
  const proxy = new PostgresProxy(url);
  proxies.push(proxy);
  return { l: await open(await proxy.start()), proxy };
}

/** Statements run on the database beside the ledger, as an operator or another gateway would. */
async function runSql(statements: string[]): Promise<void> {
  if (url.startsWith('sqlite:')) {
    const db = new DatabaseSync(url.slice('sqlite:'.length));
    for (const s of statements) db.exec(s);
    db.close();
  } else {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    for (const s of statements) await c.query(s);
    await c.end();
  }
}

/** What totals() must say, summed the slow way from the rows it stands for. */
async function summed(): Promise<Totals> {
  const entries = 'SELECT kind, COALESCE(SUM(msats), 0) AS msats FROM entries GROUP BY kind';
  const keys = 'SELECT COALESCE(SUM(balance), 0) AS balance, COALESCE(SUM(reserved), 0) AS reserved FROM keys';
  let rows: Array<{ kind: string; msats: number }>;
  let k: { balance: number; reserved: number };
  if (url.startsWith('sqlite:')) {
    const db = new DatabaseSync(url.slice('sqlite:'.length));
    rows = db.prepare(entries).all() as typeof rows;
    k = db.prepare(keys).get() as typeof k;
    db.close();
  } else {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    rows = (await c.query(entries)).rows.map((r) => ({ kind: r.kind, msats: Number(r.msats) }));
    const kr = (await c.query(keys)).rows[0];
    k = { balance: Number(kr.balance), reserved: Number(kr.reserved) };
    await c.end();
  }
  const of = (kind: string) => rows.find((r) => r.kind === kind)?.msats ?? 0;
  return {
    credited: of('credit'),
    charged: of('charge'),
    refunded: of('refund'),
    withdrawn: of('withdraw'),
    fees: of('fee'),
    balances: k.balance - k.reserved,
    reserved: k.reserved,
  };
}

beforeEach(async () => {
  url = await durableDatabaseUrl();
  ledger = await open();
});

afterEach(async () => {
  vi.useRealTimers();
  const t = await ledger.totals();
  expect(t.credited).toBe(t.charged + t.refunded + t.balances + t.reserved);
  expect(t).toEqual(await summed());
  for (const l of handles.splice(0)) await l.close();
  for (const p of proxies.splice(0)) await p.stop();
});

function proof(amount: number, locked = false): StoredProof {
  n++;
  const secret = locked ? `["P2PK",{"nonce":"${n}-${Math.random()}","data":"02aa"}]` : `secret-${n}-${Math.random()}`;
  return { id: KEYSET, amount, secret, C: `02c${n}` };
}

const amounts = (proofs: StoredProof[]) => proofs.map((p) => p.amount).sort((a, b) => b - a);
const secrets = (proofs: StoredProof[]) => proofs.map((p) => p.secret).sort();

/** Redeems a token of `inputs` into a key: the wallet now holds `outputs` (sats), the key `creditMsats`. */
async function fund(keyHash: string, outputs: number[], creditMsats = outputs.reduce((s, a) => s + a, 0) * 1000, l = ledger) {
  const tokenHash = `token-${++n}`;
  const opId = `receive-${n}`;
  const inputs = outputs.map((a) => proof(a));
  expect(await l.startRedemption({ tokenHash, keyHash, opId, mint: MINT, unit: 'sat', inputs, outputs: [{ B_: '02bb' }] })).toEqual({ started: true });
  const proofs = outputs.map((a) => proof(a));
  const key = await l.finishRedemption({ tokenHash, opId, proofs, creditMsats });
  return { tokenHash, opId, inputs, proofs, key };
}

/** Earnings for the operator: a request on a key of its own, charged `msats`. */
async function earn(msats: number, wallet: number[]): Promise<void> {
  const keyHash = `earner-${++n}`;
  await fund(keyHash, wallet, msats);
  expect(await ledger.reserve(keyHash, msats, `res-${keyHash}`)).toBe(true);
  expect((await ledger.settle(`res-${keyHash}`, msats)).chargedMsats).toBe(msats);
  expect((await ledger.getKey(keyHash))!.balance).toBe(0);
}

describe('keys and tokens', () => {
  it('lists keys by balance, revokes them, and a revoked key cannot reserve', async () => {
    await fund('small', [1]);
    await fund('large', [8]);
    await fund('large', [2]);
    expect((await ledger.listKeys(10)).map((k) => [k.hash, k.balance])).toEqual([['large', 10_000], ['small', 1_000]]);
    expect((await ledger.listKeys(1)).map((k) => k.hash)).toEqual(['large']);
    expect(await ledger.getKey('nobody')).toBeUndefined();
    expect(await ledger.revokeKey('nobody')).toBe(false);
    expect(await ledger.revokeKey('small')).toBe(true);
    expect((await ledger.getKey('small'))!.revoked).toBe(true);
    expect((await ledger.getKey('large'))!.revoked).toBe(false);
    expect(await ledger.reserve('small', 1, 'r-small')).toBe(false);
    expect(await ledger.reserve('large', 1, 'r-large')).toBe(true);
    await ledger.settle('r-large', 1);
  });
});

describe('redemption', () => {
  it('claims a token once, credits it on finish, and gives it back on abandon', async () => {
    const inputs = [proof(4), proof(1)];
    const r = { tokenHash: 'tok', keyHash: 'k', opId: 'op1', mint: MINT, unit: 'sat' as const, inputs, outputs: [{ B_: '02bb' }] };
    expect(await ledger.startRedemption(r)).toEqual({ started: true });
    expect(await ledger.startRedemption({ ...r, opId: 'op2' })).toEqual({
      started: false,
      token: { hash: 'tok', keyHash: 'k', opId: 'op1', state: 'redeeming', msats: null },
    });
    expect((await ledger.getOp('op1'))!).toMatchObject({ kind: 'receive', state: 'pending', keyHash: 'k', tokenHash: 'tok', outputs: [{ B_: '02bb' }] });
    expect(secrets((await ledger.getOp('op1'))!.inputs)).toEqual(secrets(inputs));
    // Its proofs are claimed: under another encoding (another token hash) they are a replay.
    expect(await ledger.startRedemption({ ...r, tokenHash: 'tok-again', opId: 'op3', inputs: [inputs[1]!] })).toEqual({ started: false, replayed: true });
    expect(await ledger.getToken('tok-again')).toBeUndefined();

    await ledger.abandonRedemption('tok', 'op1');
    expect(await ledger.getToken('tok')).toBeUndefined();
    expect((await ledger.getOp('op1'))!.state).toBe('failed');
    // Abandoned twice is a no-op, and the token may be presented again.
    await ledger.abandonRedemption('tok', 'op1');
    expect(await ledger.startRedemption({ ...r, opId: 'op4' })).toEqual({ started: true });
    const dleq = { e: 'ee', s: 'ss', r: 'rr' };
    const swapped = [{ ...proof(4), dleq }, proof(1)];
    const key = await ledger.finishRedemption({ tokenHash: 'tok', opId: 'op4', proofs: swapped, creditMsats: 5_000 });
    expect(key).toMatchObject({ hash: 'k', balance: 5_000, reserved: 0, unit: 'sat', mint: MINT, revoked: false });
    expect(await ledger.getToken('tok')).toEqual({ hash: 'tok', keyHash: 'k', opId: 'op4', state: 'credited', msats: 5_000 });
    expect(await ledger.getKey('k')).toEqual(key);
    const held = await ledger.heldProofs(MINT, 'sat');
    expect(held.find((p) => p.amount === 4)!.dleq).toEqual(dleq);
    expect(secrets(held)).toEqual(secrets(swapped));
    await expect(ledger.finishRedemption({ tokenHash: 'tok', opId: 'op4', proofs: [], creditMsats: 5_000 })).rejects.toThrow(/not pending/);
    // A second token into the same key adds to it.
    await fund('k', [2]);
    expect((await ledger.getKey('k'))!.balance).toBe(7_000);
    // A proof we hold, or one already swapped (spent), is never claimed again.
    for (const p of [swapped[0]!, inputs[0]!]) {
      expect(await ledger.startRedemption({ ...r, tokenHash: `tok-${p.secret}`, opId: `op-${p.secret}`, inputs: [p] })).toEqual({ started: false, replayed: true });
    }
    expect((await ledger.totals()).credited).toBe(7_000);
  });
});

describe('a Lightning swap from another mint (kind foreign)', () => {
  it('claims the token with its journal and no inputs, credits what the trusted mint signed, gives the token back on abandon', async () => {
    const journal = { foreignMint: 'https://other.test', meltQuote: 'mq', mintQuote: 'q', amount: 98, proofs: [proof(64), proof(32), proof(4)], outputs: [] };
    const r = { kind: 'foreign' as const, tokenHash: 'ftok', keyHash: 'fk', opId: 'fop1', mint: MINT, unit: 'sat' as const, inputs: [], outputs: [journal] };
    expect(await ledger.startRedemption(r)).toEqual({ started: true });
    expect((await ledger.getOp('fop1'))!).toMatchObject({ kind: 'foreign', state: 'pending', mint: MINT, tokenHash: 'ftok', inputs: [], outputs: [journal] });
    expect(await ledger.startRedemption({ ...r, opId: 'fop2' })).toMatchObject({ started: false, token: { opId: 'fop1', state: 'redeeming' } });
    // The foreign mint's proofs are not the gateway's: none is claimed or held.
    expect(await ledger.heldProofs(MINT, 'sat')).toEqual([]);
    await ledger.abandonRedemption('ftok', 'fop1');
    expect(await ledger.getToken('ftok')).toBeUndefined();
    expect(await ledger.startRedemption({ ...r, opId: 'fop3' })).toEqual({ started: true });
    const minted = [proof(64), proof(32), proof(2)];
    expect(await ledger.finishRedemption({ tokenHash: 'ftok', opId: 'fop3', proofs: minted, creditMsats: 98_000 })).toMatchObject({ hash: 'fk', balance: 98_000 });
    expect(await ledger.getToken('ftok')).toMatchObject({ state: 'credited', msats: 98_000 });
    expect(secrets(await ledger.heldProofs(MINT, 'sat'))).toEqual(secrets(minted));
    expect((await ledger.getOp('fop3'))!.state).toBe('done');
  });
});

describe('offline (locked) proofs and sweeps', () => {
  it('accepts locked proofs once and refuses them under another token', async () => {
    const proofs = [proof(2, true), proof(1, true)];
    const r = { tokenHash: 'off', keyHash: 'k', mint: MINT, unit: 'sat' as const, proofs, creditMsats: 3_000 };
    expect(await ledger.acceptLocked(r)).toBe('accepted');
    expect(await ledger.acceptLocked(r)).toBe('known');
    expect(await ledger.acceptLocked({ ...r, tokenHash: 'off-2', proofs: [proofs[0]!] })).toBe('replayed');
    expect(await ledger.getToken('off')).toEqual({ hash: 'off', keyHash: 'k', opId: 'offline:off', state: 'credited', msats: 3_000 });
    expect(await ledger.getToken('off-2')).toBeUndefined();
    expect((await ledger.getKey('k'))!.balance).toBe(3_000);
    expect(secrets(await ledger.heldProofs(MINT, 'sat'))).toEqual(secrets(proofs));
    // Locked proofs are held but not ours to spend without a sweep.
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map());
    // Nor can they be redeemed online a second time.
    const again = { tokenHash: 'on', keyHash: 'k2', opId: 'op-on', mint: MINT, unit: 'sat' as const, inputs: [proofs[1]!], outputs: [] };
    expect(await ledger.startRedemption(again)).toEqual({ started: false, replayed: true });
  });

  it('sweeps locked proofs: a sweep takes them once, finish books the fee, abandon puts them back', async () => {
    const locked = [proof(4, true), proof(2, true), proof(1, true)];
    expect(await ledger.acceptLocked({ tokenHash: 'off', keyHash: 'k', mint: MINT, unit: 'sat', proofs: locked, creditMsats: 7_000 })).toBe('accepted');
    expect(await ledger.startSweep({ opId: 'other-mint', mint: 'http://other', unit: 'sat', limit: 10 })).toEqual([]);
    // Passing over proofs the sweep suspects.
    expect(secrets(await ledger.startSweep({ opId: 'sw0', mint: MINT, unit: 'sat', limit: 10, except: [locked[0]!.secret, locked[2]!.secret] }))).toEqual([locked[1]!.secret]);
    await ledger.abandonSweep('sw0');
    // Or only the ones named (one proof retried alone), never one not locked.
    expect(secrets(await ledger.startSweep({ opId: 'sw0b', mint: MINT, unit: 'sat', limit: 10, only: [locked[2]!.secret, 'unknown'] }))).toEqual([locked[2]!.secret]);
    expect(await ledger.startSweep({ opId: 'sw0c', mint: MINT, unit: 'sat', limit: 10, only: [locked[2]!.secret] })).toEqual([]);
    await ledger.abandonSweep('sw0b');
    const first = await ledger.startSweep({ opId: 'sw1', mint: MINT, unit: 'sat', limit: 2 });
    expect(first).toHaveLength(2);
    const second = await ledger.startSweep({ opId: 'sw2', mint: MINT, unit: 'sat', limit: 10 });
    expect(secrets([...first, ...second])).toEqual(secrets(locked));
    expect((await ledger.pendingOps()).map((o) => `${o.id} ${o.kind}`).sort()).toEqual(['sw1 sweep', 'sw2 sweep']);

    await ledger.abandonSweep('sw2');
    await ledger.abandonSweep('sw2');
    expect(secrets(await ledger.startSweep({ opId: 'sw3', mint: MINT, unit: 'sat', limit: 10 }))).toEqual(secrets(second));

    const swept = first.reduce((s, p) => s + p.amount, 0);
    const ours = [proof(swept - 1)];
    await ledger.finishSweep('sw1', ours);
    await expect(ledger.finishSweep('sw1', ours)).rejects.toThrow(/not pending/);
    expect((await ledger.getOp('sw1'))!.state).toBe('done');
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map([[swept - 1, 1]]));
    const t = await ledger.totals();
    expect([t.credited, t.fees, t.balances]).toEqual([7_000, 1_000, 7_000]);
    await ledger.abandonSweep('sw3');
  });

  it('writes off a held proof the mint refuses: booked as a fee once, never swept or paid out again', async () => {
    await earn(3_000, [2, 1]);
    const locked = [proof(2, true), proof(1, true)];
    expect(await ledger.acceptLocked({ tokenHash: 'off', keyHash: 'k', mint: MINT, unit: 'sat', proofs: locked, creditMsats: 3_000 })).toBe('accepted');
    expect(await ledger.writeOffRefused([locked[0]!.secret, 'unknown'])).toBe(2_000);
    expect(await ledger.writeOffRefused([locked[0]!.secret])).toBe(0);
    expect((await ledger.totals()).fees).toBe(2_000);
    expect(secrets(await ledger.startSweep({ opId: 'sw', mint: MINT, unit: 'sat', limit: 10 }))).toEqual([locked[1]!.secret]);
    // Not while an operation holds it: only proofs at rest are written off.
    expect(await ledger.writeOffRefused([locked[1]!.secret])).toBe(0);
    await ledger.abandonSweep('sw');
    // Our own unspent proofs too (the earner's 2 and 1), and then nothing of the 2 is left to pay with.
    const own = (await ledger.heldProofs(MINT, 'sat')).filter((p) => !p.secret.startsWith('["P2PK"'));
    expect(await ledger.writeOffRefused(own.filter((p) => p.amount === 2).map((p) => p.secret))).toBe(2_000);
    expect((await ledger.heldProofs(MINT, 'sat')).map((p) => p.amount).sort()).toEqual([1, 1]);
    expect((await ledger.totals()).fees).toBe(4_000);
  });

  it('refills the float from locked proofs and unspent ones above it; abandoned, each goes back as it was', async () => {
    await fund('k', [256, 64, 2]);
    const locked = [proof(8, true), proof(1, true)];
    expect(await ledger.acceptLocked({ tokenHash: 'off', keyHash: 'k', mint: MINT, unit: 'sat', proofs: locked, creditMsats: 9_000 })).toBe('accepted');
    // The 64 and the 2 are the float itself (above 128 only the 256 is spare); the fewest proofs.
    const big = await ledger.startRefill({ opId: 'rf1', mint: MINT, unit: 'sat', amount: 9, above: 128 });
    expect(amounts(big)).toEqual([256]);
    const small = await ledger.startRefill({ opId: 'rf2', mint: MINT, unit: 'sat', amount: 9, above: 128 });
    expect(secrets(small)).toEqual(secrets(locked));
    expect(await ledger.startRefill({ opId: 'rf3', mint: MINT, unit: 'sat', amount: 1, above: 128 })).toEqual([]);
    expect((await ledger.pendingOps()).map((o) => `${o.id} ${o.kind}`).sort()).toEqual(['rf1 sweep', 'rf2 sweep']);
    await ledger.abandonSweep('rf1');
    await ledger.abandonSweep('rf2');
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map([[256, 1], [64, 1], [2, 1]]));
    expect(secrets(await ledger.startSweep({ opId: 'sw', mint: MINT, unit: 'sat', limit: 10 }))).toEqual(secrets(locked));
    const again = await ledger.startRefill({ opId: 'rf4', mint: MINT, unit: 'sat', amount: 100, above: 128 });
    await ledger.finishSweep('rf4', [proof(128), proof(64), proof(32), proof(32)]);
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map([[128, 1], [64, 2], [32, 2], [2, 1]]));
    expect(amounts(again)).toEqual([256]);
    expect(await ledger.totals()).toMatchObject({ fees: 0, balances: 331_000 });
    await ledger.abandonSweep('sw');
  });

  it('puts a proof back as it was stored, locked or not, whatever its secret looks like', async () => {
    // The ledger is told which proofs are locked (acceptLocked); it never reads their secrets.
    const plain = { ...proof(4), secret: `["P2PK",{"nonce":"${++n}","data":"02aa"}]` };
    const tokenHash = 'looks-locked';
    expect(await ledger.startRedemption({ tokenHash, keyHash: 'k', opId: 'rx', mint: MINT, unit: 'sat', inputs: [proof(4)], outputs: [] })).toEqual({ started: true });
    await ledger.finishRedemption({ tokenHash, opId: 'rx', proofs: [plain], creditMsats: 4_000 });
    const offline = { ...proof(8), secret: `offline-${++n}` };
    expect(await ledger.acceptLocked({ tokenHash: 'off', keyHash: 'other', mint: MINT, unit: 'sat', proofs: [offline], creditMsats: 8_000 })).toBe('accepted');
    const both = await ledger.startRefund({ keyHash: 'k', opId: 'op', refundId: 'rf', mints: [MINT], extra: 5 });
    if (both.kind !== 'started') throw new Error(both.kind);
    expect(secrets(both.inputs)).toEqual(secrets([plain, offline]));
    await ledger.abandonRefund('op');
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map([[4, 1]]));
    expect(secrets(await ledger.startSweep({ opId: 'sw', mint: MINT, unit: 'sat', limit: 10 }))).toEqual([offline.secret]);
    await ledger.abandonSweep('sw');
  });
});

describe('reserve and settle', () => {
  it('reserves only free balance, charges what was used, caps an overrun at the free balance', async () => {
    await fund('k', [8, 2]);
    expect(await ledger.hasActiveReservations('k')).toBe(false);
    expect(await ledger.reserve('k', 4_000, 'r1')).toBe(true);
    expect(await ledger.reserve('k', 3_000, 'r2')).toBe(true);
    expect(await ledger.reserve('k', 3_001, 'r3')).toBe(false);
    expect(await ledger.reserve('nobody', 1, 'r4')).toBe(false);
    expect(await ledger.hasActiveReservations('k')).toBe(true);
    expect(await ledger.totals()).toMatchObject({ credited: 10_000, balances: 3_000, reserved: 7_000 });
    // r1 overran: it may take the free 3,000 but never r2's 3,000.
    expect(await ledger.settle('r1', 20_000)).toEqual({ chargedMsats: 7_000, balance: 3_000, reserved: 3_000 });
    await expect(ledger.settle('r1', 1)).rejects.toThrow('reservation r1 is not active');
    expect(await ledger.settle('r2', 0)).toEqual({ chargedMsats: 0, balance: 3_000, reserved: 0 });
    expect(await ledger.hasActiveReservations('k')).toBe(false);
    expect(await ledger.getKey('k')).toMatchObject({ balance: 3_000, reserved: 0, totalSpent: 7_000, totalRequests: 2 });
    expect(await ledger.totals()).toMatchObject({ charged: 7_000, balances: 3_000, reserved: 0 });
  });

  it('an overrun that waited on its key while another request freed balance is capped at what it finds, and charged', async () => {
    await fund('k', [10]);
    expect(await ledger.reserve('k', 3_000, 'rA')).toBe(true);
    expect(await ledger.reserve('k', 5_000, 'rB')).toBe(true);
    // On PostgreSQL rB's release is under way when rA's settle starts, and commits while rA waits on the key:
    // the statement's snapshot saw 2,000 free, the key has 7,000 when it is written.
    const c = url.startsWith('sqlite:') ? undefined : new pg.Client({ connectionString: url });
    await c?.connect();
    await c?.query('BEGIN');
    await c?.query(`UPDATE keys SET reserved = reserved - 5000 WHERE hash = 'k'`);
    await c?.query(`UPDATE reservations SET state = 'released', charged = 0 WHERE id = 'rB'`);
    if (!c) await ledger.settle('rB', 0);
    const settled = ledger.settle('rA', 9_000).catch((e: Error) => e.message);
    await new Promise((r) => setTimeout(r, 200));
    await c?.query('COMMIT');
    await c?.end();
    expect(await settled).toEqual({ chargedMsats: 9_000, balance: 1_000, reserved: 0 });
    expect(await ledger.getKey('k')).toMatchObject({ balance: 1_000, reserved: 0, totalSpent: 9_000 });
  });

  it('concurrent reserves on a small balance: exactly as many as it covers, and never below zero', async () => {
    await fund('k', [8, 2]);
    // Two handles: on PostgreSQL these race on separate connections.
    const other = await open();
    const ids = Array.from({ length: 24 }, (_, i) => `c${i}`);
    const won = await Promise.all(ids.map((id, i) => (i % 2 ? other : ledger).reserve('k', 1_000, id)));
    expect(won.filter(Boolean)).toHaveLength(10);
    expect(await ledger.getKey('k')).toMatchObject({ balance: 10_000, reserved: 10_000 });
    const settled = await Promise.all(ids.filter((_, i) => won[i]).map((id, i) => (i % 2 ? other : ledger).settle(id, 1_500)));
    expect(settled.reduce((s, x) => s + x.chargedMsats, 0)).toBe(10_000);
    expect(await ledger.getKey('k')).toMatchObject({ balance: 0, reserved: 0 });
  });
});

describe('the proofs table as it grows', () => {
  it('is read through an index by every statement of a redemption, a sweep, a refill and a refund, never whole', async () => {
    // SQLite's plans are what is checked: on PostgreSQL a table this small is read whole whatever its indexes.
    if (!url.startsWith('sqlite:')) return;
    const seen = new Set<string>();
    const prepare = DatabaseSync.prototype.prepare;
    const spy = vi.spyOn(DatabaseSync.prototype, 'prepare').mockImplementation(function (this: DatabaseSync, sql: string) {
      seen.add(sql);
      return prepare.call(this, sql);
    });
    try {
      // A handle of its own prepares every statement anew.
      const l = await open();
      const { proofs } = await fund('k', [8, 4, 2, 1], 15_000, l);
      await l.acceptLocked({ tokenHash: 'off', keyHash: 'k', mint: MINT, unit: 'sat', proofs: [proof(4, true)], creditMsats: 4_000 });
      expect(await l.startSweep({ opId: 'sw', mint: MINT, unit: 'sat', limit: 10 })).toHaveLength(1);
      await l.abandonSweep('sw');
      await l.unspentCounts(MINT, 'sat', true);
      await l.heldProofs(MINT, 'sat');
      expect(await l.startRefill({ opId: 'rf', mint: MINT, unit: 'sat', amount: 4, above: 2 })).not.toEqual([]);
      await l.abandonSweep('rf');
      expect((await l.startRefund({ keyHash: 'k', opId: 'rd', refundId: 'rd', mints: [MINT] })).kind).toBe('started');
      await l.abandonRefund('rd');
      await l.markSpent([proofs[3]!.secret]);
    } finally {
      spy.mockRestore();
    }
    const db = new DatabaseSync(url.slice('sqlite:'.length));
    const scans = [...seen]
      .filter((sql) => /\bproofs\b/.test(sql) && !/^\s*(CREATE|ALTER|INSERT)/i.test(sql))
      .filter((sql) => (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as Array<{ detail: string }>).some((r) => /^SCAN proofs\b/.test(r.detail)));
    db.close();
    expect(scans).toEqual([]);
  });
});

describe('reserves and settles made in one turn', () => {
  it('end as if each came alone, in the order made: a key short for one still holds a smaller one after it', async () => {
    await fund('a', [8]);
    await fund('b', [4]);
    await fund('gone', [4]);
    await ledger.revokeKey('gone');
    await fund('p', [16]);
    await ledger.createChildKeys('p', [{ hash: 'c', spendLimit: 2_000, models: null, expiresAt: null }]);
    const statements = url.startsWith('sqlite:') ? undefined : vi.spyOn(pg.Client.prototype, 'query');
    const won = await Promise.all([
      ledger.reserve('a', 5_000, 'a1'),
      ledger.reserve('b', 3_000, 'b1'),
      ledger.reserve('a', 4_000, 'a2'),
      ledger.reserve('a', 3_000, 'a3'),
      ledger.reserve('gone', 1_000, 'g1'),
      ledger.reserve('c', 1_500, 'c1'),
      ledger.reserve('nobody', 1, 'n1'),
      ledger.reserve('b', 1_000, 'b2'),
    ]);
    expect(won).toEqual([true, true, false, true, false, true, false, true]);
    // On PostgreSQL those held together were one statement, named by it alone; the others were made again on their own.
    const naming = (id: string) => statements!.mock.calls.filter(([q]) => JSON.stringify((q as { values?: unknown } | undefined)?.values ?? []).includes(`"${id}"`)).length;
    if (statements) expect(['a1', 'b1', 'b2', 'a3', 'c1'].map(naming)).toEqual([1, 1, 1, 2, 3]);
    statements?.mockClear();
    expect(await ledger.getKey('a')).toMatchObject({ balance: 8_000, reserved: 8_000, totalRequests: 2 });
    expect(await ledger.getKey('b')).toMatchObject({ balance: 4_000, reserved: 4_000, totalRequests: 2 });
    const settled = await Promise.all([
      ledger.settle('a1', 2_000, { inputTokens: 10, outputTokens: 20 }),
      ledger.settle('b1', 3_000),
      ledger.settle('a3', 3_000),
      ledger.settle('c1', 1_000),
      ledger.settle('b2', 1_500),
      ledger.settle('a2', 1),
    ].map((p) => p.catch((e: Error) => e.message)));
    expect(settled).toEqual([
      { chargedMsats: 2_000, balance: 6_000, reserved: 3_000 },
      { chargedMsats: 3_000, balance: 1_000, reserved: 1_000 },
      { chargedMsats: 3_000, balance: 3_000, reserved: 0 },
      { chargedMsats: 1_000, balance: 15_000, reserved: 0 },
      // An overrun takes the key's free balance, settled after the others of the turn.
      { chargedMsats: 1_000, balance: 0, reserved: 0 },
      'reservation a2 is not active',
    ]);
    if (statements) expect(['a1', 'b1', 'a3', 'b2', 'a2'].map(naming)).toEqual([1, 1, 1, 2, 4]);
    statements?.mockRestore();
    expect(await ledger.getKey('a')).toMatchObject({ balance: 3_000, reserved: 0, totalSpent: 5_000 });
    expect(await ledger.getKey('b')).toMatchObject({ balance: 0, reserved: 0, totalSpent: 4_000 });
    expect(await ledger.totals()).toMatchObject({ charged: 10_000, reserved: 0 });
  });

  it('settle one reservation once, however often the turn names it', async () => {
    await fund('k', [8]);
    expect(await Promise.all([ledger.reserve('k', 2_000, 'r1'), ledger.reserve('k', 3_000, 'r2')])).toEqual([true, true]);
    const settled = await Promise.all(['r1', 'r2', 'r1', 'r2'].map((id) => ledger.settle(id, 1_000).catch((e: Error) => e.message)));
    expect(settled).toEqual([
      { chargedMsats: 1_000, balance: 7_000, reserved: 3_000 },
      { chargedMsats: 1_000, balance: 6_000, reserved: 0 },
      'reservation r1 is not active',
      'reservation r2 is not active',
    ]);
    expect(await ledger.getKey('k')).toMatchObject({ balance: 6_000, reserved: 0, totalSpent: 2_000 });
  });
  it('held together, though the client lost the answer: each hold made again finds itself taken, not refused', async () => {
    if (url.startsWith('sqlite:')) return;
    await fund('a', [8]);
    await fund('b', [4]);
    // The turn's statement commits, and its client is told the connection dropped.
    const query = pg.Client.prototype.query;
    let armed = true;
    const dropped = vi.spyOn(pg.Client.prototype, 'query').mockImplementation(function (this: pg.Client, ...a: unknown[]) {
      const done = a.at(-1);
      if (armed && (a[0] as { text?: string }).text?.includes('WITH ORDINALITY') && typeof done === 'function') {
        armed = false;
        a[a.length - 1] = () => (done as (e: Error) => void)(new Error('Connection terminated unexpectedly'));
      }
      return (query as (...x: unknown[]) => unknown).apply(this, a) as never;
    });
    const won = await Promise.all([ledger.reserve('a', 5_000, 'a1'), ledger.reserve('b', 1_000, 'b1'), ledger.reserve('a', 2_000, 'a2')]
      .map((p) => p.catch((e: Error) => e.message)));
    dropped.mockRestore();
    expect(armed).toBe(false);
    expect(won).toEqual([true, true, true]);
    expect(await ledger.getKey('a')).toMatchObject({ balance: 8_000, reserved: 7_000, totalRequests: 2 });
    // Held once each: settled, nothing stays reserved.
    expect(await Promise.all([ledger.settle('a1', 1_000), ledger.settle('b1', 0), ledger.settle('a2', 2_000)])).toEqual([
      { chargedMsats: 1_000, balance: 7_000, reserved: 2_000 },
      { chargedMsats: 0, balance: 4_000, reserved: 0 },
      { chargedMsats: 2_000, balance: 5_000, reserved: 0 },
    ]);
    // Nor is a hold another process took under that id taken for one of ours.
    await fund('c', [4]);
    expect(await open().then((other) => other.reserve('c', 1_000, 'c1'))).toBe(true);
    armed = true;
    const again = vi.spyOn(pg.Client.prototype, 'query').mockImplementation(function (this: pg.Client, ...a: unknown[]) {
      const done = a.at(-1);
      if (armed && (a[0] as { text?: string }).text?.includes('WITH ORDINALITY') && typeof done === 'function') {
        armed = false;
        a[a.length - 1] = () => (done as (e: Error) => void)(new Error('Connection terminated unexpectedly'));
      }
      return (query as (...x: unknown[]) => unknown).apply(this, a) as never;
    });
    const twice = await Promise.all([ledger.reserve('c', 1_000, 'c1'), ledger.reserve('c', 1_000, 'c2')].map((p) => p.catch((e: Error) => e.message)));
    again.mockRestore();
    expect(twice[0]).toMatch(/duplicate key/);
    expect(twice[1]).toBe(true);
    await ledger.settle('c1', 0);
    await ledger.settle('c2', 0);
  });

  // SQLite runs in this process: a commit's answer is never lost on the way back.
  it('settled together, though the client lost the answer: each settle made again finds its own charge, booked once', async () => {
    if (url.startsWith('sqlite:')) return;
    const { l, proxy } = await openBehind();
    await fund('a', [8], undefined, l);
    await fund('b', [4], undefined, l);
    expect(await Promise.all([l.reserve('a', 5_000, 'lost-a1'), l.reserve('b', 2_000, 'lost-b1'), l.reserve('a', 2_000, 'lost-a2')])).toEqual([true, true, true]);
    // The turn's settles are one statement: it commits, and its client is told the connection dropped.
    proxy.lose('lost-a1');
    const settled = await Promise.all([
      l.settle('lost-a1', 1_000, { inputTokens: 10, outputTokens: 20 }),
      l.settle('lost-b1', 0),
      l.settle('lost-a2', 2_000, { inputTokens: 3, outputTokens: 4, model: 'gpt-x' }),
    ].map((p) => p.catch((e: Error) => e.message)));
    expect(proxy.broken).toEqual(['lost']);
    // Each as charged by the statement; the key as it stands after them all.
    expect(settled).toEqual([
      { chargedMsats: 1_000, balance: 5_000, reserved: 0 },
      { chargedMsats: 0, balance: 4_000, reserved: 0 },
      { chargedMsats: 2_000, balance: 5_000, reserved: 0 },
    ]);
    expect(await l.getKey('a')).toMatchObject({ balance: 5_000, reserved: 0, totalSpent: 3_000 });
    expect(await l.getKey('b')).toMatchObject({ balance: 4_000, reserved: 0, totalSpent: 0 });
    expect(await l.totals()).toMatchObject({ charged: 3_000, reserved: 0 });
  });

  it('settled alone, though the client lost the answer: made again, it finds its own charge, booked once', async () => {
    if (url.startsWith('sqlite:')) return;
    const { l, proxy } = await openBehind();
    await fund('k', [8], undefined, l);
    expect(await l.reserve('k', 3_000, 'lone-1')).toBe(true);
    proxy.lose('lone-1');
    expect(await l.settle('lone-1', 2_500, { inputTokens: 1, outputTokens: 2 }).catch((e: Error) => e.message)).toEqual({ chargedMsats: 2_500, balance: 5_500, reserved: 0 });
    expect(proxy.broken).toEqual(['lost']);
    // Through a child the settle is a transaction: its COMMIT's answer lost.
    await l.createChildKeys('k', [{ hash: 'kid', spendLimit: 2_000, models: null, expiresAt: null }]);
    expect(await l.reserve('kid', 1_500, 'lone-2')).toBe(true);
    proxy.lose('lone-2', 'COMMIT');
    expect(await l.settle('lone-2', 1_200).catch((e: Error) => e.message)).toEqual({ chargedMsats: 1_200, balance: 4_300, reserved: 0 });
    expect(proxy.broken).toEqual(['lost', 'lost']);
    expect(await l.getKey('k')).toMatchObject({ balance: 4_300, reserved: 0, totalSpent: 3_700 });
    expect(await l.getChildKey('kid')).toMatchObject({ spent: 1_200, reserved: 0 });
    expect(await l.totals()).toMatchObject({ charged: 3_700, reserved: 0 });
  });

  it('settled together, the statement cut before it ran: a reservation another process released is not taken for charged', async () => {
    if (url.startsWith('sqlite:')) return;
    const { l, proxy } = await openBehind();
    await fund('k', [8], undefined, l);
    await l.heartbeat();
    expect(await Promise.all([l.reserve('k', 3_000, 'cut-1'), l.reserve('k', 1_000, 'cut-2')])).toEqual([true, true]);
    // This process looked dead a while: another released its holds as orphans.
    await runSql(['UPDATE instances SET heartbeat_at = 0']);
    expect(await (await open()).releaseOrphans(60_000)).toBe(2);
    await l.heartbeat();
    expect(await l.reserve('k', 2_000, 'cut-3')).toBe(true);
    proxy.cut('cut-1');
    const settled = await Promise.all([
      l.settle('cut-1', 2_000, { inputTokens: 5, outputTokens: 6 }),
      l.settle('cut-2', 0),
      l.settle('cut-3', 1_500, { inputTokens: 7, outputTokens: 8 }),
    ].map((p) => p.catch((e: Error) => e.message)));
    expect(proxy.broken).toEqual(['cut']);
    expect(settled).toEqual([
      // Released for nothing by the other: not this call's charge, and not charged now.
      'reservation cut-1 is not active',
      // Nothing charged either way (the key as it stands: cut-3 may be settled by then).
      expect.objectContaining({ chargedMsats: 0 }),
      // Never written by the statement: settled now, once.
      { chargedMsats: 1_500, balance: 6_500, reserved: 0 },
    ]);
    expect(await l.getKey('k')).toMatchObject({ balance: 6_500, reserved: 0, totalSpent: 1_500 });
    expect(await l.totals()).toMatchObject({ charged: 1_500, reserved: 0 });
  });

  it('held and settled together also when the key moved while they waited on it', async () => {
    if (url.startsWith('sqlite:')) return;
    await fund('k', [10]);
    expect(await ledger.reserve('k', 8_000, 'r0')).toBe(true);
    expect(await ledger.reserve('k', 1_000, 'r1')).toBe(true);
    /** Releases `id` as a settle of another request would, committed once the turn's statement waits on the key. */
    const releasing = async (id: string, msats: number) => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query('BEGIN');
      await c.query('UPDATE keys SET reserved = reserved - $1 WHERE hash = $2', [msats, 'k']);
      await c.query(`UPDATE reservations SET state = 'released', charged = 0 WHERE id = $1`, [id]);
      return async () => {
        await new Promise((r) => setTimeout(r, 200));
        await c.query('COMMIT');
        await c.end();
      };
    };
    const statements = vi.spyOn(pg.Client.prototype, 'query');
    const naming = (id: string) => statements.mock.calls.filter(([q]) => JSON.stringify((q as { values?: unknown } | undefined)?.values ?? []).includes(`"${id}"`)).length;
    // The statement's snapshot has 1,000 free; the key it locks, 9,000.
    let commit = await releasing('r0', 8_000);
    const won = Promise.all([ledger.reserve('k', 3_000, 'a1'), ledger.reserve('k', 4_000, 'a2')]);
    await commit();
    expect(await won).toEqual([true, true]);
    expect(['a1', 'a2'].map(naming)).toEqual([1, 1]);
    statements.mockClear();
    commit = await releasing('r1', 1_000);
    const settled = Promise.all([ledger.settle('a1', 3_000), ledger.settle('a2', 1_000)]);
    await commit();
    expect(await settled).toEqual([
      { chargedMsats: 3_000, balance: 7_000, reserved: 4_000 },
      { chargedMsats: 1_000, balance: 6_000, reserved: 0 },
    ]);
    expect(['a1', 'a2'].map(naming)).toEqual([1, 1]);
    statements.mockRestore();
    expect(await ledger.getKey('k')).toMatchObject({ balance: 6_000, reserved: 0, totalSpent: 4_000, totalRequests: 4 });
  });
});

describe('two handles on one database', () => {
  it('run their transactions at once without waiting on each other', async () => {
    const other = await open();
    const started = Date.now();
    const accepted = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        (i % 2 ? other : ledger).acceptLocked({ tokenHash: `t${i}`, keyHash: 'k', mint: MINT, unit: 'sat', proofs: [proof(1, true)], creditMsats: 1_000 }),
      ),
    );
    expect(accepted).toEqual(Array(8).fill('accepted'));
    expect((await ledger.getKey('k'))!.balance).toBe(8_000);
    // SQLite's busy timeout is 5 s: a handle that blocked on the other's lock would take that long.
    expect(Date.now() - started).toBeLessThan(4_000);
  });
});

describe('a database that drops its connections', () => {
  it('does not end the process; the next statements run on new connections', async () => {
    if (url.startsWith('sqlite:')) return;
    await fund('k', [8]);
    // Connections idle in the pool and one inside a transaction when the server ends them all (a
    // restart, a failover, an operator's pg_terminate_backend): pg emits each one's error on its
    // own, outside any statement.
    await Promise.all([ledger.getKey('k'), ledger.getKey('k'), ledger.totals()]);
    await runSql(["SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> 'psql'"]);
    await new Promise((r) => setTimeout(r, 200));
    let key: Awaited<ReturnType<Ledger['getKey']>>;
    for (let i = 0; ; i++) {
      // A statement already on a dead connection may fail; a later one must not.
      try {
        key = await ledger.getKey('k');
        break;
      } catch (e) {
        if (i >= 20) throw e;
      }
    }
    expect(key).toMatchObject({ balance: 8_000 });
    expect(await ledger.reserve('k', 1_000, 'after-drop')).toBe(true);
    expect(await ledger.settle('after-drop', 600)).toMatchObject({ chargedMsats: 600 });
  });
});

describe('orphaned reservations', () => {
  it('releases those of a process that stopped heart-beating, never those of a live one', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_800_000_000_000);
    await fund('k', [8, 2]);
    const dead = await open();
    const live = await open();
    await dead.heartbeat();
    await live.heartbeat();
    expect(await dead.reserve('k', 3_000, 'dead-1')).toBe(true);
    expect(await live.reserve('k', 2_000, 'live-1')).toBe(true);
    expect(await ledger.releaseOrphans(60_000)).toBe(0);

    vi.setSystemTime(1_800_000_120_000);
    await live.heartbeat();
    // Its own are never orphans to itself, however long since it beat.
    expect(await dead.releaseOrphans(60_000)).toBe(0);
    expect(await live.releaseOrphans(60_000)).toBe(1);
    expect(await ledger.releaseOrphans(60_000)).toBe(0);
    expect(await ledger.getKey('k')).toMatchObject({ balance: 10_000, reserved: 2_000 });
    await expect(dead.settle('dead-1', 3_000)).rejects.toThrow(/not active/);
    expect((await live.settle('live-1', 2_000)).chargedMsats).toBe(2_000);
    // A process that never beat at all (crashed before its first) is an orphan too.
    expect(await ledger.reserve('k', 1_000, 'never-beat')).toBe(true);
    expect(await live.releaseOrphans(60_000)).toBe(1);
    expect(await ledger.totals()).toMatchObject({ charged: 2_000, balances: 8_000, reserved: 0 });
  });
});

describe('refunds', () => {
  it('no_key, busy, nothing, no_liquidity', async () => {
    const refund = { opId: 'op', refundId: 'rf', mints: [MINT] };
    expect(await ledger.startRefund({ ...refund, keyHash: 'nobody' })).toEqual({ kind: 'no_key' });
    await fund('k', [4, 1]);
    expect(await ledger.reserve('k', 1_000, 'r1')).toBe(true);
    expect(await ledger.startRefund({ ...refund, keyHash: 'k' })).toMatchObject({ kind: 'busy', key: { hash: 'k', balance: 5_000 } });
    await ledger.settle('r1', 4_500);
    // 500 msats left: less than a sat.
    expect(await ledger.startRefund({ ...refund, keyHash: 'k' })).toMatchObject({ kind: 'nothing', latest: undefined, key: { balance: 500 } });
    // A key credited beyond the wallet: no mint listed has the proofs.
    await fund('rich', [], 9_000);
    expect(await ledger.startRefund({ ...refund, keyHash: 'rich' })).toEqual({ kind: 'no_liquidity', amount: 9, unit: 'sat' });
    expect(await ledger.startRefund({ ...refund, keyHash: 'rich', mints: ['http://other'] })).toEqual({ kind: 'no_liquidity', amount: 9, unit: 'sat' });
    expect(await ledger.pendingOps()).toEqual([]);
    expect((await ledger.getKey('rich'))!.balance).toBe(9_000);
  });

  it('an exact match is handed over as it is, and those proofs may come back as a payment', async () => {
    await fund('k', [4, 1]);
    const started = await ledger.startRefund({ keyHash: 'k', opId: 'op', refundId: 'rf', mints: ['http://other', MINT] });
    if (started.kind !== 'started') throw new Error(started.kind);
    expect(started.refund).toMatchObject({ id: 'rf', keyHash: 'k', opId: 'op', msats: 5_000, amount: 5, unit: 'sat', mint: MINT, token: null, state: 'pending' });
    expect(amounts(started.inputs)).toEqual([4, 1]);
    expect(await ledger.getKey('k')).toMatchObject({ balance: 0 });
    expect(await ledger.heldProofs(MINT, 'sat')).toEqual([]);
    expect(await ledger.totals()).toMatchObject({ refunded: 5_000, balances: 0 });

    const done = await ledger.finishRefund({ opId: 'op', token: 'cashuBexact', sent: started.inputs, keep: [] });
    expect(done).toMatchObject({ state: 'done', token: 'cashuBexact' });
    expect(await ledger.latestRefund('k')).toEqual(done);
    expect(await ledger.startRefund({ keyHash: 'k', opId: 'op2', refundId: 'rf2', mints: [MINT] })).toMatchObject({ kind: 'nothing', latest: done });
    expect((await ledger.totals()).fees).toBe(0);
    // The user pays with the refund token: its proofs were given away, so they may be claimed.
    const back = { tokenHash: 'tok-back', keyHash: 'k', opId: 'op-back', mint: MINT, unit: 'sat' as const, inputs: started.inputs, outputs: [] };
    expect(await ledger.startRedemption(back)).toEqual({ started: true });
    await ledger.finishRedemption({ tokenHash: 'tok-back', opId: 'op-back', proofs: [proof(4), proof(1)], creditMsats: 5_000 });
    expect((await ledger.getKey('k'))!.balance).toBe(5_000);
  });

  it('with extra sats for a swap fee: the fewest proofs worth the refund and the fee, locked ones too', async () => {
    await fund('k', [4, 2, 1]);
    const locked = [proof(8, true)];
    expect(await ledger.acceptLocked({ tokenHash: 'off', keyHash: 'other', mint: MINT, unit: 'sat', proofs: locked, creditMsats: 8_000 })).toBe('accepted');
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map([[4, 1], [2, 1], [1, 1]]));
    expect(await ledger.unspentCounts(MINT, 'sat', true)).toEqual(new Map([[8, 1], [4, 1], [2, 1], [1, 1]]));
    // Without extra, the exact match from our own proofs; with it, the one locked 8.
    const exact = await ledger.startRefund({ keyHash: 'k', opId: 'op1', refundId: 'rf1', mints: [MINT] });
    if (exact.kind !== 'started') throw new Error(exact.kind);
    expect(amounts(exact.inputs)).toEqual([4, 2, 1]);
    await ledger.abandonRefund('op1');
    const swap = await ledger.startRefund({ keyHash: 'k', opId: 'op2', refundId: 'rf2', mints: [MINT], extra: 1 });
    if (swap.kind !== 'started') throw new Error(swap.kind);
    expect(swap.refund).toMatchObject({ amount: 7, msats: 7_000 });
    expect(secrets(swap.inputs)).toEqual(secrets(locked));
    expect(await ledger.getKey('k')).toMatchObject({ balance: 0 });
    await ledger.abandonRefund('op2');
    expect(await ledger.getKey('k')).toMatchObject({ balance: 7_000 });
    // Beyond what is held: no liquidity, and nothing moved.
    expect(await ledger.startRefund({ keyHash: 'k', opId: 'op3', refundId: 'rf3', mints: [MINT], extra: 9 })).toEqual({ kind: 'no_liquidity', amount: 7, unit: 'sat' });
    expect(await ledger.totals()).toMatchObject({ credited: 15_000, refunded: 0, balances: 15_000 });
    expect(await ledger.pendingOps()).toEqual([]);
  });

  it('a swap: unused inputs go back at journaling, change is kept, the fee is booked', async () => {
    await fund('k', [8, 1], 5_000);
    const started = await ledger.startRefund({ keyHash: 'k', opId: 'op', refundId: 'rf', mints: [MINT] });
    if (started.kind !== 'started') throw new Error(started.kind);
    expect(amounts(started.inputs)).toEqual([8, 1]);
    const eight = started.inputs.filter((p) => p.amount === 8);
    await ledger.journalOutputs('op', [{ B_: 'out' }], eight);
    const op = (await ledger.getOp('op'))!;
    expect([op.outputs, secrets(op.inputs)]).toEqual([[{ B_: 'out' }], secrets(eight)]);
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map([[1, 1]]));
    await expect(ledger.journalOutputs('nope', [], [])).rejects.toThrow(/not pending/);

    const change = [proof(2)];
    const done = await ledger.finishRefund({ opId: 'op', token: 'cashuBswap', sent: [proof(4), proof(1)], keep: change });
    expect(done.state).toBe('done');
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map([[2, 1], [1, 1]]));
    // 8 in, 2 kept, 5 paid: the mint took 1 sat.
    expect(await ledger.totals()).toMatchObject({ refunded: 5_000, fees: 1_000, balances: 0 });
    expect(await ledger.pendingOps()).toEqual([]);
  });

  it('an abandoned refund puts proofs and msats back, and the latest refund is the last made', async () => {
    await fund('k', [4, 1]);
    const first = await ledger.startRefund({ keyHash: 'k', opId: 'op1', refundId: 'rf1', mints: [MINT] });
    if (first.kind !== 'started') throw new Error(first.kind);
    await ledger.abandonRefund('op1');
    await ledger.abandonRefund('op1');
    expect((await ledger.getOp('op1'))!.state).toBe('failed');
    expect(await ledger.getKey('k')).toMatchObject({ balance: 5_000 });
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map([[4, 1], [1, 1]]));
    expect(await ledger.latestRefund('k')).toBeUndefined();
    expect(await ledger.totals()).toMatchObject({ refunded: 0, balances: 5_000 });
    // Two refunds in the same millisecond: insertion order decides, not the clock.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_800_000_000_000);
    for (const i of [2, 3]) {
      await fund('k', [1]);
      const r = await ledger.startRefund({ keyHash: 'k', opId: `op${i}`, refundId: `rf${i}`, mints: [MINT] });
      if (r.kind !== 'started') throw new Error(r.kind);
      await ledger.finishRefund({ opId: `op${i}`, token: `t${i}`, sent: r.inputs, keep: [] });
    }
    expect((await ledger.latestRefund('k'))!.id).toBe('rf3');
  });
});

describe('the operator', () => {
  it('withdraws its earnings as a refund to OPERATOR, or gets nothing or no_liquidity', async () => {
    const w = { opId: 'w1', refundId: 'wr1', mints: [MINT] };
    expect(await ledger.startWithdraw(w)).toEqual({ kind: 'nothing' });
    await earn(3_000, [2, 1]);
    expect(await ledger.startWithdraw({ ...w, mints: ['http://other'] })).toEqual({ kind: 'no_liquidity', amount: 3, unit: 'sat' });
    const started = await ledger.startWithdraw(w);
    if (started.kind !== 'started') throw new Error(started.kind);
    expect(started.refund).toMatchObject({ keyHash: OPERATOR, msats: 3_000, amount: 3, unit: 'sat' });
    expect((await ledger.totals()).withdrawn).toBe(3_000);
    // What is booked is no longer there to withdraw.
    expect(await ledger.startWithdraw({ opId: 'w2', refundId: 'wr2', mints: [MINT] })).toEqual({ kind: 'nothing' });
    await ledger.abandonRefund('w1');
    expect((await ledger.totals()).withdrawn).toBe(0);
    const again = await ledger.startWithdraw({ opId: 'w3', refundId: 'wr3', mints: [MINT] });
    if (again.kind !== 'started') throw new Error(again.kind);
    await ledger.finishRefund({ opId: 'w3', token: 'cashuBw', sent: again.inputs, keep: [] });
    expect(await ledger.totals()).toMatchObject({ charged: 3_000, withdrawn: 3_000, fees: 0 });
    expect(await ledger.getKey(OPERATOR)).toBeUndefined();
  });

  it('melts: books amount and reserve, re-books the fee at what it cost, reverses on abandon', async () => {
    await earn(10_000, [8]);
    const melt = (opId: string, need: number) =>
      ledger.startMelt({ opId, meltId: `m-${opId}`, mint: MINT, unit: 'sat', quote: `q-${opId}`, request: 'lnbc1', amount: 5, need });
    expect(await melt('big', 11)).toEqual({ kind: 'short', earnings: 10_000 });
    expect(await ledger.startMelt({ opId: 'x', meltId: 'mx', mint: 'http://other', unit: 'sat', quote: 'q', request: 'lnbc1', amount: 5, need: 6 })).toEqual({ kind: 'no_liquidity' });

    const started = await melt('m1', 6);
    if (started.kind !== 'started') throw new Error(started.kind);
    expect(started.melt).toMatchObject({ id: 'm-m1', opId: 'm1', quote: 'q-m1', amount: 5, feeReserve: 1, fee: null, preimage: null, state: 'pending' });
    expect(amounts(started.inputs)).toEqual([8]);
    expect(await ledger.totals()).toMatchObject({ withdrawn: 5_000, fees: 1_000 });
    await ledger.abandonMelt('m1');
    await ledger.abandonMelt('m1');
    expect((await ledger.meltOfOp('m1'))!.state).toBe('failed');
    expect(await ledger.totals()).toMatchObject({ withdrawn: 0, fees: 0 });
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map([[8, 1]]));

    const again = await melt('m2', 6);
    if (again.kind !== 'started') throw new Error(again.kind);
    // 8 in, 1 back as change, 5 paid: it cost 2, not the 1 reserved.
    const paid = await ledger.finishMelt({ opId: 'm2', change: [proof(1)], preimage: 'pre' });
    expect(paid).toMatchObject({ state: 'paid', fee: 2, preimage: 'pre', feeReserve: 1 });
    expect(await ledger.meltOfOp('m2')).toEqual(paid);
    expect(await ledger.meltOfOp('none')).toBeUndefined();
    expect(await ledger.totals()).toMatchObject({ withdrawn: 5_000, fees: 2_000 });
    await expect(ledger.finishMelt({ opId: 'm2', change: [], preimage: null })).rejects.toThrow(/not pending/);
    // The earnings left (10,000 − 5,000 − 2,000) bound the next melt.
    expect(await melt('m3', 4)).toEqual({ kind: 'short', earnings: 3_000 });
  });

  it("melts paid by a key: the whole need leaves the key, the unused reserve comes back, abandon restores it", async () => {
    await fund('k', [8, 4, 2, 1]);
    const melt = (opId: string, need: number, keyHash = 'k') =>
      ledger.startMelt({ opId, meltId: `m-${opId}`, mint: MINT, unit: 'sat', quote: `q-${opId}`, request: `lnbc-${opId}`, amount: 5, need, keyHash });
    expect(await melt('nokey', 6, 'nobody')).toEqual({ kind: 'no_key' });
    expect(await melt('big', 16)).toEqual({ kind: 'short', earnings: 15_000 });
    expect(await ledger.latestMelt('k')).toBeUndefined();
    expect(await ledger.reserve('k', 1_000, 'res')).toBe(true);
    expect(await melt('during', 6)).toEqual({ kind: 'busy' });
    await ledger.settle('res', 0);

    const first = await melt('k1', 8);
    if (first.kind !== 'started') throw new Error(first.kind);
    expect((await ledger.getKey('k'))!.balance).toBe(7_000);
    expect(await ledger.totals()).toMatchObject({ refunded: 8_000, withdrawn: 0, fees: 0, balances: 7_000 });
    expect(await ledger.latestMelt('k')).toMatchObject({ id: 'm-k1', state: 'pending', feeReserve: 3 });
    await ledger.abandonMelt('k1');
    await ledger.abandonMelt('k1');
    expect((await ledger.getKey('k'))!.balance).toBe(15_000);
    expect(await ledger.totals()).toMatchObject({ refunded: 0, balances: 15_000 });

    const second = await melt('k2', 8);
    if (second.kind !== 'started') throw new Error(second.kind);
    expect(amounts(second.inputs)).toEqual([8]);
    // 8 in, 2 back as change, 5 paid: the payment cost 1 of the 3 reserved; 2 go back to the key.
    const paid = await ledger.finishMelt({ opId: 'k2', change: [proof(2)], preimage: 'pre' });
    expect(paid).toMatchObject({ state: 'paid', fee: 1, feeReserve: 3 });
    expect((await ledger.getKey('k'))!.balance).toBe(9_000);
    expect(await ledger.totals()).toMatchObject({ refunded: 6_000, withdrawn: 0, fees: 0, balances: 9_000 });
    expect(await ledger.latestMelt('k')).toEqual(paid);
    // The operator's melts are not the key's.
    expect(await ledger.latestMelt(OPERATOR)).toBeUndefined();

    // A mint that took more than it reserved: the key pays its need, the operator the rest.
    await fund('j', [16]);
    const third = await ledger.startMelt({ opId: 'j1', meltId: 'm-j1', mint: MINT, unit: 'sat', quote: 'q-j1', request: 'lnbc-j1', amount: 10, need: 12, keyHash: 'j' });
    if (third.kind !== 'started') throw new Error(third.kind);
    const took = amounts(third.inputs).reduce((a, b) => a + b, 0);
    await ledger.finishMelt({ opId: 'j1', change: [proof(took - 13)], preimage: null });
    expect((await ledger.getKey('j'))!.balance).toBe(4_000);
    expect(await ledger.totals()).toMatchObject({ refunded: 18_000, fees: 1_000, balances: 13_000 });
  });
});

describe('mint ops', () => {
  it('lists pending ops, restarts their lease, and books proofs spent elsewhere as a fee', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_800_000_000_000);
    await fund('k', [4, 2]);
    const started = await ledger.startRefund({ keyHash: 'k', opId: 'op', refundId: 'rf', mints: [MINT] });
    if (started.kind !== 'started') throw new Error(started.kind);
    expect((await ledger.pendingOps()).map((o) => [o.id, o.kind, o.updatedAt])).toEqual([['op', 'refund', 1_800_000_000_000]]);
    vi.setSystemTime(1_800_000_005_000);
    await ledger.touchOp('op');
    expect((await ledger.getOp('op'))!.updatedAt).toBe(1_800_000_005_000);
    expect(await ledger.getOp('none')).toBeUndefined();

    // The mint says the 4 is spent: gone, never released. An unknown secret changes nothing.
    const four = started.inputs.find((p) => p.amount === 4)!;
    await ledger.markSpent([four.secret, 'unknown']);
    await ledger.markSpent([four.secret]);
    expect((await ledger.totals()).fees).toBe(4_000);
    await ledger.abandonRefund('op');
    expect(await ledger.unspentCounts(MINT, 'sat')).toEqual(new Map([[2, 1]]));
    expect(await ledger.getKey('k')).toMatchObject({ balance: 6_000 });
  });
});

describe('marks shared by every instance on one ledger', () => {
  it('claims an id once, across instances, until it expires', async () => {
    const [a, b] = [ledger, await open()];
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
    const [a, b] = [ledger, await open()];
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
    const [a, b] = [ledger, await open()];
    await a.putNote('topup', 'q1', 'key-a', Date.now() + 60_000);
    expect(await b.getNote('topup', 'q1')).toBe('key-a');
    await b.putNote('topup', 'q1', 'key-b', Date.now() + 60_000);
    expect(await a.getNote('topup', 'q1')).toBe('key-b');
    await a.dropNote('topup', 'q1');
    expect(await b.getNote('topup', 'q1')).toBeUndefined();
    await a.putNote('topup', 'q2', 'key-c', Date.now() - 1);
    expect(await b.getNote('topup', 'q2')).toBeUndefined();
  });

  it('claims a note once, across instances, and says what the winner wrote', async () => {
    const [a, b] = [ledger, await open()];
    const later = Date.now() + 60_000;
    // Two at once: one wins, and both are told its value.
    const [x, y] = await Promise.all([a.claimNote('taken', 'q1', 'inv', later), b.claimNote('taken', 'q1', 'legacy', later)]);
    expect(x).toBe(y);
    expect(['inv', 'legacy']).toContain(x);
    expect(await a.getNote('taken', 'q1')).toBe(x);
    // An expired note is no claim.
    await a.putNote('taken', 'q2', 'old', Date.now() - 1);
    expect(await b.claimNote('taken', 'q2', 'new', later)).toBe('new');
    expect(await a.claimNote('taken', 'q2', 'newer', later)).toBe('new');
  });

  it('lists a scope\'s live notes, and only notes', async () => {
    const [a, b] = [ledger, await open()];
    const later = Date.now() + 60_000;
    await a.putNote('watch', 'j2', 'w2', later);
    await a.putNote('watch', 'j1', 'w1', later);
    await a.putNote('watch', 'old', 'w0', Date.now() - 1);
    await a.putNote('other', 'j3', 'w3', later);
    expect(await a.claimOnce('watch', 'claimed', later)).toBe(true);
    expect(await b.noteIds('watch')).toEqual(['j1', 'j2']);
    expect(await b.noteIds('watch', 1)).toEqual(['j1']);
    await b.dropNote('watch', 'j1');
    expect(await a.noteIds('watch')).toEqual(['j2']);
  });
});

describe('child keys', () => {
  const child = (hash: string, spendLimit: number | null, extra: Partial<NewChildKey> = {}): NewChildKey => ({
    hash, spendLimit, models: null, expiresAt: null, ...extra,
  });

  it('are created under a live balance key only, listed, and read back', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_800_000_000_000);
    expect(await ledger.createChildKeys('nobody', [child('c0', 1)])).toBeUndefined();
    await fund('p', [8]);
    const made = await ledger.createChildKeys('p', [child('c1', 5_000, { models: ['m1'], expiresAt: 1_900_000_000_000 }), child('c2', null)]);
    expect(made).toEqual([
      { hash: 'c1', parentHash: 'p', spendLimit: 5_000, spent: 0, reserved: 0, models: ['m1'], expiresAt: 1_900_000_000_000, revokedAt: null, totalRequests: 0, createdAt: 1_800_000_000_000 },
      { hash: 'c2', parentHash: 'p', spendLimit: null, spent: 0, reserved: 0, models: null, expiresAt: null, revokedAt: null, totalRequests: 0, createdAt: 1_800_000_000_000 },
    ]);
    expect(await ledger.getChildKey('c1')).toEqual(made![0]);
    expect(await ledger.getChildKey('p')).toBeUndefined();
    expect(await ledger.getKey('c1')).toBeUndefined();
    expect((await ledger.listChildKeys('p')).map((c) => c.hash)).toEqual(['c1', 'c2']);
    expect(await ledger.listChildKeys('c1')).toEqual([]);
    // A child is not a balance key: it has no children of its own.
    expect(await ledger.createChildKeys('c1', [child('c3', 1)])).toBeUndefined();
    expect(await ledger.revokeKey('p')).toBe(true);
    expect(await ledger.createChildKeys('p', [child('c4', 1)])).toBeUndefined();
    expect(await ledger.getChildKey('c4')).toBeUndefined();
  });

  it('are never more than the limit a parent may have, however many calls come at once', async () => {
    await fund('p', [8]);
    expect(await ledger.createChildKeys('p', [child('a', 1), child('b', 1)], 3)).toHaveLength(2);
    expect(await ledger.createChildKeys('p', [child('c', 1), child('d', 1)], 3)).toBe('too_many');
    expect((await ledger.listChildKeys('p')).map((c) => c.hash)).toEqual(['a', 'b']);
    // Eight calls of one child each, at once, with room for three more: exactly three are made.
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => ledger.createChildKeys('p', [child(`x${i}`, 1)], 5)));
    expect(results.filter((r) => Array.isArray(r))).toHaveLength(3);
    expect(results.filter((r) => r === 'too_many')).toHaveLength(5);
    expect(await ledger.listChildKeys('p')).toHaveLength(5);
  });

  it('spend the parent\'s balance within their limit; an overrun is capped at what the limit leaves', async () => {
    await fund('p', [8, 2]);
    await ledger.createChildKeys('p', [child('c', 6_000)]);
    expect(await ledger.reserve('c', 4_000, 'r1', 'm1')).toBe(true);
    expect(await ledger.getKey('p')).toMatchObject({ balance: 10_000, reserved: 4_000 });
    expect(await ledger.getChildKey('c')).toMatchObject({ spent: 0, reserved: 4_000, totalRequests: 1 });
    expect(await ledger.hasActiveReservations('p')).toBe(true);
    // 4,000 + 2,001 is past the limit of 6,000, though the parent could pay it.
    expect(await ledger.reserve('c', 2_001, 'r2')).toBe(false);
    expect(await ledger.getChildKey('c')).toMatchObject({ reserved: 4_000, totalRequests: 1 });
    expect(await ledger.reserve('c', 2_000, 'r3')).toBe(true);
    // r1 overran: the parent could pay 4,000 more, the limit only what r3 does not hold.
    expect(await ledger.settle('r1', 9_000, { inputTokens: 10, outputTokens: 20 })).toEqual({ chargedMsats: 4_000, balance: 6_000, reserved: 2_000 });
    expect(await ledger.settle('r3', 2_500)).toMatchObject({ chargedMsats: 2_000 });
    expect(await ledger.getChildKey('c')).toMatchObject({ spent: 6_000, reserved: 0, totalRequests: 2 });
    expect(await ledger.getKey('p')).toMatchObject({ balance: 4_000, reserved: 0, totalSpent: 6_000 });
    expect(await ledger.reserve('c', 1, 'r4')).toBe(false);
    // The parent itself still spends what is left.
    expect(await ledger.reserve('p', 4_000, 'r5')).toBe(true);
    await ledger.settle('r5', 0);
  });

  it('a child within its limit is still held to the parent\'s free balance, and to the parent being live', async () => {
    await fund('p', [2]);
    await ledger.createChildKeys('p', [child('c', null), child('d', 10_000)]);
    expect(await ledger.reserve('p', 1_500, 'rp')).toBe(true);
    expect(await ledger.reserve('d', 501, 'rd')).toBe(false);
    // A failed hold leaves the child as it was.
    expect(await ledger.getChildKey('d')).toMatchObject({ reserved: 0, totalRequests: 0 });
    expect(await ledger.reserve('c', 500, 'rc')).toBe(true);
    await ledger.settle('rp', 0);
    await ledger.settle('rc', 500);
    expect(await ledger.revokeKey('p')).toBe(true);
    expect(await ledger.reserve('c', 1, 'rc2')).toBe(false);
    expect(await ledger.getChildKey('c')).toMatchObject({ spent: 500, reserved: 0, totalRequests: 1 });
  });

  it('revoked or expired: reserves nothing more, while what it holds still settles and is charged', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_800_000_000_000);
    await fund('p', [8]);
    await ledger.createChildKeys('p', [child('c', 5_000), child('e', 5_000, { expiresAt: 1_800_000_060_000 })]);
    expect(await ledger.reserve('c', 1_000, 'rc')).toBe(true);
    expect(await ledger.revokeChildKey('other', 'c')).toBe(false);
    expect(await ledger.revokeChildKey('p', 'c')).toBe(true);
    expect(await ledger.revokeChildKey('p', 'c')).toBe(false);
    expect((await ledger.getChildKey('c'))!.revokedAt).toBe(1_800_000_000_000);
    expect(await ledger.reserve('c', 1, 'rc2')).toBe(false);
    expect(await ledger.settle('rc', 700)).toMatchObject({ chargedMsats: 700 });
    expect(await ledger.reserve('e', 1_000, 're')).toBe(true);
    vi.setSystemTime(1_800_000_060_000);
    expect(await ledger.reserve('e', 1, 're2')).toBe(false);
    expect(await ledger.settle('re', 1_000)).toMatchObject({ chargedMsats: 1_000 });
    expect(await ledger.getChildKey('e')).toMatchObject({ spent: 1_000, reserved: 0 });
    expect(await ledger.getKey('p')).toMatchObject({ balance: 6_300, reserved: 0 });
  });

  it('concurrent reserves through one child on two handles: never past its limit, to the msat', async () => {
    await fund('p', [32]);
    await ledger.createChildKeys('p', [child('c', 7_500)]);
    const other = await open();
    const ids = Array.from({ length: 24 }, (_, i) => `c${i}`);
    const won = await Promise.all(ids.map((id, i) => (i % 2 ? other : ledger).reserve('c', 1_000, id)));
    expect(won.filter(Boolean)).toHaveLength(7);
    expect(await ledger.getChildKey('c')).toMatchObject({ reserved: 7_000 });
    const settled = await Promise.all(ids.filter((_, i) => won[i]).map((id, i) => (i % 2 ? other : ledger).settle(id, 1_200)));
    // 7 × 1,200 asked; the limit leaves 7,500.
    expect(settled.reduce((s, x) => s + x.chargedMsats, 0)).toBe(7_500);
    expect(await ledger.getChildKey('c')).toMatchObject({ spent: 7_500, reserved: 0 });
    expect(await ledger.getKey('p')).toMatchObject({ balance: 24_500, reserved: 0 });
  });

  it('an orphaned reservation through a child is released from the child and the parent', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_800_000_000_000);
    await fund('p', [8]);
    await ledger.createChildKeys('p', [child('c', 5_000)]);
    const dead = await open();
    await dead.heartbeat();
    expect(await dead.reserve('c', 3_000, 'dead-1')).toBe(true);
    vi.setSystemTime(1_800_000_120_000);
    await ledger.heartbeat();
    expect(await ledger.releaseOrphans(60_000)).toBe(1);
    expect(await ledger.getChildKey('c')).toMatchObject({ spent: 0, reserved: 0 });
    expect(await ledger.getKey('p')).toMatchObject({ balance: 8_000, reserved: 0 });
    expect(await ledger.reserve('c', 5_000, 'again')).toBe(true);
    await ledger.settle('again', 0);
  });
});

describe('history', () => {
  it('lists a key\'s credits, charges and refunds newest first, paged by entry id; a child sees its own charges', async () => {
    const { tokenHash } = await fund('p', [8, 2]);
    await ledger.createChildKeys('p', [child2('c')]);
    expect(await ledger.reserve('p', 3_000, 'own', 'model-a')).toBe(true);
    await ledger.settle('own', 2_500, { inputTokens: 100, outputTokens: 40 });
    expect(await ledger.reserve('c', 2_000, 'via-c', 'model-b')).toBe(true);
    await ledger.settle('via-c', 1_200, { inputTokens: 7, outputTokens: 9 });
    expect(await ledger.reserve('p', 100, 'free')).toBe(true);
    await ledger.settle('free', 0);
    const started = await ledger.startRefund({ keyHash: 'p', opId: 'op', refundId: 'rf', mints: [MINT] });
    expect(started.kind).toBe('started');
    await ledger.abandonRefund('op');
    await fund('someone-else', [1]);

    const all = await ledger.history('p', { limit: 10 });
    expect(all.map((h) => [h.kind, h.msats, h.ref, h.via, h.model, h.inputTokens, h.outputTokens])).toEqual([
      ['refund', -6_000, 'rf', null, null, null, null],
      ['refund', 6_000, 'rf', null, null, null, null],
      ['charge', 1_200, 'via-c', 'c', 'model-b', 7, 9],
      ['charge', 2_500, 'own', null, 'model-a', 100, 40],
      ['credit', 10_000, tokenHash, null, null, null, null],
    ]);
    const ids = all.map((h) => h.id);
    expect([...ids].sort((a, b) => b - a)).toEqual(ids);
    const first = await ledger.history('p', { limit: 2 });
    expect(first).toEqual(all.slice(0, 2));
    expect(await ledger.history('p', { limit: 2, before: first[1]!.id })).toEqual(all.slice(2, 4));
    expect(await ledger.history('p', { limit: 2, before: all[4]!.id })).toEqual([]);
    expect(await ledger.history('c', { limit: 10 })).toEqual([all[2]]);
    expect(await ledger.history('nobody', { limit: 10 })).toEqual([]);
  });

  it('names the model a charge was billed at, when settle says it differs from the one reserved for', async () => {
    await fund('p', [8]);
    await ledger.createChildKeys('p', [child2('c')]);
    expect(await ledger.reserve('p', 3_000, 'own', 'cheap')).toBe(true);
    await ledger.settle('own', 2_500, { inputTokens: 10, outputTokens: 5, model: 'dear' });
    expect(await ledger.reserve('c', 2_000, 'via-c', 'cheap')).toBe(true);
    await ledger.settle('via-c', 1_000, { inputTokens: 1, outputTokens: 1, model: 'dear' });
    expect(await ledger.reserve('p', 1_000, 'same', 'cheap')).toBe(true);
    await ledger.settle('same', 500, { inputTokens: 1, outputTokens: 1 });
    const charges = (await ledger.history('p', { limit: 10 })).filter((h) => h.kind === 'charge');
    expect(charges.map((h) => [h.ref, h.model])).toEqual([
      ['same', 'cheap'],
      ['via-c', 'dear'],
      ['own', 'dear'],
    ]);
  });
});

const child2 = (hash: string): NewChildKey => ({ hash, spendLimit: null, models: null, expiresAt: null });

describe('running totals', () => {
  it('are back-filled from entries and keys by the migration that creates them', async () => {
    await fund('k', [8, 2]);
    await earn(3_000, [4]);
    expect(await ledger.reserve('k', 2_000, 'held')).toBe(true);
    // A locked proof set aside when the flag did not exist yet must still go back as locked.
    const locked = proof(8, true);
    expect(await ledger.acceptLocked({ tokenHash: 'off', keyHash: 'other', mint: MINT, unit: 'sat', proofs: [locked], creditMsats: 8_000 })).toBe('accepted');
    expect(await ledger.startSweep({ opId: 'sw', mint: MINT, unit: 'sat', limit: 10 })).toHaveLength(1);
    const before = await ledger.totals();
    for (const l of handles.splice(0)) await l.close();
    // Back to the schema before running totals, as a database deployed before them is.
    const undo = [
      'DROP TABLE totals',
      // And the migration after it (child keys, history), which then runs again too.
      'DROP TABLE child_keys',
      'DROP INDEX entries_key',
      'DROP INDEX entries_via',
      'ALTER TABLE entries DROP COLUMN via',
      ...['child_hash', 'model', 'input_tokens', 'output_tokens'].map((c) => `ALTER TABLE reservations DROP COLUMN ${c}`),
      // And the proofs' locked flag, back-filled from the secrets of the proofs that need it.
      'ALTER TABLE proofs DROP COLUMN locked',
      // And the proofs' indexes by op and by state.
      'DROP INDEX proofs_op',
      'DROP INDEX proofs_state',
      'UPDATE schema_version SET version = 5',
    ];
    await runSql(undo);
    ledger = await open();
    expect(await ledger.totals()).toEqual(before);
    expect(before).toMatchObject({ credited: 21_000, charged: 3_000, balances: 16_000, reserved: 2_000 });
    await ledger.settle('held', 2_000);
    await ledger.abandonSweep('sw');
    // Back among the locked, not among our own (whose one 8 is from fund()).
    expect((await ledger.unspentCounts(MINT, 'sat')).get(8)).toBe(1);
    expect(secrets(await ledger.startSweep({ opId: 'sw2', mint: MINT, unit: 'sat', limit: 10 }))).toEqual([locked.secret]);
    await ledger.abandonSweep('sw2');
  });
});

describe('a newer gateway migrating the database beneath a running one', () => {
  it('adds columns to tables this one reads whole (SELECT *), and its reads and writes go on', async () => {
    await fund('p', [8]);
    await ledger.createChildKeys('p', [child2('c')]);
    // Each read and write several times at once, so that more than one connection has run it.
    const spend = (ids: string[]) => Promise.all(ids.map(async (id) => {
      expect(await ledger.reserve('c', 1_000, id)).toBe(true);
      return (await ledger.settle(id, 1_000)).chargedMsats;
    }));
    const reads = () => Promise.all(Array.from({ length: 4 }, async () => [(await ledger.getKey('p'))!.balance, (await ledger.getChildKey('c'))!.spent]));
    expect(await spend(['r1', 'r2'])).toEqual([1_000, 1_000]);
    expect(await reads()).toEqual(Array(4).fill([8_000 - 2_000, 2_000]));
    const added = ['ALTER TABLE keys ADD COLUMN note TEXT', 'ALTER TABLE child_keys ADD COLUMN note TEXT'];
    await runSql(added);
    expect(await reads()).toEqual(Array(4).fill([8_000 - 2_000, 2_000]));
    expect(await spend(['r3', 'r4'])).toEqual([1_000, 1_000]);
    expect(await reads()).toEqual(Array(4).fill([8_000 - 4_000, 4_000]));
  });
});
