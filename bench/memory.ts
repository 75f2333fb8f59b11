/**
 * What the gateway holds: its RSS and live heap idle (after start and one paid request) and with N
 * open streams, from heap snapshots (`--heapsnapshot-signal`), summed by constructor.
 *   node bench/memory.ts [--streams 500] [--engine sqlite] [--top 25]
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { rssMb } from './lib/procs.ts';
import { startStack, type Engine } from './lib/setup.ts';

const { values } = parseArgs({ options: { streams: { type: 'string', default: '500' }, engine: { type: 'string', default: 'sqlite' }, top: { type: 'string', default: '25' } } });
const N = Number(values.streams);

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
  nodes: number[];
  strings: string[];
}

/** Live heap bytes in a snapshot, by node type and name (objects by constructor). */
function summarise(file: string): { total: number; by: Map<string, { bytes: number; count: number }> } {
  const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const f = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const [iType, iName, iSize, width] = [f.indexOf('type'), f.indexOf('name'), f.indexOf('self_size'), f.length];
  const by = new Map<string, { bytes: number; count: number }>();
  let total = 0;
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + iType]!]!;
    const size = s.nodes[i + iSize]!;
    total += size;
    const name = type === 'object' || type === 'closure' || type === 'native' ? `${type} ${s.strings[s.nodes[i + iName]!]!.slice(0, 60)}` : type;
    const e = by.get(name) ?? { bytes: 0, count: 0 };
    e.bytes += size;
    e.count++;
    by.set(name, e);
  }
  return { total, by };
}

async function snapshot(pid: number, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + 120_000;
  for (;;) {
    const f = readdirSync(dir).find((x) => x.endsWith('.heapsnapshot') && !before.has(x));
    // Written in one go by the process; wait until its size stops moving.
    if (f) {
      const p = join(dir, f);
      let last = -1;
      for (;;) {
        await new Promise((r) => setTimeout(r, 500));
        const size = readFileSync(p).length;
        if (size === last && size > 0) {
          try {
            JSON.parse(readFileSync(p, 'utf8'));
            return p;
          } catch {
            /* still being written */
          }
        }
        last = size;
      }
    }
    if (Date.now() > deadline) throw new Error('no heap snapshot');
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Anonymous (heap, V8, malloc) against file-backed (the node binary, shared libraries) RSS. */
function rssKinds(pid: number): string {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(st)?.[1] ?? 0) / 1024;
  return `anonymous ${kb('RssAnon').toFixed(1)} MB, files ${kb('RssFile').toFixed(1)} MB`;
}

const BODY = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'Benchmark: answer in ten words.' }], max_tokens: 16, stream: true });
process.env.BENCH_GATEWAY_NODE_ARGS = `${process.env.BENCH_GATEWAY_NODE_ARGS ?? ''} --heapsnapshot-signal=SIGUSR2`;
const stack = await startStack({ bare: false, fundSats: 1_000_000 });
try {
  const gw = await stack.gateway(values.engine as Engine);
  const dir = join(gw.proc.logFile, '..');
  const url = `${gw.proc.url}/v1/chat/completions`;
  const headers = { authorization: `Bearer ${gw.apiKey}`, 'content-type': 'application/json' };
  const idleStart = rssMb([gw.proc.pid]);
  // One paid request, streamed, so what a first request loads (the tokenizer) is counted in.
  const one = await request(url, { method: 'POST', headers, body: BODY });
  await one.body.text();
  const idleRss = rssMb([gw.proc.pid]);
  const idleKinds = rssKinds(gw.proc.pid);
  // Streams held open: the upstream sends its first chunk, then waits a minute per chunk.
  await stack.upstream.ask({ cmd: 'chunkDelay', chunkDelayMs: 60_000 });
  const agent = new Agent({ connections: N + 10 });
  const open: Array<Promise<void>> = [];
  let started = 0;
  const bodies: Array<{ destroy(): void }> = [];
  for (let i = 0; i < N; i++) {
    open.push(
      request(url, { method: 'POST', headers, body: BODY, dispatcher: agent })
        .then((r) => {
          bodies.push(r.body);
          // Counted at its first chunk and read on; leaving the loop would close the stream.
          r.body.once('data', () => started++);
          r.body.resume();
          return new Promise<void>((res) => r.body.once('close', () => res()).once('error', () => res()));
        })
        .catch(() => {}),
    );
  }
  const deadline = Date.now() + 120_000;
  while (started < N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  // RSS before any snapshot: writing one grows the process by far more than a stream does.
  const busyRss = rssMb([gw.proc.pid]);
  const busy = summarise(await snapshot(gw.proc.pid, dir));
  for (const b of bodies) b.destroy();
  await Promise.all(open);
  await agent.close();
  await new Promise((r) => setTimeout(r, 1000));
  const idle = summarise(await snapshot(gw.proc.pid, dir));
  console.log(`engine ${values.engine}; RSS at start ${idleStart.toFixed(1)} MB, after one streamed request ${idleRss.toFixed(1)} MB (${idleKinds})`);
  console.log(`${started} open streams: RSS ${busyRss.toFixed(1)} MB, live heap ${(busy.total / 1048576).toFixed(1)} MB; once closed, live heap ${(idle.total / 1048576).toFixed(1)} MB`);
  console.log(`per open stream: ${((busy.total - idle.total) / started / 1024).toFixed(1)} KiB of live heap, ${(((busyRss - idleRss) * 1048576) / started / 1024).toFixed(1)} KiB of RSS`);
  const top = Number(values.top);
  console.log(`\nlive heap with no stream open, largest ${top}:`);
  for (const [k, v] of [...idle.by].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, top)) console.log(`${(v.bytes / 1048576).toFixed(2).padStart(8)} MB ${String(v.count).padStart(8)}  ${k}`);
  console.log(`\nper open stream, largest ${top}:`);
  const growth = [...busy.by].map(([k, v]) => [k, v.bytes - (idle.by.get(k)?.bytes ?? 0), v.count - (idle.by.get(k)?.count ?? 0)] as const);
  for (const [k, b, c] of growth.sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${(b / started).toFixed(0).padStart(8)} B ${(c / started).toFixed(1).padStart(6)} objs  ${k}`);
  for (const f of readdirSync(dir)) if (f.endsWith('.heapsnapshot')) rmSync(join(dir, f));
  await gw.stop();
} finally {
  await stack.stop();
}
process.exit(0);
