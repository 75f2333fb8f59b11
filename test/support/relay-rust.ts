import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { freePort, stopProcess } from './ports.ts';
import type { RunningRelay } from './relay.ts';
import { daemonHome, setupOnce } from './setup-once.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const SDK_PYTHON = join(ROOT, '.venv-nostr-sdk', 'bin', 'python');

/**
 * Installs rust-nostr's bindings and builds nostr-rs-relay if this machine has neither yet
 * (15 to 25 minutes on 2 cores the first time, a no-op after): without blocking the test worker, for a
 * beforeAll with a timeout to match.
 */
export async function prepareForeignRelays(): Promise<void> {
  await setupOnce('setup-nostr-sdk.sh', SDK_PYTHON);
  await setupOnce('setup-nostr-rs-relay.sh', 'nostr-rs-relay');
}

/** Resolves once `ready` returns true for the process's output, or fails when it exits first. */
function waitReady(proc: ChildProcess, what: string, ready: (out: string) => boolean, ms = 30_000): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${ms} ms:\n${out}`)), ms);
    const onData = (d: Buffer) => {
      out += d;
      if (ready(out)) {
        clearTimeout(timer);
        resolvePromise(out);
      }
    };
    proc.stdout?.on('data', onData);
    proc.stderr?.on('data', onData);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}:\n${out}`));
    });
  });
}

async function waitHttp(port: number, proc: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { headers: { accept: 'application/nostr+json' } });
      await res.body?.cancel();
      if (res.ok) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`${what} did not start`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * nostr-rs-relay 0.8.12 (crates.io, built once per machine by scripts/setup-nostr-rs-relay.sh).
 * With `nip42: true` it challenges every connection and, like the release people run, answers a
 * good AUTH with no OK at all.
 */
export async function startNostrRsRelay(opts: { nip42?: boolean } = {}): Promise<RunningRelay> {
  const { bin, port, dir, config } = await daemonHome('setup-nostr-rs-relay.sh', 'nostr-rs-relay', ({ port, dir }) => `[info]
relay_url = "ws://127.0.0.1:${port}/"
name = "test nostr-rs-relay"
[database]
data_directory = "${dir}"
[network]
address = "127.0.0.1"
port = ${port}
[options]
reject_future_seconds = 1800
[limits]
messages_per_sec = 10000
subscriptions_per_min = 10000
[authorization]
nip42_auth = ${opts.nip42 ? 'true' : 'false'}
`);
  const proc = spawn(bin, ['--config', config, '--db', dir], { stdio: 'ignore', env: { ...process.env, RUST_LOG: 'warn' } });
  await waitHttp(port, proc, 'nostr-rs-relay');
  return { url: `ws://127.0.0.1:${port}`, proc, stop: () => stopProcess(proc) };
}

/** rust-nostr's relay (PyPI nostr-sdk), demanding NIP-42 AUTH and/or a NIP-13 minimum if asked. */
export async function startNostrSdkRelay(opts: { auth?: 'read' | 'write' | 'both'; pow?: number } = {}): Promise<RunningRelay> {
  const python = await setupOnce('setup-nostr-sdk.sh', SDK_PYTHON);
  const port = await freePort();
  const args = [join(ROOT, 'test', 'python', 'nostr_sdk_relay.py'), '--port', String(port)];
  if (opts.auth) args.push('--auth', opts.auth);
  if (opts.pow) args.push('--pow', String(opts.pow));
  const proc = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  await waitReady(proc, 'the nostr-sdk relay', (out) => out.includes('ready ws://'));
  return { url: `ws://127.0.0.1:${port}`, proc, stop: () => stopProcess(proc) };
}

export interface SdkJobResult {
  request: string;
  tags: string[][];
  result: string;
}

/** Posts one encrypted 5050 job with rust-nostr's client and waits for its decrypted 6050. */
export async function requestWithNostrSdk(args: {
  relay: string;
  service: string;
  secretHex: string;
  prompt: string;
  maxTokens: number;
  cashu: string;
  scheme?: 'nip44' | 'nip04';
  pow?: number;
}): Promise<SdkJobResult> {
  const python = await setupOnce('setup-nostr-sdk.sh', SDK_PYTHON);
  const argv = [
    join(ROOT, 'test', 'python', 'nostr_sdk_requester.py'),
    '--relay', args.relay,
    '--service', args.service,
    '--secret', args.secretHex,
    '--prompt', args.prompt,
    '--max-tokens', String(args.maxTokens),
    '--cashu', args.cashu,
    '--scheme', args.scheme ?? 'nip44',
    '--pow', String(args.pow ?? 0),
  ];
  try {
    const { stdout } = await promisify(execFile)(python, argv, { timeout: 60_000 });
    return JSON.parse(stdout.trim().split('\n').at(-1)!) as SdkJobResult;
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`the nostr-sdk requester failed: ${err.stdout ?? ''}${err.stderr ?? ''}${err.message}`);
  }
}
