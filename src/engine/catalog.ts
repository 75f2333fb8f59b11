import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Upstream, UpstreamModel } from '../upstream/client.ts';
import type { Price } from './pricing.ts';

export interface ModelEntry {
  id: string;
  created: number;
  ownedBy: string;
  price: Price;
}

/**
 * The models served and their prices: the upstream's list, plus any model named in the
 * configuration. A model with no configured price gets the documented default price.
 */
export class Catalog {
  readonly #cfg: Config;
  readonly #upstream: Upstream;
  readonly #log: Logger;
  #models = new Map<string, ModelEntry>();
  #refreshing: Promise<void> | undefined;
  #loadedAt = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(cfg: Config, upstream: Upstream, log: Logger) {
    this.#cfg = cfg;
    this.#upstream = upstream;
    this.#log = log;
    this.#build([]);
  }

  priceOf(id: string): Price {
    const p = this.#cfg.MODEL_PRICES[id];
    return {
      promptRate: p?.prompt ?? this.#cfg.DEFAULT_PROMPT_MSATS_PER_TOKEN,
      completionRate: p?.completion ?? this.#cfg.DEFAULT_COMPLETION_MSATS_PER_TOKEN,
      maxCompletionTokens: p?.max_completion_tokens ?? this.#cfg.DEFAULT_MAX_COMPLETION_TOKENS,
      contextLength: p?.context_length ?? this.#cfg.DEFAULT_CONTEXT_LENGTH,
    };
  }

  #build(upstream: UpstreamModel[]): void {
    const models = new Map<string, ModelEntry>();
    const now = Math.floor(Date.now() / 1000);
    const add = (id: string, created = now, ownedBy = 'upstream') => {
      if (!models.has(id)) models.set(id, { id, created, ownedBy, price: this.priceOf(id) });
    };
    for (const m of upstream) add(m.id, m.created, m.owned_by);
    for (const id of this.#cfg.MODELS) add(id);
    for (const id of Object.keys(this.#cfg.MODEL_PRICES)) add(id);
    this.#models = models;
  }

  get(id: string): ModelEntry | undefined {
    return this.#models.get(id);
  }

  list(): ModelEntry[] {
    return [...this.#models.values()];
  }

  /** Looks a model up, refreshing from the upstream once if it is unknown and the list is stale. */
  async find(id: string): Promise<ModelEntry | undefined> {
    const hit = this.#models.get(id);
    if (hit) return hit;
    if (Date.now() - this.#loadedAt > 10_000) await this.refresh();
    return this.#models.get(id);
  }

  refresh(): Promise<void> {
    this.#refreshing ??= this.#upstream
      .models()
      .then((list) => {
        this.#build(list);
        this.#loadedAt = Date.now();
      })
      .catch((e: Error) => {
        this.#loadedAt = Date.now();
        this.#log.warn({ err: e.message }, 'could not list upstream models; serving configured models only');
      })
      .finally(() => {
        this.#refreshing = undefined;
      });
    return this.#refreshing;
  }

  start(): void {
    const every = this.#cfg.MODELS_REFRESH_SECONDS * 1000;
    if (every > 0) {
      this.#timer = setInterval(() => void this.refresh(), every);
      this.#timer.unref();
    }
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
