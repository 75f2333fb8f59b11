import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FakeUpstream, REPLY_WORDS } from './support/upstream.ts';
import { expectDrained, msats, startGateway } from './support/gateway.ts';
import { bearer, chat as send, useGateway } from './support/suite.ts';
import { mintToken } from './support/cashu.ts';
import { freePort } from './support/ports.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import type { ModelList } from './support/wire.ts';

const a = new FakeUpstream();
const b = new FakeUpstream();
let file: string;

async function chat(model: string) {
  const token = await mintToken(mintUrl, 40);
  const res = await send(suite.gw, bearer(token), { model, messages: [{ role: 'user', content: 'route me' }], max_tokens: 3 });
  return { status: res.status, json: (await res.json()) as Record<string, any>, hash: sha256Hex(token) };
}

/** A failed request's payer: its 40 sats whole, nothing held, nothing spent. */
async function expectWhole(hash: string) {
  const k = (await suite.gw.ledger.getKey(hash))!;
  expect([k.balance, k.reserved, k.totalSpent]).toEqual([40_000, 0, 0]);
}

const suite = useGateway({
  upstream: a,
  doubles: [b],
  env: () => {
    file = join(mkdtempSync(join(tmpdir(), 'upstreams-')), 'upstreams.yaml');
    // gpt-test is served by a, then b; b alone serves its other models. At 100,000 USD per BTC a
    // USD is 1,000,000 msats, and the margin makes everything 1.5 times dearer.
    writeFileSync(
      file,
      `usd_per_btc: 100000
margin: 1.5
upstreams:
  - name: a
    base_url: ${a.url}
    models: [gpt-test]
    prices:
      gpt-test: { prompt_usd: 0.000001, completion_usd: 0.000002 }
  - name: b
    base_url: ${b.url}
    api_key_env: B_KEY
    prices:
      "*": { prompt_msats: 4, completion_msats: 8 }
`,
    );
    return { UPSTREAMS_FILE: file, MODEL_PRICES: '{}' };
  },
  reset: () => {
    a.modes.length = 0;
    b.modes.length = 0;
  },
  prices: { 'gpt-test': { prompt: 1.5, completion: 3 }, 'gpt-cheap': { prompt: 6, completion: 12 } },
});
const { mintUrl } = suite;

describe('several upstreams from a config file', () => {
  it('prices models by their rules (USD at the configured rate, msats), times the margin', async () => {
    const models = (await (await fetch(`${suite.gw.url}/v1/models`)).json()) as ModelList;
    const byId = new Map(models.data.map((m) => [m.id, m]));
    expect([...byId.keys()].sort()).toEqual(['gpt-cheap', 'gpt-test', 'text-embed']);
    expect(byId.get('gpt-test')!.msats_pricing).toMatchObject({ prompt_msats_per_token: 1.5, completion_msats_per_token: 3 });
    expect(byId.get('gpt-cheap')!.msats_pricing).toMatchObject({ prompt_msats_per_token: 6, completion_msats_per_token: 12 });
    const res = await chat('gpt-test');
    const u = res.json.usage;
    expect(u.cost.total_msats).toBe(msats(u.prompt_tokens, 1.5) + msats(u.completion_tokens, 3));
  });

  it('fails over to the next upstream before the first byte, and not on a request the upstream refuses', async () => {
    const [aBefore, bBefore] = [a.requests.length, b.requests.length];
    a.modes.push('fail_500');
    const ok = await chat('gpt-test');
    expect(ok.status).toBe(200);
    expect(ok.json.choices[0].message.content).toBe(REPLY_WORDS.slice(0, 3).join(' '));
    expect([a.requests.length - aBefore, b.requests.length - bBefore]).toEqual([1, 1]);

    a.modes.push('fail_400');
    const refused = await chat('gpt-test');
    expect(refused.status).toBe(400);
    await expectWhole(refused.hash);
    expect(b.requests.length - bBefore).toBe(1);

    // The first upstream refusing the operator's key is its problem, not the request's: next one.
    a.modes.push('fail_401');
    const rekeyed = await chat('gpt-test');
    expect(rekeyed.status).toBe(200);
    expect(b.requests.length - bBefore).toBe(2);

    // b alone serves gpt-cheap: when it fails there is nobody to fail over to, and nothing is charged.
    b.modes.push('fail_500');
    const failed = await chat('gpt-cheap');
    expect(failed.status).toBe(502);
    await expectWhole(failed.hash);
    // Nobody after b either: a refused key is a 502 that does not repeat what the provider said.
    b.modes.push('fail_401');
    const unkeyed = await chat('gpt-cheap');
    expect([unkeyed.status, unkeyed.json.error.code]).toEqual([502, 'upstream_error']);
    await expectWhole(unkeyed.hash);
    expect(unkeyed.json.error.message).not.toContain('sk-upst');
  });

  it('does not send a request to the next upstream once one may have taken it (a timeout, a connection lost after sending)', async () => {
    // Each of these reached a: it may be generating, and billing, the answer. b doing it again
    // would bill it twice, for an answer the client is then not charged for.
    const short = await startGateway(mintUrl, a, { UPSTREAMS_FILE: file, MODEL_PRICES: '{}', UPSTREAM_HEADERS_TIMEOUT_MS: '300', UPSTREAM_BODY_TIMEOUT_MS: '300' });
    try {
      const cases: Array<{ what: string; modes: Array<'stall' | 'drop'>; stream: boolean }> = [
        { what: 'a whole answer timed out', modes: ['stall'], stream: false },
        { what: 'a stream timed out', modes: ['stall'], stream: true },
        // Closed with no answer, and again when sent once more on a fresh connection.
        { what: 'a connection lost after sending', modes: ['drop', 'drop'], stream: false },
      ];
      for (const c of cases) {
        const [aBefore, aDropped, bBefore] = [a.requests.length, a.dropped, b.requests.length];
        a.modes.push(...c.modes);
        const token = await mintToken(mintUrl, 40);
        const res = await send(short, bearer(token), { model: 'gpt-test', messages: [{ role: 'user', content: 'route me' }], max_tokens: 3, stream: c.stream });
        await res.text();
        expect([c.what, res.status]).toEqual([c.what, 502]);
        expect([c.what, a.requests.length - aBefore + a.dropped - aDropped, b.requests.length - bBefore]).toEqual([c.what, c.modes.length, 0]);
        // Nothing charged: the client got no answer.
        const k = (await short.ledger.getKey(sha256Hex(token)))!;
        expect([c.what, k.balance, k.reserved, k.totalSpent]).toEqual([c.what, 40_000, 0, 0]);
      }
      await expectDrained(short, { prices: { 'gpt-test': { prompt: 1.5, completion: 3 }, 'gpt-cheap': { prompt: 6, completion: 12 } } });
    } finally {
      await short.close();
    }
  });

  it("does not fail over after a proxy's timeout (504, 524): the upstream behind it may still make and bill the answer", async () => {
    const cases: Array<{ mode: 'fail_504' | 'fail_524'; stream: boolean }> = [
      { mode: 'fail_504', stream: false },
      { mode: 'fail_504', stream: true },
      { mode: 'fail_524', stream: false },
      { mode: 'fail_524', stream: true },
    ];
    for (const c of cases) {
      const what = `${c.mode}${c.stream ? ', streamed' : ''}`;
      const [aBefore, bBefore] = [a.requests.length, b.requests.length];
      a.modes.push(c.mode);
      const token = await mintToken(mintUrl, 40);
      const res = await send(suite.gw, bearer(token), { model: 'gpt-test', messages: [{ role: 'user', content: 'route me' }], max_tokens: 3, stream: c.stream });
      const body = (await res.json()) as { error?: { code: string } };
      expect([what, res.status, body.error?.code]).toEqual([what, 502, 'upstream_error']);
      expect([what, a.requests.length - aBefore, b.requests.length - bBefore]).toEqual([what, 1, 0]);
      // Released as for any upstream error: the client got no answer.
      await expectWhole(sha256Hex(token));
    }
  });

  it('fails over when the first upstream is down altogether', async () => {
    const dead = join(mkdtempSync(join(tmpdir(), 'upstreams-')), 'dead.json');
    writeFileSync(
      dead,
      JSON.stringify({ upstreams: [{ name: 'dead', base_url: `http://127.0.0.1:${await freePort()}/v1`, models: ['gpt-test'] }, { name: 'b', base_url: b.url }] }),
    );
    const other = await startGateway(mintUrl, a, { UPSTREAMS_FILE: dead });
    try {
      const res = await send(other, bearer(await mintToken(mintUrl, 40)), { messages: [{ role: 'user', content: 'anyone?' }], max_tokens: 1 });
      expect(res.status).toBe(200);
    } finally {
      await other.close();
    }
  });

  it('lets MODEL_PRICES in the environment override the file, and rejects a bad file at start-up', async () => {
    const over = await startGateway(mintUrl, a, { UPSTREAMS_FILE: file, MODEL_PRICES: JSON.stringify({ 'gpt-test': { prompt: 9, completion: 9 } }) });
    try {
      const models = (await (await fetch(`${over.url}/v1/models`)).json()) as ModelList;
      expect(models.data.find((m) => m.id === 'gpt-test')!.msats_pricing).toMatchObject({ prompt_msats_per_token: 9, completion_msats_per_token: 9 });
    } finally {
      await over.close();
    }
    const bad = join(mkdtempSync(join(tmpdir(), 'upstreams-')), 'bad.yaml');
    writeFileSync(bad, 'upstreams:\n  - name: x\n    base_url: ftp://nope\n    prices: { m: { prompt_usd: 1, completion_usd: 1 } }\n');
    const r = spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', resolve('src/main.ts')], {
      env: { PATH: process.env.PATH, UPSTREAMS_FILE: bad, PORT: '0', DATABASE_URL: ':memory:' },
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^config: UPSTREAMS_FILE upstreams\.0\.base_url/m);
  });
});
