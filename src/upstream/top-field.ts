/**
 * Finds one field of a JSON object's top level in a body too large to keep, a chunk at a time,
 * holding only that field's value: a whole answer over the size the gateway reads still says
 * what it cost in its `usage`, which every protocol writes at the top level (after the choices).
 * Strings are walked with their escapes, so text the model wrote (say, `\"usage\":{…}` inside
 * its content) is never taken for the field. The last occurrence wins, as JSON.parse would have it.
 */
export class TopLevelField {
  readonly #name: string;
  readonly #maxValue: number;
  #depth = 0;
  #inString = false;
  #escape = false;
  /** The string being read at depth 1 (a key, perhaps), while short enough to be the name. */
  #text: number[] | null = null;
  /** The last string closed at depth 1, if it was the name. */
  #keyMatched = false;
  /** After the name and its colon: the value is next. */
  #expectValue = false;
  #capture: number[] | null = null;
  #overflow = false;
  #value: string | undefined;

  constructor(name: string, maxValue = 64 * 1024) {
    this.#name = name;
    this.#maxValue = maxValue;
  }

  push(chunk: Uint8Array): void {
    for (const b of chunk) this.#byte(b);
  }

  /** The field's value parsed, if it was an object the size allowed. */
  get value(): Record<string, unknown> | undefined {
    if (this.#value === undefined) return undefined;
    try {
      const v = JSON.parse(this.#value) as unknown;
      return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }

  #byte(b: number): void {
    if (this.#capture && !this.#overflow) {
      if (this.#capture.length < this.#maxValue) this.#capture.push(b);
      else this.#overflow = true;
    }
    if (this.#inString) {
      if (this.#escape) this.#escape = false;
      else if (b === 0x5c) this.#escape = true;
      else if (b === 0x22) {
        this.#inString = false;
        if (this.#text) this.#keyMatched = Buffer.from(this.#text).toString('utf8') === this.#name;
        this.#text = null;
        return;
      }
      if (this.#text) {
        if (this.#text.length <= this.#name.length) this.#text.push(b);
        else this.#text = null;
      }
      return;
    }
    // Whitespace changes nothing.
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) return;
    if (this.#expectValue) {
      this.#expectValue = false;
      // Only an object is a usage; anything else is skipped as any other value.
      if (b === 0x7b && this.#depth === 1) {
        this.#capture = [b];
        this.#overflow = false;
      }
    }
    if (b === 0x22) {
      this.#inString = true;
      this.#keyMatched = false;
      this.#text = this.#depth === 1 ? [] : null;
      return;
    }
    if (b === 0x3a) {
      if (this.#depth === 1 && this.#keyMatched) this.#expectValue = true;
      this.#keyMatched = false;
      return;
    }
    this.#keyMatched = false;
    if (b === 0x7b || b === 0x5b) this.#depth++;
    else if (b === 0x7d || b === 0x5d) {
      this.#depth--;
      if (this.#depth === 1 && this.#capture) {
        // A value over the size limit is not believed: it is none an upstream writes.
        if (!this.#overflow) this.#value = Buffer.from(this.#capture).toString('utf8');
        this.#capture = null;
      }
    }
  }
}
