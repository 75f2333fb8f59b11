import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { freePort } from './ports.ts';
import { durableDatabaseUrl, type PriceTable } from './gateway.ts';

export interface GatewayProcess {
  url: string;
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/**
 * The settings of a gateway run as its own process against the test mint and `upstreamUrl`, on a
 * database that outlives it, so that what it took in can be drained from here once it has stopped.
 */
export async function processEnv(mintUrl: string, upstreamUrl: string, prices: PriceTable, extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return { UPSTREAM_BASE_URL: upstreamUrl, CASHU_MINTS: mintUrl, DATABASE_URL: await durableDatabaseUrl(), MODEL_PRICES: JSON.stringify(prices), ...extra };
}

/** Runs the gateway as its own process, as an operator would, and waits until it is ready. */
export async function startGatewayProcess(env: Record<string, string>): Promise<GatewayProcess> {
  const port = await freePort();
  const proc = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', resolve('src/main.ts')], {
    env: { PATH: process.env.PATH, HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  for (let i = 0; i < 200 && !out.includes('gateway ready'); i++) {
    if (proc.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!out.includes('gateway ready')) throw new Error(`gateway did not start:\n${out}`);
  return {
    url: `http://127.0.0.1:${port}`,
    proc,
    output: () => out,
    exited,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        await exited;
      }
    },
  };
}
