import autocannon from 'autocannon';
import { cpus } from 'node:os';
import { cpuMs, machineInfo, rssMb, sourceVersion } from './procs.ts';
import { startStack } from './setup.ts';
import { writeResults, type SoakResults } from './report.ts';

const CHAT = { model: 'gpt-test', messages: [{ role: 'user', content: 'Soak: answer in ten words.' }], max_tokens: 16 };
const SAMPLE_SEC = 10;
const WARMUP_SEC = 60;
const CHUNK_DELAY_MS = 5;

const log = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

/**
 * At least 10 minutes of mixed load on one balance key: every connection alternates a streamed
 * and a non-streamed chat completion. The gateway's RSS is sampled every 10 s; growth is measured
 * from the end of a 1-minute warm-up.
 */
export async function runSoak(o: { minutes: number; connections: number; write: boolean }): Promise<void> {
  const startedAt = new Date();
  const source = sourceVersion();
  log(`soak: ${o.minutes} min, ${o.connections} connections, on ${cpus().length} cores; setting up`);
  const stack = await startStack({ bare: false, fundSats: 20_000_000 });
  const stop = () => stack.stop();
  process.once('SIGINT', () => void stop().then(() => process.exit(130)));
  process.once('SIGTERM', () => void stop().then(() => process.exit(143)));
  try {
    await stack.upstream.ask({ cmd: 'chunkDelay', chunkDelayMs: CHUNK_DELAY_MS });
    const gw = await stack.gateway('sqlite');
    const pid = gw.proc.pid;
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${gw.apiKey}` };
    const samples: SoakResults['samples'] = [];
    let ok = 0;
    let non2xx = 0;
    let errors = 0;
    let totalOk = 0;
    let totalNon2xx = 0;
    let totalErrors = 0;
    const t0 = performance.now();
    let lastCpu = cpuMs([pid]);
    let lastT = t0;
    const sample = () => {
      const now = performance.now();
      const cpu = cpuMs([pid]);
      samples.push({
        t: Math.round((now - t0) / 1000),
        rssMb: rssMb([pid]),
        ok,
        non2xx,
        errors,
        cpuPct: now > lastT ? ((cpu - lastCpu) / (now - lastT)) * 100 : 0,
      });
      lastCpu = cpu;
      lastT = now;
      ok = 0;
      non2xx = 0;
      errors = 0;
      const s = samples.at(-1)!;
      log(`t=${String(s.t).padStart(4)} s  rss ${s.rssMb.toFixed(1)} MB  ${s.ok} ok  cpu ${s.cpuPct.toFixed(0)}%`);
    };
    sample();
    const timer = setInterval(sample, SAMPLE_SEC * 1000);
    // Without a callback autocannon returns its emitter, which is also a promise of the result.
    const instance = autocannon({
      url: `${gw.proc.url}/v1/chat/completions`,
      connections: o.connections,
      duration: o.minutes * 60,
      timeout: 60,
      requests: [
        { method: 'POST', headers, body: JSON.stringify(CHAT) },
        { method: 'POST', headers, body: JSON.stringify({ ...CHAT, stream: true }) },
      ],
    }) as unknown as autocannon.Instance & Promise<autocannon.Result>;
    instance.on('response', (_c: unknown, status: number) => {
      if (status >= 200 && status < 300) {
        ok++;
        totalOk++;
      } else {
        non2xx++;
        totalNon2xx++;
      }
    });
    instance.on('reqError', () => {
      errors++;
      totalErrors++;
    });
    await instance;
    clearInterval(timer);
    sample();
    const loadSec = (performance.now() - t0) / 1000;
    // Idle: does memory come back once the load stops?
    await new Promise((r) => setTimeout(r, 15_000));
    const rssAfterIdleMb = rssMb([pid]);

    const after = samples.filter((s) => s.t >= WARMUP_SEC);
    const warm = after[0]!;
    const final = samples.at(-1)!;
    const peak = Math.max(...after.map((s) => s.rssMb));
    const n = after.length;
    const mt = after.reduce((s, x) => s + x.t, 0) / n;
    const mr = after.reduce((s, x) => s + x.rssMb, 0) / n;
    const slope = after.reduce((s, x) => s + (x.t - mt) * (x.rssMb - mr), 0) / (after.reduce((s, x) => s + (x.t - mt) ** 2, 0) || 1);
    const results: SoakResults = {
      kind: 'soak',
      date: startedAt.toISOString(),
      finished: new Date().toISOString(),
      source,
      machine: machineInfo(),
      options: { minutes: o.minutes, connections: o.connections, chunkDelayMs: CHUNK_DELAY_MS, sampleSec: SAMPLE_SEC },
      samples,
      summary: {
        requests: totalOk,
        non2xx: totalNon2xx,
        errors: totalErrors,
        rps: totalOk / loadSec,
        warmupSec: WARMUP_SEC,
        rssAtWarmupMb: warm.rssMb,
        rssFinalMb: final.rssMb,
        rssPeakAfterWarmupMb: peak,
        growthFinalPct: ((final.rssMb - warm.rssMb) / warm.rssMb) * 100,
        growthPeakPct: ((peak - warm.rssMb) / warm.rssMb) * 100,
        slopeMbPerMin: slope * 60,
        rssAfterIdleMb,
      },
    };
    const s = results.summary;
    log(
      `soak done: ${totalOk} ok (${s.rps.toFixed(0)}/s), ${totalNon2xx} non-2xx, ${totalErrors} errors; RSS ${s.rssAtWarmupMb.toFixed(1)} MB after warm-up → ` +
        `${s.rssFinalMb.toFixed(1)} MB at the end (${s.growthFinalPct.toFixed(1)}%), peak ${s.rssPeakAfterWarmupMb.toFixed(1)} MB (${s.growthPeakPct.toFixed(1)}%), ` +
        `${s.slopeMbPerMin.toFixed(2)} MB/min, ${s.rssAfterIdleMb.toFixed(1)} MB after 15 s idle`,
    );
    if (o.write) {
      const { json, md } = writeResults(results);
      log(`wrote ${json} and ${md}`);
    }
  } finally {
    await stop();
  }
}
