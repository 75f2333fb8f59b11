import type { Logger } from 'pino';
import { MSATS_PER, type Ledger, type MeltRow } from '../ledger/ledger.ts';
import { decodeBolt11 } from '../net/bolt11.ts';
import { invoiceFor, isLightningAddress } from '../net/lnurl.ts';
import { PeerError, type PeerFetch } from '../net/peer-fetch.ts';
import { CashuError } from './errors.ts';
import type { CashuWallets } from './wallet.ts';

export type LightningTarget = { invoice: string } | { lightningAddress: string };

/**
 * How many times an address is asked for a smaller invoice when the mint's fee reserve for the
 * last one did not fit in the balance: the reserve is only known once an invoice is quoted.
 */
const ATTEMPTS = 3;

function unusable(e: PeerError): CashuError {
  return new CashuError('lightning_address_unusable', `The Lightning address could not be paid: ${e.message}. Your balance is unchanged.`, {
    extra: { reason: e.reason },
  });
}

/**
 * Pays a key's balance to Lightning by melting at a trusted mint (CashuWallets.melt, journaled and
 * recovered like the operator's withdrawals). The fee reserve comes out of the balance; what the
 * payment did not use of it is back on the key once the melt settles. A retry does not pay twice:
 * a melt still in flight, or a paid one whose leftover is only its unused reserve, is answered
 * again instead of a new payment.
 */
export async function refundToLightning(
  deps: { ledger: Ledger; wallets: CashuWallets; peers: PeerFetch; log: Logger },
  keyHash: string,
  target: LightningTarget,
): Promise<MeltRow> {
  const { ledger, wallets, peers, log } = deps;
  const key = await ledger.getKey(keyHash);
  if (!key) throw new CashuError('invalid_api_key', 'Unknown API key.');
  const payer = { keyHash, unit: key.unit };
  const per = MSATS_PER[key.unit];
  const latest = await ledger.latestMelt(keyHash);
  if (latest?.state === 'pending') return latest;

  if ('invoice' in target) {
    let amount: bigint | undefined;
    try {
      amount = decodeBolt11(target.invoice).amountMsats;
    } catch (e) {
      throw new CashuError('invalid_invoice', `The invoice is not valid: ${(e as Error).message}.`);
    }
    if (amount === undefined) throw new CashuError('invalid_invoice', 'The invoice has no amount; ask for one with the amount to refund.');
    if (amount % BigInt(per) !== 0n) throw new CashuError('invalid_invoice', `This key refunds whole ${key.unit}s; the invoice asks for ${amount} msats.`);
    if (latest && latest.state === 'paid' && latest.request === target.invoice) return latest;
    const paid = await wallets.melt(target.invoice, payer);
    log.info({ key: keyHash.slice(0, 8), amount: paid.amount, unit: paid.unit, state: paid.state }, 'refunded to a Lightning invoice');
    return paid;
  }

  const address = target.lightningAddress.trim().toLowerCase();
  if (!isLightningAddress(address)) throw new CashuError('invalid_lightning_address', 'A Lightning address looks like name@domain.');
  if (await ledger.hasActiveReservations(keyHash)) {
    throw new CashuError('request_in_progress', 'A request on this key is still running; retry when it ends.', { retryAfter: 2 });
  }
  const free = Math.floor((key.balance - key.reserved) / per);
  // What a paid refund leaves is its unused reserve (and an msat remainder): a retry, not a new refund.
  if (latest?.state === 'paid' && free <= latest.feeReserve) return latest;
  let reserve = 0;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const amount = free - reserve;
    if (amount <= 0) break;
    let invoice: string;
    try {
      invoice = await invoiceFor(peers, address, amount * per);
    } catch (e) {
      if (e instanceof PeerError) {
        log.info({ key: keyHash.slice(0, 8), reason: e.reason, err: e.message }, 'Lightning address unusable');
        throw unusable(e);
      }
      throw e;
    }
    try {
      const paid = await wallets.melt(invoice, payer);
      log.info({ key: keyHash.slice(0, 8), amount: paid.amount, unit: paid.unit, state: paid.state }, 'refunded to a Lightning address');
      return paid;
    } catch (e) {
      if (!(e instanceof CashuError) || e.code !== 'balance_too_low') throw e;
      // The mint's reserve for this amount did not fit: ask for that much less.
      const needed = Math.ceil(Number(e.extra.needed_msats) / per);
      reserve = Math.max(reserve + 1, needed - amount);
    }
  }
  if (latest?.state === 'paid') return latest;
  throw new CashuError('balance_too_low', 'The balance does not cover a Lightning payment with the mint\'s fee reserve.');
}
