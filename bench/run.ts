/**
 * The benchmark: `npm run bench` (default), `npm run bench:peers` (adds LiteLLM's proxy),
 * `npm run bench:soak` (10+ minutes of mixed load, RSS over time). `--help` lists the flags.
 * Every number it writes is measured in this run; see BENCHMARKS.md for the method.
 */
import { parseArgs } from 'node:util';
import { runBench } from './lib/bench.ts';
import { runSoak } from './lib/soak.ts';
import { renderBenchmarks } from './lib/report.ts';

const { values, tokens } = parseArgs({
  tokens: true,
  options: {
    peers: { type: 'boolean', default: false },
    soak: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '4' },
    'xcashu-c1': { type: 'string', default: '60' },
    'xcashu-c64': { type: 'string', default: '128' },
    'sse-streams': { type: 'string', default: '1000' },
    'sse-xcashu-streams': { type: 'string', default: '250' },
    'sse-duration': { type: 'string', default: '8' },
    'sse-rounds': { type: 'string', default: '2' },
    'chunk-delay': { type: 'string', default: '50' },
    'litellm-workers': { type: 'string', default: '1' },
    'soak-minutes': { type: 'string', default: '10' },
    'soak-connections': { type: 'string', default: '50' },
    engines: { type: 'string', default: 'sqlite,postgres' },
    'mint-delays': { type: 'string', default: '0,50,300' },
    quick: { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    render: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (values.help) {
  console.log(`usage: node bench/run.ts [--peers | --soak] [options]

  --peers                also measure LiteLLM's proxy (PyPI litellm[proxy], installed into bench/.venv)
  --soak                 soak mode: mixed streaming/non-streaming load on a balance key, RSS every 10 s
  --rounds N             interleaved rounds of the non-streaming rows (default 3)
  --duration S           seconds per timed non-streaming run, rows a, b, c, f (default 4)
  --xcashu-c1 N          X-Cashu requests per round at 1 connection, rows d, e (default 60)
  --xcashu-c64 N         X-Cashu requests per round at 64 connections, rows d, e (default 128)
  --sse-streams N        concurrent SSE streams, rows a, b, c, f (default 1000)
  --sse-xcashu-streams N concurrent SSE streams for rows d, e, one token each (default 250)
  --sse-duration S       seconds per SSE run, rows a, b, c, f (default 8)
  --sse-rounds N         interleaved rounds of the SSE rows a, b, c, f (default 2; d, e run once)
  --chunk-delay MS       upstream delay before each SSE content chunk (default 50; 10 chunks)
  --engines LIST         ledger engines, in order (default sqlite,postgres)
  --mint-delays LIST     ms every mint call is held, rows d and e once per value (default 0,50,300)
  --quick                one round, 2 s rows, 20/32 X-Cashu requests, 300/100 streams, one SSE round
  --litellm-workers N    LiteLLM proxy worker processes (default 1)
  --soak-minutes M       soak length (default 10, at least 2)
  --soak-connections N   soak connections (default 50)
  --no-write             do not write bench/results or BENCHMARKS.md
  --render               only regenerate BENCHMARKS.md from bench/results/*.json (measures nothing)`);
  process.exit(0);
}

const int = (k: keyof typeof values) => {
  const n = Number(values[k]);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`--${k} must be a positive number`);
    process.exit(2);
  }
  return n;
};

if (values.quick) {
  // Smaller defaults; a flag given on the command line still wins.
  const given = new Set<string>(tokens.flatMap((t) => (t.kind === 'option' ? [t.name] : [])));
  const quick = { rounds: '1', duration: '2', 'xcashu-c1': '20', 'xcashu-c64': '32', 'sse-streams': '300', 'sse-xcashu-streams': '100', 'sse-duration': '4', 'sse-rounds': '1' };
  for (const [k, v] of Object.entries(quick)) if (!given.has(k)) (values as Record<string, unknown>)[k] = v;
}
const list = (k: 'engines' | 'mint-delays') => values[k].split(',').map((x) => x.trim()).filter(Boolean);
const engines = list('engines');
if (!engines.length || engines.some((e) => e !== 'sqlite' && e !== 'postgres')) {
  console.error('--engines takes sqlite and/or postgres');
  process.exit(2);
}
const mintDelays = list('mint-delays').map(Number);
if (!mintDelays.length || mintDelays.some((d) => !Number.isInteger(d) || d < 0)) {
  console.error('--mint-delays takes whole milliseconds, e.g. 0,50,300');
  process.exit(2);
}

if (values.render) {
  console.log(`wrote ${renderBenchmarks()}`);
  process.exit(0);
}

// Every run ends by itself: a watchdog stops a run that overstays by far.
const budgetMin = values.soak ? int('soak-minutes') + 20 : 90;
const watchdog = setTimeout(() => {
  console.error(`bench: still running after ${budgetMin} minutes; giving up`);
  process.kill(process.pid, 'SIGTERM');
}, budgetMin * 60_000);
watchdog.unref();

if (values.soak) {
  await runSoak({ minutes: Math.max(2, int('soak-minutes')), connections: int('soak-connections'), write: !values['no-write'] });
} else {
  await runBench({
    peers: values.peers,
    rounds: int('rounds'),
    durationSec: int('duration'),
    xcashuC1: int('xcashu-c1'),
    xcashuC64: int('xcashu-c64'),
    sseStreams: int('sse-streams'),
    sseXcashuStreams: int('sse-xcashu-streams'),
    sseDurationSec: int('sse-duration'),
    sseRounds: int('sse-rounds'),
    chunkDelayMs: int('chunk-delay'),
    litellmWorkers: int('litellm-workers'),
    engines: engines as Array<'sqlite' | 'postgres'>,
    mintDelays,
    write: !values['no-write'],
  });
}
process.exit(0);
