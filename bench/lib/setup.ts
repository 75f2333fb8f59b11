import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMint, type RunningMint } from '../../test/support/mint.ts';
import { freshDatabase, startPostgres, type RunningPostgres } from '../../test/support/postgres.ts';
import { PRICES } from '../../test/support/gateway.ts';
import { forkServer, rssMb, startGateway, type Child, type GatewayProc } from './procs.ts';
import { mintBigToken } from './tokens.ts';

export type Engine = 'sqlite' | 'postgres';

export interface Stack {
  dir: string;
  mint: RunningMint;
  mintProxy: Child;
  upstream: Child;
  bare?: Child;
  /** Starts a gateway on the given ledger engine, funded with one balance key; `extra` overrides settings. */
  gateway(engine: Engine, extra?: Record<string, string>, root?: string): Promise<GatewayRun>;
  stop(): Promise<void>;
}

export interface GatewayRun {
  engine: Engine;
  proc: GatewayProc;
  apiKey: string;
  pubkey: string;
  env: Record<string, string>;
  /** The gateway's RSS once started and funded, before any load. */
  idleRssMb: number;
  stop(): Promise<void>;
}

/** Upstream connections of the bare proxy: the gateway's own default (`UPSTREAM_CONNECTIONS`). */
export const UPSTREAM_CONNECTIONS = 1024;

/**
 * The settings a gateway in the bench has: what an operator must set (upstream, mint, prices, the
 * ledger's URL for PostgreSQL) and what the README tells load testers to change (the per-IP and
 * per-key limits, which refuse one client sending thousands of requests a second). Everything
 * else is the default: info logging with an access line per request, the background sweep of
 * locked proofs, the default upstream pool, a P2PK key the gateway makes itself.
 */
function operatorEnv(upstream: string, mint: string, dir: string, databaseUrl?: string): Record<string, string> {
  return {
    UPSTREAM_BASE_URL: upstream,
    CASHU_MINTS: mint,
    MODEL_PRICES: JSON.stringify(PRICES),
    RATE_LIMIT_PER_MINUTE_IP: '0',
    RATE_LIMIT_PER_MINUTE_KEY: '0',
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : { DATA_DIR: join(dir, 'data') }),
  };
}

/**
 * Everything the benchmark measures, each in its own process: nutshell (FakeWallet), the counting
 * proxy in front of it (which can hold every call for a set delay: a mint that far away), the
 * upstream double, the bare proxy, and, one engine at a time, the gateway.
 */
export async function startStack(opts: { bare: boolean; fundSats: number }): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'cashu-bench-'));
  const started: Array<{ stop(): Promise<void> }> = [];
  let pg: RunningPostgres | undefined;
  const stopAll = async () => {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const mint = await startMint();
    started.push(mint);
    const mintProxy = await forkServer('mint-proxy.ts', { MINT_URL: mint.url }, { transformTypes: true });
    started.push(mintProxy);
    const upstream = await forkServer('upstream.ts');
    started.push(upstream);
    const bare = opts.bare ? await forkServer('bare-proxy.ts', { UPSTREAM_BASE_URL: upstream.url, UPSTREAM_CONNECTIONS: String(UPSTREAM_CONNECTIONS) }) : undefined;
    if (bare) started.push(bare);

    const gateway = async (engine: Engine, extra: Record<string, string> = {}, root?: string): Promise<GatewayRun> => {
      if (engine === 'postgres' && !pg) {
        pg = await startPostgres();
        started.push(pg);
      }
      const gwDir = mkdtempSync(join(dir, `${engine}-`));
      const env = { ...operatorEnv(upstream.url, mintProxy.url, gwDir, pg && engine === 'postgres' ? await freshDatabase(pg.url) : undefined), ...extra };
      const proc = await startGateway(env, gwDir, root);
      try {
        const token = await mintBigToken(mint.url, mintProxy.url, opts.fundSats);
        const res = await fetch(`${proc.url}/v1/balance/create`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ initial_balance_token: token }),
        });
        if (!res.ok) throw new Error(`funding the balance key failed: ${res.status} ${await res.text()}`);
        const { api_key: apiKey } = (await res.json()) as { api_key: string };
        const info = (await (await fetch(`${proc.url}/v1/info`)).json()) as { p2pk_pubkey?: string };
        if (!info.p2pk_pubkey) throw new Error('the gateway publishes no P2PK key: the locked rows cannot run');
        return { engine, proc, apiKey, pubkey: info.p2pk_pubkey, env, idleRssMb: rssMb([proc.pid]), stop: () => proc.stop() };
      } catch (e) {
        await proc.stop();
        throw e;
      }
    };
    return { dir, mint, mintProxy, upstream, bare, gateway, stop: stopAll };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
