import { countTokens } from 'gpt-tokenizer';

/** Chat framing overhead per message and per reply, as OpenAI documents for its chat models. */
const PER_MESSAGE = 3;
const PER_REPLY = 3;

export function countText(text: string): number {
  if (text.length === 0) return 0;
  return countTokens(text, { disallowedSpecial: new Set() });
}

function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    let s = '';
    for (const part of content) {
      if (part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string') {
        s += (part as { text: string }).text;
      }
    }
    return s;
  }
  return content == null ? '' : JSON.stringify(content);
}

export function countMessages(messages: unknown[]): number {
  let n = PER_REPLY;
  for (const m of messages) {
    n += PER_MESSAGE;
    if (m && typeof m === 'object') {
      const msg = m as Record<string, unknown>;
      n += countText(contentText(msg.content));
      if (typeof msg.name === 'string') n += countText(msg.name) + 1;
      if (msg.tool_calls !== undefined) n += countText(JSON.stringify(msg.tool_calls));
    }
  }
  return n;
}

/** Prompt of a legacy completion or the input of an embedding: a string, strings, or token arrays. */
export function countInput(input: unknown): number {
  if (typeof input === 'string') return countText(input);
  if (Array.isArray(input)) {
    if (input.every((x) => typeof x === 'number')) return input.length;
    let n = 0;
    for (const x of input) n += countInput(x);
    return n;
  }
  return 0;
}
