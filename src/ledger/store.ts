import { randomUUID } from 'node:crypto';
import {
  MSATS_PER,
  OPERATOR,
  meltFee,
  pickPlan,
  swapFee,
  type ChildKeyRow,
  type HistoryRow,
  type KeyRow,
  type Ledger,
  type NewChildKey,
  type MeltRow,
  type MintOp,
  type RefundRow,
  type Settlement,
  type SettledUsage,
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
import type { Driver, Sql, Statement } from './driver.ts';
import { childKeyRow, historyRow, keyRow, meltRow, opRow, proofRow, refundRow, tokenRow, type Row } from './rows.ts';
import { TurnBatch, byId } from './turn-batch.ts';

/**
 * The running totals are spread over rows (shards) a transaction picks at random, so concurrent
 * requests on PostgreSQL seldom wait on one another's row; totals() adds up this many rows.
 * `balance` is what all keys hold, reserved or not. What is reserved is not kept here: it is the
 * sum of the active reservations, read through their partial index (bounded by the requests in
 * flight, not by history), so a reserve writes no totals row at all.
 */
const SHARDS = 16;
const COLUMNS = ['credited', 'charged', 'refunded', 'withdrawn', 'fees', 'balance'] as const;
type Column = (typeof COLUMNS)[number];

/** Migrations both engines run, after their own frozen ones. */
const SHARED_MIGRATIONS: readonly string[] = [
  // totals() read every entry on each /metrics scrape; these rows are kept in the same transactions.
  `CREATE TABLE totals (
     shard INTEGER PRIMARY KEY,
     ${COLUMNS.map((c) => `${c} BIGINT NOT NULL DEFAULT 0`).join(', ')});
   INSERT INTO totals (shard) VALUES ${Array.from({ length: SHARDS }, (_, i) => `(${i})`).join(', ')};
   UPDATE totals SET
     credited = (SELECT COALESCE(SUM(msats), 0) FROM entries WHERE kind = 'credit'),
     charged = (SELECT COALESCE(SUM(msats), 0) FROM entries WHERE kind = 'charge'),
     refunded = (SELECT COALESCE(SUM(msats), 0) FROM entries WHERE kind = 'refund'),
     withdrawn = (SELECT COALESCE(SUM(msats), 0) FROM entries WHERE kind = 'withdraw'),
     fees = (SELECT COALESCE(SUM(msats), 0) FROM entries WHERE kind = 'fee'),
     balance = (SELECT COALESCE(SUM(balance), 0) FROM keys)
   WHERE shard = 0;`,
  // Child keys spend their parent's balance; a charge's entry names the child it went through,
  // and its reservation keeps the model and tokens, so a key's history is read from these rows.
  `CREATE TABLE child_keys (
     hash TEXT PRIMARY KEY,
     parent_hash TEXT NOT NULL,
     spend_limit BIGINT CHECK (spend_limit >= 0),
     spent BIGINT NOT NULL DEFAULT 0,
     reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
     models TEXT,
     expires_at BIGINT,
     revoked_at BIGINT,
     total_requests BIGINT NOT NULL DEFAULT 0,
     created_at BIGINT NOT NULL,
     CHECK (spend_limit IS NULL OR spent + reserved <= spend_limit));
   CREATE INDEX child_keys_parent ON child_keys(parent_hash, created_at);
   ALTER TABLE reservations ADD COLUMN child_hash TEXT;
   ALTER TABLE reservations ADD COLUMN model TEXT;
   ALTER TABLE reservations ADD COLUMN input_tokens BIGINT;
   ALTER TABLE reservations ADD COLUMN output_tokens BIGINT;
   ALTER TABLE entries ADD COLUMN via TEXT;
   CREATE INDEX entries_key ON entries(key_hash, id);
   CREATE INDEX entries_via ON entries(via, id) WHERE via IS NOT NULL;`,
  // Whether a proof is locked to the gateway's key is a flag the ledger is told (acceptLocked), so
  // it never reads a secret's format. Rows from before the flag are the last it reads: locked ones,
  // and those set aside that carry a NUT-10 P2PK secret (ours are never locked to anyone else).
  `ALTER TABLE proofs ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
   UPDATE proofs SET locked = TRUE WHERE state = 'locked' OR (state = 'pending' AND secret LIKE '["P2PK"%');`,
  // Spent proofs stay, so the table grows with every payment: an op's proofs, and those held by
  // state, were read whole (1.5 ms a statement at 30,000 rows on SQLite, on the event loop).
  `CREATE INDEX proofs_op ON proofs(op_id) WHERE op_id IS NOT NULL;
   CREATE INDEX proofs_state ON proofs(mint, unit, state, amount);`,
];

type EntryKind = 'credit' | 'charge' | 'refund' | 'withdraw' | 'fee';
const TOTAL_OF = { credit: 'credited', charge: 'charged', refund: 'refunded', withdraw: 'withdrawn', fee: 'fees' } as const;

const ENTRY = 'INSERT INTO entries (key_hash, kind, msats, ref, created_at, via) VALUES ($1, $2, $3, $4, $5, $6)';

/**
 * The writes that close a transaction: its entries, and their sum added to one totals row. The
 * totals row is written last and once, so transactions lock a key before totals, never after.
 */
class Postings {
  readonly #statements: Statement[] = [];
  readonly #delta: Record<Column, number> = { credited: 0, charged: 0, refunded: 0, withdrawn: 0, fees: 0, balance: 0 };
  readonly now: number;
  constructor(now: number) {
    this.now = now;
  }

  add(...statements: Statement[]): this {
    this.#statements.push(...statements);
    return this;
  }

  entry(keyHash: string, kind: EntryKind, msats: number, ref: string, via: string | null = null): this {
    this.#statements.push([ENTRY, [keyHash, kind, msats, ref, this.now, via]]);
    return this.move({ [TOTAL_OF[kind]]: msats });
  }

  /** Adds to what all keys hold. */
  balance(msats: number): this {
    this.#delta.balance += msats;
    return this;
  }

  move(delta: Partial<Record<Column, number>>): this {
    for (const [k, v] of Object.entries(delta)) this.#delta[k as Column] += v;
    return this;
  }

  statements(): Statement[] {
    // Only the columns that change, so a settle's row write stays small.
    const moved = COLUMNS.filter((c) => this.#delta[c] !== 0);
    if (moved.length === 0) return this.#statements;
    const sql = `UPDATE totals SET ${moved.map((c, i) => `${c} = ${c} + $${i + 1}`).join(', ')} WHERE shard = $${moved.length + 1}`;
    return [...this.#statements, [sql, [...moved.map((c) => this.#delta[c]), Math.floor(Math.random() * SHARDS)]]];
  }
}

/** A proof stored as `locked` (taken offline, locked to our key) keeps that flag for good. */
const INSERT_PROOF = `INSERT INTO proofs (secret, mint, unit, keyset_id, amount, c, dleq, state, op_id, created_at, locked)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $8 = 'locked')`;
/** The state a proof set aside for an operation returns to if the operation does not happen. */
const RELEASED = `CASE WHEN locked THEN 'locked' ELSE 'unspent' END`;
const INSERT_OP = `INSERT INTO mint_ops (id, kind, mint, unit, state, key_hash, token_hash, inputs, outputs, created_at, updated_at)
  VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $9)`;
const INSERT_TOKEN = `INSERT INTO tokens (hash, key_hash, op_id, state, msats, created_at) VALUES ($1, $2, $3, $4, $5, $6)
  ON CONFLICT (hash) DO NOTHING`;
const CREDIT_KEY = `INSERT INTO keys (hash, balance, unit, mint, created_at) VALUES ($1, $2, $3, $4, $5)
  ON CONFLICT (hash) DO UPDATE SET balance = keys.balance + excluded.balance`;
const ACTIVE_RESERVATION = `SELECT 1 FROM reservations WHERE key_hash = $1 AND state = 'active' LIMIT 1`;
/** Written as literals, not parameters, so the partial index on unspent proofs serves them. */
const UNSPENT = `state = 'unspent'`;
const HELD = `state IN ('unspent', 'locked')`;

/** Reserve: holds msats on a key with enough free balance, and opens the reservation. */
const HOLD = `UPDATE keys SET reserved = reserved + $1, total_requests = total_requests + 1
  WHERE hash = $2 AND balance - reserved >= $1 AND NOT revoked`;
const OPEN_RESERVATION = `INSERT INTO reservations (id, key_hash, msats, state, created_at, owner, model, child_hash)
  SELECT $3, $2, $1, 'active', $4, $5, $6, $7`;
/** A child's share of a reserve: live, and within its limit with this hold. Returns its parent. */
const HOLD_CHILD = `UPDATE child_keys SET reserved = reserved + $1, total_requests = total_requests + 1
  WHERE hash = $2 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)
    AND (spend_limit IS NULL OR spent + reserved + $1 <= spend_limit)
  RETURNING parent_hash`;
/**
 * Settle of a balance key's reservation (not a child's) as one PostgreSQL statement: the same
 * locks, reads and writes as the general path, in the same order (reservation and key, then a
 * totals row). Returns no row when the reservation is not active or went through a child.
 *
 * The key's update takes the overrun's cap again from the row it writes. When the key moved after
 * the statement began, PostgreSQL first makes the new row from the version the statement's
 * snapshot saw, and checks the table's constraints on it, before it follows the update to the
 * version `s` locked (and makes it again from that one). A cap from the locked version taken off
 * the older one could break reserved <= balance there, and the settle failed: its charge never
 * booked. On the locked version both caps are one.
 */
const SETTLE_CAP = 'LEAST($2::bigint, s.held + keys.balance - keys.reserved)';
const SETTLE_KEY = `WITH s AS (
    SELECT r.key_hash, r.msats AS held, k.balance, k.reserved, LEAST($2::bigint, r.msats + k.balance - k.reserved) AS charged
    FROM reservations r JOIN keys k ON k.hash = r.key_hash
    WHERE r.id = $1 AND r.state = 'active' AND r.child_hash IS NULL
    FOR UPDATE OF r, k),
  k AS (UPDATE keys SET balance = keys.balance - ${SETTLE_CAP}, reserved = keys.reserved - s.held, total_spent = keys.total_spent + ${SETTLE_CAP}
    FROM s WHERE keys.hash = s.key_hash),
  r AS (UPDATE reservations SET state = CASE WHEN s.charged > 0 THEN 'charged' ELSE 'released' END, charged = s.charged,
      input_tokens = $3, output_tokens = $4, model = COALESCE($7, reservations.model)
    FROM s WHERE reservations.id = $1),
  e AS (INSERT INTO entries (key_hash, kind, msats, ref, created_at, via) SELECT s.key_hash, 'charge', s.charged, $1, $5, NULL FROM s WHERE s.charged > 0),
  t AS (UPDATE totals SET charged = totals.charged + s.charged, balance = totals.balance - s.charged FROM s WHERE totals.shard = $6 AND s.charged > 0)
  SELECT charged, balance, reserved, held FROM s`;
/**
 * The reserves of one event-loop turn as one PostgreSQL statement: each as HOLD and
 * OPEN_RESERVATION would have it, in the order made, a key's holds taken while its free balance
 * covers them all (a later one that it would not is made again on its own). Keys are locked in
 * the order of their hash, so two instances' batches never wait on each other in a circle.
 *
 * The free balance is read from the locked row, so the holds always fit on it; but a key that
 * moved after the statement began (a settle freed balance while the batch waited on it) is first
 * written from the version the snapshot saw, and keys_check tried there (see SETTLE_KEY): on that
 * version alone `reserved` is held to `balance`, so the batch is not refused whole and made again
 * call by call. The row written, the locked one, has room for the holds: there it changes nothing.
 */
const HOLD_MANY = `WITH q AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) WITH ORDINALITY AS q(id, key_hash, msats, model, ord)),
  k AS (SELECT hash, balance - reserved AS free FROM keys WHERE hash = ANY($2::text[]) AND NOT revoked ORDER BY hash FOR UPDATE),
  ok AS (SELECT w.* FROM (SELECT q.*, SUM(q.msats) OVER (PARTITION BY q.key_hash ORDER BY q.ord) AS upto FROM q) w
    JOIN k ON k.hash = w.key_hash WHERE w.upto <= k.free),
  u AS (UPDATE keys SET reserved = LEAST(keys.reserved + a.msats, keys.balance), total_requests = keys.total_requests + a.n
    FROM (SELECT key_hash, SUM(msats) AS msats, COUNT(*) AS n FROM ok GROUP BY key_hash) a WHERE keys.hash = a.key_hash),
  i AS (INSERT INTO reservations (id, key_hash, msats, state, created_at, owner, model, child_hash)
    SELECT id, key_hash, msats, 'active', $5, $6, model, NULL FROM ok)
  SELECT id FROM ok`;
/**
 * The settles of one event-loop turn as one PostgreSQL statement, for balance keys' reservations
 * charged no more than they hold (an overrun's cap depends on the settles before it: made on its
 * own, with a child's). Each row says the key as SETTLE_KEY would have left it, in the order made.
 */
const SETTLE_MANY = `WITH q AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[]) WITH ORDINALITY AS q(id, charge, input_tokens, output_tokens, model, ord)),
  s AS (SELECT q.id, q.charge AS charged, q.input_tokens, q.output_tokens, q.model, q.ord, r.key_hash, r.msats AS held, k.balance, k.reserved
    FROM q JOIN reservations r ON r.id = q.id JOIN keys k ON k.hash = r.key_hash
    WHERE r.state = 'active' AND r.child_hash IS NULL AND q.charge <= r.msats
    ORDER BY k.hash, q.ord
    FOR UPDATE OF r, k),
  a AS (SELECT key_hash, SUM(charged) AS charged, SUM(held) AS held FROM s GROUP BY key_hash),
  k AS (UPDATE keys SET balance = keys.balance - a.charged, reserved = keys.reserved - a.held, total_spent = keys.total_spent + a.charged
    FROM a WHERE keys.hash = a.key_hash),
  r AS (UPDATE reservations SET state = CASE WHEN s.charged > 0 THEN 'charged' ELSE 'released' END, charged = s.charged,
      input_tokens = s.input_tokens, output_tokens = s.output_tokens, model = COALESCE(s.model, reservations.model)
    FROM s WHERE reservations.id = s.id),
  e AS (INSERT INTO entries (key_hash, kind, msats, ref, created_at, via) SELECT key_hash, 'charge', charged, id, $6, NULL FROM s WHERE charged > 0 ORDER BY ord),
  t AS (UPDATE totals SET charged = totals.charged + x.c, balance = totals.balance - x.c
    FROM (SELECT SUM(charged) AS c FROM s) x WHERE totals.shard = $7 AND x.c > 0)
  SELECT id, charged, balance - SUM(charged) OVER w AS balance, reserved - SUM(held) OVER w AS reserved FROM s
  WINDOW w AS (PARTITION BY key_hash ORDER BY ord)`;
const HISTORY_KINDS = `e.kind IN ('credit', 'charge', 'refund')`;

class Replay extends Error {}
/** A settle of a reservation that is not open: the database said so, nothing was written. */
class NotActive extends Error {}

/** The Ledger on SQL, once for both engines; a Driver runs it on one. */
export class SqlLedger implements Ledger {
  readonly #db: Driver;
  readonly #d: Driver['dialect'];
  /** This process, as the owner of the reservations it takes. */
  readonly #instance = randomUUID();
  /** PostgreSQL's per-request writes, grouped by event-loop turn (SQLite's driver groups its transactions). */
  readonly #reserves: TurnBatch<Reserve, boolean> | undefined;
  readonly #settles: TurnBatch<Settle, Settlement> | undefined;

  private constructor(db: Driver) {
    this.#db = db;
    this.#d = db.dialect;
    if (this.#d.writableCte) {
      const id = (x: { reservationId: string }) => x.reservationId;
      this.#reserves = new TurnBatch<Reserve, boolean>((r, again) => (again ? this.#reserveAgain(r) : this.#reserve(r)), (rs) => this.#reserveMany(rs), id);
      this.#settles = new TurnBatch<Settle, Settlement>((s, again) => (again ? this.#settleAgain(s) : this.#settleOnce(s)), (ss) => this.#settleMany(ss), id);
    }
  }

  /** Opens a ledger on `db`, after running the engine's frozen migrations and the shared ones. */
  static async open(db: Driver, migrations: readonly string[]): Promise<SqlLedger> {
    const ledger = new SqlLedger(db);
    await ledger.#migrate([...migrations, ...SHARED_MIGRATIONS]);
    return ledger;
  }

  async #migrate(migrations: readonly string[]): Promise<void> {
    await this.#db.transaction(async (tx) => {
      // One migrator at a time, however many gateway processes start together.
      await this.#lock(tx, 'migrate');
      await tx.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
      const row = (await tx.query('SELECT version FROM schema_version')).rows[0];
      if (!row) await tx.query('INSERT INTO schema_version (version) VALUES (0)');
      const from = (row?.version as number | undefined) ?? 0;
      for (const script of migrations.slice(from)) await tx.exec(script);
      if (migrations.length > from) await tx.query('UPDATE schema_version SET version = $1', [migrations.length]);
    });
  }

  async #lock(tx: Sql, name: string): Promise<void> {
    if (this.#d.lock) await tx.query(this.#d.lock, [name]);
  }

  async #one(sql: string, params: readonly unknown[], q: Sql = this.#db): Promise<Row | undefined> {
    return (await q.query(sql, params)).rows[0];
  }

  async #insertProofs(tx: Sql, proofs: StoredProof[], mint: string, unit: Unit, state: string, opId: string, now: number): Promise<void> {
    for (const p of proofs) {
      await tx.query(INSERT_PROOF, [p.secret, mint, unit, p.id, p.amount, p.C, p.dleq ? JSON.stringify(p.dleq) : null, state, opId, now]);
    }
  }

  async #setProofs(tx: Sql, state: string, opId: string | null, secrets: string[]): Promise<void> {
    if (secrets.length === 0) return;
    await tx.query(`UPDATE proofs SET state = $1, op_id = $2 WHERE ${this.#d.anyOf('secret', 3)}`, [state, opId, this.#d.array(secrets)]);
  }

  async #release(tx: Sql, opId: string): Promise<void> {
    await tx.query(`UPDATE proofs SET state = ${RELEASED}, op_id = NULL WHERE op_id = $1 AND state = 'pending'`, [opId]);
  }

  /** Ends a pending op; undefined if it was not pending (someone else ended it). */
  async #endOp(tx: Sql, opId: string, state: 'done' | 'failed', now: number): Promise<MintOp | undefined> {
    const r = await this.#one(`UPDATE mint_ops SET state = $1, updated_at = $2 WHERE id = $3 AND state = 'pending' RETURNING *`, [state, now, opId], tx);
    return r && opRow(r);
  }

  async #finishOp(tx: Sql, opId: string, now: number): Promise<MintOp> {
    const op = await this.#endOp(tx, opId, 'done', now);
    if (!op) throw new Error(`mint op ${opId} is not pending`);
    return op;
  }

  async getKey(hash: string): Promise<KeyRow | undefined> {
    const r = await this.#one('SELECT * FROM keys WHERE hash = $1', [hash]);
    return r && keyRow(r);
  }

  async listKeys(limit: number): Promise<KeyRow[]> {
    return (await this.#db.query('SELECT * FROM keys ORDER BY balance DESC, created_at LIMIT $1', [limit])).rows.map(keyRow);
  }

  async revokeKey(hash: string): Promise<boolean> {
    return (await this.#db.query('UPDATE keys SET revoked = TRUE WHERE hash = $1', [hash])).count === 1;
  }

  async getToken(hash: string): Promise<TokenRow | undefined> {
    const r = await this.#one('SELECT * FROM tokens WHERE hash = $1', [hash]);
    return r && tokenRow(r);
  }

  async startRedemption(r: {
    tokenHash: string; keyHash: string; opId: string; mint: string; unit: Unit; inputs: StoredProof[]; outputs: unknown[]; kind?: 'receive' | 'foreign';
  }): Promise<{ started: true } | { started: false; token: TokenRow } | { started: false; replayed: true }> {
    const now = Date.now();
    let started: boolean;
    try {
      started = await this.#db.transaction(async (tx) => {
        if ((await tx.query(INSERT_TOKEN, [r.tokenHash, r.keyHash, r.opId, 'redeeming', null, now])).count === 0) return false;
        for (const p of r.inputs) {
          // A proof we gave away (sent) may come back; one we hold, are claiming or know spent may not.
          // A spent row stays as it is: an abandoned claim deletes its rows, and that one is what keeps
          // a swept offline proof from being taken offline again.
          const claimed = await tx.query(
            `INSERT INTO proofs (secret, mint, unit, keyset_id, amount, c, dleq, state, op_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, NULL, 'incoming', $7, $8)
             ON CONFLICT (secret) DO UPDATE SET state = 'incoming', op_id = excluded.op_id
             WHERE proofs.state = 'sent'`,
            [p.secret, r.mint, r.unit, p.id, p.amount, p.C, r.opId, now],
          );
          if (claimed.count !== 1) throw new Replay();
        }
        const op = [r.opId, r.kind ?? 'receive', r.mint, r.unit, r.keyHash, r.tokenHash, JSON.stringify(r.inputs), JSON.stringify(r.outputs), now];
        await tx.query(INSERT_OP, op);
        return true;
      });
    } catch (e) {
      if (e instanceof Replay || this.#d.isUniqueViolation(e)) return { started: false, replayed: true };
      throw e;
    }
    if (started) return { started: true };
    return { started: false, token: (await this.getToken(r.tokenHash))! };
  }

  async finishRedemption(r: { tokenHash: string; opId: string; proofs: StoredProof[]; creditMsats: number }): Promise<KeyRow> {
    const now = Date.now();
    return this.#db.transaction(async (tx) => {
      const op = await this.#finishOp(tx, r.opId, now);
      await tx.query(`UPDATE proofs SET state = 'spent' WHERE op_id = $1 AND state = 'incoming'`, [r.opId]);
      await this.#insertProofs(tx, r.proofs, op.mint, op.unit, 'unspent', r.opId, now);
      await tx.query(`UPDATE tokens SET state = 'credited', msats = $1 WHERE hash = $2 AND op_id = $3`, [r.creditMsats, r.tokenHash, r.opId]);
      const key = await this.#one(`${CREDIT_KEY} RETURNING *`, [op.keyHash, r.creditMsats, op.unit, op.mint, now], tx);
      await tx.batch(new Postings(now).entry(op.keyHash, 'credit', r.creditMsats, r.tokenHash).balance(r.creditMsats).statements());
      return keyRow(key!);
    });
  }

  async abandonRedemption(tokenHash: string, opId: string): Promise<void> {
    await this.#db.transaction(async (tx) => {
      if (!(await this.#endOp(tx, opId, 'failed', Date.now()))) return;
      await tx.query('DELETE FROM tokens WHERE hash = $1 AND op_id = $2', [tokenHash, opId]);
      await tx.query(`DELETE FROM proofs WHERE op_id = $1 AND state = 'incoming'`, [opId]);
    });
  }

  async acceptLocked(r: {
    tokenHash: string; keyHash: string; mint: string; unit: Unit; proofs: StoredProof[]; creditMsats: number;
  }): Promise<'accepted' | 'known' | 'replayed'> {
    const now = Date.now();
    try {
      return await this.#db.transaction(async (tx) => {
        const opId = `offline:${r.tokenHash}`;
        if ((await tx.query(INSERT_TOKEN, [r.tokenHash, r.keyHash, opId, 'credited', r.creditMsats, now])).count === 0) return 'known';
        await this.#insertProofs(tx, r.proofs, r.mint, r.unit, 'locked', opId, now);
        await tx.query(CREDIT_KEY, [r.keyHash, r.creditMsats, r.unit, r.mint, now]);
        await tx.batch(new Postings(now).entry(r.keyHash, 'credit', r.creditMsats, r.tokenHash).balance(r.creditMsats).statements());
        return 'accepted';
      });
    } catch (e) {
      if (this.#d.isUniqueViolation(e)) return 'replayed';
      throw e;
    }
  }

  async startSweep(r: { opId: string; mint: string; unit: Unit; limit: number; except?: string[]; only?: string[]; pad?: number }): Promise<StoredProof[]> {
    const now = Date.now();
    return this.#db.transaction(async (tx) => {
      // Payouts may be counting these locked proofs: take turns with them.
      await this.#lock(tx, `payout ${r.mint} ${r.unit}`);
      const only = r.only ? ` AND ${this.#d.anyOf('secret', 5)}` : '';
      const rows = await tx.query(
        `SELECT * FROM proofs WHERE mint = $1 AND unit = $2 AND state = 'locked' AND NOT (${this.#d.anyOf('secret', 4)})${only}
         ORDER BY created_at LIMIT $3${this.#d.forUpdate(undefined, true)}`,
        [r.mint, r.unit, r.limit, this.#d.array(r.except ?? []), ...(r.only ? [this.#d.array(r.only)] : [])],
      );
      const proofs = rows.rows.map(proofRow);
      if (proofs.length === 0) return proofs;
      if (r.pad !== undefined) {
        const own = await tx.query(
          `SELECT * FROM proofs WHERE mint = $1 AND unit = $2 AND ${UNSPENT} AND amount >= $3 ORDER BY amount LIMIT 1${this.#d.forUpdate()}`,
          [r.mint, r.unit, r.pad],
        );
        if (own.rows.length === 0) return [];
        proofs.push(...own.rows.map(proofRow));
      }
      await tx.query(INSERT_OP, [r.opId, 'sweep', r.mint, r.unit, '', null, JSON.stringify(proofs), null, now]);
      await this.#setProofs(tx, 'pending', r.opId, proofs.map((p) => p.secret));
      return proofs;
    });
  }

  async startRefill(r: { opId: string; mint: string; unit: Unit; amount: number; above: number }): Promise<StoredProof[]> {
    const now = Date.now();
    return this.#db.transaction(async (tx) => {
      await this.#lock(tx, `payout ${r.mint} ${r.unit}`);
      // Locked proofs of any size (the float is made of unlocked ones), and unspent ones above it.
      const spare = `mint = $1 AND unit = $2 AND (state = 'locked' OR (${UNSPENT} AND amount > $3))`;
      const counts = (await tx.query(`SELECT amount, COUNT(*) AS n FROM proofs WHERE ${spare} GROUP BY amount`, [r.mint, r.unit, r.above]))
        .rows.map((row) => [row.amount as number, row.n as number] as const);
      const plan = pickPlan(counts, r.amount, true);
      if (!plan) return [];
      const picked: StoredProof[] = [];
      for (const [denomination, n] of plan) {
        // Locked proofs first: they are only as good as the lock until redeemed.
        const { rows } = await tx.query(
          `SELECT * FROM proofs WHERE ${spare} AND amount = $4 ORDER BY state = 'locked' DESC LIMIT $5${this.#d.forUpdate()}`,
          [r.mint, r.unit, r.above, denomination, n],
        );
        if (rows.length !== n) throw new Error(`proofs of ${denomination} at ${r.mint} changed while picked`);
        picked.push(...rows.map(proofRow));
      }
      await tx.query(INSERT_OP, [r.opId, 'sweep', r.mint, r.unit, '', null, JSON.stringify(picked), null, now]);
      await this.#setProofs(tx, 'pending', r.opId, picked.map((p) => p.secret));
      return picked;
    });
  }

  async finishSweep(opId: string, proofs: StoredProof[]): Promise<void> {
    const now = Date.now();
    await this.#db.transaction(async (tx) => {
      const op = await this.#finishOp(tx, opId, now);
      await this.#setProofs(tx, 'spent', opId, op.inputs.map((p) => p.secret));
      await this.#insertProofs(tx, proofs, op.mint, op.unit, 'unspent', opId, now);
      const fee = swapFee(op.inputs, proofs, 0) * MSATS_PER[op.unit];
      if (fee > 0) await tx.batch(new Postings(now).entry(OPERATOR, 'fee', fee, opId).statements());
    });
  }

  async abandonSweep(opId: string): Promise<void> {
    await this.#db.transaction(async (tx) => {
      if (!(await this.#endOp(tx, opId, 'failed', Date.now()))) return;
      // A refill's inputs may be unlocked: each goes back to what it was.
      await tx.query(`UPDATE proofs SET state = ${RELEASED}, op_id = NULL WHERE op_id = $1 AND state = 'pending'`, [opId]);
    });
  }

  reserve(keyHash: string, msats: number, reservationId: string, model?: string): Promise<boolean> {
    const r = { keyHash, msats, reservationId, model };
    return this.#reserves ? this.#reserves.push(r) : this.#reserve(r);
  }

  async #reserveMany(rs: readonly Reserve[]): Promise<Array<boolean | undefined>> {
    const p = [rs.map((r) => r.reservationId), rs.map((r) => r.keyHash), rs.map((r) => r.msats), rs.map((r) => r.model ?? null), Date.now(), this.#instance];
    // Not held together: held on its own, or through a child key, or refused, as if it came alone.
    return byId(this.#db, HOLD_MANY, p, rs, (r) => r.reservationId, () => true);
  }

  /**
   * A reserve whose batch failed: it may have committed, only its answer lost. Held then, under
   * this id, by this process, on that key, for that much: the hold is this call's (ids are never
   * made twice), and reserving again would refuse it for its own hold, or throw on its id.
   */
  async #reserveAgain(r: Reserve): Promise<boolean> {
    const held = await this.#one(
      `SELECT 1 FROM reservations WHERE id = $1 AND owner = $2 AND key_hash = $3 AND msats = $4 AND state = 'active' AND child_hash IS NULL`,
      [r.reservationId, this.#instance, r.keyHash, r.msats],
    );
    return held ? true : this.#reserve(r);
  }

  async #reserve({ keyHash, msats, reservationId, model }: Reserve): Promise<boolean> {
    const now = Date.now();
    const p = [msats, keyHash, reservationId, now, this.#instance, model ?? null, null];
    if (this.#d.writableCte) {
      // One statement, so one round trip, and atomic on its own.
      if ((await this.#db.query(`WITH k AS (${HOLD} RETURNING hash) ${OPEN_RESERVATION} FROM k`, p)).count === 1) return true;
    } else if (await this.#db.transaction(async (tx) => (await tx.query(HOLD, p)).count === 1 && (await tx.query(OPEN_RESERVATION, p)).count === 1, true)) {
      return true;
    }
    // No balance key of that hash could pay: it may be a child key, which holds on its parent.
    return this.#db.transaction(async (tx) => {
      // The child's row first, then the parent's: settle locks them in that order too.
      const child = await this.#one(HOLD_CHILD, [msats, keyHash, now], tx);
      if (!child) return false;
      const parent = child.parent_hash as string;
      const held = (await tx.query(HOLD, [msats, parent])).count === 1;
      if (!held) {
        await tx.query('UPDATE child_keys SET reserved = reserved - $1, total_requests = total_requests - 1 WHERE hash = $2', [msats, keyHash]);
        return false;
      }
      await tx.query(OPEN_RESERVATION, [msats, parent, reservationId, now, this.#instance, model ?? null, keyHash]);
      return true;
    }, true);
  }

  settle(reservationId: string, chargeMsats: number, usage?: SettledUsage): Promise<Settlement> {
    const s = { reservationId, chargeMsats, usage };
    return this.#settles ? this.#settles.push(s) : this.#settleOnce(s);
  }

  /** A settle whose statement may have committed though its client saw it fail is made again, to find out. */
  async #settleOnce(s: Settle): Promise<Settlement> {
    try {
      return await this.#settle(s);
    } catch (e) {
      if (e instanceof NotActive || !this.#d.mayHaveCommitted(e)) throw e;
      return this.#settleAgain(s);
    }
  }

  /**
   * A settle whose statement (a turn's batch, or its own) may have committed, only its answer
   * lost. Its reservation then says what it did, and that is its answer: thrown, the request that
   * paid failed after its work was done and charged (an X-Cashu payer without its change). Else
   * it was not written, and is settled now.
   */
  async #settleAgain(s: Settle): Promise<Settlement> {
    const done = await this.#settledAs(s);
    if (done) return done;
    try {
      return await this.#settle(s);
    } catch (e) {
      // The lost statement may have been still running, and committed while this one waited on its locks.
      const late = await this.#settledAs(s).catch(() => undefined);
      if (late) return late;
      throw e;
    }
  }

  /**
   * The settle `s` as its reservation recorded it, if it did: closed as such a settle closes it
   * (its tokens, a charge not over the one asked, 'charged' unless nothing was), by this process's
   * hold. No one else settles one of our ids (a second settle of it in this process is not made
   * `again`); only another process's releaseOrphans closes one, when this one looked dead: for
   * nothing and without the tokens, so it is not taken for a charge (a settle without usage is
   * told it charged nothing, which is so). The key is as it stands now: what it was between the
   * lost statement and now is not kept.
   */
  async #settledAs({ reservationId, chargeMsats, usage }: Settle): Promise<Settlement | undefined> {
    const row = await this.#one(
      `SELECT r.charged, k.balance, k.reserved FROM reservations r JOIN keys k ON k.hash = r.key_hash
       WHERE r.id = $1 AND r.owner = $2 AND r.state <> 'active' AND r.charged <= $3 AND (r.state = 'charged' OR r.charged = 0)
         AND r.input_tokens IS NOT DISTINCT FROM $4 AND r.output_tokens IS NOT DISTINCT FROM $5`,
      [reservationId, this.#instance, chargeMsats, usage?.inputTokens ?? null, usage?.outputTokens ?? null],
    );
    return row && { chargedMsats: row.charged as number, balance: row.balance as number, reserved: row.reserved as number };
  }

  async #settleMany(ss: readonly Settle[]): Promise<Array<Settlement | undefined>> {
    const u = ss.map((s) => s.usage);
    const p = [
      ss.map((s) => s.reservationId), ss.map((s) => s.chargeMsats), u.map((x) => x?.inputTokens ?? null), u.map((x) => x?.outputTokens ?? null),
      u.map((x) => x?.model ?? null), Date.now(), Math.floor(Math.random() * SHARDS),
    ];
    return byId(this.#db, SETTLE_MANY, p, ss, (s) => s.reservationId, (row) => ({
      chargedMsats: row.charged as number, balance: row.balance as number, reserved: row.reserved as number,
    }));
  }

  async #settle({ reservationId, chargeMsats, usage }: Settle): Promise<Settlement> {
    const now = Date.now();
    if (this.#d.writableCte) {
      // A balance key's settle in one statement: its locks are held for one round trip, not
      // across the client's turns, so requests on one key do not queue behind each other.
      const shard = Math.floor(Math.random() * SHARDS);
      const row = await this.#one(SETTLE_KEY, [reservationId, chargeMsats, usage?.inputTokens ?? null, usage?.outputTokens ?? null, now, shard, usage?.model ?? null]);
      if (row) {
        const [charged, balance, reserved] = [row.charged as number, row.balance as number, row.reserved as number];
        return { chargedMsats: charged, balance: balance - charged, reserved: reserved - (row.held as number) };
      }
      // Through a child, or not active: the general path below says which.
    }
    // Which child, if any: fixed at reserve, so read before any lock, to lock the child first.
    const via = (await this.#one('SELECT child_hash FROM reservations WHERE id = $1', [reservationId]))?.child_hash as string | null | undefined;
    return this.#db.transaction(async (tx) => {
      const child = via ? await this.#one(`SELECT * FROM child_keys WHERE hash = $1${this.#d.forUpdate()}`, [via], tx) : undefined;
      const row = await this.#one(
        `SELECT r.key_hash, r.msats AS held, k.balance, k.reserved
         FROM reservations r JOIN keys k ON k.hash = r.key_hash
         WHERE r.id = $1 AND r.state = 'active'${this.#d.forUpdate('r, k')}`,
        [reservationId],
        tx,
      );
      if (!row) throw new NotActive(`reservation ${reservationId} is not active`);
      const keyHash = row.key_hash as string;
      const held = row.held as number;
      const [balance, reserved] = [row.balance as number, row.reserved as number];
      // An overrun may use the key's free balance, never other requests' reservations.
      let charged = Math.min(chargeMsats, held + (balance - reserved));
      const p = new Postings(now);
      if (child) {
        const c = childKeyRow(child);
        // Nor, through a child, more than its limit leaves beside its other requests' holds.
        if (c.spendLimit !== null) charged = Math.min(charged, c.spendLimit - c.spent - (c.reserved - held));
        p.add(['UPDATE child_keys SET spent = spent + $1, reserved = reserved - $2 WHERE hash = $3', [charged, held, c.hash]]);
      }
      p.add(
        [`UPDATE keys SET balance = balance - $1, reserved = reserved - $2, total_spent = total_spent + $1 WHERE hash = $3`, [charged, held, keyHash]],
        [
          'UPDATE reservations SET state = $1, charged = $2, input_tokens = $3, output_tokens = $4, model = COALESCE($6, model) WHERE id = $5',
          [charged > 0 ? 'charged' : 'released', charged, usage?.inputTokens ?? null, usage?.outputTokens ?? null, reservationId, usage?.model ?? null],
        ],
      );
      if (charged > 0) p.entry(keyHash, 'charge', charged, reservationId, child ? (child.hash as string) : null);
      // All the writes in one statement on PostgreSQL: BEGIN, the read above, this, COMMIT.
      await tx.batch(p.balance(-charged).statements());
      return { chargedMsats: charged, balance: balance - charged, reserved: reserved - held };
    }, true);
  }

  async hasActiveReservations(keyHash: string): Promise<boolean> {
    return (await this.#one(ACTIVE_RESERVATION, [keyHash])) !== undefined;
  }

  async heartbeat(): Promise<void> {
    await this.#db.query(
      `INSERT INTO instances (id, heartbeat_at) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`,
      [this.#instance, Date.now()],
    );
  }

  async releaseOrphans(staleMs: number): Promise<number> {
    const now = Date.now();
    const { rows } = await this.#db.query(
      `SELECT r.id, r.child_hash FROM reservations r LEFT JOIN instances i ON i.id = r.owner
       WHERE r.state = 'active' AND (i.id IS NULL OR i.heartbeat_at < $1) AND r.owner IS DISTINCT FROM $2`,
      [now - staleMs, this.#instance],
    );
    let released = 0;
    // One transaction each, locking child, reservation and key in the order settle does.
    for (const o of rows) {
      const done = await this.#db.transaction(async (tx) => {
        if (o.child_hash) await tx.query(`SELECT 1 FROM child_keys WHERE hash = $1${this.#d.forUpdate()}`, [o.child_hash]);
        const r = await this.#one(
          `SELECT r.key_hash, r.msats FROM reservations r LEFT JOIN instances i ON i.id = r.owner
           WHERE r.id = $1 AND r.state = 'active' AND (i.id IS NULL OR i.heartbeat_at < $2)${this.#d.forUpdate('r', true)}`,
          [o.id, now - staleMs],
          tx,
        );
        if (!r) return false;
        await tx.query('UPDATE keys SET reserved = reserved - $1 WHERE hash = $2', [r.msats, r.key_hash]);
        if (o.child_hash) await tx.query('UPDATE child_keys SET reserved = reserved - $1 WHERE hash = $2', [r.msats, o.child_hash]);
        await tx.query(`UPDATE reservations SET state = 'released', charged = 0 WHERE id = $1`, [o.id]);
        return true;
      });
      if (done) released++;
    }
    return released;
  }

  async createChildKeys(parentHash: string, children: NewChildKey[], max = Infinity): Promise<ChildKeyRow[] | undefined | 'too_many'> {
    const now = Date.now();
    return this.#db.transaction(async (tx) => {
      // A child's parent is a live balance key; a child key is not one, so it has no children.
      // Its row is locked, so the count below is not raced by another call for the same parent.
      const parent = await this.#one(`SELECT revoked FROM keys WHERE hash = $1${this.#d.forUpdate()}`, [parentHash], tx);
      if (!parent || parent.revoked) return undefined;
      const had = Number((await this.#one('SELECT COUNT(*) AS n FROM child_keys WHERE parent_hash = $1', [parentHash], tx))!.n);
      if (had + children.length > max) return 'too_many';
      const made: ChildKeyRow[] = [];
      for (const c of children) {
        const row = await this.#one(
          `INSERT INTO child_keys (hash, parent_hash, spend_limit, models, expires_at, created_at)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
          [c.hash, parentHash, c.spendLimit, c.models ? JSON.stringify(c.models) : null, c.expiresAt, now],
          tx,
        );
        made.push(childKeyRow(row!));
      }
      return made;
    });
  }

  async getChildKey(hash: string): Promise<ChildKeyRow | undefined> {
    const r = await this.#one('SELECT * FROM child_keys WHERE hash = $1', [hash]);
    return r && childKeyRow(r);
  }

  async listChildKeys(parentHash: string): Promise<ChildKeyRow[]> {
    return (await this.#db.query('SELECT * FROM child_keys WHERE parent_hash = $1 ORDER BY created_at, hash', [parentHash])).rows.map(childKeyRow);
  }

  async revokeChildKey(parentHash: string, childHash: string): Promise<boolean> {
    const r = await this.#db.query('UPDATE child_keys SET revoked_at = $1 WHERE hash = $2 AND parent_hash = $3 AND revoked_at IS NULL', [
      Date.now(), childHash, parentHash,
    ]);
    return r.count === 1;
  }

  async history(keyHash: string, page: { before?: number | undefined; limit: number }): Promise<HistoryRow[]> {
    const child = await this.#one('SELECT 1 FROM child_keys WHERE hash = $1', [keyHash]);
    // A child's charges are its parent's money: entries name the child in `via`.
    const whose = child ? `e.via = $1 AND e.kind = 'charge'` : `e.key_hash = $1 AND ${HISTORY_KINDS}`;
    const r = await this.#db.query(
      `SELECT e.id, e.kind, e.msats, e.ref, e.via, e.created_at, r.model, r.input_tokens, r.output_tokens
       FROM entries e LEFT JOIN reservations r ON e.kind = 'charge' AND r.id = e.ref
       WHERE ${whose} AND e.id < $2 ORDER BY e.id DESC LIMIT $3`,
      [keyHash, page.before ?? Number.MAX_SAFE_INTEGER, page.limit],
    );
    return r.rows.map(historyRow);
  }

  async startRefund(r: StartRefund): Promise<StartRefundResult> {
    const now = Date.now();
    return this.#db.transaction(async (tx): Promise<StartRefundResult> => {
      const kr = await this.#one(`SELECT * FROM keys WHERE hash = $1${this.#d.forUpdate()}`, [r.keyHash], tx);
      if (!kr) return { kind: 'no_key' };
      const key = keyRow(kr);
      if (await this.#one(ACTIVE_RESERVATION, [r.keyHash], tx)) return { kind: 'busy', key };
      const per = MSATS_PER[key.unit];
      const amount = Math.floor((key.balance - key.reserved) / per);
      if (amount <= 0) return { kind: 'nothing', latest: await this.#latestRefund(r.keyHash, tx), key };
      const msats = amount * per;
      const p = new Postings(now);
      const opened = await this.#openPayout(tx, r, key.unit, amount, msats, 'refund', p, r.extra ?? 0);
      if (!opened) return { kind: 'no_liquidity', amount, unit: key.unit };
      const debited = await tx.query('UPDATE keys SET balance = balance - $1 WHERE hash = $2 AND balance - reserved >= $1', [msats, r.keyHash]);
      if (debited.count !== 1) throw new Error('refund debit raced');
      await tx.batch(p.balance(-msats).statements());
      return { kind: 'started', ...opened };
    });
  }

  /** Proofs worth at least `amount` at one mint and unit, fewest and exact where possible (`fewest`: fewest). */
  async #pick(tx: Sql, mint: string, unit: Unit, amount: number, fewest = false): Promise<StoredProof[] | undefined> {
    // Payouts from one mint and unit take turns, so the counts below stay true until we take.
    await this.#lock(tx, `payout ${mint} ${unit}`);
    const counts = async (states: string) =>
      (await tx.query(`SELECT amount, COUNT(*) AS n FROM proofs WHERE mint = $1 AND unit = $2 AND ${states} GROUP BY amount`, [mint, unit]))
        .rows.map((r) => [r.amount as number, r.n as number] as const);
    // Our own unspent proofs first; locked ones too if need be (they are then spent with our key).
    // Inputs for a swap are spent with our key anyway: the fewest of either kind.
    let states = fewest ? HELD : UNSPENT;
    let plan = pickPlan(await counts(states), amount, fewest);
    if (!plan && !fewest) {
      states = HELD;
      plan = pickPlan(await counts(states), amount, fewest);
    }
    if (!plan) return undefined;
    const picked: StoredProof[] = [];
    for (const [denomination, n] of plan) {
      const { rows } = await tx.query(
        `SELECT * FROM proofs WHERE mint = $1 AND unit = $2 AND ${states} AND amount = $3
         ORDER BY state = 'locked' LIMIT $4${this.#d.forUpdate()}`,
        [mint, unit, denomination, n],
      );
      // Under the lock this cannot happen; were it to, paying short is worse than failing.
      if (rows.length !== n) throw new Error(`proofs of ${denomination} at ${mint} changed while picked`);
      picked.push(...rows.map(proofRow));
    }
    return picked;
  }

  async #openOp(tx: Sql, id: string, kind: 'refund' | 'melt', mint: string, unit: Unit, keyHash: string, inputs: StoredProof[], now: number): Promise<void> {
    await tx.query(INSERT_OP, [id, kind, mint, unit, keyHash, null, JSON.stringify(inputs), null, now]);
    await this.#setProofs(tx, 'pending', id, inputs.map((p) => p.secret));
  }

  /** Sets aside proofs worth `amount` at the first mint that has them, and opens the refund op. */
  async #openPayout(
    tx: Sql, r: StartRefund, unit: Unit, amount: number, msats: number, kind: 'refund' | 'withdraw', p: Postings, extra = 0,
  ): Promise<{ refund: RefundRow; inputs: StoredProof[] } | undefined> {
    for (const mint of r.mints) {
      const picked = await this.#pick(tx, mint, unit, amount + extra, extra > 0);
      if (!picked) continue;
      await this.#openOp(tx, r.opId, 'refund', mint, unit, r.keyHash, picked, p.now);
      const refund = await this.#one(
        `INSERT INTO refunds (id, key_hash, op_id, msats, amount, unit, mint, state, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8) RETURNING *`,
        [r.refundId, r.keyHash, r.opId, msats, amount, unit, mint, p.now],
        tx,
      );
      p.entry(r.keyHash, kind, msats, r.refundId);
      return { refund: refundRow(refund!), inputs: picked };
    }
    return undefined;
  }

  /** What the operator has earned and not taken out: charged − withdrawn − fees. */
  async #earnings(tx: Sql): Promise<number> {
    // Withdrawals read earnings and then book against them: one at a time across instances.
    await this.#lock(tx, 'earnings');
    return (await this.#one('SELECT COALESCE(SUM(charged - withdrawn - fees), 0) AS msats FROM totals', [], tx))!.msats as number;
  }

  async startWithdraw(r: { opId: string; refundId: string; mints: string[] }): Promise<StartWithdrawResult> {
    const now = Date.now();
    return this.#db.transaction(async (tx): Promise<StartWithdrawResult> => {
      const earnings = await this.#earnings(tx);
      const payout = { ...r, keyHash: OPERATOR };
      for (const unit of ['sat', 'msat'] as const) {
        const amount = Math.floor(earnings / MSATS_PER[unit]);
        if (amount <= 0) continue;
        const p = new Postings(now);
        const opened = await this.#openPayout(tx, payout, unit, amount, amount * MSATS_PER[unit], 'withdraw', p);
        if (!opened) continue;
        await tx.batch(p.statements());
        return { kind: 'started', ...opened };
      }
      return earnings >= 1000 ? { kind: 'no_liquidity', amount: Math.floor(earnings / 1000), unit: 'sat' } : { kind: 'nothing' };
    });
  }

  async journalOutputs(opId: string, outputs: unknown[], swapped: StoredProof[]): Promise<void> {
    await this.#db.transaction(async (tx) => {
      const res = await tx.query(
        `UPDATE mint_ops SET outputs = $1, inputs = $2, updated_at = $3 WHERE id = $4 AND state = 'pending'`,
        [JSON.stringify(outputs), JSON.stringify(swapped), Date.now(), opId],
      );
      if (res.count !== 1) throw new Error(`mint op ${opId} is not pending`);
      await tx.query(
        `UPDATE proofs SET state = ${RELEASED}, op_id = NULL WHERE op_id = $1 AND state = 'pending' AND NOT (${this.#d.anyOf('secret', 2)})`,
        [opId, this.#d.array(swapped.map((p) => p.secret))],
      );
    });
  }

  async finishRefund(r: { opId: string; token: string; sent: StoredProof[]; keep: StoredProof[] }): Promise<RefundRow> {
    const now = Date.now();
    return this.#db.transaction(async (tx) => {
      const op = await this.#finishOp(tx, r.opId, now);
      // An input handed over as-is (exact match, no swap) is the user's now; a swapped one is spent.
      const sent = new Set(r.sent.map((p) => p.secret));
      await this.#setProofs(tx, 'sent', r.opId, op.inputs.filter((p) => sent.has(p.secret)).map((p) => p.secret));
      await this.#setProofs(tx, 'spent', r.opId, op.inputs.filter((p) => !sent.has(p.secret)).map((p) => p.secret));
      const fresh = r.sent.filter((p) => !op.inputs.some((i) => i.secret === p.secret));
      await this.#insertProofs(tx, fresh, op.mint, op.unit, 'sent', r.opId, now);
      await this.#insertProofs(tx, r.keep, op.mint, op.unit, 'unspent', r.opId, now);
      const refund = refundRow((await this.#one(`UPDATE refunds SET token = $1, state = 'done' WHERE op_id = $2 RETURNING *`, [r.token, r.opId], tx))!);
      const fee = swapFee(op.inputs, r.keep, refund.amount) * MSATS_PER[op.unit];
      if (fee > 0) await tx.batch(new Postings(now).entry(OPERATOR, 'fee', fee, r.opId).statements());
      return refund;
    });
  }

  async abandonRefund(opId: string): Promise<void> {
    const now = Date.now();
    await this.#db.transaction(async (tx) => {
      if (!(await this.#endOp(tx, opId, 'failed', now))) return;
      await this.#release(tx, opId);
      const row = await this.#one('DELETE FROM refunds WHERE op_id = $1 RETURNING *', [opId], tx);
      if (!row) return;
      const refund = refundRow(row);
      const p = new Postings(now);
      if (refund.keyHash === OPERATOR) p.entry(OPERATOR, 'withdraw', -refund.msats, refund.id);
      else {
        p.add(['UPDATE keys SET balance = balance + $1 WHERE hash = $2', [refund.msats, refund.keyHash]]);
        p.entry(refund.keyHash, 'refund', -refund.msats, refund.id).balance(refund.msats);
      }
      await tx.batch(p.statements());
    });
  }

  async startMelt(r: StartMelt): Promise<StartMeltResult> {
    const now = Date.now();
    return this.#db.transaction(async (tx): Promise<StartMeltResult> => {
      const per = MSATS_PER[r.unit];
      const payer = r.keyHash ?? OPERATOR;
      if (payer === OPERATOR) {
        const earnings = await this.#earnings(tx);
        if (earnings < r.need * per) return { kind: 'short', earnings };
      } else {
        const kr = await this.#one(`SELECT * FROM keys WHERE hash = $1${this.#d.forUpdate()}`, [payer], tx);
        if (!kr) return { kind: 'no_key' };
        if (await this.#one(ACTIVE_RESERVATION, [payer], tx)) return { kind: 'busy' };
        const key = keyRow(kr);
        if (key.balance - key.reserved < r.need * per) return { kind: 'short', earnings: key.balance - key.reserved };
      }
      const picked = await this.#pick(tx, r.mint, r.unit, r.need);
      if (!picked) return { kind: 'no_liquidity' };
      await this.#openOp(tx, r.opId, 'melt', r.mint, r.unit, payer, picked, now);
      const melt = await this.#one(
        `INSERT INTO melts (id, op_id, mint, unit, quote, request, amount, fee_reserve, state, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9) RETURNING *`,
        [r.meltId, r.opId, r.mint, r.unit, r.quote, r.request, r.amount, r.need - r.amount, now],
        tx,
      );
      const p = new Postings(now);
      if (payer === OPERATOR) {
        p.entry(OPERATOR, 'withdraw', r.amount * per, r.meltId);
        if (r.need > r.amount) p.entry(OPERATOR, 'fee', (r.need - r.amount) * per, r.meltId);
      } else {
        // The whole need leaves the key now, so nothing else can spend the reserve meanwhile.
        p.add(['UPDATE keys SET balance = balance - $1 WHERE hash = $2', [r.need * per, payer]]);
        p.entry(payer, 'refund', r.need * per, r.meltId).balance(-r.need * per);
      }
      await tx.batch(p.statements());
      return { kind: 'started', melt: meltRow(melt!), inputs: picked };
    });
  }

  async finishMelt(r: { opId: string; change: StoredProof[]; preimage: string | null }): Promise<MeltRow> {
    const now = Date.now();
    return this.#db.transaction(async (tx) => {
      const op = await this.#finishOp(tx, r.opId, now);
      await this.#setProofs(tx, 'spent', r.opId, op.inputs.map((p) => p.secret));
      await this.#insertProofs(tx, r.change, op.mint, op.unit, 'unspent', r.opId, now);
      const melt = meltRow((await this.#one('SELECT * FROM melts WHERE op_id = $1', [r.opId], tx))!);
      const fee = meltFee(op.inputs, r.change, melt.amount);
      const per = MSATS_PER[op.unit];
      const p = new Postings(now).add([`UPDATE melts SET state = 'paid', fee = $1, preimage = $2 WHERE op_id = $3`, [fee, r.preimage, r.opId]]);
      if (op.keyHash === OPERATOR) {
        // The reserve was booked as a fee up front; book the difference from what it really cost.
        if (fee !== melt.feeReserve) p.entry(OPERATOR, 'fee', (fee - melt.feeReserve) * per, melt.id);
      } else if (fee < melt.feeReserve) {
        // The payer was debited the whole reserve: what the payment did not use goes back to the key.
        const back = (melt.feeReserve - fee) * per;
        p.add(['UPDATE keys SET balance = balance + $1 WHERE hash = $2', [back, op.keyHash]]);
        p.entry(op.keyHash, 'refund', -back, melt.id).balance(back);
      } else if (fee > melt.feeReserve) {
        // A mint that took more than it reserved: the key was promised the reserve as its cap.
        p.entry(OPERATOR, 'fee', (fee - melt.feeReserve) * per, melt.id);
      }
      await tx.batch(p.statements());
      return { ...melt, fee, preimage: r.preimage, state: 'paid' as const };
    });
  }

  async abandonMelt(opId: string): Promise<void> {
    const now = Date.now();
    await this.#db.transaction(async (tx) => {
      const op = await this.#endOp(tx, opId, 'failed', now);
      if (!op) return;
      await this.#release(tx, opId);
      const melt = meltRow((await this.#one(`UPDATE melts SET state = 'failed' WHERE op_id = $1 RETURNING *`, [opId], tx))!);
      const per = MSATS_PER[melt.unit];
      const p = new Postings(now);
      if (op.keyHash === OPERATOR) {
        p.entry(OPERATOR, 'withdraw', -melt.amount * per, melt.id);
        if (melt.feeReserve > 0) p.entry(OPERATOR, 'fee', -melt.feeReserve * per, melt.id);
      } else {
        const back = (melt.amount + melt.feeReserve) * per;
        p.add(['UPDATE keys SET balance = balance + $1 WHERE hash = $2', [back, op.keyHash]]);
        p.entry(op.keyHash, 'refund', -back, melt.id).balance(back);
      }
      await tx.batch(p.statements());
    });
  }

  async meltOfOp(opId: string): Promise<MeltRow | undefined> {
    const r = await this.#one('SELECT * FROM melts WHERE op_id = $1', [opId]);
    return r && meltRow(r);
  }

  async latestMelt(keyHash: string): Promise<MeltRow | undefined> {
    const r = await this.#one(
      `SELECT m.* FROM melts m JOIN mint_ops o ON o.id = m.op_id WHERE o.key_hash = $1 ORDER BY m.created_at DESC, m.id DESC LIMIT 1`,
      [keyHash],
    );
    return r && meltRow(r);
  }

  /** The key's last refund in the order refunds were made, whatever the instances' clocks say. */
  async #latestRefund(keyHash: string, q: Sql = this.#db): Promise<RefundRow | undefined> {
    const r = await this.#one(`SELECT * FROM refunds WHERE key_hash = $1 ORDER BY ${this.#d.refundOrder} DESC LIMIT 1`, [keyHash], q);
    return r && refundRow(r);
  }

  latestRefund(keyHash: string): Promise<RefundRow | undefined> {
    return this.#latestRefund(keyHash);
  }

  async pendingOps(): Promise<MintOp[]> {
    return (await this.#db.query(`SELECT * FROM mint_ops WHERE state = 'pending' ORDER BY created_at`)).rows.map(opRow);
  }

  async touchOp(id: string): Promise<void> {
    await this.#db.query(`UPDATE mint_ops SET updated_at = $1 WHERE id = $2 AND state = 'pending'`, [Date.now(), id]);
  }

  async markSpent(secrets: string[]): Promise<void> {
    await this.#writeOff(secrets, `state = 'pending'`, 'spent', 'spent-elsewhere');
  }

  async writeOffRefused(secrets: string[]): Promise<number> {
    return this.#writeOff(secrets, HELD, 'refused', 'refused-by-mint');
  }

  /** Proofs that are gone for us, their value booked as an operator cost in the same transaction. */
  async #writeOff(secrets: string[], from: string, to: string, ref: string): Promise<number> {
    const now = Date.now();
    return this.#db.transaction(async (tx) => {
      const { rows } = await tx.query(
        `UPDATE proofs SET state = '${to}' WHERE ${this.#d.anyOf('secret', 1)} AND ${from} RETURNING amount, unit`,
        [this.#d.array(secrets)],
      );
      const lost = rows.reduce((sum, r) => sum + (r.amount as number) * MSATS_PER[r.unit as Unit], 0);
      if (lost > 0) await tx.batch(new Postings(now).entry(OPERATOR, 'fee', lost, ref).statements());
      return lost;
    });
  }

  async getOp(id: string): Promise<MintOp | undefined> {
    const r = await this.#one('SELECT * FROM mint_ops WHERE id = $1', [id]);
    return r && opRow(r);
  }

  async heldProofs(mint: string, unit: Unit): Promise<StoredProof[]> {
    const r = await this.#db.query(`SELECT * FROM proofs WHERE mint = $1 AND unit = $2 AND ${HELD} ORDER BY amount DESC`, [mint, unit]);
    return r.rows.map(proofRow);
  }

  async unspentCounts(mint: string, unit: Unit, withLocked = false): Promise<Map<number, number>> {
    const states = withLocked ? HELD : UNSPENT;
    const r = await this.#db.query(`SELECT amount, COUNT(*) AS n FROM proofs WHERE mint = $1 AND unit = $2 AND ${states} GROUP BY amount`, [mint, unit]);
    return new Map(r.rows.map((row) => [row.amount as number, row.n as number]));
  }

  async totals(): Promise<Totals> {
    // One statement, so the reserved sum and the totals rows are of one moment.
    const r = (await this.#one(
      `SELECT ${COLUMNS.map((c) => `COALESCE(SUM(${c}), 0) AS ${c}`).join(', ')},
         (SELECT COALESCE(SUM(msats), 0) FROM reservations WHERE state = 'active') AS reserved
       FROM totals`,
      [],
    ))!;
    const n = (c: string) => r[c] as number;
    return {
      credited: n('credited'), charged: n('charged'), refunded: n('refunded'), withdrawn: n('withdrawn'), fees: n('fees'),
      balances: n('balance') - n('reserved'), reserved: n('reserved'),
    };
  }

  async claimOnce(scope: string, id: string, expiresAt: number): Promise<boolean> {
    return this.#claim(scope, id, null, expiresAt);
  }

  /** Writes the mark unless a live one is there (an expired one is taken over); true if it wrote. */
  async #claim(scope: string, id: string, value: string | null, expiresAt: number): Promise<boolean> {
    // Expired marks are dropped now and then, so the table follows what is live.
    if (Math.random() < 0.01) await this.#db.query('DELETE FROM marks WHERE expires_at < $1', [Date.now()]);
    const r = await this.#db.query(
      `INSERT INTO marks (scope, id, value, expires_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (scope, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, count = 0 WHERE marks.expires_at < $5`,
      [scope, id, value, expiresAt, Date.now()],
    );
    return r.count === 1;
  }

  async countUpTo(scope: string, id: string, limit: number, expiresAt: number): Promise<boolean> {
    if (limit <= 0) return false;
    const r = await this.#db.query(
      `INSERT INTO marks (scope, id, count, expires_at) VALUES ($1, $2, 1, $3)
       ON CONFLICT (scope, id) DO UPDATE SET
         count = CASE WHEN marks.expires_at < $5 THEN 1 ELSE marks.count + 1 END,
         expires_at = CASE WHEN marks.expires_at < $5 THEN excluded.expires_at ELSE marks.expires_at END
       WHERE marks.count < $4 OR marks.expires_at < $5`,
      [scope, id, expiresAt, limit, Date.now()],
    );
    return r.count === 1;
  }

  async putNote(scope: string, id: string, value: string, expiresAt: number): Promise<void> {
    await this.#db.query(
      `INSERT INTO marks (scope, id, value, expires_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (scope, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`,
      [scope, id, value, expiresAt],
    );
  }

  async claimNote(scope: string, id: string, value: string, expiresAt: number): Promise<string> {
    if (await this.#claim(scope, id, value, expiresAt)) return value;
    // Held by another: its value (a mark without one, from claimOnce, holds the empty string).
    const held = await this.#one('SELECT value FROM marks WHERE scope = $1 AND id = $2', [scope, id]);
    return (held?.value as string | null | undefined) ?? '';
  }

  async getNote(scope: string, id: string): Promise<string | undefined> {
    const r = await this.#one('SELECT value FROM marks WHERE scope = $1 AND id = $2 AND expires_at >= $3', [scope, id, Date.now()]);
    return (r?.value as string | null | undefined) ?? undefined;
  }

  async dropNote(scope: string, id: string): Promise<void> {
    await this.#db.query('DELETE FROM marks WHERE scope = $1 AND id = $2', [scope, id]);
  }

  async noteIds(scope: string, limit = 10_000): Promise<string[]> {
    const r = await this.#db.query('SELECT id FROM marks WHERE scope = $1 AND expires_at >= $2 AND value IS NOT NULL ORDER BY id LIMIT $3', [scope, Date.now(), limit]);
    return r.rows.map((row) => row.id as string);
  }

  async close(): Promise<void> {
    await this.#reserves?.drain();
    await this.#settles?.drain();
    return this.#db.close();
  }
}

interface Reserve {
  keyHash: string;
  msats: number;
  reservationId: string;
  model: string | undefined;
}

interface Settle {
  reservationId: string;
  chargeMsats: number;
  usage: SettledUsage | undefined;
}
