import type { Logger } from 'pino';
import type { KeyRow, Ledger, MintOp, Unit } from '../ledger/ledger.ts';
import type { Journal } from './journal.ts';
import type { Mints } from './mints.ts';
import type { P2pkKey } from './p2pk.ts';
import type { TokenInfo } from './token.ts';

/** Tokens of untrusted mints, swapped over Lightning (foreign.ts) when FOREIGN_MINTS=swap. */
export interface ForeignIntake {
  redeem(info: TokenInfo, keyHash: string): Promise<KeyRow>;
  recover(op: MintOp, abandonIfUnspent: boolean): Promise<'done' | 'failed' | 'pending'>;
  /** Settles the foreign swaps among `ops` within its own bound, after the gateway's own. */
  recoverAll(ops: MintOp[]): Promise<void>;
}

/** What every flow of the wallet (receive, refund, sweep, melt) works with. */
export interface Parts {
  ledger: Ledger;
  log: Logger;
  mints: Mints;
  journal: Journal;
  /** The key clients lock ecash to (NUT-11) so it can be taken without asking the mint. */
  p2pk: P2pkKey;
  /** Proofs of each small denomination to keep on hand, so change needs no swap (0: no float). */
  changeFloat: number;
  /** Tops up the change float soon, off the request path (float.ts). */
  refill: (mint: string, unit: Unit) => void;
  /** Change that the float could not pay and a swap on the request path did. */
  changeSwapped: (mint: string, unit: Unit) => void;
}
