import { Wallet } from '@cashu/cashu-ts';
import type { Logger } from 'pino';
import type { Unit } from '../ledger/ledger.ts';
import { mintNames, type MintNames } from './token.ts';
import { mintUnreachable } from './errors.ts';

/**
 * The trusted mints: one cashu-ts Wallet per (mint, unit), loaded once and reused, and which of
 * them are known to be down, so an outage is logged once and unpaid requests do not call them.
 */
export class Mints {
  readonly #wallets = new Map<string, Promise<Wallet>>();
  readonly #loadedAt = new Map<string, number>();
  /** Mints whose keys could not be loaded, or that refused a connection, until they answer again. */
  readonly #unreachable = new Set<string>();
  readonly #log: Logger;
  /** Trusted mints, primary first: the order refunds are paid from. */
  readonly urls: readonly string[];
  /** Every URL a token may name, to the trusted mint it stands for. */
  readonly names: MintNames;
  /** Where a trusted mint is called when that is not its own URL (CASHU_MINT_ALIASES). */
  readonly #reach: Readonly<Record<string, string>>;
  /** Proofs of each small denomination to keep on hand, so change needs no swap (0: no float). */
  readonly #changeFloat: number;

  constructor(urls: readonly string[], log: Logger, opts: { aliases?: Readonly<Record<string, string>>; changeFloat: number }) {
    this.urls = urls;
    this.#reach = opts.aliases ?? {};
    this.names = mintNames(urls, this.#reach);
    this.#log = log;
    this.#changeFloat = opts.changeFloat;
  }

  /** Mint info and keysets are fetched once per (mint, unit), not per request. */
  wallet(mint: string, unit: Unit): Promise<Wallet> {
    const id = `${unit} ${mint}`;
    let w = this.#wallets.get(id);
    if (!w) {
      w = (async () => {
        const wallet = new Wallet(this.#reach[mint] ?? mint, { unit, ...(this.#changeFloat > 0 && { denominationTarget: this.#changeFloat }) });
        await wallet.loadMint();
        return wallet;
      })();
      // A failed load is not cached, so the next request tries the mint again.
      w.catch(() => this.#wallets.delete(id));
      this.#wallets.set(id, w);
      this.#loadedAt.set(id, Date.now());
    }
    return w;
  }

  /** The wallet, or the client's "mint unreachable" if its keys cannot be loaded. */
  async reachable(mint: string, unit: Unit): Promise<Wallet> {
    try {
      return await this.wallet(mint, unit);
    } catch (e) {
      this.down(mint, e);
      throw mintUnreachable();
    }
  }

  /**
   * Reloads a mint's keysets when a token names one we do not know (a rotation), at most once a
   * minute per mint and unit, so made-up keyset ids cannot make us hammer the mint.
   */
  async reloaded(mint: string, unit: Unit): Promise<Wallet | undefined> {
    const id = `${unit} ${mint}`;
    if (Date.now() - (this.#loadedAt.get(id) ?? 0) < 60_000) return undefined;
    this.#wallets.delete(id);
    return this.wallet(mint, unit).catch(() => undefined);
  }

  isDown(mint: string): boolean {
    return this.#unreachable.has(mint);
  }

  /** An outage is logged when it starts and when it ends, not on every request it fails. */
  down(mint: string, e: unknown): void {
    if (this.#unreachable.has(mint)) return;
    this.#unreachable.add(mint);
    this.#log.warn({ mint, err: (e as Error).message }, 'mint unreachable');
  }

  up(mint: string): void {
    if (this.#unreachable.delete(mint)) this.#log.info({ mint }, 'mint reachable again');
  }
}
