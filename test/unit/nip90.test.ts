import * as nip04 from 'nostr-tools/nip04';
import * as nip44 from 'nostr-tools/nip44';
import { finalizeEvent, generateSecretKey, getPublicKey, type Event } from 'nostr-tools/pure';
import { describe, expect, it } from 'vitest';
import { completionParams, decrypt, feedbackEvent, parseJobRequest, resultEvent, schemeOf, type JobRequest } from '../../src/nostr/nip90.ts';

// A job request is a stranger's event: every tag may be missing, misspelt, or hostile.
const dvmSk = generateSecretKey();
const dvmPub = getPublicKey(dvmSk);
const customerSk = generateSecretKey();
const customerPub = getPublicKey(customerSk);

const job = (tags: string[][], content = ''): Event => finalizeEvent({ kind: 5050, created_at: 1_750_000_000, tags, content }, customerSk);
const sealed = (tags: string[][], scheme: 'nip04' | 'nip44'): Event => {
  const text = JSON.stringify(tags);
  const content = scheme === 'nip04' ? nip04.encrypt(customerSk, dvmPub, text) : nip44.encrypt(text, nip44.getConversationKey(customerSk, dvmPub));
  return job([['p', dvmPub], ['encrypted']], content);
};
const parsed = (e: Event): JobRequest => {
  const r = parseJobRequest(e, dvmSk);
  if (!r) throw new Error('expected a job request');
  return r;
};

describe('parseJobRequest', () => {
  it('reads text, prompt, event and job inputs, the params (either spelling), the token, the bid and the relays', () => {
    const e = job([
      ['i', 'Write a haiku', 'text'],
      ['i', 'about autumn', 'prompt'],
      ['i', 'ee'.repeat(32), 'event', 'wss://relay.example'],
      ['i', 'ff'.repeat(32), 'job'],
      ['param', 'top-k', '40'],
      ['param', 'max_tokens', '100'],
      ['cashu', 'cashuBpay'],
      ['bid', '21000'],
      ['relays', 'wss://a.example', 'https://not-a-relay.example', 'ws://b.example'],
    ]);
    const r = parsed(e);
    expect(r.inputs).toStrictEqual([
      { data: 'Write a haiku', type: 'text', relay: undefined },
      { data: 'about autumn', type: 'text', relay: undefined },
      { data: 'ee'.repeat(32), type: 'event', relay: 'wss://relay.example' },
      { data: 'ff'.repeat(32), type: 'job', relay: undefined },
    ]);
    expect([...r.params]).toStrictEqual([['top_k', '40'], ['max_tokens', '100']]);
    expect([r.cashu, r.bid, r.relays, r.scheme]).toStrictEqual(['cashuBpay', 21000, ['wss://a.example', 'ws://b.example'], undefined]);
    expect(r.tags).toBe(e.tags);
    expect(r.event).toBe(e);
  });

  it('takes an input without a type as text, and leaves out the types it cannot read', () => {
    const r = parsed(job([['i', 'plain'], ['i', 'https://x.example/a.png', 'url'], ['i']]));
    expect(r.inputs).toStrictEqual([{ data: 'plain', type: 'text', relay: undefined }]);
  });

  it('refuses a request with no input it can read', () => {
    expect(parseJobRequest(job([['i', 'https://x.example', 'url'], ['param', 'model', 'm']]), dvmSk)).toBeUndefined();
    expect(parseJobRequest(job([]), dvmSk)).toBeUndefined();
  });

  it('takes a bid only as whole msats of at most 15 digits', () => {
    const bid = (b: string) => parsed(job([['i', 'x'], ['bid', b]])).bid;
    expect(bid('0')).toBe(0);
    expect(bid('999999999999999')).toBe(999_999_999_999_999);
    for (const b of ['1000000000000000', '-5', '5e3', '1.5', '', ' 7']) expect(bid(b), b).toBeUndefined();
  });

  it('ignores a param without a value', () => {
    expect([...parsed(job([['i', 'x'], ['param', 'temperature'], ['param', 'top_p', '0.9']])).params]).toStrictEqual([['top_p', '0.9']]);
  });

  it('reads the tags of an encrypted request, NIP-44 or NIP-04, after the public ones, and names the scheme', () => {
    const inner = [['i', 'secret prompt', 'text'], ['param', 'model', 'm1'], ['cashu', 'cashuBhidden']];
    for (const scheme of ['nip44', 'nip04'] as const) {
      const r = parsed(sealed(inner, scheme));
      expect(r.scheme).toBe(scheme);
      expect(r.tags).toStrictEqual([['p', dvmPub], ['encrypted'], ...inner]);
      expect([r.inputs, r.params.get('model'), r.cashu]).toStrictEqual([[{ data: 'secret prompt', type: 'text', relay: undefined }], 'm1', 'cashuBhidden']);
    }
  });

  it('refuses an encrypted request it cannot read: another key, garbage, or content that is not a list of string tags', () => {
    const other = generateSecretKey();
    const forOther = nip44.encrypt(JSON.stringify([['i', 'x']]), nip44.getConversationKey(customerSk, getPublicKey(other)));
    expect(parseJobRequest(job([['encrypted']], forOther), dvmSk)).toBeUndefined();
    expect(parseJobRequest(job([['encrypted']], 'not a ciphertext'), dvmSk)).toBeUndefined();
    for (const inner of [{ i: 'x' }, [['i', 1]], ['i', 'x'], 'text']) {
      const content = nip44.encrypt(JSON.stringify(inner), nip44.getConversationKey(customerSk, dvmPub));
      expect(parseJobRequest(job([['encrypted']], content), dvmSk), JSON.stringify(inner)).toBeUndefined();
    }
  });
});

describe('schemeOf', () => {
  it('reads a payload with an iv as NIP-04 and anything else as NIP-44', () => {
    expect(schemeOf('Zm9v?iv=YmFy')).toBe('nip04');
    expect(schemeOf('AgAAAAAAAAAA')).toBe('nip44');
  });
});

describe('completionParams', () => {
  it('keeps the OpenAI parameters it knows, as numbers, and drops the unknown and the malformed', () => {
    const params = new Map([
      ['max_tokens', '100'],
      ['temperature', '0.7'],
      ['top_p', '1'],
      ['top_k', '40'],
      ['frequency_penalty', '0'],
      ['seed', '3'],
      ['model', 'm'],
    ]);
    expect(completionParams(params)).toStrictEqual({ max_tokens: 100, temperature: 0.7, top_p: 1, top_k: 40, frequency_penalty: 0 });
  });

  it('drops negative, non-finite and (for counts) fractional values', () => {
    const params = new Map([['max_tokens', '10.5'], ['top_k', '2.5'], ['temperature', '-1'], ['top_p', 'NaN'], ['frequency_penalty', 'Infinity']]);
    expect(completionParams(params)).toStrictEqual({});
    expect(completionParams(new Map([['max_tokens', 'abc'], ['temperature', '1e0']]))).toStrictEqual({ temperature: 1 });
  });
});

describe('feedback and result events', () => {
  const plain = parsed(job([['i', 'Write a haiku', 'text'], ['i', 'ab'.repeat(32), 'event']]));

  it('writes feedback in public with the status first, then the extra tags, then the job and customer', () => {
    const t = feedbackEvent({ request: plain, sk: dvmSk }, 'error', 'No model.', [['cashu', 'cashuBrefund']]);
    expect([t.kind, t.content]).toStrictEqual([7000, '']);
    expect(t.tags).toStrictEqual([['status', 'error', 'No model.'], ['cashu', 'cashuBrefund'], ['e', plain.event.id], ['p', customerPub]]);
  });

  it('seals the feedback of an encrypted request in the same scheme, leaving only the job and customer in public', () => {
    for (const scheme of ['nip44', 'nip04'] as const) {
      const r = parsed(sealed([['i', 'x']], scheme));
      const t = feedbackEvent({ request: r, sk: dvmSk }, 'payment-required', 'Pay.', [['amount', '5000', 'lnbc1']]);
      expect(t.tags).toStrictEqual([['e', r.event.id], ['p', customerPub], ['encrypted']]);
      const opened = decrypt(t.content, customerSk, dvmPub);
      expect(opened.scheme).toBe(scheme);
      expect(JSON.parse(opened.text)).toStrictEqual([['status', 'payment-required', 'Pay.'], ['amount', '5000', 'lnbc1']]);
    }
  });

  it('writes a result with the request, the charge, the change and the inputs, the text as content', () => {
    const t = resultEvent({ request: plain, sk: dvmSk }, 'Leaves fall', 1234, 'cashuBchange');
    expect([t.kind, t.content]).toStrictEqual([6050, 'Leaves fall']);
    expect(t.tags).toStrictEqual([
      ['request', JSON.stringify(plain.event)],
      ['e', plain.event.id],
      ['p', customerPub],
      ['amount', '1234'],
      ['cashu', 'cashuBchange'],
      ['i', 'Write a haiku', 'text'],
      ['i', 'ab'.repeat(32), 'event'],
    ]);
    expect(resultEvent({ request: plain, sk: dvmSk }, 'x', 0).tags.some((tag) => tag[0] === 'cashu')).toBe(false);
  });

  it('seals the result of an encrypted request and keeps its inputs out of the public tags', () => {
    const r = parsed(sealed([['i', 'secret prompt']], 'nip44'));
    const t = resultEvent({ request: r, sk: dvmSk }, 'secret answer', 77);
    expect(t.tags).toStrictEqual([['request', JSON.stringify(r.event)], ['e', r.event.id], ['p', customerPub], ['amount', '77'], ['encrypted']]);
    expect(decrypt(t.content, customerSk, dvmPub)).toStrictEqual({ text: 'secret answer', scheme: 'nip44' });
  });
});
