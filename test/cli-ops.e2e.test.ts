import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FakeUpstream } from './support/upstream.ts';
import { testDatabaseUrl } from './support/gateway.ts';
import { freePort } from './support/ports.ts';
import { HandshakeServer } from './support/relay-double.ts';

const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
const relay = new HandshakeServer();
let good: Record<string, string>;
let cwd: string;

/** Runs the real CLI as an operator would; asynchronously, since the doubles live in this process. */
function cli(env: Record<string, string>, ...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const p = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', resolve('src/cli.ts'), ...args], {
      cwd,
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', fail);
    p.on('close', (status) => done({ status, stdout, stderr }));
  });
}

/** The table's row for a check, split into its columns. */
function row(out: string, name: string): string[] {
  const line = out.split('\n').find((l) => l.startsWith(name));
  if (!line) throw new Error(`no row ${name} in:\n${out}`);
  return [name, ...line.slice(name.length).trim().split(/\s{2,}/)];
}

beforeAll(async () => {
  await upstream.start();
  await relay.start();
  // Relative paths (a sqlite file, .env) resolve in a folder of the test's own.
  cwd = mkdtempSync(join(tmpdir(), 'gw-ops-'));
  let db = await testDatabaseUrl();
  if (db === ':memory:') db = `sqlite:${join(cwd, 'data', 'gateway.db')}`;
  good = {
    UPSTREAM_BASE_URL: upstream.url,
    CASHU_MINTS: mintUrl,
    DATABASE_URL: db,
    MODEL_PRICES: JSON.stringify({ 'gpt-test': { prompt: 2, completion: 5.5, max_completion_tokens: 1000 } }),
    MODELS: 'extra-model',
  };
});
afterAll(async () => {
  await relay.stop();
  await upstream.stop();
});

describe('cashu-gateway doctor', () => {
  it('reports a working setup as working, and exits 0', async () => {
    const r = await cli({ ...good, RELAYS: relay.url, PUBLIC_URL: 'https://gateway.example' }, 'doctor');
    expect(r.stderr).toContain(`checking the upstream at ${upstream.url}…`);
    expect(r.stderr).toContain(`checking the relay at ${relay.url}…`);
    expect(row(r.stdout, 'configuration')[1]).toBe('ok');
    const up = row(r.stdout, `upstream ${upstream.url}`);
    expect(up[1]).toBe('ok');
    expect(up[2]).toBe('3 models listed (gpt-test, gpt-cheap, text-embed)');
    const mint = row(r.stdout, `mint ${mintUrl}`);
    expect(mint[1]).toBe('ok');
    expect(mint[2]).toMatch(/; keysets: (sat, msat|msat, sat)$/);
    expect(row(r.stdout, '  NUT-11/12 (P2PK, DLEQ)')[1]).toBe('ok');
    expect(row(r.stdout, '  NUT-07/09 (state, restore)')[1]).toBe('ok');
    expect(row(r.stdout, 'tokens from other mints').slice(1)).toEqual(['ok', 'refused (FOREIGN_MINTS=refuse): only CASHU_MINTS are accepted']);
    const db = r.stdout.split('\n').find((l) => l.startsWith('database '))!;
    expect(db).toMatch(/\s{2}ok\s+opened, schema up to date; credited 0 msats/);
    expect(row(r.stdout, `relay ${relay.url}`)[1]).toBe('ok');
    expect(relay.connections).toBe(1);
    expect(row(r.stdout, 'Nostr announcements')[1]).toBe('ok');
    expect(r.stdout).toContain('all checks passed');
    expect(r.stdout).not.toContain('To fix:');
    expect(r.status).toBe(0);
  });

  it('shows whether tokens from other mints are swapped, and at what fee at most', async () => {
    const r = await cli({ ...good, FOREIGN_MINTS: 'swap', FOREIGN_MINT_MAX_FEE_PERCENT: '2', FOREIGN_MINT_MIN_FEE_SATS: '4', PEER_FAILURE_COOLDOWN_SECONDS: '30', FOREIGN_MINT_MAX_PENDING_SWAPS: '7' }, 'doctor');
    expect(row(r.stdout, 'tokens from other mints').slice(1)).toEqual([
      'ok',
      'swapped over Lightning into the first trusted mint (FOREIGN_MINTS=swap), fee at most 2 % or 4 sats; a failed mint rests 30 s; at most 7 swaps pending per mint',
    ]);
    expect(r.status).toBe(0);
  });

  it('checks an aliased mint where the gateway reaches it, not at the URL wallets use', async () => {
    // The public name resolves nowhere here, as http://localhost:3338 means nothing inside Docker.
    const r = await cli({ ...good, CASHU_MINTS: 'http://wallets.invalid:3338', CASHU_MINT_ALIASES: `http://wallets.invalid:3338=${mintUrl}` }, 'doctor');
    expect(r.stderr).toContain(`checking the mint at ${mintUrl}…`);
    expect(row(r.stdout, `mint ${mintUrl}`)[1]).toBe('ok');
    expect(r.stdout).not.toContain('wallets.invalid');
    expect(r.status).toBe(0);
  });

  it('reports each broken part with its fix, and exits 1', async () => {
    const closed = await freePort();
    const broken = {
      ...good,
      UPSTREAM_BASE_URL: `http://127.0.0.1:${closed}/v1`,
      CASHU_MINTS: `${mintUrl},http://127.0.0.1:${closed}`,
      // A database file under a regular file can never be created.
      DATABASE_URL: `sqlite:${join(cwd, 'not-a-folder', 'gateway.db')}`,
      RELAYS: `${relay.url},ws://127.0.0.1:${closed}`,
    };
    writeFileSync(join(cwd, 'not-a-folder'), 'a file');
    const r = await cli(broken, 'doctor');
    expect(r.status).toBe(1);
    const up = row(r.stdout, `upstream http://127.0.0.1:${closed}/v1`);
    expect(up[1]).toBe('FAIL');
    expect(up[2]).toContain('ECONNREFUSED');
    expect(row(r.stdout, `mint ${mintUrl}`)[1]).toBe('ok');
    const deadMint = row(r.stdout, `mint http://127.0.0.1:${closed}`);
    expect(deadMint[1]).toBe('FAIL');
    expect(deadMint[2]).toContain('ECONNREFUSED');
    const db = r.stdout.split('\n').find((l) => l.startsWith('database '))!;
    expect(db).toMatch(/\s{2}FAIL\s{2}/);
    expect(row(r.stdout, `relay ${relay.url}`)[1]).toBe('ok');
    expect(row(r.stdout, `relay ws://127.0.0.1:${closed}`)[1]).toBe('FAIL');
    const fixes = r.stdout.slice(r.stdout.indexOf('To fix:'));
    expect(fixes).toContain(`- upstream http://127.0.0.1:${closed}/v1 (FAIL): Check that the upstream is running`);
    expect(fixes).toContain(`- mint http://127.0.0.1:${closed} (FAIL): Check that the mint is up and that CASHU_MINTS holds its base URL`);
    expect(fixes).toMatch(/- database sqlite:.* \(FAIL\): DATABASE_URL=sqlite:<path>: the file \(and its folder\) must be creatable/);
    expect(fixes).toContain(`- relay ws://127.0.0.1:${closed} (FAIL): Check the relay URL`);
    expect(r.stdout).toContain('4 failed');
  });

  it('names the upstream credentials when the upstream refuses them, and bad configuration', async () => {
    // A server that refuses every request with 401, as an upstream given a wrong key does.
    const { createServer } = await import('node:http');
    const refusing = createServer((_req, res) => res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"message":"bad key"}}'));
    await new Promise<void>((ok) => refusing.listen(0, '127.0.0.1', ok));
    try {
      const url = `http://127.0.0.1:${(refusing.address() as { port: number }).port}/v1`;
      const r = await cli({ ...good, UPSTREAM_BASE_URL: url, UPSTREAM_API_KEY: 'sk-wrong' }, 'doctor');
      expect(r.status).toBe(1);
      expect(row(r.stdout, `upstream ${url}`)[2]).toContain('answered 401');
      expect(r.stdout).toContain('The upstream refused the credentials: set UPSTREAM_API_KEY');
      expect(r.stdout).not.toContain('sk-wrong');
    } finally {
      refusing.close();
    }
    // PostgreSQL that is not there; the password in the URL is never printed.
    const closed = await freePort();
    const pg = await cli({ ...good, DATABASE_URL: `postgres://gateway:s3cret@127.0.0.1:${closed}/gateway` }, 'doctor');
    expect(pg.status).toBe(1);
    const db = row(pg.stdout, `database postgres://gateway:***@127.0.0.1:${closed}/gateway`);
    expect(db[1]).toBe('FAIL');
    expect(db[2]).toContain('ECONNREFUSED');
    expect(pg.stdout).toContain('Check that PostgreSQL is running and reachable');
    expect(pg.stdout + pg.stderr).not.toContain('s3cret');

    const bad = await cli({ ...good, PORT: 'eighty' }, 'doctor');
    expect(bad.status).toBe(1);
    expect(row(bad.stdout, 'configuration')[1]).toBe('FAIL');
    expect(row(bad.stdout, 'configuration')[2]).toContain('PORT');
  });
});

describe('cashu-gateway doctor with an upstreams file', () => {
  it('checks every upstream in it: listing, fixed model lists, and one that is down', async () => {
    const { createServer } = await import('node:http');
    // An upstream that serves a fixed list and has no /models of its own.
    const noList = createServer((_req, res) => res.writeHead(404).end());
    await new Promise<void>((ok) => noList.listen(0, '127.0.0.1', ok));
    try {
      const noListUrl = `http://127.0.0.1:${(noList.address() as { port: number }).port}/v1`;
      const dead = `http://127.0.0.1:${await freePort()}/v1`;
      const file = join(cwd, 'upstreams.json');
      writeFileSync(
        file,
        JSON.stringify({
          upstreams: [
            { name: 'local', base_url: upstream.url },
            { name: 'fixed', base_url: noListUrl, models: ['fixed-model'] },
            { name: 'gone', base_url: dead },
          ],
        }),
      );
      const { UPSTREAM_BASE_URL: _unused, ...rest } = good;
      const r = await cli({ ...rest, UPSTREAMS_FILE: file }, 'doctor');
      expect(r.stderr).toContain(`checking the upstreams in ${file}…`);
      expect(row(r.stdout, `upstream local ${upstream.url}`)[1]).toBe('ok');
      const fixed = row(r.stdout, `upstream fixed ${noListUrl}`);
      expect(fixed[1]).toBe('warn');
      expect(fixed[2]).toBe('upstream /models answered 404; it serves the 1 models named in the upstreams file');
      expect(row(r.stdout, `upstream gone ${dead}`)[1]).toBe('FAIL');
      expect(r.stdout).toContain('1 failed, 1 warning');
      expect(r.status).toBe(1);

      writeFileSync(file, JSON.stringify({ upstreams: [{ name: 'x' }] }));
      const badFile = await cli({ ...rest, UPSTREAMS_FILE: file }, 'doctor');
      expect(badFile.status).toBe(1);
      const bad = row(badFile.stdout, `upstreams file ${file}`);
      expect(bad[1]).toBe('FAIL');
      expect(bad[2]).toContain('UPSTREAMS_FILE upstreams.0.base_url');
    } finally {
      noList.close();
    }
  });
});

describe('cashu-gateway models', () => {
  it('prints the served models and their prices, from the upstream and the configuration', async () => {
    const r = await cli(good, 'models');
    expect(r.status).toBe(0);
    expect(r.stderr).toContain(`listing models at ${upstream.url}…`);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]!.split(/\s{2,}/)).toEqual(['MODEL', 'PROMPT msat/tok', 'COMPLETION msat/tok', 'PRICE', 'MAX OUT', 'CONTEXT', 'MAX COST sat', 'SOURCE']);
    const cells = (id: string) => lines.find((l) => l.startsWith(`${id} `))!.split(/\s{2,}/);
    // (128000 - 1000) prompt tokens at 2 msats plus 1000 completion tokens at 5.5 msats.
    expect(cells('gpt-test')).toEqual(['gpt-test', '2', '5.5', 'configured', '1000', '128000', '259.5', 'upstream']);
    expect(cells('gpt-cheap')).toEqual(['gpt-cheap', '1', '3', 'default', '4096', '128000', '136.192', 'upstream']);
    expect(cells('text-embed')[7]).toBe('upstream');
    expect(cells('extra-model')).toEqual(['extra-model', '1', '3', 'default', '4096', '128000', '136.192', 'configured']);
    expect(lines).toHaveLength(5);

    const json = await cli(good, 'models', '--json');
    expect(json.status).toBe(0);
    const rows = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    expect(rows.find((m) => m.id === 'gpt-test')).toEqual({
      id: 'gpt-test',
      source: 'upstream',
      price: 'configured',
      prompt_msats_per_token: 2,
      completion_msats_per_token: 5.5,
      max_completion_tokens: 1000,
      context_length: 128000,
      max_cost_sats: 259.5,
    });
    expect(rows.map((m) => m.id).sort()).toEqual(['extra-model', 'gpt-cheap', 'gpt-test', 'text-embed']);
  });

  it('still prints the configured models when the upstream is down, and exits 1', async () => {
    const r = await cli({ ...good, UPSTREAM_BASE_URL: `http://127.0.0.1:${await freePort()}/v1` }, 'models');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("could not list the upstream's models");
    const ids = r.stdout.trim().split('\n').slice(1).map((l) => l.split(/\s{2,}/)[0]);
    expect(ids.sort()).toEqual(['extra-model', 'gpt-test']);
  });

  it('explains itself with --help, as every command does', async () => {
    for (const cmd of ['serve', 'withdraw', 'models', 'doctor']) {
      const r = await cli({}, cmd, '--help');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(`Usage: cashu-gateway ${cmd}`);
    }
    const main = await cli({}, '--help');
    expect(main.stdout).toMatch(/models\s+List the models/);
    expect(main.stdout).toMatch(/doctor\s+Check the upstream/);
  });
});
