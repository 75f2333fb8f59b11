import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** msats per token (and per request / per image), as a test prices a model. */
export interface MsatPrices {
  prompt: number;
  completion: number;
  cached?: number;
  write?: number;
  request?: number;
  image?: number;
}

/** One entry of an UPSTREAMS_FILE (the README's settings), served by a double, its prices in msats. */
export interface UpstreamEntry {
  name: string;
  kind?: 'openai' | 'openai-responses' | 'anthropic';
  /** The double behind it: its url is read when the file is written, once it runs. */
  upstream: { readonly url: string };
  api_key?: string;
  models?: string[];
  allow_parameters?: string[];
  prices: Record<string, MsatPrices>;
}

/**
 * The environment of a gateway served by these upstreams alone: an UPSTREAMS_FILE (written as
 * JSON, which is YAML) and no built-in model prices.
 */
export function upstreamsEnv(upstreams: UpstreamEntry[]): { UPSTREAMS_FILE: string; MODEL_PRICES: string } {
  const file = join(mkdtempSync(join(tmpdir(), 'upstreams-')), 'upstreams.yaml');
  const entries = upstreams.map(({ upstream, ...u }) => ({
    ...u,
    base_url: upstream.url,
    prices: Object.fromEntries(Object.entries(u.prices).map(([model, p]) => [model, rule(p)])),
  }));
  writeFileSync(file, JSON.stringify({ upstreams: entries }, null, 2));
  return { UPSTREAMS_FILE: file, MODEL_PRICES: '{}' };
}

function rule(p: MsatPrices): Record<string, number> {
  const out: Record<string, number> = { prompt_msats: p.prompt, completion_msats: p.completion };
  if (p.cached !== undefined) out.cached_prompt_msats = p.cached;
  if (p.write !== undefined) out.cache_write_msats = p.write;
  if (p.request !== undefined) out.request_msats = p.request;
  if (p.image !== undefined) out.image_msats = p.image;
  return out;
}
