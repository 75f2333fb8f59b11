import { beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { REPLY_WORDS, upstreamPromptTokens } from './support/upstream.ts';
import { PRICES, expectDrained, msats, startGateway } from './support/gateway.ts';
import { ANTHROPIC_KEY, FakeAnthropic } from './support/anthropic-upstream.ts';
import { mintToken, receive } from './support/cashu.ts';
import { bearer, chat, useGateway } from './support/suite.ts';
import { upstreamsEnv } from './support/upstreams-file.ts';
import type { Billed, BilledUsage } from './support/wire.ts';

// The Python clients' virtualenv is built (or found) before the gateway starts.
beforeAll(() => {
  execFileSync('bash', [resolve('scripts/setup-python-clients.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
});
const suite = useGateway();
const { mintUrl, upstream } = suite;
const python = resolve('.test-data/venv-clients/bin/python');

/** What test/python/openai_client.py prints: what the openai package handed its caller. */
interface OpenAIClientRun {
  openai_version: string;
  plain: { content: string; usage: BilledUsage };
  stream: { content: string; usage: BilledUsage };
  x_cashu: { content: string; usage: BilledUsage; change: string; cost_header: string | null };
  unknown_key: { type: string; status: number | null; body: unknown };
}

/** What test/python/anthropic_client.py prints. */
interface AnthropicClientRun {
  anthropic_version: string;
  plain: { text: string; usage: { cost: { total_msats: number } } };
  stream: { text: string; output_tokens: number };
  x_cashu: { text: string; change: string };
  unknown_key: { status: number; type: string; code: string };
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const messages = [{ role: 'user', content: 'What is six times seven?' }];

/** Runs a program and returns its output; asynchronously, since the gateway lives in this process. */
/** Runs a command; with `giveUpMs`, a command still waiting then is stopped and its output so far returned. */
function run(bin: string, args: string[], env: Record<string, string>, giveUpMs?: number): Promise<string> {
  return new Promise((done, fail) => {
    const p = spawn(bin, args, { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let gaveUp = false;
    const timer = giveUpMs ? setTimeout(() => ((gaveUp = true), p.kill('SIGTERM')), giveUpMs) : undefined;
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', fail);
    p.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0 || gaveUp) done(out);
      else fail(new Error(`${bin} exited ${code}:\n${out}\n${err}`));
    });
  });
}

async function runPython(env: Record<string, string>): Promise<OpenAIClientRun> {
  return JSON.parse(await run(python, [resolve('test/python/openai_client.py')], env)) as OpenAIClientRun;
}

describe('the official openai Python package', () => {
  it('pays with a Cashu token, streaming and not, and is charged exactly what usage.cost says', async () => {
    const token = await mintToken(mintUrl, 100);
    const xToken = await mintToken(mintUrl, 20);
    const before = await suite.gw.ledger.totals();
    const out = await runPython({ GATEWAY_URL: suite.gw.url, TOKEN: token, X_TOKEN: xToken });
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
    const key = await suite.gw.ledger.getKey(sha256(token));
    expect(key!.totalSpent).toBe(out.plain.usage.cost.total_msats + out.stream.usage.cost.total_msats);
    expect(key!.balance).toBe(100_000 - key!.totalSpent);
    expect(key!.reserved).toBe(0);

    // X-Cashu: charged what it says, and the change is a real token worth the rest.
    expect(out.x_cashu.content).toBe(REPLY_WORDS.slice(0, 2).join(' '));
    const oneShot = out.x_cashu.usage.cost.total_msats;
    expect(oneShot).toBe(cost(2));
    expect(out.x_cashu.cost_header).toBe(String(oneShot));
    expect(out.x_cashu.change).toMatch(/^cashuB/);
    expect(await receive(mintUrl, out.x_cashu.change)).toBe(Math.floor((20_000 - oneShot) / 1000));
    expect((await suite.gw.ledger.getKey(sha256(xToken)))!.totalSpent).toBe(oneShot);

    const after = await suite.gw.ledger.totals();
    expect(after.charged - before.charged).toBe(key!.totalSpent + oneShot);
    expect(after.credited - before.credited).toBe(120_000);

    // An unknown key: the SDK's own exception type, with the gateway's OpenAI-shaped body.
    expect(out.unknown_key).toEqual({
      type: 'AuthenticationError',
      status: 401,
      body: { message: 'Invalid API key.', type: 'authentication_error', code: 'invalid_api_key' },
    });
  }, 120_000);
});

describe('the nutshell wallet CLI', () => {
  it('makes a token with `cashu send` that pays the gateway, and takes the refund back with `cashu receive`', async () => {
    // nutshell's wallet, installed with the test mint; its wallet database lives in HOME.
    const home = mkdtempSync(join(tmpdir(), 'cashu-wallet-'));
    const cashu = (...args: string[]) => run(resolve('.venv/bin/cashu'), ['-h', mintUrl, '-y', ...args], { HOME: home });
    // The test mint's FakeWallet pays the invoice at once, sometimes before the wallet subscribes to
    // hear of it, and then the wallet waits forever: stop waiting after a while, and asking again
    // with the invoice's id mints the ecash.
    const invoice = await run(resolve('.venv/bin/cashu'), ['-h', mintUrl, '-y', 'invoice', '300'], { HOME: home }, 15_000);
    if (!invoice.includes('Balance: 300 sat')) await cashu('invoice', '300', '--id', /--id ([0-9a-f-]+)/.exec(invoice)![1]!);
    expect(await cashu('balance')).toContain('Balance: 300 sat');
    const token = /cashu[AB][A-Za-z0-9_=-]+/.exec(await cashu('send', '200'))![0];

    const res = await chat(suite.gw, bearer(token), { messages, max_tokens: 3 });
    expect(res.status).toBe(200);
    const cost = ((await res.json()) as Billed).usage.cost.total_msats;
    expect((await suite.gw.ledger.getKey(sha256(token)))!.totalSpent).toBe(cost);

    const refund = (await (await fetch(`${suite.gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })).json()) as { token: string; sats: string };
    const back = Math.floor((200_000 - cost) / 1000);
    expect(refund.sats).toBe(String(back));
    await cashu('receive', refund.token);
    expect(await cashu('balance')).toContain(`Balance: ${100 + back} sat`);
  }, 120_000);
});

describe('the official anthropic Python package', () => {
  it('pays /v1/messages with a Cashu token and with X-Cashu, streaming and not, billed to the msat', async () => {
    const claude = new FakeAnthropic();
    await claude.start();
    const env = upstreamsEnv([{ name: 'claude', kind: 'anthropic', upstream: claude, api_key: ANTHROPIC_KEY, models: ['claude-test'], prices: { 'claude-test': { prompt: 3, completion: 15 } } }]);
    const agw = await startGateway(mintUrl, upstream, env);
    try {
      const token = await mintToken(mintUrl, 100);
      const xToken = await mintToken(mintUrl, 20);
      const out = JSON.parse(await run(python, [resolve('test/python/anthropic_client.py')], { GATEWAY_URL: agw.url, TOKEN: token, X_TOKEN: xToken })) as AnthropicClientRun;
      expect(out.anthropic_version).toBe('2.15.0');
      const text = REPLY_WORDS.join(' ');
      expect(out.plain.text).toBe(text);
      expect(out.stream).toEqual({ text, output_tokens: REPLY_WORDS.length });
      expect(out.x_cashu.text).toBe(text);
      // Each request's charge, from what the double was sent: input at 3 msats a token, output at 15.
      const costs = claude.requests.map((r) => msats(upstreamPromptTokens(r.body), 3) + msats(REPLY_WORDS.length, 15));
      expect(out.plain.usage.cost.total_msats).toBe(costs[0]);
      const key = await agw.ledger.getKey(sha256(token));
      expect(key!.totalSpent).toBe(costs[0]! + costs[1]!);
      expect(await receive(mintUrl, out.x_cashu.change)).toBe(Math.floor((20_000 - costs[2]!) / 1000));
      expect(out.unknown_key).toEqual({ status: 401, type: 'authentication_error', code: 'invalid_api_key' });
      // This gateway's own money, drained before it goes: the file's end sees only the other one.
      await expectDrained(agw, { prices: { 'claude-test': { prompt: 3, completion: 15 } } });
    } finally {
      await agw.close();
      await claude.stop();
    }
  });
});
