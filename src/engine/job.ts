import { z } from 'zod';
import { GatewayError } from './errors.ts';
import type { Catalog, ModelEntry } from './catalog.ts';
import { completionLimit, reservationFor } from './pricing.ts';
import { countInput, countMessages, countText } from './tokens.ts';

export type JobKind = 'chat' | 'completion' | 'embedding';

export const UPSTREAM_PATH: Record<JobKind, string> = {
  chat: '/chat/completions',
  completion: '/completions',
  embedding: '/embeddings',
};

/** A request for text, whichever door it came through. */
export interface Job {
  kind: JobKind;
  model: ModelEntry;
  /** The body forwarded upstream; unknown fields pass through untouched. */
  body: Record<string, unknown>;
  stream: boolean;
  promptTokens: number;
  /** The most this job can cost, reserved before the upstream is called. */
  maxMsats: number;
}

const positiveInt = z.number().int().positive();
const choices = z.number().int().min(1).max(128).nullish();
const common = {
  model: z.string().min(1),
  stream: z.boolean().optional(),
  max_tokens: positiveInt.nullish(),
  n: choices,
};
const text = z.union([z.string(), z.array(z.unknown()).min(1)]);

const schemas = {
  chat: z.looseObject({
    ...common,
    messages: z.array(z.looseObject({ role: z.string() })).min(1),
    max_completion_tokens: positiveInt.nullish(),
  }),
  completion: z.looseObject({ ...common, prompt: text, best_of: choices }),
  embedding: z.looseObject({ model: z.string().min(1), input: text }),
};

export async function prepareJob(kind: JobKind, raw: unknown, catalog: Catalog): Promise<Job> {
  const parsed = schemas[kind].safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? `'${issue.path.join('.')}': ` : '';
    throw new GatewayError(400, 'invalid_request', `Invalid request body: ${where}${issue.message}`);
  }
  const body = parsed.data as Record<string, unknown>;
  const model = await catalog.find(body.model as string);
  if (!model) {
    throw new GatewayError(404, 'model_not_found', `The model '${String(body.model)}' does not exist or is not served here.`);
  }
  const stream = kind !== 'embedding' && body.stream === true;
  let promptTokens: number;
  let maxCompletion = 0;
  if (kind === 'chat') {
    promptTokens = countMessages(body.messages as unknown[]);
    // Tool and format definitions are prompt too.
    for (const extra of [body.tools, body.functions, body.response_format]) {
      if (extra != null) promptTokens += countText(JSON.stringify(extra));
    }
    maxCompletion = completionLimit((body.max_completion_tokens ?? body.max_tokens ?? undefined) as number | undefined, model.price);
    // The upstream is held to the limit the reservation covers.
    if (body.max_completion_tokens != null) body.max_completion_tokens = maxCompletion;
    else body.max_tokens = maxCompletion;
  } else if (kind === 'completion') {
    promptTokens = countInput(body.prompt);
    maxCompletion = completionLimit((body.max_tokens ?? undefined) as number | undefined, model.price);
    body.max_tokens = maxCompletion;
  } else {
    promptTokens = countInput(body.input);
  }
  const choiceCount = Math.max((body.n as number | null | undefined) ?? 1, (body.best_of as number | null | undefined) ?? 1);
  if (stream) {
    // Ask the upstream to report usage at the end of the stream; billing needs it.
    const opts = body.stream_options;
    body.stream_options = { ...(opts && typeof opts === 'object' ? opts : {}), include_usage: true };
  }
  return { kind, model, body, stream, promptTokens, maxMsats: reservationFor(promptTokens, maxCompletion, model.price, choiceCount) };
}
