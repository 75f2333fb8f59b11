import pg from 'pg';
import type { Dialect, Driver, Result, Sql, Statement } from './driver.ts';
import type { Row } from './rows.ts';

// msats fit in a double exactly (< 2^53); BIGINT and SUM() come back as numbers, not strings.
pg.types.setTypeParser(pg.types.builtins.INT8, Number);
pg.types.setTypeParser(pg.types.builtins.NUMERIC, Number);

/** Frozen as deployed: a database records how many of these it has run (schema_version). */
export const POSTGRES_MIGRATIONS: readonly string[] = [
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

const dialect: Dialect = {
  anyOf: (column, n) => `${column} = ANY($${n})`,
  array: (values) => values,
  forUpdate: (of, skipLocked) => ` FOR UPDATE${of ? ` OF ${of}` : ''}${skipLocked ? ' SKIP LOCKED' : ''}`,
  lock: 'SELECT pg_advisory_xact_lock(hashtext($1))',
  isUniqueViolation: (e) => (e as { code?: string }).code === '23505',
  // The server's own refusals come as DatabaseError, rolled back; anything else is the connection.
  mayHaveCommitted: (e) => !(e instanceof pg.DatabaseError),
  refundOrder: 'seq',
  writableCte: true,
};

/** Statements as one: each but the last a WITH clause, their parameters numbered on. */
function oneStatement(statements: readonly Statement[]): Statement {
  const params: unknown[] = [];
  const parts = statements.map(([sql, p]) => {
    const offset = params.length;
    params.push(...p);
    return sql.replace(/\$(\d+)/g, (_, n: string) => `$${Number(n) + offset}`);
  });
  const last = parts.pop()!;
  return [parts.length ? `WITH ${parts.map((s, i) => `b${i} AS (${s})`).join(', ')} ${last}` : last, params];
}

// The ledger's statements are a fixed set: prepared once per connection (by name), PostgreSQL parses
// and plans each once instead of on every request. Texts past the cap (none today) go unnamed.
const NAMED_MAX = 512;
const names = new Map<string, string>();
let named = 0;
function nameOf(text: string): string | undefined {
  let name = names.get(text);
  if (name === undefined && names.size < NAMED_MAX) names.set(text, (name = `l${named++}`));
  return name;
}

/**
 * A newer gateway's migration widened a table this one reads whole (SELECT *): PostgreSQL refuses
 * the statement prepared before it. Prepared again under a new name, it reads the new shape.
 */
function stalePlan(e: unknown): boolean {
  return (e as { code?: string }).code === '0A000' && /cached plan/.test((e as Error).message);
}

function sql(q: pg.Pool | pg.PoolClient, inTransaction: boolean): Sql {
  const query = async (text: string, params: readonly unknown[] = []): Promise<Result> => {
    let r: pg.QueryResult;
    try {
      r = await q.query({ name: nameOf(text), text, values: params as unknown[] });
    } catch (e) {
      if (!stalePlan(e)) throw e;
      names.delete(text);
      // The transaction is aborted: transaction() runs it again.
      if (inTransaction) throw e;
      r = await q.query({ name: nameOf(text), text, values: params as unknown[] });
    }
    return { rows: r.rows as Row[], count: r.rowCount ?? 0 };
  };
  return {
    query,
    // One round trip however many statements.
    batch: async (statements) => {
      if (statements.length) await query(...oneStatement(statements));
    },
    exec: async (script) => {
      await q.query(script);
    },
  };
}

const ignore = () => {};

/** pg behind the ledger's driver: a pool, and a transaction on one of its clients. */
export class PostgresDriver implements Driver {
  readonly dialect = dialect;
  readonly #pool: pg.Pool;
  readonly #sql: Sql;

  constructor(url: string) {
    this.#pool = new pg.Pool({ connectionString: url, max: 20 });
    // A connection the server ended while idle in the pool (a restart, a failover, an operator's
    // pg_terminate_backend) is reported here, outside any statement; unheard, that error ended the
    // process. The pool drops the connection, and the next statement gets a new one.
    this.#pool.on('error', ignore);
    this.#sql = sql(this.#pool, false);
  }

  query(text: string, params?: readonly unknown[]): Promise<Result> {
    return this.#sql.query(text, params);
  }

  batch(statements: readonly Statement[]): Promise<void> {
    return this.#sql.batch(statements);
  }

  exec(script: string): Promise<void> {
    return this.#sql.exec(script);
  }

  /** Row locks, not grouping, keep PostgreSQL's transactions apart: each runs on its own. */
  async transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const c = await this.#pool.connect();
      // Its connection lost mid-transaction, a client reports that as an event too, besides
      // failing the statement: unheard, it ended the process.
      c.on('error', ignore);
      let broken: Error | undefined;
      try {
        await c.query('BEGIN');
        const out = await fn(sql(c, true));
        await c.query('COMMIT');
        return out;
      } catch (e) {
        // A connection that cannot even roll back is dropped, not put back in the pool.
        await c.query('ROLLBACK').catch((r: Error) => (broken = r));
        // Rolled back whole, so it may run again, each time with one more statement prepared anew.
        if (!(stalePlan(e) && attempt < 8)) throw e;
      } finally {
        c.off('error', ignore);
        c.release(broken);
      }
    }
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }
}
