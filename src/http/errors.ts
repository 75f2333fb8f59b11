import { CashuError, type CashuCode } from '../cashu/errors.ts';
import { EngineError, type EngineCode } from '../engine/errors.ts';
import type { WireError } from '../engine/format.ts';

/** An error as the HTTP door answers it: a status, OpenAI's shape with a stable code, and headers. */
export class HttpError extends Error implements WireError {
  readonly status: number;
  readonly code: string;
  readonly type: string;
  readonly headers: Record<string, string>;
  /** Extra fields for the error body, e.g. a refund token. */
  readonly extra: Record<string, unknown>;

  constructor(
    status: number,
    code: string,
    message: string,
    opts: { type?: string; headers?: Record<string, string>; extra?: Record<string, unknown> } = {},
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.type = opts.type ?? defaultType(status);
    this.headers = opts.headers ?? {};
    this.extra = opts.extra ?? {};
  }

  body(): { error: Record<string, unknown> } {
    return { error: { message: this.message, type: this.type, code: this.code, ...this.extra } };
  }
}

function defaultType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 402) return 'insufficient_quota';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return status === 502 ? 'upstream_error' : 'api_error';
  return 'invalid_request_error';
}

/** What each of the engine's refusals is in HTTP. */
const ENGINE_STATUS: Record<EngineCode, number> = {
  invalid_api_key: 401,
  key_revoked: 401,
  key_expired: 403,
  payment_required: 402,
  insufficient_balance: 402,
  balance_limit_exceeded: 402,
  model_not_allowed: 403,
  model_not_found: 404,
  cashu_token_already_spent: 400,
  prompt_too_large: 413,
  invalid_request: 400,
  unpriced_parameter: 400,
  stateful_not_supported: 400,
  unsupported_by_upstream: 400,
  unsupported_parameter: 400,
  unsupported_tool: 400,
  unsupported_content: 400,
  unsupported_input_item: 400,
  untranslatable_content: 400,
  untranslatable_field: 400,
  invalid_tool_arguments: 400,
  upstream_error: 502,
  upstream_rate_limited: 429,
  upstream_invalid_tool_call: 502,
  // nginx's code for a client that left: only logs and metrics see it.
  client_closed_request: 499,
};

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
  foreign_swap_expired: 400,
  invalid_api_key: 401,
  request_in_progress: 425,
  mint_quote_failed: 502,
  withdraw_failed: 502,
  payment_failed: 502,
  cashu_mint_unreachable: 503,
  cashu_mint_busy: 503,
  refund_unavailable: 503,
  withdraw_unavailable: 503,
  foreign_swap_pending: 503,
  foreign_mint_busy: 503,
};

/** An error someone meant (the door's, the engine's, the wallet's), as opposed to a bug. */
export function isExpected(err: unknown): err is HttpError | EngineError | CashuError {
  return err instanceof HttpError || err instanceof EngineError || err instanceof CashuError;
}

/** Any error as the HTTP door answers it. */
export function httpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof EngineError) return engineError(err);
  if (err instanceof CashuError) return new HttpError(CASHU_STATUS[err.code], err.code, err.message, { headers: retryAfter(err.retryAfter), extra: err.extra });
  return frameworkError(err as { statusCode?: number; code?: string; message: string });
}

/**
 * An upstream's refusal of the request itself keeps the upstream's status. `X-Cashu` carries a
 * one-shot payer's refund, else the payment request of a 402; a 402 names a price of the moment
 * and is not cached.
 */
function engineError(err: EngineError): HttpError {
  const headers = retryAfter(err.retryAfter);
  if (ENGINE_STATUS[err.code] === 402) headers['cache-control'] = 'no-store';
  const xCashu = typeof err.extra.refund_token === 'string' ? err.extra.refund_token : err.paymentRequest;
  if (xCashu !== undefined) headers['x-cashu'] = xCashu;
  const opts = { headers, extra: err.extra };
  if (err.upstreamStatus !== undefined) return new HttpError(err.upstreamStatus, err.code, err.message, { ...opts, type: 'invalid_request_error' });
  return new HttpError(ENGINE_STATUS[err.code], err.code, err.message, opts);
}

function retryAfter(seconds: number | undefined): Record<string, string> {
  return seconds === undefined ? {} : { 'retry-after': String(seconds) };
}

/** An error fastify raised (a body too large, malformed JSON…) as the client sees it. */
function frameworkError(err: { statusCode?: number; code?: string; message: string }): HttpError {
  const status = err.statusCode ?? 500;
  if (status === 413) return new HttpError(413, 'request_too_large', 'The request body is too large.');
  if (status === 415) return new HttpError(415, 'unsupported_media_type', 'Send the request body as application/json.');
  if (err.code?.startsWith('FST_ERR_CTP') || err instanceof SyntaxError) {
    return new HttpError(400, 'invalid_json', 'The request body is not valid JSON.');
  }
  if (status >= 400 && status < 500) return new HttpError(status, 'invalid_request', err.message);
  return new HttpError(500, 'internal_error', 'Internal error.');
}
