import { decodeBolt11 } from './bolt11.ts';
import { PeerError, type PeerFetch } from './peer-fetch.ts';

/** LUD-16: `name@domain`, the name in the characters the spec allows. */
const ADDRESS = /^([a-z0-9\-_.+]+)@([a-z0-9.-]+(?::\d{1,5})?)$/;

export function isLightningAddress(s: string): boolean {
  return ADDRESS.test(s.trim().toLowerCase());
}

export interface PayRequest {
  callback: string;
  minSendable: number;
  maxSendable: number;
}

function reasonOf(doc: unknown): string | undefined {
  if (typeof doc !== 'object' || doc === null) return undefined;
  const d = doc as Record<string, unknown>;
  if (d.status === 'ERROR') return typeof d.reason === 'string' ? d.reason.slice(0, 200) : 'no reason given';
  return undefined;
}

/** LUD-16 then LUD-06: the address's pay request, as its server states it. */
export async function payRequestOf(peers: PeerFetch, address: string): Promise<PayRequest> {
  const m = ADDRESS.exec(address.trim().toLowerCase());
  if (!m) throw new PeerError('bad_answer', 'not a Lightning address (name@domain)');
  const [, name, domain] = m;
  // LUD-16 names https; plain http only for the loopback a test-only setting allows.
  const scheme = peers.rules.allowLoopback && /^(127\.|localhost(:|$))/.test(domain!) ? 'http' : 'https';
  const doc = await peers.getJson(`${scheme}://${domain}/.well-known/lnurlp/${encodeURIComponent(name!)}`);
  const refused = reasonOf(doc);
  if (refused) throw new PeerError('refused', `the Lightning address's server refused: ${refused}`);
  const d = (typeof doc === 'object' && doc !== null ? doc : {}) as Record<string, unknown>;
  const { callback, minSendable, maxSendable, tag } = d;
  if (tag !== 'payRequest' || typeof callback !== 'string' || !Number.isSafeInteger(minSendable) || !Number.isSafeInteger(maxSendable)) {
    throw new PeerError('bad_answer', 'the Lightning address did not answer with a LUD-06 pay request');
  }
  return { callback, minSendable: minSendable as number, maxSendable: maxSendable as number };
}

/**
 * Asks the address's callback for an invoice of exactly `msats` and checks that the invoice asks
 * for exactly that: a server that hands out a larger one would otherwise be paid more.
 */
export async function invoiceFor(peers: PeerFetch, address: string, msats: number): Promise<string> {
  const pay = await payRequestOf(peers, address);
  if (msats < pay.minSendable || msats > pay.maxSendable) {
    throw new PeerError('amount_out_of_range', `the Lightning address takes ${pay.minSendable}..${pay.maxSendable} msats, not ${msats}`);
  }
  const url = new URL(peers.check(pay.callback));
  url.searchParams.set('amount', String(msats));
  const doc = await peers.getJson(url.toString());
  const refused = reasonOf(doc);
  if (refused) throw new PeerError('refused', `the Lightning address's server refused: ${refused}`);
  const pr = (doc as Record<string, unknown> | null)?.pr;
  if (typeof pr !== 'string' || pr.length > 4096) throw new PeerError('bad_answer', 'the callback did not answer with an invoice');
  let amount: bigint | undefined;
  try {
    amount = decodeBolt11(pr).amountMsats;
  } catch (e) {
    throw new PeerError('bad_answer', `the callback's invoice is not valid: ${(e as Error).message}`);
  }
  if (amount !== BigInt(msats)) {
    throw new PeerError('wrong_amount', `the callback's invoice asks for ${amount ?? 'any amount'} msats, not ${msats}`);
  }
  return pr;
}
