import { z } from 'zod';
import { EngineError } from '../engine/errors.ts';
import type { Bill, Codec, Estimate, WireError, WireFormat } from '../engine/format.ts';
import { codecFormat, registerCodec, type ClientRequest } from './compose.ts';
import { ResponsesPassthrough } from './responses-native.ts';
import { mediaTokens } from '../engine/tokens.ts';
import { unseenFile } from './prompt.ts';
import { clientRunTool, requestFromChat, requestToChat } from './responses-request.ts';
import { billUsage, responseFromChat, responseToChat, usageOf } from './responses-response.ts';
import { ResponsesDecoder, ResponsesEncoder } from './responses-stream.ts';
import { isObj, type Obj } from './responses-shared.ts';
import { refuseUnpriced } from './unpriced.ts';

/**
 * The OpenAI Responses API (`POST /v1/responses`), the protocol of Codex and the newer OpenAI
 * models. `encoder(request)` and `responseFromChat(chat, request)` take the client's body when the
 * caller has it, so that the answer echoes the request's settings as the API does. A Responses
 * client on a Responses upstream needs no codec: see `ResponsesPassthrough` and `meterResponse`
 * (./responses-native.ts), and `billResponse` below for a whole answer.
 */
export const responsesCodec: Codec = {
  kind: 'openai-responses',
  path: '/responses',
  requestToChat,
  requestFromChat,
  responseToChat,
  responseFromChat,
  decoder: () => new ResponsesDecoder(),
  encoder: (request?: Obj) => new ResponsesEncoder(request),
  usageOf,
  limit(body, maxTokens) {
    body.max_output_tokens = maxTokens;
  },
  relay: () => new ResponsesPassthrough(),
  billBody: (body, bill) => billResponse(body, bill),
};

/**
 * Writes the charge into a non-streamed Response, where the streamed one carries it in
 * `response.completed`: the usage billed, our `cost` beside it, and the change in `x_cashu`.
 */
export function billResponse(body: Record<string, unknown>, bill: Bill): void {
  body.usage = billUsage(bill);
  if (bill.change) body.x_cashu = bill.change;
}

/** OpenAI's error shape, with our stable code. */
export function errorBody(err: WireError): Record<string, unknown> {
  return { error: { message: err.message, type: err.type, param: null, code: err.code, ...err.extra } };
}

// ---------------------------------------------------------------------------------------------
// The client's request

const inputText = z.looseObject({ type: z.literal('input_text'), text: z.string() });
const inputImage = z.looseObject({
  type: z.literal('input_image'),
  image_url: z.string().min(1).nullish(),
  file_id: z.string().min(1).nullish(),
  detail: z.enum(['auto', 'low', 'high', 'original']).nullish(),
}).refine((p) => p.image_url != null || p.file_id != null, { message: 'an image needs image_url or file_id' });
const inputFile = z.looseObject({
  type: z.literal('input_file'),
  file_data: z.string().nullish(),
  file_id: z.string().nullish(),
  file_url: z.string().nullish(),
  filename: z.string().nullish(),
}).refine((p) => p.file_data != null || p.file_id != null || p.file_url != null, { message: 'a file needs file_data, file_id or file_url' });
const outputText = z.looseObject({ type: z.literal('output_text'), text: z.string() });
const refusal = z.looseObject({ type: z.literal('refusal'), refusal: z.string() });
const part = z.discriminatedUnion('type', [inputText, inputImage, inputFile, outputText, refusal]);

const itemSchemas: Record<string, z.ZodType> = {
  message: z.looseObject({
    type: z.literal('message').optional(),
    role: z.enum(['user', 'assistant', 'system', 'developer']),
    content: z.union([z.string(), z.array(part)]),
  }),
  function_call: z.looseObject({ type: z.literal('function_call'), call_id: z.string().min(1), name: z.string().min(1), arguments: z.string() }),
  function_call_output: z.looseObject({
    type: z.literal('function_call_output'),
    call_id: z.string().min(1),
    output: z.union([z.string(), z.array(part)]),
  }),
  reasoning: z.looseObject({ type: z.literal('reasoning'), summary: z.array(z.looseObject({ text: z.string() })).optional() }),
};

const positiveInt = z.number().int().positive();
const request = z.looseObject({
  model: z.string().min(1),
  input: z.union([z.string(), z.array(z.unknown())]).nullish(),
  instructions: z.string().nullish(),
  stream: z.boolean().nullish(),
  max_output_tokens: positiveInt.nullish(),
  tools: z.array(z.looseObject({ type: z.string() })).nullish(),
  tool_choice: z.union([z.enum(['auto', 'none', 'required']), z.looseObject({ type: z.string() })]).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  reasoning: z.looseObject({ effort: z.string().nullish(), summary: z.string().nullish() }).nullish(),
  text: z.looseObject({ format: z.looseObject({ type: z.string() }).optional() }).nullish(),
  include: z.array(z.string()).nullish(),
  metadata: z.record(z.string(), z.string()).nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  previous_response_id: z.string().min(1).nullish(),
  store: z.boolean().nullish(),
  background: z.boolean().nullish(),
  truncation: z.enum(['auto', 'disabled']).nullish(),
  user: z.string().nullish(),
});

function invalid(error: z.ZodError, prefix: (string | number)[] = []): EngineError {
  const issue = error.issues[0]!;
  const path = [...prefix, ...issue.path].map(String);
  const where = path.length ? `'${path.join('.')}': ` : '';
  return new EngineError('invalid_request', `Invalid request body: ${where}${issue.message}`);
}

export interface ParsedResponses {
  model: string;
  stream: boolean;
  estimate: Estimate;
  body: Obj;
  /**
   * The prompt holds what this request cannot show: a stored response (`previous_response_id`),
   * a conversation, a stored prompt or a stored item (`item_reference`). Only a native upstream
   * can serve it, and the engine cannot count it: it must reserve as if the prompt filled the
   * model's context.
   */
  storedPrompt: boolean;
}

export function parseResponses(raw: unknown): ParsedResponses {
  const parsed = request.safeParse(raw);
  if (!parsed.success) throw invalid(parsed.error);
  const body = parsed.data as Obj;
  const items = Array.isArray(body.input) ? body.input : [];
  items.forEach((item, i) => {
    const type = isObj(item) ? (item.type ?? 'message') : undefined;
    const schema = itemSchemas[String(type)] ?? z.looseObject({ type: z.string() });
    const r = schema.safeParse(item);
    if (!r.success) throw invalid(r.error, ['input', i]);
  });
  const referenced = items.some((item) => isObj(item) && item.type === 'item_reference');
  const storedPrompt = body.previous_response_id != null || body.conversation != null || body.prompt != null || referenced;
  if (body.input == null && !storedPrompt) {
    throw new EngineError('invalid_request', "Invalid request body: 'input': required unless the request continues a stored response");
  }
  (body.tools as Obj[] | null | undefined)?.forEach((tool, i) => {
    if (!clientRunTool(tool)) {
      throw new EngineError('unsupported_tool',
        `The '${String(tool.type)}' tool ('tools.${i}') runs on the provider's platform and is billed per use, which this gateway does not price. Use function tools.`,
      );
    }
  });
  const counted = estimate(body, items);
  // The engine prices the reservation from this estimate, before an upstream (and its guard) is
  // chosen: state stored upstream must be marked here. Where it is refused, nothing is reserved.
  const whole = counted.wholeContext === true || storedPrompt || STATEFUL.some((f) => asksState(body[f]));
  return { model: body.model as string, stream: body.stream === true, estimate: whole ? { ...counted, wholeContext: true } : counted, body, storedPrompt };
}

/** Chat's framing, which the Responses API's counts follow: per item and per reply. */
const PER_ITEM = 3;
const PER_REPLY = 3;

function estimate(body: Obj, items: unknown[]): Estimate {
  const text: string[] = [];
  let extraTokens = PER_REPLY;
  let images = 0;
  let wholeContext = false;
  const parts = (content: unknown) => {
    if (typeof content === 'string') return void text.push(content);
    if (!Array.isArray(content)) return;
    for (const p of content as Obj[]) {
      // By type first: a media part with a `text` key of its own is still media, billed as such.
      if (p.type === 'input_image') {
        images++;
        extraTokens += mediaTokens('image', { detail: typeof p.detail === 'string' ? p.detail : undefined });
      } else if (p.type === 'input_file') {
        images++;
        extraTokens += mediaTokens('file', { bytes: typeof p.file_data === 'string' ? p.file_data.length : undefined });
        // A file by URL or id is billed at its full size, which cannot be known here.
        if (unseenFile(p)) wholeContext = true;
      }
      if (typeof p.text === 'string') text.push(p.text);
      else if (typeof p.refusal === 'string') text.push(p.refusal);
    }
  };
  if (typeof body.instructions === 'string') {
    text.push(body.instructions);
    extraTokens += PER_ITEM;
  }
  if (typeof body.input === 'string') {
    text.push(body.input);
    extraTokens += PER_ITEM;
  }
  for (const raw of items as Obj[]) {
    extraTokens += PER_ITEM;
    const type = raw.type ?? 'message';
    if (type === 'message') parts(raw.content);
    else if (type === 'function_call') text.push(String(raw.name), String(raw.arguments));
    else if (type === 'function_call_output') parts(raw.output);
    else if (type === 'reasoning') {
      // Its summary and its reasoning text (`reasoning_text` parts, which vLLM's gpt-oss reads
      // back as the model's earlier thoughts) are both prompt to a Responses upstream.
      parts(raw.summary);
      parts(raw.content);
      // Encrypted reasoning is billed as the reasoning it hides: about 3 bytes of it per 4 of base64.
      if (typeof raw.encrypted_content === 'string') extraTokens += Math.ceil((raw.encrypted_content.length * 3) / 16);
    } else text.push(JSON.stringify(raw));
  }
  if (Array.isArray(body.tools) && body.tools.length > 0) text.push(JSON.stringify(body.tools));
  if (isObj(body.text) && body.text.format !== undefined) text.push(JSON.stringify(body.text.format));
  return {
    text,
    extraTokens,
    requestedCompletionTokens: typeof body.max_output_tokens === 'number' ? body.max_output_tokens : undefined,
    choices: 1,
    images,
    ...(wholeContext ? { wholeContext } : {}),
  };
}

registerCodec(responsesCodec);

/** Fields that make the upstream keep or read state under the operator's account. */
const STATEFUL = ['previous_response_id', 'conversation', 'background', 'prompt'] as const;

/** A stateful field given, and not as its default (`background: false` asks for nothing). */
function asksState(v: unknown): boolean {
  return v != null && v !== false;
}

/**
 * On a Responses upstream every payer shares the operator's account: a stored response (or an
 * item of one, by `item_reference`) is readable by anyone who learns its id. So nothing is stored
 * and no stored state is read unless the operator allows it for that upstream (`allow_parameters`,
 * `item_reference` by that name), and then the whole context is reserved (marked by
 * `parseResponses`), since a stored prompt cannot be counted here. A chat upstream refuses them
 * all in the translation (`requestToChat`).
 */
function guardState(req: ClientRequest, kind: string, allowed: ReadonlySet<string>): EngineError | ClientRequest {
  if (kind !== 'openai-responses') return req;
  const body = { ...req.body };
  for (const f of STATEFUL) {
    if (asksState(body[f]) && !allowed.has(f)) return refuseStored(`'${f}'`, f);
  }
  if (!allowed.has('item_reference') && Array.isArray(body.input)) {
    const i = body.input.findIndex((item) => isObj(item) && item.type === 'item_reference');
    if (i >= 0) return refuseStored(`The item_reference 'input.${i}'`, `input.${i}`);
  }
  if (!allowed.has('store')) body.store = false;
  return { ...req, body };
}

function refuseStored(what: string, param: string): EngineError {
  return new EngineError('stateful_not_supported', `${what} would read or keep a response stored under the gateway's account, which other payers share; send the whole conversation in 'input' instead.`, {
    extra: { param },
  });
}

/**
 * Unpriced parameters first, on every upstream kind as the chat door does: a native upstream gets
 * the body untouched, and `service_tier` is carried into a chat translation.
 */
function guard(req: ClientRequest, kind: string, allowed: ReadonlySet<string>): EngineError | ClientRequest {
  return refuseUnpriced('responses', req.body, allowed) ?? guardState(req, kind, allowed);
}

/** `POST /v1/responses`, for Codex and the newer OpenAI SDKs. */
export const responsesFormat: WireFormat = codecFormat({ name: 'responses', codec: responsesCodec, parse: parseResponses, errorBody, guard });
