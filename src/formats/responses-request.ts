import { copyFields, given, isObj, refuse, SAME_FIELDS, type Obj } from './responses-shared.ts';

/**
 * Requests between the Responses API and chat completions, both ways. Whatever one side cannot
 * express is refused with a stable code, never dropped: a client must not pay for an answer to a
 * question it did not ask.
 */

/** Responses parameters this translation understands; any other is refused rather than dropped. */
const RESPONSES_KNOWN = new Set<string>([
  ...SAME_FIELDS,
  'input',
  'instructions',
  'metadata',
  // Codex's own bookkeeping on every request: not sent to a chat upstream.
  'client_metadata',
  'tools',
  'tool_choice',
  'max_output_tokens',
  'reasoning',
  'text',
  'include',
  'truncation',
  'store',
  'stream_options',
  'previous_response_id',
  'conversation',
  'background',
  'prompt',
]);

/** Tools OpenAI runs on its own platform and bills per call, session or image on top of tokens. */
export const HOSTED_TOOLS = new Set<string>([
  'web_search',
  'web_search_preview',
  'web_search_2025_08_26',
  'web_search_preview_2025_03_11',
  'file_search',
  'code_interpreter',
  'image_generation',
  'mcp',
]);

/**
 * Tools the client runs itself, so a native upstream bills them as tokens only. Every other tool
 * (the hosted ones above, and any the API adds later) may cost what no price here covers.
 */
export function clientRunTool(tool: Record<string, unknown>): boolean {
  switch (tool.type) {
    case 'function':
    case 'custom':
    case 'namespace':
    case 'computer':
    case 'computer_use_preview':
    case 'local_shell':
    case 'apply_patch':
      return true;
    case 'shell':
      // A shell in OpenAI's containers is billed per container; a local one is the client's.
      return tool.environment == null || (isObj(tool.environment) && tool.environment.type === 'local');
    default:
      return false;
  }
}

const STATEFUL_HINT =
  'A chat completions upstream keeps no conversation state: send the whole conversation in `input` and `store: false`, or use a model served by a Responses API upstream.';

/**
 * A chat upstream cannot store a response, continue a stored one, or fill a stored prompt. An
 * absent `store` is served (with `store: false` in the answer, so the client sees it was not
 * stored): most clients never look a response up again, and those that chain turns send
 * `previous_response_id`, which is refused here.
 */
function refuseStateful(body: Obj): void {
  for (const k of ['previous_response_id', 'conversation', 'prompt'] as const) {
    if (given(body[k])) throw refuse('stateful_not_supported', `'${k}' needs stored state. ${STATEFUL_HINT}`);
  }
  if (body.store === true) throw refuse('stateful_not_supported', `'store: true' asks for a stored response. ${STATEFUL_HINT}`);
  if (body.background === true) throw refuse('stateful_not_supported', `'background: true' needs a stored response to poll. ${STATEFUL_HINT}`);
}

export function requestToChat(body: Obj): Obj {
  for (const [k, v] of Object.entries(body)) {
    if (!RESPONSES_KNOWN.has(k) && given(v)) throw refuse('unsupported_parameter', `'${k}' cannot be translated to chat completions.`);
  }
  refuseStateful(body);
  const chat: Obj = {};
  copyFields(body, chat, SAME_FIELDS);
  const messages: Obj[] = [];
  if (typeof body.instructions === 'string') messages.push({ role: 'system', content: body.instructions });
  if (typeof body.input === 'string') messages.push({ role: 'user', content: body.input });
  else if (Array.isArray(body.input)) messages.push(...itemsToMessages(body.input));
  chat.messages = messages;
  // `metadata` tags a stored response, and is echoed in the answer; OpenAI's chat completions
  // refuses it unless the completion is stored, which a Responses client did not ask for.
  if (Array.isArray(body.tools) && body.tools.length > 0) chat.tools = body.tools.map(toolToChat);
  if (given(body.tool_choice)) chat.tool_choice = toolChoiceToChat(body.tool_choice);
  if (given(body.max_output_tokens)) chat.max_completion_tokens = body.max_output_tokens;
  if (isObj(body.reasoning) && given(body.reasoning.effort)) chat.reasoning_effort = body.reasoning.effort;
  // `reasoning.summary` asks for a summary of the reasoning; a chat upstream's `reasoning_content`
  // becomes that summary on the way back, so the setting needs nothing sent.
  if (isObj(body.text)) {
    if (isObj(body.text.format)) {
      const f = formatToChat(body.text.format);
      if (f) chat.response_format = f;
    }
    if (given(body.text.verbosity)) chat.verbosity = body.text.verbosity;
  }
  if (Array.isArray(body.include) && body.include.includes('message.output_text.logprobs')) {
    throw refuse('unsupported_parameter', "'include: message.output_text.logprobs' cannot be translated to chat completions.");
  }
  // Other `include` values name outputs a chat upstream never produces (encrypted reasoning,
  // hosted tools' results): asking for them changes nothing.
  if (body.truncation === 'auto') {
    throw refuse('unsupported_parameter', "'truncation: auto' (dropping the middle of a long conversation) cannot be done by a chat completions upstream.");
  }
  if (body.stream === true) chat.stream_options = { include_usage: true };
  return chat;
}

function itemsToMessages(items: unknown[]): Obj[] {
  const out: Obj[] = [];
  // Chat puts a turn's text and its tool calls in one assistant message; Responses lists them as
  // sibling items.
  let turn: Obj | undefined;
  items.forEach((raw, i) => {
    if (!isObj(raw)) throw refuse('invalid_request', `Invalid request body: 'input.${i}': expected an object`);
    const type = raw.type ?? 'message';
    if (type === 'message') {
      const role = raw.role;
      if (role === 'assistant') {
        turn = assistantToChat(raw, i);
        out.push(turn);
        return;
      }
      if (role !== 'user' && role !== 'system' && role !== 'developer') {
        throw refuse('invalid_request', `Invalid request body: 'input.${i}.role': expected user, assistant, system or developer`);
      }
      turn = undefined;
      out.push({ role: role === 'developer' ? 'system' : role, content: contentToChat(raw.content, role, i) });
      return;
    }
    if (type === 'function_call') {
      const call = { id: raw.call_id, type: 'function', function: { name: raw.name, arguments: raw.arguments ?? '' } };
      if (turn) turn.tool_calls = [...((turn.tool_calls as Obj[] | undefined) ?? []), call];
      else {
        turn = { role: 'assistant', content: null, tool_calls: [call] };
        out.push(turn);
      }
      return;
    }
    if (type === 'function_call_output') {
      turn = undefined;
      out.push({ role: 'tool', tool_call_id: raw.call_id, content: toolOutputToChat(raw.output, i) });
      return;
    }
    // Chat completions takes no reasoning from earlier turns (OpenAI discards it there, and
    // DeepSeek-style upstreams ask that it not be sent): leaving it out is what chat means.
    if (type === 'reasoning') return;
    if (type === 'item_reference') throw refuse('stateful_not_supported', `'input.${i}' refers to a stored item. ${STATEFUL_HINT}`);
    throw refuse('unsupported_input_item', `Input items of type '${String(type)}' ('input.${i}') cannot be translated to chat completions.`);
  });
  return out;
}

function assistantToChat(item: Obj, i: number): Obj {
  const msg: Obj = { role: 'assistant', content: null };
  if (typeof item.content === 'string') msg.content = item.content;
  else if (Array.isArray(item.content)) {
    let text = '';
    let refusal = '';
    for (const part of item.content) {
      if (isObj(part) && (part.type === 'output_text' || part.type === 'input_text') && typeof part.text === 'string') text += part.text;
      else if (isObj(part) && part.type === 'refusal' && typeof part.refusal === 'string') refusal += part.refusal;
      else throw refuse('unsupported_content', `Assistant content of type '${String(isObj(part) ? part.type : typeof part)}' ('input.${i}') cannot be translated to chat completions.`);
    }
    if (text) msg.content = text;
    if (refusal) msg.refusal = refusal;
  }
  return msg;
}

function contentToChat(content: unknown, role: string, i: number): unknown {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw refuse('invalid_request', `Invalid request body: 'input.${i}.content': expected a string or an array`);
  return content.map((part, j) => {
    const where = `input.${i}.content.${j}`;
    if (!isObj(part)) throw refuse('invalid_request', `Invalid request body: '${where}': expected an object`);
    if (part.type === 'input_text') return { type: 'text', text: part.text };
    if (role !== 'user') throw refuse('unsupported_content', `A ${role} message can only hold text in chat completions ('${where}').`);
    return mediaToChat(part, where);
  });
}

function mediaToChat(part: Obj, where: string): Obj {
  if (part.type === 'input_image') {
    if (typeof part.image_url !== 'string') {
      throw refuse('unsupported_content', `An image given by 'file_id' lives in OpenAI's file store, which a chat completions upstream cannot read ('${where}'): send it as a URL or a data URL.`);
    }
    const image: Obj = { url: part.image_url };
    if (given(part.detail)) image.detail = part.detail;
    return { type: 'image_url', image_url: image };
  }
  if (part.type === 'input_file') {
    if (given(part.file_url)) throw refuse('unsupported_content', `A file given by 'file_url' cannot be sent to chat completions ('${where}'): send its bytes in 'file_data'.`);
    const file: Obj = {};
    copyFields(part, file, ['file_data', 'file_id', 'filename']);
    return { type: 'file', file };
  }
  throw refuse('unsupported_content', `Content of type '${String(part.type)}' ('${where}') cannot be translated to chat completions.`);
}

function toolOutputToChat(output: unknown, i: number): unknown {
  if (typeof output === 'string') return output;
  if (!Array.isArray(output)) throw refuse('invalid_request', `Invalid request body: 'input.${i}.output': expected a string or an array`);
  return output.map((part, j) => {
    if (isObj(part) && part.type === 'input_text') return { type: 'text', text: part.text };
    throw refuse('unsupported_content', `A tool result in chat completions holds only text; 'input.${i}.output.${j}' is '${String(isObj(part) ? part.type : typeof part)}'.`);
  });
}

function toolToChat(tool: unknown, i: number): Obj {
  if (!isObj(tool)) throw refuse('invalid_request', `Invalid request body: 'tools.${i}': expected an object`);
  if (tool.type !== 'function') {
    const why = HOSTED_TOOLS.has(String(tool.type)) ? ' It runs on OpenAI\'s platform at a price of its own.' : '';
    throw refuse('unsupported_tool', `The '${String(tool.type)}' tool ('tools.${i}') cannot be served by a chat completions upstream.${why} Only function tools can.`);
  }
  if (tool.defer_loading === true || given(tool.output_schema)) {
    throw refuse('unsupported_tool', `'tools.${i}' uses deferred loading or an output schema, which chat completions cannot express.`);
  }
  const fn: Obj = { name: tool.name };
  if (given(tool.description)) fn.description = tool.description;
  if (given(tool.parameters)) fn.parameters = tool.parameters;
  // Absent means OpenAI's default for Responses (strict where the schema allows): the upstream decides.
  if (typeof tool.strict === 'boolean') fn.strict = tool.strict;
  return { type: 'function', function: fn };
}

function toolChoiceToChat(choice: unknown): unknown {
  if (typeof choice === 'string') return choice;
  if (isObj(choice) && choice.type === 'function') return { type: 'function', function: { name: choice.name } };
  if (isObj(choice) && choice.type === 'allowed_tools' && Array.isArray(choice.tools)) {
    const tools = choice.tools.map((t) => {
      if (isObj(t) && t.type === 'function') return { type: 'function', function: { name: t.name } };
      throw refuse('unsupported_tool', "Only function tools can be listed in 'tool_choice.tools' for a chat completions upstream.");
    });
    return { type: 'allowed_tools', allowed_tools: { mode: choice.mode, tools } };
  }
  throw refuse('unsupported_tool', `'tool_choice' of type '${String(isObj(choice) ? choice.type : choice)}' cannot be served by a chat completions upstream.`);
}

function formatToChat(format: Obj): Obj | undefined {
  if (format.type === 'text') return undefined;
  if (format.type === 'json_object') return { type: 'json_object' };
  if (format.type === 'json_schema') {
    const schema: Obj = { name: format.name, schema: format.schema };
    copyFields(format, schema, ['description', 'strict']);
    return { type: 'json_schema', json_schema: schema };
  }
  throw refuse('unsupported_parameter', `'text.format' of type '${String(format.type)}' cannot be translated to chat completions.`);
}

// ---------------------------------------------------------------------------------------------
// chat completions → Responses

/** Chat parameters Responses has too, or that are translated below. */
const CHAT_KNOWN = new Set<string>([
  ...SAME_FIELDS,
  'metadata',
  // Codex's own bookkeeping on every request: not sent to a chat upstream.
  'client_metadata',
  'messages',
  'stream_options',
  'max_tokens',
  'max_completion_tokens',
  'tools',
  'tool_choice',
  'response_format',
  'reasoning_effort',
  'verbosity',
  'store',
]);

/** Chat parameters with no Responses counterpart, refused unless at their default. */
function isDefault(k: string, v: unknown): boolean {
  if (!given(v)) return true;
  if (k === 'n') return v === 1;
  if (k === 'logprobs' || k === 'store') return v === false;
  if (k === 'presence_penalty' || k === 'frequency_penalty' || k === 'top_logprobs') return v === 0;
  if (k === 'stop') return Array.isArray(v) && v.length === 0;
  if (k === 'modalities') return Array.isArray(v) && !v.includes('audio');
  if (k === 'logit_bias') return isObj(v) && Object.keys(v).length === 0;
  return false;
}

export function requestFromChat(chat: Obj): Obj {
  for (const [k, v] of Object.entries(chat)) {
    if (CHAT_KNOWN.has(k) && k !== 'store') continue;
    if (!isDefault(k, v)) throw refuse('unsupported_parameter', `'${k}' cannot be translated to the Responses API.`);
  }
  const body: Obj = {};
  copyFields(chat, body, [...SAME_FIELDS, 'metadata']);
  body.input = (Array.isArray(chat.messages) ? chat.messages : []).flatMap(messageToItems);
  if (Array.isArray(chat.tools) && chat.tools.length > 0) body.tools = chat.tools.map(toolFromChat);
  if (given(chat.tool_choice)) body.tool_choice = toolChoiceFromChat(chat.tool_choice);
  const max = chat.max_completion_tokens ?? chat.max_tokens;
  if (given(max)) body.max_output_tokens = max;
  if (given(chat.reasoning_effort)) body.reasoning = { effort: chat.reasoning_effort };
  const text: Obj = {};
  if (isObj(chat.response_format)) text.format = formatFromChat(chat.response_format);
  if (given(chat.verbosity)) text.verbosity = chat.verbosity;
  if (Object.keys(text).length > 0) body.text = text;
  // OpenAI stores a response for 30 days unless told not to; a chat client expects no state, and
  // the operator's account should not keep its clients' conversations.
  body.store = false;
  return body;
}

function messageToItems(raw: unknown, i: number): Obj[] {
  if (!isObj(raw)) throw refuse('invalid_request', `Invalid request body: 'messages.${i}': expected an object`);
  if (given(raw.name) && raw.name !== '') throw refuse('unsupported_parameter', `'messages.${i}.name' cannot be translated to the Responses API.`);
  const role = raw.role;
  if (role === 'system' || role === 'developer') {
    return [{ type: 'message', role, content: textFromChat(raw.content, `messages.${i}`, 'input_text') }];
  }
  if (role === 'user') {
    const content = typeof raw.content === 'string' ? raw.content : userPartsFromChat(raw.content, i);
    return [{ type: 'message', role: 'user', content }];
  }
  if (role === 'assistant') {
    if (given(raw.audio) || given(raw.function_call)) {
      throw refuse('unsupported_content', `'messages.${i}' carries audio or a legacy function_call, which the Responses API cannot take back.`);
    }
    const items: Obj[] = [];
    let text = given(raw.content) ? textFromChat(raw.content, `messages.${i}`, 'text') : '';
    if (typeof text !== 'string') text = (text as Obj[]).map((p) => p.text).join('');
    if (!text && typeof raw.refusal === 'string') text = raw.refusal;
    if (text) items.push({ type: 'message', role: 'assistant', content: text });
    if (Array.isArray(raw.tool_calls)) {
      raw.tool_calls.forEach((c, j) => {
        if (!isObj(c) || c.type !== 'function' || !isObj(c.function)) {
          throw refuse('unsupported_tool', `'messages.${i}.tool_calls.${j}' is not a function call, which is all the Responses API can take back.`);
        }
        items.push({ type: 'function_call', call_id: c.id, name: c.function.name, arguments: c.function.arguments ?? '' });
      });
    }
    return items;
  }
  if (role === 'tool') {
    const content = textFromChat(raw.content, `messages.${i}`, 'text');
    const output = typeof content === 'string' ? content : (content as Obj[]).map((p) => p.text).join('');
    return [{ type: 'function_call_output', call_id: raw.tool_call_id, output }];
  }
  throw refuse('unsupported_content', `Messages with role '${String(role)}' ('messages.${i}') cannot be translated to the Responses API.`);
}

/** Text content (a string or text parts), refusing anything else. */
function textFromChat(content: unknown, where: string, partType: 'input_text' | 'text'): string | Obj[] {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((p, j) => {
    if (isObj(p) && (p.type === 'text' || p.type === 'refusal')) return { type: partType, text: p.text ?? p.refusal };
    throw refuse('unsupported_content', `'${where}.content.${j}' must be text here.`);
  });
}

function userPartsFromChat(content: unknown, i: number): Obj[] {
  if (!Array.isArray(content)) throw refuse('invalid_request', `Invalid request body: 'messages.${i}.content': expected a string or an array`);
  return content.map((p, j) => {
    const where = `messages.${i}.content.${j}`;
    if (!isObj(p)) throw refuse('invalid_request', `Invalid request body: '${where}': expected an object`);
    if (p.type === 'text') return { type: 'input_text', text: p.text };
    if (p.type === 'image_url') {
      const img = isObj(p.image_url) ? p.image_url : { url: p.image_url };
      return { type: 'input_image', image_url: img.url, detail: img.detail ?? 'auto' };
    }
    if (p.type === 'file' && isObj(p.file)) {
      const part: Obj = { type: 'input_file' };
      copyFields(p.file, part, ['file_data', 'file_id', 'filename']);
      return part;
    }
    throw refuse('unsupported_content', `Content of type '${String(p.type)}' ('${where}') cannot be translated to the Responses API.`);
  });
}

function toolFromChat(tool: unknown, i: number): Obj {
  if (!isObj(tool) || tool.type !== 'function' || !isObj(tool.function)) {
    throw refuse('unsupported_tool', `'tools.${i}' is not a function tool, which is all this translation carries.`);
  }
  const fn = tool.function;
  return {
    type: 'function',
    name: fn.name,
    ...(given(fn.description) ? { description: fn.description } : {}),
    // Chat documents an absent schema as "no parameters".
    parameters: fn.parameters ?? { type: 'object', properties: {} },
    // Responses is strict unless told otherwise; chat is not.
    strict: fn.strict === true,
  };
}

function toolChoiceFromChat(choice: unknown): unknown {
  if (typeof choice === 'string') return choice;
  if (isObj(choice) && choice.type === 'function' && isObj(choice.function)) return { type: 'function', name: choice.function.name };
  if (isObj(choice) && choice.type === 'allowed_tools' && isObj(choice.allowed_tools) && Array.isArray(choice.allowed_tools.tools)) {
    const tools = choice.allowed_tools.tools.map((t) => {
      if (isObj(t) && t.type === 'function' && isObj(t.function)) return { type: 'function', name: t.function.name };
      throw refuse('unsupported_tool', "Only function tools can be listed in 'tool_choice.allowed_tools'.");
    });
    return { type: 'allowed_tools', mode: choice.allowed_tools.mode, tools };
  }
  throw refuse('unsupported_tool', `'tool_choice' of type '${String(isObj(choice) ? choice.type : choice)}' cannot be translated to the Responses API.`);
}

function formatFromChat(format: Obj): Obj {
  if (format.type === 'text' || format.type === 'json_object') return { type: format.type };
  if (format.type === 'json_schema' && isObj(format.json_schema)) {
    const s = format.json_schema;
    const out: Obj = { type: 'json_schema', name: s.name, schema: s.schema ?? {} };
    copyFields(s, out, ['description', 'strict']);
    return out;
  }
  throw refuse('unsupported_parameter', `'response_format' of type '${String(format.type)}' cannot be translated to the Responses API.`);
}
