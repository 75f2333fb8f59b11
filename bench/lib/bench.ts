import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { cpuMs, machineInfo, processTree, RssWatch, sourceVersion } from './procs.ts';
import { runLoad, percentile, sortedCopy, type LoadResult } from './load.ts';
import { startStack, UPSTREAM_CONNECTIONS, type Engine, type GatewayRun, type Stack } from './setup.ts';
import { mintTokens, TOKEN_DENOMS, TOKEN_SATS } from './tokens.ts';
import { startLiteLLM, type RunningLiteLLM } from './litellm.ts';
import { writeResults, type BenchResults, type RowResult, type ModeId, type RowId } from './report.ts';

export interface BenchOptions {
  peers: boolean;
  rounds: number;
  durationSec: number;
  xcashuC1: number;
  xcashuC64: number;
  sseStreams: number;
  sseXcashuStreams: number;
  sseDurationSec: number;
  sseRounds: number;
  chunkDelayMs: number;
  litellmWorkers: number;
  engines: Engine[];
  /** Each X-Cashu row runs once per delay: every call to the mint is held this long. */
  mintDelays: number[];
  write: boolean;
}

const CHAT = { model: 'gpt-test', messages: [{ role: 'user', content: 'Benchmark: answer in ten words.' }], max_tokens: 16 };
const BODY = JSON.stringify(CHAT);
// Direct and bare-proxy rows ask for the usage chunk themselves; the gateway adds it anyway.
const SSE_BODY = JSON.stringify({ ...CHAT, stream: true, stream_options: { include_usage: true } });

export const ROW_LABELS: Record<RowId, string> = {
  a: '(a) upstream direct',
  b: '(b) bare Fastify + undici proxy',
  c: '(c) gateway, balance key',
  d: '(d) gateway, X-Cashu (swap)',
  e: '(e) gateway, X-Cashu P2PK-locked',
  f: '(f) LiteLLM proxy',
};

interface Target {
  id: RowId;
  path: string;
  base: () => string;
  headers?: Record<string, string>;
  /** X-Cashu rows: one token per request, and a fixed number of requests. */
  tokens?: string[];
  pids: () => number[];
}

interface Acc extends LoadResult {
  runs: number;
  mintCalls: number;
  mintCallsByPath: Record<string, number>;
  peakRssMb: number;
  cpuMs: number;
  /** Rows d and e at 1 connection: the gateway's own count of change swapped on the request path. */
  changeSwaps?: number;
}

const log = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

export async function runBench(o: BenchOptions): Promise<void> {
  const startedAt = new Date();
  const load0 = loadavg();
  const source = sourceVersion();
  log(`setting up (nutshell, counting proxy, upstream double, bare proxy) on ${cpus().length} cores`);
  const stack = await startStack({ bare: true, fundSats: 5_000_000 });
  let litellm: RunningLiteLLM | undefined;
  let litellmError: string | undefined;
  const stopAll = async () => {
    await litellm?.stop().catch(() => {});
    await stack.stop();
  };
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));
  process.once('SIGTERM', () => void stopAll().then(() => process.exit(143)));
  const logs: Array<{ file: string; engine: Engine }> = [];
  try {
    if (o.peers) {
      log(`starting LiteLLM's proxy (${o.litellmWorkers} worker${o.litellmWorkers > 1 ? 's' : ''})`);
      try {
        litellm = await startLiteLLM(stack.upstream.url, stack.dir, o.litellmWorkers);
        log(`LiteLLM ${litellm.version} on ${litellm.url}`);
      } catch (e) {
        litellmError = (e as Error).message;
        log(`LiteLLM could not be started: ${litellmError.split('\n')[0]}`);
      }
    }

    const acc = new Map<string, Acc>();
    const gateways: NonNullable<BenchResults['gateways']> = [];
    let mintSeconds = 0;
    for (const engine of o.engines) {
      log(`starting the gateway as \`npm start\` runs it, ledger on ${engine}`);
      const gw = await stack.gateway(engine);
      logs.push({ file: gw.proc.logFile, engine });
      gateways.push({ engine, idleRssMb: gw.idleRssMb, env: gw.env });
      try {
        mintSeconds += await measureEngine(o, stack, gw, engine === o.engines[0] ? litellm : undefined, acc);
      } finally {
        await gw.stop();
      }
    }

    const rows: RowResult[] = [];
    for (const [key, a] of acc) {
      const [engine, delay, mode, id] = key.split(' ') as [Engine, string, ModeId, RowId];
      const s = sortedCopy(a.latencies);
      const mintDelayMs = Number(delay);
      rows.push({
        engine,
        mintDelayMs,
        mode,
        row: id,
        label: ROW_LABELS[id],
        runs: a.runs,
        requests: a.ok,
        non2xx: a.non2xx,
        errors: a.errors,
        timeouts: a.timeouts,
        statusCodes: a.statusCodes,
        seconds: a.elapsedMs / 1000,
        rps: (a.ok / a.elapsedMs) * 1000,
        p50: percentile(s, 50),
        p90: percentile(s, 90),
        p99: percentile(s, 99),
        mintCalls: a.mintCalls,
        mintCallsPerRequest: a.ok + a.non2xx ? a.mintCalls / (a.ok + a.non2xx) : 0,
        mintCallsByPath: a.mintCallsByPath,
        // Against the same row's median with the mint on loopback (a swap takes tens of ms even
        // there): a response slower by half a delay or more waited on the mint once, by one and
        // a half delays or more, twice. At 1 connection nothing else makes it wait.
        ...(mintDelayMs > 0 && (id === 'd' || id === 'e') ? waits(a.latencies, acc.get(`${engine} 0 ${mode} ${id}`)?.latencies, mintDelayMs) : {}),
        ...(a.changeSwaps !== undefined ? { changeSwaps: a.changeSwaps } : {}),
        peakRssMb: a.peakRssMb,
        cpuMsPerRequest: a.ok ? a.cpuMs / a.ok : 0,
      });
    }
    // A run that writes nothing still says what the table would: latency-counted waits beside the gateway's own count.
    for (const x of rows) {
      if (x.mode === 'c1' && x.changeSwaps !== undefined && x.waitedOnMint !== undefined) {
        log(`${x.engine} ${x.row} mint +${x.mintDelayMs} ms: waited on the mint (by latency) ${x.waitedOnMint} of ${x.requests}, change swapped on the request path ${x.changeSwaps}`);
      }
    }
    const results: BenchResults = {
      kind: o.peers ? 'peers' : 'bench',
      date: startedAt.toISOString(),
      finished: new Date().toISOString(),
      source,
      machine: { ...machineInfo(), loadavgBefore: load0 },
      gateway: gateways[0],
      gateways,
      options: { ...o, litellmSseFixed: true, upstreamConnections: UPSTREAM_CONNECTIONS, tokenSats: TOKEN_SATS, tokenProofs: TOKEN_DENOMS.length, mintSeconds, shipped: true },
      litellm: litellm ? { version: litellm.version, workers: litellm.workers } : o.peers ? { error: litellmError ?? 'not started' } : undefined,
      rows,
    };
    if (o.write) {
      const { json, md } = writeResults(results);
      log(`wrote ${json} and ${md}`);
    }
  } finally {
    for (const l of logs) keepGatewayLog(l.file, startedAt, l.engine);
    await stopAll();
  }
}

/** Every row against one gateway (one ledger engine); returns the seconds spent minting its tokens. */
async function measureEngine(o: BenchOptions, stack: Stack, gw: GatewayRun, litellm: RunningLiteLLM | undefined, acc: Map<string, Acc>): Promise<number> {
  const engine = gw.engine;
  // Tokens: every X-Cashu request spends one, so they are minted before anything is timed; the
  // locked ones to this gateway's own key.
  const perRow = o.rounds * (o.xcashuC1 + o.xcashuC64) * o.mintDelays.length + o.sseXcashuStreams;
  const warm = 40;
  log(`pre-minting ${2 * (perRow + warm)} tokens of ${TOKEN_DENOMS.length} proofs (${TOKEN_SATS} sats), half locked to ${gw.pubkey.slice(0, 12)}…`);
  const t0 = performance.now();
  const plain = await mintTokens(stack.mint.url, stack.mintProxy.url, perRow + warm);
  const locked = await mintTokens(stack.mint.url, stack.mintProxy.url, perRow + warm, gw.pubkey);
  const mintSeconds = (performance.now() - t0) / 1000;
  log(`minted in ${mintSeconds.toFixed(0)} s`);

  const gwPids = () => [gw.proc.pid];
  const targets: Target[] = [
    { id: 'a', path: '/chat/completions', base: () => stack.upstream.url, pids: () => [stack.upstream.pid] },
    { id: 'b', path: '/chat/completions', base: () => stack.bare!.url, pids: () => [stack.bare!.pid] },
    { id: 'c', path: '/v1/chat/completions', base: () => gw.proc.url, headers: { authorization: `Bearer ${gw.apiKey}` }, pids: gwPids },
    { id: 'd', path: '/v1/chat/completions', base: () => gw.proc.url, tokens: plain, pids: gwPids },
    { id: 'e', path: '/v1/chat/completions', base: () => gw.proc.url, tokens: locked, pids: gwPids },
  ];
  if (litellm) {
    const l = litellm;
    targets.push({ id: 'f', path: '/v1/chat/completions', base: () => l.url, headers: { authorization: `Bearer ${l.masterKey}` }, pids: () => processTree(l.pid) });
  }

  await sanityCheck(targets);

  const run = async (t: Target, mode: ModeId, conns: number, delay: number, spec: { duration?: number; amount?: number; body: string }) => {
    await stack.mintProxy.ask({ cmd: 'delay', delayMs: delay });
    await stack.mintProxy.ask({ cmd: 'reset' });
    // What the gateway itself counts, read before the row's CPU and RSS are watched.
    const counted = t.tokens !== undefined && mode === 'c1';
    const swapsBefore = counted ? await changeSwapsOf(gw.proc.url) : 0;
    const watch = new RssWatch(t.pids);
    watch.start();
    let r: LoadResult;
    let mem: ReturnType<RssWatch['stop']>;
    try {
      r = await runLoad({
        url: t.base() + t.path,
        connections: spec.amount ? Math.min(conns, spec.amount) : conns,
        ...spec,
        headers: t.headers,
        perRequest: t.tokens ? () => ({ 'x-cashu': spend(t.tokens!) }) : undefined,
        // X-Cashu rows queue behind the gateway's payment work: give them time rather than retries.
        timeoutSec: t.tokens || t.id === 'f' ? 180 : mode === 'sse' ? 60 : 30,
      });
    } finally {
      mem = watch.stop();
    }
    // Requests the client gave up on (a run's end, a timeout) may still be running in the process
    // under test (a swap, a recovery, a stream): let them end inside this row, so their mint
    // calls and CPU are not charged to the next row.
    await quiesce(t.pids());
    const calls = await stack.mintProxy.ask<{ total: number; byPath: Record<string, number> }>({ cmd: 'calls' });
    const swaps = counted ? (await changeSwapsOf(gw.proc.url)) - swapsBefore : undefined;
    const key = `${engine} ${delay} ${mode} ${t.id}`;
    const a = acc.get(key) ?? {
      runs: 0, ok: 0, non2xx: 0, errors: 0, timeouts: 0, elapsedMs: 0, latencies: [], statusCodes: {},
      mintCalls: 0, mintCallsByPath: {}, peakRssMb: 0, cpuMs: 0,
    };
    a.runs++;
    a.ok += r.ok;
    a.non2xx += r.non2xx;
    a.errors += r.errors;
    a.timeouts += r.timeouts;
    a.elapsedMs += r.elapsedMs;
    for (const x of r.latencies) a.latencies.push(x);
    for (const [k, v] of Object.entries(r.statusCodes)) a.statusCodes[k] = (a.statusCodes[k] ?? 0) + v;
    a.mintCalls += calls.total;
    for (const [k, v] of Object.entries(calls.byPath)) a.mintCallsByPath[k] = (a.mintCallsByPath[k] ?? 0) + v;
    a.peakRssMb = Math.max(a.peakRssMb, mem.peakRssMb);
    a.cpuMs += mem.cpuMs;
    if (swaps !== undefined) a.changeSwaps = (a.changeSwaps ?? 0) + swaps;
    acc.set(key, a);
    const s = sortedCopy(r.latencies);
    log(
      `${engine.padEnd(8)} ${mode.padEnd(4)} ${t.id}${delay ? ` mint +${delay} ms` : ''}  ${String(r.ok).padStart(7)} ok ${r.non2xx ? `${JSON.stringify(r.statusCodes)} ` : ''}${r.errors ? `${r.errors} errors ` : ''}` +
        `${((r.ok / r.elapsedMs) * 1000).toFixed(0).padStart(6)}/s  p50 ${percentile(s, 50).toFixed(2)} ms  p99 ${percentile(s, 99).toFixed(2)} ms  ` +
        `mint calls ${calls.total}${swaps !== undefined ? `  change swaps ${swaps}` : ''}  rss ${mem.peakRssMb.toFixed(0)} MB`,
    );
  };
  const pause = () => new Promise((r) => setTimeout(r, 300));

  // Warm-up: JIT, connection pools, and the gateway's one-time load of the mint's keysets.
  log('warming up');
  for (const t of targets) {
    if (t.tokens) await runLoad({ url: t.base() + t.path, connections: 4, amount: 20, body: BODY, perRequest: () => ({ 'x-cashu': spend(t.tokens!) }) });
    else await runLoad({ url: t.base() + t.path, connections: 64, duration: 2, body: BODY, headers: t.headers });
  }

  // Non-streaming rows, interleaved: every round runs each row once, in a rotated order, so
  // drift (and anything else running on the machine) touches every row alike. The X-Cashu rows
  // run once per mint delay; the others never call the mint.
  const slots = targets.flatMap((t) => (t.tokens ? o.mintDelays.map((d) => ({ t, d })) : [{ t, d: 0 }]));
  for (let round = 0; round < o.rounds; round++) {
    for (const [mode, conns, amount] of [['c1', 1, o.xcashuC1], ['c64', 64, o.xcashuC64]] as const) {
      for (const { t, d } of rotate(slots, round)) {
        await run(t, mode, conns, d, t.tokens ? { amount, body: BODY } : { duration: o.durationSec, body: BODY });
        await pause();
      }
    }
    log(`${engine}: round ${round + 1}/${o.rounds} done`);
  }

  // Streaming: N concurrent SSE streams, each 10 content chunks paced by the upstream.
  await stack.upstream.ask({ cmd: 'chunkDelay', chunkDelayMs: o.chunkDelayMs });
  for (let round = 0; round < o.sseRounds; round++) {
    for (const t of rotate(targets, round)) {
      if (t.tokens && round > 0) continue;
      if (t.tokens) await run(t, 'sse', o.sseXcashuStreams, 0, { amount: o.sseXcashuStreams, body: SSE_BODY });
      // LiteLLM finishes none of 1,000 concurrent streams within a few seconds: a timed run would
      // only say "0". It gets a fixed 1,000 streams per round instead, and as long as it needs.
      else if (t.id === 'f') await run(t, 'sse', o.sseStreams, 0, { amount: o.sseStreams, body: SSE_BODY });
      else await run(t, 'sse', o.sseStreams, 0, { duration: o.sseDurationSec, body: SSE_BODY });
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  await stack.upstream.ask({ cmd: 'chunkDelay', chunkDelayMs: 0 });
  await stack.mintProxy.ask({ cmd: 'delay', delayMs: 0 });
  return mintSeconds;
}

/**
 * The gateway's warnings and errors outlive the temporary directory, next to the results
 * (git-ignored). Its access lines (one per request, at info) are left out: they are millions.
 */
function keepGatewayLog(file: string, startedAt: Date, engine: Engine): void {
  try {
    mkdirSync(join(import.meta.dirname, '..', 'results'), { recursive: true });
    const kept = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => !/"level":(10|20|30),/.test(l))
      .join('\n');
    writeFileSync(join(import.meta.dirname, '..', 'results', `${startedAt.toISOString().slice(0, 10)}-gateway-${engine}.log`), kept);
  } catch {
    /* nothing to keep */
  }
}

/** Waits (at most 2 minutes) until the processes use under 5% of a core over half a second. */
async function quiesce(pids: number[]): Promise<void> {
  for (let i = 0; i < 240; i++) {
    const before = cpuMs(pids);
    await new Promise((r) => setTimeout(r, 500));
    if (cpuMs(pids) - before < 25) return;
  }
}

function waits(latencies: number[], loopback: number[] | undefined, delay: number): { waitedOnMint: number; waitedTwice: number } {
  const base = loopback?.length ? percentile(sortedCopy(loopback), 50) : 0;
  return {
    waitedOnMint: latencies.filter((x) => x - base >= delay / 2).length,
    waitedTwice: latencies.filter((x) => x - base >= 1.5 * delay).length,
  };
}

/**
 * The gateway's gateway_change_swaps_total, all mints: change the float could not pay, swapped on
 * the request path. Unlike a latency, a stall of the event loop cannot pass for one.
 */
async function changeSwapsOf(gatewayUrl: string): Promise<number> {
  const text = await (await fetch(`${gatewayUrl}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^gateway_change_swaps_total(?:\{[^}]*\})? (\S+)$/gm)) n += Number(m[1]);
  return n;
}

/** The next pre-minted token; running out is the bench's own miscount, never a gateway's refusal. */
function spend(tokens: string[]): string {
  const t = tokens.pop();
  if (t === undefined) throw new Error('the bench ran out of pre-minted tokens');
  return t;
}

function rotate<T>(xs: T[], k: number): T[] {
  const n = k % xs.length;
  return [...xs.slice(n), ...xs.slice(0, n)];
}

/** One request of each kind per row, checked for what a client must get back, before timing. */
async function sanityCheck(targets: Target[]): Promise<void> {
  for (const t of targets) {
    for (const body of [BODY, SSE_BODY]) {
      const headers: Record<string, string> = { 'content-type': 'application/json', ...t.headers };
      if (t.tokens) headers['x-cashu'] = spend(t.tokens);
      const res = await fetch(t.base() + t.path, { method: 'POST', headers, body });
      const text = await res.text();
      const stream = body === SSE_BODY;
      const okBody = stream ? text.includes('data: [DONE]') && text.includes('"usage"') : text.includes('"usage"');
      if (res.status !== 200 || !okBody) throw new Error(`sanity check failed for row ${t.id} (${stream ? 'stream' : 'json'}): ${res.status} ${text.slice(0, 300)}`);
      if (['c', 'd', 'e'].includes(t.id) && !text.includes('total_msats')) throw new Error(`row ${t.id}: no cost in the response`);
    }
  }
}
