import type { Logger } from 'pino';
import { SimplePool } from 'nostr-tools/pool';
import { finalizeEvent, type Event, type EventTemplate } from 'nostr-tools/pure';
import type { Filter } from 'nostr-tools/filter';
import { minePow } from 'nostr-tools/nip13';
import type { SubCloser } from 'nostr-tools/abstract-pool';
import type { Identity } from './identity.ts';

/** Highest NIP-13 difficulty we will mine for a relay that demands it (synchronous work). */
const MAX_POW = 24;

/**
 * The gateway's relays. A relay that is down never blocks anything: the pool reconnects with
 * backoff and resubscribes; relays that demand NIP-42 auth get it, and NIP-13 proof of work is
 * mined when a relay rejects an event for lack of it.
 */
export class Relays {
  readonly urls: string[];
  readonly #pool: SimplePool;
  readonly #id: Identity;
  readonly #log: Logger;
  readonly #powBits: number;

  /** `powBits`: NIP-13 work done on every event up front, for relays known to demand it. */
  constructor(urls: string[], id: Identity, log: Logger, powBits = 0) {
    this.urls = urls;
    this.#id = id;
    this.#log = log;
    this.#powBits = Math.min(powBits, MAX_POW);
    this.#pool = new SimplePool({ enablePing: true, enableReconnect: true });
    this.#pool.automaticallyAuth = (url) => async (tmpl) => finalizeEvent(tmpl, id.sk);
  }

  sign(t: EventTemplate): Event {
    if (this.#powBits > 0) return finalizeEvent(minePow({ ...t, pubkey: this.#id.pubkey }, this.#powBits), this.#id.sk);
    return finalizeEvent(t, this.#id.sk);
  }

  /** Publishes to every relay (plus `extra`); resolves when at least one accepted it. */
  async publish(t: EventTemplate | Event, extra: string[] = []): Promise<Event> {
    let event = 'sig' in t ? t : this.sign(t);
    const urls = [...new Set([...this.urls, ...extra])];
    const results = await Promise.allSettled(this.#pool.publish(urls, event));
    const refused = results.flatMap((r, i) => (r.status === 'rejected' ? [{ url: urls[i]!, reason: String(r.reason?.message ?? r.reason) }] : []));
    // NIP-01's "pow: difficulty 20", or the "rejected: 20 PoW required" some relays send.
    const pow = refused.map((r) => /pow:\D*(\d+)|(\d+) PoW required/i.exec(r.reason)).find((m) => m);
    if (pow && !('sig' in t)) {
      const difficulty = Math.min(Number(pow[1] ?? pow[2]), MAX_POW);
      event = finalizeEvent(minePow({ ...t, pubkey: this.#id.pubkey }, difficulty), this.#id.sk);
      await Promise.allSettled(this.#pool.publish(refused.map((r) => r.url), event));
    }
    // Nothing to do when a relay already has it.
    const accepted = results.some((r) => r.status === 'fulfilled') || refused.some((r) => /duplicate/.test(r.reason));
    if (!accepted && !pow) this.#log.warn({ kind: event.kind, refused: refused.map((r) => `${r.url}: ${r.reason}`) }, 'no relay took the event');
    return event;
  }

  subscribe(filter: Filter, onevent: (e: Event) => void): SubCloser {
    return this.#pool.subscribe(this.urls, filter, { onevent });
  }

  query(filter: Filter, maxWait = 3000): Promise<Event[]> {
    return this.#pool.querySync(this.urls, filter, { maxWait });
  }

  close(): void {
    this.#pool.destroy();
  }
}
