import { describe, expect, it } from 'vitest';
import { FakeUpstream, upstreamPromptTokens } from './support/upstream.ts';
import { FakeResponsesUpstream } from './support/responses-upstream.ts';
import { ANTHROPIC_KEY, FakeAnthropic } from './support/anthropic-upstream.ts';
import { msats } from './support/gateway.ts';
import { mintToken, receive } from './support/cashu.ts';
import { bearer, settledSpend, useGateway } from './support/suite.ts';
import { sha256Hex } from '../src/cashu/credential.ts';

/**
 * An upstream whose stream breaks part-way (its socket destroyed, the client still there): the
 * client got part of the answer and the upstream bills the operator for it, so the client pays
 * the prompt and the output it was sent, counted, within what was reserved. A break before any
 * of the answer was sent charges nothing. Either way the client gets the door's own error ending.
 */
const chatUp = new FakeUpstream();
const resp = new FakeResponsesUpstream();
const claude = new FakeAnthropic();

// msats per token.
const GPT = { prompt: 2, completion: 5 };
const RESP = { prompt: 2, completion: 8 };
const CLAUDE = { prompt: 3, completion: 15 };

const suite = useGateway({
  upstream: chatUp,
  doubles: [resp, claude],
  upstreams: [
    { name: 'chat', upstream: chatUp, models: ['gpt-test'], prices: { 'gpt-test': GPT } },
    { name: 'responses', kind: 'openai-responses', upstream: resp, models: ['gpt-resp'], prices: { 'gpt-resp': RESP } },
    { name: 'claude', kind: 'anthropic', upstream: claude, api_key: ANTHROPIC_KEY, models: ['claude-test'], prices: { 'claude-test': CLAUDE } },
  ],
  reset: () => {
    chatUp.modes.length = 0;
    chatUp.cutAfter = 3;
    resp.modes.length = 0;
    claude.modes.length = 0;
    claude.hiddenPromptTokens = 0;
  },
});
const { mintUrl } = suite;

/** "Tell me a story." is 5 tokens (Tell, ␣me, ␣a, ␣story, .), 3 for its message and 3 for the reply's priming. */
const PROMPT_TOKENS = 11;
/** Each double breaks after three pieces, "The", " answer", " is": three tokens. */
const SENT_TOKENS = 3;

function post(path: string, headers: Record<string, string>, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${suite.gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

/** A funded key's hash and what the ledger says of the money before a request, to compare after. */
async function books(hash: string) {
  const key = (await suite.gw.ledger.getKey(hash))!;
  const totals = await suite.gw.ledger.totals();
  return { key, totals };
}

/** The request charged exactly `charge`: the key's balance, its spend, the ledger's totals, one charge row with its tokens. */
async function expectCharged(hash: string, before: Awaited<ReturnType<typeof books>>, charge: number, tokens: { input: number; output: number }, model: string) {
  expect(await settledSpend(suite.gw, hash)).toBe(before.key.totalSpent + charge);
  const after = await books(hash);
  expect([after.key.balance, after.key.reserved]).toEqual([before.key.balance - charge, 0]);
  expect(after.totals.charged - before.totals.charged).toBe(charge);
  expect(after.totals.reserved).toBe(0);
  const rows = (await suite.gw.ledger.history(hash, { limit: 100 })).filter((r) => r.kind === 'charge');
  const newest = rows.reduce((a, b) => (b.id > a.id ? b : a));
  expect({ msats: newest.msats, input: newest.inputTokens, output: newest.outputTokens, model: newest.model }).toEqual({
    msats: charge,
    input: tokens.input,
    output: tokens.output,
    model,
  });
}

describe('OpenAI chat completions', () => {
  const ask = (headers: Record<string, string>) => post('/v1/chat/completions', headers, { model: 'gpt-test', messages: [{ role: 'user', content: 'Tell me a story.' }], stream: true });

  it('charges the prompt and the three words sent when the upstream breaks after them, and ends the stream with our error', async () => {
    const token = await mintToken(mintUrl, 30);
    const hash = sha256Hex(token);
    await (await post('/v1/chat/completions', bearer(token), { model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1 })).text();
    const before = await books(hash);
    chatUp.modes.push('cut');
    const res = await ask(bearer(token));
    const text = await res.text();
    expect(res.status).toBe(200);
    expect(text).toContain('"content":" is"');
    expect(text).toContain('"code":"upstream_error"');
    expect(text).not.toContain('[DONE]');
    const charge = msats(PROMPT_TOKENS, GPT.prompt) + msats(SENT_TOKENS, GPT.completion);
    expect(charge).toBe(37);
    await expectCharged(hash, before, charge, { input: PROMPT_TOKENS, output: SENT_TOKENS }, 'gpt-test');
  });

  it('gives an X-Cashu payer the rest back as change in the error event', async () => {
    const x = await mintToken(mintUrl, 30);
    const hash = sha256Hex(x);
    const charged = (await suite.gw.ledger.totals()).charged;
    chatUp.modes.push('cut');
    const text = await (await ask({ 'x-cashu': x })).text();
    const errorEvent = text.split('\n\n').find((e) => e.includes('"error"'))!;
    const error = (JSON.parse(errorEvent.replace(/^data: /, '')) as { error: { code: string; refund_token: string } }).error;
    expect(error.code).toBe('upstream_error');
    const charge = msats(PROMPT_TOKENS, GPT.prompt) + msats(SENT_TOKENS, GPT.completion);
    expect(await settledSpend(suite.gw, hash)).toBe(charge);
    const rest = (await suite.gw.ledger.getKey(hash))!.balance;
    // 30 sats: 37 msats charged, 29 sats back as change, 963 msats left on the key (less than a sat).
    expect(rest).toBeLessThan(1000);
    expect((await receive(mintUrl, error.refund_token)) * 1000).toBe(30_000 - charge - rest);
    expect((await suite.gw.ledger.totals()).charged - charged).toBe(charge);
  });

  it('charges nothing when the upstream breaks before any of the answer was sent', async () => {
    const token = await mintToken(mintUrl, 30);
    const hash = sha256Hex(token);
    await (await post('/v1/chat/completions', bearer(token), { model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1 })).text();
    const before = await books(hash);
    chatUp.modes.push('cut');
    chatUp.cutAfter = 0;
    const text = await (await ask(bearer(token))).text();
    expect(text).toContain('"code":"upstream_error"');
    expect(await settledSpend(suite.gw, hash)).toBe(before.key.totalSpent);
    const after = await books(hash);
    expect(after.key.balance).toBe(before.key.balance);
    expect(after.totals.charged).toBe(before.totals.charged);
  });
});

describe('the Responses door', () => {
  it('charges the prompt and the three words sent when a Responses upstream breaks after them, ending with error and response.failed', async () => {
    const token = await mintToken(mintUrl, 30);
    const hash = sha256Hex(token);
    await (await post('/v1/responses', bearer(token), { model: 'gpt-resp', input: 'Hi', max_output_tokens: 16 })).text();
    const before = await books(hash);
    resp.modes.push('cut');
    const res = await post('/v1/responses', bearer(token), { model: 'gpt-resp', input: 'Tell me a story.', max_output_tokens: 64, stream: true });
    const text = await res.text();
    expect(res.status).toBe(200);
    expect(text).toContain('"delta":" is"');
    const names = [...text.matchAll(/^event: (.*)$/gm)].map((m) => m[1]);
    expect(names.slice(-2)).toEqual(['error', 'response.failed']);
    expect(text).toContain('"code":"upstream_error"');
    expect(text).not.toContain('response.completed');
    // The input as one message (3 tokens of framing) and the reply's priming (3): 11, as for chat.
    const charge = msats(PROMPT_TOKENS, RESP.prompt) + msats(SENT_TOKENS, RESP.completion);
    expect(charge).toBe(46);
    await expectCharged(hash, before, charge, { input: PROMPT_TOKENS, output: SENT_TOKENS }, 'gpt-resp');
  });
});

describe('the Anthropic Messages door', () => {
  const headers = (token: string) => ({ 'x-api-key': token, 'anthropic-version': '2023-06-01' });
  const ask = (token: string) => post('/v1/messages', headers(token), { model: 'claude-test', max_tokens: 64, messages: [{ role: 'user', content: 'Tell me a story.' }], stream: true });

  it('charges the prompt the upstream reported and the three words sent when it breaks after them, ending with its error event', async () => {
    const token = await mintToken(mintUrl, 30);
    const hash = sha256Hex(token);
    await (await post('/v1/messages', headers(token), { model: 'claude-test', max_tokens: 1, messages: [{ role: 'user', content: 'Hi' }] })).text();
    const before = await books(hash);
    claude.modes.push('cut');
    const res = await ask(token);
    const text = await res.text();
    expect(res.status).toBe(200);
    expect(text).toContain('"text":" is"');
    expect(text).toMatch(/event: error\ndata: \{"type":"error","error":\{"type":"api_error",[^\n]*"code":"upstream_error"/);
    expect(text).not.toContain('message_stop');
    // message_start reported the input as the upstream counts it: that is what it bills.
    const input = upstreamPromptTokens(claude.requests.at(-1)!.body);
    const charge = msats(input, CLAUDE.prompt) + msats(SENT_TOKENS, CLAUDE.completion);
    await expectCharged(hash, before, charge, { input, output: SENT_TOKENS }, 'claude-test');
  });

  it('charges the same way when the upstream ends its stream with an error event after two words', async () => {
    const token = await mintToken(mintUrl, 30);
    const hash = sha256Hex(token);
    await (await post('/v1/messages', headers(token), { model: 'claude-test', max_tokens: 1, messages: [{ role: 'user', content: 'Hi' }] })).text();
    const before = await books(hash);
    claude.modes.push('error_event');
    const text = await (await ask(token)).text();
    expect(text).toContain('"text":" answer"');
    expect(text).toMatch(/event: error\ndata: [^\n]*"code":"upstream_error"/);
    const input = upstreamPromptTokens(claude.requests.at(-1)!.body);
    await expectCharged(hash, before, msats(input, CLAUDE.prompt) + msats(2, CLAUDE.completion), { input, output: 2 }, 'claude-test');
  });

  it('charges no more than was reserved, though the upstream reported a prompt far above it', async () => {
    const token = await mintToken(mintUrl, 100);
    const hash = sha256Hex(token);
    await (await post('/v1/messages', headers(token), { model: 'claude-test', max_tokens: 1, messages: [{ role: 'user', content: 'Hi' }] })).text();
    const before = await books(hash);
    claude.modes.push('cut');
    claude.hiddenPromptTokens = 20_000;
    const text = await (await ask(token)).text();
    expect(text).toContain('"code":"upstream_error"');
    // Reserved: our count of the prompt (11, as for chat) padded by a tenth and 8 more, and 64 out.
    const reserved = msats(11 + 2 + 8, CLAUDE.prompt) + msats(64, CLAUDE.completion);
    expect(reserved).toBe(1023);
    const input = upstreamPromptTokens(claude.requests.at(-1)!.body) + 20_000;
    expect(msats(input, CLAUDE.prompt)).toBeGreaterThan(reserved);
    await expectCharged(hash, before, reserved, { input, output: SENT_TOKENS }, 'claude-test');
  });
});

describe('a door translated to a chat upstream', () => {
  const doors: Array<{ door: string; path: string; body: Record<string, unknown>; headers: Record<string, string> }> = [
    { door: 'Responses', path: '/v1/responses', body: { model: 'gpt-test', input: 'Tell me a story.', max_output_tokens: 64, stream: true }, headers: {} },
    {
      door: 'Messages',
      path: '/v1/messages',
      body: { model: 'gpt-test', max_tokens: 64, messages: [{ role: 'user', content: 'Tell me a story.' }], stream: true },
      headers: { 'anthropic-version': '2023-06-01' },
    },
  ];
  it.each(doors)('the $door door charges the prompt and the three words sent, and ends with its error', async ({ path, body, headers }) => {
    const token = await mintToken(mintUrl, 30);
    const hash = sha256Hex(token);
    await (await post('/v1/chat/completions', bearer(token), { model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1 })).text();
    const before = await books(hash);
    chatUp.modes.push('cut');
    const text = await (await post(path, { ...bearer(token), ...headers }, body)).text();
    expect(text).toContain(' is"');
    expect(text).toMatch(/event: error\n[^\n]*"code":"upstream_error"/);
    const charge = msats(PROMPT_TOKENS, GPT.prompt) + msats(SENT_TOKENS, GPT.completion);
    await expectCharged(hash, before, charge, { input: PROMPT_TOKENS, output: SENT_TOKENS }, 'gpt-test');
  });
});
