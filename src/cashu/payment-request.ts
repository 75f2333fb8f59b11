import { PaymentRequest } from '@cashu/cashu-ts';

/** One NUT-18 request in both of its encodings: `creqA` (CBOR, base64) and NUT-26 `creqB` (bech32m). */
export interface EncodedPaymentRequest {
  creqA: string;
  creqB: string;
}

/**
 * A NUT-18 request for a NUT-24 `X-Cashu` challenge: amount in sats, payable at any trusted mint,
 * asking for proofs locked to the gateway's key (its `nut10`) so they need no mint call to accept.
 */
export function paymentRequest(sats: number, mints: readonly string[], p2pkPubkey: string): EncodedPaymentRequest {
  const pr = new PaymentRequest(undefined, undefined, sats, 'sat', [...mints], undefined, true, {
    kind: 'P2PK',
    data: p2pkPubkey,
    tags: [],
  });
  return { creqA: pr.toEncodedCreqA(), creqB: pr.toEncodedCreqB() };
}

/** The whole sats that pay `msats`. */
export function satsFor(msats: number): number {
  return Math.max(1, Math.ceil(msats / 1000));
}
