import { execFile, spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stopProcess } from './ports.ts';
import type { RunningMint } from './mint.ts';
import { daemonHome, setupOnce } from './setup-once.ts';

// BIP39's well-known test phrase: a test mint's keys need not be secret, only valid.
const MNEMONIC = 'abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about';

/**
 * Builds cdk-mintd if this machine has not yet (10 to 30 minutes on 2 cores the first time, a
 * no-op after), without blocking the test worker: for a beforeAll with a timeout to match.
 */
export function prepareCdkMintd(): Promise<string> {
  return setupOnce('setup-cdk-mintd.sh', 'cdk-mintd');
}

/**
 * Starts cdk-mintd (the Cashu Development Kit's mint) with its fake Lightning backend, sat only, on
 * a free loopback port. Its configuration lives in its database: the TOML is imported once by
 * `config init` (0.18's model), then the daemon starts. A new mint gets NUT-02 v2 keysets.
 */
export async function startCdkMint(opts: { inputFeePpk?: number } = {}): Promise<RunningMint> {
  const { bin, port, dir, config } = await daemonHome('setup-cdk-mintd.sh', 'cdk-mintd', ({ port }) => `[info]
url = "http://127.0.0.1:${port}"
listen_host = "127.0.0.1"
listen_port = ${port}
mnemonic = "env:CDK_MINTD_MNEMONIC"
input_fee_ppk = ${opts.inputFeePpk ?? 0}
enable_info_page = false

[info.logging]
output = "stderr"
console_level = "info"

[mint_info]
name = "cashu-gateway test cdk-mintd"
description = "fake Lightning, test sats"

[database]
engine = "sqlite"

[payment_backend]
backend = "fakewallet"
unit = "sat"

# Incoming invoices are paid at once and outgoing ones settle at once; 2 % / 1 sat fee reserve.
[fake_wallet]
fee_percent = 0.02
reserve_fee_min = 1
min_delay_time = 0
max_delay_time = 0
custom_payment_methods = []
`);
  const url = `http://127.0.0.1:${port}`;
  const env = { PATH: process.env.PATH ?? '', HOME: dir, CDK_MINTD_MNEMONIC: MNEMONIC, RUST_LOG: 'warn' };
  await promisify(execFile)(bin, ['--work-dir', dir, 'config', 'init', '--new-mint', '--file', config], { env }).catch((e: { stderr?: string; message: string }) => {
    throw new Error(`cdk-mintd config init failed: ${e.stderr ?? e.message}`);
  });
  const log = openSync(join(dir, 'mint.log'), 'a');
  const proc = spawn(bin, ['--work-dir', dir], { cwd: dir, stdio: ['ignore', log, log], env });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`cdk-mintd exited with ${proc.exitCode}; see ${join(dir, 'mint.log')}`);
    try {
      const res = await fetch(`${url}/v1/keysets`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`cdk-mintd did not start; see ${join(dir, 'mint.log')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, dir, proc, stop: () => stopProcess(proc) };
}
