import { z } from 'zod';
import { GatewayError } from './errors.ts';
import type { Catalog, ModelEntry } from './catalog.ts';
import { reservationFor } from './pricing.ts';
import { countInput, countMessages } from './tokens.ts';

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
const common = {
  model: z.string().min(1),
  stream: z.boolean().optional(),
  max_tokens: positiveInt.nullish(),
};
const text = z.union([z.string(), z.array(z.unknown()).min(1)]);

const schemas = {
  chat: z.looseObject({
    ...common,
    messages: z.array(z.looseObject({ role: z.string() })).min(1),
    max_completion_tokens: positiveInt.nullish(),
  }),
  completion: z.looseObject({ ...common, prompt: text }),
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
  let maxTokens: number | undefined;
  if (kind === 'chat') {
    promptTokens = countMessages(body.messages as unknown[]);
    maxTokens = (body.max_completion_tokens ?? body.max_tokens ?? undefined) as number | undefined;
  } else if (kind === 'completion') {
    promptTokens = countInput(body.prompt);
    maxTokens = (body.max_tokens ?? undefined) as number | undefined;
  } else {
    promptTokens = countInput(body.input);
    maxTokens = 0;
  }
  if (stream) {
    // Ask the upstream to report usage at the end of the stream; billing needs it.
    const opts = body.stream_options;
    body.stream_options = { ...(opts && typeof opts === 'object' ? opts : {}), include_usage: true };
  }
  return { kind, model, body, stream, promptTokens, maxMsats: reservationFor(promptTokens, maxTokens, model.price) };
}
