import type { WireError } from '../engine/format.ts';

/**
 * Anthropic's error type for each of our statuses. A payment is missing or short (402): Anthropic
 * answers an unpaid account with `billing_error`, so its clients already know what it means.
 */
export function anthropicErrorType(status: number): string {
  if (status === 400) return 'invalid_request_error';
  if (status === 401) return 'authentication_error';
  if (status === 402) return 'billing_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 413) return 'request_too_large';
  if (status === 429) return 'rate_limit_error';
  if (status === 504) return 'timeout_error';
  if (status === 529) return 'overloaded_error';
  if (status >= 500) return 'api_error';
  return 'invalid_request_error';
}

/** `{"type":"error","error":{type, message, code}}`: Anthropic's shape, with our stable code. */
export function messagesErrorBody(err: WireError): Record<string, unknown> {
  return { type: 'error', error: { type: anthropicErrorType(err.status), message: err.message, code: err.code, ...err.extra } };
}
