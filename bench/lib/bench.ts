import { copyFileSync, mkdirSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { cpuMs, machineInfo, processTree, RssWatch, sourceVersion } from './procs.ts';
import { runLoad, percentile, sortedCopy, type LoadResult } from './load.ts';
import { startStack, UPSTREAM_CONNECTIONS, type Stack } from './setup.ts';
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
}

const log = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

export async function runBench(o: BenchOptions): Promise<void> {
  const startedAt = new Date();
  const load0 = loadavg();
  const source = sourceVersion();
  log(`setting up (nutshell, counting proxy, upstream double, bare proxy, gateway) on ${cpus().length} cores`);
  const stack = await startStack({ bare: true, fundSats: 5_000_000 });
  let litellm: RunningLiteLLM | undefined;
  let litellmError: string | undefined;
  const stopAll = async () => {
    await litellm?.stop().catch(() => {});
    await stack.stop();
  };
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));
  process.once('SIGTERM', () => void stopAll().then(() => process.exit(143)));
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

    // Tokens: every X-Cashu request spends one, so they are minted before anything is timed.
    const perRow = o.rounds * (o.xcashuC1 + o.xcashuC64) + o.sseXcashuStreams;
    const warm = 40;
    log(`pre-minting ${2 * (perRow + warm)} tokens of ${TOKEN_DENOMS.length} proofs (${TOKEN_SATS} sats), half locked to ${stack.pubkey.slice(0, 12)}…`);
    const t0 = performance.now();
    const plain = await mintTokens(stack.mint.url, stack.mintProxy.url, perRow + warm);
    const locked = await mintTokens(stack.mint.url, stack.mintProxy.url, perRow + warm, stack.pubkey);
    const mintSeconds = (performance.now() - t0) / 1000;
    log(`minted in ${mintSeconds.toFixed(0)} s`);

    const gwPids = () => [stack.gateway.pid];
    const targets: Target[] = [
      { id: 'a', path: '/chat/completions', base: () => stack.upstream.url, pids: () => [stack.upstream.pid] },
      { id: 'b', path: '/chat/completions', base: () => stack.bare!.url, pids: () => [stack.bare!.pid] },
      { id: 'c', path: '/v1/chat/completions', base: () => stack.gateway.url, headers: { authorization: `Bearer ${stack.apiKey}` }, pids: gwPids },
      { id: 'd', path: '/v1/chat/completions', base: () => stack.gateway.url, tokens: plain, pids: gwPids },
      { id: 'e', path: '/v1/chat/completions', base: () => stack.gateway.url, tokens: locked, pids: gwPids },
    ];
    if (litellm) {
      const l = litellm;
      targets.push({ id: 'f', path: '/v1/chat/completions', base: () => l.url, headers: { authorization: `Bearer ${l.masterKey}` }, pids: () => processTree(l.pid) });
    }

    await sanityCheck(stack, targets);

    const acc = new Map<string, Acc>();
    const run = async (t: Target, mode: ModeId, conns: number, spec: { duration?: number; amount?: number; body: string }) => {
      await stack.mintProxy.ask({ cmd: 'reset' });
      const watch = new RssWatch(t.pids);
      watch.start();
      let r: LoadResult;
      let mem: ReturnType<RssWatch['stop']>;
      try {
        r = await runLoad({
          url: t.base() + t.path,
          connections: conns,
          ...spec,
          headers: t.headers,
          perRequest: t.tokens ? () => ({ 'x-cashu': t.tokens!.pop()! }) : undefined,
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
      const key = `${mode} ${t.id}`;
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
      acc.set(key, a);
      const s = sortedCopy(r.latencies);
      log(
        `${mode.padEnd(4)} ${t.id}  ${String(r.ok).padStart(7)} ok ${r.non2xx ? `${JSON.stringify(r.statusCodes)} ` : ''}${r.errors ? `${r.errors} errors ` : ''}` +
          `${((r.ok / r.elapsedMs) * 1000).toFixed(0).padStart(6)}/s  p50 ${percentile(s, 50).toFixed(2)} ms  p99 ${percentile(s, 99).toFixed(2)} ms  ` +
          `mint calls ${calls.total}  rss ${mem.peakRssMb.toFixed(0)} MB`,
      );
    };
    const pause = () => new Promise((r) => setTimeout(r, 300));

    // Warm-up: JIT, connection pools, and the gateway's one-time load of the mint's keysets.
    log('warming up');
    for (const t of targets) {
      if (t.tokens) await runLoad({ url: t.base() + t.path, connections: 4, amount: 20, body: BODY, perRequest: () => ({ 'x-cashu': t.tokens!.pop()! }) });
      else await runLoad({ url: t.base() + t.path, connections: 64, duration: 2, body: BODY, headers: t.headers });
    }

    // Non-streaming rows, interleaved: every round runs each row once, in a rotated order, so
    // drift (and anything else running on the machine) touches every row alike.
    for (let round = 0; round < o.rounds; round++) {
      for (const [mode, conns, amount] of [['c1', 1, o.xcashuC1], ['c64', 64, o.xcashuC64]] as const) {
        const order = rotate(targets, round);
        for (const t of order) {
          await run(t, mode, conns, t.tokens ? { amount, body: BODY } : { duration: o.durationSec, body: BODY });
          await pause();
        }
      }
      log(`round ${round + 1}/${o.rounds} done`);
    }

    // Streaming: N concurrent SSE streams, each 10 content chunks paced by the upstream.
    await stack.upstream.ask({ cmd: 'chunkDelay', chunkDelayMs: o.chunkDelayMs });
    for (let round = 0; round < o.sseRounds; round++) {
      for (const t of rotate(targets, round)) {
        if (t.tokens && round > 0) continue;
        if (t.tokens) await run(t, 'sse', o.sseXcashuStreams, { amount: o.sseXcashuStreams, body: SSE_BODY });
        // LiteLLM finishes none of 1,000 concurrent streams within a few seconds: a timed run would
        // only say "0". It gets a fixed 1,000 streams per round instead, and as long as it needs.
        else if (t.id === 'f') await run(t, 'sse', o.sseStreams, { amount: o.sseStreams, body: SSE_BODY });
        else await run(t, 'sse', o.sseStreams, { duration: o.sseDurationSec, body: SSE_BODY });
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    await stack.upstream.ask({ cmd: 'chunkDelay', chunkDelayMs: 0 });

    const rows: RowResult[] = [];
    for (const [key, a] of acc) {
      const [mode, id] = key.split(' ') as [ModeId, RowId];
      const s = sortedCopy(a.latencies);
      rows.push({
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
        peakRssMb: a.peakRssMb,
        cpuMsPerRequest: a.ok ? a.cpuMs / a.ok : 0,
      });
    }
    const results: BenchResults = {
      kind: o.peers ? 'peers' : 'bench',
      date: startedAt.toISOString(),
      finished: new Date().toISOString(),
      source,
      machine: { ...machineInfo(), loadavgBefore: load0 },
      gateway: { idleRssMb: stack.idleRssMb, env: redactEnv(stack.gatewayEnv) },
      options: { ...o, litellmSseFixed: true, upstreamConnections: UPSTREAM_CONNECTIONS, tokenSats: TOKEN_SATS, tokenProofs: TOKEN_DENOMS.length, mintSeconds },
      litellm: litellm ? { version: litellm.version, workers: litellm.workers } : o.peers ? { error: litellmError ?? 'not started' } : undefined,
      rows,
    };
    if (o.write) {
      const { json, md } = writeResults(results);
      log(`wrote ${json} and ${md}`);
    }
  } finally {
    keepGatewayLog(stack.gateway.logFile, startedAt);
    await stopAll();
  }
}

/** The gateway's warnings and errors outlive the temporary directory, next to the results (git-ignored). */
function keepGatewayLog(file: string, startedAt: Date): void {
  try {
    mkdirSync(join(import.meta.dirname, '..', 'results'), { recursive: true });
    copyFileSync(file, join(import.meta.dirname, '..', 'results', `${startedAt.toISOString().slice(0, 10)}-gateway.log`));
  } catch {
    /* nothing to keep */
  }
}

function redactEnv(env: Record<string, string>): Record<string, string> {
  const out = { ...env };
  if (out.CASHU_P2PK_PRIVKEY) out.CASHU_P2PK_PRIVKEY = '(the test suite\'s TEST_P2PK_PRIVKEY)';
  return out;
}

/** Waits (at most 2 minutes) until the processes use under 5% of a core over half a second. */
async function quiesce(pids: number[]): Promise<void> {
  for (let i = 0; i < 240; i++) {
    const before = cpuMs(pids);
    await new Promise((r) => setTimeout(r, 500));
    if (cpuMs(pids) - before < 25) return;
  }
}

function rotate<T>(xs: T[], k: number): T[] {
  const n = k % xs.length;
  return [...xs.slice(n), ...xs.slice(0, n)];
}

/** One request of each kind per row, checked for what a client must get back, before timing. */
async function sanityCheck(stack: Stack, targets: Target[]): Promise<void> {
  for (const t of targets) {
    for (const body of [BODY, SSE_BODY]) {
      const headers: Record<string, string> = { 'content-type': 'application/json', ...t.headers };
      if (t.tokens) headers['x-cashu'] = t.tokens.pop()!;
      const res = await fetch(t.base() + t.path, { method: 'POST', headers, body });
      const text = await res.text();
      const stream = body === SSE_BODY;
      const okBody = stream ? text.includes('data: [DONE]') && text.includes('"usage"') : text.includes('"usage"');
      if (res.status !== 200 || !okBody) throw new Error(`sanity check failed for row ${t.id} (${stream ? 'stream' : 'json'}): ${res.status} ${text.slice(0, 300)}`);
      if (['c', 'd', 'e'].includes(t.id) && !text.includes('total_msats')) throw new Error(`row ${t.id}: no cost in the response`);
    }
  }
  void stack;
}
