import { getDecodedToken, getDecodedTokenBinary, type Token } from '@cashu/cashu-ts';
import { CashuError } from './errors.ts';

/** A keyset the mint lists (NUT-02): its full id and unit. */
export interface KnownKeyset {
  id: string;
  unit: string;
}

/** NUT-02 v2 ids are version byte 01 plus 32 bytes; a cashuB token may carry only their first 8 bytes. */
const SHORT_V2 = /^01[0-9a-f]{14}$/;
const FULL_V2 = /^01[0-9a-f]{64}$/;

/**
 * The mint's keyset a token's id stands for: the very id (v1 `00…`, full v2, or a legacy base64
 * id), or the one full v2 id a short id (NUT-00 `s_id`) is the prefix of. NUT-00 has the receiver
 * fail on a short id that names two keysets, so the mint is never sent a guess.
 */
export function resolveKeysetId(id: string, keysets: readonly KnownKeyset[]): KnownKeyset {
  const exact = keysets.find((k) => k.id === id);
  if (exact) return exact;
  const lower = id.toLowerCase();
  const matches = SHORT_V2.test(lower) ? keysets.filter((k) => FULL_V2.test(k.id.toLowerCase()) && k.id.toLowerCase().startsWith(lower)) : [];
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) {
    throw new CashuError('ambiguous_keyset_id', `The token's short keyset id ${JSON.stringify(id)} matches ${matches.length} keysets of its mint; send the full keyset id.`);
  }
  throw new CashuError('unknown_keyset', `The token's keyset ${JSON.stringify(id)} is not one of its mint's keysets.`);
}

/** The keyset ids exactly as the token writes them, before any mapping. */
function writtenKeysetIds(token: string): string[] {
  const version = token.slice(5, 6);
  const body = Buffer.from(token.slice(6), 'base64'); // Node reads standard and URL-safe, padded or not.
  if (version === 'B') {
    // cashu-ts reads a V4 token's CBOR without mapping ids only from its binary ("craw" + "B") form.
    const raw = getDecodedTokenBinary(Buffer.concat([Buffer.from('crawB'), body]));
    return raw.proofs.map((p) => p.id);
  }
  const json = JSON.parse(body.toString('utf8')) as { token: Array<{ proofs: Array<{ id: unknown }> }> };
  return json.token.flatMap((t) => t.proofs.map((p) => String(p.id)));
}

/**
 * Decodes a token (`cashuA…`/`cashuB…`, already without a `cashu:` URI prefix) with every proof's
 * keyset id resolved to a full id of the mint's `keysets` in `unit`, before any swap or offline
 * check: a proof of another unit's keyset is refused, since a token's unit is only its label.
 */
export function decodeWithKeysets(token: string, keysets: readonly KnownKeyset[], unit: string): Token {
  let written: string[];
  try {
    written = [...new Set(writtenKeysetIds(token))];
  } catch (e) {
    throw new CashuError('invalid_cashu_token', `The Cashu token is not valid: ${(e as Error).message}`);
  }
  const resolved = written.map((id) => resolveKeysetId(id, keysets));
  const other = resolved.find((k) => k.unit !== unit);
  if (other) {
    throw new CashuError('keyset_unit_mismatch', `The token says ${JSON.stringify(unit)} but holds proofs of the mint's ${JSON.stringify(other.unit)} keyset ${other.id}.`);
  }
  try {
    // Only the resolved ids are offered, so cashu-ts's own prefix mapping has exactly one choice.
    return getDecodedToken(token, resolved.map((k) => k.id));
  } catch (e) {
    throw new CashuError('invalid_cashu_token', `The Cashu token is not valid: ${(e as Error).message}`);
  }
}
