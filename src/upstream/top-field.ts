/**
 * Finds fields of a JSON object's top level in a body too large to keep, a chunk at a time,
 * holding only those fields' values: a whole answer over the size the gateway reads still says
 * what it cost in its `usage`, which every protocol writes at the top level (after the choices),
 * and which model made it in its `model`. Strings are walked with their escapes, so text the
 * model wrote (say, `\"usage\":{…}` inside its content) is never taken for a field. The last
 * occurrence wins, as JSON.parse would have it. Only an object or a string value is kept.
 */
export class TopLevelFields {
  readonly #names: ReadonlySet<string>;
  readonly #longest: number;
  readonly #maxValue: number;
  #depth = 0;
  #inString = false;
  #escape = false;
  /** The string being read at depth 1 (a key, perhaps), while short enough to be a name. */
  #text: number[] | null = null;
  /** The name the last string closed at depth 1 was, if it was one. */
  #keyMatched: string | null = null;
  /** After a name and its colon: its value is next. */
  #expectValue: string | null = null;
  #capturing: string | null = null;
  #capture: number[] | null = null;
  #overflow = false;
  readonly #values = new Map<string, string>();

  constructor(names: readonly string[], maxValue = 64 * 1024) {
    this.#names = new Set(names);
    this.#longest = Math.max(...names.map((n) => Buffer.byteLength(n)));
    this.#maxValue = maxValue;
  }

  push(chunk: Uint8Array): void {
    for (const b of chunk) this.#byte(b);
  }

  /** The field's value parsed, if one was found within the size allowed. */
  get(name: string): unknown {
    const raw = this.#values.get(name);
    if (raw === undefined) return undefined;
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      return undefined;
    }
  }

  #done(): void {
    // A value over the size limit is not believed: it is none an upstream writes.
    if (!this.#overflow && this.#capturing) this.#values.set(this.#capturing, Buffer.from(this.#capture!).toString('utf8'));
    this.#capture = null;
    this.#capturing = null;
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
        if (this.#text) {
          const s = Buffer.from(this.#text).toString('utf8');
          this.#keyMatched = this.#names.has(s) ? s : null;
        }
        this.#text = null;
        // A string value of a name ends here.
        if (this.#capture && this.#depth === 1) this.#done();
        return;
      }
      if (this.#text) {
        if (this.#text.length <= this.#longest) this.#text.push(b);
        else this.#text = null;
      }
      return;
    }
    // Whitespace changes nothing.
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) return;
    if (this.#expectValue) {
      const name = this.#expectValue;
      this.#expectValue = null;
      // Only an object or a string is kept; anything else is skipped as any other value.
      if ((b === 0x7b || b === 0x22) && this.#depth === 1) {
        this.#capturing = name;
        this.#capture = [b];
        this.#overflow = false;
      }
    }
    if (b === 0x22) {
      this.#inString = true;
      this.#keyMatched = null;
      // A string value being kept is no key.
      this.#text = this.#depth === 1 && !this.#capture ? [] : null;
      return;
    }
    if (b === 0x3a) {
      if (this.#depth === 1 && this.#keyMatched) this.#expectValue = this.#keyMatched;
      this.#keyMatched = null;
      return;
    }
    this.#keyMatched = null;
    if (b === 0x7b || b === 0x5b) this.#depth++;
    else if (b === 0x7d || b === 0x5d) {
      this.#depth--;
      if (this.#depth === 1 && this.#capture) this.#done();
    }
  }
}
