import type { ChildKeyRow, HistoryRow, KeyRow, MeltRow, MintOp, RefundRow, StoredProof, TokenRow, Unit } from './ledger.ts';

/** Rows as both engines return them: snake_case columns, integers as numbers. */
export type Row = Record<string, unknown>;

/** A nullable column, null when unset (or not selected, which leaves it out of the row). */
const orNull = <T>(v: unknown): T | null => (v ?? null) as T | null;

export const keyRow = (r: Row): KeyRow => ({
  hash: r.hash as string,
  balance: r.balance as number,
  reserved: r.reserved as number,
  unit: r.unit as Unit,
  mint: r.mint as string,
  totalSpent: r.total_spent as number,
  totalRequests: r.total_requests as number,
  createdAt: r.created_at as number,
  revoked: Boolean(r.revoked),
});

export const refundRow = (r: Row): RefundRow => ({
  id: r.id as string,
  keyHash: r.key_hash as string,
  opId: r.op_id as string,
  msats: r.msats as number,
  amount: r.amount as number,
  unit: r.unit as Unit,
  mint: r.mint as string,
  token: orNull<string>(r.token),
  state: r.state as RefundRow['state'],
});

export const proofRow = (r: Row): StoredProof => ({
  secret: r.secret as string,
  id: r.keyset_id as string,
  amount: r.amount as number,
  C: r.c as string,
  dleq: r.dleq ? (JSON.parse(r.dleq as string) as StoredProof['dleq']) : undefined,
});

export const opRow = (r: Row): MintOp => ({
  id: r.id as string,
  kind: r.kind as MintOp['kind'],
  mint: r.mint as string,
  unit: r.unit as Unit,
  state: r.state as MintOp['state'],
  keyHash: r.key_hash as string,
  tokenHash: orNull<string>(r.token_hash),
  inputs: JSON.parse(r.inputs as string) as StoredProof[],
  outputs: r.outputs ? (JSON.parse(r.outputs as string) as unknown[]) : null,
  updatedAt: r.updated_at as number,
});

export const tokenRow = (r: Row): TokenRow => ({
  hash: r.hash as string,
  keyHash: r.key_hash as string,
  opId: r.op_id as string,
  state: r.state as TokenRow['state'],
  msats: orNull<number>(r.msats),
});

export const meltRow = (r: Row): MeltRow => ({
  id: r.id as string,
  opId: r.op_id as string,
  mint: r.mint as string,
  unit: r.unit as Unit,
  quote: r.quote as string,
  request: r.request as string,
  amount: r.amount as number,
  feeReserve: r.fee_reserve as number,
  fee: orNull<number>(r.fee),
  preimage: orNull<string>(r.preimage),
  state: r.state as MeltRow['state'],
});

export const childKeyRow = (r: Row): ChildKeyRow => ({
  hash: r.hash as string,
  parentHash: r.parent_hash as string,
  spendLimit: orNull<number>(r.spend_limit),
  spent: r.spent as number,
  reserved: r.reserved as number,
  models: r.models ? (JSON.parse(r.models as string) as string[]) : null,
  expiresAt: orNull<number>(r.expires_at),
  revokedAt: orNull<number>(r.revoked_at),
  totalRequests: r.total_requests as number,
  createdAt: r.created_at as number,
});

export const historyRow = (r: Row): HistoryRow => ({
  id: r.id as number,
  kind: r.kind as HistoryRow['kind'],
  msats: r.msats as number,
  createdAt: r.created_at as number,
  ref: r.ref as string,
  via: orNull<string>(r.via),
  model: orNull<string>(r.model),
  inputTokens: orNull<number>(r.input_tokens),
  outputTokens: orNull<number>(r.output_tokens),
});
