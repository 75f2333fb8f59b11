import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { CashuWallets } from '../cashu/wallet.ts';
import { apiKeyOf, keyHashOfInvoice } from '../cashu/credential.ts';
import { HttpError } from './errors.ts';
import type { Ledger } from '../ledger/ledger.ts';

const invoiceBody = z.object({
  amount_sats: z.number().int().min(1).max(1_000_000),
  purpose: z.enum(['create', 'topup']).default('create'),
});

/**
 * Routstr's RIP-08: fund a key by Lightning. The invoice is a NUT-04 mint quote at the primary
 * mint; once it is paid the gateway mints the ecash to itself (journaled, like any redemption)
 * and credits the key. The invoice id is a secret of the gateway's, not the quote id: the mint
 * (and whoever reads its logs) knows every quote id, and a new key is derived from the invoice id.
 * The ledger maps it to its quote, so its status can be checked on any instance, after a restart.
 */
export function lightningRoutes(app: FastifyInstance, deps: { ledger: Ledger; wallets: CashuWallets }): void {
  const { ledger, wallets } = deps;
  const mint = wallets.mints[0]!;
  // Top-ups name the key they fund; the ledger keeps that until the invoice is paid or expires,
  // so any instance, or this one after a restart, credits the key that was named.
  const TOPUP = 'lightning-topup';
  // An invoice id's quote; and a quote given an invoice id, which its own id no longer names.
  const INVOICE = 'lightning-invoice';
  const TAKEN = 'lightning-quote';
  const FOREVER = Number.MAX_SAFE_INTEGER;
  // A quote asked about by its own id (an invoice made before), claimed for that so no invoice id can be given it.
  const LEGACY = 'legacy';
  const GRACE_MS = 7 * 24 * 3600 * 1000;
  const ID = /^[A-Za-z0-9_-]{1,128}$/;

  app.post('/v1/balance/lightning/invoice', async (req: FastifyRequest) => {
    const parsed = invoiceBody.safeParse(req.body ?? {});
    if (!parsed.success) throw new HttpError(400, 'invalid_request', 'Send {"amount_sats": 1..1000000, "purpose": "create"|"topup"}.');
    const { amount_sats, purpose } = parsed.data;
    let target: string | undefined;
    if (purpose === 'topup') {
      const key = req.credential.apiKey;
      if (key?.kind !== 'key' || !(await ledger.getKey(key.keyHash))) {
        throw new HttpError(401, 'invalid_api_key', 'A top-up needs Authorization: Bearer sk-… of an existing key.');
      }
      target = key.keyHash;
    }
    let quote;
    try {
      quote = await (await wallets.wallet(mint, 'sat')).createMintQuoteBolt11(amount_sats);
    } catch {
      throw new HttpError(503, 'cashu_mint_unreachable', 'The mint could not make an invoice; try again shortly.', { headers: { 'retry-after': '5' } });
    }
    // Unpaid, the notes go some time after the quote can no longer be paid (a stranger can make
    // invoices for nothing); a paid invoice's are made permanent by the status check that finds it paid.
    // Never sooner than a week from now, whatever expiry the mint names: an expiry in the past (its
    // clock, or its lie) would drop the notes at once, and the quote, paid, be redeemed by its own id.
    const until = Math.max(quote.expiry ? quote.expiry * 1000 : 0, Date.now()) + GRACE_MS;
    const invoiceId = randomBytes(24).toString('base64url');
    // Claimed, not just written: the mint knows the quote id before we do, and may have asked the
    // status route about it as a legacy invoice already; then the quote is its, not ours to hand out.
    if ((await ledger.claimNote(TAKEN, quote.quote, invoiceId, until)) !== invoiceId) {
      throw new HttpError(503, 'cashu_mint_unreachable', 'The mint could not make an invoice; try again shortly.', { headers: { 'retry-after': '5' } });
    }
    await ledger.putNote(INVOICE, invoiceId, quote.quote, until);
    if (target) await ledger.putNote(TOPUP, quote.quote, target, until);
    return {
      invoice_id: invoiceId,
      bolt11: quote.request,
      amount_sats,
      expires_at: quote.expiry ?? null,
      purpose,
    };
  });

  app.get('/v1/balance/lightning/invoice/:id/status', async (req: FastifyRequest<{ Params: { id: string } }>) => {
    const id = req.params.id;
    // Ours are base64url, quote ids (nutshell's, CDK's: UUIDs, hex) too. Anything else, say "a/../<quote>"
    // or "<quote>?x", the mint's URL would turn into another quote's, with a legacy claim noted for each.
    if (!ID.test(id)) throw new HttpError(404, 'invoice_not_found', 'No such invoice.');
    const mapped = await ledger.getNote(INVOICE, id);
    // An invoice made before invoice ids were the gateway's own is named by its quote id.
    const legacy = mapped === undefined;
    const quoteId = mapped ?? id;
    let claimed = false;
    if (legacy) {
      const taken = await ledger.getNote(TAKEN, id);
      if (taken !== undefined && taken !== LEGACY) throw new HttpError(404, 'invoice_not_found', 'No such invoice.');
      claimed = taken === LEGACY;
    }
    const w = await wallets.wallet(mint, 'sat').catch(() => {
      throw new HttpError(503, 'cashu_mint_unreachable', 'The mint could not be reached.', { headers: { 'retry-after': '5' } });
    });
    let q;
    try {
      q = await w.checkMintQuoteBolt11(quoteId);
    } catch {
      throw new HttpError(404, 'invoice_not_found', 'No such invoice.');
    }
    // A quote given an invoice id keeps that claim until a week after it expired, then it is gone: past
    // that, a quote not claimed as legacy before may be one of ours, paid and never asked about, whose id
    // the mint (and its logs) knows. It is not redeemed by that id, into a key derived from it.
    // An issued one is only looked up (the key it funded, if we did): that takes no claim.
    if (legacy && !claimed && q.state === 'PAID' && q.expiry != null && q.expiry * 1000 + GRACE_MS < Date.now()) {
      throw new HttpError(404, 'invoice_not_found', 'No such invoice.');
    }
    // Before redeeming a quote by its own id, claim it as legacy: an invoice id given it meanwhile
    // (its notes written while the mint held our question) wins or loses against this, atomically.
    // An issued quote is not redeemed again, only looked up: no claim, so none for strangers' own.
    if (legacy && q.state === 'PAID' && (await ledger.claimNote(TAKEN, id, LEGACY, FOREVER)) !== LEGACY) {
      throw new HttpError(404, 'invoice_not_found', 'No such invoice.');
    }
    const amount = q.amount.toNumber();
    const keyHash = (await ledger.getNote(TOPUP, quoteId)) ?? keyHashOfInvoice(mint, id);
    const key = q.state === 'UNPAID' ? undefined : await wallets.redeemQuote({ mint, unit: 'sat', quote: quoteId, amount, keyHash });
    if (!key) {
      const expired = q.expiry != null && q.expiry * 1000 < Date.now();
      return { status: expired ? 'expired' : 'pending', amount_sats: amount, expires_at: q.expiry ?? null };
    }
    if (!legacy) {
      // Paid: kept for ever, as it may be asked about long after its quote expired.
      await ledger.putNote(TAKEN, quoteId, id, FOREVER);
      await ledger.putNote(INVOICE, id, quoteId, FOREVER);
    }
    // The key an id may be told of: the one it funds. A quote id (which the mint knows) names only
    // the key derived from it; a top-up's key its owner already holds, and the mint must not learn it.
    const entitled = legacy ? keyHashOfInvoice(mint, id) : keyHash;
    if (key.hash !== entitled) return { status: 'paid', amount_sats: amount };
    return { status: 'paid', api_key: apiKeyOf(key.hash), amount_sats: amount, balance: key.balance - key.reserved };
  });
}
