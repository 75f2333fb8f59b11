import { EngineError, type EngineCode } from '../engine/errors.ts';
import { chatUsageBody, chatUsageOf, messagesUsageBody, messagesUsageOf } from './messages-usage.ts';

/**
 * Anthropic Messages ↔ OpenAI chat completions, requests and whole answers. What one side cannot
 * express is refused with a 400 and a stable code, never dropped; the few things left out are
 * named where they are, with the reason they carry no meaning on the other side.
 */

type Obj = Record<string, unknown>;
type Block = Obj & { type: string };

const refuse = (code: EngineCode, message: string) => new EngineError(code, message);

// ---------------------------------------------------------------- Messages → chat (request)

/** Request fields with a chat equivalent; any other is refused rather than lost. */
const MESSAGES_FIELDS = new Set([
  'model', 'max_tokens', 'messages', 'system', 'tools', 'tool_choice', 'stop_sequences', 'temperature',
  'top_p', 'top_k', 'stream', 'metadata', 'thinking',
]);

/** Chat's reasoning effort for a thinking budget (the budget is within `max_tokens` either way). */
function effortFor(budget: number): 'low' | 'medium' | 'high' {
  if (budget < 4096) return 'low';
  if (budget < 16384) return 'medium';
  return 'high';
}

function dataUrl(mediaType: unknown, data: unknown): string {
  return `data:${String(mediaType)};base64,${String(data)}`;
}

/** A user-side block as chat content parts. */
function partToChat(b: Block, where: string): Obj[] {
  const part = blockToPart(b, where);
  // A document's context is text the model is meant to read with it.
  return b.type === 'document' && typeof b.context === 'string' && b.context ? [{ type: 'text', text: b.context }, part] : [part];
}

function blockToPart(b: Block, where: string): Obj {
  if (b.type === 'text') return { type: 'text', text: b.text };
  if (b.type === 'image') {
    const s = b.source as Obj;
    if (s.type === 'base64') return { type: 'image_url', image_url: { url: dataUrl(s.media_type, s.data) } };
    if (s.type === 'url') return { type: 'image_url', image_url: { url: s.url } };
    throw refuse('untranslatable_content', `${where}: an image given by Anthropic file id cannot be sent to this model.`);
  }
  if (b.type === 'document') {
    const s = b.source as Obj;
    if (s.type === 'base64' && s.media_type === 'application/pdf') {
      const filename = typeof b.title === 'string' && b.title ? b.title : 'document.pdf';
      return { type: 'file', file: { filename, file_data: dataUrl(s.media_type, s.data) } };
    }
    if (s.type === 'text') return { type: 'text', text: s.data };
    throw refuse('untranslatable_content', `${where}: a document given as '${String(s.type)}' (${String(s.media_type ?? 'no type')}) cannot be sent to this model; send a base64 PDF or text.`);
  }
  throw refuse('untranslatable_content', `${where}: content blocks of type '${b.type}' cannot be sent to this model.`);
}

/** A tool result's content as a chat tool message's (text only: chat tool messages carry no images). */
function toolResultContent(b: Block, where: string): string | Obj[] {
  const prefix = b.is_error === true ? 'Error: ' : '';
  if (b.content == null) return prefix;
  if (typeof b.content === 'string') return prefix + b.content;
  const parts = (b.content as Block[]).map((p, i) => {
    if (p.type !== 'text') throw refuse('untranslatable_content', `${where}.content.${i}: a tool result of type '${p.type}' cannot be sent to this model; only text can.`);
    return { type: 'text', text: p.text };
  });
  // chat has no error flag on a tool result: the model reads it in the result, as it would here.
  if (prefix) parts.unshift({ type: 'text', text: prefix.trim() });
  return parts;
}

function systemToChat(system: unknown): Obj[] {
  if (system == null) return [];
  if (typeof system === 'string') return system ? [{ role: 'system', content: system }] : [];
  // cache_control is a provider hint; chat providers cache prompts on their own.
  const parts = (system as Block[]).map((b) => ({ type: 'text', text: b.text }));
  return parts.length ? [{ role: 'system', content: parts.length === 1 ? parts[0]!.text : parts }] : [];
}

function userToChat(content: unknown, where: string): Obj[] {
  if (typeof content === 'string') return [{ role: 'user', content }];
  const out: Obj[] = [];
  const parts: Obj[] = [];
  (content as Block[]).forEach((b, i) => {
    if (b.type === 'tool_result') {
      out.push({ role: 'tool', tool_call_id: b.tool_use_id, content: toolResultContent(b, `${where}.content.${i}`) });
    } else parts.push(...partToChat(b, `${where}.content.${i}`));
  });
  if (parts.length) {
    const only = parts.length === 1 && parts[0]!.type === 'text';
    out.push({ role: 'user', content: only ? parts[0]!.text : parts });
  }
  return out;
}

function assistantToChat(content: unknown, where: string): Obj {
  if (typeof content === 'string') return { role: 'assistant', content };
  const text: string[] = [];
  const reasoning: string[] = [];
  const calls: Obj[] = [];
  (content as Block[]).forEach((b, i) => {
    if (b.type === 'text') text.push(String(b.text));
    else if (b.type === 'tool_use') {
      calls.push({ id: b.id, type: 'function', function: { name: b.name, arguments: JSON.stringify(b.input ?? {}) } });
    } else if (b.type === 'thinking') reasoning.push(String(b.thinking));
    // redacted_thinking is ciphertext only the Anthropic model that wrote it can read.
    else if (b.type !== 'redacted_thinking') {
      throw refuse('untranslatable_content', `${where}.content.${i}: assistant blocks of type '${b.type}' cannot be sent to this model.`);
    }
  });
  const msg: Obj = { role: 'assistant', content: text.length ? text.join('') : null };
  if (calls.length) msg.tool_calls = calls;
  if (reasoning.length) msg.reasoning_content = reasoning.join('');
  return msg;
}

function toolsToChat(tools: unknown): Obj[] {
  return (tools as Obj[]).map((t, i) => {
    if (t.type != null && t.type !== 'custom') {
      // Anthropic's own tools (web search, code execution, bash…) are run or billed by Anthropic.
      throw refuse('unsupported_tool', `'tools.${i}': the Anthropic tool '${String(t.type)}' is only available on an Anthropic upstream; this model takes custom tools only.`);
    }
    const fn: Obj = { name: t.name, parameters: t.input_schema };
    if (typeof t.description === 'string') fn.description = t.description;
    if (typeof t.strict === 'boolean') fn.strict = t.strict;
    return { type: 'function', function: fn };
  });
}

export function messagesRequestToChat(body: Obj): Obj {
  for (const k of Object.keys(body)) {
    if (!MESSAGES_FIELDS.has(k) && body[k] !== undefined) {
      throw refuse('untranslatable_field', `'${k}' cannot be sent to this model: its upstream does not speak Anthropic Messages.`);
    }
  }
  const messages: Obj[] = systemToChat(body.system);
  (body.messages as Obj[]).forEach((m, i) => {
    const where = `'messages.${i}'`;
    if (m.role === 'user') messages.push(...userToChat(m.content, where));
    else if (m.role === 'system') messages.push(...systemToChat(m.content));
    else messages.push(assistantToChat(m.content, where));
  });
  const chat: Obj = { model: body.model, messages };
  if (body.max_tokens != null) chat.max_tokens = body.max_tokens;
  for (const k of ['temperature', 'top_p', 'top_k'] as const) if (body[k] != null) chat[k] = body[k];
  if (Array.isArray(body.stop_sequences) && body.stop_sequences.length) chat.stop = body.stop_sequences;
  const user = (body.metadata as Obj | undefined)?.user_id;
  if (typeof user === 'string') chat.user = user;
  if (Array.isArray(body.tools) && body.tools.length) chat.tools = toolsToChat(body.tools);
  const choice = body.tool_choice as Obj | undefined;
  if (choice) {
    if (choice.type === 'auto') chat.tool_choice = 'auto';
    else if (choice.type === 'any') chat.tool_choice = 'required';
    else if (choice.type === 'none') chat.tool_choice = 'none';
    else chat.tool_choice = { type: 'function', function: { name: choice.name } };
    if (choice.disable_parallel_tool_use === true) chat.parallel_tool_calls = false;
  }
  const thinking = body.thinking as Obj | undefined;
  if (thinking?.type === 'enabled') chat.reasoning_effort = effortFor(thinking.budget_tokens as number);
  if (body.stream === true) {
    chat.stream = true;
    chat.stream_options = { include_usage: true };
  }
  return chat;
}

// ---------------------------------------------------------------- chat → Messages (request)

/** Chat fields a Messages upstream can express (or that carry nothing for it); others are refused. */
const CHAT_FIELDS = new Set([
  'model', 'messages', 'max_tokens', 'max_completion_tokens', 'stream', 'stream_options', 'temperature', 'top_p',
  'top_k', 'stop', 'tools', 'tool_choice', 'parallel_tool_calls', 'user', 'reasoning_effort', 'n',
  'response_format', 'store', 'presence_penalty', 'frequency_penalty',
]);

// 'minimal' and 'none' ask for (next to) no reasoning: no thinking block at all.
const BUDGET: Record<string, number> = { low: 1024, medium: 4096, high: 16384, xhigh: 32768 };

function parseDataUrl(url: string): { mediaType: string; data: string } | undefined {
  const m = /^data:([^;,]+);base64,(.*)$/s.exec(url);
  return m ? { mediaType: m[1]!, data: m[2]! } : undefined;
}

function chatText(content: unknown, where: string): string {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw refuse('invalid_request', `${where}: content must be a string or an array of parts.`);
  return (content as Obj[]).map((p, i) => {
    if (p.type === 'text' || p.type === 'refusal') return String(p.text ?? p.refusal ?? '');
    throw refuse('untranslatable_content', `${where}.content.${i}: parts of type '${String(p.type)}' cannot be sent here.`);
  }).join('');
}

function chatPartToBlock(p: Obj, where: string): Obj {
  if (p.type === 'text') return { type: 'text', text: String(p.text ?? '') };
  if (p.type === 'image_url') {
    const url = String((p.image_url as Obj | undefined)?.url ?? '');
    const data = parseDataUrl(url);
    if (data) return { type: 'image', source: { type: 'base64', media_type: data.mediaType, data: data.data } };
    if (/^https?:\/\//.test(url)) return { type: 'image', source: { type: 'url', url } };
    throw refuse('untranslatable_content', `${where}: an image must be a base64 data: URL or an http(s) URL.`);
  }
  if (p.type === 'file') {
    const file = (p.file as Obj | undefined) ?? {};
    const data = typeof file.file_data === 'string' ? parseDataUrl(file.file_data) : undefined;
    if (data?.mediaType === 'application/pdf') {
      const doc: Obj = { type: 'document', source: { type: 'base64', media_type: data.mediaType, data: data.data } };
      if (typeof file.filename === 'string') doc.title = file.filename;
      return doc;
    }
    throw refuse('untranslatable_content', `${where}: only a PDF given inline (file_data) can be sent to an Anthropic model.`);
  }
  throw refuse('untranslatable_content', `${where}: parts of type '${String(p.type)}' (audio, …) cannot be sent to an Anthropic model.`);
}

function chatToolArguments(raw: unknown, where: string): Obj {
  let input: unknown;
  try {
    input = JSON.parse(typeof raw === 'string' && raw !== '' ? raw : '{}');
  } catch {
    throw refuse('invalid_tool_arguments', `${where}: the tool call's arguments are not valid JSON.`);
  }
  if (!input || typeof input !== 'object' || Array.isArray(input)) {
    throw refuse('invalid_tool_arguments', `${where}: the tool call's arguments must be a JSON object.`);
  }
  return input as Obj;
}

export function messagesRequestFromChat(chat: Obj): Obj {
  for (const k of Object.keys(chat)) {
    if (!CHAT_FIELDS.has(k) && chat[k] != null) {
      throw refuse('untranslatable_field', `'${k}' cannot be sent to an Anthropic model.`);
    }
  }
  if (typeof chat.n === 'number' && chat.n > 1) throw refuse('untranslatable_field', "'n': an Anthropic model writes one answer per request.");
  const format = (chat.response_format as Obj | undefined)?.type;
  if (format != null && format !== 'text') throw refuse('untranslatable_field', `'response_format': '${String(format)}' cannot be asked of an Anthropic model; describe the format in the prompt or use a tool.`);
  for (const k of ['presence_penalty', 'frequency_penalty'] as const) {
    if (chat[k] != null && chat[k] !== 0) throw refuse('untranslatable_field', `'${k}' cannot be sent to an Anthropic model.`);
  }
  if (typeof chat.temperature === 'number' && chat.temperature > 1) {
    throw refuse('untranslatable_field', "'temperature': an Anthropic model takes 0 to 1.");
  }

  const system: Obj[] = [];
  const messages: Array<{ role: string; content: Obj[] }> = [];
  const turn = (role: 'user' | 'assistant') => {
    const last = messages[messages.length - 1];
    // Anthropic alternates turns: consecutive tool results and user messages make one user turn.
    if (last && last.role === role && role === 'user') return last.content;
    const t = { role, content: [] as Obj[] };
    messages.push(t);
    return t.content;
  };
  (chat.messages as Obj[]).forEach((m, i) => {
    const where = `'messages.${i}'`;
    if (m.role === 'system' || m.role === 'developer') {
      const text = chatText(m.content, where);
      // Anthropic takes instructions only before the conversation: a later one joins them there.
      if (text) system.push({ type: 'text', text });
    } else if (m.role === 'user') {
      const content = turn('user');
      // Anthropic refuses an empty text block.
      if (typeof m.content === 'string') {
        if (m.content) content.push({ type: 'text', text: m.content });
      }
      else if (Array.isArray(m.content)) (m.content as Obj[]).forEach((p, j) => content.push(chatPartToBlock(p, `${where}.content.${j}`)));
    } else if (m.role === 'assistant') {
      const content = turn('assistant');
      // reasoning_content is not sent back: Anthropic takes earlier thinking only with its own signature.
      const text = chatText(m.content, where);
      if (text) content.push({ type: 'text', text });
      if (Array.isArray(m.tool_calls)) {
        (m.tool_calls as Obj[]).forEach((c, j) => {
          const fn = (c.function as Obj | undefined) ?? {};
          if (c.type != null && c.type !== 'function') throw refuse('untranslatable_content', `${where}.tool_calls.${j}: only function tool calls can be sent to an Anthropic model.`);
          content.push({ type: 'tool_use', id: c.id, name: fn.name, input: chatToolArguments(fn.arguments, `${where}.tool_calls.${j}`) });
        });
      }
    } else if (m.role === 'tool') {
      const content = turn('user');
      const result: Obj = { type: 'tool_result', tool_use_id: m.tool_call_id };
      result.content = typeof m.content === 'string' ? m.content : chatText(m.content, where);
      content.push(result);
    } else {
      throw refuse('untranslatable_content', `${where}: messages with role '${String(m.role)}' cannot be sent to an Anthropic model.`);
    }
  });

  // An assistant turn that said nothing (no text, no tool call) is one Anthropic would refuse.
  const body: Obj = { model: chat.model, messages: messages.filter((m) => m.content.length > 0) };
  if (system.length) body.system = system.length === 1 ? system[0]!.text : system;
  const max = chat.max_completion_tokens ?? chat.max_tokens;
  if (max != null) body.max_tokens = max;
  for (const k of ['temperature', 'top_p', 'top_k'] as const) if (chat[k] != null) body[k] = chat[k];
  if (chat.stop != null) body.stop_sequences = typeof chat.stop === 'string' ? [chat.stop] : chat.stop;
  if (typeof chat.user === 'string') body.metadata = { user_id: chat.user };
  if (Array.isArray(chat.tools) && chat.tools.length) {
    body.tools = (chat.tools as Obj[]).map((t, i) => {
      if (t.type !== 'function') throw refuse('unsupported_tool', `'tools.${i}': only function tools can be sent to an Anthropic model.`);
      const fn = (t.function as Obj | undefined) ?? {};
      const tool: Obj = { name: fn.name, input_schema: fn.parameters ?? { type: 'object', properties: {} } };
      if (typeof fn.description === 'string') tool.description = fn.description;
      if (typeof fn.strict === 'boolean') tool.strict = fn.strict;
      return tool;
    });
  }
  const choice = chat.tool_choice;
  let toolChoice: Obj | undefined;
  if (choice === 'auto') toolChoice = { type: 'auto' };
  else if (choice === 'required') toolChoice = { type: 'any' };
  else if (choice === 'none') toolChoice = { type: 'none' };
  else if (choice && typeof choice === 'object') {
    const name = ((choice as Obj).function as Obj | undefined)?.name;
    if (typeof name !== 'string') throw refuse('untranslatable_field', "'tool_choice': only a function tool can be chosen for an Anthropic model.");
    toolChoice = { type: 'tool', name };
  }
  if (chat.parallel_tool_calls === false && body.tools) {
    toolChoice = { ...(toolChoice ?? { type: 'auto' }), disable_parallel_tool_use: true };
  }
  if (toolChoice) body.tool_choice = toolChoice;
  const effort = chat.reasoning_effort;
  if (typeof effort === 'string' && BUDGET[effort] !== undefined) body.thinking = { type: 'enabled', budget_tokens: BUDGET[effort] };
  if (chat.stream === true) body.stream = true;
  return body;
}

// ---------------------------------------------------------------- answers

const FINISH_OF_STOP: Record<string, string> = {
  end_turn: 'stop',
  stop_sequence: 'stop',
  max_tokens: 'length',
  model_context_window_exceeded: 'length',
  tool_use: 'tool_calls',
  refusal: 'content_filter',
  pause_turn: 'stop',
};

const STOP_OF_FINISH: Record<string, string> = {
  stop: 'end_turn',
  length: 'max_tokens',
  tool_calls: 'tool_use',
  function_call: 'tool_use',
  content_filter: 'refusal',
};

export function finishReasonOf(stop: unknown): string | null {
  return typeof stop === 'string' ? (FINISH_OF_STOP[stop] ?? 'stop') : null;
}

export function stopReasonOf(finish: unknown): string | null {
  return typeof finish === 'string' ? (STOP_OF_FINISH[finish] ?? 'end_turn') : null;
}

export function messagesResponseToChat(body: Obj): Obj {
  const text: string[] = [];
  const reasoning: string[] = [];
  const calls: Obj[] = [];
  for (const b of (body.content as Block[] | undefined) ?? []) {
    if (b.type === 'text') text.push(String(b.text));
    else if (b.type === 'thinking') reasoning.push(String(b.thinking));
    else if (b.type === 'tool_use') {
      calls.push({ id: b.id, type: 'function', function: { name: b.name, arguments: JSON.stringify(b.input ?? {}) } });
    }
  }
  const message: Obj = { role: 'assistant', content: text.length ? text.join('') : null };
  if (calls.length) message.tool_calls = calls;
  if (reasoning.length) message.reasoning_content = reasoning.join('');
  const chat: Obj = {
    id: body.id,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: body.model,
    choices: [{ index: 0, message, finish_reason: finishReasonOf(body.stop_reason) ?? 'stop', logprobs: null }],
  };
  const usage = messagesUsageOf(body.usage);
  if (usage) chat.usage = chatUsageBody(usage);
  return chat;
}

export function messagesResponseFromChat(chat: Obj): Obj {
  const choice = ((chat.choices as Obj[] | undefined) ?? [])[0] ?? {};
  const msg = (choice.message as Obj | undefined) ?? {};
  const content: Obj[] = [];
  const reasoning = msg.reasoning_content ?? msg.reasoning;
  if (typeof reasoning === 'string' && reasoning) content.push({ type: 'thinking', thinking: reasoning, signature: '' });
  // Some chat servers answer with content parts rather than a string.
  const text = Array.isArray(msg.content)
    ? (msg.content as Obj[]).map((p) => (typeof p.text === 'string' ? p.text : '')).join('')
    : msg.content;
  if (typeof text === 'string' && text) content.push({ type: 'text', text, citations: null });
  if (typeof msg.refusal === 'string' && msg.refusal) content.push({ type: 'text', text: msg.refusal, citations: null });
  for (const c of (msg.tool_calls as Obj[] | undefined) ?? []) {
    const fn = (c.function as Obj | undefined) ?? {};
    let input: unknown;
    try {
      input = JSON.parse(typeof fn.arguments === 'string' && fn.arguments !== '' ? fn.arguments : '{}');
    } catch {
      input = undefined;
    }
    if (!input || typeof input !== 'object' || Array.isArray(input)) {
      throw new EngineError('upstream_invalid_tool_call', 'The model wrote a tool call whose arguments are not a JSON object.');
    }
    content.push({ type: 'tool_use', id: c.id, name: fn.name, input });
  }
  const usage = chatUsageOf(chat.usage);
  const id = String(chat.id ?? '');
  return {
    id: id.startsWith('msg_') ? id : `msg_${id}`,
    type: 'message',
    role: 'assistant',
    model: chat.model,
    content,
    stop_reason: typeof msg.refusal === 'string' && msg.refusal ? 'refusal' : (stopReasonOf(choice.finish_reason) ?? 'end_turn'),
    stop_sequence: null,
    usage: usage ? messagesUsageBody(usage) : { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
  };
}
