import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { cpus, loadavg, totalmem } from 'node:os';
import { freePort } from '../../test/support/ports.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const NODE_ARGS = ['--disable-warning=ExperimentalWarning'];


export interface Child {
  url: string;
  pid: number;
  proc: ChildProcess;
  /** Sends a command over IPC and resolves with the child's answer. */
  ask<T = unknown>(msg: Record<string, unknown>): Promise<T>;
  stop(): Promise<void>;
}

function exited(proc: ChildProcess): Promise<void> {
  return new Promise((r) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return r();
    proc.once('exit', () => r());
  });
}

/** A bench server (bench/servers/*.ts) in its own Node process, talking over the fork IPC channel. */
export async function forkServer(script: string, env: Record<string, string> = {}, opts: { transformTypes?: boolean } = {}): Promise<Child> {
  const proc = fork(join(ROOT, 'bench', 'servers', script), [], {
    // test/support/counting-proxy.ts uses a TypeScript parameter property, which Node's default
    // type stripping refuses; that server loads with type transformation instead.
    execArgv: opts.transformTypes ? ['--experimental-transform-types', ...NODE_ARGS] : NODE_ARGS,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const url = await new Promise<string>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`${script} did not start`)), 30_000);
    proc.once('message', (m: { url: string }) => {
      clearTimeout(t);
      res(m.url);
    });
    proc.once('exit', (code) => rej(new Error(`${script} exited with ${code}`)));
  });
  let queue: Promise<unknown> = Promise.resolve();
  return {
    url,
    pid: proc.pid!,
    proc,
    ask<T>(msg: Record<string, unknown>): Promise<T> {
      const p = queue.then(
        () =>
          new Promise<T>((res) => {
            proc.once('message', (m) => res(m as T));
            proc.send(msg);
          }),
      );
      queue = p.catch(() => {});
      return p;
    },
    async stop() {
      if (proc.connected) proc.disconnect();
      const done = exited(proc);
      const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      await done;
      clearTimeout(t);
    },
  };
}

export interface GatewayProc {
  url: string;
  pid: number;
  logFile: string;
  stop(): Promise<void>;
}

const built = new Set<string>();

/**
 * The command `npm start` runs after its `prestart` build, read from package.json so the bench
 * starts what an operator starts. The build runs once per bench run, not once per gateway.
 */
function shippedStart(root: string): string[] {
  if (!built.has(root)) {
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
    built.add(root);
  }
  const scripts = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  const [node, ...args] = scripts.start!.split(' ');
  if (node !== 'node') throw new Error(`npm start runs ${node}, not node: the bench cannot start it as shipped`);
  return args.map((a) => (a.startsWith('dist/') ? join(root, a) : a));
}

/**
 * The gateway as `npm start` runs it (the built dist/, default settings apart from `env`), in its
 * own process. Readiness is polled on GET /v1/info rather than read from the log. `root`: another
 * checkout of the project to start instead (an earlier commit, measured beside this one).
 */
export async function startGateway(env: Record<string, string>, dir: string, root = ROOT): Promise<GatewayProc> {
  const port = await freePort();
  const logFile = join(dir, `gateway-${port}.log`);
  const log = openSync(logFile, 'a');
  // BENCH_GATEWAY_NODE_ARGS: extra node flags for the gateway only, e.g. --cpu-prof to profile it.
  const extra = (process.env.BENCH_GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const [first, ...rest] = shippedStart(root);
  const proc = spawn(process.execPath, [...extra, first!, ...rest], {
    cwd: dir,
    env: { PATH: process.env.PATH, HOST: '127.0.0.1', PORT: String(port), ...env },
    stdio: ['ignore', log, log],
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`gateway exited with ${proc.exitCode}:\n${readFileSync(logFile, 'utf8')}`);
    try {
      if ((await fetch(`${url}/v1/info`)).ok) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`gateway did not start:\n${readFileSync(logFile, 'utf8')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    pid: proc.pid!,
    logFile,
    async stop() {
      const done = exited(proc);
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(t);
    },
  };
}

/** A process and every process below it (LiteLLM may run worker processes). */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid)!.push(Number(d));
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

function statusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Resident set size in MB, summed over the given processes. */
export function rssMb(pids: number[]): number {
  let kb = 0;
  for (const p of pids) kb += statusKb(p, 'VmRSS');
  return kb / 1024;
}

/** Peak resident set size (VmHWM) in MB, summed over the processes. */
export function hwmMb(pids: number[]): number {
  let kb = 0;
  for (const p of pids) kb += statusKb(p, 'VmHWM');
  return kb / 1024;
}

/** Resets VmHWM to the current RSS (Linux ≥ 4.0, `echo 5 > /proc/PID/clear_refs`), if allowed. */
export function resetHwm(pids: number[]): boolean {
  let ok = true;
  for (const p of pids) {
    try {
      writeFileSync(`/proc/${p}/clear_refs`, '5');
    } catch {
      ok = false;
    }
  }
  return ok;
}

/** CPU time (user + system) consumed so far, in milliseconds, summed over the processes. */
export function cpuMs(pids: number[]): number {
  const tick = 100; // USER_HZ on Linux
  let ticks = 0;
  for (const p of pids) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      /* gone */
    }
  }
  return (ticks * 1000) / tick;
}

/**
 * Samples the RSS of a set of processes while a scenario runs. The peak reported is the larger
 * of the sampled maximum and the kernel's VmHWM (reset at the start), so a spike between two
 * samples is not missed.
 */
export class RssWatch {
  #timer: NodeJS.Timeout | undefined;
  #max = 0;
  #hwmReset = false;
  #cpu0 = 0;
  readonly pids: () => number[];
  readonly everyMs: number;
  constructor(pids: () => number[], everyMs = 100) {
    this.pids = pids;
    this.everyMs = everyMs;
  }

  start(): void {
    const pids = this.pids();
    this.#hwmReset = resetHwm(pids);
    this.#max = rssMb(pids);
    this.#cpu0 = cpuMs(pids);
    this.#timer = setInterval(() => {
      this.#max = Math.max(this.#max, rssMb(this.pids()));
    }, this.everyMs);
  }

  stop(): { peakRssMb: number; endRssMb: number; cpuMs: number } {
    clearInterval(this.#timer);
    const pids = this.pids();
    const end = rssMb(pids);
    const hwm = this.#hwmReset ? hwmMb(pids) : 0;
    return { peakRssMb: Math.max(this.#max, end, hwm), endRssMb: end, cpuMs: cpuMs(pids) - this.#cpu0 };
  }
}

/** The commit of the code measured, and whether src/ or the dependencies differ from it. */
export function sourceVersion(): { commit: string; dirty: boolean } {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--', 'src', 'package.json', 'package-lock.json'], { cwd: ROOT, encoding: 'utf8' });
    return { commit, dirty: status.trim().length > 0 };
  } catch {
    return { commit: 'unknown', dirty: false };
  }
}

/** The machine a run measured, as every results file records it. */
export function machineInfo() {
  return {
    cores: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGb: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    loadavgAfter: loadavg(),
  };
}
