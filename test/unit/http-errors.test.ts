import { describe, expect, it } from 'vitest';
import { CashuError } from '../../src/cashu/errors.ts';
import { GatewayError } from '../../src/engine/errors.ts';
import { httpError, isExpected } from '../../src/http/errors.ts';

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

  it('passes the engine’s errors through and hides a bug behind a 500', () => {
    const g = new GatewayError(402, 'payment_required', 'pay');
    expect(httpError(g)).toBe(g);
    const bug = httpError(new TypeError('x is undefined'));
    expect([bug.status, bug.code, bug.message]).toEqual([500, 'internal_error', 'Internal error.']);
    expect([isExpected(g), isExpected(new CashuError('balance_too_low', 'none')), isExpected(new Error('bug'))]).toEqual([true, true, false]);
  });
});
