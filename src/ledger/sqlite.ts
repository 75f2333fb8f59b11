import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Dialect, Driver, Result, Sql, Statement } from './driver.ts';
import type { Row } from './rows.ts';

/** Frozen as deployed: a database records how many of these it has run (schema_version). */
export const SQLITE_MIGRATIONS: readonly string[] = [
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

const dialect: Dialect = {
  anyOf: (column, n) => `${column} IN (SELECT value FROM json_each($${n}))`,
  array: (values) => JSON.stringify(values),
  forUpdate: () => '',
  // BEGIN IMMEDIATE: every transaction holds the database's one write lock from its start.
  lock: undefined,
  // SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE.
  isUniqueViolation: (e) => [1555, 2067].includes((e as { errcode?: number }).errcode ?? 0),
  // In this process: a COMMIT that returned committed, one that threw did not.
  mayHaveCommitted: () => false,
  refundOrder: 'rowid',
  writableCte: false,
};

interface Queued {
  fn: (tx: Sql) => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/**
 * node:sqlite behind the ledger's driver. Statements are synchronous but the ledger's transactions
 * are async, so transactions take turns in a queue (a query outside one runs at once when none is
 * open), and grouped transactions of one event-loop turn are committed together. The queue is the
 * process's: two drivers on one file in one process (tests, a CLI beside a gateway) would otherwise
 * interleave, and one would block in BEGIN IMMEDIATE on a lock the other can never release.
 */
export class SqliteDriver implements Driver {
  readonly dialect = dialect;
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, { st: StatementSync; params: number; reads: boolean }>();
  readonly #controls = new Map<string, StatementSync>();
  /** The end of the queue of exclusive work, and how much of it there is. */
  static #tail: Promise<unknown> = Promise.resolve();
  static #queued = 0;
  #group: Queued[] = [];
  /** The open transaction's view: it runs straight on the connection the queue gave it. */
  readonly #tx: Sql = {
    query: async (sql, params = []) => this.#run(sql, params),
    batch: async (statements) => this.#batch(statements),
    exec: async (script) => this.#db.exec(script),
  };

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.#db = new DatabaseSync(path);
    this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;');
  }

  /**
   * Transaction control, prepared once: a group of n writes runs 2n + 2 of these, and exec parses
   * its text every time.
   */
  #control(sql: 'BEGIN IMMEDIATE' | 'COMMIT' | 'ROLLBACK' | 'SAVEPOINT op' | 'RELEASE op' | 'ROLLBACK TO op'): void {
    let st = this.#controls.get(sql);
    if (!st) this.#controls.set(sql, (st = this.#db.prepare(sql)));
    st.run();
  }

  #run(sql: string, params: readonly unknown[]): Result {
    let s = this.#statements.get(sql);
    if (!s) {
      const text = sql.replace(/\$(\d+)/g, '?$1');
      const numbers = [...text.matchAll(/\?(\d+)/g)].map((m) => Number(m[1]));
      s = { st: this.#db.prepare(text), params: Math.max(0, ...numbers), reads: /^\s*(SELECT|WITH)\b|\bRETURNING\b/i.test(text) };
      this.#statements.set(sql, s);
    }
    const args = params.slice(0, s.params) as Array<string | number | null>;
    if (s.reads) {
      const rows = s.st.all(...args) as Row[];
      return { rows, count: rows.length };
    }
    return { rows: [], count: Number(s.st.run(...args).changes) };
  }

  #batch(statements: readonly Statement[]): void {
    for (const [sql, params] of statements) this.#run(sql, params);
  }

  /** Runs `fn` once all exclusive work queued before it is done. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    SqliteDriver.#queued++;
    const out = SqliteDriver.#tail.then(fn).finally(() => SqliteDriver.#queued--);
    SqliteDriver.#tail = out.catch(() => {});
    return out;
  }

  async query(sql: string, params: readonly unknown[] = []): Promise<Result> {
    return SqliteDriver.#queued === 0 ? this.#run(sql, params) : this.#exclusive(async () => this.#run(sql, params));
  }

  async batch(statements: readonly Statement[]): Promise<void> {
    return this.transaction((tx) => tx.batch(statements));
  }

  async exec(script: string): Promise<void> {
    return SqliteDriver.#queued === 0 ? this.#db.exec(script) : this.#exclusive(async () => this.#db.exec(script));
  }

  transaction<T>(fn: (tx: Sql) => Promise<T>, grouped = false): Promise<T> {
    if (!grouped) return this.#exclusive(() => this.#transaction(fn));
    return new Promise<T>((resolve, reject) => {
      if (this.#group.length === 0) setImmediate(() => void this.#exclusive(() => this.#flush()));
      this.#group.push({ fn, resolve: resolve as (v: unknown) => void, reject });
    });
  }

  /** BEGIN IMMEDIATE takes the write lock up front, so two processes never interleave a read-modify-write. */
  async #transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
    this.#control('BEGIN IMMEDIATE');
    try {
      const out = await fn(this.#tx);
      this.#control('COMMIT');
      return out;
    } catch (e) {
      if (this.#db.isTransaction) this.#control('ROLLBACK');
      throw e;
    }
  }

  /**
   * Group commit for the two writes every request makes (reserve, settle): those issued in the
   * same event-loop turn share one transaction, each in its own savepoint so one failing leaves
   * the others whole. BEGIN and COMMIT were three quarters of the ledger's CPU, one pair per write.
   * Each caller's promise settles only once its group has committed.
   */
  async #flush(): Promise<void> {
    const group = this.#group;
    this.#group = [];
    if (group.length === 0) return;
    const results: Array<{ ok: boolean; value: unknown }> = [];
    try {
      this.#control('BEGIN IMMEDIATE');
    } catch (e) {
      for (const g of group) g.reject(e);
      return;
    }
    try {
      for (const g of group) {
        this.#control('SAVEPOINT op');
        try {
          results.push({ ok: true, value: await g.fn(this.#tx) });
          this.#control('RELEASE op');
        } catch (e) {
          // An I/O or full-disk error ends the whole transaction: then ROLLBACK TO throws too.
          this.#control('ROLLBACK TO op');
          this.#control('RELEASE op');
          results.push({ ok: false, value: e });
        }
      }
      this.#control('COMMIT');
    } catch (e) {
      if (this.#db.isTransaction) this.#control('ROLLBACK');
      for (const g of group) g.reject(e);
      return;
    }
    group.forEach((g, i) => (results[i]!.ok ? g.resolve(results[i]!.value) : g.reject(results[i]!.value)));
  }

  async close(): Promise<void> {
    if (this.#group.length > 0) await this.#exclusive(() => this.#flush());
    await SqliteDriver.#tail;
    this.#db.close();
  }
}
