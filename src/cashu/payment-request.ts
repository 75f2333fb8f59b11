import { PaymentRequest } from '@cashu/cashu-ts';

/** A NUT-18 request for a NUT-24 `X-Cashu` challenge: amount in sats, payable at any trusted mint. */
export function paymentRequest(msats: number, mints: readonly string[]): string {
  const sats = Math.max(1, Math.ceil(msats / 1000));
  return new PaymentRequest(undefined, undefined, sats, 'sat', [...mints], undefined, true).toEncodedCreqA();
}
