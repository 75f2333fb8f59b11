/**
 * Splits a byte stream into SSE events as they complete. Events are returned as their raw text so
 * they can be forwarded untouched; only their `data:` payload is looked at.
 */
export class SseSplitter {
  #buf = '';
  readonly #decoder = new TextDecoder();

  push(chunk: Uint8Array): string[] {
    this.#buf += this.#decoder.decode(chunk, { stream: true });
    if (this.#buf.includes('\r')) {
      // A trailing CR may be the first half of a CRLF split across chunks: keep it for later.
      const held = this.#buf.endsWith('\r');
      const body = held ? this.#buf.slice(0, -1) : this.#buf;
      this.#buf = body.replace(/\r\n?/g, '\n') + (held ? '\r' : '');
    }
    const events: string[] = [];
    let at: number;
    while ((at = this.#buf.indexOf('\n\n')) !== -1) {
      const ev = this.#buf.slice(0, at);
      this.#buf = this.#buf.slice(at + 2);
      if (ev.length > 0) events.push(ev);
    }
    return events;
  }

  /** Whatever is left when the stream ends without a final blank line. */
  flush(): string[] {
    const rest = (this.#buf + this.#decoder.decode()).replace(/\r\n?/g, '\n').trim();
    this.#buf = '';
    return rest ? [rest] : [];
  }
}

/** The joined `data:` lines of an event, or undefined for comments and other fields only. */
export function eventData(event: string): string | undefined {
  let data: string | undefined;
  for (const line of event.split('\n')) {
    if (line.startsWith('data:')) {
      const v = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
      data = data === undefined ? v : `${data}\n${v}`;
    }
  }
  return data;
}

/** The `event:` field of an event, if it has one. */
export function eventName(event: string): string | undefined {
  if (!event.startsWith('event:') && !event.includes('\nevent:')) return undefined;
  for (const line of event.split('\n')) {
    if (line.startsWith('event:')) return line.slice(6).trim();
  }
  return undefined;
}
