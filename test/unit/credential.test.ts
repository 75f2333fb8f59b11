import { createHash } from 'node:crypto';
import { Amount, getEncodedToken } from '@cashu/cashu-ts';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import {
  apiKeyOf, bareToken, isCashuToken, keyHashOfApiKey, keyHashOfInvoice, keyHashOfName, paying, presentApiKey, presentToken, tokenHashOfQuote,
} from '../../src/cashu/credential.ts';
import { inspectToken, mintNames } from '../../src/cashu/token.ts';
import { readCredentials } from '../../src/http/payment.ts';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const MINT = 'http://127.0.0.1:3338';
const hash = 'ab'.repeat(32);
// A token is read without a mint: its proofs need not be real to be decoded and hashed.
const token = getEncodedToken({ mint: MINT, unit: 'sat', proofs: [{ id: '009a1f293253e41e', amount: Amount.from(8), secret: 's'.repeat(64), C: `02${'c'.repeat(64)}` }] });

describe('credential formats', () => {
  it('reads an sk- key as the hash it names, and nothing near it', () => {
    expect(keyHashOfApiKey(apiKeyOf(hash))).toBe(hash);
    expect(presentApiKey(`  sk-${hash} `)).toEqual({ kind: 'key', text: `sk-${hash}`, keyHash: hash });
    for (const near of [`sk-${hash.slice(1)}`, `sk-${hash.toUpperCase()}`, `sk-${hash}0`, hash]) {
      expect(presentApiKey(near)).toEqual({ kind: 'other', text: near, keyHash: sha(near) });
    }
  });

  it('names a token and its cashu: URI by one key, the hash of the bare token', () => {
    expect(isCashuToken(token)).toBe(true);
    expect(isCashuToken(`cashu:${token}`)).toBe(true);
    expect(isCashuToken(`x${token}`)).toBe(false);
    expect(bareToken(` cashu:${token} `)).toBe(token);
    const plain = presentApiKey(token)!;
    expect(plain).toEqual({ kind: 'token', text: token, keyHash: sha(token) });
    expect(presentApiKey(`cashu:${token}`)).toEqual(plain);
    expect(presentToken(`cashu:${token}`)).toEqual(plain);
  });

  it('reads whatever X-Cashu holds as a token: an sk- key there names its own hash, not the key', () => {
    const x = presentToken(`sk-${hash}`)!;
    expect(x.kind).toBe('other');
    expect(x.keyHash).toBe(sha(`sk-${hash}`));
  });

  it('takes blanks for no credential', () => {
    expect(presentApiKey(undefined)).toBeUndefined();
    expect(presentApiKey('   ')).toBeUndefined();
    expect(presentToken('\t')).toBeUndefined();
  });

  it('lets X-Cashu pay over the API key', () => {
    const xCashu = presentToken(token)!;
    const apiKey = presentApiKey(apiKeyOf(hash))!;
    expect(paying({ xCashu, apiKey })).toBe(xCashu);
    expect(paying({ apiKey })).toBe(apiKey);
    expect(paying({})).toBeUndefined();
  });

  it('derives quote and invoice keys apart from each other and per mint', () => {
    expect(tokenHashOfQuote(MINT, 'q1')).toBe(sha(`quote ${MINT} q1`));
    expect(keyHashOfInvoice(MINT, 'q1')).toBe(sha(`lightning key ${MINT} q1`));
    expect(keyHashOfInvoice(`${MINT}/x`, 'q1')).not.toBe(keyHashOfInvoice(MINT, 'q1'));
    expect(keyHashOfName(apiKeyOf(hash))).toBe(hash);
    expect(keyHashOfName(`nostr:${hash}`)).toBe(`nostr:${hash}`);
  });

  it('inspects a presented token with the hash it was read with', () => {
    const trusted = mintNames([MINT]);
    const fromText = inspectToken(`cashu:${token}`, trusted);
    const presented = presentApiKey(`cashu:${token}`)!;
    expect(inspectToken(presented, trusted)).toEqual(fromText);
    expect(fromText).toMatchObject({ token, hash: sha(token), mint: MINT, unit: 'sat', amount: 8, msats: 8000 });
  });
});

describe('req.credential', () => {
  const app = Fastify();
  readCredentials(app);
  app.get('/', async (req) => ({ same: req.credential === req.credential, ...req.credential }));

  it('reads Bearer over x-api-key, and X-Cashu beside them, once per request', async () => {
    const res = await app.inject({ url: '/', headers: { authorization: `Bearer ${apiKeyOf(hash)}`, 'x-api-key': token, 'x-cashu': ` cashu:${token}` } });
    expect(res.json()).toEqual({
      same: true,
      apiKey: { kind: 'key', text: apiKeyOf(hash), keyHash: hash },
      xCashu: { kind: 'token', text: token, keyHash: sha(token) },
    });
  });

  it("reads Anthropic's x-api-key when there is no Bearer, and a non-Bearer Authorization as none", async () => {
    const anthropic = await app.inject({ url: '/', headers: { 'x-api-key': token } });
    expect(anthropic.json().apiKey).toEqual({ kind: 'token', text: token, keyHash: sha(token) });
    const basic = await app.inject({ url: '/', headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    expect(basic.json()).toEqual({ same: true });
  });
});
