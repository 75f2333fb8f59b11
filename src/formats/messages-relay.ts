import { EngineError } from '../engine/errors.ts';
import type { Metered, StreamReader, UpstreamEvent, WireError } from '../engine/format.ts';
import { messagesErrorBody } from './messages-errors.ts';
import { hidesWork, sse } from './messages-stream.ts';
import { billedUsage, messagesUsageOf } from './messages-usage.ts';

type Obj = Record<string, unknown>;

/** Everything a whole Messages answer generated, for counting when it came without usage. */
export function messagesGenerated(body: Obj): string {
  let s = '';
  for (const b of (body.content as Obj[] | undefined) ?? []) {
    if (typeof b.text === 'string') s += b.text;
    if (typeof b.thinking === 'string') s += b.thinking;
    if (b.type === 'tool_use') s += String(b.name ?? '') + JSON.stringify(b.input ?? {});
  }
  return s;
}

/**
 * A Messages client served by an Anthropic upstream: the events pass through as they come, but
 * `message_delta` and `message_stop` are held back and written again by `close` with the charge,
 * so the client's last usage is the one it pays for.
 */
export function messagesRelay(): StreamReader {
  const metered: Metered = { generated: '' };
  const usage: Obj = {};
  let delta: Obj = { stop_reason: null, stop_sequence: null };
  return {
    metered,
    push(event: UpstreamEvent) {
      let data: Obj | undefined;
      try {
        data = JSON.parse(event.data) as Obj;
      } catch {
        return '';
      }
      if (!data || typeof data !== 'object') return '';
      const type = event.name ?? data.type;
      if (typeof type !== 'string' || !type) return '';
      const merge = (u: unknown) => {
        if (u && typeof u === 'object') for (const [k, v] of Object.entries(u as Obj)) if (v != null) usage[k] = v;
        metered.usage = messagesUsageOf(usage) ?? metered.usage;
      };
      // `message_start` reports the prompt and an output of 1 token: final only once `message_delta` says it.
      if (type === 'message_start') {
        merge((data.message as Obj | undefined)?.usage);
        metered.partial = true;
      }
      if (type === 'message_delta') {
        merge(data.usage);
        metered.partial = false;
        if (data.delta && typeof data.delta === 'object') delta = { ...delta, ...(data.delta as Obj) };
        return '';
      }
      if (type === 'message_stop') return '';
      if (type === 'error') {
        // The engine ends the stream through `fail`, in our shape and with our code.
        const error = (data.error as Obj | undefined) ?? {};
        throw new EngineError('upstream_error', `Upstream error: ${typeof error.message === 'string' ? error.message : 'the stream failed'}`);
      }
      if (type === 'content_block_start') {
        const block = (data.content_block as Obj | undefined) ?? {};
        if (hidesWork(block)) metered.hidden = true;
        if (block.type === 'tool_use') metered.generated += String(block.name ?? '');
        if (typeof block.text === 'string') metered.generated += block.text;
      }
      if (type === 'content_block_delta') {
        const d = (data.delta as Obj | undefined) ?? {};
        for (const k of ['text', 'thinking', 'partial_json'] as const) if (typeof d[k] === 'string') metered.generated += d[k];
      }
      return sse(type, data);
    },
    close(bill) {
      const event: Obj = { type: 'message_delta', delta: { ...delta, stop_reason: delta.stop_reason ?? 'end_turn' }, usage: billedUsage(bill) };
      if (bill.change) event.x_cashu = bill.change;
      return sse('message_delta', event) + sse('message_stop', { type: 'message_stop' });
    },
    fail(err: WireError) {
      return sse('error', messagesErrorBody(err));
    },
  };
}
