// cl100k: counts only size reservations and bill replies that come without usage;
// reservations are padded for tokenizer differences anyway.
import { countTokens } from './cl100k.ts';

/** What a high-detail image is reserved at when its model bills images like most. */
export const IMAGE_TOKENS = 1600;

/**
 * Models known to bill an image far above IMAGE_TOKENS, by a pattern of their id (an upstream's
 * prefix such as `openai/` allowed), with the most one image can bill:
 * - gpt-4o-mini: 2,833 base + 5,667 a 512-px tile, up to 8 tiles (768×2048 after scaling).
 * - OpenAI's patch-billed minis and nanos (gpt-4.1-mini/nano, o4-mini, gpt-5-mini/nano): 1,536
 *   patches at most, times 1.62 (mini), 1.72 (o4-mini) or 2.46 (nano).
 * - Llama vision models as Together bills them: up to 2×2 tiles of 1,601.
 * - Qwen2-VL, Qwen2.5-VL and Qwen3-VL: a token per 28×28 px (Qwen3-VL: 32×32) up to their
 *   processors' default max_pixels (12,845,056 = 16,384 × 28², Qwen3-VL 16,777,216 = 16,384 × 32²),
 *   so 16,384 tokens, plus the vision start and end tokens (the models' cards and preprocessor configs).
 * - Pixtral: 16×16-px patches of an image up to 1024×1024, 64×64, plus a break token a row
 *   (Mistral's Pixtral 12B announcement and tokenizer): 4,160.
 * - Llama 4: up to 16 tiles of 336 px and a global one, 144 tokens each (24×24 patches of 14 px,
 *   pixel-shuffled 4 to 1; Llama4ImageProcessor's max_patches 16): 2,448.
 * - InternVL: up to 12 tiles of 448 px and a thumbnail, 256 tokens each (the InternVL 2.5/3
 *   cards' `max_num=12`, `use_thumbnail`): 3,328.
 * An operator sets any other model's with `image_tokens` in MODEL_PRICES.
 */
const DEAR_IMAGES: ReadonlyArray<readonly [RegExp, number]> = [
  [/gpt-4o-mini/, 2833 + 5667 * 8],
  [/nano/, Math.ceil(1536 * 2.46)],
  [/o4-mini/, Math.ceil(1536 * 1.72)],
  [/gpt-(4\.1|5[.\d]*)-mini/, Math.ceil(1536 * 1.62)],
  [/llama-?4(?!\d)/i, 17 * 144],
  [/llama.*vision|vision.*llama/i, 4 * 1601],
  [/qwen(2(\.5)?|3)-vl/i, 16384 + 2],
  [/pixtral/i, 64 * 64 + 64],
  [/internvl/i, 13 * 256],
];

/** The most one image in a prompt may bill at this model. */
export function imageTokensFor(modelId: string): number {
  for (const [pattern, tokens] of DEAR_IMAGES) if (pattern.test(modelId)) return tokens;
  return IMAGE_TOKENS;
}

/**
 * What a media part is reserved at, by its type, before the upstream reports what it billed:
 * - image: OpenAI bills a low-detail image 85 tokens and a high-detail one up to 1,105 (85 + 170 a
 *   512-px tile, after scaling to 2048×768); Anthropic up to about 1,600 (1.15 megapixels / 750).
 * - file (a PDF): providers bill each page as text plus an image, about 1,500–3,000 tokens a page;
 *   with no page count at hand, one page per 3 KB of the file (base64 included), at least one.
 * - audio: OpenAI bills input audio at 10 tokens a second, Gemini at 32; a part's length is
 *   bounded by its size at the lowest bitrate a provider takes (Opus at 6 kbps: 1,000 base64
 *   characters a second), so 32 tokens per 1,000 characters, and never less than 10 minutes at
 *   OpenAI's rate (a part whose size is not known).
 */
export function mediaTokens(kind: 'image' | 'file' | 'audio', opts: { detail?: string | undefined; bytes?: number | undefined } = {}): number {
  if (kind === 'image') return opts.detail === 'low' ? 85 : IMAGE_TOKENS;
  if (kind === 'audio') return Math.max(6000, Math.ceil(((opts.bytes ?? 0) * 32) / 1000));
  return 3000 * Math.max(1, Math.ceil((opts.bytes ?? 0) / 3072));
}

/**
 * Counting fixed slices bounds the work between two yields (a run without whitespace costs
 * n log n in its length); each cut costs at most one token of accuracy.
 */
const SLICE = 1024;

/** Text up to this long is counted in one go: a few ms even for the slowest text. */
const SYNC_CHARS = 4096;
/** Longest the counter holds the event loop before it lets other work run. */
const SLICE_BUDGET_MS = 3;

/**
 * Counts the pieces of a prompt without holding the event loop for more than a few ms: long text
 * is counted a slice at a time, yielding to other requests between slices.
 */
export async function countPieces(pieces: readonly string[]): Promise<number> {
  let n = 0;
  let since = performance.now();
  for (const piece of pieces) {
    for (let i = 0; i < piece.length; i += SLICE) {
      n += countTokens(piece.length <= SLICE ? piece : piece.slice(i, i + SLICE));
      if (performance.now() - since > SLICE_BUDGET_MS) {
        await new Promise<void>((r) => setImmediate(r));
        since = performance.now();
      }
    }
  }
  return n;
}

/** Whether counting these pieces is cheap enough to do for someone who has not shown a credential. */
export function cheapToCount(pieces: readonly string[]): boolean {
  let chars = 0;
  for (const p of pieces) chars += p.length;
  return chars <= SYNC_CHARS;
}

/**
 * A token count no tokenizer exceeds, without tokenizing: every BPE token is at least one byte
 * of UTF-8 (byte fallback included).
 */
export function tokenBound(pieces: readonly string[]): number {
  let n = 0;
  for (const p of pieces) n += Buffer.byteLength(p, 'utf8');
  return n;
}
