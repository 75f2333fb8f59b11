import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { httpUrl, type Config } from '../config.ts';
import { Upstream } from './client.ts';

/** A price rule in msats per token, or in USD per token converted at the file's BTC price. */
const priceRule = z.union([
  z.strictObject({ prompt_msats: z.number().nonnegative(), completion_msats: z.number().nonnegative() }),
  z.strictObject({ prompt_usd: z.number().nonnegative(), completion_usd: z.number().nonnegative() }),
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
      }),
    )
    .min(1),
});

export interface PriceRate {
  promptRate: number;
  completionRate: number;
}

export interface NamedUpstream {
  name: string;
  client: Upstream;
  models?: string[] | undefined;
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
  if (!cfg.UPSTREAMS_FILE) {
    return [{ name: 'default', client: clientFor(cfg.UPSTREAM_BASE_URL, cfg.UPSTREAM_API_KEY), prices: new Map() }];
  }
  const text = readFileSync(cfg.UPSTREAMS_FILE, 'utf8');
  const raw: unknown = /\.ya?ml$/i.test(cfg.UPSTREAMS_FILE) ? parseYaml(text) : JSON.parse(text);
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new Error(parsed.error.issues.map((i) => `UPSTREAMS_FILE ${i.path.join('.')}: ${i.message}`).join('\n'));
  }
  const file = parsed.data;
  const usdRate = file.usd_per_btc ? MSATS_PER_BTC / file.usd_per_btc : undefined;
  const upstreams = file.upstreams.map((u): NamedUpstream => {
    const prices = new Map<string, PriceRate>();
    for (const [model, rule] of Object.entries(u.prices)) {
      let prompt: number;
      let completion: number;
      if ('prompt_msats' in rule) {
        prompt = rule.prompt_msats;
        completion = rule.completion_msats;
      } else {
        if (!usdRate) throw new Error(`UPSTREAMS_FILE upstreams.${u.name}.prices.${model}: USD prices need usd_per_btc`);
        prompt = rule.prompt_usd * usdRate;
        completion = rule.completion_usd * usdRate;
      }
      prices.set(model, { promptRate: Math.round(prompt * file.margin * 1e6), completionRate: Math.round(completion * file.margin * 1e6) });
    }
    const apiKey = u.api_key_env ? (env[u.api_key_env] ?? '') : (u.api_key ?? '');
    return { name: u.name, client: clientFor(u.base_url, apiKey), models: u.models, prices };
  });
  // An upstream named in the environment still wins: it goes first.
  if (env.UPSTREAM_BASE_URL) {
    upstreams.unshift({ name: 'env', client: clientFor(cfg.UPSTREAM_BASE_URL, cfg.UPSTREAM_API_KEY), prices: new Map() });
  }
  return upstreams;
}
