import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { freePort } from '../../test/support/ports.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
/** A virtualenv of its own (git-ignored), apart from the test suite's nutshell venv. */
export const VENV = process.env.BENCH_VENV ?? join(ROOT, 'bench', '.venv');

export interface RunningLiteLLM {
  url: string;
  pid: number;
  /** LiteLLM refuses to start without one; clients send it as `Authorization: Bearer`. */
  masterKey: string;
  version: string;
  workers: number;
  logFile: string;
  stop(): Promise<void>;
}

/** Installs `litellm[proxy]` from PyPI into bench/.venv once; returns the CLI path and version. */
export function ensureLiteLLM(): { bin: string; version: string } {
  const bin = join(VENV, 'bin', 'litellm');
  const py = join(VENV, 'bin', 'python');
  if (!existsSync(bin)) {
    console.log(`installing litellm[proxy] into ${VENV} (once; a few minutes)`);
    let r = spawnSync('python3', ['-m', 'venv', VENV], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error('python3 -m venv failed: install python3 and python3-venv');
    r = spawnSync(join(VENV, 'bin', 'pip'), ['install', '--quiet', '--disable-pip-version-check', 'litellm[proxy]'], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`pip install 'litellm[proxy]' failed (exit ${r.status})`);
  }
  const v = spawnSync(py, ['-c', 'import importlib.metadata as m; print(m.version("litellm"))'], { encoding: 'utf8' });
  return { bin, version: v.stdout.trim() || 'unknown' };
}

/**
 * LiteLLM's proxy in front of the same upstream double: model `gpt-test` routed to it as an
 * OpenAI-compatible provider. A master key (LiteLLM will not start without one) and no database,
 * no virtual keys, no callbacks: LiteLLM at its lightest.
 */
export async function startLiteLLM(upstreamUrl: string, dir: string, workers = 1): Promise<RunningLiteLLM> {
  const { bin, version } = ensureLiteLLM();
  const port = await freePort();
  const config = join(dir, 'litellm.yaml');
  const masterKey = `sk-${randomBytes(32).toString('hex')}`;
  writeFileSync(
    config,
    [
      'model_list:',
      '  - model_name: gpt-test',
      '    litellm_params:',
      '      model: openai/gpt-test',
      `      api_base: ${upstreamUrl}`,
      '      api_key: sk-bench-upstream',
      'general_settings:',
      `  master_key: ${masterKey}`,
      'litellm_settings:',
      '  drop_params: true',
      '  telemetry: false',
      '',
    ].join('\n'),
  );
  const logFile = join(dir, 'litellm.log');
  const log = openSync(logFile, 'a');
  const proc: ChildProcess = spawn(
    bin,
    ['--config', config, '--host', '127.0.0.1', '--port', String(port), '--num_workers', String(workers)],
    {
      cwd: dir,
      env: {
        PATH: `${join(VENV, 'bin')}:${process.env.PATH}`,
        HOME: dir,
        // No network here but loopback: use the cost map shipped in the package.
        LITELLM_LOCAL_MODEL_COST_MAP: 'True',
        LITELLM_LOG: 'ERROR',
        LITELLM_TELEMETRY: 'False',
      },
      stdio: ['ignore', log, log],
    },
  );
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`litellm exited with ${proc.exitCode}:\n${readFileSync(logFile, 'utf8').slice(-4000)}`);
    try {
      if ((await fetch(`${url}/health/liveliness`)).ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`litellm did not start in 180 s:\n${readFileSync(logFile, 'utf8').slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  return {
    url,
    pid: proc.pid!,
    masterKey,
    version,
    workers,
    logFile,
    stop: () =>
      new Promise<void>((r) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return r();
        const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
        proc.once('exit', () => {
          clearTimeout(t);
          r();
        });
        proc.kill('SIGTERM');
      }),
  };
}
