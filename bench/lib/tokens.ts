import { OutputData, getEncodedToken, hasValidDleq, type Proof } from '@cashu/cashu-ts';
import { wallet } from '../../test/support/cashu.ts';

/** 255 sats as one proof of each power of two up to 128: the 8-proof token the targets name. */
export const TOKEN_DENOMS = [1, 2, 4, 8, 16, 32, 64, 128];
export const TOKEN_SATS = TOKEN_DENOMS.reduce((a, b) => a + b, 0);

/** nutshell refuses requests with more than 1,000 outputs (`mint_max_request_length`). */
const TOKENS_PER_BATCH = 120;

/** A bolt11 mint quote that nutshell's FakeWallet has marked paid. */
async function paidQuote(w: Awaited<ReturnType<typeof wallet>>, amount: number) {
  // uvicorn drops keep-alive connections idle for 5 s, and unblinding a large batch takes that
  // long: a request racing that close fails before reaching the mint, so these two are retried.
  const quote = await retried(() => w.createMintQuoteBolt11(amount));
  for (let i = 0; i < 100; i++) {
    const q = await retried(() => w.checkMintQuoteBolt11(quote.quote));
    if (q.state === 'PAID') return quote;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('mint quote never paid');
}

async function retried<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= 2) throw e;
    }
  }
}

/**
 * Mints `count` tokens of 8 proofs each (255 sats), optionally locked (NUT-11) to `lockTo`, with
 * DLEQ proofs kept. One bolt11 quote and one mint call per batch of 120 tokens, so pre-minting
 * thousands of tokens takes seconds instead of minutes. The wallet talks to the mint at `mintUrl`;
 * the tokens name `tokenMint` (the counting proxy the gateway trusts), which is the same mint.
 */
export async function mintTokens(
  mintUrl: string,
  tokenMint: string,
  count: number,
  lockTo?: string,
): Promise<string[]> {
  const w = await wallet(mintUrl);
  const batches: number[] = [];
  for (let left = count; left > 0; left -= TOKENS_PER_BATCH) batches.push(Math.min(TOKENS_PER_BATCH, left));
  const out: string[] = [];
  // Two batches in flight: the mint signs one while this process unblinds the other.
  let next = 0;
  const worker = async () => {
    while (next < batches.length) {
      const n = batches[next++]!;
      // The same close can hit the mint call itself; the batch is minted again from a new quote
      // (the bench's own FakeWallet sats: a batch the mint signed after all costs nothing).
      out.push(...(await retried(() => mintBatch(w, tokenMint, n, lockTo))));
    }
  };
  await withoutClientDleqCheck(() => Promise.all([worker(), worker()]));
  return out;
}

async function mintBatch(w: Awaited<ReturnType<typeof wallet>>, tokenMint: string, n: number, lockTo?: string): Promise<string[]> {
  const amount = n * TOKEN_SATS;
  const quote = await paidQuote(w, amount);
  const denoms = Array.from({ length: n }, () => TOKEN_DENOMS).flat();
  const b = w.ops.mintBolt11(amount, quote);
  const proofs: Proof[] = await (lockTo ? b.asP2PK({ pubkey: lockTo }, denoms) : b.asRandom(denoms)).run();
  // The DLEQ proofs were not checked as they came in (see below): check one per batch here, so a
  // bench that builds them wrongly fails loudly instead of measuring refusals.
  const keyset = w.keyChain.getKeyset(proofs[0]!.id);
  if (!hasValidDleq(proofs[0]!, keyset, { require: true })) throw new Error('minted proof has no valid DLEQ proof');
  // One proof of each denomination per token, whatever order the mint answered in.
  const byAmount = new Map<number, Proof[]>();
  for (const p of proofs) {
    const a = p.amount.toNumber();
    if (!byAmount.has(a)) byAmount.set(a, []);
    byAmount.get(a)!.push(p);
  }
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const picked = TOKEN_DENOMS.map((d) => byAmount.get(d)!.pop()!);
    out.push(getEncodedToken({ mint: tokenMint, unit: 'sat', proofs: picked }));
  }
  return out;
}

/**
 * cashu-ts verifies the mint's DLEQ proof on every signature it unblinds, in pure-JS elliptic
 * curve arithmetic: three quarters of the time it takes to pre-mint thousands of tokens. While
 * the bench pre-mints (its own test tokens, from a mint it started) that check is skipped and the
 * DLEQ proof is attached unverified, exactly as cashu-ts would attach it; the gateway under test
 * still verifies every one (that cost is part of what is measured), and mintBatch checks a sample.
 */
async function withoutClientDleqCheck<T>(fn: () => Promise<T>): Promise<T> {
  type Sig = { dleq?: { s: string; e: string } } & Record<string, unknown>;
  const proto = OutputData.prototype as unknown as { toProof: (sig: Sig, keyset: unknown) => Proof; blindingFactor?: bigint };
  const original = proto.toProof;
  proto.toProof = function (this: { blindingFactor: bigint }, sig: Sig, keyset: unknown) {
    const { dleq, ...rest } = sig;
    const proof = original.call(this, rest as Sig, keyset);
    if (dleq) proof.dleq = { s: dleq.s, e: dleq.e, r: this.blindingFactor.toString(16).padStart(64, '0') };
    return proof;
  };
  try {
    return await fn();
  } finally {
    proto.toProof = original;
  }
}

/** One large token (one proof per set bit), to fund a balance key. */
export async function mintBigToken(mintUrl: string, tokenMint: string, amount: number): Promise<string> {
  const w = await wallet(mintUrl);
  const quote = await paidQuote(w, amount);
  const proofs = await w.mintProofsBolt11(amount, quote.quote);
  return getEncodedToken({ mint: tokenMint, unit: 'sat', proofs });
}
