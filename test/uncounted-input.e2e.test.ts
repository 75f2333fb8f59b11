import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FakeUpstream } from './support/upstream.ts';
import { FakeResponsesUpstream } from './support/responses-upstream.ts';
import { ANTHROPIC_KEY, FakeAnthropic } from './support/anthropic-upstream.ts';
import { msats } from './support/gateway.ts';
import { mintToken, proofStates, tokenValue } from './support/cashu.ts';
import { settledSpend, useGateway } from './support/suite.ts';
import { sha256Hex } from '../src/cashu/credential.ts';

/**
 * A third hostile review: prompt text the upstream reads and bills that the gateway did not count
 * when it reserved. A payer whose X-Cashu token is sized exactly to the reservation (the 402 a
 * 1-sat probe gets names it, the probe untouched) is charged at most that token, so whatever the
 * upstream billed beyond it was the operator's to pay.
 */
const chatUpstream = new FakeUpstream();
const resp = new FakeResponsesUpstream();
const claude = new FakeAnthropic();
const CHAT = { prompt: 2, completion: 5 };
const RESP = { prompt: 2, completion: 8 };
const CLAUDE = { prompt: 10, completion: 50 };

const suite = useGateway({
  upstream: chatUpstream,
  doubles: [resp, claude],
  upstreams: [
    { name: 'chat', upstream: chatUpstream, models: ['gpt-test'], prices: { 'gpt-test': CHAT } },
    { name: 'responses', kind: 'openai-responses', upstream: resp, models: ['gpt-resp'], prices: { 'gpt-resp': RESP } },
    { name: 'claude', kind: 'anthropic', upstream: claude, api_key: ANTHROPIC_KEY, models: ['claude-test'], prices: { 'claude-test': CLAUDE } },
  ],
  reset: () => {
    chatUpstream.usageOverrides.length = 0;
    claude.hiddenPromptTokens = 0;
  },
});
const { mintUrl } = suite;

async function post(path: string, headers: Record<string, string>, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${suite.gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers }, body: JSON.stringify(body) });
}

/**
 * Pays `body` with the smallest X-Cashu token the gateway takes for it: a 1-sat probe, or, when
 * that is refused with the reservation's amount (and left unspent), a token of that many sats.
 * `paid`: the sats the token held.
 */
async function paidExactly(path: string, body: Record<string, unknown>) {
  const probe = await mintToken(mintUrl, 1);
  const first = await post(path, { 'x-cashu': probe }, body);
  if (first.status !== 402) return { res: first, token: probe, paid: 1, hash: sha256Hex(probe) };
  const required = ((await first.json()) as { error: { amount_required_msats: number } }).error.amount_required_msats;
  expect(await proofStates(mintUrl, probe)).toEqual(['UNSPENT']);
  const paid = Math.ceil(required / 1000);
  const token = await mintToken(mintUrl, paid);
  return { res: await post(path, { 'x-cashu': token }, body), token, paid, hash: sha256Hex(token) };
}

/**
 * About 55,000 tokens at the doubles' count (a token per 4 characters) of text our tokenizer
 * counts at no fewer: hex digests, which cl100k cuts finer than that.
 */
let LONG = '';
for (let i = 0; LONG.length < 220_000; i++) LONG += `${createHash('sha256').update(String(i)).digest('hex')} `;

describe('chat messages: every field the upstream reads is counted', () => {
  for (const field of ['reasoning_content', 'reasoning', 'refusal'] as const) {
    it(`an earlier assistant turn's '${field}' is reserved for: the payer is charged every token the upstream billed, and gets its change`, async () => {
      const body = {
        model: 'gpt-test',
        max_tokens: 10,
        messages: [
          { role: 'user', content: 'Hi' },
          { role: 'assistant', content: 'Hello.', [field]: LONG },
          { role: 'user', content: 'Go on.' },
        ],
      };
      const { res, token, paid, hash } = await paidExactly('/v1/chat/completions', body);
      expect(res.status).toBe(200);
      const u = chatUpstream.reported.at(-1)!;
      const cost = msats(u.prompt_tokens as number, CHAT.prompt) + msats(u.completion_tokens as number, CHAT.completion);
      // The upstream read the field: its count is that of the whole long text.
      expect(u.prompt_tokens as number).toBeGreaterThan(50_000);
      expect(paid * 1000).toBeGreaterThanOrEqual(cost);
      expect(await settledSpend(suite.gw, hash)).toBe(cost);
      const change = res.headers.get('x-cashu')!;
      // The change is what the token held beyond the charge, in whole sats.
      expect(await tokenValue(mintUrl, change)).toBe(Math.floor((paid * 1000 - cost) / 1000));
      expect((await proofStates(mintUrl, token)).every((s) => s === 'SPENT')).toBe(true);
    });
  }

  it("an assistant turn's 'refusal' sent to a Responses upstream as its text is reserved for", async () => {
    const body = {
      model: 'gpt-resp',
      max_tokens: 20,
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: null, refusal: LONG },
        { role: 'user', content: 'Go on.' },
      ],
    };
    const { res, paid, hash } = await paidExactly('/v1/chat/completions', body);
    expect(res.status).toBe(200);
    const sent = resp.requests.at(-1)!.body.input as Array<{ role: string; content: unknown }>;
    // The translation carried the refusal across as the assistant's words.
    expect(sent[1]).toMatchObject({ role: 'assistant', content: LONG });
    const u = ((await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
    const cost = msats(u.prompt_tokens, RESP.prompt) + msats(u.completion_tokens, RESP.completion);
    expect(u.prompt_tokens).toBeGreaterThan(50_000);
    expect(paid * 1000).toBeGreaterThanOrEqual(cost);
    expect(await settledSpend(suite.gw, hash)).toBe(cost);
  });
});

describe('Responses input items: a reasoning item is counted whole', () => {
  it("a reasoning item's content (reasoning_text, as vLLM's gpt-oss reads it back) is reserved for on a Responses upstream", async () => {
    const body = {
      model: 'gpt-resp',
      max_output_tokens: 20,
      input: [
        { role: 'user', content: 'Hi' },
        { type: 'reasoning', id: 'rs_1', summary: [], content: [{ type: 'reasoning_text', text: LONG }] },
        { role: 'assistant', content: 'Hello.' },
        { role: 'user', content: 'Go on.' },
      ],
    };
    const { res, paid, hash } = await paidExactly('/v1/responses', body);
    expect(res.status).toBe(200);
    const u = ((await res.json()) as { usage: { input_tokens: number; output_tokens: number } }).usage;
    const cost = msats(u.input_tokens, RESP.prompt) + msats(u.output_tokens, RESP.completion);
    expect(u.input_tokens).toBeGreaterThan(50_000);
    expect(paid * 1000).toBeGreaterThanOrEqual(cost);
    expect(await settledSpend(suite.gw, hash)).toBe(cost);
  });
});

describe("Anthropic's own tools: the definitions the API adds are reserved for", () => {
  // What Opus 4.7 bills beyond the request's own text when the tool is offered: the tool-use
  // system prompt for `auto` (675 tokens), and the tool's definition as its page documents it
  // (bash 325 tokens on Opus 4.7 and 4.8; the text editor 700).
  const cases = [
    { tool: { type: 'bash_20250124', name: 'bash' }, hidden: 675 + 325 },
    { tool: { type: 'text_editor_20250728', name: 'str_replace_based_edit_tool' }, hidden: 675 + 700 },
  ];
  for (const { tool, hidden } of cases) {
    it(`'${tool.type}', whose schema is Anthropic's: the payer's exact token covers all it billed`, async () => {
      claude.hiddenPromptTokens = hidden;
      // Five words of answer and no more: the reservation has no output to spare for the prompt.
      const body = { model: 'claude-test', max_tokens: 5, tools: [tool], messages: [{ role: 'user', content: 'List the files here.' }] };
      const { res, paid, hash } = await paidExactly('/v1/messages', body);
      expect(res.status).toBe(200);
      expect((claude.requests.at(-1)!.body.tools as unknown[])[0]).toEqual(tool);
      const u = ((await res.json()) as { usage: { input_tokens: number; output_tokens: number } }).usage;
      expect(u.input_tokens).toBeGreaterThan(hidden);
      const cost = msats(u.input_tokens, CLAUDE.prompt) + msats(u.output_tokens, CLAUDE.completion);
      expect(paid * 1000).toBeGreaterThanOrEqual(cost);
      expect(await settledSpend(suite.gw, hash)).toBe(cost);
    });
  }
});

describe('the tool-use system prompt is reserved at its largest', () => {
  it("a custom tool forced with `tool_choice: any`, for which Opus 4.7 adds 804 tokens: the payer's exact token covers them", async () => {
    claude.hiddenPromptTokens = 804;
    const tool = { name: 'get_weather', description: 'The weather in a city.', input_schema: { type: 'object', properties: { city: { type: 'string' } } } };
    const body = { model: 'claude-test', max_tokens: 5, tools: [tool], tool_choice: { type: 'any' }, messages: [{ role: 'user', content: 'Weather in Paris?' }] };
    const { res, paid, hash } = await paidExactly('/v1/messages', body);
    expect(res.status).toBe(200);
    const u = ((await res.json()) as { usage: { input_tokens: number; output_tokens: number } }).usage;
    const cost = msats(u.input_tokens, CLAUDE.prompt) + msats(u.output_tokens, CLAUDE.completion);
    expect(paid * 1000).toBeGreaterThanOrEqual(cost);
    expect(await settledSpend(suite.gw, hash)).toBe(cost);
  });
});

describe('a whole answer too large to pass on', () => {
  it('is refused with a 502 and charged the usage it reports (read past the text that looks like one), the rest refunded', async () => {
    const token = await mintToken(mintUrl, 200);
    chatUpstream.modes.push('huge_usage');
    // Eight choices of 4,000 tokens, each token with its 20 likeliest alternatives: over 32 MB.
    const res = await post('/v1/chat/completions', { 'x-cashu': token }, { model: 'gpt-test', n: 8, max_tokens: 4000, logprobs: true, top_logprobs: 20, messages: [{ role: 'user', content: 'Hi' }] });
    expect(res.status).toBe(502);
    const u = chatUpstream.reported.at(-1)!;
    expect(u.completion_tokens).toBe(32_000);
    const cost = msats(u.prompt_tokens as number, CHAT.prompt) + msats(u.completion_tokens as number, CHAT.completion);
    expect(await settledSpend(suite.gw, sha256Hex(token))).toBe(cost);
    const refund = res.headers.get('x-cashu')!;
    expect(await tokenValue(mintUrl, refund)).toBe(Math.floor((200_000 - cost) / 1000));
    expect((await proofStates(mintUrl, refund)).every((s) => s === 'UNSPENT')).toBe(true);
  });
});

describe('audio is reserved by its length', () => {
  it('a 1 MB clip, which Gemini bills at 32 tokens a second of its 1,000 s at 6 kbps, is reserved for: the payer is charged all of it', async () => {
    // 1,000,000 base64 characters: 750,000 bytes of Opus at 6 kbps, 1,000 seconds.
    const data = Buffer.alloc(750_000, 7).toString('base64');
    const billed = 32 * 1000;
    chatUpstream.usageOverrides.push({ prompt_tokens: billed, completion_tokens: 10, total_tokens: billed + 10 });
    const body = { model: 'gpt-test', max_tokens: 10, messages: [{ role: 'user', content: [{ type: 'text', text: 'Transcribe.' }, { type: 'input_audio', input_audio: { data, format: 'ogg' } }] }] };
    const { res, paid, hash } = await paidExactly('/v1/chat/completions', body);
    expect(res.status).toBe(200);
    const cost = msats(billed, CHAT.prompt) + msats(10, CHAT.completion);
    expect(paid * 1000).toBeGreaterThanOrEqual(cost);
    expect(await settledSpend(suite.gw, hash)).toBe(cost);
  });
});
