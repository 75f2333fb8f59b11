import { SimplePool } from 'nostr-tools/pool';
import { finalizeEvent, generateSecretKey, getPublicKey, type Event, type EventTemplate } from 'nostr-tools/pure';
import type { Filter } from 'nostr-tools/filter';
import { getTokenMetadata } from '@cashu/cashu-ts';
import { wallet } from './cashu.ts';

export const tag = (e: Event, name: string) => e.tags.find((t) => t[0] === name);

/** A Nostr requester written with nostr-tools: its own key, a pool, and the NIP-90 waits a client does. */
export class Requester {
  readonly sk = generateSecretKey();
  readonly pubkey = getPublicKey(this.sk);
  readonly pool = new SimplePool();
  urls: string[];

  constructor(urls: string[]) {
    this.urls = urls;
  }

  /** Signs and sends; resolves once every relay answered (accepted or not). */
  async publish(t: EventTemplate | Event, to = this.urls): Promise<Event> {
    const e = 'sig' in t ? t : finalizeEvent(t, this.sk);
    await Promise.allSettled(this.pool.publish(to, e));
    return e;
  }

  job(gateway: string, tags: string[][], content = ''): EventTemplate {
    return { kind: 5050, created_at: Math.floor(Date.now() / 1000), tags: [['p', gateway], ...tags], content };
  }

  /** The first event matching the filter (and predicate) on our relays. */
  waitFor(filter: Filter, predicate: (e: Event) => boolean = () => true, ms = 15_000, urls = this.urls): Promise<Event> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        sub.close();
        reject(new Error(`no event matching ${JSON.stringify(filter)} within ${ms} ms`));
      }, ms);
      const sub = this.pool.subscribe(urls, filter, {
        onevent: (e) => {
          if (!predicate(e)) return;
          clearTimeout(timer);
          sub.close();
          resolve(e);
        },
      });
    });
  }

  feedback(requestId: string, status: string, ms?: number, predicate: (e: Event) => boolean = () => true): Promise<Event> {
    return this.waitFor({ kinds: [7000], '#e': [requestId] }, (e) => tag(e, 'status')?.[1] === status && predicate(e), ms);
  }

  result(requestId: string, ms?: number, urls?: string[]): Promise<Event> {
    return this.waitFor({ kinds: [6050], '#e': [requestId] }, () => true, ms, urls);
  }

  /** Spends ecash locked to our key at the mint, as only we can; returns what it was worth. */
  async spendLocked(mintUrl: string, token: string): Promise<number> {
    const w = await wallet(mintUrl, getTokenMetadata(token).unit ?? 'sat');
    const proofs = await w.receive(token, { privkey: Buffer.from(this.sk).toString('hex') });
    return proofs.reduce((s, p) => s + p.amount.toNumber(), 0);
  }

  close(): void {
    this.pool.destroy();
  }
}
