/**
 * Summarises a V8 CPU profile of the gateway (taken with BENCH_GATEWAY_NODE_ARGS="--cpu-prof
 * --cpu-prof-dir=DIR" during a bench run) into where its CPU went, by call path:
 *   node bench/profile-summary.ts DIR/CPU.*.cpuprofile
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const BUCKETS: Array<[string, (chain: string[]) => boolean]> = [
  ["DLEQ check of locked input proofs (spendableOnlyByUs)", (c) => c.includes('spendableOnlyByUs')],
  ["DLEQ check of the mint's signatures on swap outputs (completeSwap → toProof)", (c) => c.includes('toProof') && c.includes('Dn')],
  ['unblinding swap outputs (toProof, the rest)', (c) => c.includes('toProof')],
  ['DLEQ check of input proofs in prepareSwapToReceive', (c) => c.includes('prepareSwapToReceive') && c.includes('Dn')],
  ['blinding new outputs (prepareSwapTo*, createOutputData)', (c) => ['prepareSwapToReceive', 'prepareSwapToSend', 'createOutputData'].some((f) => c.includes(f))],
  ['signing locked inputs (signP2PKProofs)', (c) => c.includes('signP2PKProofs')],
  ['other DLEQ checks', (c) => c.includes('Dn')],
  ['SQLite transactions (#tx)', (c) => c.includes('#tx')],
  ['prompt token counting (countPieces)', (c) => c.includes('countPieces')],
];

for (const file of process.argv.slice(2)) {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  let busy = 0;
  let idle = 0;
  const sums = new Map<string, number>();
  p.samples.forEach((s, i) => {
    const d = p.timeDeltas[i] ?? 0;
    if (byId.get(s)!.callFrame.functionName === '(idle)') {
      idle += d;
      return;
    }
    busy += d;
    const chain: string[] = [];
    for (let id: number | undefined = s; id !== undefined; id = parent.get(id)) chain.push(byId.get(id)!.callFrame.functionName);
    const bucket = BUCKETS.find(([, match]) => match(chain))?.[0] ?? 'everything else (HTTP, JSON, undici, Fastify, GC)';
    sums.set(bucket, (sums.get(bucket) ?? 0) + d);
  });
  console.log(`${file}: ${(busy / 1e6).toFixed(1)} s busy, ${(idle / 1e6).toFixed(1)} s idle`);
  console.log('| Where the gateway\'s CPU went | s | share |\n|---|--:|--:|');
  for (const [k, v] of [...sums].sort((a, b) => b[1] - a[1])) console.log(`| ${k} | ${(v / 1e6).toFixed(1)} | ${((100 * v) / busy).toFixed(0)} % |`);
}
