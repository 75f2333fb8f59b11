#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { setGlobalRequestOptions } from '@cashu/cashu-ts';
import { CashuWallets } from './cashu/wallet.ts';
import { loadP2pkKey } from './cashu/p2pk.ts';
import { createLogger } from './log.ts';
import { configOrExit, openLedger, serve } from './main.ts';
import { VERSION } from './version.ts';

const HELP: Record<string, string> = {
  main: `cashu-gateway ${VERSION}: an OpenAI-compatible AI gateway paid with Cashu ecash

Usage: cashu-gateway [command] [--help]

Commands:
  serve      Start the gateway (the default). Configuration comes from the environment and .env.
  withdraw   Pay the operator's earnings out as a Cashu token, printed on standard output.

Run 'cashu-gateway <command> --help' for a command's details.`,
  serve: `Usage: cashu-gateway serve

Starts the HTTP gateway on HOST:PORT. Every setting is an environment variable (or a line in
.env); see the configuration table in the README. Stops cleanly on SIGINT or SIGTERM.`,
  withdraw: `Usage: cashu-gateway withdraw

Takes the operator's earnings (msats charged minus msats already withdrawn), in whole sats, out
of the gateway's wallet as a Cashu token at the first trusted mint that can pay it, and prints the
token on standard output. The withdrawal is booked in the same ledger transaction that sets the
proofs aside, and the swap is journaled, so an interrupted withdrawal is settled on the next start.
Uses DATABASE_URL and CASHU_MINTS from the environment.`,
};

async function withdraw(): Promise<number> {
  const cfg = configOrExit();
  const log = createLogger(cfg.LOG_LEVEL === 'info' ? 'warn' : cfg.LOG_LEVEL);
  setGlobalRequestOptions({ requestTimeout: cfg.MINT_TIMEOUT_MS });
  const ledger = await openLedger(cfg.DATABASE_URL);
  try {
    const wallets = new CashuWallets(cfg.CASHU_MINTS, ledger, log, {
      mintTimeoutMs: cfg.MINT_TIMEOUT_MS,
      p2pk: loadP2pkKey(cfg.CASHU_P2PK_PRIVKEY, cfg.DATA_DIR),
      locktimeMarginSec: cfg.P2PK_LOCKTIME_MARGIN_SECONDS,
    });
    process.stderr.write('withdrawing earnings…\n');
    const r = await wallets.withdraw();
    if (!r) {
      process.stderr.write('nothing to withdraw: earnings are below 1 sat\n');
      return 0;
    }
    process.stdout.write(`${r.token}\n`);
    process.stderr.write(`withdrew ${r.amount} ${r.unit} from ${r.mint}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`withdraw failed: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await ledger.close();
  }
}

const { positionals, values } = parseArgs({ allowPositionals: true, strict: false, options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' } } });
const command = positionals[0] ?? 'serve';
if (values.version) {
  console.log(VERSION);
} else if (!(command in HELP) || command === 'main') {
  console.error(`unknown command: ${command}\n\n${HELP.main}`);
  process.exit(2);
} else if (values.help) {
  console.log(positionals.length ? HELP[command] : HELP.main);
} else if (command === 'serve') {
  await serve(configOrExit());
} else {
  process.exit(await withdraw());
}
