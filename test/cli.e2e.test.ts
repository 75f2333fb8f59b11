import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { FakeUpstream } from './support/upstream.ts';
import { expectLedgerConserved } from './support/gateway.ts';
import { processEnv, startGatewayProcess } from './support/process.ts';
import { mintToken, receive } from './support/cashu.ts';
import { externalInvoice } from './support/invoice.ts';
import { openLedger } from '../src/main.ts';
import { bearer, chat, expectDatabaseDrained } from './support/suite.ts';
import type { Billed } from './support/wire.ts';

const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
let env: Record<string, string>;
const DEAR = { 'gpt-test': { prompt: 100, completion: 500 } };
const DEARER = { 'gpt-test': { prompt: 1000, completion: 1000 } };

function cli(...args: string[]) {
  return spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', resolve('src/cli.ts'), ...args], {
    env: { PATH: process.env.PATH, ...env },
    encoding: 'utf8',
  });
}

/** Pays for `n` requests with `token`, as a client would; returns what they cost in msats. */
async function earn(gw: { url: string }, token: string, n: number): Promise<number> {
  let charged = 0;
  for (let i = 0; i < n; i++) {
    const res = await chat(gw, bearer(token), { messages: [{ role: 'user', content: 'earn' }], max_tokens: 3 });
    expect(res.status).toBe(200);
    charged += ((await res.json()) as Billed).usage.cost.total_msats;
  }
  return charged;
}

beforeAll(async () => {
  await upstream.start();
  // Dear enough that a few requests earn whole sats.
  env = await processEnv(mintUrl, upstream.url, DEAR);
});
afterAll(async () => {
  try {
    // The gateways have stopped: what their keys still hold and any earnings left, drained from
    // here. The dearer table bounds every charge; those made at DEAR were held to it already.
    await expectDatabaseDrained(mintUrl, env, DEARER);
  } finally {
    await upstream.stop();
  }
});

describe('the CLI', () => {
  it('explains every command with --help', () => {
    const main = cli('--help');
    expect(main.status).toBe(0);
    expect(main.stdout).toContain('withdraw');
    for (const cmd of ['serve', 'withdraw']) {
      const r = cli(cmd, '--help');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(`Usage: cashu-gateway ${cmd}`);
    }
    expect(cli('withdraw', '--help').stdout).toContain('--invoice <bolt11>');
    const bad = cli('frobnicate');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('unknown command: frobnicate');
  });

  it('withdraws the earnings as a token the mint accepts, booked in the ledger', async () => {
    const gw = await startGatewayProcess(env);
    let charged = 0;
    try {
      charged = await earn(gw, await mintToken(mintUrl, 64), 3);
    } finally {
      await gw.stop();
    }
    expect(charged).toBeGreaterThan(2000);

    const out = cli('withdraw');
    expect(out.status).toBe(0);
    const token = out.stdout.trim();
    expect(token).toMatch(/^cashuB/);
    expect(out.stderr).toContain(`withdrew ${Math.floor(charged / 1000)} sat`);
    expect(await receive(mintUrl, token)).toBe(Math.floor(charged / 1000));

    const ledger = await openLedger(env.DATABASE_URL!);
    try {
      const t = await ledger.totals();
      expect(t.withdrawn).toBe(Math.floor(charged / 1000) * 1000);
      expect(t.charged).toBe(charged);
      await expectLedgerConserved(ledger, [mintUrl]);
    } finally {
      await ledger.close();
    }

    const again = cli('withdraw');
    expect(again.status).toBe(0);
    expect(again.stdout).toBe('');
    expect(again.stderr).toContain('nothing to withdraw');
    // Drained here, against this test's own prices, before the next one charges at dearer ones.
    await expectDatabaseDrained(mintUrl, env, DEAR);
  });

  it('pays a Lightning invoice from the earnings with withdraw --invoice', async () => {
    const gw = await startGatewayProcess({ ...env, MODEL_PRICES: JSON.stringify(DEARER) });
    try {
      await earn(gw, await mintToken(mintUrl, 100), 3);
    } finally {
      await gw.stop();
    }
    const ledger = await openLedger(env.DATABASE_URL!);
    try {
      const before = await ledger.totals();
      const sats = Math.floor((before.charged - before.withdrawn - before.fees) / 1000) - 2;
      expect(sats).toBeGreaterThan(0);
      const out = cli('withdraw', '--invoice', externalInvoice(sats));
      expect(out.status).toBe(0);
      expect(out.stdout.trim()).toMatch(/^[0-9a-f]{64}$/);
      expect(out.stderr).toContain(`paid ${sats} sat from ${mintUrl}, fee 1 sat`);
      const after = await ledger.totals();
      expect([after.withdrawn - before.withdrawn, after.fees - before.fees]).toEqual([sats * 1000, 1000]);
      await expectLedgerConserved(ledger, [mintUrl]);

      const refused = cli('withdraw', '--invoice', externalInvoice(sats + 10));
      expect(refused.status).toBe(1);
      expect(refused.stderr).toContain('do not cover this invoice');
      expect(await ledger.totals()).toEqual(after);
    } finally {
      await ledger.close();
    }
  });
});
