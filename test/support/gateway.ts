import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, inject } from 'vitest';
import { freshDatabase } from './postgres.ts';
import { createGateway } from '../../src/main.ts';
import { loadConfig } from '../../src/config.ts';
import { MSATS_PER, type Ledger } from '../../src/ledger/ledger.ts';
import { wallet } from './cashu.ts';
import { Amount, getTokenMetadata, type Proof } from '@cashu/cashu-ts';
import { hasValidProofDleq } from '../../src/cashu/dleq.ts';
import type { FakeUpstream } from './upstream.ts';
import type { Logger } from 'pino';

/** Test prices in msats per token: whole numbers for one model, sub-msat fractions for another. */
export const PRICES = {
  'gpt-test': { prompt: 2, completion: 5 },
  'gpt-cheap': { prompt: 0.15, completion: 0.6 },
};

/** A fixed gateway key, so instances sharing a database also share it, as operators configure. */
export const TEST_P2PK_PRIVKEY = '5b0f8a1a7f6ad09c1b2a1c6f0c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f';

export type Gateway = Awaited<ReturnType<typeof createGateway>> & { url: string };

/** The ledger this test project runs on: in-memory SQLite, or a fresh PostgreSQL database. */
export async function testDatabaseUrl(): Promise<string> {
  return process.env.TEST_LEDGER === 'postgres' ? freshDatabase(inject('postgresUrl')) : ':memory:';
}

/**
 * A database that outlives one connection, for child processes, a restart or a second gateway:
 * the fresh PostgreSQL one, or a new SQLite file where the other would be in memory.
 */
export async function durableDatabaseUrl(): Promise<string> {
  const url = await testDatabaseUrl();
  return url === ':memory:' ? `sqlite:${join(mkdtempSync(join(tmpdir(), 'gw-')), 'gateway.db')}` : url;
}

/** `upstream` null: no HTTP upstream at all (the embedded model's tests). */
export async function startGateway(
  mintUrl: string,
  upstream: FakeUpstream | null,
  env: Record<string, string> = {},
  opts: { log?: Logger } = {},
): Promise<Gateway> {
  const cfg = loadConfig({
    HOST: '127.0.0.1',
    PORT: '0',
    ...(upstream ? { UPSTREAM_BASE_URL: upstream.url } : {}),
    CASHU_MINTS: mintUrl,
    DATABASE_URL: await testDatabaseUrl(),
    LOG_LEVEL: 'silent',
    MODEL_PRICES: JSON.stringify(PRICES),
    MODELS_REFRESH_SECONDS: '0',
    CASHU_P2PK_PRIVKEY: TEST_P2PK_PRIVKEY,
    P2PK_REDEEM_INTERVAL_SECONDS: '0',
    ...env,
  });
  const gw = await createGateway(cfg, opts);
  await gw.app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = gw.app.server.address() as { port: number };
  return Object.assign(gw, { url: `http://127.0.0.1:${port}` });
}

/** Rounds a token count times a price (msats per token) up to whole msats, as billing does. */
export function msats(tokens: number, msatsPerToken: number): number {
  return Number((BigInt(tokens) * BigInt(Math.round(msatsPerToken * 1e6)) + 999_999n) / 1_000_000n);
}

/** What a test may leave behind, and why (a crash it caused, a mint it stopped). */
export interface Leftovers {
  /** Reservations still held (a stream still open, a crashed instance not yet released). */
  reserved?: boolean;
  /** Mint operations still pending (a swap whose answer was lost on purpose). */
  pending?: boolean;
}

/**
 * Money is conserved: what came in was charged, refunded, or is still held; the gateway's
 * unspent proofs are worth exactly what it still owes plus what it earned, and the mint agrees
 * every one of them is unspent, signed by it (DLEQ) in the unit the ledger says. Unless the test
 * says why, nothing is left reserved and no mint operation is left pending: a leaked reservation
 * or a stuck operation would otherwise cancel out of the sums.
 */
export async function expectMoneyConserved(gw: Pick<Gateway, 'ledger' | 'wallets'>, leftovers: Leftovers = {}): Promise<void> {
  // The change float refills itself a moment after a payout: that swap is the gateway's own
  // work, let finish before the books are read (a stuck one still shows as pending below).
  await gw.wallets.idle();
  await expectLedgerConserved(gw.ledger, gw.wallets.mints, leftovers);
}

export async function expectLedgerConserved(ledger: Ledger, mints: readonly string[], leftovers: Leftovers = {}): Promise<void> {
  const t = await ledger.totals();
  expect(t.credited).toBe(t.charged + t.refunded + t.balances + t.reserved);
  if (!leftovers.reserved) expect(t.reserved, 'msats left reserved').toBe(0);
  if (!leftovers.pending) expect((await ledger.pendingOps()).map((o) => `${o.kind} ${o.id}`), 'mint operations left pending').toEqual([]);
  let held = 0;
  for (const mintUrl of mints) {
    for (const unit of ['sat', 'msat'] as const) {
      const proofs = await ledger.heldProofs(mintUrl, unit);
      held += proofs.reduce((s, p) => s + p.amount, 0) * MSATS_PER[unit];
      if (proofs.length) {
        const w = await wallet(mintUrl, unit);
        const states = await w.checkProofsStates(proofs.map((p) => ({ secret: p.secret, id: p.id })));
        expect(states.every((s) => s.state === 'UNSPENT')).toBe(true);
        for (const p of proofs) {
          const keyset = w.keyChain.getKeyset(p.id);
          expect(keyset.unit, `unit of proof ${p.secret.slice(0, 12)}…`).toBe(unit);
          // Proofs the mint signed carry its DLEQ; each must verify against the keyset's key.
          expect(p.dleq, `DLEQ of proof ${p.secret.slice(0, 12)}…`).toBeDefined();
          expect(hasValidProofDleq({ ...p, amount: Amount.from(p.amount), dleq: p.dleq as Proof['dleq'] }, keyset), `DLEQ of proof ${p.secret.slice(0, 12)}…`).toBe(true);
        }
      }
    }
  }
  expect(held).toBe(t.credited - t.refunded - t.withdrawn - t.fees);
  expect(t.withdrawn + t.fees).toBeLessThanOrEqual(t.charged);
}

/** Prices a charge may be checked against: msats per token, by model. */
export type PriceTable = Record<string, { prompt: number; completion: number; write?: number }>;

/**
 * The dearest an input token of `price` can be: a cache write, when the model prices them, up to a
 * write to Anthropic's 1-hour cache at twice the prompt price (src/engine/pricing.ts).
 */
function dearestInput(price: PriceTable[string]): number {
  return price.write === undefined ? price.prompt : Math.max(price.prompt, price.write, 2 * price.prompt);
}

/**
 * The end of a file: every key is refunded and the operator's earnings withdrawn, each token
 * redeemed at the mint for what the ledger booked it at, so what came out is measured by the
 * mint, not by the gateway. Afterwards what went in (credited) is what came out over the file
 * (refunded, withdrawn, the mints' fees) plus the sub-sat rests still held, to the msat. With
 * `prices`, no charge is above what the usage it records costs: over-charging lands in the
 * earnings, where conservation alone would never see it.
 */
export async function expectDrained(gw: Pick<Gateway, 'ledger' | 'wallets'>, opts: { prices?: PriceTable } = {}): Promise<void> {
  await expectMoneyConserved(gw);
  const before = await gw.ledger.totals();
  const keys = await gw.ledger.listKeys(1_000_000);
  for (const k of keys) await expectKeyMatchesEntries(gw.ledger, k, opts.prices);
  let out = 0;
  for (const k of keys) {
    const per = MSATS_PER[k.unit];
    const owed = Math.floor(k.balance / per);
    if (owed === 0) continue;
    const r = await gw.wallets.refund(k.hash);
    expect([r.state, r.msats, r.amount, r.unit], `refund of key ${k.hash.slice(0, 8)}`).toEqual(['done', owed * per, owed, k.unit]);
    out += (await redeemed(r.mint, r.token!)) * per;
  }
  // The refunds' payouts start float refills, whose inputs are pending until the mint answers.
  await gw.wallets.idle();
  for (let i = 0; i < 4; i++) {
    const r = await gw.wallets.withdraw();
    if (!r) break;
    expect(r.state, 'withdrawal').toBe('done');
    out += (await redeemed(r.mint, r.token!)) * MSATS_PER[r.unit];
  }
  const t = await gw.ledger.totals();
  expect(t.credited, 'nothing credited while draining').toBe(before.credited);
  expect(t.charged, 'nothing charged while draining').toBe(before.charged);
  // The mint's count of what it took back in, against the ledger's count of what it paid out.
  expect(out, 'msats redeemed at the mint').toBe(t.refunded - before.refunded + t.withdrawn - before.withdrawn);
  for (const k of await gw.ledger.listKeys(1_000_000)) {
    expect(k.balance, `rest on key ${k.hash.slice(0, 8)}`).toBeLessThan(MSATS_PER[k.unit]);
  }
  expect(t.charged - t.withdrawn - t.fees, 'earnings left after the withdrawal').toBeLessThan(1000);
  // The keys' own rows against the running totals: two records of the same money.
  const rests = (await gw.ledger.listKeys(1_000_000)).reduce((s, k) => s + k.balance, 0);
  expect(rests, 'sub-sat rests on the keys').toBe(t.balances);
  await expectMoneyConserved(gw);
}

/**
 * A key's row against its entries: what was credited, less what was charged and refunded, is its
 * balance; every charge is within what its recorded usage costs at `prices`.
 */
async function expectKeyMatchesEntries(ledger: Ledger, k: Awaited<ReturnType<Ledger['getKey']>> & {}, prices?: PriceTable): Promise<void> {
  const rows = await ledger.history(k.hash, { limit: 1_000_000 });
  let balance = 0;
  let spent = 0;
  for (const e of rows) {
    balance += e.kind === 'credit' ? e.msats : -e.msats;
    if (e.kind !== 'charge') continue;
    spent += e.msats;
    const price = e.model ? prices?.[e.model] : undefined;
    if (price && e.inputTokens !== null && e.outputTokens !== null) {
      const cost = msats(e.inputTokens, dearestInput(price)) + msats(e.outputTokens, price.completion);
      expect(e.msats, `charge ${e.ref} for ${e.inputTokens}+${e.outputTokens} tokens of ${e.model}`).toBeLessThanOrEqual(cost);
    }
  }
  expect(balance, `entries of key ${k.hash.slice(0, 8)}`).toBe(k.balance);
  expect(spent, `charges of key ${k.hash.slice(0, 8)}`).toBe(k.totalSpent);
  expect(k.reserved, `reserved on key ${k.hash.slice(0, 8)}`).toBe(0);
}

/** Redeems a token the gateway paid out; its worth as the mint counts it, fees the holder pays included. */
async function redeemed(mintUrl: string, token: string): Promise<number> {
  const meta = getTokenMetadata(token);
  const w = await wallet(mintUrl, meta.unit ?? 'sat');
  const proofs = w.decodeToken(token).proofs;
  const fee = w.getFeesForProofs(proofs).toNumber();
  const got = (await w.receive(token)).reduce((s, p) => s + p.amount.toNumber(), 0);
  expect(got + fee, 'token worth its face value at the mint').toBe(meta.amount.toNumber());
  return got + fee;
}
