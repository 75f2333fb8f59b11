import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
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

const MIGRATIONS: string[] = [
  `CREATE TABLE keys (
     hash TEXT PRIMARY KEY,
     balance INTEGER NOT NULL CHECK (balance >= 0),
     reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= balance),
     unit TEXT NOT NULL,
     mint TEXT NOT NULL,
     total_spent INTEGER NOT NULL DEFAULT 0,
     total_requests INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL);
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
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL);
   CREATE INDEX mint_ops_pending ON mint_ops(state) WHERE state = 'pending';
   CREATE TABLE tokens (
     hash TEXT PRIMARY KEY,
     key_hash TEXT NOT NULL,
     op_id TEXT NOT NULL,
     state TEXT NOT NULL,
     msats INTEGER,
     created_at INTEGER NOT NULL);
   CREATE TABLE proofs (
     secret TEXT PRIMARY KEY,
     mint TEXT NOT NULL,
     unit TEXT NOT NULL,
     keyset_id TEXT NOT NULL,
     amount INTEGER NOT NULL,
     c TEXT NOT NULL,
     dleq TEXT,
     state TEXT NOT NULL,
     op_id TEXT,
     created_at INTEGER NOT NULL);
   CREATE INDEX proofs_unspent ON proofs(mint, unit, amount) WHERE state = 'unspent';
   CREATE TABLE reservations (
     id TEXT PRIMARY KEY,
     key_hash TEXT NOT NULL,
     msats INTEGER NOT NULL,
     state TEXT NOT NULL,
     charged INTEGER,
     created_at INTEGER NOT NULL);
   CREATE INDEX reservations_active ON reservations(key_hash) WHERE state = 'active';
   CREATE TABLE refunds (
     id TEXT PRIMARY KEY,
     key_hash TEXT NOT NULL,
     op_id TEXT NOT NULL UNIQUE,
     msats INTEGER NOT NULL,
     amount INTEGER NOT NULL,
     unit TEXT NOT NULL,
     mint TEXT NOT NULL,
     token TEXT,
     state TEXT NOT NULL,
     created_at INTEGER NOT NULL);
   CREATE INDEX refunds_key ON refunds(key_hash, created_at);
   CREATE TABLE entries (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     key_hash TEXT NOT NULL,
     kind TEXT NOT NULL,
     msats INTEGER NOT NULL,
     ref TEXT NOT NULL,
     created_at INTEGER NOT NULL);`,
  `ALTER TABLE reservations ADD COLUMN owner TEXT;
   CREATE TABLE instances (id TEXT PRIMARY KEY, heartbeat_at INTEGER NOT NULL);`,
  `ALTER TABLE keys ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;`,
  `CREATE TABLE melts (
     id TEXT PRIMARY KEY,
     op_id TEXT NOT NULL UNIQUE,
     mint TEXT NOT NULL,
     unit TEXT NOT NULL,
     quote TEXT NOT NULL,
     request TEXT NOT NULL,
     amount INTEGER NOT NULL,
     fee_reserve INTEGER NOT NULL,
     fee INTEGER,
     preimage TEXT,
     state TEXT NOT NULL,
     created_at INTEGER NOT NULL);`,
  `CREATE TABLE marks (
     scope TEXT NOT NULL,
     id TEXT NOT NULL,
     value TEXT,
     count INTEGER NOT NULL DEFAULT 0,
     expires_at BIGINT NOT NULL,
     PRIMARY KEY (scope, id));`,
];

class ReplayError extends Error {}

/** SQLITE_CONSTRAINT_PRIMARYKEY or SQLITE_CONSTRAINT_UNIQUE, or a proof claimed already. */
function isUniqueViolation(e: unknown): boolean {
  const code = (e as { errcode?: number }).errcode;
  return e instanceof ReplayError || code === 1555 || code === 2067;
}

export class SqliteLedger implements Ledger {
  readonly #db: DatabaseSync;
  readonly #s: Record<string, StatementSync>;
  /** This process, as the owner of the reservations it takes. */
  readonly #instance = randomUUID();
  #group: Array<{ run: () => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }> = [];

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.#db = new DatabaseSync(path);
    this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;');
    this.#migrate();
    const p = (sql: string) => this.#db.prepare(sql);
    this.#s = {
      getKey: p('SELECT * FROM keys WHERE hash = ?'),
      listKeys: p('SELECT * FROM keys ORDER BY balance DESC, created_at LIMIT ?'),
      revokeKey: p('UPDATE keys SET revoked = 1 WHERE hash = ?'),
      getToken: p('SELECT * FROM tokens WHERE hash = ?'),
      insertToken: p(
        `INSERT INTO tokens (hash, key_hash, op_id, state, created_at) VALUES (?, ?, ?, 'redeeming', ?)
         ON CONFLICT (hash) DO NOTHING`,
      ),
      creditToken: p(`UPDATE tokens SET state = 'credited', msats = ? WHERE hash = ? AND op_id = ?`),
      deleteToken: p('DELETE FROM tokens WHERE hash = ? AND op_id = ?'),
      insertOp: p(
        `INSERT INTO mint_ops (id, kind, mint, unit, state, key_hash, token_hash, inputs, outputs, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)`,
      ),
      getOp: p('SELECT * FROM mint_ops WHERE id = ?'),
      setOpState: p(`UPDATE mint_ops SET state = ?, updated_at = ? WHERE id = ? AND state = 'pending'`),
      setOpOutputs: p(`UPDATE mint_ops SET outputs = ?, inputs = ?, updated_at = ? WHERE id = ? AND state = 'pending'`),
      touchOp: p(`UPDATE mint_ops SET updated_at = ? WHERE id = ? AND state = 'pending'`),
      markSpent: p(`UPDATE proofs SET state = 'spent' WHERE secret = ? AND state = 'pending' RETURNING amount, unit`),
      pendingOps: p(`SELECT * FROM mint_ops WHERE state = 'pending' ORDER BY created_at`),
      insertProof: p(
        `INSERT INTO proofs (secret, mint, unit, keyset_id, amount, c, dleq, state, op_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      unspent: p(`SELECT * FROM proofs WHERE mint = ? AND unit = ? AND state = 'unspent' ORDER BY amount DESC`),
      held: p(`SELECT * FROM proofs WHERE mint = ? AND unit = ? AND state IN ('unspent', 'locked') ORDER BY amount DESC`),
      unspentCounts: p(`SELECT amount, COUNT(*) AS n FROM proofs WHERE mint = ? AND unit = ? AND state = 'unspent' GROUP BY amount`),
      heldCounts: p(`SELECT amount, COUNT(*) AS n FROM proofs WHERE mint = ? AND unit = ? AND state IN ('unspent', 'locked') GROUP BY amount`),
      takeUnspent: p(`SELECT * FROM proofs WHERE mint = ? AND unit = ? AND state = 'unspent' AND amount = ? LIMIT ?`),
      takeHeld: p(
        `SELECT * FROM proofs WHERE mint = ? AND unit = ? AND state IN ('unspent', 'locked') AND amount = ?
         ORDER BY state = 'locked' LIMIT ?`,
      ),
      locked: p(`SELECT * FROM proofs WHERE mint = ? AND unit = ? AND state = 'locked' ORDER BY created_at LIMIT ?`),
      // A proof we gave away (sent) may come back; one we hold, are claiming or know spent may not.
      // A spent row stays as it is: an abandoned claim deletes its rows, and that one is what keeps
      // a swept offline proof from being taken offline again.
      claimIncoming: p(
        `INSERT INTO proofs (secret, mint, unit, keyset_id, amount, c, dleq, state, op_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, NULL, 'incoming', ?, ?)
         ON CONFLICT (secret) DO UPDATE SET state = 'incoming', op_id = excluded.op_id
         WHERE proofs.state = 'sent'`,
      ),
      settleIncoming: p(`UPDATE proofs SET state = 'spent' WHERE op_id = ? AND state = 'incoming'`),
      dropIncoming: p(`DELETE FROM proofs WHERE op_id = ? AND state = 'incoming'`),
      releaseProof: p(`UPDATE proofs SET state = ${RELEASED_STATE_SQL}, op_id = NULL WHERE secret = ?`),
      setProofState: p('UPDATE proofs SET state = ?, op_id = ? WHERE secret = ?'),
      proofsOfOp: p('SELECT * FROM proofs WHERE op_id = ? AND state = ?'),
      insertKey: p(
        `INSERT INTO keys (hash, balance, unit, mint, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (hash) DO UPDATE SET balance = balance + excluded.balance`,
      ),
      addBalance: p('UPDATE keys SET balance = balance + ? WHERE hash = ?'),
      reserve: p(
        `UPDATE keys SET reserved = reserved + ?1, total_requests = total_requests + 1
         WHERE hash = ?2 AND balance - reserved >= ?1 AND revoked = 0`,
      ),
      insertReservation: p(
        `INSERT INTO reservations (id, key_hash, msats, state, created_at, owner) VALUES (?, ?, ?, 'active', ?, ?)`,
      ),
      heartbeat: p(
        `INSERT INTO instances (id, heartbeat_at) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`,
      ),
      orphans: p(
        `SELECT r.* FROM reservations r LEFT JOIN instances i ON i.id = r.owner
         WHERE r.state = 'active' AND (i.id IS NULL OR i.heartbeat_at < ?)`,
      ),
      releaseReservation: p(`UPDATE keys SET reserved = reserved - ? WHERE hash = ?`),
      getReservation: p(`SELECT * FROM reservations WHERE id = ? AND state = 'active'`),
      closeReservation: p('UPDATE reservations SET state = ?, charged = ? WHERE id = ?'),
      charge: p(
        `UPDATE keys SET balance = balance - ?1, reserved = reserved - ?2, total_spent = total_spent + ?1
         WHERE hash = ?3`,
      ),
      activeReservations: p(`SELECT 1 FROM reservations WHERE key_hash = ? AND state = 'active' LIMIT 1`),
      debit: p('UPDATE keys SET balance = balance - ? WHERE hash = ? AND balance - reserved >= ?'),
      insertRefund: p(
        `INSERT INTO refunds (id, key_hash, op_id, msats, amount, unit, mint, state, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)`,
      ),
      refundOfOp: p('SELECT * FROM refunds WHERE op_id = ?'),
      finishRefund: p(`UPDATE refunds SET token = ?, state = 'done' WHERE op_id = ?`),
      deleteRefund: p('DELETE FROM refunds WHERE op_id = ?'),
      latestRefund: p(`SELECT * FROM refunds WHERE key_hash = ? ORDER BY created_at DESC, rowid DESC LIMIT 1`),
      insertMelt: p(
        `INSERT INTO melts (id, op_id, mint, unit, quote, request, amount, fee_reserve, state, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)`,
      ),
      meltOfOp: p('SELECT * FROM melts WHERE op_id = ?'),
      setMeltState: p('UPDATE melts SET state = ?, fee = ?, preimage = ? WHERE op_id = ?'),
      entry: p('INSERT INTO entries (key_hash, kind, msats, ref, created_at) VALUES (?, ?, ?, ?, ?)'),
      earnings: p(
        `SELECT COALESCE(SUM(CASE kind WHEN 'charge' THEN msats ELSE -msats END), 0) AS msats
         FROM entries WHERE kind IN ('charge', 'withdraw', 'fee')`,
      ),
      sumEntries: p(`SELECT kind, COALESCE(SUM(msats), 0) AS msats FROM entries GROUP BY kind`),
      sumKeys: p('SELECT COALESCE(SUM(balance), 0) AS balance, COALESCE(SUM(reserved), 0) AS reserved FROM keys'),
      claimOnce: p(
        `INSERT INTO marks (scope, id, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (scope, id) DO UPDATE SET expires_at = excluded.expires_at, count = 0, value = NULL WHERE marks.expires_at < ?4`,
      ),
      countUpTo: p(
        `INSERT INTO marks (scope, id, count, expires_at) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (scope, id) DO UPDATE SET
           count = CASE WHEN marks.expires_at < ?5 THEN 1 ELSE marks.count + 1 END,
           expires_at = CASE WHEN marks.expires_at < ?5 THEN excluded.expires_at ELSE marks.expires_at END
         WHERE marks.count < ?4 OR marks.expires_at < ?5`,
      ),
      putNote: p(
        `INSERT INTO marks (scope, id, value, expires_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (scope, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`,
      ),
      getNote: p('SELECT value FROM marks WHERE scope = ? AND id = ? AND expires_at >= ?'),
      dropNote: p('DELETE FROM marks WHERE scope = ? AND id = ?'),
      pruneMarks: p('DELETE FROM marks WHERE expires_at < ?'),
    };
  }

  #migrate(): void {
    this.#db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = this.#db.prepare('SELECT version FROM schema_version').get() as Row | undefined;
    let version = (row?.version as number | undefined) ?? 0;
    if (!row) this.#db.exec('INSERT INTO schema_version (version) VALUES (0)');
    while (version < MIGRATIONS.length) {
      this.#tx(() => {
        this.#db.exec(MIGRATIONS[version]!);
        this.#db.prepare('UPDATE schema_version SET version = ?').run(version + 1);
      });
      version++;
    }
  }

  /** BEGIN IMMEDIATE takes the write lock up front, so two processes never interleave a read-modify-write. */
  #tx<T>(fn: () => T): T {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const out = fn();
      this.#db.exec('COMMIT');
      return out;
    } catch (e) {
      this.#db.exec('ROLLBACK');
      throw e;
    }
  }

  /**
   * Group commit for the two writes every request makes (reserve, settle): those issued in the
   * same event-loop turn share one transaction, each in its own savepoint so one failing leaves
   * the others whole. BEGIN and COMMIT were three quarters of the ledger's CPU, one pair per write.
   * Each caller's promise settles only once its group has committed.
   */
  #grouped<T>(fn: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.#group.length === 0) setImmediate(() => this.#flush());
      this.#group.push({ run: fn, resolve: resolve as (v: unknown) => void, reject });
    });
  }

  #flush(): void {
    const group = this.#group;
    this.#group = [];
    if (group.length === 0) return;
    const results: Array<{ ok: boolean; value: unknown }> = [];
    try {
      this.#db.exec('BEGIN IMMEDIATE');
    } catch (e) {
      for (const g of group) g.reject(e);
      return;
    }
    try {
      for (const g of group) {
        this.#db.exec('SAVEPOINT op');
        try {
          results.push({ ok: true, value: g.run() });
          this.#db.exec('RELEASE op');
        } catch (e) {
          // An I/O or full-disk error ends the whole transaction: then ROLLBACK TO throws too.
          this.#db.exec('ROLLBACK TO op');
          this.#db.exec('RELEASE op');
          results.push({ ok: false, value: e });
        }
      }
      this.#db.exec('COMMIT');
    } catch (e) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      for (const g of group) g.reject(e);
      return;
    }
    group.forEach((g, i) => (results[i]!.ok ? g.resolve(results[i]!.value) : g.reject(results[i]!.value)));
  }

  #insertProofs(proofs: StoredProof[], mint: string, unit: Unit, state: string, opId: string, now: number): void {
    for (const pr of proofs) {
      this.#s.insertProof!.run(
        pr.secret, mint, unit, pr.id, pr.amount, pr.C, pr.dleq ? JSON.stringify(pr.dleq) : null, state, opId, now,
      );
    }
  }

  async getKey(hash: string): Promise<KeyRow | undefined> {
    const r = this.#s.getKey!.get(hash) as Row | undefined;
    return r && keyRow(r);
  }

  async listKeys(limit: number): Promise<KeyRow[]> {
    return (this.#s.listKeys!.all(limit) as Row[]).map(keyRow);
  }

  async revokeKey(hash: string): Promise<boolean> {
    return this.#s.revokeKey!.run(hash).changes === 1;
  }

  async getToken(hash: string): Promise<TokenRow | undefined> {
    const r = this.#s.getToken!.get(hash) as Row | undefined;
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
      started = this.#tx(() => {
        const ins = this.#s.insertToken!.run(r.tokenHash, r.keyHash, r.opId, now);
        if (ins.changes === 0) return false;
        for (const pr of r.inputs) {
          const claimed = this.#s.claimIncoming!.run(pr.secret, r.mint, r.unit, pr.id, pr.amount, pr.C, r.opId, now);
          if (claimed.changes !== 1) throw new ReplayError();
        }
        this.#s.insertOp!.run(
          r.opId, 'receive', r.mint, r.unit, r.keyHash, r.tokenHash, JSON.stringify(r.inputs), JSON.stringify(r.outputs), now, now,
        );
        return true;
      });
    } catch (e) {
      if (isUniqueViolation(e)) return { started: false, replayed: true };
      throw e;
    }
    if (started) return { started: true };
    return { started: false, token: (await this.getToken(r.tokenHash))! };
  }

  async finishRedemption(r: { tokenHash: string; opId: string; proofs: StoredProof[]; creditMsats: number }): Promise<KeyRow> {
    const now = Date.now();
    return this.#tx(() => {
      const op = opRow(this.#s.getOp!.get(r.opId) as Row);
      if (this.#s.setOpState!.run('done', now, r.opId).changes !== 1) throw new Error(`mint op ${r.opId} is not pending`);
      this.#s.settleIncoming!.run(r.opId);
      this.#insertProofs(r.proofs, op.mint, op.unit, 'unspent', r.opId, now);
      this.#s.creditToken!.run(r.creditMsats, r.tokenHash, r.opId);
      this.#s.insertKey!.run(op.keyHash, r.creditMsats, op.unit, op.mint, now);
      this.#s.entry!.run(op.keyHash, 'credit', r.creditMsats, r.tokenHash, now);
      return keyRow(this.#s.getKey!.get(op.keyHash) as Row);
    });
  }

  async abandonRedemption(tokenHash: string, opId: string): Promise<void> {
    this.#tx(() => {
      if (this.#s.setOpState!.run('failed', Date.now(), opId).changes !== 1) return;
      this.#s.deleteToken!.run(tokenHash, opId);
      this.#s.dropIncoming!.run(opId);
    });
  }

  async acceptLocked(r: {
    tokenHash: string; keyHash: string; mint: string; unit: Unit; proofs: StoredProof[]; creditMsats: number;
  }): Promise<'accepted' | 'known' | 'replayed'> {
    const now = Date.now();
    try {
      return this.#tx(() => {
        const opId = `offline:${r.tokenHash}`;
        if (this.#s.insertToken!.run(r.tokenHash, r.keyHash, opId, now).changes === 0) return 'known';
        this.#insertProofs(r.proofs, r.mint, r.unit, 'locked', opId, now);
        this.#s.creditToken!.run(r.creditMsats, r.tokenHash, opId);
        this.#s.insertKey!.run(r.keyHash, r.creditMsats, r.unit, r.mint, now);
        this.#s.entry!.run(r.keyHash, 'credit', r.creditMsats, r.tokenHash, now);
        return 'accepted';
      });
    } catch (e) {
      if (isUniqueViolation(e)) return 'replayed';
      throw e;
    }
  }

  async startSweep(r: { opId: string; mint: string; unit: Unit; limit: number }): Promise<StoredProof[]> {
    const now = Date.now();
    return this.#tx(() => {
      const proofs = (this.#s.locked!.all(r.mint, r.unit, r.limit) as Row[]).map(proofRow);
      if (proofs.length === 0) return proofs;
      this.#s.insertOp!.run(r.opId, 'sweep', r.mint, r.unit, '', null, JSON.stringify(proofs), null, now, now);
      for (const pr of proofs) this.#s.setProofState!.run('pending', r.opId, pr.secret);
      return proofs;
    });
  }

  async finishSweep(opId: string, proofs: StoredProof[]): Promise<void> {
    const now = Date.now();
    this.#tx(() => {
      const op = opRow(this.#s.getOp!.get(opId) as Row);
      if (this.#s.setOpState!.run('done', now, opId).changes !== 1) throw new Error(`mint op ${opId} is not pending`);
      for (const pr of op.inputs) this.#s.setProofState!.run('spent', opId, pr.secret);
      this.#insertProofs(proofs, op.mint, op.unit, 'unspent', opId, now);
      const fee = swapFee(op.inputs, proofs, 0) * MSATS_PER[op.unit];
      if (fee > 0) this.#s.entry!.run(OPERATOR, 'fee', fee, opId, now);
    });
  }

  async abandonSweep(opId: string): Promise<void> {
    this.#tx(() => {
      if (this.#s.setOpState!.run('failed', Date.now(), opId).changes !== 1) return;
      for (const row of this.#s.proofsOfOp!.all(opId, 'pending') as Row[]) {
        this.#s.setProofState!.run('locked', null, row.secret as string);
      }
    });
  }

  async reserve(keyHash: string, msats: number, reservationId: string): Promise<boolean> {
    return this.#grouped(() => {
      if (this.#s.reserve!.run(msats, keyHash).changes !== 1) return false;
      this.#s.insertReservation!.run(reservationId, keyHash, msats, Date.now(), this.#instance);
      return true;
    });
  }

  async settle(reservationId: string, chargeMsats: number): Promise<Settlement> {
    const now = Date.now();
    return this.#grouped(() => {
      const res = this.#s.getReservation!.get(reservationId) as Row | undefined;
      if (!res) throw new Error(`reservation ${reservationId} is not active`);
      const keyHash = res.key_hash as string;
      const held = res.msats as number;
      const key = keyRow(this.#s.getKey!.get(keyHash) as Row);
      // An overrun may use the key's free balance, never other requests' reservations.
      const charged = Math.min(chargeMsats, held + (key.balance - key.reserved));
      this.#s.charge!.run(charged, held, keyHash);
      this.#s.closeReservation!.run(charged > 0 ? 'charged' : 'released', charged, reservationId);
      if (charged > 0) this.#s.entry!.run(keyHash, 'charge', charged, reservationId, now);
      return { chargedMsats: charged, balance: key.balance - charged, reserved: key.reserved - held };
    });
  }

  async hasActiveReservations(keyHash: string): Promise<boolean> {
    return this.#s.activeReservations!.get(keyHash) !== undefined;
  }

  async heartbeat(): Promise<void> {
    this.#s.heartbeat!.run(this.#instance, Date.now());
  }

  async releaseOrphans(staleMs: number): Promise<number> {
    return this.#tx(() => {
      const rows = this.#s.orphans!.all(Date.now() - staleMs) as Row[];
      for (const r of rows) {
        if (r.owner === this.#instance) continue;
        this.#s.releaseReservation!.run(r.msats as number, r.key_hash as string);
        this.#s.closeReservation!.run('released', 0, r.id as string);
      }
      return rows.filter((r) => r.owner !== this.#instance).length;
    });
  }

  async startRefund(r: StartRefund): Promise<StartRefundResult> {
    const now = Date.now();
    return this.#tx((): StartRefundResult => {
      const kr = this.#s.getKey!.get(r.keyHash) as Row | undefined;
      if (!kr) return { kind: 'no_key' };
      const key = keyRow(kr);
      if (this.#s.activeReservations!.get(r.keyHash)) return { kind: 'busy', key };
      const per = MSATS_PER[key.unit];
      const amount = Math.floor((key.balance - key.reserved) / per);
      if (amount <= 0) {
        const latest = this.#s.latestRefund!.get(r.keyHash) as Row | undefined;
        return { kind: 'nothing', latest: latest && refundRow(latest), key };
      }
      const msats = amount * per;
      const opened = this.#openPayout(r, key.unit, amount, msats, 'refund', now);
      if (!opened) return { kind: 'no_liquidity', amount, unit: key.unit };
      if (this.#s.debit!.run(msats, r.keyHash, msats).changes !== 1) throw new Error('refund debit raced');
      return { kind: 'started', ...opened };
    });
  }

  /** Proofs worth at least `amount` at one mint and unit, fewest and exact where possible. */
  #pick(mint: string, unit: Unit, amount: number): StoredProof[] | undefined {
    // Our own unspent proofs first; locked ones too if need be (they are then spent with our key).
    const counts = (st: StatementSync) => (st.all(mint, unit) as Row[]).map((r) => [r.amount as number, r.n as number] as const);
    let plan = pickPlan(counts(this.#s.unspentCounts!), amount);
    const withLocked = !plan;
    plan ??= pickPlan(counts(this.#s.heldCounts!), amount);
    if (!plan) return undefined;
    const take = withLocked ? this.#s.takeHeld! : this.#s.takeUnspent!;
    return [...plan].flatMap(([denomination, n]) => (take.all(mint, unit, denomination, n) as Row[]).map(proofRow));
  }

  /** Sets aside proofs worth `amount` at the first mint that has them, and opens the refund op. */
  #openPayout(
    r: StartRefund, unit: Unit, amount: number, msats: number, kind: 'refund' | 'withdraw', now: number,
  ): { refund: RefundRow; inputs: StoredProof[] } | undefined {
    for (const mint of r.mints) {
      const picked = this.#pick(mint, unit, amount);
      if (!picked) continue;
      this.#s.insertOp!.run(r.opId, 'refund', mint, unit, r.keyHash, null, JSON.stringify(picked), null, now, now);
      for (const pr of picked) this.#s.setProofState!.run('pending', r.opId, pr.secret);
      this.#s.insertRefund!.run(r.refundId, r.keyHash, r.opId, msats, amount, unit, mint, now);
      this.#s.entry!.run(r.keyHash, kind, msats, r.refundId, now);
      return { refund: refundRow(this.#s.refundOfOp!.get(r.opId) as Row), inputs: picked };
    }
    return undefined;
  }

  async startWithdraw(r: { opId: string; refundId: string; mints: string[] }): Promise<StartWithdrawResult> {
    const now = Date.now();
    return this.#tx((): StartWithdrawResult => {
      const earnings = (this.#s.earnings!.get() as Row).msats as number;
      const payout = { ...r, keyHash: OPERATOR };
      for (const unit of ['sat', 'msat'] as const) {
        const amount = Math.floor(earnings / MSATS_PER[unit]);
        if (amount <= 0) continue;
        const opened = this.#openPayout(payout, unit, amount, amount * MSATS_PER[unit], 'withdraw', now);
        if (opened) return { kind: 'started', ...opened };
      }
      return earnings >= 1000 ? { kind: 'no_liquidity', amount: Math.floor(earnings / 1000), unit: 'sat' } : { kind: 'nothing' };
    });
  }

  async journalOutputs(opId: string, outputs: unknown[], swapped: StoredProof[]): Promise<void> {
    this.#tx(() => {
      const res = this.#s.setOpOutputs!.run(JSON.stringify(outputs), JSON.stringify(swapped), Date.now(), opId);
      if (res.changes !== 1) throw new Error(`mint op ${opId} is not pending`);
      const keep = new Set(swapped.map((p) => p.secret));
      for (const row of this.#s.proofsOfOp!.all(opId, 'pending') as Row[]) {
        if (!keep.has(row.secret as string)) this.#s.releaseProof!.run(row.secret as string);
      }
    });
  }

  async finishRefund(r: { opId: string; token: string; sent: StoredProof[]; keep: StoredProof[] }): Promise<RefundRow> {
    const now = Date.now();
    return this.#tx(() => {
      const op = opRow(this.#s.getOp!.get(r.opId) as Row);
      if (this.#s.setOpState!.run('done', now, r.opId).changes !== 1) throw new Error(`mint op ${r.opId} is not pending`);
      const sentSecrets = new Set(r.sent.map((p) => p.secret));
      for (const pr of op.inputs) {
        // An input handed over as-is (exact match, no swap) is the user's now; a swapped one is spent.
        this.#s.setProofState!.run(sentSecrets.has(pr.secret) ? 'sent' : 'spent', r.opId, pr.secret);
      }
      const fresh = r.sent.filter((p) => !op.inputs.some((i) => i.secret === p.secret));
      this.#insertProofs(fresh, op.mint, op.unit, 'sent', r.opId, now);
      this.#insertProofs(r.keep, op.mint, op.unit, 'unspent', r.opId, now);
      this.#s.finishRefund!.run(r.token, r.opId);
      const refund = refundRow(this.#s.refundOfOp!.get(r.opId) as Row);
      const fee = swapFee(op.inputs, r.keep, refund.amount) * MSATS_PER[op.unit];
      if (fee > 0) this.#s.entry!.run(OPERATOR, 'fee', fee, r.opId, now);
      return refund;
    });
  }

  async abandonRefund(opId: string): Promise<void> {
    const now = Date.now();
    this.#tx(() => {
      const refund = this.#s.refundOfOp!.get(opId) as Row | undefined;
      if (this.#s.setOpState!.run('failed', now, opId).changes !== 1) return;
      for (const row of this.#s.proofsOfOp!.all(opId, 'pending') as Row[]) this.#s.releaseProof!.run(row.secret as string);
      if (refund) {
        const rr = refundRow(refund);
        const operator = rr.keyHash === OPERATOR;
        if (!operator) this.#s.addBalance!.run(rr.msats, rr.keyHash);
        this.#s.entry!.run(rr.keyHash, operator ? 'withdraw' : 'refund', -rr.msats, rr.id, now);
        this.#s.deleteRefund!.run(opId);
      }
    });
  }

  async startMelt(r: StartMelt): Promise<StartMeltResult> {
    const now = Date.now();
    return this.#tx((): StartMeltResult => {
      const per = MSATS_PER[r.unit];
      const earnings = (this.#s.earnings!.get() as Row).msats as number;
      if (earnings < r.need * per) return { kind: 'short', earnings };
      const picked = this.#pick(r.mint, r.unit, r.need);
      if (!picked) return { kind: 'no_liquidity' };
      this.#s.insertOp!.run(r.opId, 'melt', r.mint, r.unit, OPERATOR, null, JSON.stringify(picked), null, now, now);
      for (const pr of picked) this.#s.setProofState!.run('pending', r.opId, pr.secret);
      this.#s.insertMelt!.run(r.meltId, r.opId, r.mint, r.unit, r.quote, r.request, r.amount, r.need - r.amount, now);
      this.#s.entry!.run(OPERATOR, 'withdraw', r.amount * per, r.meltId, now);
      if (r.need > r.amount) this.#s.entry!.run(OPERATOR, 'fee', (r.need - r.amount) * per, r.meltId, now);
      return { kind: 'started', melt: meltRow(this.#s.meltOfOp!.get(r.opId) as Row), inputs: picked };
    });
  }

  async finishMelt(r: { opId: string; change: StoredProof[]; preimage: string | null }): Promise<MeltRow> {
    const now = Date.now();
    return this.#tx(() => {
      const op = opRow(this.#s.getOp!.get(r.opId) as Row);
      if (this.#s.setOpState!.run('done', now, r.opId).changes !== 1) throw new Error(`mint op ${r.opId} is not pending`);
      for (const pr of op.inputs) this.#s.setProofState!.run('spent', r.opId, pr.secret);
      this.#insertProofs(r.change, op.mint, op.unit, 'unspent', r.opId, now);
      const melt = meltRow(this.#s.meltOfOp!.get(r.opId) as Row);
      const fee = meltFee(op.inputs, r.change, melt.amount);
      // The reserve was booked as a fee up front; book the difference from what it really cost.
      if (fee !== melt.feeReserve) this.#s.entry!.run(OPERATOR, 'fee', (fee - melt.feeReserve) * MSATS_PER[op.unit], melt.id, now);
      this.#s.setMeltState!.run('paid', fee, r.preimage, r.opId);
      return { ...melt, fee, preimage: r.preimage, state: 'paid' };
    });
  }

  async abandonMelt(opId: string): Promise<void> {
    const now = Date.now();
    this.#tx(() => {
      if (this.#s.setOpState!.run('failed', now, opId).changes !== 1) return;
      for (const row of this.#s.proofsOfOp!.all(opId, 'pending') as Row[]) this.#s.releaseProof!.run(row.secret as string);
      const melt = meltRow(this.#s.meltOfOp!.get(opId) as Row);
      const per = MSATS_PER[melt.unit];
      this.#s.entry!.run(OPERATOR, 'withdraw', -melt.amount * per, melt.id, now);
      if (melt.feeReserve > 0) this.#s.entry!.run(OPERATOR, 'fee', -melt.feeReserve * per, melt.id, now);
      this.#s.setMeltState!.run('failed', null, null, opId);
    });
  }

  async meltOfOp(opId: string): Promise<MeltRow | undefined> {
    const r = this.#s.meltOfOp!.get(opId) as Row | undefined;
    return r && meltRow(r);
  }

  async latestRefund(keyHash: string): Promise<RefundRow | undefined> {
    const r = this.#s.latestRefund!.get(keyHash) as Row | undefined;
    return r && refundRow(r);
  }

  async pendingOps(): Promise<MintOp[]> {
    return (this.#s.pendingOps!.all() as Row[]).map(opRow);
  }

  async touchOp(id: string): Promise<void> {
    this.#s.touchOp!.run(Date.now(), id);
  }

  async markSpent(secrets: string[]): Promise<void> {
    const now = Date.now();
    this.#tx(() => {
      let lost = 0;
      for (const secret of secrets) {
        const r = this.#s.markSpent!.get(secret) as Row | undefined;
        if (r) lost += (r.amount as number) * MSATS_PER[r.unit as Unit];
      }
      if (lost > 0) this.#s.entry!.run(OPERATOR, 'fee', lost, 'spent-elsewhere', now);
    });
  }

  async getOp(id: string): Promise<MintOp | undefined> {
    const r = this.#s.getOp!.get(id) as Row | undefined;
    return r && opRow(r);
  }

  async heldProofs(mint: string, unit: Unit): Promise<StoredProof[]> {
    return (this.#s.held!.all(mint, unit) as Row[]).map(proofRow);
  }

  async unspentCounts(mint: string, unit: Unit): Promise<Map<number, number>> {
    return new Map((this.#s.unspentCounts!.all(mint, unit) as Row[]).map((r) => [r.amount as number, r.n as number]));
  }

  async totals(): Promise<Totals> {
    const t: Totals = { credited: 0, charged: 0, refunded: 0, withdrawn: 0, fees: 0, balances: 0, reserved: 0 };
    for (const r of this.#s.sumEntries!.all() as Row[]) {
      if (r.kind === 'credit') t.credited = r.msats as number;
      else if (r.kind === 'charge') t.charged = r.msats as number;
      else if (r.kind === 'refund') t.refunded = r.msats as number;
      else if (r.kind === 'withdraw') t.withdrawn = r.msats as number;
      else if (r.kind === 'fee') t.fees = r.msats as number;
    }
    const k = this.#s.sumKeys!.get() as Row;
    t.balances = (k.balance as number) - (k.reserved as number);
    t.reserved = k.reserved as number;
    return t;
  }

  async claimOnce(scope: string, id: string, expiresAt: number): Promise<boolean> {
    // Expired marks are dropped now and then, so the table follows what is live.
    if (Math.random() < 0.01) this.#s.pruneMarks!.run(Date.now());
    return this.#s.claimOnce!.run(scope, id, expiresAt, Date.now()).changes === 1;
  }

  async countUpTo(scope: string, id: string, limit: number, expiresAt: number): Promise<boolean> {
    if (limit <= 0) return false;
    return this.#s.countUpTo!.run(scope, id, expiresAt, limit, Date.now()).changes === 1;
  }

  async putNote(scope: string, id: string, value: string, expiresAt: number): Promise<void> {
    this.#s.putNote!.run(scope, id, value, expiresAt);
  }

  async getNote(scope: string, id: string): Promise<string | undefined> {
    const r = this.#s.getNote!.get(scope, id, Date.now()) as Row | undefined;
    return (r?.value as string | null | undefined) ?? undefined;
  }

  async dropNote(scope: string, id: string): Promise<void> {
    this.#s.dropNote!.run(scope, id);
  }

  async close(): Promise<void> {
    this.#flush();
    this.#db.close();
  }
}
