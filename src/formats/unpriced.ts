import { EngineError } from '../engine/errors.ts';

/**
 * Request fields that make an upstream do work (or charge rates) the gateway does not price. One
 * rule for every door: the request is refused with `400 unpriced_parameter`, naming the field,
 * before anything is reserved or sent, unless the operator allows the field for the upstream
 * (`allow_parameters`). Refused rather than dropped: a client that asked for a faster tier, a web
 * search or a fallback model must not be served silently without it.
 */

/** OpenRouter's fallback model lists, routing, plugins (web search) and prompt transforms. */
const OPENROUTER = ['models', 'route', 'plugins', 'transforms'] as const;

/**
 * The processing tier: OpenAI's `priority` bills about twice the standard price and `scale` draws
 * on units the operator bought. Anthropic's takes `auto` and `standard_only`.
 */
const TIER = 'service_tier';

/** By door. Applied whatever the upstream speaks: a translation may carry a field across. */
export const UNPRICED = {
  chat: [...OPENROUTER, 'web_search_options', 'prediction', 'min_tokens', 'ignore_eos', 'best_of', 'audio', TIER],
  // `best_of` is priced on completions: it is reserved as that many choices.
  completion: [...OPENROUTER, 'min_tokens', 'ignore_eos', TIER],
  embedding: ['models', 'route'],
  // The Responses door takes what the chat door takes, and a native upstream gets it untouched.
  responses: [...OPENROUTER, 'web_search_options', 'prediction', 'min_tokens', 'ignore_eos', 'best_of', 'audio', TIER],
  // Anthropic: US-only inference (`inference_geo: us`, 1.1x), fast mode (`speed: fast`, several
  // times the standard rates), MCP connectors and code-execution containers (billed per use).
  messages: [...OPENROUTER, TIER, 'inference_geo', 'speed', 'mcp_servers', 'container'],
} as const satisfies Record<string, readonly string[]>;

export type Door = keyof typeof UNPRICED;

/**
 * Values billed at no more than the standard price, passed on as sent. `auto` is what an absent
 * tier means at both providers (the account's own setting); OpenAI's `flex` bills half.
 */
const STANDARD: Partial<Record<string, ReadonlySet<unknown>>> = {
  service_tier: new Set(['auto', 'default', 'flex', 'standard_only']),
  inference_geo: new Set(['global']),
  speed: new Set(['standard']),
};

/** The refusal for the first unpriced field `body` carries, if it carries one. */
export function refuseUnpriced(door: Door, body: Record<string, unknown>, allowed: ReadonlySet<string>): EngineError | undefined {
  for (const f of UNPRICED[door]) {
    const v = body[f];
    if (v == null || allowed.has(f) || STANDARD[f]?.has(v)) continue;
    return new EngineError('unpriced_parameter', `The parameter '${f}' makes the upstream do work this gateway does not price; it is not accepted here.`, {
      extra: { param: f },
    });
  }
  return undefined;
}
