/** An error a client may see: OpenAI's shape, a stable code, and optional response headers. */
export class GatewayError extends Error {
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
