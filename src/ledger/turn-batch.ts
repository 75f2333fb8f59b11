import type { Sql } from './driver.ts';

/**
 * Calls made in one event-loop turn, run together: `many` gets them all in the order made and
 * answers each (undefined: not done together, so `one` runs it on its own, as if it came alone);
 * a lone call, or a batch that failed as a whole, goes to `one` each. On PostgreSQL every
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
    let done: Array<R | undefined> = [];
    let failed = false;
    if (queue.length > 1) {
      // A statement is all or nothing: one that failed (a deadlock between two instances' batches,
      // say) wrote nothing, and each call is made again on its own; unless it did, and only the
      // answer was lost.
      done = await this.#many(queue.map((q) => q.arg)).catch(() => ((failed = true), []));
    }
    const taken = new Set(failed ? firstOfEach(queue.map((q) => q.arg), this.#id) : []);
    await Promise.all(
      queue.map(async (q, i) => {
        const r = done[i];
        if (r !== undefined) return q.resolve(r);
        try {
          q.resolve(await this.#one(q.arg, taken.has(q.arg)));
        } catch (e) {
          q.reject(e);
        }
      }),
    );
  }
}

/**
 * The calls a batch statement may take: each id once (a second call naming it is made on its own,
 * after the first, as it would have been).
 */
export function firstOfEach<A>(args: readonly A[], id: (a: A) => string): A[] {
  const seen = new Set<string>();
  return args.filter((a) => !seen.has(id(a)) && seen.add(id(a)));
}

/** What a batch statement answered for each of `args`, by the id its rows name, in their order; the others undefined. */
export async function byId<A, R>(
  db: Sql, sql: string, params: readonly unknown[], args: readonly A[], taken: readonly A[], id: (a: A) => string, of: (row: Record<string, unknown>) => R,
): Promise<Array<R | undefined>> {
  const rows = new Map((await db.query(sql, params)).rows.map((row) => [row.id as string, of(row)]));
  const first = new Set(taken);
  return args.map((a) => (first.has(a) ? rows.get(id(a)) : undefined));
}
