import { expect, inject } from 'vitest';
import { freshDatabase } from './postgres.ts';
import { createGateway } from '../../src/main.ts';
import { loadConfig } from '../../src/config.ts';
import { MSATS_PER, type Ledger } from '../../src/ledger/ledger.ts';
import { wallet } from './cashu.ts';
import { Amount, type Proof } from '@cashu/cashu-ts';
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
