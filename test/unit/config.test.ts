import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { ConfigError, loadConfig } from '../../src/config.ts';

describe('loadConfig', () => {
  it('applies documented defaults', () => {
    const c = loadConfig({});
    expect(c.PORT).toBe(8000);
    expect(c.CASHU_MINTS).toEqual(['https://mint.minibits.cash/Bitcoin']);
    expect(c.DATABASE_URL).toBe('sqlite:./data/gateway.db');
    expect(c.DEFAULT_PROMPT_MSATS_PER_TOKEN).toBe(1_000_000);
    expect(c.DEFAULT_COMPLETION_MSATS_PER_TOKEN).toBe(3_000_000);
  });

  it('parses mint lists and fractional prices exactly', () => {
    const c = loadConfig({
      CASHU_MINTS: 'http://127.0.0.1:3338/, https://mint.example.com/Bitcoin',
      MODEL_PRICES: '{"m":{"prompt":0.15,"completion":"0.6"}}',
    });
    expect(c.CASHU_MINTS).toEqual(['http://127.0.0.1:3338', 'https://mint.example.com/Bitcoin']);
    expect(c.MODEL_PRICES.m).toEqual({ prompt: 150_000, completion: 600_000 });
  });

  it('names every bad variable and what it expects, one problem per line', () => {
    let err: ConfigError | undefined;
    try {
      loadConfig({ PORT: 'eighty', CASHU_MINTS: 'ftp://x', MODEL_PRICES: '{nope', DEFAULT_PROMPT_MSATS_PER_TOKEN: '-1' });
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const vars = err!.problems.map((p) => p.split(/[.:]/)[0]);
    expect(vars.sort()).toEqual(['CASHU_MINTS', 'DEFAULT_PROMPT_MSATS_PER_TOKEN', 'MODEL_PRICES', 'PORT']);
    expect(err!.problems.find((p) => p.startsWith('PORT'))).toContain('"eighty"');
  });

  it('refuses a locktime margin too short for the redeem interval: a lone 1-sat locked proof would cost a fee on arrival', () => {
    const problems = (env: Record<string, string>) => {
      try {
        loadConfig(env);
        return [];
      } catch (e) {
        return (e as ConfigError).problems;
      }
    };
    const p = problems({ P2PK_LOCKTIME_MARGIN_SECONDS: '600', P2PK_REDEEM_INTERVAL_SECONDS: '300' });
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^P2PK_LOCKTIME_MARGIN_SECONDS.*at least 1200/);
    // Under a minute of window is refused too: the window is never below one.
    expect(problems({ P2PK_LOCKTIME_MARGIN_SECONDS: '100', P2PK_REDEEM_INTERVAL_SECONDS: '10' })[0]).toMatch(/at least 120/);
    // Enough room, the defaults, or no periodic sweep at all.
    expect(problems({ P2PK_LOCKTIME_MARGIN_SECONDS: '1200', P2PK_REDEEM_INTERVAL_SECONDS: '300' })).toEqual([]);
    expect(problems({})).toEqual([]);
    expect(problems({ P2PK_LOCKTIME_MARGIN_SECONDS: '0', P2PK_REDEEM_INTERVAL_SECONDS: '0' })).toEqual([]);
  });

  it('refuses credentials in URLs, which would be printed and never sent', () => {
    let err: ConfigError | undefined;
    try {
      loadConfig({ UPSTREAM_BASE_URL: 'https://user:sk-secret@api.example.com/v1', CASHU_MINTS: 'https://a:b@mint.example.com' });
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err!.problems.map((p) => p.split(/[.:]/)[0]).sort()).toEqual(['CASHU_MINTS', 'UPSTREAM_BASE_URL']);
    expect(err!.problems.join('\n')).toContain('no user:password in the URL');
    expect(err!.problems.join('\n')).not.toContain('sk-secret');
  });

  it('stops the real process with one line per problem and exit code 2', () => {
    const r = spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', resolve('src/main.ts')], {
      env: { PATH: process.env.PATH, PORT: '99999', UPSTREAM_BASE_URL: 'not a url', UPSTREAM_API_KEY: 'sk-secret-value' },
      encoding: 'utf8',
      cwd: resolve('.'),
    });
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines.some((l) => l.startsWith('config: PORT'))).toBe(true);
    expect(lines.some((l) => l.startsWith('config: UPSTREAM_BASE_URL'))).toBe(true);
    expect(r.stderr).not.toContain('sk-secret-value');
  });
});
