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

/** An error fastify raised (a body too large, malformed JSON…) as the client sees it. */
export function frameworkError(err: { statusCode?: number; code?: string; message: string }): GatewayError {
  const status = err.statusCode ?? 500;
  if (status === 413) return new GatewayError(413, 'request_too_large', 'The request body is too large.');
  if (status === 415) return new GatewayError(415, 'unsupported_media_type', 'Send the request body as application/json.');
  if (err.code?.startsWith('FST_ERR_CTP') || err instanceof SyntaxError) {
    return new GatewayError(400, 'invalid_json', 'The request body is not valid JSON.');
  }
  if (status >= 400 && status < 500) return new GatewayError(status, 'invalid_request', err.message);
  return new GatewayError(500, 'internal_error', 'Internal error.');
}
