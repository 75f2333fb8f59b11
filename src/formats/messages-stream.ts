import { EngineError } from '../engine/errors.ts';
import type { Bill, UpstreamEvent, WireError } from '../engine/format.ts';
import { messagesErrorBody } from './messages-errors.ts';
import { finishReasonOf, stopReasonOf } from './messages-translate.ts';
import { billedUsage, chatUsageBody, messagesUsageOf } from './messages-usage.ts';

type Obj = Record<string, unknown>;

function parse(data: string): Obj | undefined {
  try {
    const v = JSON.parse(data) as unknown;
    return v && typeof v === 'object' ? (v as Obj) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A block the upstream bills more of than it streams: Claude 4 streams a summary of its thinking,
 * and redacted thinking only encrypted.
 */
export function hidesWork(block: Obj): boolean {
  return block.type === 'thinking' || block.type === 'redacted_thinking';
}

export function sse(name: string, data: Obj): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}

/**
 * Anthropic's stream events in, chat chunks out. Usage comes in two halves, the prompt's in
 * `message_start` and the output's (cumulative) in each `message_delta`: each `message_delta`
 * yields a usage chunk with both, so a stream cut after it is still billed from what it reported.
 */
export function messagesDecoder(): { push(event: UpstreamEvent): Obj[]; readonly hidden: boolean } {
  let id = '';
  let model = '';
  const created = Math.floor(Date.now() / 1000);
  const usage: Obj = {};
  /** Anthropic's block index → chat's tool call index. */
  const tools = new Map<number, number>();
  const chunk = (delta: Obj, finish: string | null = null): Obj => ({
    id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta, finish_reason: finish }],
  });
  const merge = (u: unknown) => {
    if (!u || typeof u !== 'object') return;
    for (const [k, v] of Object.entries(u as Obj)) if (v != null) usage[k] = v;
  };
  let hidden = false;
  return {
    get hidden() {
      return hidden;
    },
    push(event) {
      const data = parse(event.data);
      if (!data) return [];
      const type = event.name ?? data.type;
      if (type === 'message_start') {
        const message = (data.message as Obj | undefined) ?? {};
        id = String(message.id ?? '');
        model = String(message.model ?? '');
        merge(message.usage);
        return [chunk({ role: 'assistant', content: '' })];
      }
      if (type === 'content_block_start') {
        const block = (data.content_block as Obj | undefined) ?? {};
        if (hidesWork(block)) hidden = true;
        const index = data.index as number;
        if (block.type === 'tool_use') {
          const at = tools.size;
          tools.set(index, at);
          return [chunk({ tool_calls: [{ index: at, id: block.id, type: 'function', function: { name: block.name, arguments: '' } }] })];
        }
        if (block.type === 'text' && typeof block.text === 'string' && block.text) return [chunk({ content: block.text })];
        if (block.type === 'thinking' && typeof block.thinking === 'string' && block.thinking) return [chunk({ reasoning_content: block.thinking })];
        return [];
      }
      if (type === 'content_block_delta') {
        const delta = (data.delta as Obj | undefined) ?? {};
        if (delta.type === 'text_delta') return [chunk({ content: delta.text })];
        if (delta.type === 'thinking_delta') return [chunk({ reasoning_content: delta.thinking })];
        if (delta.type === 'input_json_delta') {
          const at = tools.get(data.index as number);
          if (at === undefined) return [];
          return [chunk({ tool_calls: [{ index: at, function: { arguments: delta.partial_json } }] })];
        }
        // signature_delta and citations_delta have no chat counterpart.
        return [];
      }
      if (type === 'message_delta') {
        merge(data.usage);
        const out: Obj[] = [];
        const finish = finishReasonOf((data.delta as Obj | undefined)?.stop_reason);
        if (finish) out.push(chunk({}, finish));
        const normalized = messagesUsageOf(usage);
        if (normalized) out.push({ id, object: 'chat.completion.chunk', created, model, choices: [], usage: chatUsageBody(normalized) });
        return out;
      }
      if (type === 'error') {
        const error = (data.error as Obj | undefined) ?? {};
        const message = typeof error.message === 'string' ? error.message : 'the upstream stream failed';
        throw new EngineError('upstream_error', `Upstream error: ${message}`);
      }
      // ping, content_block_stop, message_stop.
      return [];
    },
  };
}

type Open = { index: number; kind: 'text' | 'thinking' | 'tool_use' };

/**
 * Chat chunks in, Anthropic's event stream out. Blocks open as their content starts and close
 * when another begins; the final `message_delta` is written by `close` with the bill, since
 * the usage and charge are only known once the upstream has finished.
 */
export function messagesEncoder(): { push(chunk: Obj): string; close(bill: Bill): string; fail(err: WireError): string } {
  let started = false;
  let next = 0;
  let open: Open | undefined;
  let stopReason: string | null = null;
  /** chat's tool call index → Anthropic's block index. */
  const tools = new Map<number, number>();

  const start = (id: string, model: string): string => {
    started = true;
    const message = {
      id: id.startsWith('msg_') ? id : `msg_${id}`,
      type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null,
      // The prompt's count comes with the upstream's last word: it is written in the final message_delta.
      usage: { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    };
    return sse('message_start', { type: 'message_start', message });
  };
  const stop = (): string => {
    if (!open) return '';
    const s = sse('content_block_stop', { type: 'content_block_stop', index: open.index });
    open = undefined;
    return s;
  };
  const begin = (kind: Open['kind'], block: Obj): string => {
    const s = stop();
    open = { index: next++, kind };
    return s + sse('content_block_start', { type: 'content_block_start', index: open.index, content_block: block });
  };
  const delta = (index: number, d: Obj) => sse('content_block_delta', { type: 'content_block_delta', index, delta: d });

  return {
    push(chunk) {
      let out = '';
      if (!started) out += start(String(chunk.id ?? ''), String(chunk.model ?? ''));
      const choice = ((chunk.choices as Obj[] | undefined) ?? [])[0];
      if (!choice) return out;
      const d = (choice.delta as Obj | undefined) ?? {};
      // DeepSeek and vLLM name it reasoning_content, OpenRouter reasoning.
      const reasoning = d.reasoning_content ?? d.reasoning;
      if (typeof reasoning === 'string' && reasoning) {
        if (open?.kind !== 'thinking') out += begin('thinking', { type: 'thinking', thinking: '', signature: '' });
        out += delta(open!.index, { type: 'thinking_delta', thinking: reasoning });
      }
      for (const text of [d.content, d.refusal]) {
        if (typeof text !== 'string' || !text) continue;
        if (open?.kind !== 'text') out += begin('text', { type: 'text', text: '', citations: null });
        out += delta(open!.index, { type: 'text_delta', text });
      }
      for (const call of (d.tool_calls as Obj[] | undefined) ?? []) {
        const at = typeof call.index === 'number' ? call.index : tools.size;
        const fn = (call.function as Obj | undefined) ?? {};
        if (!tools.has(at)) {
          out += begin('tool_use', { type: 'tool_use', id: call.id, name: fn.name, input: {} });
          tools.set(at, open!.index);
        }
        if (typeof fn.arguments === 'string' && fn.arguments) {
          out += delta(tools.get(at)!, { type: 'input_json_delta', partial_json: fn.arguments });
        }
      }
      if (choice.finish_reason) {
        stopReason = stopReasonOf(choice.finish_reason);
        out += stop();
      }
      return out;
    },
    close(bill) {
      let out = started ? '' : start(bill.requestId, '');
      out += stop();
      const event: Obj = {
        type: 'message_delta',
        delta: { stop_reason: stopReason ?? 'end_turn', stop_sequence: null },
        usage: billedUsage(bill),
      };
      if (bill.change) event.x_cashu = bill.change;
      return out + sse('message_delta', event) + sse('message_stop', { type: 'message_stop' });
    },
    fail(err) {
      return sse('error', messagesErrorBody(err));
    },
  };
}
