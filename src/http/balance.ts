import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { CashuWallets } from '../cashu/wallet.ts';
import { apiKeyOf } from '../cashu/credential.ts';
import { inspectToken, type TokenInfo } from '../cashu/token.ts';
import { HttpError } from './errors.ts';
import type { KeyRow, Ledger, MeltRow, RefundRow } from '../ledger/ledger.ts';
import type { Config } from '../config.ts';
import type { Logger } from 'pino';
import { PeerFetch } from '../net/peer-fetch.ts';
import { refundToLightning, type LightningTarget } from '../cashu/lightning-refund.ts';
import { childInfo, childKeyRoutes, childOnly, childView } from './child-keys.ts';

function field(req: FastifyRequest, name: string): string | undefined {
  const body = req.body as Record<string, unknown> | undefined;
  const query = req.query as Record<string, unknown> | undefined;
  const v = body?.[name] ?? query?.[name];
  return typeof v === 'string' && v.trim() ? v.trim() : undefined;
}

function refundBody(r: RefundRow): Record<string, string> {
  return r.unit === 'sat' ? { token: r.token!, sats: String(r.amount) } : { token: r.token!, msats: String(r.amount) };
}

/** A refund to Lightning as its payer sees it: the amount paid, the reserve set aside, the fee it cost. */
function meltBody(m: MeltRow, target: LightningTarget, balance: number): Record<string, unknown> {
  const u = m.unit === 'sat' ? 'sats' : 'msats';
  return {
    ...('lightningAddress' in target ? { lightning_address: target.lightningAddress } : {}),
    invoice: m.request,
    state: m.state,
    [u]: String(m.amount),
    [`fee_reserve_${u}`]: String(m.feeReserve),
    [`fee_${u}`]: m.fee === null ? null : String(m.fee),
    preimage: m.preimage,
    refund_id: m.id,
    balance,
  };
}

/** A key as the API shows it, to its holder and to the operator: spendable balance, not raw. */
export function keyView(key: KeyRow) {
  return {
    api_key: apiKeyOf(key.hash),
    balance: key.balance - key.reserved,
    reserved: key.reserved,
    unit: key.unit,
    total_spent: key.totalSpent,
    total_requests: key.totalRequests,
  };
}

/** Routstr's `/v1/balance/*`, also under the deprecated `/v1/wallet/*`. */
export function balanceRoutes(app: FastifyInstance, deps: { ledger: Ledger; wallets: CashuWallets; cfg: Config; log: Logger }): void {
  const { ledger, wallets } = deps;
  const trusted = wallets.names;
  const foreign = wallets.foreign !== undefined;

  /** What swapping a token from another mint cost its payer, as the ledger credited it. */
  async function foreignFee(info: TokenInfo): Promise<{ foreign_mint_fee_msats?: number }> {
    if (!info.foreign) return {};
    const row = await ledger.getToken(info.hash);
    return row?.msats != null ? { foreign_mint_fee_msats: info.msats - row.msats } : {};
  }
  const peers = new PeerFetch({
    timeoutMs: deps.cfg.PEER_TIMEOUT_MS,
    maxBytes: deps.cfg.PEER_MAX_BYTES,
    allowLoopback: deps.cfg.ALLOW_INSECURE_PEERS_FOR_TESTS_ONLY,
  });
  app.addHook('onClose', () => peers.close());

  /** Where a refund goes when the body names Lightning (Routstr's shape); undefined: a token. */
  function lightningTarget(req: FastifyRequest): LightningTarget | undefined {
    const address = field(req, 'lightning_address');
    const invoice = field(req, 'invoice');
    if (address && invoice) throw new HttpError(400, 'invalid_request', 'Send lightning_address or invoice, not both.');
    if (invoice) return { invoice };
    if (address) return { lightningAddress: address };
    return undefined;
  }

  /** The key a request names: an `sk-` key, or a Cashu token (redeemed on first sight). */
  async function keyOf(req: FastifyRequest, redeem: boolean): Promise<string> {
    const key = req.credential.apiKey;
    if (!key) throw new HttpError(401, 'invalid_api_key', 'Missing API key: send Authorization: Bearer sk-… or a Cashu token.');
    if (key.kind === 'token') {
      const info = inspectToken(key, trusted, foreign);
      if (redeem && !(await ledger.getKey(info.hash))) await wallets.redeem(info, info.hash);
      return info.hash;
    }
    if (key.kind !== 'key') throw new HttpError(401, 'invalid_api_key', 'Invalid API key.');
    return key.keyHash;
  }

  const create = async (req: FastifyRequest) => {
    const raw = field(req, 'initial_balance_token') ?? field(req, 'cashu_token') ?? req.credential.apiKey;
    if (!raw) throw new HttpError(400, 'invalid_cashu_token', 'Send the token as initial_balance_token.');
    const info = inspectToken(raw, trusted, foreign);
    const key = (await ledger.getKey(info.hash)) ?? (await wallets.redeem(info, info.hash));
    return { api_key: apiKeyOf(key.hash), balance: key.balance - key.reserved, ...(await foreignFee(info)) };
  };

  const info = async (req: FastifyRequest) => {
    const hash = await keyOf(req, true);
    const key = await ledger.getKey(hash);
    if (!key) {
      const child = await ledger.getChildKey(hash);
      if (child) return childInfo(child, await ledger.getKey(child.parentHash));
      throw new HttpError(401, 'invalid_api_key', 'Unknown API key.');
    }
    const children = await ledger.listChildKeys(hash);
    return { ...keyView(key), mint: key.mint, is_child: false, ...(children.length ? { child_keys: children.map(childView) } : {}) };
  };

  const topup = async (req: FastifyRequest) => {
    const hash = await keyOf(req, true);
    if (!(await ledger.getKey(hash))) {
      if (await ledger.getChildKey(hash)) throw childOnly('top up');
      throw new HttpError(401, 'invalid_api_key', 'Unknown API key.');
    }
    const raw = field(req, 'cashu_token');
    if (!raw) throw new HttpError(400, 'invalid_cashu_token', 'Send the token as cashu_token.');
    const tok = inspectToken(raw, trusted, foreign);
    await wallets.redeem(tok, hash);
    const row = (await ledger.getToken(tok.hash))!;
    if (row.keyHash !== hash) throw new HttpError(400, 'cashu_token_already_spent', 'This Cashu token has already been spent.');
    return { msats: row.msats ?? 0, ...(await foreignFee(tok)) };
  };

  const refund = async (req: FastifyRequest) => {
    const x = req.credential.xCashu;
    let hash: string;
    if (x) {
      hash = x.keyHash;
      if (!(await ledger.getKey(hash))) {
        throw new HttpError(404, 'refund_not_found', 'No payment with this X-Cashu token is known here.');
      }
    } else {
      hash = await keyOf(req, false);
      if (await ledger.getChildKey(hash)) throw childOnly('refund its parent\'s balance');
    }
    const r = await wallets.refund(hash);
    return refundBody(r);
  };

  childKeyRoutes(app, { ledger });
  for (const prefix of ['/v1/balance', '/v1/wallet']) {
    app.post(`${prefix}/create`, create);
    app.get(`${prefix}/create`, create);
    app.get(`${prefix}/info`, info);
    app.get(`${prefix}/`, info);
    app.post(`${prefix}/topup`, topup);
    app.post(`${prefix}/refund`, async (req, reply) => {
      reply.header('cache-control', 'no-store');
      const target = lightningTarget(req);
      if (target) {
        const hash = await keyOf(req, false);
        if (await ledger.getChildKey(hash)) throw childOnly('refund its parent\'s balance');
        const melt = await refundToLightning({ ledger, wallets, peers, log: deps.log }, hash, target);
        const key = await ledger.getKey(hash);
        return meltBody(melt, target, key ? key.balance - key.reserved : 0);
      }
      const body = await refund(req);
      reply.header('x-cashu', body.token);
      reply.header('cache-control', 'no-store');
      return body;
    });
  }
}
