import { mediaTokens } from '../engine/tokens.ts';

/** Chat framing overhead per message and per reply, as OpenAI documents for its chat models. */
export const PER_MESSAGE = 3;
export const PER_REPLY = 3;

/** What a prompt is made of, for the engine to count: text pieces and tokens the text does not show. */
export class PromptParts {
  readonly text: string[] = [];
  extraTokens = 0;
  images = 0;

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
          this.extraTokens += mediaTokens('audio');
          break;
        case 'file':
        case 'input_file':
        case 'document':
          this.extraTokens += mediaTokens('file', { bytes: JSON.stringify(p).length });
          break;
        default:
          // A part of a type we do not know is counted as the text it is.
          this.addJson(p);
      }
    }
  }
}
