import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { FakeUpstream, REPLY_WORDS, upstreamPromptTokens } from './support/upstream.ts';
import { PRICES, expectMoneyConserved, msats, startGateway, type Gateway } from './support/gateway.ts';
import { mintToken, receive } from './support/cashu.ts';

const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
let gw: Gateway;
let python: string;

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const messages = [{ role: 'user', content: 'What is six times seven?' }];

/** Runs the Python client script; asynchronously, since the gateway lives in this process. */
function runPython(env: Record<string, string>): Promise<Record<string, any>> {
  return new Promise((done, fail) => {
    const p = spawn(python, [resolve('test/python/openai_client.py')], {
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', fail);
    p.on('close', (code) => (code === 0 ? done(JSON.parse(out)) : fail(new Error(`python exited ${code}:\n${err}`))));
  });
}

beforeAll(async () => {
  execFileSync('bash', [resolve('scripts/setup-python-clients.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
  python = resolve('.test-data/venv-clients/bin/python');
  await upstream.start();
  gw = await startGateway(mintUrl, upstream);
});
afterAll(async () => {
  await gw?.close();
  await upstream.stop();
});

describe('the official openai Python package', () => {
  it('pays with a Cashu token, streaming and not, and is charged exactly what usage.cost says', async () => {
    const token = await mintToken(mintUrl, 100);
    const xToken = await mintToken(mintUrl, 20);
    const before = await gw.ledger.totals();
    const out = await runPython({ GATEWAY_URL: gw.url, TOKEN: token, X_TOKEN: xToken });
    expect(out.openai_version).toBe('3.52.0');

    const prompt = upstreamPromptTokens({ messages });
    const price = PRICES['gpt-test'];
    const cost = (completion: number) => msats(prompt, price.prompt) + msats(completion, price.completion);

    expect(out.plain.content).toBe(REPLY_WORDS.join(' '));
    expect(out.plain.usage.prompt_tokens).toBe(prompt);
    expect(out.plain.usage.cost.total_msats).toBe(cost(REPLY_WORDS.length));

    expect(out.stream.content).toBe(REPLY_WORDS.slice(0, 4).join(' '));
    expect(out.stream.usage.completion_tokens).toBe(4);
    expect(out.stream.usage.cost.total_msats).toBe(cost(4));

    // The ledger charged the key exactly what the client was told.
    const key = await gw.ledger.getKey(sha256(token));
    expect(key!.totalSpent).toBe(out.plain.usage.cost.total_msats + out.stream.usage.cost.total_msats);
    expect(key!.balance).toBe(100_000 - key!.totalSpent);
    expect(key!.reserved).toBe(0);

    // X-Cashu: charged what it says, and the change is a real token worth the rest.
    expect(out.x_cashu.content).toBe(REPLY_WORDS.slice(0, 2).join(' '));
    const oneShot = out.x_cashu.usage.cost.total_msats as number;
    expect(oneShot).toBe(cost(2));
    expect(out.x_cashu.cost_header).toBe(String(oneShot));
    expect(out.x_cashu.change).toMatch(/^cashuB/);
    expect(await receive(mintUrl, out.x_cashu.change)).toBe(Math.floor((20_000 - oneShot) / 1000));
    expect((await gw.ledger.getKey(sha256(xToken)))!.totalSpent).toBe(oneShot);

    const after = await gw.ledger.totals();
    expect(after.charged - before.charged).toBe(key!.totalSpent + oneShot);
    expect(after.credited - before.credited).toBe(120_000);

    // An unknown key: the SDK's own exception type, with the gateway's OpenAI-shaped body.
    expect(out.unknown_key).toEqual({
      type: 'AuthenticationError',
      status: 401,
      body: { message: 'Invalid API key.', type: 'authentication_error', code: 'invalid_api_key' },
    });
    await expectMoneyConserved(gw);
  });
});
