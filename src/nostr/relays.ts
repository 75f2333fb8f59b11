import type { Logger } from 'pino';
import { SimplePool } from 'nostr-tools/pool';
import { finalizeEvent, type Event, type EventTemplate, type VerifiedEvent } from 'nostr-tools/pure';
import type { Filter } from 'nostr-tools/filter';
import { minePow } from 'nostr-tools/nip13';
import type { SubCloser } from 'nostr-tools/abstract-pool';
import type { Identity } from './identity.ts';

/** Highest NIP-13 difficulty mined when configured (NOSTR_POW_BITS): synchronous work. */
const MAX_POW = 24;
/**
 * Highest difficulty mined because a relay refused an event for lack of it: about a second of
 * blocking work. More would let one relay stall the whole process on every event.
 */
const MAX_POW_ON_REFUSAL = 20;
/** How long to wait before asking a relay again after it ended a subscription, doubling up to the last. */
const RESUBSCRIBE_MS = [1000, 2000, 5000, 15_000, 60_000];

export interface Published {
  /** The event as sent last: with NIP-13 work done if a relay demanded it. */
  event: Event;
  /** Whether at least one relay stored it (or already had it). */
  accepted: boolean;
}

interface Outcome {
  url: string;
  ok: boolean;
  reason: string;
}

/** The difficulty a relay's refusal demands: NIP-01's "pow: difficulty 25>=30", or "rejected: 20 PoW required". */
export function demandedPow(reason: string): number | undefined {
  const required = /(\d+)\s*PoW required/i.exec(reason);
  if (required) return Number(required[1]);
  const prefixed = /^pow:(.*)/i.exec(reason);
  if (!prefixed) return undefined;
  // The demanded difficulty is the largest number said: "difficulty 12 is less than 20" demands 20.
  const numbers = prefixed[1]!.match(/\d+/g)?.map(Number) ?? [];
  return numbers.length ? Math.max(...numbers) : undefined;
}

/**
 * The gateway's relays. A relay that is down, refuses, or misbehaves never blocks anything and
 * never ends the process: the pool reconnects with backoff, a subscription a relay ended is asked
 * for again, NIP-42 AUTH is answered when a relay refuses for lack of it, and NIP-13 work is mined
 * when a relay refuses an event for lack of it.
 */
export class Relays {
  readonly urls: string[];
  readonly #pool: SimplePool;
  readonly #id: Identity;
  readonly #log: Logger;
  readonly #powBits: number;
  /** Difficulty each relay has demanded so far, so later events are mined before they are sent. */
  readonly #learnedPow = new Map<string, number>();
  /**
   * NIP-42: signs the relay's challenge when it refuses a REQ or an EVENT with `auth-required:`.
   * Never installed as the pool's `automaticallyAuth`: nostr-tools rethrows a challenge answer the
   * relay never OKs from a promise nobody awaits, which ends a Node process.
   */
  readonly #onauth: (t: EventTemplate) => Promise<VerifiedEvent>;

  /** `powBits`: NIP-13 work done on every event up front, for relays known to demand it. */
  constructor(urls: string[], id: Identity, log: Logger, powBits = 0) {
    this.urls = urls;
    this.#id = id;
    this.#log = log;
    this.#powBits = Math.min(powBits, MAX_POW);
    this.#pool = new SimplePool({ enablePing: true, enableReconnect: true });
    this.#onauth = async (t) => finalizeEvent(t, id.sk);
  }

  sign(t: EventTemplate, powBits = this.#powBits): Event {
    if (powBits > 0) return finalizeEvent(minePow({ ...t, pubkey: this.#id.pubkey }, powBits), this.#id.sk);
    return finalizeEvent(t, this.#id.sk);
  }

  /**
   * Publishes to every relay (plus `extra`). An unsigned template that a relay refuses for lack of
   * proof of work is mined to the demanded difficulty and sent again to the relays that refused it.
   */
  async publish(t: EventTemplate | Event, extra: string[] = []): Promise<Published> {
    // Decided before signing: finalizeEvent adds `sig` to the template it is given.
    const signed = 'sig' in t;
    const urls = [...new Set([...this.urls, ...extra])];
    const known = Math.max(this.#powBits, ...urls.map((u) => this.#learnedPow.get(u) ?? 0));
    let event = signed ? t : this.sign({ ...t }, known);
    let outcomes = await this.#send(urls, event);
    // Work is done only for the operator's relays: a relay named in a stranger's job could
    // otherwise have us mine for every event we send it.
    const demands = outcomes.flatMap((o) => {
      const d = o.ok || !this.urls.includes(o.url) ? undefined : demandedPow(o.reason);
      return d === undefined || d <= known ? [] : [{ url: o.url, difficulty: d }];
    });
    if (demands.length > 0 && !signed) {
      const difficulty = Math.max(...demands.map((d) => d.difficulty));
      if (difficulty > MAX_POW_ON_REFUSAL) {
        this.#log.warn({ kind: t.kind, relays: demands.map((d) => d.url), difficulty, max: MAX_POW_ON_REFUSAL }, 'a relay demands more proof of work than we mine on refusal; set NOSTR_POW_BITS or drop the relay');
      } else {
        for (const d of demands) this.#learnedPow.set(d.url, d.difficulty);
        event = this.sign({ ...t }, difficulty);
        const again = await this.#send(demands.map((d) => d.url), event);
        outcomes = [...outcomes.filter((o) => !demands.some((d) => d.url === o.url)), ...again];
      }
    }
    const accepted = outcomes.some((o) => o.ok);
    if (!accepted) this.#log.warn({ kind: event.kind, event: event.id, refused: outcomes.map((o) => `${o.url}: ${o.reason}`) }, 'no relay accepted the event');
    return { event, accepted };
  }

  async #send(urls: string[], event: Event): Promise<Outcome[]> {
    const results = await Promise.allSettled(this.#pool.publish(urls, event, { onauth: this.#onauth }));
    return results.map((r, i) => {
      if (r.status === 'fulfilled') return { url: urls[i]!, ok: true, reason: String(r.value ?? '') };
      const reason = String((r.reason as Error | undefined)?.message ?? r.reason);
      // A relay that already has it has it.
      return { url: urls[i]!, ok: /^duplicate:/.test(reason), reason };
    });
  }

  /**
   * One subscription per relay, so that one relay ending it (after a refused AUTH, a restart, a
   * limit) only costs that relay, and it is asked again with backoff. An event can arrive once per
   * relay: callers deduplicate by id (after signature checks, never before).
   */
  subscribe(filter: Filter, onevent: (e: Event) => void): SubCloser {
    let closed = false;
    const subs = new Map<string, SubCloser>();
    const timers = new Set<NodeJS.Timeout>();
    const open = (url: string, attempt: number) => {
      if (closed) return;
      const openedAt = Date.now();
      subs.set(
        url,
        this.#pool.subscribe([url], filter, {
          onevent,
          onauth: this.#onauth,
          onclose: (reasons) => {
            if (closed) return;
            // A subscription that lived a while earned a fresh start of the backoff.
            const next = Date.now() - openedAt > 60_000 ? 0 : attempt + 1;
            const wait = RESUBSCRIBE_MS[Math.min(next, RESUBSCRIBE_MS.length - 1)]!;
            this.#log.warn({ relay: url, reason: reasons.map((r) => r.reason).join('; '), retryMs: wait }, 'relay ended a subscription');
            const timer = setTimeout(() => {
              timers.delete(timer);
              open(url, next);
            }, wait);
            timer.unref();
            timers.add(timer);
          },
        }),
      );
    };
    for (const url of this.urls) open(url, 0);
    return {
      close: (reason?: string) => {
        closed = true;
        for (const t of timers) clearTimeout(t);
        for (const s of subs.values()) s.close(reason);
      },
    };
  }

  /** Stored events matching the filter, from every relay that answers within `maxWait`. */
  query(filter: Filter, maxWait = 3000): Promise<Event[]> {
    return new Promise((resolve) => {
      const events: Event[] = [];
      this.#pool.subscribeEose(this.urls, filter, { maxWait, onauth: this.#onauth, onevent: (e) => events.push(e), onclose: () => resolve(events) });
    });
  }

  close(): void {
    this.#pool.destroy();
  }
}
