import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateSecretKey, getPublicKey } from 'nostr-tools/pure';
import * as nip19 from 'nostr-tools/nip19';

export interface Identity {
  sk: Uint8Array;
  /** x-only public key, hex. */
  pubkey: string;
  npub: string;
}

function fromSecret(sk: Uint8Array): Identity {
  const pubkey = getPublicKey(sk);
  return { sk, pubkey, npub: nip19.npubEncode(pubkey) };
}

function parseSecret(s: string): Uint8Array {
  const v = s.trim();
  if (/^[0-9a-f]{64}$/i.test(v)) return Uint8Array.from(Buffer.from(v, 'hex'));
  const d = nip19.decode(v);
  if (d.type !== 'nsec') throw new Error('NSEC must be an nsec1… key or 64 hex characters');
  return d.data;
}

/** NSEC if given, else the key generated on first run and kept in the data folder (mode 0600). */
export function loadIdentity(nsec: string | undefined, dataDir: string): Identity {
  if (nsec) return fromSecret(parseSecret(nsec));
  const file = join(dataDir, 'nostr.nsec');
  if (existsSync(file)) return fromSecret(parseSecret(readFileSync(file, 'utf8')));
  mkdirSync(dataDir, { recursive: true });
  const sk = generateSecretKey();
  writeFileSync(file, `${nip19.nsecEncode(sk)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return fromSecret(sk);
}
