import type { FastifyInstance, FastifyRequest } from 'fastify';
import { verifyEvent, type Event } from 'nostr-tools/pure';
import * as nip19 from 'nostr-tools/nip19';
import { validateEvent } from 'nostr-tools/nip98';
import { z } from 'zod';
import type { Config } from '../config.ts';
import { apiKeyOf, keyHashOfName } from '../cashu/credential.ts';
import type { CashuWallets } from '../cashu/wallet.ts';
import type { Catalog } from '../engine/catalog.ts';
import { HttpError } from './errors.ts';
import { MSATS_PER, type Ledger } from '../ledger/ledger.ts';
import { keyView } from './balance.ts';

/** How far a NIP-98 event's created_at may be from now. */
const WINDOW_SEC = 60;

function adminKeys(list: string[]): Set<string> {
  return new Set(
    list.map((k) => {
      if (/^[0-9a-f]{64}$/i.test(k)) return k.toLowerCase();
      const d = nip19.decode(k);
      if (d.type !== 'npub') throw new Error(`ADMIN_NPUBS: ${k} is not an npub`);
      return d.data;
    }),
  );
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.') || ip.startsWith('::ffff:127.');
}

const unauthorized = (why: string) => new HttpError(401, 'unauthorized', `NIP-98 authorization failed: ${why}.`);

/**
 * The operator's API, authenticated with NIP-98: `Authorization: Nostr <base64 kind 27235
 * event>` signed by a key in ADMIN_NPUBS, for this exact URL and method, within a minute, and
 * never seen before.
 */
export function adminRoutes(
  app: FastifyInstance,
  deps: { cfg: Config; ledger: Ledger; wallets: CashuWallets; catalog: Catalog },
): void {
  const { cfg, ledger, wallets, catalog } = deps;
  const admins = adminKeys(cfg.ADMIN_NPUBS);

  async function authorize(req: FastifyRequest): Promise<void> {
    if (admins.size === 0) throw new HttpError(403, 'admin_disabled', 'No ADMIN_NPUBS are configured.');
    const header = req.headers.authorization ?? '';
    if (!/^Nostr\s+/i.test(header)) throw unauthorized('send Authorization: Nostr <base64 event>');
    let event: Event;
    try {
      event = JSON.parse(Buffer.from(header.replace(/^Nostr\s+/i, ''), 'base64').toString('utf8')) as Event;
    } catch {
      throw unauthorized('the token is not a base64 JSON event');
    }
    // verifyEvent marks what it checked with a symbol property: on null or a primitive that throws.
    if (typeof event !== 'object' || event === null || Array.isArray(event)) throw unauthorized('the token is not a base64 JSON event');
    if (!verifyEvent(event)) throw unauthorized('bad signature');
    if (!admins.has(event.pubkey)) throw new HttpError(403, 'forbidden', 'This key is not an admin.');
    const now = Math.floor(Date.now() / 1000);
    if (Math.abs(now - event.created_at) > WINDOW_SEC) throw unauthorized('the event is too old or from the future');
    // Without PUBLIC_URL the URL an event must sign comes from the request itself (its Host, or
    // X-Forwarded-Host behind a proxy): only a caller on this machine may rely on that.
    // Both the socket's peer and the client address: behind a trusted proxy the peer is loopback for
    // everyone, and a forged X-Forwarded-For can make req.ip look local when no proxy is there.
    if (!cfg.PUBLIC_URL && !(isLoopback(req.ip) && isLoopback(req.socket.remoteAddress ?? ''))) {
      throw new HttpError(403, 'public_url_required', 'Set PUBLIC_URL to use the admin API from another machine.');
    }
    const url = `${cfg.PUBLIC_URL?.replace(/\/+$/, '') ?? `${req.protocol}://${req.host}`}${req.url}`;
    const body = req.body && Object.keys(req.body as object).length ? req.body : undefined;
    let valid = false;
    try {
      valid = await validateEvent(event, url, req.method, body);
    } catch (e) {
      throw unauthorized((e as Error).message.toLowerCase().replace(/\.$/, ''));
    }
    if (!valid) throw unauthorized('the event does not match this request');
    // Kept in the ledger for as long as the event could pass the time check, so every instance
    // on it, and this one after a restart, refuses a replay.
    if (!(await ledger.claimOnce('nip98', event.id, (event.created_at + 2 * WINDOW_SEC) * 1000))) {
      throw unauthorized('this event was used already');
    }
  }

  app.register(async (admin) => {
    admin.addHook('preHandler', authorize);

    admin.get('/admin/balances', async () => ({
      keys: (await ledger.listKeys(1000)).map((k) => ({ ...keyView(k), revoked: k.revoked })),
    }));

    admin.get('/admin/earnings', async () => {
      const t = await ledger.totals();
      const wallet: Array<{ mint: string; unit: string; msats: number }> = [];
      for (const mint of wallets.mints) {
        for (const unit of ['sat', 'msat'] as const) {
          const held = (await ledger.heldProofs(mint, unit)).reduce((s, p) => s + p.amount, 0) * MSATS_PER[unit];
          if (held) wallet.push({ mint, unit, msats: held });
        }
      }
      return { earnings_msats: t.charged - t.withdrawn - t.fees, ...t, wallet };
    });

    admin.post('/admin/keys/:key/revoke', async (req: FastifyRequest<{ Params: { key: string } }>) => {
      const hash = keyHashOfName(req.params.key);
      if (!(await ledger.revokeKey(hash))) throw new HttpError(404, 'key_not_found', 'No such key.');
      return { api_key: apiKeyOf(hash), revoked: true };
    });

    admin.get('/admin/prices', async () => ({
      models: catalog.list().map((m) => ({
        id: m.id,
        prompt_msats_per_token: m.price.promptRate / 1e6,
        completion_msats_per_token: m.price.completionRate / 1e6,
        max_completion_tokens: m.price.maxCompletionTokens,
      })),
    }));

    const priceBody = z.strictObject({ prompt_msats_per_token: z.number().nonnegative(), completion_msats_per_token: z.number().nonnegative() });
    admin.put('/admin/prices/:model', async (req: FastifyRequest<{ Params: { model: string } }>) => {
      const parsed = priceBody.safeParse(req.body);
      if (!parsed.success) throw new HttpError(400, 'invalid_request', 'Send {"prompt_msats_per_token", "completion_msats_per_token"}.');
      const m = catalog.setPrice(req.params.model, parsed.data.prompt_msats_per_token, parsed.data.completion_msats_per_token);
      if (!m) throw new HttpError(404, 'model_not_found', `The model '${req.params.model}' is not served here.`);
      return { id: m.id, prompt_msats_per_token: m.price.promptRate / 1e6, completion_msats_per_token: m.price.completionRate / 1e6 };
    });

    const withdrawBody = z.strictObject({ invoice: z.string().min(1).optional() });
    admin.post('/admin/withdraw', async (req) => {
      const parsed = withdrawBody.safeParse(req.body ?? {});
      if (!parsed.success) throw new HttpError(400, 'invalid_request', 'Send {} for a token, or {"invoice": "<bolt11>"} to pay an invoice.');
      if (parsed.data.invoice) {
        const m = await wallets.melt(parsed.data.invoice);
        return { state: m.state, amount: m.amount, fee: m.fee, unit: m.unit, mint: m.mint, quote: m.quote, preimage: m.preimage };
      }
      const r = await wallets.withdraw();
      if (!r) return { token: null, message: 'nothing to withdraw: earnings are below 1 sat' };
      return { token: r.token, amount: r.amount, unit: r.unit, mint: r.mint };
    });
  });
}
