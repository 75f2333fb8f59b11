import { CashuError, type CashuCode } from '../cashu/errors.ts';
import { GatewayError, frameworkError } from '../engine/errors.ts';

/** What each of the wallet's refusals is in HTTP. */
const CASHU_STATUS: Record<CashuCode, number> = {
  invalid_cashu_token: 400,
  untrusted_mint: 400,
  unsupported_unit: 400,
  unknown_keyset: 400,
  ambiguous_keyset_id: 400,
  keyset_unit_mismatch: 400,
  cashu_token_wrong_door: 400,
  cashu_token_already_spent: 400,
  balance_too_low: 400,
  invoice_rejected: 400,
  earnings_too_low: 400,
  invalid_invoice: 400,
  invalid_lightning_address: 400,
  lightning_address_unusable: 400,
  foreign_mint_unusable: 400,
  foreign_mint_fee_too_high: 400,
  invalid_api_key: 401,
  request_in_progress: 425,
  mint_quote_failed: 502,
  withdraw_failed: 502,
  payment_failed: 502,
  cashu_mint_unreachable: 503,
  refund_unavailable: 503,
  withdraw_unavailable: 503,
  foreign_swap_pending: 503,
};

/** An error someone meant (the engine's, the wallet's), as opposed to a bug. */
export function isExpected(err: unknown): err is GatewayError | CashuError {
  return err instanceof GatewayError || err instanceof CashuError;
}

/** Any error as the HTTP door answers it. */
export function httpError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  if (err instanceof CashuError) {
    const headers: Record<string, string> = err.retryAfter === undefined ? {} : { 'retry-after': String(err.retryAfter) };
    return new GatewayError(CASHU_STATUS[err.code], err.code, err.message, { headers, extra: err.extra });
  }
  return frameworkError(err as { statusCode?: number; code?: string; message: string });
}
