import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { normalizeMintUrl } from '@cashu/cashu-ts';

/** Decimal msats per token, kept exact as an integer number of micro-msats (1e-6 msat). */
const rate = z.coerce
  .number()
  .finite()
  .nonnegative()
  .transform((v) => Math.round(v * 1e6));

const modelPrice = z.strictObject({
  prompt: rate,
  completion: rate,
  /** Input read from the provider's cache, per token (default: the prompt price). */
  cached_prompt: rate.optional(),
  /** Input written to the provider's cache, per token (default: the prompt price). */
  cache_write: rate.optional(),
  /** A fee per request, in msats. */
  request: rate.optional(),
  /** A fee per image in the prompt, in msats. */
  image: rate.optional(),
  max_completion_tokens: z.number().int().positive().optional(),
  context_length: z.number().int().positive().optional(),
  /** The most one image may bill, in prompt tokens (default: by the model's id, else 1,600). */
  image_tokens: z.number().int().positive().optional(),
  /** The model reasons in every answer, shown or not (default: known by its id, else learned from its usage). */
  reasoning: z.boolean().optional(),
});

const csv = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

/**
 * An http(s) URL without user:password: those would never be sent (the upstream pool dials the
 * origin) yet would be printed wherever the URL is. Keys belong in UPSTREAM_API_KEY.
 */
export const httpUrl = z
  .url({ protocol: /^https?$/ })
  .refine((u) => !/^[a-z]+:\/\/[^/]*@/i.test(u), 'no user:password in the URL; put the key in UPSTREAM_API_KEY or api_key');

export const DEFAULT_UPSTREAM_BASE_URL = 'http://127.0.0.1:11434/v1';

const schema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8000),
  HOST: z.string().min(1).default('0.0.0.0'),
  NAME: z.string().min(1).default('Cashu AI Gateway'),
  DESCRIPTION: z.string().default('OpenAI-compatible API paid per request with Cashu ecash'),
  UPSTREAM_BASE_URL: httpUrl.default(DEFAULT_UPSTREAM_BASE_URL),
  UPSTREAM_API_KEY: z.string().default(''),
  /** JSON or YAML file listing several upstreams with their models and price rules. */
  UPSTREAMS_FILE: z.string().min(1).optional(),
  /** A GGUF file served in this process by llama.cpp (see src/upstream/local.ts). */
  LOCAL_MODEL: z.string().regex(/\.gguf$/i, 'a path to a .gguf file').optional(),
  /** The id it is announced and asked for by (default: from the file name). */
  LOCAL_MODEL_NAME: z.string().min(1).optional(),
  /** Half the cores: more threads than free cores makes llama.cpp's threads wait on each other. */
  LOCAL_MODEL_THREADS: z.coerce.number().int().positive().default(() => Math.max(1, Math.floor(availableParallelism() / 2))),
  LOCAL_MODEL_CONTEXT: z.coerce.number().int().min(256).default(4096),
  LOCAL_MODEL_PARALLEL: z.coerce.number().int().positive().max(64).default(2),
  UPSTREAM_HEADERS_TIMEOUT_MS: z.coerce.number().int().positive().default(120_000),
  UPSTREAM_BODY_TIMEOUT_MS: z.coerce.number().int().positive().default(300_000),
  UPSTREAM_CONNECTIONS: z.coerce.number().int().positive().default(1024),
  CASHU_MINTS: z
    .string()
    .default('https://mint.minibits.cash/Bitcoin')
    .transform(csv)
    .pipe(z.array(httpUrl).min(1, 'at least one mint URL'))
    .transform((urls) => [...new Set(urls.map(normalizeMintUrl))]),
  /**
   * `public=internal,…`: a trusted mint (in CASHU_MINTS, the URL wallets mint at) that the gateway
   * reaches at another URL, as in Docker where wallets use http://localhost:3338 and the gateway
   * http://mint:3338. Tokens naming either URL are that mint's; change and refunds name the public one.
   */
  CASHU_MINT_ALIASES: z
    .string()
    .default('')
    .transform(csv)
    .transform((pairs, ctx) => {
      const out: Record<string, string> = {};
      for (const pair of pairs) {
        const [pub, internal, ...rest] = pair.split('=').map((x) => x.trim());
        const ok = (u: string | undefined) => u !== undefined && httpUrl.safeParse(u).success;
        if (rest.length || !ok(pub) || !ok(internal)) {
          ctx.addIssue({ code: 'custom', message: `public-url=internal-url pairs, comma-separated` });
          return z.NEVER;
        }
        out[normalizeMintUrl(pub!)] = normalizeMintUrl(internal!);
      }
      return out;
    }),
  MINT_TIMEOUT_MS: z.coerce.number().int().positive().default(30_000),
  /** Longest wait for a peer a stranger names (a Lightning address's server), in all. */
  PEER_TIMEOUT_MS: z.coerce.number().int().positive().default(10_000),
  /** Largest answer read from such a peer. */
  PEER_MAX_BYTES: z.coerce.number().int().positive().default(1_000_000),
  /** Tests only: lets peers be reached over http on loopback. Never in production: it opens the loopback to strangers. */
  ALLOW_INSECURE_PEERS_FOR_TESTS_ONLY: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
  /** A token from a mint outside CASHU_MINTS: refused, or swapped over Lightning into the first trusted mint. */
  FOREIGN_MINTS: z.enum(['refuse', 'swap']).default('refuse'),
  /** The most a foreign swap may cost, in percent of the token; FOREIGN_MINT_MIN_FEE_SATS is allowed whatever the percent. */
  FOREIGN_MINT_MAX_FEE_PERCENT: z.coerce.number().min(0).max(100).default(3),
  FOREIGN_MINT_MIN_FEE_SATS: z.coerce.number().int().min(0).default(5),
  /** Swaps from one foreign mint (by host name) in flight or left pending at once; more tokens from it wait. */
  FOREIGN_MINT_MAX_PENDING_SWAPS: z.coerce.number().int().positive().default(10),
  /** Swaps from all foreign mints together in flight or left pending at once: a stranger has as many host names as they like. */
  FOREIGN_MINT_MAX_PENDING_SWAPS_TOTAL: z.coerce.number().int().positive().default(50),
  /** How long past its expiry a trusted mint's unpaid invoice is still waited for before its swap is abandoned. */
  FOREIGN_SWAP_EXPIRY_MARGIN_SECONDS: z.coerce.number().int().min(0).default(60),
  /** How long a peer (a foreign mint) that failed is not contacted again. */
  PEER_FAILURE_COOLDOWN_SECONDS: z.coerce.number().int().min(0).default(60),
  DATA_DIR: z.string().min(1).default('./data'),
  CASHU_P2PK_PRIVKEY: z
    .string()
    .regex(/^[0-9a-f]{64}$/, '64 hex characters (a secp256k1 private key)')
    .optional(),
  INSTANCE_STALE_SECONDS: z.coerce.number().int().positive().default(60),
  NSEC: z
    .string()
    .regex(/^(nsec1[02-9ac-hj-np-z]+|[0-9a-f]{64})$/, 'an nsec1… key or 64 hex characters')
    .optional(),
  /** Unset or empty: the Nostr side is off. */
  RELAYS: z
    .string()
    .default('')
    .transform(csv)
    .pipe(z.array(z.url({ protocol: /^wss?$/ }))),
  PUBLIC_URL: httpUrl.optional(),
  /** NIP-13 proof of work done on every event we publish (0: only when a relay asks for it). */
  NOSTR_POW_BITS: z.coerce.number().int().min(0).max(24).default(0),
  /** Nostr keys (npub or hex) allowed to call /admin with NIP-98 auth. */
  ADMIN_NPUBS: z.string().default('').transform(csv),
  DVM_DEFAULT_MODEL: z.string().min(1).optional(),
  DVM_MAX_AGE_SECONDS: z.coerce.number().int().positive().default(600),
  DVM_MAX_PROMPT_CHARS: z.coerce.number().int().positive().default(32_000),
  DVM_RATE_PER_MINUTE: z.coerce.number().int().positive().default(20),
  FREE_REQUESTS_PER_PUBKEY: z.coerce.number().int().nonnegative().default(0),
  DVM_PAYMENT_TIMEOUT_SECONDS: z.coerce.number().int().positive().default(600),
  DVM_QUOTE_POLL_MS: z.coerce.number().int().positive().default(2000),
  P2PK_LOCKTIME_MARGIN_SECONDS: z.coerce.number().int().nonnegative().default(3600),
  P2PK_REDEEM_INTERVAL_SECONDS: z.coerce.number().int().nonnegative().default(60),
  /** How long the mint must go on refusing a locked proof alone as bad in itself, while taking others, before it is written off. */
  P2PK_WRITE_OFF_AFTER_SECONDS: z.coerce.number().int().nonnegative().default(600),
  CHANGE_FLOAT_PROOFS: z.coerce.number().int().nonnegative().max(64).default(8),
  DATABASE_URL: z
    .string()
    .default('sqlite:./data/gateway.db')
    .refine(
      (s) => s.startsWith('sqlite:') || s === ':memory:' || /^postgres(ql)?:\/\//.test(s),
      'sqlite:<path>, :memory: or postgres://user:pass@host/db',
    ),
  MODEL_PRICES: z
    .string()
    .default('{}')
    .transform((s, ctx) => {
      try {
        return JSON.parse(s) as unknown;
      } catch {
        ctx.addIssue({ code: 'custom', message: 'JSON object of model id to {prompt, completion}' });
        return z.NEVER;
      }
    })
    .pipe(z.record(z.string(), modelPrice)),
  MODELS: z.string().default('').transform(csv),
  DEFAULT_PROMPT_MSATS_PER_TOKEN: rate.prefault(1).refine((v) => v > 0, 'a price above 0'),
  DEFAULT_COMPLETION_MSATS_PER_TOKEN: rate.prefault(3).refine((v) => v > 0, 'a price above 0'),
  DEFAULT_MAX_COMPLETION_TOKENS: z.coerce.number().int().positive().default(4096),
  DEFAULT_CONTEXT_LENGTH: z.coerce.number().int().positive().default(128_000),
  MODELS_REFRESH_SECONDS: z.coerce.number().int().nonnegative().default(300),
  CLIENT_STALL_TIMEOUT_MS: z.coerce.number().int().positive().default(60_000),
  BODY_LIMIT_BYTES: z.coerce.number().int().positive().default(10 * 1024 * 1024),
  /** One info line per request (route, status, model, msats, payment kind, latency); `false` turns them off. */
  LOG_REQUESTS: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Requests a minute per client IP (token bucket: bursts up to this many); 0 turns the limit off. */
  RATE_LIMIT_PER_MINUTE_IP: z.coerce.number().int().nonnegative().default(1200),
  /** Requests a minute per API key (an sk- key, or the hash of a Cashu token or other Bearer value); 0: off. */
  RATE_LIMIT_PER_MINUTE_KEY: z.coerce.number().int().nonnegative().default(600),
  /**
   * Client addresses come from X-Forwarded-For when the gateway is behind a proxy: `true` (trust
   * every hop), a number of hops, or a comma list of proxy addresses/CIDRs. Unset: the socket's peer.
   */
  TRUST_PROXY: z
    .string()
    .default('')
    .transform((s): boolean | number | string[] => {
      const v = s.trim();
      if (v === '' || v === 'false') return false;
      if (v === 'true') return true;
      if (/^\d+$/.test(v)) return Number(v);
      return csv(v);
    }),
  /** Longest wait for a client's request headers (slow clients are cut off). */
  HEADERS_TIMEOUT_MS: z.coerce.number().int().positive().default(30_000),
  /** Longest wait for a client's whole request, headers and body; responses are never timed out. */
  REQUEST_TIMEOUT_MS: z.coerce.number().int().positive().default(120_000),
  /** When set, GET /metrics requires `Authorization: Bearer <this>`. */
  METRICS_TOKEN: z.string().default(''),
  /** `json`, `pretty`, or `auto`: pretty when standard output is a terminal (read by the logger itself). */
  LOG_FORMAT: z.enum(['auto', 'json', 'pretty']).default('auto'),


  })
  .superRefine((c, ctx) => {
    // A lone locked proof too small to swap alone waits for company until its locktime is half the
    // margin away, and is then swapped with one of ours (at the operator's cost). That wait must
    // leave two sweeps (and a minute) before the locktime: were the window stretched to that, it
    // would cover the whole margin, and every 1-sat proof a stranger sends would cost a fee on
    // arrival; were it clamped to half the margin, one slow sweep would let its payer take it back.
    const margin = c.P2PK_LOCKTIME_MARGIN_SECONDS;
    const interval = c.P2PK_REDEEM_INTERVAL_SECONDS;
    if (interval > 0 && margin / 2 < Math.max(2 * interval, 60)) {
      ctx.addIssue({
        code: 'custom',
        path: ['P2PK_LOCKTIME_MARGIN_SECONDS'],
        message: `${margin} is too short for P2PK_REDEEM_INTERVAL_SECONDS=${interval}: a locked proof taken offline must leave half the margin for two redeem intervals (and a minute) before its locktime; set it to at least ${Math.max(4 * interval, 120)}, or redeem more often`,
      });
    }
    for (const pub of Object.keys(c.CASHU_MINT_ALIASES)) {
      // An alias widens what a token may name: it must stand for a mint the operator already trusts.
      if (!c.CASHU_MINTS.includes(pub)) {
        ctx.addIssue({
          code: 'custom',
          path: ['CASHU_MINT_ALIASES'],
          message: `${pub} is not in CASHU_MINTS; put the URL wallets use in CASHU_MINTS and map it to the URL the gateway reaches the mint by`,
        });
      }
    }
  });

export type Config = z.output<typeof schema>;

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.join('\n')}`);
    this.problems = problems;
  }
}

/** Empty strings count as unset, so `FOO=` in a .env file falls back to the default. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const present: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const v = env[key];
    if (v !== undefined && v !== '') present[key] = v;
  }
  const parsed = schema.safeParse(present);
  if (parsed.success) return parsed.data;
  throw new ConfigError(
    parsed.error.issues.map((i) => {
      const name = i.path.join('.');
      const key = String(i.path[0]);
      const value = present[key];
      // Echo what was given, unless it is a secret or carries one (user:password@ in a URL).
      const got = /KEY|SECRET|NSEC|PASSWORD/.test(key) || /:\/\/[^/\s]*@/.test(value ?? '') ? undefined : value;
      return `${name}: ${i.message}${got === undefined ? '' : ` (got ${JSON.stringify(truncate(got))})`}`;
    }),
  );
}

function truncate(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}
