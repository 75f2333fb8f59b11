import { beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadConfig } from '../src/config.ts';

const ROOT = resolve(import.meta.dirname, '..');
let compose: string[];
let env: NodeJS.ProcessEnv;

/** `docker compose config` on a file: what Compose makes of it, or why it refuses it. */
function composeConfig(file: string) {
  const [cmd, ...args] = compose;
  return spawnSync(cmd!, [...args, '-f', file, 'config', '--format', 'json'], { env, encoding: 'utf8' });
}

beforeAll(() => {
  // The machine's own `docker compose`, or the plugin built from the Go module proxy.
  const setup = spawnSync('bash', [join(ROOT, 'scripts', 'setup-compose.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (setup.status !== 0) throw new Error('could not set up docker compose (see the message above)');
  const dockerConfig = setup.stdout.trim();
  env = { ...process.env, ...(dockerConfig ? { DOCKER_CONFIG: dockerConfig } : {}) };
  const hasDocker = spawnSync('docker', ['--version']).status === 0;
  compose = hasDocker ? ['docker', 'compose'] : [join(dockerConfig, 'cli-plugins', 'docker-compose')];
}, 20 * 60_000);

describe('docker-compose.yml', () => {
  it('passes `docker compose config`: the gateway, a mint, a relay and Ollama, with their data on volumes', () => {
    const r = composeConfig(join(ROOT, 'docker-compose.yml'));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const c = JSON.parse(r.stdout);
    expect(Object.keys(c.services).sort()).toEqual(['gateway', 'mint', 'ollama', 'relay']);
    expect(Object.keys(c.volumes).sort()).toEqual(['gateway-data', 'mint-data', 'ollama-data', 'relay-data']);
    const gateway = c.services.gateway;
    expect(gateway.depends_on).toMatchObject({ mint: {}, relay: {}, ollama: {} });
    expect(gateway.volumes).toEqual([expect.objectContaining({ type: 'volume', source: 'gateway-data', target: '/data' })]);
    expect(c.services.mint.volumes).toEqual([expect.objectContaining({ type: 'volume', source: 'mint-data', target: '/data' })]);
    expect(c.services.mint.environment.MINT_BACKEND_BOLT11_SAT).toBe('FakeWallet');
    // The gateway's environment, as Compose resolves it, is a configuration the gateway accepts,
    // pointing at the other services by name.
    const cfg = loadConfig(gateway.environment);
    // Trusted under the URL wallets on the host use, reached under its name in the network.
    expect(cfg.CASHU_MINTS).toEqual(['http://localhost:3338']);
    expect(cfg.CASHU_MINT_ALIASES).toEqual({ 'http://localhost:3338': 'http://mint:3338' });
    expect(c.services.mint.ports).toEqual([expect.objectContaining({ target: 3338, published: '3338' })]);
    expect(cfg.UPSTREAM_BASE_URL).toBe('http://ollama:11434/v1');
    expect(cfg.RELAYS).toEqual(['ws://relay:8080']);
    expect(cfg.DATABASE_URL).toBe('sqlite:/data/gateway.db');
  });

  it('and Compose would refuse the file with a mistake in it', () => {
    const broken = join(mkdtempSync(join(tmpdir(), 'compose-')), 'docker-compose.yml');
    writeFileSync(broken, readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8').replace('"gateway-data:/data"', '"gateway-dta:/data"'));
    const r = composeConfig(broken);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('undefined volume gateway-dta');
  });
});
