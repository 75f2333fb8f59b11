import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPLY_WORDS, upstreamPromptTokens } from './support/upstream.ts';
import { ANTHROPIC_KEY, FakeAnthropic } from './support/anthropic-upstream.ts';
import { FakeResponsesUpstream, responsesInputTokens } from './support/responses-upstream.ts';
import { msats } from './support/gateway.ts';
import { mintToken } from './support/cashu.ts';
import { useGateway } from './support/suite.ts';
import { sha256Hex } from '../src/cashu/credential.ts';

/**
 * The real agent CLIs, run as a user runs them against the gateway, each paying with a Cashu
 * token where its API key goes. Only the model behind the gateway is a double.
 */
const CLIS = resolve('.cache/agent-clis/node_modules/.bin');
const claude = new FakeAnthropic();
const responses = new FakeResponsesUpstream();
// msats per token, as an operator would price a Claude model and an OpenAI one.
const PRICE = { prompt: 3, completion: 15 };
const GPT = { prompt: 2, completion: 8 };
const UPSTREAM_OPENAI_KEY = 'sk-upstream-responses-key';

/** Answers every proxied request or tunnel with 403 and remembers where it was going: the outside world, refused. */
class Outside {
  readonly attempts: string[] = [];
  url = '';
  #server: Server | undefined;

  async start(): Promise<void> {
    this.#server = createServer((req, res) => {
      this.attempts.push(`${req.method} ${req.url}`);
      res.writeHead(403).end();
    });
    this.#server.on('connect', (req, socket) => {
      this.attempts.push(`CONNECT ${req.url}`);
      socket.on('error', () => {});
      socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
    });
    await new Promise<void>((r) => this.#server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.#server.address() as { port: number }).port}`;
  }

  stop(): Promise<void> {
    return new Promise((r) => {
      this.#server?.closeAllConnections();
      this.#server?.close(() => r());
    });
  }
}
const outside = new Outside();

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a CLI in a fresh working directory, with only the environment given, every outside host behind `outside`. */
function run(bin: string, args: string[], env: Record<string, string>, home = mkdtempSync(join(tmpdir(), 'agent-home-')), timeoutMs = 90_000): Promise<Run> {
  const cwd = join(home, 'work');
  mkdirSync(cwd, { recursive: true });
  return new Promise((done, fail) => {
    const p = spawn(join(CLIS, bin), args, {
      cwd,
      env: { PATH: process.env.PATH, HOME: home, HTTPS_PROXY: outside.url, HTTP_PROXY: outside.url, NO_PROXY: '127.0.0.1,localhost', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', fail);
    p.on('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

// The CLIs are installed (or found in the cache) before the gateway's own start, under their own deadline.
beforeAll(() => {
  execFileSync('bash', [resolve('scripts/setup-agent-clis.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
}, 300_000);
const suite = useGateway({
  doubles: [outside, claude, responses],
  upstreams: [
    { name: 'claude', kind: 'anthropic', upstream: claude, api_key: ANTHROPIC_KEY, models: ['claude-test'], prices: { 'claude-test': PRICE } },
    { name: 'openai', kind: 'openai-responses', upstream: responses, api_key: UPSTREAM_OPENAI_KEY, models: ['gpt-resp'], prices: { 'gpt-resp': GPT } },
  ],
});
const { mintUrl } = suite;

describe('Claude Code (@anthropic-ai/claude-code)', () => {
  it('completes a one-shot task paid with a Cashu token as its API key, the token charged what the answers cost', async () => {
    const token = await mintToken(mintUrl, 1000);
    const r = await run('claude', ['-p', 'What is six times seven?'], {
      ANTHROPIC_BASE_URL: suite.gw.url,
      ANTHROPIC_API_KEY: token,
      ANTHROPIC_MODEL: 'claude-test',
      ANTHROPIC_DEFAULT_HAIKU_MODEL: 'claude-test',
      // Nothing but the gateway: no telemetry, error reports, update checks or feature flags.
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      DISABLE_AUTOUPDATER: '1',
      DISABLE_TELEMETRY: '1',
      DISABLE_ERROR_REPORTING: '1',
    });
    expect(r.stderr).not.toMatch(/API Error/);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(REPLY_WORDS.join(' '));
    expect(outside.attempts).toEqual([]);

    // What reached the model: Claude Code's own request, carrying our upstream key, never the token.
    const sent = claude.requests.filter((q) => q.path === '/messages');
    expect(sent.length).toBeGreaterThanOrEqual(1);
    for (const q of sent) {
      expect(q.headers.apiKey).toBe(ANTHROPIC_KEY);
      expect(JSON.stringify(q)).not.toContain(token);
    }
    const main = sent.at(-1)!;
    expect(main.body).toMatchObject({ model: 'claude-test', stream: true });
    // Its environment comes as a system turn inside messages, passed on as it was sent.
    expect((main.body.messages as Array<{ role: string }>).some((m) => m.role === 'system')).toBe(true);
    // The betas its request body relies on reach the upstream; none that cost extra.
    expect(main.headers.beta).toContain('context-management-2025-06-27');
    expect(main.headers.beta).not.toContain('context-1m');
    expect((main.body.tools as unknown[]).length).toBeGreaterThan(0);
    expect(JSON.stringify(main.body.system)).toContain('"cache_control"');

    // Charged to the msat what the double reported: its prompt count and the ten words, per answer.
    const cost = sent.reduce((s, q) => s + msats(upstreamPromptTokens(q.body), PRICE.prompt) + msats(REPLY_WORDS.length, PRICE.completion), 0);
    const key = await suite.gw.ledger.getKey(sha256Hex(token));
    expect(key!.totalSpent).toBe(cost);
    expect(key!.balance).toBe(1000 * 1000 - cost);
  });
});

describe('Codex (@openai/codex)', () => {
  it('completes `codex exec` through a custom Responses provider whose key is a Cashu token, the token charged what the answer cost', async () => {
    const token = await mintToken(mintUrl, 1000);
    const home = mkdtempSync(join(tmpdir(), 'codex-home-'));
    mkdirSync(join(home, '.codex'));
    // Codex 0.171 reads only the Responses wire (`wire_api = "chat"` is refused at load). Its
    // built-in web_search is a hosted tool the gateway cannot price and refuses: a user turns it off.
    writeFileSync(
      join(home, '.codex', 'config.toml'),
      `model = "gpt-resp"
model_provider = "cashu"
web_search = "disabled"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false

[model_providers.cashu]
name = "Cashu gateway"
base_url = "${suite.gw.url}/v1"
env_key = "CASHU_TOKEN"
wire_api = "responses"
`,
    );
    const r = await run('codex', ['exec', '--skip-git-repo-check', 'What is six times seven?'], { CODEX_HOME: join(home, '.codex'), CASHU_TOKEN: token }, home);
    expect(r.stderr).not.toMatch(/ERROR/);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(REPLY_WORDS.join(' '));
    expect(outside.attempts).toEqual([]);

    // What reached the model: Codex's own request, under our upstream key, never the token.
    expect(responses.requests.length).toBeGreaterThanOrEqual(1);
    for (const q of responses.requests) {
      expect(q.headers.authorization).toBe(`Bearer ${UPSTREAM_OPENAI_KEY}`);
      expect(JSON.stringify(q)).not.toContain(token);
    }
    const main = responses.requests.at(-1)!;
    expect(main.path).toBe('/responses');
    expect(main.body).toMatchObject({ model: 'gpt-resp', stream: true, store: false });
    expect((main.body.tools as Array<{ name?: string }>).map((t) => t.name)).toContain('exec_command');

    const cost = responses.requests.reduce((s, q) => s + msats(responsesInputTokens(q.body), GPT.prompt) + msats(REPLY_WORDS.length, GPT.completion), 0);
    const key = await suite.gw.ledger.getKey(sha256Hex(token));
    expect(key!.totalSpent).toBe(cost);
    expect(key!.balance).toBe(1000 * 1000 - cost);
  });
});
