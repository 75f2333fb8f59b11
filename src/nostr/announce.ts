import type { Logger } from 'pino';
import type { Event, EventTemplate } from 'nostr-tools/pure';
import type { ModelEntry } from '../engine/catalog.ts';
import { msatsPricing } from '../engine/pricing.ts';
import { JOB_REQUEST } from './nip90.ts';
import type { Relays } from './relays.ts';

/** Routstr's provider announcement (addressable). */
export const PROVIDER_ANNOUNCEMENT = 38421;
export const HANDLER_INFORMATION = 31990;
export const NUTZAP_INFO = 10019;

export interface AnnounceInput {
  name: string;
  about: string;
  version: string;
  pubkey: string;
  publicUrl?: string | undefined;
  mints: readonly string[];
  relays: readonly string[];
  /** Compressed key nutzaps must be locked to (NIP-61). */
  p2pkPubkey: string;
  models: ModelEntry[];
}

const msatsPerToken = (rate: number) => rate / 1e6;

/**
 * Routstr's discovery (`parse_provider_announcement`) drops a 38421 without a `u` tag, the URL
 * clients call: without PUBLIC_URL there is nothing to put there, so none is published.
 */
export const UNLISTED_WITHOUT_PUBLIC_URL =
  'PUBLIC_URL is not set: no Routstr provider announcement (kind 38421) is published, so Routstr clients will not list this gateway; Nostr jobs (NIP-90) still work';

/** The events that describe the gateway; pure, so what is published can be compared and tested. */
export function announcements(a: AnnounceInput): EventTemplate[] {
  const created_at = Math.floor(Date.now() / 1000);
  const d = a.pubkey.slice(0, 16);
  const prices = Object.fromEntries(
    // Every price a model has: per token (plain, cached, cache writes, output), per request, per image.
    a.models.map((m) => [m.id, msatsPricing(m.price)]),
  );
  return [
    { kind: 0, created_at, tags: [], content: JSON.stringify({ name: a.name, about: a.about, ...(a.publicUrl ? { website: a.publicUrl } : {}) }) },
    {
      kind: HANDLER_INFORMATION,
      created_at,
      tags: [['d', d], ['k', String(JOB_REQUEST)]],
      content: JSON.stringify({
        name: a.name,
        about: a.about,
        supportsEncryption: true,
        acceptsNutZaps: true,
        amount: 'flexible',
        pricing: { unit: 'msats', models: prices },
        nip90Params: {
          model: { required: false, values: a.models.map((m) => m.id) },
          max_tokens: { required: false, values: [] },
          temperature: { required: false, values: [] },
          top_p: { required: false, values: [] },
          top_k: { required: false, values: [] },
          frequency_penalty: { required: false, values: [] },
        },
      }),
    },
    ...(a.publicUrl ? [providerAnnouncement(a, a.publicUrl, created_at, d)] : []),
    {
      kind: NUTZAP_INFO,
      created_at,
      tags: [...a.relays.map((r) => ['relay', r]), ...a.mints.map((m) => ['mint', m, 'sat']), ['pubkey', a.p2pkPubkey]],
      content: '',
    },
  ];
}

function providerAnnouncement(a: AnnounceInput, publicUrl: string, created_at: number, d: string): EventTemplate {
  return {
    kind: PROVIDER_ANNOUNCEMENT,
    created_at,
    tags: [
      ['d', d],
      ['u', publicUrl],
      ...a.mints.map((m) => ['mint', m]),
      ['version', a.version],
      // Routstr carries no prices; one tag per model does: id, then msats per prompt/completion token.
      ...a.models.map((m) => ['model', m.id, String(msatsPerToken(m.price.promptRate)), String(msatsPerToken(m.price.completionRate))]),
    ],
    content: JSON.stringify({ name: a.name, about: a.about }),
  };
}

/** What makes two versions of an announcement the same: everything but time and signature. */
function fingerprint(e: Pick<Event, 'kind' | 'tags' | 'content'>): string {
  return JSON.stringify([e.kind, e.tags, e.content]);
}

/** Publishes the announcements at start-up and then daily, each only when it changed. */
export class Announcer {
  readonly #relays: Relays;
  readonly #log: Logger;
  readonly #published = new Map<number, string>();
  #timer: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(relays: Relays, log: Logger) {
    this.#relays = relays;
    this.#log = log;
  }

  /** Announcements no relay accepted at the last try; they are tried again soon. */
  unpublished = 0;

  /** Publishes what changed; resolves to how many events a relay accepted. */
  async announce(input: AnnounceInput): Promise<number> {
    const events = announcements(input);
    if (this.#published.size === 0) {
      // After a restart, what the relays already hold counts as published.
      const existing = await this.#relays.query({ authors: [input.pubkey], kinds: events.map((e) => e.kind) });
      for (const e of existing.sort((x, y) => x.created_at - y.created_at)) this.#published.set(e.kind, fingerprint(e));
    }
    let count = 0;
    let missing = 0;
    for (const t of events) {
      const f = fingerprint(t);
      if (this.#published.get(t.kind) === f) continue;
      const { accepted } = await this.#relays.publish(t);
      if (!accepted) {
        missing++;
        continue;
      }
      this.#published.set(t.kind, f);
      count++;
    }
    this.unpublished = missing;
    if (count) this.#log.info({ count }, 'published Nostr announcements');
    return count;
  }

  start(input: () => AnnounceInput, everyMs = 24 * 3600 * 1000, retryMs = 60_000): void {
    const run = () =>
      void this.announce(input())
        .catch((e: Error) => this.#log.warn({ err: e.message }, 'announcement failed'))
        .then(() => {
          // What no relay took is tried again soon rather than tomorrow.
          if (this.unpublished === 0 || this.#stopped) return;
          clearTimeout(this.#retry);
          this.#retry = setTimeout(run, retryMs);
          this.#retry.unref();
        });
    run();
    this.#timer = setInterval(run, everyMs);
    this.#timer.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    clearTimeout(this.#retry);
  }
}
