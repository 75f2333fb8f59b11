import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { FakeUpstream } from './support/upstream.ts';
import { ANTHROPIC_KEY, FakeAnthropic } from './support/anthropic-upstream.ts';
import { FakeResponsesUpstream } from './support/responses-upstream.ts';
import { apiPath, json, readBody, ScriptedUpstream } from './support/scripted-upstream.ts';
import { msats } from './support/gateway.ts';
import { expectUntouched, fundedKey, settledSpend, useGateway, waitFor } from './support/suite.ts';

/**
 * A hostile review of the engine's newer paths: bodies nested deeper than the stack on every
 * door and upstream kind, and whole answers an upstream makes as large or as strange as it likes.
 */

/** An upstream whose whole answers a test writes byte for byte; `script` gets the request's body. */
class RawUpstream extends ScriptedUpstream<'ok', { path: string; body: Record<string, unknown> }> {
  script: ((res: ServerResponse, body: Record<string, unknown>) => void | Promise<void>) | undefined;
  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = apiPath(req);
    if (req.method === 'GET' && path === '/models') return json(res, 200, { object: 'list', data: [] });
    const body = JSON.parse((await readBody(req)) || '{}') as Record<string, unknown>;
    this.requests.push({ path, body });
    if (!this.script) return json(res, 500, { error: { message: 'no script' } });
    await this.script(res, body);
  }
}

const chatUpstream = new FakeUpstream();
const claude = new FakeAnthropic();
const resp = new FakeResponsesUpstream();
const raw = new RawUpstream();
const CHEAP = { prompt: 1, completion: 2 };
const DEAR = { prompt: 10, completion: 40 };

const suite = useGateway({
  upstream: chatUpstream,
  doubles: [claude, resp, raw],
  upstreams: [
    { name: 'chat', upstream: chatUpstream, models: ['gpt-test'], prices: { 'gpt-test': CHEAP } },
    { name: 'claude', kind: 'anthropic', upstream: claude, api_key: ANTHROPIC_KEY, models: ['claude-test'], prices: { 'claude-test': CHEAP } },
    { name: 'responses', kind: 'openai-responses', upstream: resp, models: ['gpt-resp'], prices: { 'gpt-resp': CHEAP } },
    { name: 'raw', upstream: raw, models: ['raw-cheap', 'raw-dear'], prices: { 'raw-cheap': CHEAP, 'raw-dear': DEAR } },
  ],
  reset: () => {
    raw.script = undefined;
  },
});
const { mintUrl } = suite;

function post(path: string, key: string, body: string): Promise<Response> {
  return fetch(`${suite.gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'anthropic-version': '2023-06-01' }, body });
}

describe('a body nested deeper than the stack, in a field the door does not read', () => {
  const deep = `${'['.repeat(60_000)}${']'.repeat(60_000)}`;
  const cases: Array<[string, string, string]> = [
    // The chat door translated for a Responses or an Anthropic upstream: the translation copies the body whole.
    ['chat door, Responses upstream', '/v1/chat/completions', `{"model":"gpt-resp","messages":[{"role":"user","content":"Hi"}],"metadata_x":[${deep}]}`],
    ['chat door, Anthropic upstream', '/v1/chat/completions', `{"model":"claude-test","messages":[{"role":"user","content":"Hi"}],"metadata_x":[${deep}]}`],
    // A door passed through to an upstream of its own protocol: the exchange copies the body whole.
    ['Messages door, Anthropic upstream', '/v1/messages', `{"model":"claude-test","max_tokens":8,"messages":[{"role":"user","content":"Hi"}],"metadata_x":[${deep}]}`],
    ['Responses door, Responses upstream', '/v1/responses', `{"model":"gpt-resp","input":"Hi","metadata_x":[${deep}]}`],
    // Counting tokens walks a tool's schema.
    ['count_tokens, in a tool schema', '/v1/messages/count_tokens', `{"model":"claude-test","messages":[{"role":"user","content":"Hi"}],"tools":[{"name":"t","input_schema":{"type":"object","x":[${deep}]}}]}`],
  ];
  for (const [name, path, body] of cases) {
    it(`is a 400 invalid_request, nothing charged: ${name}`, async () => {
      const { key, hash } = await fundedKey(suite.gw, mintUrl, 50);
      const res = await expectUntouched(suite.gw, hash, () => post(path, key, body));
      const text = await res.text();
      expect([res.status, text]).toEqual([400, expect.stringMatching(/invalid_request/)]);
    });
  }
});

/** Writes `head`, then `bytes` of `x` inside the string `head` left open, then `tail`: an answer too large to keep, never held whole. */
async function writeHuge(res: ServerResponse, head: string, bytes: number, tail: string): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.write(head);
  const block = 'x'.repeat(1024 * 1024);
  for (let n = 0; n < bytes; n += block.length) {
    if (!res.write(block)) await new Promise((r) => res.once('drain', r));
  }
  res.end(tail);
}

const USAGE = { prompt_tokens: 12, completion_tokens: 30_000, total_tokens: 30_012 };

describe('a whole answer too large to pass on', () => {
  it('that says it served a dearer model is charged at that model\'s price, as a smaller answer is', async () => {
    const { key, hash } = await fundedKey(suite.gw, mintUrl, 3_000);
    const body = JSON.stringify({ model: 'raw-cheap', max_tokens: 30_000, messages: [{ role: 'user', content: 'Hi' }] });
    const dear = msats(USAGE.prompt_tokens, DEAR.prompt) + msats(USAGE.completion_tokens, DEAR.completion);
    // A small answer naming the dearer model: billed at its price.
    raw.script = (res) => json(res, 200, { id: 'c', object: 'chat.completion', model: 'raw-dear', choices: [{ index: 0, message: { role: 'assistant', content: 'x' }, finish_reason: 'length' }], usage: USAGE });
    expect((await post('/v1/chat/completions', key, body)).status).toBe(200);
    expect(await settledSpend(suite.gw, hash)).toBe(dear);
    // The same answer, 40 MB of it: the model is named at its top, before the choices.
    raw.script = (res) => writeHuge(res, '{"id":"c","object":"chat.completion","model":"raw-dear","choices":[{"index":0,"message":{"role":"assistant","content":"', 40 * 1024 * 1024, `"},"finish_reason":"length"}],"usage":${JSON.stringify(USAGE)}}`);
    expect((await post('/v1/chat/completions', key, body)).status).toBe(502);
    expect(await settledSpend(suite.gw, hash)).toBe(2 * dear);
  });

  it('that never ends is cut, and charged the most the request could cost, not read forever', async () => {
    const { key, hash } = await fundedKey(suite.gw, mintUrl, 100);
    let sent = 0;
    let closed = false;
    // An upstream gone wrong: a choice's text that never closes, as fast as the socket takes it.
    raw.script = async (res) => {
      res.on('close', () => (closed = true));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"id":"c","object":"chat.completion","model":"raw-cheap","choices":[{"index":0,"message":{"role":"assistant","content":"');
      const block = 'x'.repeat(1024 * 1024);
      while (!closed && sent < 4 * 1024 * 1024 * 1024) {
        sent += block.length;
        if (!res.write(block)) await new Promise((r) => (closed ? r(undefined) : res.once('drain', r).once('close', r)));
      }
      res.end();
    };
    const body = JSON.stringify({ model: 'raw-cheap', max_tokens: 20, messages: [{ role: 'user', content: 'Hi' }] });
    // What the request reserves, as a stranger is told: the prompt and every token it allows.
    const priced = await fetch(`${suite.gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const reserved = ((await priced.json()) as { error: { amount_required_msats: number } }).error.amount_required_msats;
    expect(reserved).toBeGreaterThanOrEqual(msats(20, CHEAP.completion));
    const res = await post('/v1/chat/completions', key, body);
    expect(res.status).toBe(502);
    // The gateway let go of the upstream.
    await waitFor(() => (closed ? true : undefined), 'the upstream connection closing', 5_000);
    expect(sent).toBeLessThan(1024 * 1024 * 1024);
    expect(await settledSpend(suite.gw, hash)).toBe(reserved);
  }, 60_000);
});
