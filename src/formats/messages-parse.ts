import { z } from 'zod';
import { EngineError } from '../engine/errors.ts';
import type { Estimate } from '../engine/format.ts';
import { mediaTokens } from '../engine/tokens.ts';
import { asksLongCache, unseenFile } from './prompt.ts';

/**
 * A client's Anthropic Messages request, validated, and what the engine prices before sending it.
 * Unknown fields pass through (a native Anthropic upstream may know them); the translation to
 * chat refuses the ones it cannot express.
 */

const cacheControl = z.looseObject({ type: z.literal('ephemeral') }).nullish();
const text = z.looseObject({ type: z.literal('text'), text: z.string(), cache_control: cacheControl });
const imageSource = z.discriminatedUnion('type', [
  z.looseObject({ type: z.literal('base64'), media_type: z.string().min(1), data: z.string().min(1) }),
  z.looseObject({ type: z.literal('url'), url: z.string().min(1) }),
  z.looseObject({ type: z.literal('file'), file_id: z.string().min(1) }),
]);
const image = z.looseObject({ type: z.literal('image'), source: imageSource, cache_control: cacheControl });
const documentSource = z.discriminatedUnion('type', [
  z.looseObject({ type: z.literal('base64'), media_type: z.string().min(1), data: z.string().min(1) }),
  z.looseObject({ type: z.literal('text'), media_type: z.string().optional(), data: z.string() }),
  z.looseObject({ type: z.literal('url'), url: z.string().min(1) }),
  z.looseObject({ type: z.literal('content'), content: z.union([z.string(), z.array(z.looseObject({ type: z.enum(['text', 'image']) }))]) }),
  z.looseObject({ type: z.literal('file'), file_id: z.string().min(1) }),
]);
const document = z.looseObject({ type: z.literal('document'), source: documentSource, title: z.string().nullish(), context: z.string().nullish() });

/** What a tool result may hold: Anthropic takes no tool result or tool call inside one. */
const nested = z.looseObject({ type: z.enum(['text', 'image', 'document', 'search_result']) }).superRefine((b, ctx) => {
  const shape = ({ text, image, document } as Record<string, z.ZodType>)[b.type];
  const r = shape?.safeParse(b);
  if (r && !r.success) for (const issue of r.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path });
});

/** The block types a client may send, each checked to its own shape; other types pass as they are. */
const blockShapes: Record<string, z.ZodType> = {
  text,
  image,
  document,
  tool_use: z.looseObject({ type: z.literal('tool_use'), id: z.string().min(1), name: z.string().min(1), input: z.record(z.string(), z.unknown()) }),
  tool_result: z.looseObject({
    type: z.literal('tool_result'),
    tool_use_id: z.string().min(1),
    content: z.union([z.string(), z.array(nested)]).optional(),
    is_error: z.boolean().optional(),
  }),
  thinking: z.looseObject({ type: z.literal('thinking'), thinking: z.string(), signature: z.string() }),
  redacted_thinking: z.looseObject({ type: z.literal('redacted_thinking'), data: z.string() }),
};

const block = z.looseObject({ type: z.string().min(1) }).superRefine((b, ctx) => {
  const shape = blockShapes[b.type];
  if (!shape) return;
  const r = shape.safeParse(b);
  if (!r.success) for (const issue of r.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path });
});

// Claude Code sends system turns mid-conversation (newer models take them); their content is text.
const message = z.looseObject({
  role: z.enum(['user', 'assistant', 'system']),
  content: z.union([z.string(), z.array(block)]),
});

const tool = z.looseObject({ name: z.string().min(1), type: z.string().nullish() }).superRefine((t, ctx) => {
  // A custom tool (no type, or 'custom') needs its schema; Anthropic's own tools are typed.
  if ((t.type == null || t.type === 'custom') && (typeof t.input_schema !== 'object' || t.input_schema === null)) {
    ctx.addIssue({ code: 'custom', message: 'A custom tool needs an input_schema object', path: ['input_schema'] });
  }
});

const toolChoice = z.discriminatedUnion('type', [
  z.looseObject({ type: z.literal('auto'), disable_parallel_tool_use: z.boolean().optional() }),
  z.looseObject({ type: z.literal('any'), disable_parallel_tool_use: z.boolean().optional() }),
  z.looseObject({ type: z.literal('tool'), name: z.string().min(1), disable_parallel_tool_use: z.boolean().optional() }),
  z.looseObject({ type: z.literal('none') }),
]);

const thinking = z.discriminatedUnion('type', [
  z.looseObject({ type: z.literal('enabled'), budget_tokens: z.number().int().min(1) }),
  z.looseObject({ type: z.literal('disabled') }),
  z.looseObject({ type: z.literal('adaptive') }),
]);

const countable = {
  model: z.string().min(1),
  messages: z.array(message).min(1),
  system: z.union([z.string(), z.array(text)]).optional(),
  tools: z.array(tool).optional(),
  tool_choice: toolChoice.optional(),
  thinking: thinking.optional(),
};

const createSchema = z.looseObject({
  ...countable,
  max_tokens: z.number().int().positive(),
  stream: z.boolean().optional(),
  stop_sequences: z.array(z.string()).optional(),
  temperature: z.number().min(0).max(1).optional(),
  top_p: z.number().min(0).max(1).optional(),
  top_k: z.number().int().min(0).optional(),
  metadata: z.looseObject({ user_id: z.string().nullish() }).optional(),
});

const countSchema = z.looseObject(countable);

function validate<T>(schema: z.ZodType<T>, raw: unknown): T {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? `'${issue.path.join('.')}': ` : '';
    throw new EngineError('invalid_request', `Invalid request body: ${where}${issue.message}`);
  }
  return parsed.data;
}

/** Framing Anthropic adds per turn, and once for the reply; like chat's, a few tokens each. */
const PER_MESSAGE = 3;
const PER_REPLY = 3;
/**
 * The system prompt Anthropic adds when tools are offered, which differs by model and tool choice
 * (platform.claude.com/docs/en/about-claude/pricing, "Tool use pricing"): the most is Opus 4.7's,
 * 675 tokens for `auto`/`none` and 804 for `any`/`tool`; Opus 4.6 and Sonnet 4.6 add 497/589,
 * Opus 4.8 290/410. The model an upstream serves is not known here by that name, so the most.
 */
const TOOL_PROMPT = 804;
/**
 * Anthropic's schema-less tools are named in a few words, but billed for the definition the API
 * writes in for them, which the body does not hold. Its pages (platform.claude.com/docs/en/
 * about-claude/pricing, "Specific tool pricing", and each tool's own page) give: bash 325 tokens on
 * Opus 4.7 and 4.8 (244 on earlier models), the text editor 700, computer use 735 per definition
 * plus 466-499 of system prompt. A later version of a tool is taken to cost what its family does.
 */
const OWN_TOOLS: Array<[RegExp, number]> = [
  [/^bash_/, 325],
  [/^text_editor_/, 700],
  [/^computer_/, 499 + 735],
];
/**
 * Any other typed tool (memory, the server tools, one added later) is defined by the API at a
 * size no page gives: it is allowed as much as the dearest one documented.
 */
const UNKNOWN_TOOL = 499 + 735;

function ownToolTokens(tool: Record<string, unknown>): number {
  if (tool.type == null || tool.type === 'custom') return 0;
  const type = String(tool.type);
  return OWN_TOOLS.find(([family]) => family.test(type))?.[1] ?? UNKNOWN_TOOL;
}

type Block = Record<string, unknown> & { type: string };

/** What the engine counts for a Messages prompt: every text piece, and allowances for the rest. */
function estimateOf(body: Record<string, unknown>): Estimate {
  const estimate: Estimate = { text: [], extraTokens: PER_REPLY, choices: 1, images: 0 };
  const blocks = (content: unknown) => {
    if (typeof content === 'string') {
      estimate.text.push(content);
      return;
    }
    if (!Array.isArray(content)) return;
    for (const b of content as Block[]) {
      if (b.type === 'text' && typeof b.text === 'string') estimate.text.push(b.text);
      else if (b.type === 'image') {
        estimate.extraTokens += mediaTokens('image');
        estimate.images++;
      } else if (b.type === 'document') {
        const source = b.source as Record<string, unknown>;
        if (source.type === 'text' && typeof source.data === 'string') estimate.text.push(source.data);
        else if (source.type === 'content') blocks(source.content);
        else {
          const bytes = typeof source.data === 'string' ? source.data.length : undefined;
          estimate.extraTokens += mediaTokens('file', { bytes });
          estimate.images++;
          // A document by URL or file id is billed at its full size, which cannot be known here.
          if (unseenFile(b)) estimate.wholeContext = true;
        }
        for (const k of ['title', 'context'] as const) if (typeof b[k] === 'string') estimate.text.push(b[k]);
      } else if (b.type === 'tool_use') estimate.text.push(String(b.name), JSON.stringify(b.input ?? {}));
      else if (b.type === 'tool_result') blocks(b.content);
      else if (b.type === 'thinking' && typeof b.thinking === 'string') {
        // The signature goes back to the upstream with the thought, and is billed as input.
        estimate.text.push(b.thinking);
        if (typeof b.signature === 'string') estimate.text.push(b.signature);
      } else if (b.type === 'redacted_thinking') {
        // Encrypted thinking is billed as the thinking it hides; its text bounds that from above.
        if (typeof b.data === 'string') estimate.text.push(b.data);
      } else estimate.text.push(JSON.stringify(b));
    }
  };
  blocks(body.system);
  for (const m of body.messages as Array<{ content: unknown }>) {
    estimate.extraTokens += PER_MESSAGE;
    blocks(m.content);
  }
  if (Array.isArray(body.tools) && body.tools.length > 0) {
    estimate.extraTokens += TOOL_PROMPT;
    for (const t of body.tools as Array<Record<string, unknown>>) {
      estimate.text.push(JSON.stringify(t));
      estimate.extraTokens += ownToolTokens(t);
    }
  }
  return estimate;
}

export interface ParsedMessages {
  model: string;
  stream: boolean;
  estimate: Estimate;
  body: Record<string, unknown>;
}

/** A `POST /v1/messages` body: 400 `invalid_request` naming the first problem's path. */
export function parseMessages(raw: unknown): ParsedMessages {
  const body = validate(createSchema, raw) as Record<string, unknown>;
  const estimate = estimateOf(body);
  // `max_tokens` bounds everything the model writes, thinking included (its budget is below it).
  estimate.requestedCompletionTokens = body.max_tokens as number;
  if (asksLongCache(body)) estimate.longCacheWrites = true;
  return { model: body.model as string, stream: body.stream === true, estimate, body };
}

/** A `POST /v1/messages/count_tokens` body: the same prompt, without `max_tokens` or sampling. */
export function countTokensEstimate(raw: unknown): { model: string; estimate: Estimate } {
  const body = validate(countSchema, raw) as Record<string, unknown>;
  return { model: body.model as string, estimate: estimateOf(body) };
}
