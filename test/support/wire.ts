import type OpenAI from 'openai';
import type { msatsPricing, satsPricing } from '../../src/engine/pricing.ts';

/**
 * What the gateway puts on the wire beyond OpenAI's own shapes, as the tests read it: the charge
 * in every usage object, the change a one-shot payer gets in the last chunk, the model listing.
 */

/** The charge the gateway adds to every usage object it returns, in msats. */
export interface WireCost {
  base_msats: number;
  input_msats: number;
  output_msats: number;
  total_msats: number;
}

/** A usage object as the gateway returns it: the counts it billed, and the charge. */
export type BilledUsage = OpenAI.CompletionUsage & { cost: WireCost };

/** Any answer the gateway billed; only its usage is read. */
export interface Billed {
  usage: BilledUsage;
}

/** A stream's last chunk: the usage with its charge, and an X-Cashu payer's change. */
export type BilledChunk = OpenAI.ChatCompletionChunk & { usage: BilledUsage; x_cashu?: string };

/** The gateway's error body, in the door's own shape. */
export interface WireError {
  error: { message: string; type: string; code: string; [extra: string]: unknown };
}

/** One model of GET /v1/models. */
export interface ListedModel {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
  name: string;
  context_length: number;
  sats_pricing: ReturnType<typeof satsPricing>;
  msats_pricing: ReturnType<typeof msatsPricing>;
  top_provider: { context_length: number; max_completion_tokens: number; is_moderated: boolean };
  enabled: boolean;
}

export interface ModelList {
  object: 'list';
  data: ListedModel[];
}
