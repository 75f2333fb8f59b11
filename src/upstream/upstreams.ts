import { existsSync, readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, DEFAULT_UPSTREAM_BASE_URL, httpUrl, type Config } from '../config.ts';
import { Upstream, type UpstreamClient } from './client.ts';
import { LocalUpstream, modelIdFromPath } from './local.ts';

const n = z.number().nonnegative();
/**
 * A price rule in msats per token, or in USD per token converted at the file's BTC price. Cache
 * reads and writes (per token), a per-request fee and a per-image fee are optional.
 */
const priceRule = z.union([
  z.strictObject({
    prompt_msats: n,
    completion_msats: n,
    cached_prompt_msats: n.optional(),
    cache_write_msats: n.optional(),
    request_msats: n.optional(),
    image_msats: n.optional(),
  }),
  z.strictObject({
    prompt_usd: n,
    completion_usd: n,
    cached_prompt_usd: n.optional(),
    cache_write_usd: n.optional(),
    request_usd: n.optional(),
    image_usd: n.optional(),
  }),
]);

const fileSchema = z.strictObject({
  /** For prices given in USD. */
  usd_per_btc: z.number().positive().optional(),
  /** Operator margin, multiplying every price in the file. */
  margin: z.number().positive().default(1),
  upstreams: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        base_url: httpUrl,
        api_key: z.string().optional(),
        /** Read the key from this environment variable instead of the file. */
        api_key_env: z.string().optional(),
        /** Serve only these models (default: whatever the upstream's /models lists). */
        models: z.array(z.string().min(1)).optional(),
        /** By model id; `*` is the rule for the upstream's other models. */
        prices: z.record(z.string(), priceRule).default({}),
        /** The protocol it speaks: chat completions, the Responses API, or Anthropic Messages. */
        kind: z.enum(['openai', 'openai-responses', 'anthropic']).default('openai'),
        /** Cost-bearing parameters (normally refused, see the README's billing) to let through. */
        allow_parameters: z.array(z.string().min(1)).default([]),
        anthropic_version: z.string().min(1).optional(),
      }),
    )
    .min(1),
});

/**
 * Prices are integers in micro-msats (1e-6 msat) per token so that sub-msat rates, common for
 * cheap models, stay exact; every charge is rounded up to a whole msat per part.
 */
export interface PriceRate {
  promptRate: number;
  completionRate: number;
  /** Input read from the provider's cache; the prompt rate when not set. */
  cachedRate?: number | undefined;
  /** Input written to the provider's cache; the prompt rate when not set. */
  cacheWriteRate?: number | undefined;
  /** A fee per request, in micro-msats. */
  requestFee?: number | undefined;
  /** A fee per image in the prompt, in micro-msats. */
  imageFee?: number | undefined;
}

export interface NamedUpstream {
  name: string;
  client: UpstreamClient;
  models?: string[] | undefined;
  /** Serves only what its /models lists: models named only in the configuration do not go to it. */
  exclusive?: boolean | undefined;
  /** Micro-msats per token, by model id or `*`. */
  prices: Map<string, PriceRate>;
}

const MSATS_PER_BTC = 1e11;

/**
 * The upstreams from UPSTREAMS_FILE (JSON or YAML), tried in order for a model several serve.
 * Without a file, the single upstream of UPSTREAM_BASE_URL. Returns problems one per line, like
 * the environment's validation.
 */
export function loadUpstreams(cfg: Config, env: Record<string, string | undefined> = process.env): NamedUpstream[] {
  const clientFor = (baseUrl: string, apiKey: string) => new Upstream({ ...cfg, UPSTREAM_BASE_URL: baseUrl, UPSTREAM_API_KEY: apiKey });
  const named = env.UPSTREAM_BASE_URL !== undefined || cfg.UPSTREAM_BASE_URL !== DEFAULT_UPSTREAM_BASE_URL;
  const local = localUpstream(cfg, named);
  if (!cfg.UPSTREAMS_FILE) {
    // The Ollama address is only a guess: a local model, when there is one, replaces it.
    if (local && !named) return [local];
    return [{ name: 'default', client: clientFor(cfg.UPSTREAM_BASE_URL, cfg.UPSTREAM_API_KEY), prices: new Map() }, ...(local ? [local] : [])];
  }
  let raw: unknown;
  try {
    const text = readFileSync(cfg.UPSTREAMS_FILE, 'utf8');
    raw = /\.ya?ml$/i.test(cfg.UPSTREAMS_FILE) ? parseYaml(text) : JSON.parse(text);
  } catch (e) {
    throw new ConfigError([`UPSTREAMS_FILE: cannot read ${cfg.UPSTREAMS_FILE}: ${(e as Error).message.split('\n')[0]}`]);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i) => `UPSTREAMS_FILE ${i.path.join('.')}: ${i.message}`));
  const file = parsed.data;
  const usdRate = file.usd_per_btc ? MSATS_PER_BTC / file.usd_per_btc : undefined;
  const upstreams = file.upstreams.map((u): NamedUpstream => {
    const prices = new Map<string, PriceRate>();
    for (const [model, rule] of Object.entries(u.prices)) {
      let per: number;
      let r: { prompt: number; completion: number; cached?: number | undefined; write?: number | undefined; request?: number | undefined; image?: number | undefined };
      if ('prompt_msats' in rule) {
        per = 1;
        r = { prompt: rule.prompt_msats, completion: rule.completion_msats, cached: rule.cached_prompt_msats, write: rule.cache_write_msats, request: rule.request_msats, image: rule.image_msats };
      } else {
        if (!usdRate) throw new ConfigError([`UPSTREAMS_FILE upstreams.${u.name}.prices.${model}: USD prices need usd_per_btc`]);
        per = usdRate;
        r = { prompt: rule.prompt_usd, completion: rule.completion_usd, cached: rule.cached_prompt_usd, write: rule.cache_write_usd, request: rule.request_usd, image: rule.image_usd };
      }
      const micro = (v: number | undefined) => (v === undefined ? undefined : Math.round(v * per * file.margin * 1e6));
      prices.set(model, {
        promptRate: micro(r.prompt)!,
        completionRate: micro(r.completion)!,
        cachedRate: micro(r.cached),
        cacheWriteRate: micro(r.write),
        requestFee: micro(r.request),
        imageFee: micro(r.image),
      });
    }
    const apiKey = u.api_key_env ? (env[u.api_key_env] ?? '') : (u.api_key ?? '');
    const client = new Upstream(
      { ...cfg, UPSTREAM_BASE_URL: u.base_url, UPSTREAM_API_KEY: apiKey },
      { kind: u.kind, allowedParameters: u.allow_parameters, anthropicVersion: u.anthropic_version },
    );
    return { name: u.name, client, models: u.models, prices };
  });
  // An upstream named in the environment still wins: it goes first.
  if (env.UPSTREAM_BASE_URL) {
    upstreams.unshift({ name: 'env', client: clientFor(cfg.UPSTREAM_BASE_URL, cfg.UPSTREAM_API_KEY), prices: new Map() });
  }
  if (local) upstreams.push(local);
  return upstreams;
}

/** Where `npm run fetch-model` puts the default model. */
export const DEFAULT_LOCAL_MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';

/**
 * LOCAL_MODEL's file, or the default model when it has been fetched and no other upstream is
 * configured: a fresh clone answers with nothing but `npm run fetch-model` done.
 */
function localUpstream(cfg: Config, named: boolean): NamedUpstream | undefined {
  let path = cfg.LOCAL_MODEL;
  if (!path && !named && !cfg.UPSTREAMS_FILE && existsSync(DEFAULT_LOCAL_MODEL)) path = DEFAULT_LOCAL_MODEL;
  if (!path) return undefined;
  if (!existsSync(path)) throw new ConfigError([`LOCAL_MODEL: no file at ${path} (npm run fetch-model fetches the default model into models/)`]);
  const id = cfg.LOCAL_MODEL_NAME ?? modelIdFromPath(path);
  const client = new LocalUpstream({ path, id, threads: cfg.LOCAL_MODEL_THREADS, contextSize: cfg.LOCAL_MODEL_CONTEXT, parallel: cfg.LOCAL_MODEL_PARALLEL });
  return { name: 'local', client, exclusive: true, prices: new Map() };
}
