import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { UpstreamClient, UpstreamModel } from '../upstream/client.ts';
import type { NamedUpstream } from '../upstream/upstreams.ts';
import type { Price } from './pricing.ts';
import { imageTokensFor } from './tokens.ts';

/**
 * Models that reason in every answer unless told otherwise, by their id (an upstream's prefix
 * such as `openai/` or `models/`, and a date, allowed). Each is a model whose provider documents
 * thinking as on when a request says nothing of it:
 * - OpenAI's o-series, with OpenRouter's effort suffixes (`o3-mini-high`) and deep research;
 *   gpt-5 and its mini and nano (effort "medium" by default). gpt-5.1 and later default to none;
 *   chat variants never reason.
 * - gpt-oss (effort "medium" by default, never off).
 * - Gemini 2.5 Pro and Flash (dynamic thinking, `thinkingBudget: -1`, by default) and Gemini 3's
 *   Pro and Flash (`thinking_level` "high" by default; Pro's cannot be turned off), also on
 *   Google's OpenAI-compatible endpoint. Not Flash-Lite (2.5's thinks only when asked, 3.5's
 *   at "minimal") and not the image, TTS or live models.
 * - Grok 4 and its reasoning variants (never `-non-reasoning`), grok-3-mini and
 *   grok-code-fast: xAI's reasoning models.
 * - DeepSeek's reasoner (R1 and its distills), QwQ, and Qwen3's `-Thinking` models: they think
 *   in every answer. Hybrid Qwen3 ids are not here: whether they think unasked is the host's choice
 *   (GLM-4.5 and later, and DeepSeek V3.1, likewise).
 * - OpenAI's Codex models (effort low to xhigh, "medium" by default, no "none"), Kimi K2 Thinking,
 *   and MiniMax M1 and M2: thinking cannot be turned off.
 * The first request of such a model must not be left cheaply before its usage teaches the rest.
 */
const REASONERS: readonly RegExp[] = [
  /(^|\/)o[134](-mini|-pro|-preview)?(-low|-medium|-high)?(-deep-research)?(-\d{4}-\d{2}-\d{2})?$/,
  /(^|\/)gpt-5(-mini|-nano|-pro)?(-\d{4}-\d{2}-\d{2})?$/,
  /(^|\/)gpt-oss[-:](20b|120b)([-.:][\w.:-]*)?$/i,
  /(^|\/)gemini-(2\.5|3(\.\d+)?)-(pro|flash)(-preview|-exp)?(-\d{2}-\d{2,4})?(-latest)?$/,
  /(^|\/)gemini-(pro|flash)-latest$/,
  /(^|\/)grok-4(\.\d+|-\d)?(-\d{4})?(-latest|-reasoning|-fast-reasoning)?$/,
  /(^|\/)grok-3-mini(-fast)?(-beta|-latest)?$/,
  /(^|\/)grok-code-fast(-1)?(-\d{4})?$/,
  /(^|\/)deepseek-(reasoner|r1)([-.:][\w.:-]*)?$/i,
  /(^|\/)qwq([-.:][\w.:-]*)?$/i,
  /(^|\/)qwen3[\w.-]*(?<!-non)-thinking([-.:][\w.:-]*)?$/i,
  /(^|\/)(gpt-5(\.\d+)?-codex(-mini|-max)?|codex-mini-latest)$/,
  /(^|\/)kimi-k2-thinking(-turbo)?$/i,
  /(^|\/)minimax-m[12](\.\d+)?(:[\w-]+)?$/i,
];

/** Whether `id` names a model that reasons unasked (REASONERS). */
export function reasonsByDefault(id: string): boolean {
  return REASONERS.some((pattern) => pattern.test(id));
}

export interface ModelEntry {
  id: string;
  created: number;
  ownedBy: string;
  price: Price;
  /** Who serves it, in the order they are tried. */
  upstreams: UpstreamClient[];
}

/**
 * The models served and their prices: the upstreams' lists, plus any model named in the
 * configuration. A model's price is MODEL_PRICES's, else the first rule an upstream serving it
 * gives (by id, then `*`), else the documented default price.
 */
export class Catalog {
  readonly #cfg: Config;
  readonly #upstreams: NamedUpstream[];
  readonly #log: Logger;
  #models = new Map<string, ModelEntry>();
  /** Prices the operator set at run time (admin API); they outlive model-list refreshes, not restarts. */
  readonly #overrides = new Map<string, { promptRate: number; completionRate: number }>();
  /** Models seen reporting reasoning tokens, for as long as the process runs. */
  readonly #reasoners = new Set<string>();
  /** Upstreams whose model list could not be read at the last refresh, with what to do about it. */
  readonly #down = new Map<NamedUpstream, string>();
  #refreshing: Promise<void> | undefined;
  #loadedAt = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(cfg: Config, upstreams: NamedUpstream[], log: Logger) {
    this.#cfg = cfg;
    this.#upstreams = upstreams;
    this.#log = log;
    this.#build(upstreams.map(() => []));
  }

  /** Sets a served model's price in msats per token; undefined if the model is not served. */
  setPrice(id: string, promptMsats: number, completionMsats: number): ModelEntry | undefined {
    const m = this.#models.get(id);
    if (!m) return undefined;
    const override = { promptRate: Math.round(promptMsats * 1e6), completionRate: Math.round(completionMsats * 1e6) };
    this.#overrides.set(id, override);
    m.price = { ...m.price, ...override };
    return m;
  }

  priceOf(id: string, servedBy: NamedUpstream[] = this.#upstreams): Price {
    const o = this.#overrides.get(id);
    if (o) return { ...this.#basePrice(id, servedBy), ...o };
    return this.#basePrice(id, servedBy);
  }

  #basePrice(id: string, servedBy: NamedUpstream[]): Price {
    const p = this.#cfg.MODEL_PRICES[id];
    const rule = servedBy.map((u) => u.prices.get(id)).find(Boolean) ?? servedBy.map((u) => u.prices.get('*')).find(Boolean);
    return {
      promptRate: p?.prompt ?? rule?.promptRate ?? this.#cfg.DEFAULT_PROMPT_MSATS_PER_TOKEN,
      completionRate: p?.completion ?? rule?.completionRate ?? this.#cfg.DEFAULT_COMPLETION_MSATS_PER_TOKEN,
      cachedRate: p ? p.cached_prompt : rule?.cachedRate,
      cacheWriteRate: p ? p.cache_write : rule?.cacheWriteRate,
      requestFee: p ? p.request : rule?.requestFee,
      imageFee: p ? p.image : rule?.imageFee,
      maxCompletionTokens: p?.max_completion_tokens ?? this.#cfg.DEFAULT_MAX_COMPLETION_TOKENS,
      contextLength: p?.context_length ?? this.#cfg.DEFAULT_CONTEXT_LENGTH,
      imageTokens: p?.image_tokens ?? imageTokensFor(id),
    };
  }

  /** The context an upstream knows for certain, unless the operator set one. */
  #listedContext(price: Price, id: string, meta: UpstreamModel | undefined): Price {
    if (!meta?.contextLength || this.#cfg.MODEL_PRICES[id]?.context_length) return price;
    return { ...price, contextLength: meta.contextLength };
  }

  /** `listed[i]` is what upstream i's /models said (empty if it could not be asked). */
  #build(listed: UpstreamModel[][]): void {
    const served = new Map<string, { meta?: UpstreamModel; by: NamedUpstream[] }>();
    const serve = (id: string, u: NamedUpstream, meta?: UpstreamModel) => {
      const entry = served.get(id) ?? { by: [] };
      if (!entry.meta && meta) entry.meta = meta;
      if (!entry.by.includes(u)) entry.by.push(u);
      served.set(id, entry);
    };
    this.#upstreams.forEach((u, i) => {
      if (u.models) for (const id of u.models) serve(id, u, listed[i]?.find((m) => m.id === id));
      else for (const m of listed[i] ?? []) serve(m.id, u, m);
    });
    // Models named only in the configuration go to every upstream that is not limited to a list.
    const open = this.#upstreams.filter((u) => !u.models && !u.exclusive);
    for (const id of [...this.#cfg.MODELS, ...Object.keys(this.#cfg.MODEL_PRICES)]) {
      if (!served.has(id)) for (const u of open) serve(id, u);
    }
    const now = Math.floor(Date.now() / 1000);
    const models = new Map<string, ModelEntry>();
    for (const [id, { meta, by }] of served) {
      if (by.length === 0) continue;
      models.set(id, {
        id,
        created: meta?.created ?? now,
        ownedBy: meta?.owned_by ?? by[0]!.name,
        price: this.#listedContext(this.priceOf(id, by), id, meta),
        upstreams: by.map((u) => u.client),
      });
    }
    this.#models = models;
  }

  /** Why some models may be missing: each upstream whose list could not be read, and the fix. */
  problems(): string[] {
    return [...this.#down.values()];
  }

  /**
   * Whether the model has been seen to reason: a model that reasons unasked (OpenAI's o-series)
   * does so in every answer, shown or not.
   */
  reasons(id: string): boolean {
    return this.#reasoners.has(id) || (this.#cfg.MODEL_PRICES[id]?.reasoning ?? reasonsByDefault(id));
  }

  /** Remembers that a model reasons; only a served one, so what is kept is bounded by the catalog. */
  sawReasoning(id: string): void {
    if (this.#models.has(id)) this.#reasoners.add(id);
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
    this.#refreshing ??= Promise.all(
      this.#upstreams.map((u) =>
        u.models
          ? Promise.resolve([] as UpstreamModel[])
          : u.client.models().then(
              (models) => {
                if (this.#down.delete(u)) this.#log.info({ upstream: u.name, url: u.client.baseUrl, models: models.length }, 'upstream reachable again');
                return models;
              },
              (e: Error) => {
                // UPSTREAM_BASE_URL's upstream is the only one, or goes first in front of the file's ('env').
                const fromEnv = !this.#cfg.UPSTREAMS_FILE || (u === this.#upstreams[0] && u.name === 'env');
                const problem = upstreamProblem(u, e, fromEnv);
                // Said once per outage, not on every refresh.
                if (!this.#down.has(u)) this.#log.warn({ upstream: u.name, url: u.client.baseUrl, err: errorOf(e) }, problem);
                this.#down.set(u, problem);
                return [] as UpstreamModel[];
              },
            ),
      ),
    )
      .then((listed) => {
        this.#build(listed);
        this.#loadedAt = Date.now();
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

function errorOf(e: Error): string {
  const code = (e as { code?: string }).code;
  return code && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
}

/** One line an operator can act on: which upstream, what went wrong, which setting to change. */
function upstreamProblem(u: NamedUpstream, e: Error, fromEnv: boolean): string {
  const where = fromEnv ? 'UPSTREAM_BASE_URL' : `base_url of upstream ${u.name} in UPSTREAMS_FILE`;
  const key = fromEnv ? 'UPSTREAM_API_KEY' : `its api_key`;
  const status = /answered (\d{3})/.exec(e.message)?.[1];
  const what = status ? `answered ${status} to GET /models` : `is unreachable (${errorOf(e)})`;
  const fix =
    status === '401' || status === '403'
      ? `set ${key} to a key it accepts`
      : status
        ? `check that ${where} is its OpenAI-compatible base URL, API prefix included (e.g. https://api.openai.com/v1)`
        : `start it, or set ${where} to a running OpenAI-compatible API (and ${key} if it needs one)`;
  return `upstream ${u.client.baseUrl} ${what}: ${fix}`;
}
