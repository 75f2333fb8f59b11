import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { getPubKeyFromPrivKey, type HasKeysetKeys, type Proof } from '@cashu/cashu-ts';
import { hasValidProofDleq } from './dleq.ts';

export interface P2pkKey {
  privkey: string;
  /** Compressed (33-byte) public key, hex: what clients lock to. */
  pubkey: string;
}

function fromPriv(privkey: string): P2pkKey {
  return { privkey, pubkey: Buffer.from(getPubKeyFromPrivKey(Buffer.from(privkey, 'hex'))).toString('hex') };
}

/** The configured key, or one generated on first run and kept in the data folder (mode 0600). */
export function loadP2pkKey(configured: string | undefined, dataDir: string): P2pkKey {
  if (configured) return fromPriv(configured);
  const file = join(dataDir, 'p2pk.key');
  if (existsSync(file)) return fromPriv(readFileSync(file, 'utf8').trim());
  mkdirSync(dataDir, { recursive: true });
  const privkey = randomBytes(32).toString('hex');
  writeFileSync(file, `${privkey}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return fromPriv(privkey);
}

/** The longest secret taken offline; a longer one is swapped, for its mint to say whether it takes it. */
const MAX_SECRET_LENGTH = 512;

/**
 * A NUT-11 P2PK secret's body: its key (`data`) and tags; undefined for any other secret, and for
 * one not in NUT-10's exact shape. A mint that cannot parse a secret as NUT-10 (no nonce, a third
 * element, a key that is not a point) treats it as a plain secret anyone holding it can spend.
 */
function p2pk(secret: string): { data: string; tags: unknown[] } | undefined {
  // A mint refuses for good an input whose secret is longer than it takes (nutshell: 1,024
  // characters by default, and configurable), though it signs one blinded: well below it.
  if (secret.length > MAX_SECRET_LENGTH) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(secret);
  } catch {
    return undefined;
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || parsed[0] !== 'P2PK') return undefined;
  const body = parsed[1] as Record<string, unknown> | null;
  if (!body || typeof body !== 'object' || Array.isArray(body)) return undefined;
  if (Object.keys(body).some((k) => k !== 'nonce' && k !== 'data' && k !== 'tags')) return undefined;
  const { nonce, data, tags = [] } = body;
  if (typeof nonce !== 'string' || nonce === '') return undefined;
  if (typeof data !== 'string' || !/^0[23][0-9a-fA-F]{64}$/.test(data)) return undefined;
  if (!Array.isArray(tags) || !tags.every((t) => Array.isArray(t) && t.every((v) => typeof v === 'string'))) return undefined;
  return { data, tags };
}

/** The x-only key (hex, lower case) a NUT-11 P2PK proof is locked to; undefined for any other proof. */
export function lockedTo(proof: Pick<Proof, 'secret'>): string | undefined {
  return p2pk(proof.secret)?.data.slice(2).toLowerCase();
}

/** A P2PK proof's locktime (unix seconds), undefined if it has none (it is never spendable by anyone else). */
export function locktimeOf(proof: Pick<Proof, 'secret'>): number | undefined {
  const tag = (p2pk(proof.secret)?.tags as string[][] | undefined)?.find((t) => t[0] === 'locktime');
  return tag && /^\d+$/.test(tag[1] ?? '') ? Number(tag[1]) : undefined;
}

/**
 * Whether a proof is locked (NUT-11) to exactly our key, with no other key, refund path or
 * signature scheme that would let anyone else spend it, and no locktime before `notBefore`.
 */
export function lockedOnlyTo(proof: Pick<Proof, 'secret'>, ourPubkey: string, notBefore = 0): boolean {
  const secret = p2pk(proof.secret);
  if (!secret) return false;
  const { data, tags } = secret;
  // Keys are compared by x-coordinate, as NUT-11 does; p2pk() has checked the prefix is 02 or 03.
  if (data.slice(2).toLowerCase() !== ourPubkey.slice(2)) return false;
  for (const tag of tags as string[][]) {
    const [name, value, ...rest] = tag;
    if (name === 'sigflag' && value === 'SIG_INPUTS' && rest.length === 0) continue;
    if (name === 'n_sigs' && value === '1' && rest.length === 0) continue;
    if (name === 'locktime' && typeof value === 'string' && /^\d+$/.test(value) && Number(value) >= notBefore && rest.length === 0) continue;
    return false;
  }
  return true;
}

/**
 * Whether a proof can be taken without asking the mint: locked to our key alone, any locktime far
 * enough away, and a valid DLEQ (NUT-12) proving the mint signed it.
 */
export function spendableOnlyByUs(proof: Proof, keyset: HasKeysetKeys, ourPubkey: string, notBefore: number): boolean {
  // Written as isLocked() reads it, so every later step (sweep, signing, payouts) knows it is locked.
  return isLocked(proof) && lockedOnlyTo(proof, ourPubkey, notBefore) && hasValidProofDleq(proof, keyset);
}

/**
 * Proofs locked to the gateway's key (taken offline) carry a NUT-10 P2PK secret, written as
 * spendableOnlyByUs() requires (no space before the kind); ours never do.
 */
export function isLocked(p: Pick<Proof, 'secret'>): boolean {
  return p.secret.startsWith('["P2PK"');
}
