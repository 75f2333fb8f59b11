import * as nip04 from 'nostr-tools/nip04';
import * as nip44 from 'nostr-tools/nip44';
import type { Event, EventTemplate } from 'nostr-tools/pure';

/** NIP-90 text generation: request, result (request + 1000) and feedback kinds. */
export const JOB_REQUEST = 5050;
export const JOB_RESULT = 6050;
export const JOB_FEEDBACK = 7000;

export type Scheme = 'nip04' | 'nip44';

export interface JobInput {
  data: string;
  type: 'text' | 'event' | 'job';
  relay?: string | undefined;
}

export interface JobRequest {
  event: Event;
  inputs: JobInput[];
  params: Map<string, string>;
  /** The tags as the job reads them: decrypted if the request was encrypted. */
  tags: string[][];
  /** How the request was encrypted; replies use the same scheme. */
  scheme?: Scheme | undefined;
  /** A Cashu token paying for the job (the convention nostrdvm uses). */
  cashu?: string | undefined;
  /** NIP-90 `bid`: the most the requester will pay, in msats. */
  bid?: number | undefined;
  relays: string[];
}

/** NIP-04 payloads carry `?iv=`; anything else is taken as NIP-44 v2. */
export function schemeOf(payload: string): Scheme {
  return payload.includes('?iv=') ? 'nip04' : 'nip44';
}

export function decrypt(payload: string, sk: Uint8Array, peer: string): { text: string; scheme: Scheme } {
  const scheme = schemeOf(payload);
  const text = scheme === 'nip04' ? nip04.decrypt(sk, peer, payload) : nip44.decrypt(payload, nip44.getConversationKey(sk, peer));
  return { text, scheme };
}

export function encrypt(text: string, sk: Uint8Array, peer: string, scheme: Scheme): string {
  return scheme === 'nip04' ? nip04.encrypt(sk, peer, text) : nip44.encrypt(text, nip44.getConversationKey(sk, peer));
}

/**
 * Reads a kind 5050 request. Inputs of type text (or the `prompt` the 5050 example uses), event
 * and job; `top-k`/`top_k` spellings both; `[i, data, type, relay, marker]` as the current spec
 * orders it. Returns undefined for requests it cannot make sense of.
 */
export function parseJobRequest(event: Event, sk: Uint8Array): JobRequest | undefined {
  let tags = event.tags;
  let scheme: Scheme | undefined;
  if (event.tags.some((t) => t[0] === 'encrypted')) {
    try {
      const d = decrypt(event.content, sk, event.pubkey);
      const inner = JSON.parse(d.text) as unknown;
      if (!Array.isArray(inner) || !inner.every((t) => Array.isArray(t) && t.every((x) => typeof x === 'string'))) return undefined;
      tags = [...event.tags, ...(inner as string[][])];
      scheme = d.scheme;
    } catch {
      return undefined;
    }
  }
  const inputs: JobInput[] = [];
  const params = new Map<string, string>();
  let cashu: string | undefined;
  let bid: number | undefined;
  const relays: string[] = [];
  for (const t of tags) {
    if (t[0] === 'i' && typeof t[1] === 'string') {
      const type = t[2] === 'prompt' || t[2] === undefined ? 'text' : t[2];
      if (type === 'text' || type === 'event' || type === 'job') inputs.push({ data: t[1], type, relay: t[3] || undefined });
    } else if (t[0] === 'param' && typeof t[1] === 'string' && typeof t[2] === 'string') {
      params.set(t[1].replace(/-/g, '_'), t[2]);
    } else if (t[0] === 'cashu' && typeof t[1] === 'string') {
      cashu = t[1];
    } else if (t[0] === 'bid' && typeof t[1] === 'string' && /^\d{1,15}$/.test(t[1])) {
      bid = Number(t[1]);
    } else if (t[0] === 'relays') {
      relays.push(...t.slice(1).filter((r) => /^wss?:\/\//.test(r)));
    }
  }
  if (inputs.length === 0) return undefined;
  return { event, inputs, params, tags, scheme, cashu, bid, relays };
}

/** OpenAI parameters from the 5050 params; unknown or malformed ones are left out. */
export function completionParams(params: Map<string, string>): Record<string, number> {
  const out: Record<string, number> = {};
  const num = (k: string, name = k, int = false) => {
    const v = params.get(k);
    if (v === undefined) return;
    const n = Number(v);
    if (Number.isFinite(n) && (!int || Number.isInteger(n)) && n >= 0) out[name] = n;
  };
  num('max_tokens', 'max_tokens', true);
  num('temperature');
  num('top_p');
  num('top_k', 'top_k', true);
  num('frequency_penalty');
  return out;
}

interface Reply {
  request: JobRequest;
  sk: Uint8Array;
}

/** Tags every reply carries: the job it answers and its customer. */
function replyTags(r: Reply): string[][] {
  return [
    ['e', r.request.event.id],
    ['p', r.request.event.pubkey],
  ];
}

/**
 * Kind 7000 feedback. For an encrypted request, everything but `e`/`p` goes into the encrypted
 * content, as nostrdvm does.
 */
export function feedbackEvent(
  r: Reply,
  status: 'processing' | 'error' | 'payment-required' | 'success',
  info: string,
  extra: string[][] = [],
): EventTemplate {
  const created_at = Math.floor(Date.now() / 1000);
  const inner = [['status', status, info], ...extra];
  if (r.request.scheme) {
    return {
      kind: JOB_FEEDBACK,
      created_at,
      tags: [...replyTags(r), ['encrypted']],
      content: encrypt(JSON.stringify(inner), r.sk, r.request.event.pubkey, r.request.scheme),
    };
  }
  return { kind: JOB_FEEDBACK, created_at, tags: [...inner, ...replyTags(r)], content: '' };
}

/** Kind 6050 result: the text, the request, and what was charged; change rides in a `cashu` tag. */
export function resultEvent(r: Reply, text: string, chargedMsats: number, change?: string): EventTemplate {
  const tags: string[][] = [['request', JSON.stringify(r.request.event)], ...replyTags(r), ['amount', String(chargedMsats)]];
  if (change) tags.push(['cashu', change]);
  const created_at = Math.floor(Date.now() / 1000);
  if (r.request.scheme) {
    return { kind: JOB_RESULT, created_at, tags: [...tags, ['encrypted']], content: encrypt(text, r.sk, r.request.event.pubkey, r.request.scheme) };
  }
  for (const i of r.request.inputs) tags.push(['i', i.data, i.type]);
  return { kind: JOB_RESULT, created_at, tags, content: text };
}
