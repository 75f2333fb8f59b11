import pg from 'pg';
import { randomUUID } from 'node:crypto';
import {
  MSATS_PER,
  OPERATOR,
  RELEASED_STATE_SQL,
  meltFee,
  pickPlan,
  swapFee,
  type KeyRow,
  type Ledger,
  type MeltRow,
  type MintOp,
  type RefundRow,
  type Settlement,
  type StartMelt,
  type StartMeltResult,
  type StartRefund,
  type StartRefundResult,
  type StartWithdrawResult,
  type StoredProof,
  type TokenRow,
  type Totals,
  type Unit,
} from './ledger.ts';
import { keyRow, meltRow, opRow, proofRow, refundRow, type Row } from './rows.ts';

// msats fit in a double exactly (< 2^53); BIGINT and SUM() come back as numbers, not strings.
pg.types.setTypeParser(pg.types.builtins.INT8, Number);
pg.types.setTypeParser(pg.types.builtins.NUMERIC, Number);

const MIGRATIONS: string[] = [
  `CREATE TABLE keys (
     hash TEXT PRIMARY KEY,
     balance BIGINT NOT NULL CHECK (balance >= 0),
     reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= balance),
     unit TEXT NOT NULL,
     mint TEXT NOT NULL,
     total_spent BIGINT NOT NULL DEFAULT 0,
     total_requests BIGINT NOT NULL DEFAULT 0,
     created_at BIGINT NOT NULL);
   CREATE TABLE mint_ops (
     id TEXT PRIMARY KEY,
     kind TEXT NOT NULL,
     mint TEXT NOT NULL,
     unit TEXT NOT NULL,
     state TEXT NOT NULL,
     key_hash TEXT NOT NULL,
     token_hash TEXT,
     inputs TEXT NOT NULL,
     outputs TEXT,
     created_at BIGINT NOT NULL,
     updated_at BIGINT NOT NULL);
   CREATE INDEX mint_ops_pending ON mint_ops(state) WHERE state = 'pending';
   CREATE TABLE tokens (
     hash TEXT PRIMARY KEY,
     key_hash TEXT NOT NULL,
     op_id TEXT NOT NULL,
     state TEXT NOT NULL,
     msats BIGINT,
     created_at BIGINT NOT NULL);
   CREATE TABLE proofs (
     secret TEXT PRIMARY KEY,
     mint TEXT NOT NULL,
     unit TEXT NOT NULL,
     keyset_id TEXT NOT NULL,
     amount BIGINT NOT NULL,
     c TEXT NOT NULL,
     dleq TEXT,
     state TEXT NOT NULL,
     op_id TEXT,
     created_at BIGINT NOT NULL);
   CREATE INDEX proofs_unspent ON proofs(mint, unit, amount) WHERE state = 'unspent';
   CREATE TABLE reservations (
     id TEXT PRIMARY KEY,
     key_hash TEXT NOT NULL,
     msats BIGINT NOT NULL,
     state TEXT NOT NULL,
     charged BIGINT,
     created_at BIGINT NOT NULL);
   CREATE INDEX reservations_active ON reservations(key_hash) WHERE state = 'active';
   CREATE TABLE refunds (
     id TEXT PRIMARY KEY,
     seq BIGSERIAL,
     key_hash TEXT NOT NULL,
     op_id TEXT NOT NULL UNIQUE,
     msats BIGINT NOT NULL,
     amount BIGINT NOT NULL,
     unit TEXT NOT NULL,
     mint TEXT NOT NULL,
     token TEXT,
     state TEXT NOT NULL,
     created_at BIGINT NOT NULL);
   CREATE INDEX refunds_key ON refunds(key_hash, seq);
   CREATE TABLE entries (
     id BIGSERIAL PRIMARY KEY,
     key_hash TEXT NOT NULL,
     kind TEXT NOT NULL,
     msats BIGINT NOT NULL,
     ref TEXT NOT NULL,
     created_at BIGINT NOT NULL);`,
  `ALTER TABLE reservations ADD COLUMN owner TEXT;
   CREATE TABLE instances (id TEXT PRIMARY KEY, heartbeat_at BIGINT NOT NULL);`,
  `ALTER TABLE keys ADD COLUMN revoked BOOLEAN NOT NULL DEFAULT false;`,
  `CREATE TABLE melts (
     id TEXT PRIMARY KEY,
     op_id TEXT NOT NULL UNIQUE,
     mint TEXT NOT NULL,
     unit TEXT NOT NULL,
     quote TEXT NOT NULL,
     request TEXT NOT NULL,
     amount BIGINT NOT NULL,
     fee_reserve BIGINT NOT NULL,
     fee BIGINT,
     preimage TEXT,
     state TEXT NOT NULL,
     created_at BIGINT NOT NULL);`,
  `CREATE TABLE marks (
     scope TEXT NOT NULL,
     id TEXT NOT NULL,
     value TEXT,
     count INTEGER NOT NULL DEFAULT 0,
     expires_at BIGINT NOT NULL,
     PRIMARY KEY (scope, id));`,
];

type Client = pg.PoolClient;

export class PostgresLedger implements Ledger {
  readonly #pool: pg.Pool;
  /** This process, as the owner of the reservations it takes. */
  readonly #instance = randomUUID();

  private constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  static async open(url: string): Promise<PostgresLedger> {
    const pool = new pg.Pool({ connectionString: url, max: 20 });
    const ledger = new PostgresLedger(pool);
    await ledger.#migrate();
    return ledger;
  }

  async #migrate(): Promise<void> {
    const c = await this.#pool.connect();
    try {
      // One migrator at a time, however many gateway processes start together.
      await c.query('SELECT pg_advisory_lock(4242001)');
      await c.query('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
      const r = await c.query('SELECT version FROM schema_version');
      let version = (r.rows[0]?.version as number | undefined) ?? 0;
      if (r.rowCount === 0) await c.query('INSERT INTO schema_version (version) VALUES (0)');
      while (version < MIGRATIONS.length) {
        await c.query('BEGIN');
        await c.query(MIGRATIONS[version]!);
        await c.query('UPDATE schema_version SET version = $1', [version + 1]);
        await c.query('COMMIT');
        version++;
      }
    } finally {
      await c.query('SELECT pg_advisory_unlock(4242001)').catch(() => {});
      c.release();
    }
  }

  async #tx<T>(fn: (c: Client) => Promise<T>): Promise<T> {
    const c = await this.#pool.connect();
    try {
      await c.query('BEGIN');
      const out = await fn(c);
      await c.query('COMMIT');
      return out;
    } catch (e) {
      await c.query('ROLLBACK').catch(() => {});
      throw e;
    } finally {
      c.release();
    }
  }

  async #one(sql: string, params: unknown[], c: pg.Pool | Client = this.#pool): Promise<Row | undefined> {
    return (await c.query(sql, params)).rows[0] as Row | undefined;
  }

  async #insertProofs(c: Client, proofs: StoredProof[], mint: string, unit: Unit, state: string, opId: string, now: number): Promise<void> {
    for (const p of proofs) {
      await c.query(
        `INSERT INTO proofs (secret, mint, unit, keyset_id, amount, c, dleq, state, op_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
        [p.secret, mint, unit, p.id, p.amount, p.C, p.dleq ? JSON.stringify(p.dleq) : null, state, opId, now],
      );
    }
  }

  async #entry(c: Client, keyHash: string, kind: string, msats: number, ref: string, now: number): Promise<void> {
    await c.query('INSERT INTO entries (key_hash, kind, msats, ref, created_at) VALUES ($1, $2, $3, $4, $5)', [keyHash, kind, msats, ref, now]);
  }

  async #finishOp(c: Client, opId: string, state: 'done' | 'failed', now: number): Promise<boolean> {
    const r = await c.query(`UPDATE mint_ops SET state = $1, updated_at = $2 WHERE id = $3 AND state = 'pending'`, [state, now, opId]);
    return r.rowCount === 1;
  }

  async getKey(hash: string): Promise<KeyRow | undefined> {
    const r = await this.#one('SELECT * FROM keys WHERE hash = $1', [hash]);
    return r && keyRow(r);
  }

  async listKeys(limit: number): Promise<KeyRow[]> {
    return ((await this.#pool.query('SELECT * FROM keys ORDER BY balance DESC, created_at LIMIT $1', [limit])).rows as Row[]).map(keyRow);
  }

  async revokeKey(hash: string): Promise<boolean> {
    return (await this.#pool.query('UPDATE keys SET revoked = true WHERE hash = $1', [hash])).rowCount === 1;
  }

  async getToken(hash: string): Promise<TokenRow | undefined> {
    const r = await this.#one('SELECT * FROM tokens WHERE hash = $1', [hash]);
    if (!r) return undefined;
    return {
      hash: r.hash as string,
      keyHash: r.key_hash as string,
      opId: r.op_id as string,
      state: r.state as TokenRow['state'],
      msats: (r.msats as number | null) ?? null,
    };
  }

  async startRedemption(r: {
    tokenHash: string; keyHash: string; opId: string; mint: string; unit: Unit; inputs: StoredProof[]; outputs: unknown[];
  }): Promise<{ started: true } | { started: false; token: TokenRow } | { started: false; replayed: true }> {
    const now = Date.now();
    let started: boolean;
    try {
      started = await this.#startRedemption(r, now);
    } catch (e) {
      if ((e as { code?: string }).code === '23505') return { started: false, replayed: true };
      throw e;
    }
    if (started) return { started: true };
    return { started: false, token: (await this.getToken(r.tokenHash))! };
  }

  #startRedemption(
    r: { tokenHash: string; keyHash: string; opId: string; mint: string; unit: Unit; inputs: StoredProof[]; outputs: unknown[] },
    now: number,
  ): Promise<boolean> {
    return this.#tx(async (c) => {
      const ins = await c.query(
        `INSERT INTO tokens (hash, key_hash, op_id, state, created_at) VALUES ($1, $2, $3, 'redeeming', $4)
         ON CONFLICT (hash) DO NOTHING`,
        [r.tokenHash, r.keyHash, r.opId, now],
      );
      if (ins.rowCount === 0) return false;
      for (const p of r.inputs) {
        // A proof we gave away (sent) may come back; one we hold, are claiming or know spent may not
        // (a spent row stays: an abandoned claim deletes its rows, and that one stops an offline replay).
        const claimed = await c.query(
          `INSERT INTO proofs (secret, mint, unit, keyset_id, amount, c, dleq, state, op_id, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, NULL, 'incoming', $7, $8)
           ON CONFLICT (secret) DO UPDATE SET state = 'incoming', op_id = excluded.op_id
           WHERE proofs.state = 'sent'`,
          [p.secret, r.mint, r.unit, p.id, p.amount, p.C, r.opId, now],
        );
        if (claimed.rowCount !== 1) throw Object.assign(new Error('proof already held'), { code: '23505' });
      }
      await c.query(
        `INSERT INTO mint_ops (id, kind, mint, unit, state, key_hash, token_hash, inputs, outputs, created_at, updated_at)
         VALUES ($1, 'receive', $2, $3, 'pending', $4, $5, $6, $7, $8, $8)`,
        [r.opId, r.mint, r.unit, r.keyHash, r.tokenHash, JSON.stringify(r.inputs), JSON.stringify(r.outputs), now],
      );
      return true;
    });
  }

  async finishRedemption(r: { tokenHash: string; opId: string; proofs: StoredProof[]; creditMsats: number }): Promise<KeyRow> {
    const now = Date.now();
    return this.#tx(async (c) => {
      const op = opRow((await this.#one('SELECT * FROM mint_ops WHERE id = $1', [r.opId], c))!);
      if (!(await this.#finishOp(c, r.opId, 'done', now))) throw new Error(`mint op ${r.opId} is not pending`);
      await c.query(`UPDATE proofs SET state = 'spent' WHERE op_id = $1 AND state = 'incoming'`, [r.opId]);
      await this.#insertProofs(c, r.proofs, op.mint, op.unit, 'unspent', r.opId, now);
      await c.query(`UPDATE tokens SET state = 'credited', msats = $1 WHERE hash = $2 AND op_id = $3`, [r.creditMsats, r.tokenHash, r.opId]);
      const key = await this.#one(
        `INSERT INTO keys (hash, balance, unit, mint, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (hash) DO UPDATE SET balance = keys.balance + excluded.balance RETURNING *`,
        [op.keyHash, r.creditMsats, op.unit, op.mint, now],
        c,
      );
      await this.#entry(c, op.keyHash, 'credit', r.creditMsats, r.tokenHash, now);
      return keyRow(key!);
    });
  }

  async abandonRedemption(tokenHash: string, opId: string): Promise<void> {
    await this.#tx(async (c) => {
      if (!(await this.#finishOp(c, opId, 'failed', Date.now()))) return;
      await c.query('DELETE FROM tokens WHERE hash = $1 AND op_id = $2', [tokenHash, opId]);
      await c.query(`DELETE FROM proofs WHERE op_id = $1 AND state = 'incoming'`, [opId]);
    });
  }

  async acceptLocked(r: {
    tokenHash: string; keyHash: string; mint: string; unit: Unit; proofs: StoredProof[]; creditMsats: number;
  }): Promise<'accepted' | 'known' | 'replayed'> {
    const now = Date.now();
    try {
      return await this.#tx(async (c) => {
        const opId = `offline:${r.tokenHash}`;
        const ins = await c.query(
          `INSERT INTO tokens (hash, key_hash, op_id, state, msats, created_at) VALUES ($1, $2, $3, 'credited', $4, $5)
           ON CONFLICT (hash) DO NOTHING`,
          [r.tokenHash, r.keyHash, opId, r.creditMsats, now],
        );
        if (ins.rowCount === 0) return 'known';
        await this.#insertProofs(c, r.proofs, r.mint, r.unit, 'locked', opId, now);
        await c.query(
          `INSERT INTO keys (hash, balance, unit, mint, created_at) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (hash) DO UPDATE SET balance = keys.balance + excluded.balance`,
          [r.keyHash, r.creditMsats, r.unit, r.mint, now],
        );
        await this.#entry(c, r.keyHash, 'credit', r.creditMsats, r.tokenHash, now);
        return 'accepted';
      });
    } catch (e) {
      if ((e as { code?: string }).code === '23505') return 'replayed';
      throw e;
    }
  }

  async startSweep(r: { opId: string; mint: string; unit: Unit; limit: number }): Promise<StoredProof[]> {
    const now = Date.now();
    return this.#tx(async (c) => {
      const rows = await c.query(
        `SELECT * FROM proofs WHERE mint = $1 AND unit = $2 AND state = 'locked' ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED`,
        [r.mint, r.unit, r.limit],
      );
      const proofs = (rows.rows as Row[]).map(proofRow);
      if (proofs.length === 0) return proofs;
      await c.query(
        `INSERT INTO mint_ops (id, kind, mint, unit, state, key_hash, token_hash, inputs, outputs, created_at, updated_at)
         VALUES ($1, 'sweep', $2, $3, 'pending', '', NULL, $4, NULL, $5, $5)`,
        [r.opId, r.mint, r.unit, JSON.stringify(proofs), now],
      );
      await c.query(`UPDATE proofs SET state = 'pending', op_id = $1 WHERE secret = ANY($2)`, [r.opId, proofs.map((p) => p.secret)]);
      return proofs;
    });
  }

  async finishSweep(opId: string, proofs: StoredProof[]): Promise<void> {
    const now = Date.now();
    await this.#tx(async (c) => {
      const op = opRow((await this.#one('SELECT * FROM mint_ops WHERE id = $1', [opId], c))!);
      if (!(await this.#finishOp(c, opId, 'done', now))) throw new Error(`mint op ${opId} is not pending`);
      await c.query(`UPDATE proofs SET state = 'spent' WHERE secret = ANY($1)`, [op.inputs.map((p) => p.secret)]);
      await this.#insertProofs(c, proofs, op.mint, op.unit, 'unspent', opId, now);
      const fee = swapFee(op.inputs, proofs, 0) * MSATS_PER[op.unit];
      if (fee > 0) await this.#entry(c, OPERATOR, 'fee', fee, opId, now);
    });
  }

  async abandonSweep(opId: string): Promise<void> {
    await this.#tx(async (c) => {
      if (!(await this.#finishOp(c, opId, 'failed', Date.now()))) return;
      await c.query(`UPDATE proofs SET state = 'locked', op_id = NULL WHERE op_id = $1 AND state = 'pending'`, [opId]);
    });
  }

  async reserve(keyHash: string, msats: number, reservationId: string): Promise<boolean> {
    // One statement, so one round trip, and atomic on its own.
    const r = await this.#pool.query(
      `WITH k AS (
         UPDATE keys SET reserved = reserved + $1, total_requests = total_requests + 1
         WHERE hash = $2 AND balance - reserved >= $1 AND NOT revoked
         RETURNING hash)
       INSERT INTO reservations (id, key_hash, msats, state, created_at, owner)
       SELECT $3, hash, $1, 'active', $4, $5 FROM k`,
      [msats, keyHash, reservationId, Date.now(), this.#instance],
    );
    return r.rowCount === 1;
  }

  async settle(reservationId: string, chargeMsats: number): Promise<Settlement> {
    const now = Date.now();
    return this.#tx(async (c) => {
      const row = await this.#one(
        `SELECT r.key_hash, r.msats AS held, k.balance, k.reserved
         FROM reservations r JOIN keys k ON k.hash = r.key_hash
         WHERE r.id = $1 AND r.state = 'active'
         FOR UPDATE OF r, k`,
        [reservationId],
        c,
      );
      if (!row) throw new Error(`reservation ${reservationId} is not active`);
      const keyHash = row.key_hash as string;
      const held = row.held as number;
      const [balance, reserved] = [row.balance as number, row.reserved as number];
      // An overrun may use the key's free balance, never other requests' reservations.
      const charged = Math.min(chargeMsats, held + (balance - reserved));
      await c.query(
        `WITH k AS (
           UPDATE keys SET balance = balance - $1, reserved = reserved - $2, total_spent = total_spent + $1 WHERE hash = $3),
         r AS (
           UPDATE reservations SET state = $4, charged = $1 WHERE id = $5)
         INSERT INTO entries (key_hash, kind, msats, ref, created_at)
         SELECT $3, 'charge', $1, $5, $6 WHERE $1::bigint > 0`,
        [charged, held, keyHash, charged > 0 ? 'charged' : 'released', reservationId, now],
      );
      return { chargedMsats: charged, balance: balance - charged, reserved: reserved - held };
    });
  }

  async heartbeat(): Promise<void> {
    await this.#pool.query(
      `INSERT INTO instances (id, heartbeat_at) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`,
      [this.#instance, Date.now()],
    );
  }

  async releaseOrphans(staleMs: number): Promise<number> {
    return this.#tx(async (c) => {
      const rows = await c.query(
        `SELECT r.* FROM reservations r LEFT JOIN instances i ON i.id = r.owner
         WHERE r.state = 'active' AND (i.id IS NULL OR i.heartbeat_at < $1) AND r.owner IS DISTINCT FROM $2
         FOR UPDATE OF r SKIP LOCKED`,
        [Date.now() - staleMs, this.#instance],
      );
      for (const r of rows.rows as Row[]) {
        await c.query('UPDATE keys SET reserved = reserved - $1 WHERE hash = $2', [r.msats, r.key_hash]);
        await c.query(`UPDATE reservations SET state = 'released', charged = 0 WHERE id = $1`, [r.id]);
      }
      return rows.rowCount ?? 0;
    });
  }

  async hasActiveReservations(keyHash: string): Promise<boolean> {
    return (await this.#one(`SELECT 1 FROM reservations WHERE key_hash = $1 AND state = 'active' LIMIT 1`, [keyHash])) !== undefined;
  }

  async startRefund(r: StartRefund): Promise<StartRefundResult> {
    const now = Date.now();
    return this.#tx(async (c): Promise<StartRefundResult> => {
      const kr = await this.#one('SELECT * FROM keys WHERE hash = $1 FOR UPDATE', [r.keyHash], c);
      if (!kr) return { kind: 'no_key' };
      const key = keyRow(kr);
      if (await this.#one(`SELECT 1 FROM reservations WHERE key_hash = $1 AND state = 'active' LIMIT 1`, [r.keyHash], c)) {
        return { kind: 'busy', key };
      }
      const per = MSATS_PER[key.unit];
      const amount = Math.floor((key.balance - key.reserved) / per);
      if (amount <= 0) {
        const latest = await this.#one('SELECT * FROM refunds WHERE key_hash = $1 ORDER BY seq DESC LIMIT 1', [r.keyHash], c);
        return { kind: 'nothing', latest: latest && refundRow(latest), key };
      }
      const msats = amount * per;
      const opened = await this.#openPayout(c, r, key.unit, amount, msats, 'refund', now);
      if (!opened) return { kind: 'no_liquidity', amount, unit: key.unit };
      await c.query('UPDATE keys SET balance = balance - $1 WHERE hash = $2', [msats, r.keyHash]);
      return { kind: 'started', ...opened };
    });
  }

  /** Proofs worth at least `amount` at one mint and unit, fewest and exact where possible. */
  async #pick(c: Client, mint: string, unit: Unit, amount: number): Promise<StoredProof[] | undefined> {
    // Payouts from one mint and unit take turns, so the counts below stay true until we take.
    await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`payout ${mint} ${unit}`]);
    const counts = async (states: string[]) =>
      ((await c.query(`SELECT amount, COUNT(*) AS n FROM proofs WHERE mint = $1 AND unit = $2 AND state = ANY($3) GROUP BY amount`, [mint, unit, states]))
        .rows as Row[]).map((r) => [r.amount as number, r.n as number] as const);
    // Our own unspent proofs first; locked ones too if need be (they are then spent with our key).
    let states = ['unspent'];
    let plan = pickPlan(await counts(states), amount);
    if (!plan) {
      states = ['unspent', 'locked'];
      plan = pickPlan(await counts(states), amount);
    }
    if (!plan) return undefined;
    const picked: StoredProof[] = [];
    for (const [denomination, n] of plan) {
      const rows = await c.query(
        `SELECT * FROM proofs WHERE mint = $1 AND unit = $2 AND state = ANY($3) AND amount = $4
         ORDER BY state = 'locked' LIMIT $5 FOR UPDATE`,
        [mint, unit, states, denomination, n],
      );
      picked.push(...(rows.rows as Row[]).map(proofRow));
    }
    return picked;
  }

  async #openOp(c: Client, id: string, kind: 'refund' | 'melt', mint: string, unit: Unit, keyHash: string, inputs: StoredProof[], now: number): Promise<void> {
    await c.query(
      `INSERT INTO mint_ops (id, kind, mint, unit, state, key_hash, token_hash, inputs, outputs, created_at, updated_at)
       VALUES ($1, $2, $3, $4, 'pending', $5, NULL, $6, NULL, $7, $7)`,
      [id, kind, mint, unit, keyHash, JSON.stringify(inputs), now],
    );
    await c.query(`UPDATE proofs SET state = 'pending', op_id = $1 WHERE secret = ANY($2)`, [id, inputs.map((p) => p.secret)]);
  }

  /** Sets aside proofs worth `amount` at the first mint that has them, and opens the refund op. */
  async #openPayout(
    c: Client, r: StartRefund, unit: Unit, amount: number, msats: number, kind: 'refund' | 'withdraw', now: number,
  ): Promise<{ refund: RefundRow; inputs: StoredProof[] } | undefined> {
    for (const mint of r.mints) {
      const picked = await this.#pick(c, mint, unit, amount);
      if (!picked) continue;
      await this.#openOp(c, r.opId, 'refund', mint, unit, r.keyHash, picked, now);
      const refund = await this.#one(
        `INSERT INTO refunds (id, key_hash, op_id, msats, amount, unit, mint, state, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8) RETURNING *`,
        [r.refundId, r.keyHash, r.opId, msats, amount, unit, mint, now],
        c,
      );
      await this.#entry(c, r.keyHash, kind, msats, r.refundId, now);
      return { refund: refundRow(refund!), inputs: picked };
    }
    return undefined;
  }

  async #earnings(c: Client): Promise<number> {
    // Withdrawals read earnings and then book against them: one at a time across instances.
    await c.query('SELECT pg_advisory_xact_lock(4242002)');
    return (await this.#one(
      `SELECT COALESCE(SUM(CASE kind WHEN 'charge' THEN msats ELSE -msats END), 0) AS msats
       FROM entries WHERE kind IN ('charge', 'withdraw', 'fee')`,
      [],
      c,
    ))!.msats as number;
  }

  async startWithdraw(r: { opId: string; refundId: string; mints: string[] }): Promise<StartWithdrawResult> {
    const now = Date.now();
    return this.#tx(async (c): Promise<StartWithdrawResult> => {
      const earnings = await this.#earnings(c);
      const payout = { ...r, keyHash: OPERATOR };
      for (const unit of ['sat', 'msat'] as const) {
        const amount = Math.floor(earnings / MSATS_PER[unit]);
        if (amount <= 0) continue;
        const opened = await this.#openPayout(c, payout, unit, amount, amount * MSATS_PER[unit], 'withdraw', now);
        if (opened) return { kind: 'started', ...opened };
      }
      return earnings >= 1000 ? { kind: 'no_liquidity', amount: Math.floor(earnings / 1000), unit: 'sat' } : { kind: 'nothing' };
    });
  }

  async journalOutputs(opId: string, outputs: unknown[], swapped: StoredProof[]): Promise<void> {
    await this.#tx(async (c) => {
      const res = await c.query(
        `UPDATE mint_ops SET outputs = $1, inputs = $2, updated_at = $3 WHERE id = $4 AND state = 'pending'`,
        [JSON.stringify(outputs), JSON.stringify(swapped), Date.now(), opId],
      );
      if (res.rowCount !== 1) throw new Error(`mint op ${opId} is not pending`);
      await c.query(
        `UPDATE proofs SET state = ${RELEASED_STATE_SQL}, op_id = NULL WHERE op_id = $1 AND state = 'pending' AND NOT (secret = ANY($2))`,
        [opId, swapped.map((p) => p.secret)],
      );
    });
  }

  async finishRefund(r: { opId: string; token: string; sent: StoredProof[]; keep: StoredProof[] }): Promise<RefundRow> {
    const now = Date.now();
    return this.#tx(async (c) => {
      const op = opRow((await this.#one('SELECT * FROM mint_ops WHERE id = $1', [r.opId], c))!);
      if (!(await this.#finishOp(c, r.opId, 'done', now))) throw new Error(`mint op ${r.opId} is not pending`);
      const sentSecrets = new Set(r.sent.map((p) => p.secret));
      for (const p of op.inputs) {
        // An input handed over as-is (exact match, no swap) is the user's now; a swapped one is spent.
        await c.query('UPDATE proofs SET state = $1, op_id = $2 WHERE secret = $3', [sentSecrets.has(p.secret) ? 'sent' : 'spent', r.opId, p.secret]);
      }
      const fresh = r.sent.filter((p) => !op.inputs.some((i) => i.secret === p.secret));
      await this.#insertProofs(c, fresh, op.mint, op.unit, 'sent', r.opId, now);
      await this.#insertProofs(c, r.keep, op.mint, op.unit, 'unspent', r.opId, now);
      const refund = refundRow((await this.#one(`UPDATE refunds SET token = $1, state = 'done' WHERE op_id = $2 RETURNING *`, [r.token, r.opId], c))!);
      const fee = swapFee(op.inputs, r.keep, refund.amount) * MSATS_PER[op.unit];
      if (fee > 0) await this.#entry(c, OPERATOR, 'fee', fee, r.opId, now);
      return refund;
    });
  }

  async abandonRefund(opId: string): Promise<void> {
    const now = Date.now();
    await this.#tx(async (c) => {
      if (!(await this.#finishOp(c, opId, 'failed', now))) return;
      await c.query(`UPDATE proofs SET state = ${RELEASED_STATE_SQL}, op_id = NULL WHERE op_id = $1 AND state = 'pending'`, [opId]);
      const refund = await this.#one('DELETE FROM refunds WHERE op_id = $1 RETURNING *', [opId], c);
      if (refund) {
        const rr = refundRow(refund);
        const operator = rr.keyHash === OPERATOR;
        if (!operator) await c.query('UPDATE keys SET balance = balance + $1 WHERE hash = $2', [rr.msats, rr.keyHash]);
        await this.#entry(c, rr.keyHash, operator ? 'withdraw' : 'refund', -rr.msats, rr.id, now);
      }
    });
  }

  async startMelt(r: StartMelt): Promise<StartMeltResult> {
    const now = Date.now();
    return this.#tx(async (c): Promise<StartMeltResult> => {
      const per = MSATS_PER[r.unit];
      const earnings = await this.#earnings(c);
      if (earnings < r.need * per) return { kind: 'short', earnings };
      const picked = await this.#pick(c, r.mint, r.unit, r.need);
      if (!picked) return { kind: 'no_liquidity' };
      await this.#openOp(c, r.opId, 'melt', r.mint, r.unit, OPERATOR, picked, now);
      const melt = await this.#one(
        `INSERT INTO melts (id, op_id, mint, unit, quote, request, amount, fee_reserve, state, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9) RETURNING *`,
        [r.meltId, r.opId, r.mint, r.unit, r.quote, r.request, r.amount, r.need - r.amount, now],
        c,
      );
      await this.#entry(c, OPERATOR, 'withdraw', r.amount * per, r.meltId, now);
      if (r.need > r.amount) await this.#entry(c, OPERATOR, 'fee', (r.need - r.amount) * per, r.meltId, now);
      return { kind: 'started', melt: meltRow(melt!), inputs: picked };
    });
  }

  async finishMelt(r: { opId: string; change: StoredProof[]; preimage: string | null }): Promise<MeltRow> {
    const now = Date.now();
    return this.#tx(async (c) => {
      const op = opRow((await this.#one('SELECT * FROM mint_ops WHERE id = $1', [r.opId], c))!);
      if (!(await this.#finishOp(c, r.opId, 'done', now))) throw new Error(`mint op ${r.opId} is not pending`);
      await c.query(`UPDATE proofs SET state = 'spent', op_id = $1 WHERE secret = ANY($2)`, [r.opId, op.inputs.map((p) => p.secret)]);
      await this.#insertProofs(c, r.change, op.mint, op.unit, 'unspent', r.opId, now);
      const melt = meltRow((await this.#one('SELECT * FROM melts WHERE op_id = $1', [r.opId], c))!);
      const fee = meltFee(op.inputs, r.change, melt.amount);
      // The reserve was booked as a fee up front; book the difference from what it really cost.
      if (fee !== melt.feeReserve) await this.#entry(c, OPERATOR, 'fee', (fee - melt.feeReserve) * MSATS_PER[op.unit], melt.id, now);
      await c.query(`UPDATE melts SET state = 'paid', fee = $1, preimage = $2 WHERE op_id = $3`, [fee, r.preimage, r.opId]);
      return { ...melt, fee, preimage: r.preimage, state: 'paid' as const };
    });
  }

  async abandonMelt(opId: string): Promise<void> {
    const now = Date.now();
    await this.#tx(async (c) => {
      if (!(await this.#finishOp(c, opId, 'failed', now))) return;
      await c.query(`UPDATE proofs SET state = ${RELEASED_STATE_SQL}, op_id = NULL WHERE op_id = $1 AND state = 'pending'`, [opId]);
      const melt = meltRow((await this.#one(`UPDATE melts SET state = 'failed' WHERE op_id = $1 RETURNING *`, [opId], c))!);
      const per = MSATS_PER[melt.unit];
      await this.#entry(c, OPERATOR, 'withdraw', -melt.amount * per, melt.id, now);
      if (melt.feeReserve > 0) await this.#entry(c, OPERATOR, 'fee', -melt.feeReserve * per, melt.id, now);
    });
  }

  async meltOfOp(opId: string): Promise<MeltRow | undefined> {
    const r = await this.#one('SELECT * FROM melts WHERE op_id = $1', [opId]);
    return r && meltRow(r);
  }

  async latestRefund(keyHash: string): Promise<RefundRow | undefined> {
    const r = await this.#one('SELECT * FROM refunds WHERE key_hash = $1 ORDER BY seq DESC LIMIT 1', [keyHash]);
    return r && refundRow(r);
  }

  async pendingOps(): Promise<MintOp[]> {
    return ((await this.#pool.query(`SELECT * FROM mint_ops WHERE state = 'pending' ORDER BY created_at`)).rows as Row[]).map(opRow);
  }

  async touchOp(id: string): Promise<void> {
    await this.#pool.query(`UPDATE mint_ops SET updated_at = $1 WHERE id = $2 AND state = 'pending'`, [Date.now(), id]);
  }

  async markSpent(secrets: string[]): Promise<void> {
    await this.#tx(async (c) => {
      const r = await c.query(`UPDATE proofs SET state = 'spent' WHERE secret = ANY($1) AND state = 'pending' RETURNING amount, unit`, [secrets]);
      let lost = 0;
      for (const row of r.rows as Row[]) lost += (row.amount as number) * MSATS_PER[row.unit as Unit];
      if (lost > 0) await this.#entry(c, OPERATOR, 'fee', lost, 'spent-elsewhere', Date.now());
    });
  }

  async getOp(id: string): Promise<MintOp | undefined> {
    const r = await this.#one('SELECT * FROM mint_ops WHERE id = $1', [id]);
    return r && opRow(r);
  }

  async heldProofs(mint: string, unit: Unit): Promise<StoredProof[]> {
    const r = await this.#pool.query(
      `SELECT * FROM proofs WHERE mint = $1 AND unit = $2 AND state IN ('unspent', 'locked') ORDER BY amount DESC`,
      [mint, unit],
    );
    return (r.rows as Row[]).map(proofRow);
  }

  async unspentCounts(mint: string, unit: Unit): Promise<Map<number, number>> {
    const r = await this.#pool.query(
      `SELECT amount, COUNT(*) AS n FROM proofs WHERE mint = $1 AND unit = $2 AND state = 'unspent' GROUP BY amount`,
      [mint, unit],
    );
    return new Map((r.rows as Row[]).map((row) => [row.amount as number, row.n as number]));
  }

  async totals(): Promise<Totals> {
    const t: Totals = { credited: 0, charged: 0, refunded: 0, withdrawn: 0, fees: 0, balances: 0, reserved: 0 };
    for (const r of (await this.#pool.query('SELECT kind, COALESCE(SUM(msats), 0) AS msats FROM entries GROUP BY kind')).rows as Row[]) {
      if (r.kind === 'credit') t.credited = r.msats as number;
      else if (r.kind === 'charge') t.charged = r.msats as number;
      else if (r.kind === 'refund') t.refunded = r.msats as number;
      else if (r.kind === 'withdraw') t.withdrawn = r.msats as number;
      else if (r.kind === 'fee') t.fees = r.msats as number;
    }
    const k = (await this.#one('SELECT COALESCE(SUM(balance), 0) AS balance, COALESCE(SUM(reserved), 0) AS reserved FROM keys', []))!;
    t.balances = (k.balance as number) - (k.reserved as number);
    t.reserved = k.reserved as number;
    return t;
  }

  async claimOnce(scope: string, id: string, expiresAt: number): Promise<boolean> {
    // Expired marks are dropped now and then, so the table follows what is live.
    if (Math.random() < 0.01) await this.#pool.query('DELETE FROM marks WHERE expires_at < $1', [Date.now()]);
    const r = await this.#pool.query(
      `INSERT INTO marks (scope, id, expires_at) VALUES ($1, $2, $3)
       ON CONFLICT (scope, id) DO UPDATE SET expires_at = excluded.expires_at, count = 0, value = NULL WHERE marks.expires_at < $4`,
      [scope, id, expiresAt, Date.now()],
    );
    return r.rowCount === 1;
  }

  async countUpTo(scope: string, id: string, limit: number, expiresAt: number): Promise<boolean> {
    if (limit <= 0) return false;
    const r = await this.#pool.query(
      `INSERT INTO marks (scope, id, count, expires_at) VALUES ($1, $2, 1, $3)
       ON CONFLICT (scope, id) DO UPDATE SET
         count = CASE WHEN marks.expires_at < $5 THEN 1 ELSE marks.count + 1 END,
         expires_at = CASE WHEN marks.expires_at < $5 THEN excluded.expires_at ELSE marks.expires_at END
       WHERE marks.count < $4 OR marks.expires_at < $5`,
      [scope, id, expiresAt, limit, Date.now()],
    );
    return r.rowCount === 1;
  }

  async putNote(scope: string, id: string, value: string, expiresAt: number): Promise<void> {
    await this.#pool.query(
      `INSERT INTO marks (scope, id, value, expires_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (scope, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`,
      [scope, id, value, expiresAt],
    );
  }

  async getNote(scope: string, id: string): Promise<string | undefined> {
    const r = await this.#one('SELECT value FROM marks WHERE scope = $1 AND id = $2 AND expires_at >= $3', [scope, id, Date.now()]);
    return (r?.value as string | null | undefined) ?? undefined;
  }

  async dropNote(scope: string, id: string): Promise<void> {
    await this.#pool.query('DELETE FROM marks WHERE scope = $1 AND id = $2', [scope, id]);
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }
}
