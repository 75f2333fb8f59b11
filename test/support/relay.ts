import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort, stopProcess } from './ports.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');

export interface RunningRelay {
  url: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** A real Nostr relay (PyPI nostr-relay) on a free loopback port, with its own SQLite store. */
/** `verifySignatures: false` makes a relay that passes forged events on, to test what clients do with them. */
/** `port`: a relay that comes (back) up where clients already expect it. */
export async function startRelay(opts: { verifySignatures?: boolean; requirePow?: number; port?: number } = {}): Promise<RunningRelay> {
  const r = spawnSync('bash', [join(ROOT, 'scripts', 'setup-relay.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error('could not install nostr-relay (see the message above)');
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'nostr-relay-'));
  const config = join(dir, 'config.yaml');
  writeFileSync(
    config,
    `relay_name: test relay
storage:
  sqlalchemy.url: sqlite+aiosqlite:///${dir}/nostr.sqlite3
  validators: ${opts.verifySignatures === false ? '[]' : `\n    - nostr_relay.validators.is_signed${opts.requirePow ? '\n    - nostr_relay.validators.is_pow' : ''}`}
${opts.requirePow ? `require_pow: ${opts.requirePow}\n` : ''}gunicorn:
  bind: 127.0.0.1:${port}
  workers: 1
  loglevel: warning
max_event_size: 1048576
subscription_limit: 100
message_timeout: 3600
authentication:
  enabled: false
`,
  );
  const proc = spawn(join(ROOT, '.venv-relay', 'bin', 'nostr-relay'), ['-c', config, 'serve', '--use-uvicorn'], { stdio: 'ignore' });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`nostr-relay exited with ${proc.exitCode}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { headers: { accept: 'application/nostr+json' } });
      if (res.ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error('nostr-relay did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `ws://127.0.0.1:${port}`,
    proc,
    stop: () => stopProcess(proc),
  };
}
