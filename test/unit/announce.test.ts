import { describe, expect, it } from 'vitest';
import type { ModelEntry } from '../../src/engine/catalog.ts';
import { announcements, type AnnounceInput } from '../../src/nostr/announce.ts';

const model = (id: string, price: Partial<ModelEntry['price']>): ModelEntry => ({
  id,
  created: 0,
  ownedBy: 'test',
  upstreams: [],
  price: { promptRate: 1_000_000, completionRate: 2_000_000, maxCompletionTokens: 4096, contextLength: 32_768, ...price },
});

const pubkey = 'a1b2c3d4e5f60718'.repeat(4);
const input = (over: Partial<AnnounceInput> = {}): AnnounceInput => ({
  name: 'Gate',
  about: 'LLMs for ecash',
  version: '1.2.3',
  pubkey,
  publicUrl: 'https://gate.example',
  mints: ['https://mint.a', 'https://mint.b'],
  relays: ['wss://r1.example', 'wss://r2.example'],
  p2pkPubkey: `02${'cd'.repeat(32)}`,
  // 1.5 msats per prompt token and 3 per completion token; 0.25 per cached token, 2 per cache write,
  // 21 per request and 500 per image.
  models: [
    model('cheap', { promptRate: 1_500_000, completionRate: 3_000_000 }),
    model('rich', { promptRate: 250_000, completionRate: 8_000_000, cachedRate: 250_000, cacheWriteRate: 2_000_000, requestFee: 21_000_000, imageFee: 500_000_000 }),
  ],
  ...over,
});

const byKind = (a: AnnounceInput) => new Map(announcements(a).map((e) => [e.kind, e]));

describe('announcements', () => {
  it('publishes a profile, a NIP-89 handler, a Routstr provider announcement and the NIP-61 nutzap info, in that order', () => {
    const events = announcements(input());
    expect(events.map((e) => e.kind)).toStrictEqual([0, 31990, 38421, 10019]);
    // One moment for all, so that they compare as one version.
    expect(new Set(events.map((e) => e.created_at)).size).toBe(1);
  });

  it('names the gateway and its website in the profile', () => {
    expect(JSON.parse(byKind(input()).get(0)!.content)).toStrictEqual({ name: 'Gate', about: 'LLMs for ecash', website: 'https://gate.example' });
    expect(JSON.parse(byKind(input({ publicUrl: undefined })).get(0)!.content)).toStrictEqual({ name: 'Gate', about: 'LLMs for ecash' });
  });

  it('announces kind 5050 jobs with every price of every model in msats, and the parameters a job may set', () => {
    const handler = byKind(input()).get(31990)!;
    expect(handler.tags).toStrictEqual([['d', 'a1b2c3d4e5f60718'], ['k', '5050']]);
    const content = JSON.parse(handler.content);
    expect(content).toMatchObject({ name: 'Gate', about: 'LLMs for ecash', supportsEncryption: true, acceptsNutZaps: true, amount: 'flexible' });
    expect(content.pricing).toStrictEqual({
      unit: 'msats',
      models: {
        cheap: { prompt_msats_per_token: 1.5, completion_msats_per_token: 3, cached_prompt_msats_per_token: 1.5, cache_write_msats_per_token: 1.5, request_msats: 0, image_msats: 0 },
        rich: { prompt_msats_per_token: 0.25, completion_msats_per_token: 8, cached_prompt_msats_per_token: 0.25, cache_write_msats_per_token: 2, request_msats: 21, image_msats: 500 },
      },
    });
    expect(Object.keys(content.nip90Params)).toStrictEqual(['model', 'max_tokens', 'temperature', 'top_p', 'top_k', 'frequency_penalty']);
    expect(content.nip90Params.model).toStrictEqual({ required: false, values: ['cheap', 'rich'] });
  });

  it("gives Routstr the URL, the mints, the version and each model's per-token prices", () => {
    const provider = byKind(input()).get(38421)!;
    expect(provider.tags).toStrictEqual([
      ['d', 'a1b2c3d4e5f60718'],
      ['u', 'https://gate.example'],
      ['mint', 'https://mint.a'],
      ['mint', 'https://mint.b'],
      ['version', '1.2.3'],
      ['model', 'cheap', '1.5', '3'],
      ['model', 'rich', '0.25', '8'],
    ]);
    expect(JSON.parse(provider.content)).toStrictEqual({ name: 'Gate', about: 'LLMs for ecash' });
  });

  it('publishes no provider announcement without a public URL: Routstr drops one without a u tag', () => {
    expect(announcements(input({ publicUrl: undefined })).map((e) => e.kind)).toStrictEqual([0, 31990, 10019]);
  });

  it('tells nutzappers the relays, the mints (in sats) and the key to lock to', () => {
    const info = byKind(input()).get(10019)!;
    expect(info.tags).toStrictEqual([
      ['relay', 'wss://r1.example'],
      ['relay', 'wss://r2.example'],
      ['mint', 'https://mint.a', 'sat'],
      ['mint', 'https://mint.b', 'sat'],
      ['pubkey', `02${'cd'.repeat(32)}`],
    ]);
    expect(info.content).toBe('');
  });

  it('changes only with what it describes: the same input gives the same tags and content', () => {
    const strip = (a: AnnounceInput) => announcements(a).map((e) => [e.kind, e.tags, e.content]);
    expect(strip(input())).toStrictEqual(strip(input()));
    expect(strip(input({ version: '1.2.4' }))).not.toStrictEqual(strip(input()));
  });
});
