import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { Catalog, type ModelEntry } from '../engine/catalog.ts';
import { satsPricing } from '../engine/pricing.ts';
import { loadUpstreams } from '../upstream/upstreams.ts';
import { num, table } from './table.ts';

export interface ModelRow {
  id: string;
  /** Listed by the upstream's /models, or only named in MODELS / MODEL_PRICES. */
  source: 'upstream' | 'configured';
  /** Priced in MODEL_PRICES, or at the default price. */
  price: 'configured' | 'default';
  prompt_msats_per_token: number;
  completion_msats_per_token: number;
  max_completion_tokens: number;
  context_length: number;
  /** Routstr's `max_cost`: the most one request can cost, in sats. */
  max_cost_sats: number;
}

/**
 * The models the gateway would serve now and their prices, through the same Catalog the server
 * uses. `upstreamError` says why the upstream's list is missing, when it is.
 */
export async function listModels(cfg: Config, log: Logger): Promise<{ rows: ModelRow[]; upstreamError?: string }> {
  const upstreams = loadUpstreams(cfg);
  try {
    const listed = new Set<string>();
    const errors: string[] = [];
    for (const u of upstreams) {
      try {
        for (const m of await u.client.models()) listed.add(m.id);
      } catch (e) {
        errors.push(`${u.name}: ${(e as Error).message}`);
      }
    }
    const catalog = new Catalog(cfg, upstreams, log);
    await catalog.refresh();
    const isDefault = (m: ModelEntry) =>
      m.price.promptRate === cfg.DEFAULT_PROMPT_MSATS_PER_TOKEN && m.price.completionRate === cfg.DEFAULT_COMPLETION_MSATS_PER_TOKEN;
    const rows = catalog.list().map((m: ModelEntry): ModelRow => ({
      id: m.id,
      source: listed.has(m.id) ? 'upstream' : 'configured',
      price: cfg.MODEL_PRICES[m.id] || !isDefault(m) ? 'configured' : 'default',
      prompt_msats_per_token: m.price.promptRate / 1e6,
      completion_msats_per_token: m.price.completionRate / 1e6,
      max_completion_tokens: m.price.maxCompletionTokens,
      context_length: m.price.contextLength,
      max_cost_sats: satsPricing(m.price).max_cost,
    }));
    return errors.length ? { rows, upstreamError: errors.join('; ') } : { rows };
  } finally {
    await Promise.all(upstreams.map((u) => u.client.close()));
  }
}

export function modelsTable(rows: ModelRow[]): string {
  return table(
    ['MODEL', 'PROMPT msat/tok', 'COMPLETION msat/tok', 'PRICE', 'MAX OUT', 'CONTEXT', 'MAX COST sat', 'SOURCE'],
    rows.map((r) => [
      r.id,
      num(r.prompt_msats_per_token),
      num(r.completion_msats_per_token),
      r.price,
      String(r.max_completion_tokens),
      String(r.context_length),
      num(r.max_cost_sats, 3),
      r.source,
    ]),
  );
}
