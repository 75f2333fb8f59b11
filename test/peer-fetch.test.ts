import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PeerFetch, allowedAddress } from '../src/net/peer-fetch.ts';
import { decodeBolt11 } from '../src/net/bolt11.ts';
import { externalInvoice } from './support/invoice.ts';

// A real server on loopback: with the production rules nothing may reach it, by any name.
let server: Server;
let port: number;
let hits = 0;

beforeAll(async () => {
  server = createServer((_req, res) => {
    hits++;
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('peer fetches under the production rules', () => {
  const peers = new PeerFetch({ timeoutMs: 2000, maxBytes: 1000, allowLoopback: false });
  afterAll(() => peers.close());

  it.each([
    [`http://127.0.0.1:PORT/`, 'private_address'],
    ['http://example.com/', 'insecure_url'],
    [`https://127.0.0.1:PORT/`, 'private_address'],
    // A name is judged by what it resolves to, on the socket that then connects.
    [`https://localhost:PORT/`, 'private_address'],
    [`https://[::ffff:127.0.0.1]:PORT/`, 'private_address'],
    [`https://[::1]:PORT/`, 'private_address'],
    ['https://10.1.2.3/', 'private_address'],
    ['https://user:pw@example.com/', 'insecure_url'],
    ['ftp://example.com/', 'insecure_url'],
  ])('%s is refused (%s) and never reached', async (url, reason) => {
    const before = hits;
    await expect(peers.getJson(url.replace('PORT', String(port)))).rejects.toMatchObject({ reason });
    expect(hits).toBe(before);
  });
});

describe('the test-only setting', () => {
  const peers = new PeerFetch({ timeoutMs: 2000, maxBytes: 1000, allowLoopback: true });
  afterAll(() => peers.close());

  it('lets loopback through, by address and by name, over http', async () => {
    expect(await peers.getJson(`http://127.0.0.1:${port}/`)).toEqual({ ok: true });
    expect(await peers.getJson(`http://localhost:${port}/`)).toEqual({ ok: true });
  });

  it('still refuses every other private address', () => {
    for (const a of ['10.0.0.1', '172.16.5.4', '192.168.1.1', '169.254.169.254', '100.64.0.1', 'fe80::1', 'fd00::1', '::ffff:10.0.0.1', '0.0.0.0', '::']) {
      expect([a, allowedAddress(a, { allowLoopback: true })]).toEqual([a, false]);
    }
    expect(() => peers.check('https://10.0.0.1/')).toThrow(/not a public address/);
  });
});

describe('addresses', () => {
  it('public ones pass, loopback only with the test setting', () => {
    for (const a of ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']) expect([a, allowedAddress(a, { allowLoopback: false })]).toEqual([a, true]);
    for (const a of ['127.0.0.1', '127.9.9.9', '::1']) {
      expect([a, allowedAddress(a, { allowLoopback: false })]).toEqual([a, false]);
      expect([a, allowedAddress(a, { allowLoopback: true })]).toEqual([a, true]);
    }
  });
});

describe('BOLT 11 amounts', () => {
  it('reads what a real invoice asks for, in msats', () => {
    expect(decodeBolt11(externalInvoice(48))).toEqual({ network: 'bc', amountMsats: 48_000n });
    expect(decodeBolt11(externalInvoice(1234))).toEqual({ network: 'bc', amountMsats: 1_234_000n });
    expect(decodeBolt11(externalInvoice(0)).amountMsats).toBeUndefined();
  });

  it('refuses an invoice whose amount was edited (the checksum no longer holds)', () => {
    const inv = externalInvoice(10);
    expect(inv.startsWith('lnbc100n1')).toBe(true);
    expect(() => decodeBolt11(inv.replace(/^lnbc100n1/, 'lnbc200n1'))).toThrow(/bech32/);
    expect(() => decodeBolt11('lnbc1')).toThrow();
  });
});
