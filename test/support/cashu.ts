import { Wallet, getDecodedToken, getEncodedToken, getTokenMetadata, type Proof } from '@cashu/cashu-ts';

const wallets = new Map<string, Promise<Wallet>>();

export function wallet(mintUrl: string, unit = 'sat'): Promise<Wallet> {
  const id = `${unit} ${mintUrl}`;
  let w = wallets.get(id);
  if (!w) {
    w = (async () => {
      const wl = new Wallet(mintUrl, { unit });
      await wl.loadMint();
      return wl;
    })();
    wallets.set(id, w);
  }
  return w;
}

/** Mints fresh ecash through a bolt11 quote, which nutshell's FakeWallet pays at once. */
export async function mintProofs(mintUrl: string, amount: number, unit = 'sat'): Promise<Proof[]> {
  const w = await wallet(mintUrl, unit);
  const quote = await w.createMintQuoteBolt11(amount);
  for (let i = 0; i < 50; i++) {
    const q = await w.checkMintQuoteBolt11(quote.quote);
    if (q.state === 'PAID') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return w.mintProofsBolt11(amount, quote.quote);
}

export async function mintToken(mintUrl: string, amount: number, unit = 'sat'): Promise<string> {
  return getEncodedToken({ mint: mintUrl, unit, proofs: await mintProofs(mintUrl, amount, unit) });
}

/** Redeems a token at the mint as its holder would; returns what was received. */
export async function receive(mintUrl: string, token: string): Promise<number> {
  const meta = getTokenMetadata(token);
  const w = await wallet(mintUrl, meta.unit ?? 'sat');
  const proofs = await w.receive(token);
  return proofs.reduce((s, p) => s + p.amount.toNumber(), 0);
}

export async function proofStates(mintUrl: string, token: string): Promise<string[]> {
  const meta = getTokenMetadata(token);
  const w = await wallet(mintUrl, meta.unit ?? 'sat');
  const decoded = w.decodeToken(token);
  return (await w.checkProofsStates(decoded.proofs)).map((s) => s.state);
}

export async function tokenValue(mintUrl: string, token: string): Promise<number> {
  return getTokenMetadata(token).amount.toNumber();
}

/** The same proofs under another mint URL or unit: what a forged or foreign token looks like. */
export async function relabel(mintUrl: string, token: string, to: { mint?: string; unit?: string }): Promise<string> {
  const meta = getTokenMetadata(token);
  const w = await wallet(mintUrl, meta.unit ?? 'sat');
  const decoded = getDecodedToken(token, w.keyChain.getAllKeysetIds());
  return getEncodedToken({ mint: to.mint ?? decoded.mint, unit: to.unit ?? decoded.unit ?? 'sat', proofs: decoded.proofs });
}

/** A V3 `cashuA` token (JSON), as older wallets still produce. */
export async function asCashuA(mintUrl: string, token: string): Promise<string> {
  const meta = getTokenMetadata(token);
  const w = await wallet(mintUrl, meta.unit ?? 'sat');
  const decoded = getDecodedToken(token, w.keyChain.getAllKeysetIds());
  const json = {
    token: [{ mint: decoded.mint, proofs: decoded.proofs.map((p) => ({ id: p.id, amount: p.amount.toNumber(), secret: p.secret, C: p.C })) }],
    unit: decoded.unit,
  };
  return `cashuA${Buffer.from(JSON.stringify(json)).toString('base64url')}`;
}

/** Ecash locked (NUT-11) to `pubkey`, as a payer answering the gateway's 402 would make it. */
export async function lockedToken(
  mintUrl: string,
  amount: number,
  pubkey: string,
  opts: { locktime?: number; refundKeys?: string[]; unit?: string; removeDleq?: boolean; swapFee?: number } = {},
): Promise<string> {
  const unit = opts.unit ?? 'sat';
  const w = await wallet(mintUrl, unit);
  // At a mint with input fees, the payer's own swap that locks the proofs costs `swapFee` more.
  const proofs = await mintProofs(mintUrl, amount + (opts.swapFee ?? 0), unit);
  const p2pk: { pubkey: string; locktime?: number; refundKeys?: string[] } = { pubkey };
  if (opts.locktime !== undefined) p2pk.locktime = opts.locktime;
  if (opts.refundKeys) p2pk.refundKeys = opts.refundKeys;
  const { send } = await w.ops.send(amount, proofs).asP2PK(p2pk).run();
  return getEncodedToken({ mint: mintUrl, unit, proofs: send }, { removeDleq: opts.removeDleq ?? false });
}
