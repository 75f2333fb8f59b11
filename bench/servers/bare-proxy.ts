/**
 * The floor: a bare Fastify + undici pass-through proxy with the gateway's HTTP stack and nothing
 * else (no payment, no token counting, no ledger). It parses the JSON body and forwards it
 * re-serialised, as the gateway does, through an undici Pool sized like the gateway's, and pipes
 * the upstream's answer (JSON or SSE) back unchanged.
 */
import Fastify from 'fastify';
import { Pool } from 'undici';

const upstream = new URL(process.env.UPSTREAM_BASE_URL!);
const prefix = upstream.pathname.replace(/\/+$/, '');
const pool = new Pool(upstream.origin, {
  connections: Number(process.env.UPSTREAM_CONNECTIONS ?? 2048),
  pipelining: 1,
  keepAliveTimeout: 30_000,
});
const app = Fastify({ logger: false, bodyLimit: 10 * 1024 * 1024, requestTimeout: 0 });

app.post('/v1/chat/completions', async (req, reply) => {
  const ac = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  const res = await pool.request({
    method: 'POST',
    path: `${prefix}/chat/completions`,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(req.body),
    signal: ac.signal,
  });
  reply.code(res.statusCode);
  const type = res.headers['content-type'];
  if (typeof type === 'string') reply.header('content-type', type);
  if (typeof type === 'string' && type.startsWith('text/event-stream')) reply.header('cache-control', 'no-cache');
  return reply.send(res.body);
});

await app.listen({ port: 0, host: '127.0.0.1' });
const { port } = app.server.address() as { port: number };
process.on('disconnect', () => void app.close().then(() => pool.close()).then(() => process.exit(0)));
process.send!({ ready: true, url: `http://127.0.0.1:${port}/v1` });
