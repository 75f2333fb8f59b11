import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { FakeUpstream } from './support/upstream.ts';
import { expectLedgerConserved } from './support/gateway.ts';
import { processEnv, startGatewayProcess, type GatewayProcess } from './support/process.ts';
import { mintToken, proofStates, receive, wallet } from './support/cashu.ts';
import { externalInvoice } from './support/invoice.ts';
import { sha256Hex } from '../src/cashu/credential.ts';
import type { Ledger } from '../src/ledger/ledger.ts';
import { openLedger } from '../src/main.ts';
import type { CrashStep } from '../src/cashu/crash.ts';
import type { Billed } from './support/wire.ts';
import { bearer, chat as send, expectDatabaseDrained, waitFor } from './support/suite.ts';

const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
// Each case starts, kills and restarts gateway processes: on a busy 2-core machine that is slow.
vi.setConfig({ testTimeout: 90_000 });

const MINT_TIMEOUT_MS = 500;
/** Twice the mint timeout: after this, a crashed process's operations may be recovered. */
const LEASE_MS = 2 * MINT_TIMEOUT_MS;

/** gpt-test as everywhere; gpt-cheap dear, so the withdrawal cases earn whole sats in a few requests. */
const CRASH_PRICES = { 'gpt-test': { prompt: 2, completion: 5 }, 'gpt-cheap': { prompt: 1000, completion: 1000 } };

let env: Record<string, string>;
let ledger: Ledger;

const chat = (gw: GatewayProcess, token: string, model = 'gpt-test') =>
  send(gw, bearer(token), { model, messages: [{ role: 'user', content: 'crash test' }], max_tokens: 3 });
const refund = (gw: GatewayProcess, token: string) =>
  fetch(`${gw.url}/v1/balance/refund`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });

/** Sends a request to a gateway that is about to kill itself, and waits until it is dead. */
async function crashDuring(step: CrashStep, act: (gw: GatewayProcess) => Promise<Response>): Promise<void> {
  const gw = await startGatewayProcess({ ...env, GATEWAY_CRASH_AT: step });
  try {
    await expect(act(gw)).rejects.toThrow();
    await gw.exited;
    expect(gw.proc.signalCode).toBe('SIGKILL');
  } finally {
    // If it did not crash as it should, the test fails; the process must not outlive it.
    if (gw.proc.exitCode === null && gw.proc.signalCode === null) gw.proc.kill('SIGKILL');
  }
}

/** Restarts once the crashed process's leases have run out and waits for start-up recovery. */
async function restart(): Promise<GatewayProcess> {
  // Start-up recovery settles only operations whose lease is over: wait for that state, read
  // from each operation's own last touch, not for a guessed time.
  await waitFor(async () => (await ledger.pendingOps()).every((op) => Date.now() - op.updatedAt > LEASE_MS), "the crashed process's leases running out");
  const gw = await startGatewayProcess(env);
  // Recovery asks the mint about each operation; on a busy machine that takes a while.
  await waitFor(async () => (await ledger.pendingOps()).length === 0, 'start-up recovery', 30_000).catch(() => undefined);
  expect(await ledger.pendingOps()).toEqual([]);
  return gw;
}

beforeAll(async () => {
  await upstream.start();
  env = await processEnv(mintUrl, upstream.url, CRASH_PRICES, {
    MINT_TIMEOUT_MS: String(MINT_TIMEOUT_MS),
    // No change float: its refills, timed by each process, could leave held proofs that pay a
    // refund exactly, with no swap at all, and the refund's swap steps would never be reached.
    CHANGE_FLOAT_PROOFS: '0',
  });
  // The gateway creates its schema; open the ledger alongside it afterwards.
  const first = await startGatewayProcess(env);
  await first.stop();
  ledger = await openLedger(env.DATABASE_URL!);
});
afterAll(async () => {
  // Every process has stopped: what the crashes and recoveries left is drained to the msat.
  try {
    if (ledger) await expectDatabaseDrained(mintUrl, env, CRASH_PRICES);
  } finally {
    await ledger?.close();
  }
  await upstream.stop();
});

describe('a crash at any step of a redemption', () => {
  for (const step of ['redeem:before-swap', 'redeem:after-swap', 'redeem:after-commit'] as const) {
    it(`${step}: the token ends up credited exactly once, or still with its owner`, async () => {
      const token = await mintToken(mintUrl, 64);
      const before = await ledger.totals();
      await crashDuring(step, (gw) => chat(gw, token));
      const gw = await restart();
      try {
        const key = await ledger.getKey(sha256Hex(token));
        if (step === 'redeem:before-swap') {
          // The swap never reached the mint: nothing credited, and the owner still holds the token.
          expect(key).toBeUndefined();
          expect(await proofStates(mintUrl, token)).toEqual(['UNSPENT']);
        } else {
          expect(key!.balance).toBe(64_000);
          expect(await proofStates(mintUrl, token)).toEqual(['SPENT']);
        }
        await expectLedgerConserved(ledger, [mintUrl]);
        // Either way the token now pays for a request, and is credited once in all.
        expect((await chat(gw, token)).status).toBe(200);
        expect((await ledger.totals()).credited - before.credited).toBe(64_000);
        await expectLedgerConserved(ledger, [mintUrl]);
      } finally {
        await gw.stop();
      }
    });
  }
});

describe('a crash at any step of a refund', () => {
  for (const step of ['refund:after-debit', 'refund:before-swap', 'refund:after-swap', 'refund:after-commit'] as const) {
    it(`${step}: the refund is paid once or the balance is intact`, async () => {
      const token = await mintToken(mintUrl, 64);
      const setup = await startGatewayProcess(env);
      const res = await chat(setup, token);
      const cost = ((await res.json()) as Billed).usage.cost.total_msats;
      await setup.stop();
      const left = 64_000 - cost;

      await crashDuring(step, (gw) => refund(gw, token));
      const gw = await restart();
      try {
        await expectLedgerConserved(ledger, [mintUrl]);
        const key = (await ledger.getKey(sha256Hex(token)))!;
        const settled = step === 'refund:after-swap' || step === 'refund:after-commit';
        expect(key.balance).toBe(settled ? left % 1000 : left);
        // Asking again returns the refund: the one recovered, or a new one for the intact balance.
        const again = (await (await refund(gw, token)).json()) as { token: string; sats: string };
        expect(again.sats).toBe(String(Math.floor(left / 1000)));
        expect(await receive(mintUrl, again.token)).toBe(Math.floor(left / 1000));
        expect((await ledger.getKey(sha256Hex(token)))!.balance).toBe(left % 1000);
        await expectLedgerConserved(ledger, [mintUrl]);
      } finally {
        await gw.stop();
      }
    });
  }
});

describe('a crash in the middle of a stream', () => {
  it('releases the reservation once the dead process stops heart-beating, charging nothing', async () => {
    const quick = { ...env, INSTANCE_STALE_SECONDS: '1' };
    const gw = await startGatewayProcess(quick);
    const token = await mintToken(mintUrl, 64);
    expect((await chat(gw, token)).status).toBe(200);
    const before = (await ledger.getKey(sha256Hex(token)))!;

    upstream.modes.push('slow');
    const streaming = send(gw, bearer(token), { messages: [{ role: 'user', content: 'crash test' }], stream: true }).then((r) => r.text()).catch(() => 'cut');
    await waitFor(async () => (await ledger.getKey(sha256Hex(token)))!.reserved > 0, 'the stream reserved').catch(() => undefined);
    expect((await ledger.getKey(sha256Hex(token)))!.reserved).toBeGreaterThan(0);
    gw.proc.kill('SIGKILL');
    await gw.exited;
    await streaming;

    const next = await startGatewayProcess(quick);
    try {
      await waitFor(async () => (await ledger.getKey(sha256Hex(token)))!.reserved === 0, 'the orphan released').catch(() => undefined);
      const after = (await ledger.getKey(sha256Hex(token)))!;
      expect([after.balance, after.reserved]).toEqual([before.balance, 0]);
      expect((await refund(next, token)).status).toBe(200);
      await expectLedgerConserved(ledger, [mintUrl]);
    } finally {
      await next.stop();
    }
  });
});

describe('a crash in the middle of a withdrawal to a Lightning invoice', () => {
  /** Earns at least `sats` for the operator, on the dear model, in a few requests. */
  async function earn(sats: number): Promise<void> {
    const gw = await startGatewayProcess(env);
    try {
      const token = await mintToken(mintUrl, 100);
      for (;;) {
        const t = await ledger.totals();
        if (t.charged - t.withdrawn - t.fees >= sats * 1000) return;
        expect((await chat(gw, token, 'gpt-cheap')).status).toBe(200);
      }
    } finally {
      await gw.stop();
    }
  }

  const withdraw = (invoice: string, crashAt?: CrashStep) =>
    spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', resolve('src/cli.ts'), 'withdraw', '--invoice', invoice], {
      env: { PATH: process.env.PATH, ...env, ...(crashAt ? { GATEWAY_CRASH_AT: crashAt } : {}) },
      encoding: 'utf8',
    });

  for (const step of ['melt:before-melt', 'melt:after-melt'] as const) {
    it(`${step}: the invoice is paid once and booked once, or not paid and nothing booked`, async () => {
      await earn(12);
      const before = await ledger.totals();
      const invoice = externalInvoice(9);
      const crashed = withdraw(invoice, step);
      expect(crashed.signal).toBe('SIGKILL');
      const op = (await ledger.pendingOps()).find((o) => o.kind === 'melt')!;
      const quote = (await ledger.meltOfOp(op.id))!.quote;

      const gw = await restart();
      try {
        const melt = (await ledger.meltOfOp(op.id))!;
        const atMint = await (await wallet(mintUrl)).checkMeltQuoteBolt11(quote);
        const after = await ledger.totals();
        if (step === 'melt:before-melt') {
          // The mint never saw the melt: the booking is reversed and the proofs are back.
          expect([melt.state, atMint.state]).toEqual(['failed', 'UNPAID']);
          expect(after).toEqual(before);
          await expectLedgerConserved(ledger, [mintUrl]);
          // The invoice can still be paid, once.
          const again = withdraw(invoice);
          expect(again.status).toBe(0);
          expect(again.stderr).toContain('paid 9 sat');
        } else {
          // Paid while the process died: recovery books it from the quote, with the change.
          expect([melt.state, melt.amount, melt.fee, atMint.state]).toEqual(['paid', 9, 1, 'PAID']);
          expect([after.withdrawn - before.withdrawn, after.fees - before.fees]).toEqual([9000, 1000]);
        }
        await expectLedgerConserved(ledger, [mintUrl]);
        const paid = await ledger.totals();
        expect([paid.withdrawn - before.withdrawn, paid.fees - before.fees]).toEqual([9000, 1000]);
      } finally {
        await gw.stop();
      }
    });
  }
});
