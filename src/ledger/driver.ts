import type { Row } from './rows.ts';

/** One statement with its parameters, `$1`… as PostgreSQL writes them. */
export type Statement = readonly [sql: string, params: readonly unknown[]];

export interface Result {
  rows: Row[];
  /** Rows the statement wrote, or returned when it only reads. */
  count: number;
}

/** What a ledger query runs against: the database, or one open transaction. */
export interface Sql {
  query(sql: string, params?: readonly unknown[]): Promise<Result>;
  /** Several statements, none reading another's effect nor writing a row another writes. */
  batch(statements: readonly Statement[]): Promise<void>;
  /** A script of statements without parameters (migrations). */
  exec(script: string): Promise<void>;
}

/** The few places the two engines' SQL differ. */
export interface Dialect {
  /** `column` is one of the values of the array parameter `$n` (bound with `array`). */
  anyOf(column: string, n: number): string;
  array(values: readonly unknown[]): unknown;
  /**
   * Row locks for a read that is about to be written back (passing over rows others hold, with
   * `skipLocked`); SQLite's write lock already covers it.
   */
  forUpdate(of?: string, skipLocked?: boolean): string;
  /** Takes the exclusive lock named `$1` until the transaction ends; undefined where the transaction is exclusive already. */
  lock: string | undefined;
  isUniqueViolation(e: unknown): boolean;
  /**
   * Whether a statement that threw `e` may still have committed: the server was not heard from
   * after it was sent (the connection dropped), so only its answer may be what was lost.
   */
  mayHaveCommitted(e: unknown): boolean;
  /** A column that grows with each refund inserted, whatever the clocks say. */
  refundOrder: string;
  /** Whether a WITH clause may write (PostgreSQL), so dependent writes can be one statement. */
  writableCte: boolean;
}

/** A database engine as the ledger uses it: queries, and transactions that run one at a time per row touched. */
export interface Driver extends Sql {
  readonly dialect: Dialect;
  /**
   * Runs `fn` in one transaction. `grouped` asks that it may share a transaction with other
   * grouped ones (the per-request writes), each still all or nothing.
   */
  transaction<T>(fn: (tx: Sql) => Promise<T>, grouped?: boolean): Promise<T>;
  close(): Promise<void>;
}
