/**
 * Counts cl100k_base tokens with the vocabulary in typed arrays, read straight from the
 * `.tiktoken` file that gpt-tokenizer ships. Importing gpt-tokenizer's own encoder instead parses
 * a 1 MB array literal: about 20 MB of resident memory for as long as the process lives, most of
 * it V8 heap grown while parsing. Here the vocabulary is a byte table and an open-addressing hash,
 * about 2 MB outside the heap, built without allocating a string a token.
 *
 * Only counting is needed (reservations, and replies that come without usage), and special tokens
 * count as the text they are: that is how a prompt reaches the upstream.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/** tiktoken's cl100k split, without the possessive quantifiers JavaScript lacks (same pieces). */
const SPLIT = /'(?:[sdmtSDMT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+$|\s*[\r\n]|\s+(?!\S)|\s/gu;

interface Vocabulary {
  bytes: Uint8Array;
  /** Token r is bytes[start[r], start[r + 1]). */
  start: Uint32Array;
  /** Rank + 1 at each slot, 0 for empty; the index is the FNV-1a hash of the token's bytes. */
  slots: Int32Array;
  mask: number;
}

const B64 = new Int8Array(128).fill(-1);
for (const [i, c] of [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'].entries()) B64[c.charCodeAt(0)] = i;

function hash(buf: Uint8Array, from: number, to: number): number {
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) h = Math.imul(h ^ buf[i]!, 0x01000193);
  return h >>> 0;
}

/** Reads `base64 rank` lines; the ranks are the line numbers, which the file's order guarantees. */
function load(file: Buffer): Vocabulary {
  let lines = 0;
  for (let i = 0; i < file.length; i++) if (file[i] === 10) lines++;
  const bytes = new Uint8Array(file.length);
  const start = new Uint32Array(lines + 1);
  let out = 0;
  let rank = 0;
  for (let i = 0; i < file.length && rank < lines; rank++) {
    start[rank] = out;
    let acc = 0;
    let bits = 0;
    for (; file[i] !== 32; i++) {
      const v = B64[file[i]!]!;
      if (v < 0) continue; // '=' padding
      acc = (acc << 6) | v;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        bytes[out++] = (acc >> bits) & 0xff;
      }
    }
    while (file[i] !== 10) i++;
    i++;
  }
  start[rank] = out;
  let size = 1;
  while (size < rank * 2.5) size <<= 1;
  const slots = new Int32Array(size);
  const mask = size - 1;
  for (let r = 0; r < rank; r++) {
    let s = hash(bytes, start[r]!, start[r + 1]!) & mask;
    while (slots[s] !== 0) s = (s + 1) & mask;
    slots[s] = r + 1;
  }
  return { bytes: bytes.slice(0, out), start, slots, mask };
}

const vocabulary = load(readFileSync(createRequire(import.meta.url).resolve('gpt-tokenizer/data/cl100k_base.tiktoken')));

/** The rank of buf[from, to) as one token, or -1. */
function rankOf(buf: Uint8Array, from: number, to: number): number {
  const { bytes, start, slots, mask } = vocabulary;
  const n = to - from;
  for (let s = hash(buf, from, to) & mask; slots[s] !== 0; s = (s + 1) & mask) {
    const r = slots[s]! - 1;
    const at = start[r]!;
    if (start[r + 1]! - at !== n) continue;
    let i = 0;
    while (i < n && bytes[at + i] === buf[from + i]) i++;
    if (i === n) return r;
  }
  return -1;
}

let scratch = new Uint8Array(4096);
/** Per byte offset that starts a part: the next part's start, the previous one's, and the pair's rank. */
let next = new Int32Array(4097);
let prev = new Int32Array(4097);
let pairs = new Float64Array(4097);
/** A binary min-heap of rank * 2^32 + start: the lowest rank first, the leftmost on a tie. */
let heap = new Float64Array(4097);

/** UTF-8 of `s` into the scratch buffer, a lone surrogate as U+FFFD (as TextEncoder writes it). */
function utf8(s: string): number {
  if (scratch.length < s.length * 3) scratch = new Uint8Array(s.length * 3);
  const b = scratch;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      b[n++] = c;
      continue;
    }
    if (c < 0x800) {
      b[n++] = 0xc0 | (c >> 6);
      b[n++] = 0x80 | (c & 0x3f);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
        b[n++] = 0xf0 | (c >> 18);
        b[n++] = 0x80 | ((c >> 12) & 0x3f);
        b[n++] = 0x80 | ((c >> 6) & 0x3f);
        b[n++] = 0x80 | (c & 0x3f);
        continue;
      }
      c = 0xfffd;
    }
    b[n++] = 0xe0 | (c >> 12);
    b[n++] = 0x80 | ((c >> 6) & 0x3f);
    b[n++] = 0x80 | (c & 0x3f);
  }
  return n;
}

const SHIFT = 2 ** 32;

/**
 * tiktoken's byte-pair merge, counting the parts left: the lowest-ranked adjacent pair first,
 * leftmost on a tie. Scanning for that pair after each merge is quadratic in the piece's length,
 * and a stranger chooses the piece (a long run of letters), so pairs wait in a heap instead.
 * An entry is stale once its part is merged away or its pair's rank changed; a pair only ever
 * grows, and a longer pair is another token with another rank, so comparing ranks tells.
 */
function mergedParts(n: number): number {
  if (next.length < n + 1) {
    next = new Int32Array(n + 1);
    prev = new Int32Array(n + 1);
    pairs = new Float64Array(n + 1);
    heap = new Float64Array(n + 1);
  }
  const b = scratch;
  let size = 0;
  const push = (key: number): void => {
    let i = size++;
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (heap[up]! <= key) break;
      heap[i] = heap[up]!;
      i = up;
    }
    heap[i] = key;
  };
  const pop = (): number => {
    const top = heap[0]!;
    const last = heap[--size]!;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= size) break;
      if (c + 1 < size && heap[c + 1]! < heap[c]!) c++;
      if (heap[c]! >= last) break;
      heap[i] = heap[c]!;
      i = c;
    }
    heap[i] = last;
    return top;
  };
  /** Ranks the pair of parts starting at `at`; Infinity when there is none or it is no token. */
  const rank = (at: number): void => {
    const mid = next[at]!;
    const end = mid < n ? next[mid]! : -1;
    const r = end < 0 ? -1 : rankOf(b, at, end);
    pairs[at] = r < 0 ? Infinity : r;
    if (r >= 0) push(r * SHIFT + at);
  };
  for (let i = 0; i < n; i++) {
    next[i] = i + 1;
    prev[i] = i - 1;
  }
  for (let i = 0; i < n - 1; i++) rank(i);
  pairs[n - 1] = Infinity;
  let count = n;
  while (size > 0) {
    const key = pop();
    const at = key % SHIFT;
    const r = (key - at) / SHIFT;
    if (pairs[at] !== r) continue;
    // Merge the part at `at` with the next one.
    const gone = next[at]!;
    const after = next[gone]!;
    next[at] = after;
    if (after < n) prev[after] = at;
    pairs[gone] = -1;
    count--;
    rank(at);
    if (prev[at]! >= 0) rank(prev[at]!);
  }
  return count;
}

/** How many cl100k_base tokens `text` is. */
export function countTokens(text: string): number {
  let count = 0;
  for (const [piece] of text.matchAll(SPLIT)) {
    const n = utf8(piece);
    count += rankOf(scratch, 0, n) >= 0 ? 1 : mergedParts(n);
  }
  return count;
}
