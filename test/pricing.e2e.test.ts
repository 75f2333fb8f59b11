import { describe, expect, inject, it } from 'vitest';
import OpenAI from 'openai';
import { FakeUpstream, REPLY_WORDS, upstreamPromptTokens } from './support/upstream.ts';
import { bearer, chat, useGateway } from './support/suite.ts';
import { mintToken } from './support/cashu.ts';

/** Prices for what providers bill: cache reads and writes, per-request and per-image fees. */
const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();

// msats per token, and per request / per image.
const PRICE = { prompt: 4, completion: 10, cached: 0.4, write: 5, request: 50, image: 300 };

const suite = useGateway({
  upstream,
  upstreams: [{ name: 'priced', upstream, models: ['gpt-cached'], allow_parameters: ['plugins'], prices: { 'gpt-cached': PRICE } }],
  reset: () => (upstream.cachedTokens = 0),
  // Request and image fees and cache rates are beyond a per-token ceiling: the tests check each charge themselves.
  prices: null,
});

const ceil = (tokens: number, msatsPerToken: number) => Math.ceil((tokens * Math.round(msatsPerToken * 1e6)) / 1e6);

describe('a model priced for cached input, per request and per image', () => {
  it('bills cached prompt tokens at their price, to the msat, and shows every price in /v1/models', async () => {
    const models = (await (await fetch(`${suite.gw.url}/v1/models`)).json()) as { data: Array<Record<string, any>> };
    const m = models.data.find((x) => x.id === 'gpt-cached')!;
    expect(m.msats_pricing).toEqual({
      prompt_msats_per_token: 4,
      completion_msats_per_token: 10,
      cached_prompt_msats_per_token: 0.4,
      cache_write_msats_per_token: 5,
      request_msats: 50,
      image_msats: 300,
    });
    expect(m.sats_pricing).toMatchObject({ prompt: 0.004, completion: 0.01, input_cache_read: 0.0004, input_cache_write: 0.005, request: 0.05, image: 0.3 });

    const token = await mintToken(mintUrl, 300);
    const client = new OpenAI({ baseURL: `${suite.gw.url}/v1`, apiKey: token, maxRetries: 0 });
    const messages = [{ role: 'user' as const, content: 'The same long system context as last time, then a question.' }];
    upstream.cachedTokens = 9;
    const res = await client.chat.completions.create({ model: 'gpt-cached', messages, max_tokens: 10 });
    const prompt = upstreamPromptTokens(upstream.requests.at(-1)!.body);
    expect(res.usage).toMatchObject({ prompt_tokens: prompt, prompt_tokens_details: { cached_tokens: 9 } });
    // Hand-computed from the usage the upstream reported: 9 cached, the rest plain, plus the request fee.
    const input = ceil(prompt - 9, PRICE.prompt) + ceil(9, PRICE.cached);
    const output = ceil(REPLY_WORDS.length, PRICE.completion);
    expect((res.usage as unknown as { cost: Record<string, number> }).cost).toEqual({ base_msats: 50, input_msats: input, output_msats: output, total_msats: input + output + 50 });
  });

  it('adds the per-image fee for each image in the prompt', async () => {
    const token = await mintToken(mintUrl, 300);
    const client = new OpenAI({ baseURL: `${suite.gw.url}/v1`, apiKey: token, maxRetries: 0 });
    const image = { type: 'image_url' as const, image_url: { url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'low' as const } };
    const res = await client.chat.completions.create({
      model: 'gpt-cached',
      max_tokens: 10,
      messages: [{ role: 'user', content: [{ type: 'text', text: 'Compare these.' }, image, image] }],
    });
    const prompt = upstreamPromptTokens(upstream.requests.at(-1)!.body);
    const input = ceil(prompt, PRICE.prompt) + 2 * PRICE.image;
    const output = ceil(REPLY_WORDS.length, PRICE.completion);
    expect((res.usage as unknown as { cost: Record<string, number> }).cost).toEqual({ base_msats: 50, input_msats: input, output_msats: output, total_msats: input + output + 50 });
  });

  it('lets through a cost-bearing parameter the operator allowed for this upstream', async () => {
    const token = await mintToken(mintUrl, 300);
    const res = await chat(suite.gw, bearer(token), { model: 'gpt-cached', messages: [{ role: 'user', content: 'Search.' }], max_tokens: 5, plugins: [{ id: 'web' }] });
    expect(res.status).toBe(200);
    expect(upstream.requests.at(-1)!.body.plugins).toEqual([{ id: 'web' }]);
  });
});
