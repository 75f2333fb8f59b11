import { getTokenMetadata, normalizeMintUrl } from '@cashu/cashu-ts';
import { MSATS_PER, type Unit } from '../ledger/ledger.ts';
import { bareToken, sha256Hex, type Presented } from './credential.ts';
import { CashuError } from './errors.ts';

export interface TokenInfo {
  token: string;
  hash: string;
  mint: string;
  unit: Unit;
  /** Face value in the token's unit. */
  amount: number;
  msats: number;
  /** A mint outside the trusted list (FOREIGN_MINTS=swap): `mint` is the URL the token names. */
  foreign?: true;
}

/** Every URL a token may name (a trusted mint, or an operator's alias of one) to that trusted mint. */
export type MintNames = ReadonlyMap<string, string>;

/** The names of `mints`: each its own, plus `aliases` (public URL => internal URL) read backwards too. */
export function mintNames(mints: readonly string[], aliases: Readonly<Record<string, string>> = {}): MintNames {
  const names = new Map(mints.map((m) => [m, m]));
  for (const [pub, internal] of Object.entries(aliases)) if (names.has(pub)) names.set(internal, pub);
  return names;
}

/**
 * Reads a token without any network call and refuses it before the mint is ever contacted:
 * a mint outside the trusted list is never fetched (no SSRF through token contents), unless
 * `acceptForeign`, when it is marked foreign for the Lightning swap (foreign.ts), which contacts
 * it only under the peer rules. A token a request presented was hashed when it was read; one from
 * a body or an event is hashed here.
 */
export function inspectToken(raw: string | Presented, trustedMints: MintNames, acceptForeign = false): TokenInfo {
  const token = typeof raw === 'string' ? bareToken(raw) : raw.text;
  const hash = typeof raw === 'string' ? sha256Hex(token) : raw.keyHash;
  let meta: ReturnType<typeof getTokenMetadata>;
  try {
    meta = getTokenMetadata(token);
  } catch {
    throw new CashuError('invalid_cashu_token', 'The Cashu token could not be decoded.');
  }
  let named: string;
  try {
    named = normalizeMintUrl(meta.mint);
  } catch {
    throw new CashuError('invalid_cashu_token', 'The Cashu token names no valid mint URL.');
  }
  const mint = trustedMints.get(named) ?? (acceptForeign ? named : undefined);
  if (mint === undefined) {
    const accepted = [...new Set(trustedMints.values())].join(', ');
    throw new CashuError('untrusted_mint', `Tokens from mint ${JSON.stringify(named)} are not accepted here; accepted mints: ${accepted}.`);
  }
  const unit = meta.unit ?? 'sat';
  if (unit !== 'sat' && unit !== 'msat') {
    throw new CashuError('unsupported_unit', `Unit ${JSON.stringify(unit)} is not accepted; use sat or msat.`);
  }
  let amount: number;
  try {
    amount = meta.amount.toNumber();
  } catch {
    throw new CashuError('invalid_cashu_token', 'The Cashu token amount is out of range.');
  }
  if (!(amount > 0)) throw new CashuError('invalid_cashu_token', 'The Cashu token is worth nothing.');
  const info: TokenInfo = { token, hash, mint, unit, amount, msats: amount * MSATS_PER[unit] };
  if (!trustedMints.has(named)) info.foreign = true;
  return info;
}
