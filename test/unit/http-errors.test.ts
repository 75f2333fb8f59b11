import { describe, expect, it } from 'vitest';
import { CashuError } from '../../src/cashu/errors.ts';
import { EngineError } from '../../src/engine/errors.ts';
import { HttpError, httpError, isExpected } from '../../src/http/errors.ts';

describe("the HTTP door's reading of the wallet's errors", () => {
  it('gives each its status, its code unchanged, and retry-after when the wallet names one', () => {
    const down = httpError(new CashuError('cashu_mint_unreachable', 'The Cashu mint could not be reached.', { retryAfter: 7 }));
    expect([down.status, down.code, down.type, down.headers]).toEqual([503, 'cashu_mint_unreachable', 'api_error', { 'retry-after': '7' }]);
    const spent = httpError(new CashuError('cashu_token_already_spent', 'spent'));
    expect([spent.status, spent.headers, spent.body()]).toEqual([400, {}, { error: { message: 'spent', type: 'invalid_request_error', code: 'cashu_token_already_spent' } }]);
    expect(httpError(new CashuError('invalid_api_key', 'Unknown API key.')).type).toBe('authentication_error');
    expect(httpError(new CashuError('request_in_progress', 'busy', { retryAfter: 2 })).status).toBe(425);
    expect(httpError(new CashuError('payment_failed', 'not paid')).status).toBe(502);
    // Facts beside the message reach the body, as the engine's do.
    const short = httpError(new CashuError('balance_too_low', 'short', { extra: { needed_msats: 9000 } }));
    expect(short.body()).toEqual({ error: { message: 'short', type: 'invalid_request_error', code: 'balance_too_low', needed_msats: 9000 } });
    expect(httpError(new CashuError('lightning_address_unusable', 'no')).status).toBe(400);
  });

  it('passes its own errors through and hides a bug behind a 500', () => {
    const own = new HttpError(429, 'rate_limit_exceeded', 'slow down', { headers: { 'retry-after': '3' } });
    expect(httpError(own)).toBe(own);
    const bug = httpError(new TypeError('x is undefined'));
    expect([bug.status, bug.code, bug.message]).toEqual([500, 'internal_error', 'Internal error.']);
    const engine = new EngineError('model_not_found', 'no');
    expect([isExpected(own), isExpected(engine), isExpected(new CashuError('balance_too_low', 'none')), isExpected(new Error('bug'))]).toEqual([true, true, true, false]);
  });
});

describe("the HTTP door's reading of the engine's errors", () => {
  const status = (e: EngineError) => httpError(e).status;

  it('gives each code the status and type clients have always seen', () => {
    expect(status(new EngineError('invalid_api_key', 'x'))).toBe(401);
    expect(status(new EngineError('key_revoked', 'x'))).toBe(401);
    expect(status(new EngineError('key_expired', 'x'))).toBe(403);
    expect(status(new EngineError('model_not_allowed', 'x'))).toBe(403);
    expect(status(new EngineError('model_not_found', 'x'))).toBe(404);
    expect(status(new EngineError('prompt_too_large', 'x'))).toBe(413);
    expect(status(new EngineError('unsupported_tool', 'x'))).toBe(400);
    expect(status(new EngineError('upstream_rate_limited', 'x'))).toBe(429);
    expect(status(new EngineError('client_closed_request', 'x'))).toBe(499);
    const down = httpError(new EngineError('upstream_error', 'Upstream error: boom'));
    expect([down.status, down.type, down.headers]).toEqual([502, 'upstream_error', {}]);
    expect(httpError(new EngineError('model_not_found', 'x')).type).toBe('not_found_error');
  });

  it('answers a 402 uncached, with the payment request in X-Cashu and the price in the body', () => {
    const e = httpError(new EngineError('payment_required', 'Pay.', { paymentRequest: 'creqAabc', extra: { amount_required_msats: 4200 } }));
    expect([e.status, e.type, e.headers]).toEqual([402, 'insufficient_quota', { 'cache-control': 'no-store', 'x-cashu': 'creqAabc' }]);
    expect(e.body()).toEqual({ error: { message: 'Pay.', type: 'insufficient_quota', code: 'payment_required', amount_required_msats: 4200 } });
    // A client that paid by X-Cashu reads that header as its refund: no payment request there.
    expect(httpError(new EngineError('insufficient_balance', 'Short.')).headers).toEqual({ 'cache-control': 'no-store' });
  });

  it("puts a one-shot payer's refund in X-Cashu and the body, whatever else the error names", () => {
    const short = new EngineError('insufficient_balance', 'Short.', { paymentRequest: 'creqAabc', extra: { amount_required_msats: 9 } });
    const refunded = httpError(short.withRefund('cashuBrefund'));
    expect(refunded.headers).toEqual({ 'cache-control': 'no-store', 'x-cashu': 'cashuBrefund' });
    expect(refunded.body().error).toEqual({ message: 'Short.', type: 'insufficient_quota', code: 'insufficient_balance', amount_required_msats: 9, refund_token: 'cashuBrefund' });
    // The original is left as it was.
    expect(short.extra).toEqual({ amount_required_msats: 9 });
    const failed = httpError(new EngineError('upstream_error', 'gone').withRefund('cashuBback'));
    expect([failed.status, failed.headers, failed.extra]).toEqual([502, { 'x-cashu': 'cashuBback' }, { refund_token: 'cashuBback' }]);
  });

  it("passes an upstream's refusal of the request itself on with the upstream's status", () => {
    for (const upstream of [400, 402, 404, 422]) {
      const e = httpError(new EngineError('upstream_error', 'bad field', { upstreamStatus: upstream }));
      expect([e.status, e.code, e.type, e.headers]).toEqual([upstream, 'upstream_error', 'invalid_request_error', {}]);
    }
  });

  it('names retry-after when the engine does', () => {
    expect(httpError(new EngineError('upstream_rate_limited', 'x', { retryAfter: 30 })).headers).toEqual({ 'retry-after': '30' });
  });
});
