import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onRequests, type RequestTiming } from '../src/upstream/undici-timing.ts';
import { freePort } from './support/ports.ts';

let server: Server;
let origin: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/broken') {
      // Headers, then a body cut short: one timing (the headers'), not a second for the break.
      res.writeHead(200, { 'content-length': '100' });
      res.write('x');
      setImmediate(() => res.destroy());
      return;
    }
    res.writeHead(req.url === '/missing' ? 404 : 200).end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe("timing through undici's diagnostics channels", () => {
  it("times Node's fetch and an undici pool alike, only the requests asked for, once each", async () => {
    const seen: RequestTiming[] = [];
    const stop = onRequests((t) => seen.push(t), (o, path) => o === origin && !path.startsWith('/skip'));
    const pool = new Pool(origin);
    try {
      await (await fetch(`${origin}/v1/keys?x=1`)).text();
      await (await pool.request({ method: 'POST', path: '/missing', body: '{}' })).body.text();
      await (await fetch(`${origin}/skip`)).text();
      await (await pool.request({ method: 'GET', path: '/broken' })).body.text().catch(() => '');
      expect(seen.map(({ seconds, ...t }) => t)).toEqual([
        { origin, path: '/v1/keys?x=1', method: 'GET', status: 200 },
        { origin, path: '/missing', method: 'POST', status: 404 },
        { origin, path: '/broken', method: 'GET', status: 200 },
      ]);
      for (const t of seen) expect(t.seconds).toBeGreaterThan(0);
    } finally {
      stop();
      await pool.close();
    }
    await (await fetch(`${origin}/v1/keys`)).text();
    expect(seen).toHaveLength(3);
  });

  it("reports a request that got no response as 'error'", async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const seen: RequestTiming[] = [];
    const stop = onRequests((t) => seen.push(t), (o) => o === dead || o === origin);
    const pool = new Pool(origin);
    try {
      await expect(fetch(`${dead}/v1/info`)).rejects.toThrow();
      await expect(pool.request({ method: 'GET', path: '/', signal: AbortSignal.abort() })).rejects.toThrow();
      expect(seen.map((t) => [t.origin, t.status])).toEqual([[dead, 'error'], [origin, 'error']]);
    } finally {
      stop();
      await pool.close();
    }
  });
});
