import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getPubKeyFromPrivKey } from '@cashu/cashu-ts';
import { startMint, type RunningMint } from '../../test/support/mint.ts';
import { PRICES, TEST_P2PK_PRIVKEY } from '../../test/support/gateway.ts';
import { forkServer, rssMb, startGateway, type Child, type GatewayProc } from './procs.ts';
import { mintBigToken } from './tokens.ts';

export interface Stack {
  dir: string;
  mint: RunningMint;
  mintProxy: Child;
  upstream: Child;
  bare?: Child;
  gateway: GatewayProc;
  apiKey: string;
  pubkey: string;
  gatewayEnv: Record<string, string>;
  /** The gateway's RSS once started and funded, before any load. */
  idleRssMb: number;
  stop(): Promise<void>;
}

/** Upstream connections for the gateway and the bare proxy: more than the 1,000 concurrent streams. */
export const UPSTREAM_CONNECTIONS = 2048;

/**
 * Everything the benchmark measures, each in its own process: nutshell (FakeWallet), the counting
 * proxy in front of it, the upstream double, the bare proxy, and the gateway. Funds one balance
 * key with a large token.
 */
export async function startStack(opts: { bare: boolean; fundSats: number }): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'cashu-bench-'));
  const started: Array<{ stop(): Promise<void> }> = [];
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
    const gatewayEnv = {
      UPSTREAM_BASE_URL: upstream.url,
      CASHU_MINTS: mintProxy.url,
      DATABASE_URL: `sqlite:${join(dir, 'gateway.db')}`,
      DATA_DIR: dir,
      LOG_LEVEL: 'warn',
      CASHU_P2PK_PRIVKEY: TEST_P2PK_PRIVKEY,
      MODEL_PRICES: JSON.stringify(PRICES),
      UPSTREAM_CONNECTIONS: String(UPSTREAM_CONNECTIONS),
      // The background sweep of locked proofs makes mint calls off the request path; it is off so
      // every mint call counted during a row belongs to that row's requests.
      P2PK_REDEEM_INTERVAL_SECONDS: '0',
      // One client sending thousands of requests a second is what a benchmark is, and what the
      // per-IP and per-key limits exist to refuse: they are turned off (their check still runs).
      RATE_LIMIT_PER_MINUTE_IP: '0',
      RATE_LIMIT_PER_MINUTE_KEY: '0',
    };
    const gateway = await startGateway(gatewayEnv, dir);
    started.push(gateway);

    const token = await mintBigToken(mint.url, mintProxy.url, opts.fundSats);
    const res = await fetch(`${gateway.url}/v1/balance/create`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ initial_balance_token: token }),
    });
    if (!res.ok) throw new Error(`funding the balance key failed: ${res.status} ${await res.text()}`);
    const { api_key: apiKey } = (await res.json()) as { api_key: string };
    const info = (await (await fetch(`${gateway.url}/v1/info`)).json()) as { p2pk_pubkey: string };
    const ours = Buffer.from(getPubKeyFromPrivKey(Buffer.from(TEST_P2PK_PRIVKEY, 'hex'))).toString('hex');
    if (info.p2pk_pubkey !== ours) throw new Error('the gateway publishes an unexpected P2PK key');
    const idleRssMb = rssMb([gateway.pid]);
    return { dir, mint, mintProxy, upstream, bare, gateway, apiKey, pubkey: info.p2pk_pubkey, gatewayEnv, idleRssMb, stop: stopAll };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
