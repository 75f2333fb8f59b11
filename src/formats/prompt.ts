import { mediaTokens } from '../engine/tokens.ts';

/** Chat framing overhead per message and per reply, as OpenAI documents for its chat models. */
export const PER_MESSAGE = 3;
export const PER_REPLY = 3;

/** Bytes given in the request itself: a data: URL, or bare base64 (which has no colon). */
function inline(data: unknown): boolean {
  return typeof data === 'string' && (data.startsWith('data:') || !data.includes(':'));
}

/**
 * Whether a file or document part names bytes the request does not hold: a file id, a URL, or a
 * URL where the bytes belong (OpenRouter fetches one in `file_data`). The upstream reads and bills
 * the whole file, which may be any size, so nothing here can bound it. Looked for on the part,
 * its `file` (chat) and its `source` (Anthropic). Images are not asked: their cost is bounded by
 * the provider's scaling, wherever their bytes are.
 */
export function unseenFile(part: Record<string, unknown>): boolean {
  return [part, part.file, part.source].some((o) => {
    if (!o || typeof o !== 'object') return false;
    const f = o as Record<string, unknown>;
    return f.file_id != null || f.file_url != null || f.url != null || (f.file_data != null && !inline(f.file_data));
  });
}

/**
 * Whether any cache breakpoint (a block's, a tool's, or the request's own for automatic caching)
 * asks for a TTL other than the 5-minute default: a 1-hour write bills 2x base input, not 1.25x.
 * Walked without recursion: the body's depth is the client's to choose.
 */
export function asksLongCache(body: unknown): boolean {
  const todo: unknown[] = [body];
  while (todo.length) {
    const v = todo.pop();
    if (!v || typeof v !== 'object') continue;
    if (Array.isArray(v)) {
      for (const x of v) todo.push(x);
      continue;
    }
    const o = v as Record<string, unknown>;
    const ttl = (o.cache_control as Record<string, unknown> | null | undefined)?.ttl;
    if (ttl != null && ttl !== '5m') return true;
    for (const x of Object.values(o)) todo.push(x);
  }
  return false;
}

/** What a prompt is made of, for the engine to count: text pieces and tokens the text does not show. */
export class PromptParts {
  readonly text: string[] = [];
  extraTokens = 0;
  images = 0;
  /** A part names a file the gateway cannot see (`unseenFile`): the engine reserves the whole context. */
  wholeContext = false;

  addText(s: unknown): void {
    if (typeof s === 'string' && s.length > 0) this.text.push(s);
  }

  addJson(v: unknown): void {
    if (v != null) this.text.push(JSON.stringify(v));
  }

  /**
   * A message's content: a string, or parts decided by their `type` (never by which keys a part
   * happens to carry: an image part with `text: ""` is still an image).
   */
  addContent(content: unknown): void {
    if (typeof content === 'string') return this.addText(content);
    if (!Array.isArray(content)) return this.addJson(content);
    for (const part of content) {
      const p = (part && typeof part === 'object' ? part : {}) as Record<string, unknown>;
      switch (p.type) {
        case 'text':
        case 'input_text':
        case 'output_text':
          this.addText(p.text);
          break;
        case 'image_url':
        case 'input_image':
        case 'image': {
          const detail = (p.image_url as { detail?: unknown } | undefined)?.detail ?? p.detail;
          this.extraTokens += mediaTokens('image', { detail: typeof detail === 'string' ? detail : undefined });
          this.images++;
          break;
        }
        case 'input_audio':
        case 'audio':
          this.extraTokens += mediaTokens('audio', { bytes: JSON.stringify(p).length });
          break;
        case 'file':
        case 'input_file':
        case 'document':
          this.extraTokens += mediaTokens('file', { bytes: JSON.stringify(p).length });
          if (unseenFile(p)) this.wholeContext = true;
          break;
        default:
          // A part of a type we do not know is counted as the text it is.
          this.addJson(p);
      }
    }
  }
}
