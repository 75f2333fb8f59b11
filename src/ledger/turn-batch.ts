import type { Sql } from './driver.ts';

/**
 * Calls made in one event-loop turn, run together: `many` gets them all in the order made and
 * answers each (undefined: not done together, so `one` runs it on its own, as if it came alone);
 * a lone call, or a batch that failed as a whole, goes to `one` each. `many` is given each id once. On PostgreSQL every
 * statement is a write to its socket and a wake-up of a server process; under load those were a
 * third of the gateway's CPU, one per request's reserve and settle.
 *
 * A batch whose client saw an error may still have committed (the connection dropped after the
 * server did): `one` is then told `again` for the first call of each `id`, which the batch took.
 */
export class TurnBatch<A, R> {
  readonly #one: (arg: A, again: boolean) => Promise<R>;
  readonly #many: (args: readonly A[]) => Promise<Array<R | undefined>>;
  readonly #id: (a: A) => string;
  #queue: Array<{ arg: A; resolve: (r: R) => void; reject: (e: unknown) => void }> = [];
  readonly #running = new Set<Promise<void>>();

  constructor(one: (arg: A, again: boolean) => Promise<R>, many: (args: readonly A[]) => Promise<Array<R | undefined>>, id: (a: A) => string) {
    this.#one = one;
    this.#many = many;
    this.#id = id;
  }

  push(arg: A): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      if (this.#queue.length === 0) {
        setImmediate(() => {
          const run = this.#flush();
          this.#running.add(run);
          void run.finally(() => this.#running.delete(run));
        });
      }
      this.#queue.push({ arg, resolve, reject });
    });
  }

  /** Resolves once every call made so far has been answered. */
  async drain(): Promise<void> {
    while (this.#queue.length || this.#running.size) await Promise.all([...this.#running, new Promise((r) => setImmediate(r))]);
  }

  async #flush(): Promise<void> {
    const queue = this.#queue;
    this.#queue = [];
    // Each id goes in once: a second call naming it is made on its own, after the first, as it
    // would have been.
    const seen = new Set<string>();
    const first = queue.filter((q) => !seen.has(this.#id(q.arg)) && seen.add(this.#id(q.arg)));
    const done = new Map<(typeof queue)[number], R>();
    let failed = false;
    if (queue.length > 1) {
      // A statement is all or nothing: one that failed (a deadlock between two instances' batches,
      // say) wrote nothing, and each call is made again on its own; unless it did, and only the
      // answer was lost.
      try {
        const answers = await this.#many(first.map((q) => q.arg));
        first.forEach((q, i) => answers[i] !== undefined && done.set(q, answers[i]!));
      } catch {
        failed = true;
      }
    }
    const taken = new Set(failed ? first : []);
    await Promise.all(
      queue.map(async (q) => {
        if (done.has(q)) return q.resolve(done.get(q)!);
        try {
          q.resolve(await this.#one(q.arg, taken.has(q)));
        } catch (e) {
          q.reject(e);
        }
      }),
    );
  }
}

/** What a batch statement answered for each of `args`, by the id its rows name, in their order; the others undefined. */
export async function byId<A, R>(db: Sql, sql: string, params: readonly unknown[], args: readonly A[], id: (a: A) => string, of: (row: Record<string, unknown>) => R): Promise<Array<R | undefined>> {
  const rows = new Map((await db.query(sql, params)).rows.map((row) => [row.id as string, of(row)]));
  return args.map((a) => rows.get(id(a)));
}
