import { existsSync } from 'node:fs';
import { setGlobalRequestOptions } from '@cashu/cashu-ts';
import { loadConfig, ConfigError, type Config } from './config.ts';
import { createLogger } from './log.ts';
import { SqliteDriver, SQLITE_MIGRATIONS } from './ledger/sqlite.ts';
import { SqlLedger } from './ledger/store.ts';
import { CashuWallets } from './cashu/wallet.ts';
import { loadP2pkKey } from './cashu/p2pk.ts';
import { ForeignSwaps } from './cashu/foreign.ts';
import { PeerFetch } from './net/peer-fetch.ts';
import { VERSION } from './version.ts';
import type { Logger } from 'pino';
import { loadUpstreams } from './upstream/upstreams.ts';
import { Catalog } from './engine/catalog.ts';
import { Engine } from './engine/engine.ts';
import { buildApp } from './http/app.ts';
import type { Ledger } from './ledger/ledger.ts';
import type { Identity } from './nostr/identity.ts';

export async function openLedger(url: string): Promise<Ledger> {
  if (/^postgres(ql)?:/.test(url)) {
    // Loaded only when asked for, so the embedded default never pulls in the pg driver.
    const { PostgresDriver, POSTGRES_MIGRATIONS } = await import('./ledger/postgres.ts');
    return SqlLedger.open(new PostgresDriver(url), POSTGRES_MIGRATIONS);
  }
  return SqlLedger.open(new SqliteDriver(url === ':memory:' ? url : url.slice('sqlite:'.length)), SQLITE_MIGRATIONS);
}

/**
 * The wallets over `ledger`, as configured. `serving`: for a gateway that answers requests (its
 * change float, its batched sweeps), not for a one-off command.
 */
export function walletsFor(cfg: Config, ledger: Ledger, log: Logger, serving: boolean): CashuWallets {
  // A mint that hangs must not hold a request (or a refund) forever.
  setGlobalRequestOptions({ requestTimeout: cfg.MINT_TIMEOUT_MS });
  return new CashuWallets(cfg.CASHU_MINTS, ledger, log, {
    aliases: cfg.CASHU_MINT_ALIASES,
    mintTimeoutMs: cfg.MINT_TIMEOUT_MS,
    p2pk: loadP2pkKey(cfg.CASHU_P2PK_PRIVKEY, cfg.DATA_DIR),
    locktimeMarginSec: cfg.P2PK_LOCKTIME_MARGIN_SECONDS,
    ...(serving && {
      changeFloat: cfg.CHANGE_FLOAT_PROOFS,
      // With sweeping on, locked proofs are redeemed about a second after they arrive, in batches.
      sweepDelayMs: cfg.P2PK_REDEEM_INTERVAL_SECONDS > 0 ? 1000 : 0,
      writeOffAfterMs: cfg.P2PK_WRITE_OFF_AFTER_SECONDS * 1000,
      // A locked proof too small to swap alone waits this near its locktime for others (taken
      // offline, it had at least the margin left), then goes with one of ours that pays the fee.
      padWithinMs: Math.max(cfg.P2PK_LOCKTIME_MARGIN_SECONDS / 2, 2 * cfg.P2PK_REDEEM_INTERVAL_SECONDS, 60) * 1000,
    }),
  });
}

/** Wires the rooms together; the caller listens and closes. */
export async function createGateway(cfg: Config, opts: { log?: Logger } = {}) {
  const log = opts.log ?? createLogger(cfg.LOG_LEVEL);
  const ledger = await openLedger(cfg.DATABASE_URL);
  const wallets = walletsFor(cfg, ledger, log, true);
  // A mint named inside a stranger's token is a peer like a Lightning address's server.
  const mintPeers = cfg.FOREIGN_MINTS === 'swap'
    ? new PeerFetch({ timeoutMs: cfg.PEER_TIMEOUT_MS, maxBytes: cfg.PEER_MAX_BYTES, allowLoopback: cfg.ALLOW_INSECURE_PEERS_FOR_TESTS_ONLY })
    : undefined;
  if (mintPeers) {
    wallets.foreign = new ForeignSwaps({ ledger, wallets, peers: mintPeers, log, leaseMs: 2 * cfg.MINT_TIMEOUT_MS }, {
      maxFeePercent: cfg.FOREIGN_MINT_MAX_FEE_PERCENT,
      minFeeSats: cfg.FOREIGN_MINT_MIN_FEE_SATS,
      cooldownMs: cfg.PEER_FAILURE_COOLDOWN_SECONDS * 1000,
      maxPending: cfg.FOREIGN_MINT_MAX_PENDING_SWAPS,
      maxPendingTotal: cfg.FOREIGN_MINT_MAX_PENDING_SWAPS_TOTAL,
      expiryMarginMs: cfg.FOREIGN_SWAP_EXPIRY_MARGIN_SECONDS * 1000,
      recoveryBudgetMs: 3 * cfg.PEER_TIMEOUT_MS,
    });
  }
  const upstreams = loadUpstreams(cfg);
  const catalog = new Catalog(cfg, upstreams, log);
  const engine = new Engine({ ledger, wallets, catalog, log });
  // The Nostr identity is known before the HTTP door opens, so /v1/info can name it.
  const id = cfg.RELAYS.length > 0 ? (await import('./nostr/identity.ts')).loadIdentity(cfg.NSEC, cfg.DATA_DIR) : undefined;
  const app = buildApp({ cfg, log, ledger, wallets, catalog, engine, npub: id?.npub });
  await catalog.refresh();
  catalog.start();
  // Unfinished swaps from a previous run are settled with the mint before new ones start; then the
  // change float is topped up from what the gateway holds.
  void wallets
    .recoverAll()
    .then(() => wallets.fillFloats())
    .catch((e: Error) => log.error({ err: e.message }, 'recovery failed'));
  // Reservations belong to a live process; those of a crashed one are released, charging nothing.
  const staleMs = cfg.INSTANCE_STALE_SECONDS * 1000;
  await ledger.heartbeat();
  const released = await ledger.releaseOrphans(staleMs);
  if (released) log.warn({ released }, 'released reservations left by a stopped gateway process');
  const heartbeat = setInterval(() => {
    void ledger
      .heartbeat()
      .then(() => ledger.releaseOrphans(staleMs))
      .then((n) => n && log.warn({ released: n }, 'released reservations left by a stopped gateway process'))
      .catch((e: Error) => log.error({ err: e.message }, 'heartbeat failed'));
  }, Math.max(1000, staleMs / 6));
  heartbeat.unref();
  const sweeper =
    cfg.P2PK_REDEEM_INTERVAL_SECONDS > 0
      ? setInterval(() => void wallets.sweepLocked().catch((e: Error) => log.error({ err: e.message }, 'sweep failed')), cfg.P2PK_REDEEM_INTERVAL_SECONDS * 1000)
      : undefined;
  sweeper?.unref();
  // A melt paid asynchronously, or a swap whose answer was lost, settles without waiting for a restart.
  const recovery = setInterval(
    () => void wallets.recoverAll().catch((e: Error) => log.error({ err: e.message }, 'recovery failed')),
    Math.max(30_000, 4 * cfg.MINT_TIMEOUT_MS),
  );
  recovery.unref();
  const nostr = id ? await startNostr(cfg, id, { log, engine, catalog, wallets, ledger }) : undefined;
  const close = async () => {
    await nostr?.stop();
    clearInterval(sweeper);
    clearInterval(recovery);
    clearInterval(heartbeat);
    catalog.stop();
    await app.close();
    await wallets.stop();
    await mintPeers?.close();
    await Promise.all(upstreams.map((u) => u.client.close()));
    await ledger.close();
  };
  return { app, log, ledger, wallets, catalog, engine, nostr, upstreams, close };
}

/**
 * The Nostr door: identity, relays, announcements and the NIP-90 job service. Loaded only when
 * RELAYS is set, so a gateway without it carries none of it.
 */
async function startNostr(cfg: Config, id: Identity, deps: { log: Logger; engine: Engine; catalog: Catalog; wallets: CashuWallets; ledger: Ledger }) {
  const [{ Relays }, { Announcer, UNLISTED_WITHOUT_PUBLIC_URL }, { Dvm }, { nostrDoorKeys }] = await Promise.all([
    import('./nostr/relays.ts'),
    import('./nostr/announce.ts'),
    import('./nostr/dvm.ts'),
    import('./nostr/door-keys.ts'),
  ]);
  // Ecash sent through Nostr is public: it is locked to a key of this door, which the HTTP door refuses.
  const keys = nostrDoorKeys(id.sk);
  deps.wallets.addDoorKey(keys.p2pk.pubkey);
  if (!cfg.PUBLIC_URL) deps.log.warn(UNLISTED_WITHOUT_PUBLIC_URL);
  const relays = new Relays(cfg.RELAYS, id, deps.log, cfg.NOSTR_POW_BITS);
  const announcer = new Announcer(relays, deps.log);
  announcer.start(() => ({
    name: cfg.NAME,
    about: cfg.DESCRIPTION,
    version: VERSION,
    pubkey: id.pubkey,
    publicUrl: cfg.PUBLIC_URL,
    mints: cfg.CASHU_MINTS,
    relays: cfg.RELAYS,
    p2pkPubkey: keys.p2pk.pubkey,
    models: deps.catalog.list(),
  }));
  const dvm = new Dvm({
    relays,
    id,
    keys,
    ...deps,
    cfg: {
      defaultModel: cfg.DVM_DEFAULT_MODEL,
      maxAgeSec: cfg.DVM_MAX_AGE_SECONDS,
      maxPromptChars: cfg.DVM_MAX_PROMPT_CHARS,
      ratePerMinute: cfg.DVM_RATE_PER_MINUTE,
      freePerPubkey: cfg.FREE_REQUESTS_PER_PUBKEY,
      paymentTimeoutSec: cfg.DVM_PAYMENT_TIMEOUT_SECONDS,
      pollMs: cfg.DVM_QUOTE_POLL_MS,
    },
  });
  dvm.start();
  deps.log.info({ npub: id.npub, relays: cfg.RELAYS }, 'serving NIP-90 jobs on Nostr');
  return {
    id,
    relays,
    announcer,
    dvm,
    stop: async () => {
      announcer.stop();
      await dvm.stop();
      relays.close();
    },
  };
}

/** Reads .env and the environment; a bad value stops the process with one line per problem. */
export function configOrExit(): Config {
  if (existsSync('.env')) process.loadEnvFile('.env');
  try {
    return loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      for (const p of e.problems) console.error(`config: ${p}`);
      process.exit(2);
    }
    throw e;
  }
}

function errorText(reason: unknown): string {
  return reason instanceof Error ? (reason.stack ?? reason.message) : String(reason);
}

/**
 * What still ends the process when nobody handled it: a programming error raised in our own
 * code, after which its state cannot be trusted (money state is journaled, so a restart is safe).
 * Anything else unhandled (a relay's, a mint's or an upstream's behaviour surfacing from a library,
 * a timeout, a refusal, a closed socket) is logged and the gateway keeps serving.
 */
export function isOwnBug(reason: unknown): boolean {
  if (!(reason instanceof TypeError || reason instanceof ReferenceError || reason instanceof SyntaxError)) return false;
  const top = reason.stack?.split('\n').find((l) => /^\s+at /.test(l)) ?? '';
  return !top.includes('/node_modules/') && !top.includes('node:');
}

const LISTEN_FIX: Partial<Record<string, string>> = {
  EADDRINUSE: 'is already in use: stop the other process there, or set PORT to a free port',
  EACCES: 'is not allowed for this user: set PORT to 1024 or above',
  EADDRNOTAVAIL: 'is not an address of this machine: set HOST to one (0.0.0.0 for every interface)',
};

export async function serve(cfg: Config): Promise<void> {
  // Installed before anything connects to a peer: relays are dialled while the gateway is built.
  const log = createLogger(cfg.LOG_LEVEL);
  process.on('unhandledRejection', (reason) => {
    if (isOwnBug(reason)) {
      log.fatal({ err: errorText(reason) }, 'unhandled rejection in the gateway itself: exiting');
      process.exit(1);
    }
    log.error({ err: errorText(reason) }, 'unhandled rejection from a peer or a library, kept running');
  });
  let gw: Awaited<ReturnType<typeof createGateway>>;
  try {
    gw = await createGateway(cfg);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const p of e.problems) console.error(`config: ${p}`);
    process.exit(2);
  }
  try {
    await gw.app.listen({ port: cfg.PORT, host: cfg.HOST });
  } catch (e) {
    const fix = LISTEN_FIX[(e as NodeJS.ErrnoException).code ?? ''];
    if (!fix) throw e;
    console.error(`listen: ${cfg.HOST}:${cfg.PORT} ${fix}`);
    await gw.close();
    process.exit(2);
  }
  const models = gw.catalog.list().length;
  // The upstreams that really serve: with only the embedded model, the Ollama default is not one.
  gw.log.info({ mints: cfg.CASHU_MINTS, upstreams: gw.upstreams.map((u) => u.client.baseUrl), models }, 'gateway ready');
  // Said again after "ready", where a first-time operator looks: why nothing will answer.
  for (const p of gw.catalog.problems()) gw.log.warn(p);
  if (models === 0 && gw.catalog.problems().length === 0) gw.log.warn('no models to serve: the upstream lists none; pull one there, or name them in MODELS or MODEL_PRICES');
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      gw.log.info({ signal: sig }, 'shutting down');
      void gw.close().then(() => process.exit(0));
    });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await serve(configOrExit());
