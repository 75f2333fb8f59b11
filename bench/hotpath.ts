/**
 * The balance-key request alone (row c), for profiling the hot path: one stack, several gateways
 * side by side (each engine, with and without the access log, or whatever settings are given),
 * interleaved rounds at 1 and 64 connections, medians of the rounds.
 *   node bench/hotpath.ts [--rounds 5] [--duration 3] [--engines sqlite,postgres] [--variants 'LOG_REQUESTS=false'] [--keys 64]
 * `--keys N` also loads each gateway through N balance keys in turn (the bench's row c uses one,
 * so every request updates that key's row: on PostgreSQL, one row lock for all connections).
 * BENCH_GATEWAY_NODE_ARGS applies to every gateway (e.g. --cpu-prof --cpu-prof-dir=DIR).
 */
import { parseArgs } from 'node:util';
import { runLoad, percentile, sortedCopy } from './lib/load.ts';
import { cpuMs, rssMb } from './lib/procs.ts';
import { startStack, type Engine, type GatewayRun } from './lib/setup.ts';
import { mintBigToken } from './lib/tokens.ts';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    duration: { type: 'string', default: '3' },
    engines: { type: 'string', default: 'sqlite,postgres' },
    variants: { type: 'string', default: '' },
    connections: { type: 'string', default: '1,64' },
    keys: { type: 'string', default: '1' },
  },
});
const rounds = Number(values.rounds);
const duration = Number(values.duration);
const engines = values.engines.split(',') as Engine[];
const conns = values.connections.split(',').map(Number);
const keys = Number(values.keys);
// Each variant is a space-separated list of NAME=value settings; '' is the default gateway.
// ROOT=/path starts the checkout there instead of this one (say, the commit before a change).
const variants = ['', ...values.variants.split(';').map((v) => v.trim()).filter(Boolean)];
const parse = (v: string) => Object.fromEntries(v.split(' ').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));

const BODY = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Benchmark: answer in ten words.' }], max_tokens: 16 });
const stack = await startStack({ bare: true, fundSats: 5_000_000 });
try {
  const targets: Array<{ name: string; url: string; headers?: Record<string, string> | undefined; perRequest?: () => Record<string, string>; pid: number; gw?: GatewayRun }> = [
    { name: 'direct', url: `${stack.upstream.url}/chat/completions`, pid: stack.upstream.pid },
    { name: 'bare proxy', url: `${stack.bare!.url}/chat/completions`, pid: stack.bare!.pid },
  ];
  for (const engine of engines) {
    for (const v of variants) {
      const { ROOT: root, ...settings } = parse(v);
      const gw = await stack.gateway(engine, settings, root);
      targets.push({ name: `${engine}${v ? ` ${v}` : ''}`, url: `${gw.proc.url}/v1/chat/completions`, headers: { authorization: `Bearer ${gw.apiKey}` }, pid: gw.proc.pid, gw });
      console.log(`${engine}${v ? ` ${v}` : ''}: idle RSS ${gw.idleRssMb.toFixed(1)} MB`);
      if (keys > 1) {
        const apiKeys = [gw.apiKey];
        while (apiKeys.length < keys) {
          const token = await mintBigToken(stack.mint.url, stack.mintProxy.url, 100_000);
          const res = await fetch(`${gw.proc.url}/v1/balance/create`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ initial_balance_token: token }) });
          apiKeys.push(((await res.json()) as { api_key: string }).api_key);
        }
        let next = 0;
        const perRequest = () => ({ authorization: `Bearer ${apiKeys[next++ % apiKeys.length]}` });
        targets.push({ name: `${engine}${v ? ` ${v}` : ''}, ${keys} keys`, url: `${gw.proc.url}/v1/chat/completions`, perRequest, pid: gw.proc.pid });
      }
    }
  }
  for (const t of targets) await runLoad({ url: t.url, connections: 16, duration: 1, body: BODY, headers: t.headers, perRequest: t.perRequest });
  const got = new Map<string, { p50: number[]; rps: number[]; cpu: number[] }>();
  for (let r = 0; r < rounds; r++) {
    for (const c of conns) {
      for (const t of targets) {
        const cpu0 = cpuMs([t.pid]);
        const res = await runLoad({ url: t.url, connections: c, duration, body: BODY, headers: t.headers, perRequest: t.perRequest });
        const cpu = cpuMs([t.pid]) - cpu0;
        if (res.non2xx || res.errors) console.log(`${t.name} c${c}: ${res.non2xx} non-2xx, ${res.errors} errors`);
        const k = `c${c} ${t.name}`;
        const a = got.get(k) ?? { p50: [], rps: [], cpu: [] };
        a.p50.push(percentile(sortedCopy(res.latencies), 50));
        a.rps.push((res.ok / res.elapsedMs) * 1000);
        a.cpu.push(res.ok ? cpu / res.ok : 0);
        got.set(k, a);
      }
    }
  }
  const med = (xs: number[]) => percentile(sortedCopy(xs), 50);
  console.log(`\n${rounds} interleaved rounds of ${duration} s; medians`);
  console.log('target'.padEnd(44), 'p50 ms'.padStart(8), 'req/s'.padStart(8), 'CPU ms/req'.padStart(11));
  for (const [k, a] of got) console.log(k.padEnd(44), med(a.p50).toFixed(2).padStart(8), med(a.rps).toFixed(0).padStart(8), med(a.cpu).toFixed(3).padStart(11));
  for (const t of targets) if (t.gw) console.log(`${t.name}: RSS after ${rssMb([t.pid]).toFixed(1)} MB`);
  for (const t of targets) await t.gw?.stop();
} finally {
  await stack.stop();
}
process.exit(0);
