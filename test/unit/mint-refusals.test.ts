import { describe, expect, it } from 'vitest';
import { busyRefusal, namesBadInput } from '../../src/cashu/errors.ts';

/**
 * What the sweep may write a locked proof off for: only a refusal that says the proof itself is
 * bad. The words are nutshell 0.20.2's and cdk's own, as they answer POST /v1/swap.
 */
describe('namesBadInput', () => {
  it('is true of the refusals that blame the proof itself', () => {
    for (const [code, detail] of [
      [10001, 'proofs could not be verified'],
      [10001, 'no secret in proofs'],
      [10001, 'Secret is not a P2PK secret'],
      [11000, 'signature threshold not met. 0 < 1.'],
      [11000, 'no signatures in proof.'],
      [11000, 'not enough pubkeys (1) or signatures (0) present for n_sigs (1).'],
      [11000, 'witness data not allowed without a spending condition.'],
      [11000, 'HTLC requires preimage for main path.'],
      [11000, 'validation of input spending conditions failed.'],
      [11003, 'secret too long. max: 1024'],
      [11004, 'input witness data too long. max: 1024'],
      [0, 'Witness is missing for p2pk signature'],
      [20008, 'Spending conditions not met'],
    ] as const) {
      expect(namesBadInput({ code, message: detail }), `${code} ${detail}`).toBe(true);
    }
  });

  it('is false of refusals of the moment, of our outputs or amounts, and of the proof\'s state', () => {
    for (const [code, detail] of [
      [0, 'failed to acquire database lock on proofs_pending after 5s and 12 trials (1712345678901)'],
      [0, 'QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00'],
      [0, '(sqlite3.OperationalError) disk I/O error [SQL: INSERT INTO proofs_pending (amount, c, secret, y, id, witness) VALUES (?, ?, ?, ?, ?, ?)]'],
      [0, 'internal error'],
      [0, 'no outputs provided.'],
      [0, 'keyset 00f38ee5c4a1d3e9 unknown'],
      [11000, 'transaction error'],
      [11000, 'Transaction is not valid.'],
      [11000, 'keyset id inactive.'],
      [11000, 'input amounts (1) less than output amounts (2).'],
      [11001, 'proofs already spent'],
      [11002, 'proofs are pending'],
      [11003, 'outputs already signed'],
      [11004, 'outputs are pending'],
      [11005, 'Inputs: 1, Outputs: 0, expected_fee: 1. Transaction inputs should equal outputs less fee'],
      [12001, 'keyset not found'],
      [50000, 'Internal Error'],
    ] as const) {
      expect(namesBadInput({ code, message: detail }), `${code} ${detail}`).toBe(false);
    }
  });

  it('never blames the input for a refusal the sweep reads as the mint being busy', () => {
    const lock = 'failed to acquire database lock on proofs_pending after 5s';
    expect([busyRefusal(lock), namesBadInput({ code: 0, message: lock })]).toEqual([true, false]);
  });
});
