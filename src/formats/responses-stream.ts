import type { Bill, UpstreamEvent, WireError } from '../engine/format.ts';
import {
  billUsage,
  finishReasonOf,
  functionCallItem,
  idsFor,
  reasoningItem,
  responseEcho,
  statusOf,
  upstreamFailure,
  usageToChat,
  type Ids,
} from './responses-response.ts';
import { isObj, suffixOf, type Obj } from './responses-shared.ts';

/**
 * Streams between the Responses API's semantic events and chat completion chunks. The events and
 * their order are the API's: `response.created`, `response.in_progress`, then for each output item
 * `output_item.added`, its parts and deltas, `output_item.done`, and one terminal event.
 */

// ---------------------------------------------------------------------------------------------
// Responses events → chat chunks

export class ResponsesDecoder {
  #id = 'resp_gateway';
  #model: unknown = '';
  #created = 0;
  #started = false;
  /** Function calls by output index, numbered as chat numbers tool calls. */
  readonly #calls = new Map<number, { index: number; arguments: string }>();
  /** Text already passed on, by item and part, so a `.done` only adds what no delta carried. */
  readonly #seen = new Map<string, string>();
  #reasoningPart: string | undefined;
  #hidden = false;

  /** Whether the model reasons: work billed in the final usage and not shown (`Metered.hidden`). */
  get hidden(): boolean {
    return this.#hidden;
  }

  push(event: UpstreamEvent): Obj[] {
    if (event.data === '[DONE]') return [];
    let data: unknown;
    try {
      data = JSON.parse(event.data);
    } catch {
      return [];
    }
    if (!isObj(data)) return [];
    const type = typeof data.type === 'string' ? data.type : event.name;
    switch (type) {
      case 'response.created':
      case 'response.queued':
      case 'response.in_progress':
        this.#remember(data.response);
        if (this.#started) return [];
        this.#started = true;
        return [this.#chunk({ role: 'assistant', content: '' })];
      case 'response.output_text.delta':
        return this.#text('content', data, String(data.delta ?? ''), false);
      case 'response.output_text.done':
        return this.#text('content', data, String(data.text ?? ''), true);
      case 'response.refusal.delta':
        return this.#text('refusal', data, String(data.delta ?? ''), false);
      case 'response.refusal.done':
        return this.#text('refusal', data, String(data.refusal ?? ''), true);
      case 'response.reasoning_summary_text.delta':
      case 'response.reasoning_text.delta':
        return this.#reasoning(data, String(data.delta ?? ''), false);
      case 'response.reasoning_summary_text.done':
      case 'response.reasoning_text.done':
        return this.#reasoning(data, String(data.text ?? ''), true);
      case 'response.output_item.added':
      case 'response.output_item.done':
        // Reasoning is billed whole but streamed as a summary at most.
        if (isObj(data.item) && data.item.type === 'reasoning') this.#hidden = true;
        if (isObj(data.item) && data.item.type === 'function_call') return this.#call(Number(data.output_index), data.item);
        return [];
      case 'response.function_call_arguments.delta':
        return this.#arguments(Number(data.output_index), String(data.delta ?? ''), false);
      case 'response.function_call_arguments.done':
        return this.#arguments(Number(data.output_index), String(data.arguments ?? ''), true);
      case 'response.completed':
      case 'response.incomplete': {
        const response = isObj(data.response) ? data.response : {};
        this.#remember(response);
        const out = [this.#chunk({}, finishReasonOf(response, this.#calls.size > 0))];
        const usage = usageToChat(response.usage);
        if (usage) out.push({ ...this.#base(), choices: [], usage });
        return out;
      }
      case 'response.failed':
        throw upstreamFailure(isObj(data.response) ? data.response.error : undefined);
      case 'error':
        throw upstreamFailure(isObj(data.error) ? data.error : data);
      default:
        return [];
    }
  }

  #remember(response: unknown): void {
    if (!isObj(response)) return;
    if (typeof response.id === 'string') this.#id = response.id;
    if (response.model !== undefined) this.#model = response.model;
    if (typeof response.created_at === 'number') this.#created = Math.floor(response.created_at);
  }

  #base(): Obj {
    return { id: this.#id, object: 'chat.completion.chunk', created: this.#created, model: this.#model };
  }

  #chunk(delta: Obj, finish: string | null = null): Obj {
    return { ...this.#base(), choices: [{ index: 0, delta, finish_reason: finish }] };
  }

  /** A delta, or the part of a `.done` text that no delta carried (some servers send only `.done`). */
  #fresh(key: string, text: string, done: boolean): string {
    const seen = this.#seen.get(key) ?? '';
    const add = done ? (text.startsWith(seen) ? text.slice(seen.length) : '') : text;
    if (add) this.#seen.set(key, seen + add);
    return add;
  }

  #text(field: 'content' | 'refusal', data: Obj, text: string, done: boolean): Obj[] {
    const add = this.#fresh(`${field}:${String(data.item_id)}:${String(data.content_index ?? 0)}`, text, done);
    return add ? [this.#chunk({ [field]: add })] : [];
  }

  #reasoning(data: Obj, text: string, done: boolean): Obj[] {
    const part = `${String(data.item_id)}:${String(data.summary_index ?? data.content_index ?? 0)}`;
    let add = this.#fresh(`reasoning:${part}`, text, done);
    if (!add) return [];
    // Summary parts are paragraphs of their own; chat carries reasoning as one text.
    if (this.#reasoningPart !== undefined && this.#reasoningPart !== part) add = `\n\n${add}`;
    this.#reasoningPart = part;
    return [this.#chunk({ reasoning_content: add })];
  }

  #call(outputIndex: number, item: Obj): Obj[] {
    if (this.#calls.has(outputIndex)) return this.#arguments(outputIndex, String(item.arguments ?? ''), true);
    const call = { index: this.#calls.size, arguments: '' };
    this.#calls.set(outputIndex, call);
    const args = String(item.arguments ?? '');
    call.arguments = args;
    const fn = { name: item.name, arguments: args };
    return [this.#chunk({ tool_calls: [{ index: call.index, id: item.call_id, type: 'function', function: fn }] })];
  }

  #arguments(outputIndex: number, text: string, done: boolean): Obj[] {
    const call = this.#calls.get(outputIndex);
    if (!call) return [];
    const add = done ? (text.startsWith(call.arguments) ? text.slice(call.arguments.length) : '') : text;
    if (!add) return [];
    call.arguments += add;
    return [this.#chunk({ tool_calls: [{ index: call.index, function: { arguments: add } }] })];
  }
}

// ---------------------------------------------------------------------------------------------
// chat chunks → Responses events

interface Part {
  type: 'output_text' | 'refusal';
  value: string;
  open: boolean;
}
interface OpenMessage {
  index: number;
  id: string;
  parts: Part[];
}
interface OpenReasoning {
  index: number;
  id: string;
  text: string;
}
interface OpenCall {
  index: number;
  id: string;
  callId: string;
  name: string;
  arguments: string;
}

export class ResponsesEncoder {
  readonly #request: Obj | undefined;
  #seq = 0;
  #ids: Ids | undefined;
  #model: unknown = '';
  #created = Math.floor(Date.now() / 1000);
  #finish: unknown;
  #next = 0;
  readonly #done = new Map<number, Obj>();
  #message: OpenMessage | undefined;
  #reasoning: OpenReasoning | undefined;
  readonly #calls = new Map<number, OpenCall>();
  #ended = false;
  readonly #used = new Set<string>();

  /** `request`: the client's Responses body, so the answer echoes its settings as the API does. */
  constructor(request?: Obj) {
    this.#request = request;
  }

  push(chunk: Obj): string {
    if (this.#ended) return '';
    let out = this.#start(chunk);
    const choice = Array.isArray(chunk.choices) && isObj(chunk.choices[0]) ? chunk.choices[0] : undefined;
    if (!choice) return out;
    const delta = isObj(choice.delta) ? choice.delta : {};
    const reasoning = delta.reasoning_content ?? delta.reasoning;
    if (typeof reasoning === 'string' && reasoning) out += this.#reason(reasoning);
    if (typeof delta.content === 'string' && delta.content) out += this.#say('output_text', delta.content);
    if (typeof delta.refusal === 'string' && delta.refusal) out += this.#say('refusal', delta.refusal);
    if (Array.isArray(delta.tool_calls)) for (const c of delta.tool_calls) if (isObj(c)) out += this.#callDelta(c);
    if (choice.finish_reason != null) this.#finish = choice.finish_reason;
    return out;
  }

  close(bill: Bill): string {
    if (this.#ended) return '';
    let out = this.#start({}, bill.requestId);
    const { status, incomplete_details } = statusOf(this.#finish);
    const itemStatus = status === 'completed' ? 'completed' : 'incomplete';
    if (this.#next === 0) out += this.#say('output_text', '');
    out += this.#closeAll(itemStatus);
    const response: Obj = { ...this.#response(status), incomplete_details, output: this.#output(), usage: billUsage(bill) };
    if (bill.change) response.x_cashu = bill.change;
    this.#ended = true;
    return out + this.#event(status === 'completed' ? 'response.completed' : 'response.incomplete', { response });
  }

  /**
   * The API reports a failure after the stream started as an `error` event; `response.failed`
   * follows so that clients waiting for a terminal event (rather than reading `error`) end too.
   * The error is written flat, as the published event schema has it, and nested, as OpenAI sends it.
   */
  fail(err: WireError): string {
    if (this.#ended) return '';
    let out = this.#start({});
    const error = { type: err.type, code: err.code, message: err.message, param: null, ...err.extra };
    out += this.#event('error', { code: err.code, message: err.message, param: null, error });
    const response = { ...this.#response('failed'), error: { code: err.code, message: err.message }, output: this.#output() };
    this.#ended = true;
    return out + this.#event('response.failed', { response });
  }

  #event(type: string, fields: Obj): string {
    return `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: this.#seq++, ...fields })}\n\n`;
  }

  #response(status: string): Obj {
    return {
      id: this.#ids!.response,
      object: 'response',
      created_at: this.#created,
      status,
      error: null,
      incomplete_details: null,
      model: this.#model,
      output: [] as Obj[],
      ...responseEcho(this.#request),
      usage: null,
    };
  }

  #start(chunk: Obj, fallback?: string): string {
    if (chunk.model !== undefined && chunk.model !== '') this.#model = chunk.model;
    if (typeof chunk.created === 'number') this.#created = chunk.created;
    if (this.#ids) return '';
    this.#ids = idsFor(chunk.id, fallback ?? globalThis.crypto.randomUUID().replaceAll('-', ''));
    const response = this.#response('in_progress');
    return this.#event('response.created', { response }) + this.#event('response.in_progress', { response });
  }

  /** The first item of a kind takes the plain id; a later one (text after a tool call) its index too. */
  #itemId(base: string, index: number): string {
    if (this.#used.has(base)) return `${base}_${index}`;
    this.#used.add(base);
    return base;
  }

  #output(): Obj[] {
    return [...this.#done.entries()].sort(([a], [b]) => a - b).map(([, item]) => item);
  }

  #reason(text: string): string {
    let out = '';
    if (!this.#reasoning) {
      out += this.#closeMessage('completed');
      const index = this.#next++;
      const id = this.#itemId(this.#ids!.reasoning, index);
      this.#reasoning = { index, id, text: '' };
      out += this.#event('response.output_item.added', { output_index: index, item: { id, type: 'reasoning', summary: [] } });
      out += this.#event('response.reasoning_summary_part.added', { item_id: id, output_index: index, summary_index: 0, part: { type: 'summary_text', text: '' } });
    }
    const r = this.#reasoning;
    r.text += text;
    return out + this.#event('response.reasoning_summary_text.delta', { item_id: r.id, output_index: r.index, summary_index: 0, delta: text });
  }

  #closeReasoning(): string {
    const r = this.#reasoning;
    if (!r) return '';
    this.#reasoning = undefined;
    const where = { item_id: r.id, output_index: r.index, summary_index: 0 };
    const item = reasoningItem(r.id, r.text);
    this.#done.set(r.index, item);
    return (
      this.#event('response.reasoning_summary_text.done', { ...where, text: r.text }) +
      this.#event('response.reasoning_summary_part.done', { ...where, part: { type: 'summary_text', text: r.text } }) +
      this.#event('response.output_item.done', { output_index: r.index, item })
    );
  }

  #say(type: Part['type'], text: string): string {
    let out = this.#closeReasoning();
    if (!this.#message) {
      const index = this.#next++;
      const id = this.#itemId(this.#ids!.message, index);
      this.#message = { index, id, parts: [] };
      out += this.#event('response.output_item.added', { output_index: index, item: { id, type: 'message', status: 'in_progress', role: 'assistant', content: [] } });
    }
    const m = this.#message;
    let part = m.parts.at(-1);
    if (!part || part.type !== type || !part.open) {
      out += this.#closePart(m);
      part = { type, value: '', open: true };
      m.parts.push(part);
      const empty = type === 'output_text' ? { type, text: '', annotations: [], logprobs: [] } : { type, refusal: '' };
      out += this.#event('response.content_part.added', { item_id: m.id, output_index: m.index, content_index: m.parts.length - 1, part: empty });
    }
    if (!text) return out;
    part.value += text;
    const where = { item_id: m.id, output_index: m.index, content_index: m.parts.length - 1 };
    return out + (type === 'output_text'
      ? this.#event('response.output_text.delta', { ...where, delta: text, logprobs: [] })
      : this.#event('response.refusal.delta', { ...where, delta: text }));
  }

  #closePart(m: OpenMessage): string {
    const part = m.parts.at(-1);
    if (!part?.open) return '';
    part.open = false;
    const where = { item_id: m.id, output_index: m.index, content_index: m.parts.length - 1 };
    if (part.type === 'output_text') {
      return (
        this.#event('response.output_text.done', { ...where, text: part.value, logprobs: [] }) +
        this.#event('response.content_part.done', { ...where, part: { type: 'output_text', text: part.value, annotations: [], logprobs: [] } })
      );
    }
    return (
      this.#event('response.refusal.done', { ...where, refusal: part.value }) +
      this.#event('response.content_part.done', { ...where, part: { type: 'refusal', refusal: part.value } })
    );
  }

  #closeMessage(status: string): string {
    const m = this.#message;
    if (!m) return '';
    const out = this.#closePart(m);
    this.#message = undefined;
    const content = m.parts.map((p) => (p.type === 'output_text' ? { type: p.type, text: p.value, annotations: [], logprobs: [] } : { type: p.type, refusal: p.value }));
    const item = { id: m.id, type: 'message', status, role: 'assistant', content };
    this.#done.set(m.index, item);
    return out + this.#event('response.output_item.done', { output_index: m.index, item });
  }

  #callDelta(c: Obj): string {
    const chatIndex = typeof c.index === 'number' ? c.index : 0;
    const fn = isObj(c.function) ? c.function : {};
    let out = '';
    let call = this.#calls.get(chatIndex);
    if (!call) {
      out += this.#closeReasoning() + this.#closeMessage('completed');
      const index = this.#next++;
      const callId = typeof c.id === 'string' && c.id ? c.id : `call_${this.#ids!.message.slice(4)}_${chatIndex}`;
      call = { index, id: `fc_${suffixOf(callId, String(index))}`, callId, name: typeof fn.name === 'string' ? fn.name : '', arguments: '' };
      this.#calls.set(chatIndex, call);
      out += this.#event('response.output_item.added', { output_index: index, item: functionCallItem(call, 'in_progress') });
    }
    const args = typeof fn.arguments === 'string' ? fn.arguments : '';
    if (!args) return out;
    call.arguments += args;
    return out + this.#event('response.function_call_arguments.delta', { item_id: call.id, output_index: call.index, delta: args });
  }

  #closeAll(status: string): string {
    let out = this.#closeReasoning() + this.#closeMessage(status);
    for (const call of [...this.#calls.values()].sort((a, b) => a.index - b.index)) {
      const item = functionCallItem(call, status);
      this.#done.set(call.index, item);
      out += this.#event('response.function_call_arguments.done', { item_id: call.id, output_index: call.index, arguments: call.arguments });
      out += this.#event('response.output_item.done', { output_index: call.index, item });
    }
    this.#calls.clear();
    return out;
  }
}
