import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..', '..');
const RESULTS = join(ROOT, 'bench', 'results');
const MD = join(ROOT, 'BENCHMARKS.md');

export type ModeId = 'c1' | 'c64' | 'sse';
export type RowId = 'a' | 'b' | 'c' | 'd' | 'e' | 'f';

export type EngineId = 'sqlite' | 'postgres';

export interface RowResult {
  /** The gateway's ledger engine (runs before 2026-12-02 measured SQLite only and do not say). */
  engine?: EngineId;
  /** Every call to the mint held this long during the row (0 or absent: loopback). */
  mintDelayMs?: number;
  /** X-Cashu rows with a mint delay: responses that took at least one delay, and at least two. */
  waitedOnMint?: number;
  waitedTwice?: number;
  /** Rows d and e at 1 connection (from 2026-12-07 on): change the gateway swapped on the request path, from its /metrics. */
  changeSwaps?: number;
  mode: ModeId;
  row: RowId;
  label: string;
  runs: number;
  requests: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  seconds: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  mintCalls: number;
  mintCallsPerRequest: number;
  mintCallsByPath: Record<string, number>;
  /** Of the process under test: the upstream for (a), the bare proxy for (b), the gateway for (c–e), LiteLLM's process tree for (f). */
  peakRssMb: number;
  cpuMsPerRequest: number;
}

export interface BenchResults {
  kind: 'bench' | 'peers';
  date: string;
  finished: string;
  /** The commit measured (recorded from 2026-11-21 06:15 on). */
  source?: { commit: string; dirty: boolean };
  machine: Record<string, unknown> & { cores: number; node: string; cpuModel: string };
  options: Record<string, unknown>;
  gateway?: { idleRssMb: number; env: Record<string, string> };
  /** One per ledger engine measured (from 2026-12-02 on). */
  gateways?: Array<{ engine: EngineId; idleRssMb: number; env: Record<string, string> }>;
  litellm?: { version?: string; workers?: number; error?: string } | undefined;
  rows: RowResult[];
}

export interface SoakResults {
  kind: 'soak';
  date: string;
  finished: string;
  source?: { commit: string; dirty: boolean };
  machine: Record<string, unknown> & { cores: number; node: string; cpuModel: string };
  options: Record<string, unknown>;
  samples: Array<{ t: number; rssMb: number; ok: number; non2xx: number; errors: number; cpuPct: number }>;
  summary: {
    requests: number;
    non2xx: number;
    errors: number;
    rps: number;
    warmupSec: number;
    rssAtWarmupMb: number;
    rssFinalMb: number;
    rssPeakAfterWarmupMb: number;
    growthFinalPct: number;
    growthPeakPct: number;
    slopeMbPerMin: number;
    rssAfterIdleMb: number;
  };
}

type AnyResults = BenchResults | SoakResults;

function commitNote(src: { commit: string; dirty: boolean } | undefined): string {
  if (!src) return 'commit not recorded';
  return `gateway at commit ${src.commit.slice(0, 7)}${src.dirty ? ' plus uncommitted changes to src/' : ''}`;
}

const MODE_TITLE: Record<ModeId, string> = {
  c1: 'Non-streaming, 1 connection',
  c64: 'Non-streaming, 64 connections',
  sse: 'SSE',
};

export function writeResults(r: AnyResults): { json: string; md: string } {
  mkdirSync(RESULTS, { recursive: true });
  const day = r.date.slice(0, 10);
  const json = join(RESULTS, `${day}${r.kind === 'bench' ? '' : `-${r.kind}`}.json`);
  writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(MD, renderMarkdown(loadAll()));
  return { json, md: MD };
}

/** Regenerates BENCHMARKS.md from the JSON already in bench/results/. */
export function renderBenchmarks(): string {
  writeFileSync(MD, renderMarkdown(loadAll()));
  return MD;
}

function loadAll(): AnyResults[] {
  const out: AnyResults[] = [];
  for (const f of readdirSync(RESULTS).filter((x) => x.endsWith('.json')).sort()) {
    try {
      const r = JSON.parse(readFileSync(join(RESULTS, f), 'utf8')) as AnyResults;
      // JSON has no NaN: a row that completed nothing has null percentiles.
      if (r.kind !== 'soak') for (const row of r.rows) for (const k of ['p50', 'p90', 'p99'] as const) row[k] ??= NaN;
      out.push(r);
    } catch {
      /* not ours */
    }
  }
  return out.sort((a, b) => a.date.localeCompare(b.date));
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '–');
const f0 = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–');
const signed = (x: number) => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${x.toFixed(2)}` : '–');

const engineOf = (x: RowResult): EngineId => x.engine ?? 'sqlite';
const delayOf = (x: RowResult): number => x.mintDelayMs ?? 0;
const ENGINE_NAME: Record<EngineId, string> = { sqlite: 'SQLite', postgres: 'PostgreSQL' };

function get(r: BenchResults, mode: ModeId, row: RowId, engine: EngineId = 'sqlite', delay = 0): RowResult | undefined {
  return r.rows.find((x) => x.mode === mode && x.row === row && engineOf(x) === engine && delayOf(x) === delay);
}

function enginesOf(r: BenchResults): EngineId[] {
  return [...new Set(r.rows.map(engineOf))];
}

function delaysOf(r: BenchResults): number[] {
  return [...new Set(r.rows.map(delayOf))].sort((a, b) => a - b);
}

function waited(x: RowResult): string {
  if (x.waitedOnMint === undefined || x.mode !== 'c1') return '–';
  return `${x.waitedOnMint} / ${x.waitedTwice ?? 0} of ${x.requests}`;
}

function swapped(x: RowResult): string {
  return x.changeSwaps === undefined || x.mode !== 'c1' ? '–' : `${x.changeSwaps} of ${x.requests}`;
}

/** More req/s and a lower p50; a peer that completed nothing has no p50 to beat. */
function fasterThan(x: RowResult, peer: RowResult): boolean {
  return x.rps > peer.rps && (x.p50 < peer.p50 || (peer.requests === 0 && x.requests > 0));
}

export interface TargetCheck {
  target: string;
  measured: string;
  met: boolean | undefined;
}

export function checkTargets(r: BenchResults, soak?: SoakResults, peersRun?: BenchResults): TargetCheck[] {
  const out: TargetCheck[] = [];
  const engines = enginesOf(r);
  for (const engine of engines) {
    const on = engines.length > 1 || engine !== 'sqlite' ? ` (${ENGINE_NAME[engine]})` : '';
    const c1c = get(r, 'c1', 'c', engine);
    const c1a = get(r, 'c1', 'a', engine);
    if (c1c && c1a) {
      const added = c1c.p50 - c1a.p50;
      out.push({ target: `Balance key: p50 added over direct ≤ 0.5 ms at 1 connection${on}`, measured: `${signed(added)} ms`, met: added <= 0.5 });
    }
    const x = get(r, 'c64', 'c', engine);
    const b = get(r, 'c64', 'b', engine);
    if (x && b) {
      const ratio = x.rps / b.rps;
      out.push({ target: `Balance key: throughput ≥ 0.8× the bare proxy at 64 connections${on}`, measured: `${ratio.toFixed(2)}× (${f0(x.rps)} vs ${f0(b.rps)} req/s)`, met: ratio >= 0.8 });
    }
    const slow = (row: RowId) => r.rows.filter((y) => y.row === row && y.mode === 'c1' && engineOf(y) === engine && y.waitedOnMint !== undefined);
    const d = slow('d');
    if (d.length) {
      const twice = d.reduce((s, y) => s + (y.waitedTwice ?? 0), 0);
      const n = d.reduce((s, y) => s + y.requests, 0);
      const per = d.map((y) => `+${delayOf(y)} ms: ${y.waitedTwice} of ${y.requests}`).join('; ');
      out.push({ target: `X-Cashu with swap: no request waits on more than one mint round trip (1 connection)${on}`, measured: `${twice} of ${n} waited on two (${per})`, met: twice === 0 });
    }
    const e = slow('e');
    if (e.length) {
      const once = e.reduce((s, y) => s + (y.waitedOnMint ?? 0), 0);
      const n = e.reduce((s, y) => s + y.requests, 0);
      const per = e.map((y) => `+${delayOf(y)} ms: ${y.waitedOnMint} of ${y.requests}`).join('; ');
      const counted = e.filter((y) => y.changeSwaps !== undefined);
      const swaps = counted.length ? `; change swapped on the request path: ${counted.reduce((s, y) => s + y.changeSwaps!, 0)}` : '';
      out.push({ target: `P2PK-locked X-Cashu: no request waits on the mint (1 connection)${on}`, measured: `${once} of ${n} waited (${per})${swaps}`, met: once === 0 });
    }
    const c1e = get(r, 'c1', 'e', engine);
    if (c1e && c1a) {
      const added = c1e.p50 - c1a.p50;
      out.push({ target: `P2PK-locked X-Cashu (8 proofs): p50 added ≤ 2 ms (1 connection, mint on loopback)${on}`, measured: `${signed(added)} ms`, met: added <= 2 });
    }
    const sseC = get(r, 'sse', 'c', engine);
    if (sseC) {
      const n = r.options.sseStreams as number;
      out.push({ target: `${f0(n)} concurrent streams: gateway RSS ≤ 200 MB${on}`, measured: `${f0(sseC.peakRssMb)} MB peak, balance key`, met: sseC.peakRssMb <= 200 });
    }
    const idle = r.gateways?.find((g) => g.engine === engine)?.idleRssMb ?? (engine === 'sqlite' ? r.gateway?.idleRssMb : undefined);
    if (idle !== undefined) out.push({ target: `Idle after start: gateway RSS ≤ 80 MB${on}`, measured: `${f0(idle)} MB`, met: idle <= 80 });
  }
  if (soak) {
    out.push({
      target: 'Soak: RSS growth ≤ 10% after warm-up',
      measured: `${signed(soak.summary.growthFinalPct)}% at the end, ${signed(soak.summary.growthPeakPct)}% at peak (${soak.date.slice(0, 10)}, ${f0((soak.options.minutes as number) ?? 0)} min)`,
      met: soak.summary.growthFinalPct <= 10 && soak.summary.growthPeakPct <= 10,
    });
  } else {
    out.push({ target: 'Soak: RSS growth ≤ 10% after warm-up', measured: 'no soak run yet (`npm run bench:soak`)', met: undefined });
  }
  // The LiteLLM comparison comes from this run if it had row f, else from the latest peers run.
  const pr = r.rows.some((x) => x.row === 'f') ? r : peersRun;
  const from = pr && pr !== r ? ` (\`bench:peers\` run of ${pr.date.slice(0, 16).replace('T', ' ')} UTC)` : '';
  if (pr) {
    const r = pr;
    const lost: string[] = [];
    let compared = 0;
    for (const mode of ['c1', 'c64', 'sse'] as const) {
      const f = get(r, mode, 'f');
      if (!f) continue;
      for (const row of ['c', 'd', 'e'] as const) {
        const x = get(r, mode, row);
        if (!x) continue;
        // Streams are compared at the same concurrency only.
        if (mode === 'sse' && row !== 'c' && r.options.sseXcashuStreams !== r.options.sseStreams) continue;
        compared++;
        if (!fasterThan(x, f)) lost.push(`${mode} ${row}`);
      }
    }
    out.push({
      target: "Faster than LiteLLM's proxy on every row (higher req/s and lower p50)",
      measured: (lost.length ? `slower on ${lost.length} of ${compared}: ${lost.join(', ')}` : `faster on all ${compared}`) + from,
      met: lost.length === 0 && compared > 0,
    });
  } else {
    out.push({ target: "Faster than LiteLLM's proxy on every row", measured: r.litellm?.error ? `LiteLLM failed: ${r.litellm.error.split('\n')[0]}` : 'not measured in this run (`npm run bench:peers`)', met: undefined });
  }
  return out;
}

function mainTable(r: BenchResults): string[] {
  const lines: string[] = [];
  const engines = enginesOf(r);
  for (const engine of engines) {
    for (const mode of ['c1', 'c64', 'sse'] as const) {
      const rows = r.rows
        .filter((x) => x.mode === mode && engineOf(x) === engine)
        .sort((p, q) => p.row.localeCompare(q.row) || delayOf(p) - delayOf(q));
      if (!rows.length) continue;
      const a = get(r, mode, 'a', engine);
      const b = get(r, mode, 'b', engine);
      const title =
        mode === 'sse'
          ? `${MODE_TITLE[mode]}: ${f0(r.options.sseStreams as number)} concurrent streams (rows d, e: ${f0(r.options.sseXcashuStreams as number)}, one token each); 10 content chunks ${r.options.chunkDelayMs} ms apart; latency = whole stream; req/s = completed streams/s`
          : MODE_TITLE[mode];
      lines.push(`#### ${engines.length > 1 || engine !== 'sqlite' ? `${ENGINE_NAME[engine]} · ` : ''}${title}`, '');
      lines.push('| Row | req/s | p50 ms | p99 ms | p50 added over (a) | p99 added over (a) | × (b) throughput | mint calls / req | waited on the mint: ≥ 1 / ≥ 2 delays | change swapped on the request path | peak RSS MB | CPU ms / req | requests (non-2xx) |');
      lines.push('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
      for (const x of rows) {
        const label = delayOf(x) ? `${x.label}, mint +${delayOf(x)} ms` : x.label;
        lines.push(
          `| ${label} | ${f0(x.rps)} | ${f2(x.p50)} | ${f2(x.p99)} | ${x.row === 'a' ? '–' : signed(x.p50 - (a?.p50 ?? NaN))} | ${x.row === 'a' ? '–' : signed(x.p99 - (a?.p99 ?? NaN))} | ${b ? (x.rps / b.rps).toFixed(2) : '–'} | ${f2(x.mintCallsPerRequest)} | ${waited(x)} | ${swapped(x)} | ${f0(x.peakRssMb)} | ${f2(x.cpuMsPerRequest)} | ${f0(x.requests)}${x.non2xx + x.errors + x.timeouts ? ` (${x.non2xx} non-2xx, ${x.errors} errors)` : ''} |`,
        );
      }
      lines.push('');
    }
  }
  return lines;
}

function callsBreakdown(r: BenchResults): string[] {
  const rows = r.rows.filter((x) => x.mintCalls > 0);
  if (!rows.length) return ['No mint calls were made during any timed row.', ''];
  const lines = ['| Ledger | Load | Row | requests | mint calls | by method and path |', '|---|---|---|--:|--:|---|'];
  for (const x of rows) {
    const by = Object.entries(x.mintCallsByPath)
      .sort((p, q) => q[1] - p[1])
      .map(([k, v]) => `\`${k}\` ${v}`)
      .join(', ');
    lines.push(`| ${ENGINE_NAME[engineOf(x)]} | ${x.mode} | ${x.row}${delayOf(x) ? ` +${delayOf(x)} ms` : ''} | ${f0(x.requests + x.non2xx)} | ${f0(x.mintCalls)} | ${by} |`);
  }
  return [...lines, ''];
}

function peersTable(r: BenchResults): string[] {
  const lines = ['| Load | Row | req/s | × LiteLLM req/s | p50 ms | LiteLLM p50 ms | p99 ms | LiteLLM p99 ms | peak RSS MB | LiteLLM peak RSS MB | faster? |', '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|'];
  for (const mode of ['c1', 'c64', 'sse'] as const) {
    const f = get(r, mode, 'f');
    if (!f) continue;
    for (const row of ['b', 'c', 'd', 'e'] as const) {
      const x = get(r, mode, row);
      if (!x) continue;
      const same = mode !== 'sse' || row === 'b' || row === 'c' || r.options.sseXcashuStreams === r.options.sseStreams;
      const faster = same ? (fasterThan(x, f) ? 'yes' : '**no**') : `n/a (${r.options.sseXcashuStreams} vs ${r.options.sseStreams} streams)`;
      lines.push(
        `| ${mode} | ${x.label} | ${f0(x.rps)} | ${f.rps > 0 ? `${(x.rps / f.rps).toFixed(1)}×` : 'LiteLLM completed none'} | ${f2(x.p50)} | ${f2(f.p50)} | ${f2(x.p99)} | ${f2(f.p99)} | ${f0(x.peakRssMb)} | ${f0(f.peakRssMb)} | ${faster} |`,
      );
    }
  }
  return [...lines, ''];
}

/** Growth over the second half of the load alone: a plateau shows ~0, a leak keeps growing. */
function secondHalf(s: SoakResults): string[] {
  const load = s.samples;
  const end = load.at(-1);
  if (!end) return [];
  const mid = load.find((x) => x.t >= end.t / 2);
  if (!mid || mid === end) return [];
  return [`| growth over the second half (t = ${mid.t} s → ${end.t} s) | ${signed(((end.rssMb - mid.rssMb) / mid.rssMb) * 100)}% |`];
}

function soakSection(s: SoakResults): string[] {
  const sum = s.summary;
  const lines = [
    `Run ${s.date.slice(0, 16).replace('T', ' ')} UTC, ${s.machine.cores} cores, Node ${s.machine.node}, ${commitNote(s.source)}: ${s.options.minutes} minutes, ${s.options.connections} connections, ` +
      `half streaming (10 chunks ${s.options.chunkDelayMs} ms apart) and half not, all on one balance key. ` +
      `${f0(sum.requests)} requests (${f0(sum.rps)}/s), ${sum.non2xx} non-2xx, ${sum.errors} errors.`,
    '',
    `| | RSS MB |`,
    '|---|--:|',
    `| at the end of the ${sum.warmupSec} s warm-up | ${f1(sum.rssAtWarmupMb)} |`,
    `| peak after warm-up | ${f1(sum.rssPeakAfterWarmupMb)} (${signed(sum.growthPeakPct)}%) |`,
    `| at the end of the load | ${f1(sum.rssFinalMb)} (${signed(sum.growthFinalPct)}%) |`,
    `| trend after warm-up (least squares) | ${signed(sum.slopeMbPerMin)} MB/min |`,
    ...secondHalf(s),
    `| 15 s after the load stopped | ${f1(sum.rssAfterIdleMb)} |`,
    '',
    '<details><summary>RSS every 10 s</summary>',
    '',
    '| t (s) | RSS MB | 2xx in the interval | gateway CPU % |',
    '|--:|--:|--:|--:|',
    ...s.samples.map((x) => `| ${x.t} | ${f1(x.rssMb)} | ${f0(x.ok)} | ${f0(x.cpuPct)} |`),
    '',
    '</details>',
    '',
  ];
  return lines;
}

export function renderMarkdown(all: AnyResults[]): string {
  const benches = all.filter((x): x is BenchResults => x.kind !== 'soak');
  const soaks = all.filter((x): x is SoakResults => x.kind === 'soak');
  const latest = benches.at(-1);
  const peers = [...benches].reverse().find((x) => x.rows.some((r) => r.row === 'f'));
  const soak = soaks.at(-1);
  const out: string[] = [
    '# Benchmarks',
    '',
    '<!-- Generated by bench/run.ts from bench/results/*.json; do not edit the figures by hand. -->',
    '',
    'Every figure below is measured by `npm run bench` (and `bench:peers`, `bench:soak`) on the machine named',
    'with it, and regenerated from the JSON in `bench/results/`. Targets are recorded as measured, met or not.',
    '',
  ];
  if (latest) {
    const m = latest.machine;
    out.push(
      `## Latest run: ${latest.date.slice(0, 10)}`,
      '',
      `${latest.date.slice(0, 16).replace('T', ' ')} UTC · **${m.cores} cores** (${m.cpuModel}) · ${m.memoryGb} GB · Node ${m.node} · ${m.platform} · ` +
        `load average ${(m.loadavgBefore as number[]).map((x) => x.toFixed(2)).join(' ')} before, ${(m.loadavgAfter as number[]).map((x) => x.toFixed(2)).join(' ')} after · ` +
        `\`${latest.kind === 'peers' ? 'npm run bench:peers' : 'npm run bench'}\` · ${commitNote(latest.source)} · [JSON](bench/results/${latest.date.slice(0, 10)}${latest.kind === 'bench' ? '' : '-peers'}.json)`,
      '',
      `Non-streaming: ${latest.options.rounds} interleaved rounds; rows a, b, c${latest.rows.some((x) => x.row === 'f') ? ', f' : ''} run ${latest.options.durationSec} s per round, ` +
        `rows d and e a fixed ${latest.options.xcashuC1} (1 connection) and ${latest.options.xcashuC64} (64 connections) requests per round, one fresh ` +
        `${latest.options.tokenProofs}-proof ${latest.options.tokenSats}-sat token each. SSE: rows a, b, c ${latest.options.sseRounds} rounds of ${latest.options.sseDurationSec} s${latest.rows.some((x) => x.row === 'f') && latest.options.litellmSseFixed ? `, row f ${latest.options.sseRounds} rounds of ${latest.options.sseStreams} streams at once, as long as they take` : ''}; ` +
        `rows d and e ${latest.options.sseXcashuStreams} streams at once, one per connection, once (each X-Cashu stream spends a pre-minted token). ` +
        `Gateway RSS after start-up, before load: ${(latest.gateways ?? (latest.gateway ? [{ engine: 'sqlite' as EngineId, ...latest.gateway }] : [])).map((g) => `${f0(g.idleRssMb)} MB (${ENGINE_NAME[g.engine]})`).join(', ') || '–'}.` +
        (latest.options.shipped
          ? ` The gateway runs as \`npm start\` runs it (the built \`dist/\`), with default settings apart from the upstream, the mint, the prices, the ledger's URL and the rate limits the README tells load testers to turn off; rows d and e run once per mint delay (${(latest.options.mintDelays as number[]).map((d) => `${d} ms`).join(', ')}): every call to the mint held that long. "Waited on the mint" counts the responses at 1 connection slower than the same row's median with the mint on loopback by at least half a delay (once), and by at least one and a half (twice). Runs before 2026-12-02 17:00 UTC counted against zero instead, which at +50 ms took a swap's own ~70 ms for a second wait. A latency cannot tell a mint wait from a stall of the gateway's event loop as long as half a delay: "change swapped on the request path" is the gateway's own count (\`gateway_change_swaps_total\`, read from its /metrics before and after each run at 1 connection) of change the float could not pay from stored proofs (from 2026-12-07 on).`
          : ''),
      '',
      ...mainTable(latest),
      '### Targets',
      '',
      '| Target | Measured | Met |',
      '|---|---|---|',
      ...checkTargets(latest, soak, peers).map((t) => `| ${t.target} | ${t.measured} | ${t.met === undefined ? 'not measured' : t.met ? 'yes' : '**no**'} |`),
      '',
      '### Mint calls during the timed rows',
      '',
      'Counted by the proxy in front of nutshell (every HTTP call the gateway made to its mint while the row ran), not assumed.',
      '',
      ...callsBreakdown(latest),
    );
  } else {
    out.push('No run yet: `npm run bench`.', '');
  }
  out.push("## Against LiteLLM's proxy (`npm run bench:peers`)", '');
  if (peers) {
    out.push(
      `${peers.date.slice(0, 16).replace('T', ' ')} UTC, same run, same upstream double, same machine (${peers.machine.cores} cores). LiteLLM ${peers.litellm?.version} ` +
        `(\`litellm[proxy]\` from PyPI), ${peers.litellm?.workers} uvicorn worker${peers.litellm?.workers === 1 ? '' : 's'}, its master key as the bearer (it refuses to start without one), no database, no virtual keys, no callbacks: ` +
        'LiteLLM doing the least it can. Its RSS is its whole process tree.',
      '',
      ...peersTable(peers),
    );
  } else {
    const failed = [...benches].reverse().find((x) => x.kind === 'peers' && x.litellm?.error);
    out.push(failed ? `The last attempt (${failed.date.slice(0, 10)}) could not start LiteLLM: \`${failed.litellm!.error!.split('\n')[0]}\`` : 'Not run yet.', '');
  }
  out.push('## Soak (`npm run bench:soak`)', '');
  out.push(...(soak ? soakSection(soak) : ['Not run yet.', '']));
  // Hand-written reading of the figures (profiles, causes), kept apart from the generated tables.
  const notes = join(ROOT, 'bench', 'notes.md');
  if (existsSync(notes)) out.push(readFileSync(notes, 'utf8').trimEnd(), '');
  out.push(METHOD);
  return out.join('\n');
}

const METHOD = `## Method

**What runs where.** Each part is its own process, all bound to 127.0.0.1, all sharing the
machine's cores (nothing is pinned):

- nutshell 0.20.2, the reference Cashu mint, with its FakeWallet Lightning backend
  (\`scripts/setup-mint.sh\`, started as the test suite does);
- the counting proxy in front of it (\`test/support/counting-proxy.ts\` in \`bench/servers/mint-proxy.ts\`):
  the gateway's \`CASHU_MINTS\` is this proxy, so every HTTP call to the mint is counted, by path;
- the upstream double (\`test/support/upstream.ts\` in \`bench/servers/upstream.ts\`): a ~400-byte chat
  completion, or an SSE stream of a role chunk, 10 content chunks, a finish chunk and a usage chunk;
- the floor (\`bench/servers/bare-proxy.ts\`): Fastify + an undici \`Pool\` passing the request through
  (JSON body parsed and re-serialised, as the gateway does) and piping the answer back;
- the gateway as \`npm start\` starts it: \`npm run build\` once, then the \`start\` script's own
  command (\`node … dist/main.js\`, read from package.json), once per ledger engine: SQLite in its
  default place under a temporary \`DATA_DIR\`, then PostgreSQL (a throwaway Debian cluster,
  \`scripts/setup-postgres.sh\`, a fresh database). It is configured as an operator would: the
  upstream, the mint (the counting proxy), the prices, and the two rate limits off, as the README
  tells load testers. Everything else is the default: \`LOG_LEVEL=info\` with one access line per
  request (written to a file), the background sweep of locked proofs, 1,024 upstream connections,
  a P2PK key the gateway makes itself (locked tokens are minted to the key it publishes);
- the mint's distance: the counting proxy holds every call for 0, 50 or 300 ms
  (\`--mint-delays\`), and rows d and e run once per delay;
- the load generator, autocannon 9, in the bench process (\`bench/run.ts\`), which does nothing else
  while a row runs but sample RSS every 100 ms.

**Rows.** (a) the upstream directly; (b) the bare proxy; (c) the gateway with a balance key
(\`Authorization: Bearer sk-…\`, funded once with a large token); (d) the gateway with a fresh
\`X-Cashu\` token per request, which the gateway swaps at the mint (8 proofs, 255 sats); (e) the same
with the 8 proofs locked (NUT-11) to the gateway's key with DLEQ proofs (NUT-12), which the gateway
may take without asking the mint; (f) with \`--peers\`, LiteLLM's proxy in front of the same upstream.
X-Cashu requests pay change (254 sats less the cost) back as a token, which is part of the request.

**Interleaving.** Rows run in rounds, each round in a rotated order, so drift and other load on the
machine touch every row alike; figures aggregate all rounds. Rows d and e run a fixed number of
requests (each spends a token minted beforehand; pre-minting runs in batches of 120 tokens per mint
call). Before timing, every row is warmed up and checked once (status 200, usage in the body, cost
in the gateway's answer, \`[DONE]\` at the end of a stream).

**Figures.** req/s = 2xx responses / wall time of the run. Latencies are per response from
autocannon's response event (sub-millisecond; autocannon's own histogram rounds to whole
milliseconds), whole response (whole stream for SSE), closed-loop. "Added over (a)" is the row's
percentile minus row (a)'s at the same load. "× (b)" is req/s over the bare proxy's. Mint calls /
request = calls counted during the row / responses. Peak RSS is of the process under test (upstream,
bare proxy, gateway, or LiteLLM's whole process tree): the larger of the 100 ms samples of \`VmRSS\`
and \`VmHWM\` after resetting it (\`/proc/PID/clear_refs\`) at the start of the row. CPU ms / request is
that process's user+system time over the row, divided by the 2xx responses.

**Caveats.** Two cores are shared by the load generator, upstream, mint, proxies and the gateway,
so absolute req/s at 64 connections is bounded by the machine, not by any one process; compare
rows within a run. Loopback latency is far below any real network's. The upstream double answers
instantly (non-streaming), which makes gateway overhead as visible as it can be.

## Reproduce

\`\`\`sh
npm ci
npm run bench              # a–e on SQLite and PostgreSQL, 3 mint delays, about 25 minutes on 2 cores; writes bench/results/<date>.json and this file
npm run bench -- --quick   # one round, fewer requests: a quick look, about 6 minutes
npm run bench:peers        # adds LiteLLM (installs litellm[proxy] into bench/.venv on first use)
npm run bench:soak         # 10 minutes of mixed load, RSS every 10 s (--soak-minutes N)
node bench/run.ts --help   # durations, rounds, connections, request counts
\`\`\`

Needs \`python3\` with \`venv\` (nutshell and LiteLLM are installed from PyPI on first use).
`;
