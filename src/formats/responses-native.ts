import type { Bill, Metered, StreamReader, UpstreamEvent, WireError } from '../engine/format.ts';
import { billUsage, usageOf } from './responses-response.ts';
import { ResponsesDecoder } from './responses-stream.ts';
import { isObj, type Obj } from './responses-shared.ts';

/**
 * A Responses client served by a Responses upstream: the upstream's events pass through untouched
 * except the terminal one (`response.completed` / `response.incomplete`), which is withheld and
 * written by `close` with the usage billed, our cost and the change, under its own sequence number.
 */
export class ResponsesPassthrough implements StreamReader {
  readonly #decoder = new ResponsesDecoder();
  readonly metered: Metered = { generated: '' };
  #held: Obj | undefined;
  #snapshot: Obj | undefined;
  #seq = 0;
  #ended = false;

  push(event: UpstreamEvent): string {
    if (this.#ended || event.data === '[DONE]') return '';
    let data: unknown;
    try {
      data = JSON.parse(event.data);
    } catch {
      return '';
    }
    if (!isObj(data)) return '';
    if (isObj(data.response) && (data.type === 'response.created' || data.type === 'response.in_progress')) this.#snapshot = data.response;
    // A failure throws here, for the engine to end the stream with `fail`.
    for (const chunk of this.#decoder.push(event)) this.#meter(chunk);
    this.metered.hidden = this.#decoder.hidden;
    // Numbered after the upstream's last event that reached the client, so ours follow without a gap.
    if (typeof data.sequence_number === 'number') this.#seq = Math.max(this.#seq, data.sequence_number + 1);
    if (data.type === 'response.completed' || data.type === 'response.incomplete') {
      this.#held = data;
      const usage = usageOf(isObj(data.response) ? data.response.usage : undefined);
      if (usage) this.metered.usage = usage;
      return '';
    }
    return `event: ${String(data.type ?? event.name)}\ndata: ${event.data}\n\n`;
  }

  close(bill: Bill): string {
    if (this.#ended) return '';
    this.#ended = true;
    // Without a terminal event (the upstream stopped short), the reply is incomplete; the SDK
    // fills an absent `output` from the items it saw.
    const held = this.#held ?? { type: 'response.incomplete', sequence_number: this.#seq++, response: { ...this.#snapshot, status: 'incomplete', output: undefined } };
    const response: Obj = { ...(held.response as Obj), usage: billUsage(bill) };
    if (bill.change) response.x_cashu = bill.change;
    const type = String(held.type);
    return `event: ${type}\ndata: ${JSON.stringify({ ...held, type, response })}\n\n`;
  }

  fail(err: WireError): string {
    if (this.#ended) return '';
    this.#ended = true;
    const error = { type: err.type, code: err.code, message: err.message, param: null, ...err.extra };
    const out = `event: error\ndata: ${JSON.stringify({ type: 'error', sequence_number: this.#seq++, code: err.code, message: err.message, param: null, error })}\n\n`;
    const response = { ...this.#snapshot, status: 'failed', error: { code: err.code, message: err.message }, output: undefined, usage: null };
    return out + `event: response.failed\ndata: ${JSON.stringify({ type: 'response.failed', sequence_number: this.#seq++, response })}\n\n`;
  }

  /** Everything generated, so that a reply without usage is counted from all of it. */
  #meter(chunk: Obj): void {
    for (const choice of Array.isArray(chunk.choices) ? chunk.choices : []) {
      const d = isObj(choice) && isObj(choice.delta) ? choice.delta : {};
      for (const k of ['content', 'refusal', 'reasoning_content'] as const) if (typeof d[k] === 'string') this.metered.generated += d[k];
      for (const c of Array.isArray(d.tool_calls) ? d.tool_calls : []) {
        const fn = isObj(c) && isObj(c.function) ? c.function : {};
        for (const k of ['name', 'arguments'] as const) if (typeof fn[k] === 'string') this.metered.generated += fn[k];
      }
    }
  }
}

/** What a whole native Response reports and generated, for a reply billed without translation. */
export function meterResponse(body: Obj): Metered {
  let generated = '';
  for (const item of Array.isArray(body.output) ? body.output : []) {
    if (!isObj(item)) continue;
    if (item.type === 'function_call') generated += String(item.name ?? '') + String(item.arguments ?? '');
    for (const part of [...(Array.isArray(item.content) ? item.content : []), ...(Array.isArray(item.summary) ? item.summary : [])]) {
      if (isObj(part)) generated += String(part.text ?? part.refusal ?? '');
    }
  }
  return { usage: usageOf(body.usage), generated };
}
