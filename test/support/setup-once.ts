import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, isAbsolute, join, resolve } from 'node:path';
import { freePort } from './ports.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const done = new Map<string, Promise<void>>();

/**
 * Runs `scripts/<script>` (which builds or installs a tool on first use, a no-op after) once per
 * test process, without blocking the worker, and gives the path of `binary`: a name in cargo's
 * bin folder, or a path as it is.
 */
export async function setupOnce(script: string, binary: string): Promise<string> {
  let run = done.get(script);
  if (!run) {
    run = new Promise<number | null>((exit) => {
      spawn('bash', [join(ROOT, 'scripts', script)], { stdio: ['ignore', 'inherit', 'inherit'] }).once('exit', exit);
    }).then((code) => {
      if (code !== 0) throw new Error(`scripts/${script} failed (see the message above)`);
    });
    // A failed run is not kept: the next caller tries again and sees the script's message.
    run.catch(() => done.delete(script));
    done.set(script, run);
  }
  await run;
  return isAbsolute(binary) ? binary : join(process.env.CARGO_HOME ?? join(homedir(), '.cargo'), 'bin', binary);
}

/**
 * A daemon's first steps, as the foreign mint and relays take them: its tool set up once, a free
 * loopback port, a folder of its own and its config.toml written there from `toml`.
 */
export async function daemonHome(
  script: string,
  binary: string,
  toml: (home: { port: number; dir: string }) => string,
): Promise<{ bin: string; port: number; dir: string; config: string }> {
  const bin = await setupOnce(script, binary);
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `${basename(bin)}-`));
  const config = join(dir, 'config.toml');
  writeFileSync(config, toml({ port, dir }));
  return { bin, port, dir, config };
}
