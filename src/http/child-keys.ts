import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { apiKeyOf, keyHashOfApiKey } from '../cashu/credential.ts';
import { childLeft } from '../engine/engine.ts';
import { HttpError } from './errors.ts';
import type { ChildKeyRow, HistoryRow, KeyRow, Ledger } from '../ledger/ledger.ts';
/** Children one parent may hold: each is a row a parent could otherwise add without end. */
const MAX_CHILDREN = 1000;
const MAX_PER_CALL = 50;

/** Routstr's `ChildKeyRequest`, with our model allow-list; its `balance_limit` is msats as ours is. */
const childKeyBody = z.strictObject({
  count: z.number().int().min(1).max(MAX_PER_CALL).default(1),
  balance_limit: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).nullable().optional(),
  /** Unix seconds, as Routstr's. */
  validity_date: z.number().int().positive().nullable().optional(),
  models: z.array(z.string().min(1).max(200)).min(1).max(100).nullable().optional(),
  balance_limit_reset: z.null().optional(),
});
const revokeBody = z.strictObject({ child_key: z.string() });
const historyQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  before: z.coerce.number().int().min(1).optional(),
});

/** The key the request's API key names, looked up nowhere: an `sk-` key or a Cashu token's key. */
export function bearerHash(req: FastifyRequest): string {
  const key = req.credential.apiKey;
  if (!key) throw new HttpError(401, 'invalid_api_key', 'Missing API key: send Authorization: Bearer sk-… or a Cashu token.');
  if (key.kind === 'other') throw new HttpError(401, 'invalid_api_key', 'Invalid API key.');
  return key.keyHash;
}

export const childOnly = (what: string) =>
  new HttpError(400, 'child_key_not_allowed', `A child key cannot ${what}; use the key that created it.`);

/** A child as its parent sees it (Routstr's `child_keys` fields, and ours). */
export function childView(c: ChildKeyRow) {
  return {
    api_key: apiKeyOf(c.hash),
    total_spent: c.spent,
    reserved: c.reserved,
    total_requests: c.totalRequests,
    balance_limit: c.spendLimit,
    balance_limit_reset: null,
    validity_date: c.expiresAt === null ? null : Math.floor(c.expiresAt / 1000),
    models: c.models,
    revoked: c.revokedAt !== null,
    created_at: Math.floor(c.createdAt / 1000),
  };
}

/** `/v1/balance/info` for a child key: what it may spend now, never its parent's credential. */
export function childInfo(c: ChildKeyRow, parent: KeyRow | undefined) {
  return {
    ...childView(c),
    balance: parent ? childLeft(c, parent) : 0,
    unit: parent?.unit ?? 'sat',
    is_child: true,
  };
}

function historyView(h: HistoryRow) {
  return {
    id: String(h.id),
    type: h.kind,
    amount: h.msats,
    unit: 'msat',
    msats: h.msats,
    created_at: Math.floor(h.createdAt / 1000),
    model: h.model,
    input_tokens: h.inputTokens,
    output_tokens: h.outputTokens,
    // A credit's ref is its token's hash, which is a key: only a charge's (its request id) is shown.
    request_id: h.kind === 'charge' ? h.ref : null,
    child_key: h.via === null ? null : apiKeyOf(h.via),
  };
}

/**
 * Child keys (Routstr's `POST /v1/balance/child-key`) and a key's history. A child spends its
 * parent's balance, so it may not create keys, top up, refund, or revoke: only its parent can.
 */
export function childKeyRoutes(app: FastifyInstance, deps: { ledger: Ledger }): void {
  const { ledger } = deps;

  /** The parent a request speaks for: a live balance key, not a child. */
  async function parentOf(req: FastifyRequest, what: string): Promise<KeyRow> {
    const hash = bearerHash(req);
    const key = await ledger.getKey(hash);
    if (key) {
      if (key.revoked) throw new HttpError(401, 'key_revoked', 'This API key has been revoked; its balance can still be refunded.');
      return key;
    }
    if (await ledger.getChildKey(hash)) throw childOnly(what);
    throw new HttpError(401, 'invalid_api_key', 'Unknown API key.');
  }

  const create = async (req: FastifyRequest) => {
    const parent = await parentOf(req, 'create child keys');
    const parsed = childKeyBody.safeParse(req.body ?? {});
    if (!parsed.success) {
      throw new HttpError(400, 'invalid_request', `Send {"count": 1..${MAX_PER_CALL}, "balance_limit": msats, "validity_date": unix seconds, "models": [ids]}, each optional (balance_limit_reset is not supported).`);
    }
    const { count, balance_limit, validity_date, models } = parsed.data;
    const expiresAt = validity_date == null ? null : validity_date * 1000;
    if (expiresAt !== null && expiresAt <= Date.now()) throw new HttpError(400, 'invalid_request', 'validity_date is in the past.');
    const made = await ledger.createChildKeys(
      parent.hash,
      Array.from({ length: count }, () => ({ hash: randomBytes(32).toString('hex'), spendLimit: balance_limit ?? null, models: models ?? null, expiresAt })),
      MAX_CHILDREN,
    );
    if (made === 'too_many') throw new HttpError(400, 'too_many_child_keys', `A key may have at most ${MAX_CHILDREN} child keys.`);
    if (!made) throw new HttpError(401, 'key_revoked', 'This API key has been revoked.');
    const free = parent.balance - parent.reserved;
    return {
      api_keys: made.map((c) => apiKeyOf(c.hash)),
      count: made.length,
      cost_msats: 0,
      cost_sats: 0,
      parent_balance: free,
      parent_balance_sats: Math.floor(free / 1000),
      balance_limit: balance_limit ?? null,
      validity_date: validity_date ?? null,
      models: models ?? null,
    };
  };

  const list = async (req: FastifyRequest) => {
    const parent = await parentOf(req, 'list child keys');
    return { child_keys: (await ledger.listChildKeys(parent.hash)).map(childView) };
  };

  const revoke = async (req: FastifyRequest) => {
    const parent = await parentOf(req, 'revoke keys');
    const parsed = revokeBody.safeParse(req.body ?? {});
    const child = parsed.success ? keyHashOfApiKey(parsed.data.child_key) : undefined;
    if (!child) throw new HttpError(400, 'invalid_request', 'Send {"child_key": "sk-…"}.');
    if (!(await ledger.revokeChildKey(parent.hash, child))) {
      const c = await ledger.getChildKey(child);
      // Whose a key is, is told only to its parent.
      if (!c || c.parentHash !== parent.hash) throw new HttpError(404, 'key_not_found', 'No such child key of this key.');
    }
    return childView((await ledger.getChildKey(child))!);
  };

  const history = async (req: FastifyRequest) => {
    const hash = bearerHash(req);
    if (!(await ledger.getKey(hash)) && !(await ledger.getChildKey(hash))) throw new HttpError(401, 'invalid_api_key', 'Unknown API key.');
    const parsed = historyQuery.safeParse(req.query ?? {});
    if (!parsed.success) throw new HttpError(400, 'invalid_request', 'limit is 1..200 and before an entry id from next_cursor.');
    const rows = await ledger.history(hash, parsed.data);
    return {
      transactions: rows.map(historyView),
      next_cursor: rows.length === parsed.data.limit ? String(rows[rows.length - 1]!.id) : null,
    };
  };

  for (const prefix of ['/v1/balance', '/v1/wallet']) {
    app.post(`${prefix}/child-key`, create);
    app.get(`${prefix}/child-key`, list);
    app.post(`${prefix}/child-key/revoke`, revoke);
    app.get(`${prefix}/history`, history);
  }
}
