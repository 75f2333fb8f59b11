/**
 * Why the engine (or a wire format, for the engine) refused or could not finish a job. The codes
 * are stable (clients and the Nostr door read them); what each means in HTTP is the HTTP door's
 * business (src/http/errors.ts).
 */
export type EngineCode =
  /** No credential, or one the ledger does not hold. */
  | 'invalid_api_key'
  | 'key_revoked'
  | 'key_expired'
  /** No payment offered: `paymentRequest` says what to pay. */
  | 'payment_required'
  | 'insufficient_balance'
  /** A child key's own spending limit, not its parent's balance. */
  | 'balance_limit_exceeded'
  | 'model_not_allowed'
  | 'model_not_found'
  | 'cashu_token_already_spent'
  | 'prompt_too_large'
  | 'invalid_request'
  /** A parameter that makes the upstream do work the gateway does not price. */
  | 'unpriced_parameter'
  | 'stateful_not_supported'
  | 'unsupported_by_upstream'
  | 'unsupported_parameter'
  | 'unsupported_tool'
  | 'unsupported_content'
  | 'unsupported_input_item'
  | 'untranslatable_content'
  | 'untranslatable_field'
  | 'invalid_tool_arguments'
  /** The upstream failed, or (with `upstreamStatus`) refused the request itself. */
  | 'upstream_error'
  | 'upstream_rate_limited'
  | 'upstream_invalid_tool_call'
  /** The client left before any upstream answered. */
  | 'client_closed_request';

export interface EngineErrorOptions {
  retryAfter?: number | undefined;
  extra?: Record<string, unknown> | undefined;
  paymentRequest?: string | undefined;
  upstreamStatus?: number | undefined;
}

export class EngineError extends Error {
  readonly code: EngineCode;
  /** Seconds after which the same call may well succeed. */
  readonly retryAfter: number | undefined;
  /** Facts for the client beside the message: the price asked, a refund token. */
  readonly extra: Record<string, unknown>;
  /** A NUT-18 payment request for what the job costs, when nobody has offered to pay. */
  readonly paymentRequest: string | undefined;
  /**
   * The status an upstream refused the request itself with (a 4xx other than for our key or a
   * rate limit): the next upstream would refuse it too, and the client is told as the upstream said.
   */
  readonly upstreamStatus: number | undefined;

  constructor(code: EngineCode, message: string, opts: EngineErrorOptions = {}) {
    super(message);
    this.code = code;
    this.retryAfter = opts.retryAfter;
    this.extra = opts.extra ?? {};
    this.paymentRequest = opts.paymentRequest;
    this.upstreamStatus = opts.upstreamStatus;
  }

  /** The same refusal with a refund token for a one-shot payer. */
  withRefund(token: string): EngineError {
    const { retryAfter, paymentRequest, upstreamStatus } = this;
    return new EngineError(this.code, this.message, { retryAfter, paymentRequest, upstreamStatus, extra: { ...this.extra, refund_token: token } });
  }
}
