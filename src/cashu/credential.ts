import { createHash } from 'node:crypto';

/**
 * What a credential is, in one place: the API key's format, the Cashu token's, and every key hash
 * the gateway derives. A key is named by a 64-hex-digit hash: a token's own SHA-256 (Routstr's
 * rule, so a token and the `sk-` key it funds are the same key), or a hash of a quote.
 */

/** An API key as clients send it: `sk-` and its key hash. */
const API_KEY = /^sk-([0-9a-f]{64})$/;

/** A token as wallets write it, bare or as a `cashu:` URI. */
const CASHU_TOKEN = /^(cashu:)?cashu[AB]/;

export function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/** The API key that names the key `hash`. */
export function apiKeyOf(hash: string): string {
  return `sk-${hash}`;
}

/** The key hash an `sk-` API key names, or undefined for anything else. */
export function keyHashOfApiKey(s: string): string | undefined {
  return API_KEY.exec(s)?.[1];
}

/** A key as the operator names it: its API key, or its bare hash (how the Nostr door's keys are named). */
export function keyHashOfName(name: string): string {
  return name.replace(/^sk-/, '');
}

export function isCashuToken(s: string): boolean {
  return CASHU_TOKEN.test(s);
}

/** A token's text without the `cashu:` URI scheme: what is decoded, hashed and redeemed. */
export function bareToken(raw: string): string {
  return raw.trim().replace(/^cashu:/, '');
}

/** What a paid NUT-04 quote is recorded under, as a token is under its hash: it is redeemed once. */
export function tokenHashOfQuote(mint: string, quote: string): string {
  return sha256Hex(`quote ${mint} ${quote}`);
}

/** The new key a Lightning invoice (RIP-08) funds: derived from its invoice id, the gateway's secret (its quote id, for one made before). */
export function keyHashOfInvoice(mint: string, invoiceId: string): string {
  return sha256Hex(`lightning key ${mint} ${invoiceId}`);
}

/**
 * One credential as presented, read once: its text (less a `cashu:` scheme) and the key it names,
 * found without decoding or looking anything up. Any other value still names a key (its hash), so
 * a client sending garbage is rate-limited like any other.
 */
export interface Presented {
  kind: 'key' | 'token' | 'other';
  text: string;
  keyHash: string;
}

/** What a request presents: a one-shot `X-Cashu` token, and an API key. Either may be absent. */
export interface Credential {
  /** Pays for this one request only; what it does not cost comes back as change. */
  xCashu?: Presented | undefined;
  apiKey?: Presented | undefined;
}

/** Reads an API key's text: an `sk-` key, a Cashu token, or other; only blanks is no credential. */
export function presentApiKey(raw: string | undefined): Presented | undefined {
  const s = raw?.trim();
  if (!s) return undefined;
  const keyHash = keyHashOfApiKey(s);
  if (keyHash) return { kind: 'key', text: s, keyHash };
  return presentToken(s);
}

/** Reads a value that can only be a token (`X-Cashu`): whatever it holds, it names its own hash. */
export function presentToken(raw: string | undefined): Presented | undefined {
  const s = raw?.trim();
  if (!s) return undefined;
  const text = bareToken(s);
  return { kind: isCashuToken(s) ? 'token' : 'other', text, keyHash: sha256Hex(text) };
}

/** The credential that pays: `X-Cashu` wins over the API key. */
export function paying(c: Credential): Presented | undefined {
  return c.xCashu ?? c.apiKey;
}
