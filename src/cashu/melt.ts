import { randomUUID } from 'node:crypto';
import { isMintOperationError, type MeltQuoteBolt11Response, type Wallet } from '@cashu/cashu-ts';
import { MSATS_PER, type MeltRow, type StoredProof, type Unit } from '../ledger/ledger.ts';
import { CashuError, keyBusy, mintUnreachable } from './errors.ts';
import { isLocked } from './p2pk.ts';
import { crashPoint } from './crash.ts';
import { nativeOutputs } from './dleq.ts';
import { journaled, toProof, toStored } from './proofs.ts';
import type { Parts } from './parts.ts';

/**
 * Pays a Lightning invoice from the operator's earnings by melting proofs (NUT-05) at the first
 * trusted mint that quotes it and holds enough. The amount and the fee reserve are booked before
 * anything is sent, and the blank outputs for the fee change (NUT-08) are journaled before the
 * mint is called, so an interruption is settled from the quote's state. With `payer`, a key's
 * balance pays instead (a refund to Lightning, see lightning-refund.ts), in the key's unit.
 */
export async function melt(p: Parts, invoice: string, payer?: { keyHash: string; unit: Unit }): Promise<MeltRow> {
  let earnings: number | undefined;
  let needMsats = 0;
  let quoted = false;
  let refusal: string | undefined;
  for (const mint of p.mints.urls) {
    for (const unit of payer ? [payer.unit] : (['sat', 'msat'] as const)) {
      let wallet: Wallet;
      let quote: MeltQuoteBolt11Response;
      try {
        wallet = await p.mints.wallet(mint, unit);
        quote = await wallet.createMeltQuoteBolt11(invoice);
      } catch (e) {
        if (isMintOperationError(e)) refusal = e.message;
        continue;
      }
      quoted = true;
      const amount = quote.amount.toNumber();
      const base = amount + quote.fee_reserve.toNumber();
      let need = base;
      for (let attempt = 0; attempt < 4; attempt++) {
        const opId = randomUUID();
        const r = await p.ledger.startMelt({ opId, meltId: randomUUID(), mint, unit, quote: quote.quote, request: invoice, amount, need, ...(payer && { keyHash: payer.keyHash }) });
        if (r.kind === 'no_key') throw new CashuError('invalid_api_key', 'Unknown API key.');
        if (r.kind === 'busy') throw keyBusy();
        if (r.kind === 'short') [earnings, needMsats] = [r.earnings, need * MSATS_PER[unit]];
        if (r.kind !== 'started') break;
        // The mint's input fee depends on the proofs taken: if it was not allowed for, take again.
        const inputFee = wallet.getFeesForProofs(r.inputs.map(toProof)).toNumber();
        if (need < base + inputFee) {
          await p.ledger.abandonMelt(opId);
          need = base + inputFee;
          continue;
        }
        return payMelt(p, wallet, quote, r.melt, r.inputs);
      }
    }
  }
  if (!quoted) {
    throw refusal ? new CashuError('invoice_rejected', `The mint will not pay this invoice: ${refusal}`) : mintUnreachable();
  }
  if (earnings !== undefined && payer) {
    throw new CashuError('balance_too_low', `The balance (${earnings} msats) does not cover this invoice with its fee reserve (${needMsats} msats).`, {
      extra: { balance_msats: earnings, needed_msats: needMsats },
    });
  }
  if (earnings !== undefined) {
    throw new CashuError('earnings_too_low', `The earnings (${earnings} msats) do not cover this invoice with its fee reserve.`);
  }
  throw new CashuError('withdraw_unavailable', 'No mint holds proofs enough to pay this invoice with its fee reserve.');
}

function notPaid(): CashuError {
  return new CashuError('payment_failed', 'The invoice was not paid; nothing was spent.');
}

async function payMelt(p: Parts, wallet: Wallet, quote: MeltQuoteBolt11Response, melt: MeltRow, inputs: StoredProof[]): Promise<MeltRow> {
  const { ledger, journal } = p;
  const { opId } = melt;
  let preview;
  try {
    preview = await wallet.prepareMelt('bolt11', quote, inputs.map(toProof), undefined, nativeOutputs);
  } catch (e) {
    await ledger.abandonMelt(opId);
    throw new CashuError('withdraw_failed', `The melt could not be prepared: ${(e as Error).message}`);
  }
  await ledger.journalOutputs(opId, journaled(preview.outputData), inputs);
  const pay = async () => {
    crashPoint('melt:before-melt');
    const res = await wallet.completeMelt(preview, inputs.some(isLocked) ? p.p2pk.privkey : undefined);
    crashPoint('melt:after-melt');
    return res;
  };
  // A refusal is final unless the quote says otherwise; a timeout proves nothing either way.
  return journal.send({ id: opId, kind: 'melt', mint: melt.mint }, pay, {
    answer: async (res) => {
      if (res.quote.state === 'PAID') return ledger.finishMelt({ opId, change: res.change.map(toStored), preimage: res.quote.payment_preimage ?? null });
      return unsettled(p, opId, res.quote.state);
    },
    done: async () => (await ledger.meltOfOp(opId))!,
    failed: (e) => {
      throw new CashuError('payment_failed', `The invoice was not paid: ${(e as Error).message}`);
    },
  });
}

/**
 * The mint answered without paying. Unpaid is its answer that the payment failed: settled now.
 * In flight (pending): wait a little, then leave it to recovery, which settles it either way.
 */
async function unsettled(p: Parts, opId: string, state: string): Promise<MeltRow> {
  const { ledger, journal } = p;
  const wait = state === 'UNPAID' ? 0 : Math.min(10_000, journal.leaseMs);
  if (wait === 0 && (await journal.recover(opId, true)) === 'failed') throw notPaid();
  for (const until = Date.now() + wait; Date.now() < until; ) {
    await new Promise((r) => setTimeout(r, 250));
    const outcome = await journal.recover(opId, false);
    if (outcome === 'done') return (await ledger.meltOfOp(opId))!;
    if (outcome === 'failed') throw notPaid();
  }
  await ledger.touchOp(opId);
  return (await ledger.meltOfOp(opId))!;
}
