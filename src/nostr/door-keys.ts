import { createHmac } from 'node:crypto';
import { getPubKeyFromPrivKey } from '@cashu/cashu-ts';
import type { P2pkKey } from '../cashu/p2pk.ts';

/** secp256k1's group order: a private key must be below it. */
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

/**
 * Key hashes of the Nostr door start with this. The HTTP door names keys only as `sk-` and 64 hex
 * digits (or as a token's sha256), so it can never name, spend or refund one of these.
 */
export const NOSTR_KEY_PREFIX = 'nostr:';

export interface NostrDoorKeys {
  /** The P2PK key Nostr payers lock ecash to (announced in kind 10019); the HTTP door refuses its locks. */
  p2pk: P2pkKey;
  /** The key a job's payment funds and the job spends: nobody without the gateway's nsec can derive it. */
  jobKey(requestId: string): string;
}

/**
 * The Nostr door's secrets, derived from the gateway's Nostr identity: every instance serving the
 * same npub derives the same ones, and nothing public (event ids, tokens) is enough to derive them.
 */
export function nostrDoorKeys(sk: Uint8Array): NostrDoorKeys {
  const mac = (label: string) => createHmac('sha256', sk).update(`cashu-gateway nostr door ${label}`).digest();
  // A 256-bit HMAC is below the group order but for a chance of about 2^-128; reduced all the same.
  const scalar = BigInt(`0x${mac('p2pk').toString('hex')}`) % N;
  const privkey = scalar.toString(16).padStart(64, '0');
  const p2pk = { privkey, pubkey: Buffer.from(getPubKeyFromPrivKey(Buffer.from(privkey, 'hex'))).toString('hex') };
  const jobSecret = mac('job keys');
  return {
    p2pk,
    jobKey: (requestId) => `${NOSTR_KEY_PREFIX}${createHmac('sha256', jobSecret).update(requestId).digest('hex')}`,
  };
}
