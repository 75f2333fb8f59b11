import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.ts';
import type { Catalog } from '../engine/catalog.ts';
import type { CashuWallets } from '../cashu/wallet.ts';
import { msatsPricing, satsPricing } from '../engine/pricing.ts';
import { VERSION } from '../version.ts';

export function infoRoutes(app: FastifyInstance, deps: { cfg: Config; catalog: Catalog; wallets: CashuWallets; npub?: string | undefined }): void {
  const { cfg, catalog, wallets } = deps;
  const info = {
    name: cfg.NAME,
    description: cfg.DESCRIPTION,
    version: VERSION,
    npub: deps.npub ?? null,
    mints: cfg.CASHU_MINTS,
    http_url: cfg.PUBLIC_URL ?? null,
    onion_url: null,
    units: ['sat', 'msat'],
    payment_methods: ['cashu'],
    /** Lock ecash to this key (NUT-11, with DLEQ proofs) and it is accepted without a mint call. */
    p2pk_pubkey: wallets.p2pk.pubkey,
    child_key_cost_msats: 0,
  };
  app.get('/v1/info', async () => info);

  const models = async () => ({
    object: 'list',
    data: catalog.list().map((m) => ({
      id: m.id,
      object: 'model',
      created: m.created,
      owned_by: m.ownedBy,
      name: m.id,
      context_length: m.price.contextLength,
      sats_pricing: satsPricing(m.price),
      msats_pricing: msatsPricing(m.price),
      top_provider: {
        context_length: m.price.contextLength,
        max_completion_tokens: m.price.maxCompletionTokens,
        is_moderated: false,
      },
      enabled: true,
    })),
  });
  app.get('/v1/models', models);
  app.get('/models', models);
}
