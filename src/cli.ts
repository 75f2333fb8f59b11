#!/usr/bin/env node
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config.ts';
import { createLogger } from './log.ts';
import { configOrExit, openLedger, serve, walletsFor } from './main.ts';
import { checkAnnouncements, checkDatabase, checkForeignMints, checkMint, checkRelay, checkUpstreams, report, type Check } from './ops/doctor.ts';
import { listModels, modelsTable } from './ops/models.ts';
import { VERSION } from './version.ts';

const HELP: Record<string, string> = {
  main: `cashu-gateway ${VERSION}: an OpenAI-compatible AI gateway paid with Cashu ecash

Usage: cashu-gateway [command] [--help]

Commands:
  serve      Start the gateway (the default). Configuration comes from the environment and .env.
  withdraw   Pay the operator's earnings out as a Cashu token, or to a Lightning invoice.
  models     List the models the gateway serves and their prices.
  doctor     Check the upstream, the mints, the database and the relays, and say how to fix problems.

Run 'cashu-gateway <command> --help' for a command's details.`,
  serve: `Usage: cashu-gateway serve

Starts the HTTP gateway on HOST:PORT. Every setting is an environment variable (or a line in
.env); see the configuration table in the README. Stops cleanly on SIGINT or SIGTERM.`,
  withdraw: `Usage: cashu-gateway withdraw [--invoice <bolt11>]

Without --invoice: takes the operator's earnings (msats charged minus msats withdrawn and fees
paid), in whole sats, out of the gateway's wallet as a Cashu token at the first trusted mint that
can pay it, and prints the token on standard output.

With --invoice: pays the Lightning invoice from the earnings by melting proofs at the first
trusted mint that quotes it (NUT-05). The invoice must carry an amount; the earnings must cover
it plus the mint's fee reserve, and the unused reserve comes back as change (NUT-08). Prints the
payment preimage on standard output and the amount and fee on standard error.

Either way the withdrawal is booked in the same ledger transaction that sets the proofs aside,
and the mint call is journaled first, so an interrupted withdrawal is settled on the next start
(of the gateway, or of this command). Uses DATABASE_URL and CASHU_MINTS from the environment.

Options:
  --invoice <bolt11>   Pay this invoice instead of printing a token.`,
  models: `Usage: cashu-gateway models [--json]

Lists the models the gateway would serve now, as the server builds the list: the upstream's
GET /models, plus the ids in MODELS and MODEL_PRICES. For each: the price in msats per prompt and
completion token (from MODEL_PRICES, or DEFAULT_PROMPT_MSATS_PER_TOKEN and
DEFAULT_COMPLETION_MSATS_PER_TOKEN), the completion tokens reserved at most, the context length,
the most one request can cost in sats, and where the model comes from.

Options:
  --json   Print a JSON array instead of a table.

Exits 1 when the upstream cannot be listed (the configured models are still printed).`,
  doctor: `Usage: cashu-gateway doctor

Checks what the gateway depends on, with the configuration from the environment and .env:
  - the configuration itself;
  - each upstream (UPSTREAMS_FILE, else UPSTREAM_BASE_URL with UPSTREAM_API_KEY): GET /models;
  - each mint in CASHU_MINTS, at its internal URL when CASHU_MINT_ALIASES gives one: /v1/info
    and /v1/keysets (an active sat or msat keyset), and whether it supports NUT-11/12 (locked
    payments) and NUT-07/09 (crash recovery);
  - the database at DATABASE_URL: opened, schema created or migrated, and read;
  - each Nostr relay in RELAYS, when set: a WebSocket connection.
Prints a table of what works and what does not, then the fix for each problem. Progress goes to
standard error. Exits 0 when nothing failed (warnings allowed), 1 otherwise.`,
};

function loadEnvFile(): void {
  if (existsSync('.env')) process.loadEnvFile('.env');
}

async function models(json: boolean): Promise<number> {
  const cfg = configOrExit();
  const log = createLogger(cfg.LOG_LEVEL === 'info' ? 'error' : cfg.LOG_LEVEL);
  process.stderr.write(`listing models at ${cfg.UPSTREAM_BASE_URL}…\n`);
  let listed;
  try {
    listed = await listModels(cfg, log);
  } catch (e) {
    // A broken UPSTREAMS_FILE, reported like any other configuration problem.
    for (const line of (e as Error).message.split('\n')) console.error(`config: ${line}`);
    return 2;
  }
  const { rows, upstreamError } = listed;
  if (upstreamError) process.stderr.write(`could not list the upstream's models (${upstreamError}); showing the configured models only\n`);
  if (json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
  else if (rows.length) process.stdout.write(`${modelsTable(rows)}\n`);
  else process.stderr.write('no models: the upstream listed none and MODELS and MODEL_PRICES name none\n');
  return upstreamError ? 1 : 0;
}

async function doctor(): Promise<number> {
  loadEnvFile();
  const checks: Check[] = [];
  const step = async <T extends Check | Check[]>(what: string, run: () => Promise<T>): Promise<void> => {
    process.stderr.write(`checking ${what}…\n`);
    const r = await run();
    checks.push(...(Array.isArray(r) ? r : [r]));
  };
  let cfg;
  try {
    cfg = loadConfig();
    checks.push({ name: 'configuration', status: 'ok', detail: 'every variable is valid' });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    checks.push({
      name: 'configuration',
      status: 'FAIL',
      detail: e.problems.join('; '),
      fix: 'Correct the variables named (environment or .env); the README lists each one with its format.',
    });
    process.stdout.write(report(checks));
    return 1;
  }
  const c = cfg;
  await step(c.UPSTREAMS_FILE ? `the upstreams in ${c.UPSTREAMS_FILE}` : `the upstream at ${c.UPSTREAM_BASE_URL}`, () => checkUpstreams(c));
  for (const m of c.CASHU_MINTS) {
    const mint = c.CASHU_MINT_ALIASES[m] ?? m;
    await step(`the mint at ${mint}`, () => checkMint(mint, c.MINT_TIMEOUT_MS));
  }
  checks.push(checkForeignMints(c));
  await step('the database', () => checkDatabase(c.DATABASE_URL, openLedger));
  const relays = (process.env.RELAYS ?? '')
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean);
  for (const relay of relays) await step(`the relay at ${relay}`, () => checkRelay(relay));
  checks.push(...checkAnnouncements(c));
  process.stdout.write(report(checks));
  return checks.some((x) => x.status === 'FAIL') ? 1 : 0;
}

async function withdraw(invoice: string | undefined): Promise<number> {
  const cfg = configOrExit();
  const log = createLogger(cfg.LOG_LEVEL === 'info' ? 'warn' : cfg.LOG_LEVEL);
  const ledger = await openLedger(cfg.DATABASE_URL);
  try {
    const wallets = walletsFor(cfg, ledger, log, false);
    // An earlier withdrawal cut short is settled first, so its earnings are counted right.
    await wallets.recoverAll();
    if (invoice) {
      process.stderr.write('paying the invoice from the earnings…\n');
      const m = await wallets.melt(invoice);
      if (m.state === 'pending') {
        process.stderr.write(`the payment of ${m.amount} ${m.unit} is still in flight; the gateway settles it when it completes\n`);
        return 3;
      }
      if (m.preimage) process.stdout.write(`${m.preimage}\n`);
      process.stderr.write(`paid ${m.amount} ${m.unit} from ${m.mint}, fee ${m.fee} ${m.unit}\n`);
      return 0;
    }
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

const { positionals, values } = parseArgs({
  allowPositionals: true,
  strict: false,
  options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' }, json: { type: 'boolean' }, invoice: { type: 'string' } },
});
// `cashu-gateway help [command]` is read as `--help`, as git and npm read it.
const asked = positionals[0] === 'help';
if (asked) positionals.shift();
const command = positionals[0] ?? 'serve';
if (values.version) {
  console.log(VERSION);
} else if (!(command in HELP) || command === 'main') {
  console.error(`unknown command: ${command}\n\n${HELP.main}`);
  process.exit(2);
} else if (values.help || asked) {
  console.log(positionals.length ? HELP[command] : HELP.main);
} else if (command === 'serve') {
  await serve(configOrExit());
} else if (command === 'models') {
  process.exit(await models(values.json === true));
} else if (command === 'doctor') {
  process.exit(await doctor());
} else {
  process.exit(await withdraw(typeof values.invoice === 'string' ? values.invoice : undefined));
}
