/**
 * Why the wallet refused or could not do something. The codes are stable (clients and the Nostr
 * door read them); what each means in HTTP is the HTTP door's business (src/http/errors.ts).
 */
export type CashuCode =
  /** The token cannot be decoded, is worth nothing, or the mint refused it as invalid. */
  | 'invalid_cashu_token'
  | 'untrusted_mint'
  | 'unsupported_unit'
  /** A proof's keyset id (v1, v2, or a short v2 id) is none of its mint's keysets (NUT-02). */
  | 'unknown_keyset'
  /** A short keyset id is the prefix of more than one of the mint's keysets (NUT-00). */
  | 'ambiguous_keyset_id'
  /** The token's unit label is not the unit of the keyset its proofs are of. */
  | 'keyset_unit_mismatch'
  /** Locked to the Nostr door's key: it pays Nostr jobs only. */
  | 'cashu_token_wrong_door'
  | 'cashu_token_already_spent'
  /** No answer from the mint; nothing was spent. Worth retrying after `retryAfter`. */
  | 'cashu_mint_unreachable'
  /** The mint said it was too busy to take the token (a lock it could not get); nothing was spent. */
  | 'cashu_mint_busy'
  /** A refund named a key the ledger does not hold. */
  | 'invalid_api_key'
  /** A refund came while a request on the key was running. */
  | 'request_in_progress'
  | 'refund_unavailable'
  | 'balance_too_low'
  | 'mint_quote_failed'
  | 'invoice_rejected'
  | 'earnings_too_low'
  | 'withdraw_unavailable'
  | 'withdraw_failed'
  | 'payment_failed'
  | 'invalid_invoice'
  | 'invalid_lightning_address'
  /** The address's LNURL server refused or misbehaved; `extra.reason` says how. */
  | 'lightning_address_unusable'
  /** A token's own mint, not a trusted one, could not be used for the Lightning swap; `extra.reason` says how. */
  | 'foreign_mint_unusable'
  /** The swap from a token's own mint would cost more than the cap, or than the token. */
  | 'foreign_mint_fee_too_high'
  /** The Lightning swap from a token's own mint is still in flight: the same token again settles it. */
  | 'foreign_swap_pending'
  /** As many swaps from the token's mint are pending as are allowed at once: the same token again later. */
  | 'foreign_mint_busy'
  /** The trusted mint's invoice for the swap expired unpaid: nothing was credited. */
  | 'foreign_swap_expired';

export class CashuError extends Error {
  readonly code: CashuCode;
  /** Seconds after which the same call may well succeed. */
  readonly retryAfter: number | undefined;
  /** Facts for the client beside the message, e.g. what a payment needed. */
  readonly extra: Record<string, unknown>;

  constructor(code: CashuCode, message: string, opts: { retryAfter?: number; extra?: Record<string, unknown> } = {}) {
    super(message);
    this.code = code;
    this.retryAfter = opts.retryAfter;
    this.extra = opts.extra ?? {};
  }
}

export function mintUnreachable(retryAfterSec = 5): CashuError {
  return new CashuError('cashu_mint_unreachable', 'The Cashu mint could not be reached; your token was not spent. Try again shortly.', { retryAfter: retryAfterSec });
}

/**
 * Whether a refusal is the mint being busy, not the token being bad: nutshell answers a swap it
 * could not lock the proofs for (under load, on SQLite) with code 0, the code of malformed input
 * too, so only its words tell the two apart.
 */
export function busyRefusal(message: string): boolean {
  return /database (lock|is locked)|could not obtain lock/i.test(message);
}

/**
 * Whether a mint's refusal of a swap says that an input is bad in itself, so the mint will refuse
 * it from anyone, however often it is asked. Nothing else the mint says is grounds to write a
 * proof off: not the moment (nutshell answers any exception of its own, a lost database
 * connection or a full disk, with code 0 and the exception's words), not our outputs, keysets or
 * amounts (the fee), not the proof's state (11001, 11002: NUT-07 says that). Read from nutshell
 * 0.20 (cashu/mint/verification.py, conditions.py, core/base.py) and cdk (ErrorResponse):
 * - 10001: the mint's signature on the proof does not verify, or it has no secret (both mints);
 * - 20008: cdk's code for any NUT-11 witness or spending condition not met;
 * - nutshell's bare TransactionError (11000) when its words are those of a spending condition
 *   not met ("signature threshold not met", "no signatures in proof"…), and the codes it reuses
 *   for a secret or witness too long (11003, 11004: "outputs already signed / pending" otherwise);
 * - nutshell's code 0 for one failed assertion only: a locked proof with no witness at all, which
 *   is what a proof locked to another key gets from us ("Witness is missing for p2pk signature").
 * The words are matched from their start, as nutshell writes them: code 0's exception text can
 * quote anything (an SQL statement naming a witness column, say).
 */
export function namesBadInput(e: { code: number; message: string }): boolean {
  if (e.code === 10001 || e.code === 20008) return true;
  if (e.code === 11000) return INPUT_CONDITION.test(e.message);
  if (e.code === 11003 || e.code === 11004) return /^(secret|input witness data) too long/i.test(e.message);
  if (e.code === 0) return /^witness is missing for (p2pk|htlc)/i.test(e.message);
  return false;
}

/** nutshell's words (TransactionError, 11000) for an input whose spending condition is not met. */
const INPUT_CONDITION = new RegExp(
  `^(${[
    'signature threshold not met', 'no signatures in proof', 'signatures must be unique', 'pubkeys must have unique',
    'n_sigs must be positive', 'not enough pubkeys', 'witness data not allowed', 'no witness in proof',
    'htlc requires preimage', 'not an htlc secret', 'htlc preimage', 'invalid preimage for htlc', 'no htlc preimage',
    'validation of input spending conditions', 'secrets do not match criteria', 'input witness data does not match',
  ].join('|')})`,
  'i',
);

export function mintBusy(): CashuError {
  return new CashuError('cashu_mint_busy', 'The Cashu mint was too busy to take the token; it was not spent. Try again shortly.', { retryAfter: 1 });
}

export function alreadySpent(): CashuError {
  return new CashuError('cashu_token_already_spent', 'This Cashu token has already been spent.');
}

export function invalidToken(why: string): CashuError {
  return new CashuError('invalid_cashu_token', `The Cashu token is not valid: ${why}`);
}

export function keyBusy(): CashuError {
  return new CashuError('request_in_progress', 'A request on this key is still running; retry when it ends.', { retryAfter: 2 });
}
