import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort, stopProcess } from './ports.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');

export interface RunningMint {
  url: string;
  dir: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

export function ensureNutshell(): string {
  const r = spawnSync('bash', [join(ROOT, 'scripts', 'setup-mint.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error('could not install nutshell (see the message above)');
  return join(ROOT, '.venv', 'bin', 'mint');
}

/** What the FakeWallet node does with every payment the mint makes: refuse it, or leave it in flight. */
const LIGHTNING = { fails: 'FAILED', stalls: 'PENDING' } as const;

/**
 * Starts nutshell with its FakeWallet backend (sat and msat keysets) on a free loopback port.
 * `lightning`: a node that fails or stalls the mint's payments, as real nodes sometimes do.
 */
export async function startMint(
  opts: { port?: number; dir?: string; inputFeePpk?: number; lightning?: keyof typeof LIGHTNING; env?: Record<string, string> } = {},
): Promise<RunningMint> {
  const bin = ensureNutshell();
  const port = opts.port ?? (await freePort());
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'nutshell-'));
  const log = openSync(join(dir, 'mint.log'), 'a');
  // uvicorn drops an idle connection after 5 s; a client whose event loop was busy for that long
  // (a test scanning a 256 MB answer in-process) would then send on a socket already closed. A
  // minute, as proxies in front of real mints keep them, leaves the closing to the client.
  const proc = spawn(bin, ['--timeout-keep-alive=60'], {
    cwd: dir,
    stdio: ['ignore', log, log],
    env: {
      PATH: process.env.PATH,
      HOME: dir,
      MINT_BACKEND_BOLT11_SAT: 'FakeWallet',
      MINT_BACKEND_BOLT11_MSAT: 'FakeWallet',
      MINT_DERIVATION_PATH_LIST: `["m/0'/0'/0'", "m/0'/1'/0'"]`,
      MINT_PRIVATE_KEY: 'TEST_PRIVATE_KEY',
      MINT_LISTEN_HOST: '127.0.0.1',
      MINT_LISTEN_PORT: String(port),
      MINT_DATABASE: join(dir, 'db'),
      MINT_INPUT_FEE_PPK: String(opts.inputFeePpk ?? 0),
      FAKEWALLET_DELAY_INCOMING_PAYMENT: '0',
      FAKEWALLET_DELAY_OUTGOING_PAYMENT: '0',
      MINT_RATE_LIMIT: 'FALSE',
      TOR: 'FALSE',
      DEBUG: 'FALSE',
      ...(opts.lightning ? { FAKEWALLET_PAY_INVOICE_STATE: LIGHTNING[opts.lightning], FAKEWALLET_PAYMENT_STATE: LIGHTNING[opts.lightning] } : {}),
      ...opts.env,
    },
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`nutshell exited with ${proc.exitCode}; see ${join(dir, 'mint.log')}`);
    try {
      const res = await fetch(`${url}/v1/keysets`);
      if (res.ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`nutshell did not start; see ${join(dir, 'mint.log')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    dir,
    proc,
    stop: () => stopProcess(proc),
  };
}

/**
 * A stopped mint started again where it was (its port, its database) with an honest node: a mint
 * back from an outage, or one whose node has settled the payments it held.
 */
export function startMintAgain(mint: RunningMint): Promise<RunningMint> {
  return startMint({ port: Number(new URL(mint.url).port), dir: mint.dir });
}
