import { describe, expect, it } from 'vitest';
import { REPLY_WORDS } from './support/upstream.ts';
import { PRICES, msats } from './support/gateway.ts';
import { mintToken } from './support/cashu.ts';
import { bearer, chat as chatAs, fundedKey as funded, useGateway, waitFor } from './support/suite.ts';

/**
 * An upstream whose usage is not to be believed: far more than was reserved, negative, huge,
 * not a number, or under other field names. The charge is min(cost, reservation + free balance)
 * to the msat, and another request's reservation on the same key stays whole.
 */
const price = PRICES['gpt-test'];
const suite = useGateway({
  env: { MODEL_PRICES: JSON.stringify({ ...PRICES, 'gpt-test': { ...price, max_completion_tokens: 100 } }) },
  reset: () => {
    upstream.modes.length = 0;
    upstream.usageOverrides.length = 0;
  },
});
const { upstream } = suite;

const fundedKey = (sats: number) => funded(suite.gw, suite.mintUrl, sats);
const chat = (key: string) => chatAs(suite.gw, bearer(key), { max_tokens: 10 });

/** A slow stream on `key`, once it has reached the upstream (its usage is decided) and holds its reservation. */
async function holdingStream(key: string, hash: string): Promise<{ streaming: Promise<Response>; held: number }> {
  upstream.chunkDelayMs = 30;
  const asked = upstream.requests.length;
  const streaming = chatAs(suite.gw, bearer(key), { messages: [{ role: 'user', content: 'Tell me slowly.' }], max_tokens: 10, stream: true });
  const held = await waitFor(async () => (upstream.requests.length > asked && (await suite.gw.ledger.getKey(hash))!.reserved) || undefined, 'the stream holding its reservation');
  return { streaming, held };
}

describe('usage far beyond the reservation', () => {
  it('charges at most the reservation plus the free balance, and leaves a concurrent reservation whole', async () => {
    const { key, hash } = await fundedKey(20);
    // A stream that holds its reservation while the other request settles.
    const { streaming, held } = await holdingStream(key, hash);
    upstream.usageOverrides.push({ prompt_tokens: 100_000, completion_tokens: 100_000 });
    const before = (await suite.gw.ledger.getKey(hash))!;
    const res = await chat(key);
    expect(res.status).toBe(200);
    const after = (await suite.gw.ledger.getKey(hash))!;
    // Everything the key could spend without touching the stream's reservation, and no more.
    expect(before.balance - after.balance).toBe(before.balance - held);
    expect(after.reserved).toBe(held);
    upstream.chunkDelayMs = 0;
    await (await streaming).text();
    const end = (await suite.gw.ledger.getKey(hash))!;
    expect(end.reserved).toBe(0);
  });

  it('charges a cost beyond the reservation in full, to the msat, when the free balance covers it', async () => {
    const { key, hash } = await fundedKey(50);
    const { streaming, held } = await holdingStream(key, hash);
    // Ten times the completion the request was allowed, and a prompt far longer than "Hi".
    upstream.usageOverrides.push({ prompt_tokens: 100, completion_tokens: 100 });
    const cost = msats(100, price.prompt) + msats(100, price.completion);
    const before = (await suite.gw.ledger.getKey(hash))!;
    expect(before.balance - held).toBeGreaterThan(cost);
    expect((await chat(key)).status).toBe(200);
    const after = (await suite.gw.ledger.getKey(hash))!;
    expect([before.balance - after.balance, after.totalSpent - before.totalSpent, after.reserved]).toEqual([cost, cost, held]);
    upstream.chunkDelayMs = 0;
    await (await streaming).text();
    expect((await suite.gw.ledger.getKey(hash))!.reserved).toBe(0);
  });
  it('charges an X-Cashu payer at most the token, with no change, whatever the usage says', async () => {
    const token = await mintToken(suite.mintUrl, 2);
    const before = await suite.gw.ledger.totals();
    upstream.usageOverrides.push({ prompt_tokens: 100_000, completion_tokens: 100_000 });
    const res = await chatAs(suite.gw, { 'x-cashu': token }, { max_tokens: 10 });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-cashu')).toBeNull();
    const after = await suite.gw.ledger.totals();
    expect([after.credited - before.credited, after.charged - before.charged, after.refunded - before.refunded]).toEqual([2000, 2000, 0]);
  });
});

describe('usage no upstream could mean', () => {
  const counted = msats(REPLY_WORDS.length, price.completion);
  for (const [name, usage] of [
    ['negative', { prompt_tokens: -5, completion_tokens: -100 }],
    ['huge', { prompt_tokens: 1e12, completion_tokens: 1e12 }],
    ['not a number', { prompt_tokens: '7', completion_tokens: 'lots' }],
    ['NaN', { prompt_tokens: Number.NaN, completion_tokens: 3 }],
  ] as const) {
    it(`is ignored when ${name}: the gateway counts the prompt and the reply itself`, async () => {
      const { key, hash } = await fundedKey(50);
      upstream.usageOverrides.push(usage as unknown as Record<string, unknown>);
      const res = await chat(key);
      expect(res.status).toBe(200);
      const spent = (await suite.gw.ledger.getKey(hash))!.totalSpent;
      // The reply is ten one-word tokens; the prompt is "Hi" plus chat framing, a handful of tokens.
      expect(spent).toBeGreaterThanOrEqual(counted + msats(1, price.prompt));
      expect(spent).toBeLessThanOrEqual(counted + msats(20, price.prompt));
    });
  }

  it('is counted at most up to the limit the upstream was held to, whatever the tokenizer makes of the text', async () => {
    const { key, hash } = await fundedKey(50);
    // An answer of SSE-looking text (tens of tokens to cl100k) with usage not to be believed, on a 2-token limit.
    upstream.modes.push('inject');
    upstream.usageOverrides.push({ prompt_tokens: -1, completion_tokens: -1 });
    const res = await chatAs(suite.gw, bearer(key), { max_tokens: 2 });
    expect(res.status).toBe(200);
    const spent = (await suite.gw.ledger.getKey(hash))!.totalSpent;
    expect(spent).toBeGreaterThanOrEqual(msats(2, price.completion) + msats(1, price.prompt));
    expect(spent).toBeLessThanOrEqual(msats(2, price.completion) + msats(20, price.prompt));
  });

  it('is read under the input_tokens / output_tokens names some upstreams use', async () => {
    const { key, hash } = await fundedKey(50);
    upstream.usageOverrides.push({ input_tokens: 40, output_tokens: 7 });
    expect((await chat(key)).status).toBe(200);
    expect((await suite.gw.ledger.getKey(hash))!.totalSpent).toBe(msats(40, price.prompt) + msats(7, price.completion));
  });
});
