import { describe, expect, inject, it } from 'vitest';
import { getTokenMetadata } from '@cashu/cashu-ts';
import { FakeUpstream } from './support/upstream.ts';
import { useGateway } from './support/suite.ts';
import { CountingProxy } from './support/counting-proxy.ts';
import { mintToken, proofStates, receive, relabel } from './support/cashu.ts';
import { loadConfig, ConfigError } from '../src/config.ts';

/**
 * The Docker case: wallets mint at one URL (here the mint's own), the gateway reaches the mint at
 * another (here a proxy in front of it, standing for http://mint:3338 inside the Compose network).
 */
const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
const internal = new CountingProxy(mintUrl);

async function balanceOf(token: string) {
  const res = await fetch(`${suite.gw.url}/v1/balance/info`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

const suite = useGateway({
  upstream,
  before: () => internal.start(),
  env: () => ({ CASHU_MINT_ALIASES: `${mintUrl}=${internal.url}` }),
  after: () => internal.stop(),
});

describe('CASHU_MINT_ALIASES: one trusted mint under the URL wallets use and the one the gateway reaches', () => {
  it('takes a token naming the public URL, swapping it through the internal URL; the refund names the public URL', async () => {
    internal.reset();
    const token = await mintToken(mintUrl, 40);
    const r = await balanceOf(token);
    expect(r.status).toBe(200);
    expect(r.json.balance).toBe(40_000);
    expect(internal.calls).toContain('POST /v1/swap');
    const refund = await fetch(`${suite.gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    const body = (await refund.json()) as { token: string; sats: string };
    expect(body.sats).toBe('40');
    // Handed back to a wallet on the host, so it names the URL that wallet can reach.
    expect(getTokenMetadata(body.token).mint).toBe(mintUrl);
    expect(await receive(mintUrl, body.token)).toBe(40);
  });

  it('takes a token naming the internal URL as the same mint', async () => {
    const token = await relabel(mintUrl, await mintToken(mintUrl, 12), { mint: internal.url });
    const r = await balanceOf(token);
    expect(r.status).toBe(200);
    expect(r.json.balance).toBe(12_000);
    expect(r.json.mint).toBe(mintUrl);
    expect(await proofStates(mintUrl, token)).toEqual(['SPENT', 'SPENT']);
  });

  it('refuses a token naming a URL that is not configured, even one that reaches the same mint, and names the accepted mints', async () => {
    // http://localhost:<port> is the very mint, but nobody configured that name: the gateway
    // must neither trust it nor call it.
    const other = mintUrl.replace('127.0.0.1', 'localhost');
    const token = await relabel(mintUrl, await mintToken(mintUrl, 7), { mint: other });
    internal.reset();
    const r = await balanceOf(token);
    expect(r.status).toBe(400);
    expect(r.json.error.code).toBe('untrusted_mint');
    expect(r.json.error.message).toBe(`Tokens from mint "${other}" are not accepted here; accepted mints: ${mintUrl}.`);
    expect(internal.calls).toEqual([]);
    // Nothing was taken: the proofs are still the holder's.
    expect(await proofStates(mintUrl, token)).toEqual(['UNSPENT', 'UNSPENT', 'UNSPENT']);
  });
});

describe('CASHU_MINT_ALIASES validation', () => {
  const problems = (env: Record<string, string>) => {
    try {
      loadConfig(env);
    } catch (e) {
      if (e instanceof ConfigError) return e.problems;
      throw e;
    }
    return [];
  };

  it('an alias must stand for a mint in CASHU_MINTS: it cannot add trust by itself', () => {
    expect(problems({ CASHU_MINTS: 'http://mint:3338', CASHU_MINT_ALIASES: 'http://evil.example=http://mint:3338' })).toEqual([
      'CASHU_MINT_ALIASES: http://evil.example is not in CASHU_MINTS; put the URL wallets use in CASHU_MINTS and map it to the URL the gateway reaches the mint by (got "http://evil.example=http://mint:3338")',
    ]);
  });

  it('refuses a pair that is not public=internal', () => {
    expect(problems({ CASHU_MINTS: 'http://localhost:3338', CASHU_MINT_ALIASES: 'http://localhost:3338' })).toEqual([
      'CASHU_MINT_ALIASES: public-url=internal-url pairs, comma-separated (got "http://localhost:3338")',
    ]);
  });

  it('reads pairs, normalised like CASHU_MINTS', () => {
    const cfg = loadConfig({ CASHU_MINTS: 'http://localhost:3338/', CASHU_MINT_ALIASES: ' http://localhost:3338/ = http://mint:3338/ ' });
    expect(cfg.CASHU_MINTS).toEqual(['http://localhost:3338']);
    expect(cfg.CASHU_MINT_ALIASES).toEqual({ 'http://localhost:3338': 'http://mint:3338' });
  });
});
