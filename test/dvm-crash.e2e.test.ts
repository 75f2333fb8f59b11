import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { finalizeEvent, generateSecretKey, type Event } from 'nostr-tools/pure';
import { getDecodedToken, getEncodedToken } from '@cashu/cashu-ts';
import { FakeUpstream } from './support/upstream.ts';
import { expectLedgerConserved } from './support/gateway.ts';
import { processEnv, startGatewayProcess, type GatewayProcess } from './support/process.ts';
import { startRelay, type RunningRelay } from './support/relay.ts';
import { lockedToken, mintProofs, wallet } from './support/cashu.ts';
import { Requester, tag } from './support/requester.ts';
import { nostrDoorKeys } from '../src/nostr/door-keys.ts';
import { getPublicKey } from 'nostr-tools/pure';
import type { Ledger, Totals } from '../src/ledger/ledger.ts';
import type { P2pkKey } from '../src/cashu/p2pk.ts';
import { openLedger } from '../src/main.ts';
import type { CrashStep } from '../src/cashu/crash.ts';
import { expectDatabaseDrained, waitFor } from './support/suite.ts';

/**
 * A Nostr job's payment is credited to a key of the job's own, which nobody can name: a gateway
 * killed between taking the payment and answering the job must, once restarted on the same
 * ledger, give the requester back what that key holds, once, to the msat.
 */
const mintUrl = inject('mintUrl');
const upstream = new FakeUpstream();
vi.setConfig({ testTimeout: 90_000 });

const PRICES = { 'gpt-test': { prompt: 2, completion: 5 } };
const MINT_TIMEOUT_MS = 500;
const LEASE_MS = 2 * MINT_TIMEOUT_MS;

let relay: RunningRelay;
let me: Requester;
let env: Record<string, string>;
let ledger: Ledger;
let target: string;
let lock: string;
let door: P2pkKey;

/** A job sent before the gateway subscribes is still seen: the relay keeps it (DVM_MAX_AGE_SECONDS). */
const start = (extra: Record<string, string> = {}): Promise<GatewayProcess> => startGatewayProcess({ ...env, ...extra });

/** Starts a gateway that dies at `step`, sends it `job`, and waits until it is dead. */
async function crashDuring(step: string, job: () => Promise<Event>): Promise<Event> {
  const gw = await start({ GATEWAY_CRASH_AT: step as CrashStep });
  try {
    const sent = await job();
    await gw.exited;
    expect(gw.proc.signalCode).toBe('SIGKILL');
    return sent;
  } finally {
    if (gw.proc.exitCode === null && gw.proc.signalCode === null) gw.proc.kill('SIGKILL');
  }
}

async function restart(): Promise<GatewayProcess> {
  await waitFor(async () => (await ledger.pendingOps()).every((op) => Date.now() - op.updatedAt > LEASE_MS), "the crashed process's leases running out");
  const gw = await start();
  await waitFor(async () => (await ledger.pendingOps()).length === 0, 'start-up recovery', 30_000).catch(() => undefined);
  return gw;
}

/** A gateway that looks at its quotes this often holds a job in hand (its note, its watch) for LEASE_OF_POLL. */
const POLL_MS = 2000;
const LEASE_OF_POLL = Math.max(5 * POLL_MS, 10_000);

/**
 * A stranger's nutzap (NIP-61: proofs locked to the door's key) for a job, of proofs spent
 * already: the mint refuses it.
 */
async function spentNutzap(): Promise<(jobId: string) => Event> {
  const stranger = generateSecretKey();
  const w = await wallet(mintUrl);
  const { send: spent } = await w.ops.send(3, await mintProofs(mintUrl, 3)).asP2PK({ pubkey: lock }).run();
  await w.receive(getEncodedToken({ mint: mintUrl, unit: 'sat', proofs: spent }), { privkey: door.privkey });
  const proofTags = spent.map((p) => ['proof', JSON.stringify({ id: p.id, amount: p.amount.toNumber(), secret: p.secret, C: p.C, dleq: p.dleq })]);
  return (jobId) => finalizeEvent({ kind: 9321, created_at: Math.floor(Date.now() / 1000), content: '', tags: [...proofTags, ['u', mintUrl], ['e', jobId], ['p', target]] }, stranger);
}

/** The job's whole payment came back once, locked to the requester, and nothing was run or charged. */
async function expectPaidBackToRequester(jobId: string, paid: number, t0: Totals, asked: number): Promise<void> {
  const fb = await me.feedback(jobId, 'error', 30_000, (e) => tag(e, 'cashu') !== undefined);
  const refund = tag(fb, 'cashu')![1]!;
  const keysets = (await wallet(mintUrl)).keyChain.getAllKeysetIds();
  const locks = getDecodedToken(refund, keysets).proofs.map((p) => (JSON.parse(p.secret) as [string, { data: string }])[1].data);
  expect(new Set(locks)).toEqual(new Set([`02${me.pubkey}`]));
  expect((await me.spendLocked(mintUrl, refund)) * 1000).toBe(paid);
  await new Promise((r) => setTimeout(r, 1500));
  expect((await refunds(jobId)).length).toBe(1);
  expect(upstream.requests.length).toBe(asked);
  const t = await ledger.totals();
  expect([t.credited - t0.credited, t.charged - t0.charged, t.refunded - t0.refunded, t.balances - t0.balances, t.reserved]).toEqual([paid, 0, paid, 0, 0]);
  expect(await ledger.noteIds('nostr-open')).toEqual([]);
  await expectLedgerConserved(ledger, [mintUrl]);
}

const refunds = async (jobId: string) =>
  (await me.pool.querySync([relay.url], { kinds: [7000], '#e': [jobId] })).filter((e) => tag(e, 'cashu'));

beforeAll(async () => {
  await upstream.start();
  relay = await startRelay();
  me = new Requester([relay.url]);
  const sk = generateSecretKey();
  target = getPublicKey(sk);
  door = nostrDoorKeys(sk).p2pk;
  lock = door.pubkey;
  env = await processEnv(mintUrl, upstream.url, PRICES, {
    MINT_TIMEOUT_MS: String(MINT_TIMEOUT_MS),
    CHANGE_FLOAT_PROOFS: '0',
    RELAYS: relay.url,
    NSEC: Buffer.from(sk).toString('hex'),
    DVM_DEFAULT_MODEL: 'gpt-test',
    DVM_QUOTE_POLL_MS: '200',
    INSTANCE_STALE_SECONDS: '1',
  });
  const first = await startGatewayProcess(env);
  await first.stop();
  ledger = await openLedger(env.DATABASE_URL!);
});
afterAll(async () => {
  try {
    if (ledger) await expectDatabaseDrained(mintUrl, env, PRICES);
  } finally {
    await ledger?.close();
    me?.close();
    await relay?.stop();
    await upstream.stop();
  }
});

describe('a gateway killed between taking a job payment and answering the job', () => {
  it('redeem:after-commit: the restarted gateway returns the whole token, once, and a replayed job pays nothing twice', async () => {
    const t0 = await ledger.totals();
    const asked = upstream.requests.length;
    const job = await crashDuring('redeem:after-commit', async () =>
      me.publish(me.job(target, [['i', 'Crash after the credit', 'text'], ['param', 'max_tokens', '3'], ['cashu', await lockedToken(mintUrl, 20, lock)]])),
    );
    // Credited to the job's key, and nothing answered.
    const credited = (await ledger.totals()).credited - t0.credited;
    expect(credited).toBe(20_000);
    const gw = await restart();
    try {
      const fb = await me.feedback(job.id, 'error', 30_000, (e) => tag(e, 'cashu') !== undefined);
      expect(await me.spendLocked(mintUrl, tag(fb, 'cashu')![1]!)).toBe(20);
      expect(upstream.requests.length).toBe(asked);
      // The job seen again (a relay replays it, or the requester sends it again): nothing more.
      await me.publish(job);
      await new Promise((r) => setTimeout(r, 1500));
      expect((await refunds(job.id)).length).toBe(1);
      expect(upstream.requests.length).toBe(asked);
      const t = await ledger.totals();
      expect([t.refunded - t0.refunded, t.balances - t0.balances, t.reserved]).toEqual([20_000, 0, 0]);
      expect(await ledger.noteIds('nostr-open')).toEqual([]);
      await expectLedgerConserved(ledger, [mintUrl]);
    } finally {
      await gw.stop();
    }
  });

  it('dvm:before-deliver: the change made but not sent goes out after the restart', async () => {
    const t0 = await ledger.totals();
    const job = await crashDuring('dvm:before-deliver', async () =>
      me.publish(me.job(target, [['i', 'Crash before the result', 'text'], ['param', 'max_tokens', '3'], ['cashu', await lockedToken(mintUrl, 20, lock)]])),
    );
    const made = (await ledger.totals()).refunded - t0.refunded;
    expect(made).toBeGreaterThan(0);
    const gw = await restart();
    try {
      const fb = await me.feedback(job.id, 'error', 30_000, (e) => tag(e, 'cashu') !== undefined);
      expect((await me.spendLocked(mintUrl, tag(fb, 'cashu')![1]!)) * 1000).toBe(made);
      await me.publish(job);
      await new Promise((r) => setTimeout(r, 1500));
      expect((await refunds(job.id)).length).toBe(1);
      const t = await ledger.totals();
      expect([t.refunded - t0.refunded, t.balances - t0.balances, t.reserved]).toEqual([made, 0, 0]);
      expect(await ledger.noteIds('nostr-open')).toEqual([]);
      await expectLedgerConserved(ledger, [mintUrl]);
    } finally {
      await gw.stop();
    }
  });

  it('dvm:before-deliver, paid by Lightning: the change goes out after the restart, and the quote pays nothing twice', async () => {
    const t0 = await ledger.totals();
    let paid = 0;
    // The mint's FakeWallet pays the invoice at once; the gateway mints it and runs the job.
    const job = await crashDuring('dvm:before-deliver', async () => {
      const req = await me.publish(me.job(target, [['i', 'Paid by Lightning, then a crash', 'text'], ['param', 'max_tokens', '400']]));
      paid = Number(tag(await me.feedback(req.id, 'payment-required'), 'amount')![1]);
      return req;
    });
    const made = (await ledger.totals()).refunded - t0.refunded;
    expect(made).toBeGreaterThan(0);
    expect((await ledger.totals()).credited - t0.credited).toBe(paid);
    const gw = await restart();
    try {
      const fb = await me.feedback(job.id, 'error', 30_000, (e) => tag(e, 'cashu') !== undefined);
      expect((await me.spendLocked(mintUrl, tag(fb, 'cashu')![1]!)) * 1000).toBe(made);
      await new Promise((r) => setTimeout(r, 1500));
      expect((await refunds(job.id)).length).toBe(1);
      const t = await ledger.totals();
      expect([t.credited - t0.credited, t.refunded - t0.refunded, t.balances - t0.balances, t.reserved]).toEqual([paid, made, 0, 0]);
      expect(await ledger.noteIds('nostr-open')).toEqual([]);
      await expectLedgerConserved(ledger, [mintUrl]);
    } finally {
      await gw.stop();
    }
  });

  it("quote:after-commit, after a stranger's refused nutzap for the job: what the invoice paid goes back to the requester, not the stranger", async () => {
    const t0 = await ledger.totals();
    const asked = upstream.requests.length;
    const nutzap = await spentNutzap();
    const gw = await start({ GATEWAY_CRASH_AT: 'quote:after-commit' satisfies CrashStep, DVM_QUOTE_POLL_MS: String(POLL_MS) });
    let job: Event;
    let paid: number;
    let askedAt: number;
    try {
      job = await me.publish(me.job(target, [['i', 'A stranger nutzaps, then the invoice is paid', 'text'], ['param', 'max_tokens', '400']]));
      paid = Number(tag(await me.feedback(job.id, 'payment-required'), 'amount')![1]);
      askedAt = Date.now();
      // Refused before the quote is first looked at, POLL_MS after it was asked for.
      await me.publish(nutzap(job.id));
      await waitFor(async () => gw.output().includes('nutzap not accepted'), 'the nutzap refused');
      // The invoice (paid at once by the FakeWallet) is minted to the job's key, and the gateway dies.
      await gw.exited;
      expect(gw.proc.signalCode).toBe('SIGKILL');
    } finally {
      if (gw.proc.exitCode === null && gw.proc.signalCode === null) gw.proc.kill('SIGKILL');
    }
    expect((await ledger.totals()).credited - t0.credited).toBe(paid);
    // Until what the dead gateway held in hand (the job's note, its watch) is anyone's to settle.
    await new Promise((r) => setTimeout(r, askedAt + POLL_MS + LEASE_OF_POLL + 1000 - Date.now()));
    const again = await restart();
    try {
      await expectPaidBackToRequester(job.id, paid, t0, asked);
    } finally {
      await again.stop();
    }
  });

  it("quote:after-commit, then a stranger's refused nutzap on the instance that takes over: what the invoice paid goes back to the requester", async () => {
    const t0 = await ledger.totals();
    const asked = upstream.requests.length;
    const nutzap = await spentNutzap();
    let paid = 0;
    const job = await crashDuring('quote:after-commit', async () => {
      const req = await me.publish(me.job(target, [['i', 'The invoice is paid, then a stranger nutzaps', 'text'], ['param', 'max_tokens', '400']]));
      paid = Number(tag(await me.feedback(req.id, 'payment-required'), 'amount')![1]);
      return req;
    });
    expect((await ledger.totals()).credited - t0.credited).toBe(paid);
    // Up while the dead one's note and watch are still in hand: it settles the note once its
    // lease runs out, and reads the nutzap meanwhile.
    const again = await start({ DVM_QUOTE_POLL_MS: String(POLL_MS) });
    try {
      await me.publish(nutzap(job.id));
      await waitFor(async () => again.output().includes('nutzap not accepted'), 'the nutzap refused');
      await expectPaidBackToRequester(job.id, paid, t0, asked);
    } finally {
      await again.stop();
    }
  });

  it('a job that ran and was answered leaves no note behind', async () => {
    const gw = await start();
    try {
      const job = await me.publish(me.job(target, [['i', 'No crash', 'text'], ['param', 'max_tokens', '3'], ['cashu', await lockedToken(mintUrl, 20, lock)]]));
      const res = await me.result(job.id);
      expect(await me.spendLocked(mintUrl, tag(res, 'cashu')![1]!)).toBeGreaterThan(0);
      await me.feedback(job.id, 'success');
      expect(await ledger.noteIds('nostr-open')).toEqual([]);
      await expectLedgerConserved(ledger, [mintUrl]);
    } finally {
      await gw.stop();
    }
  });
});
