import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

/** Logs one line holding a token from a child process, as the gateway would. */
function logLine(env: Record<string, string>): string {
  const script = `import(${JSON.stringify(resolve('src/log.ts'))}).then(({ createLogger }) =>
    createLogger('info').info({ token: 'cashuBsecrettoken', n: 7 }, 'paid'))`;
  const r = spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', '-e', script], {
    env: { PATH: process.env.PATH, ...env },
    encoding: 'utf8',
  });
  expect(r.status).toBe(0);
  return r.stdout;
}

describe('log format', () => {
  it('writes JSON lines when standard output is not a terminal', () => {
    const out = logLine({});
    const line = JSON.parse(out.trim()) as Record<string, unknown>;
    expect(line).toMatchObject({ level: 30, msg: 'paid', n: 7, token: '[redacted]', service: 'cashu-gateway' });
  });

  it('writes human-readable lines when asked (as on a terminal), still redacted', () => {
    const out = logLine({ LOG_FORMAT: 'pretty' });
    expect(() => JSON.parse(out.trim())).toThrow();
    expect(out).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: paid\n/);
    expect(out).toContain('token: "[redacted]"');
    expect(out).not.toContain('secrettoken');
  });
});
