import type { Config } from '../config.ts';
import { loadUpstreams, type NamedUpstream } from '../upstream/upstreams.ts';
import type { Ledger } from '../ledger/ledger.ts';
import { table } from './table.ts';

export type Status = 'ok' | 'warn' | 'FAIL';

export interface Check {
  name: string;
  status: Status;
  detail: string;
  /** What to do about a failure or warning. */
  fix?: string | undefined;
}

/** How long any one check may take: a doctor that hangs is no help. */
const CHECK_TIMEOUT_MS = 10_000;

function errText(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  const cause = err.cause?.code ?? err.cause?.message;
  return cause && !err.message.includes(cause) ? `${err.message} (${cause})` : err.message;
}

async function getJson(url: string, timeoutMs: number): Promise<unknown> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`GET ${url} answered HTTP ${res.status}`);
  }
  return res.json();
}

/**
 * Each upstream the gateway would use (UPSTREAMS_FILE, else UPSTREAM_BASE_URL), asked for its
 * model list with a short timeout. An upstream limited to a fixed list of models need not list
 * them, so an HTTP error from it is a warning; not answering at all is a failure.
 */
export async function checkUpstreams(cfg: Config): Promise<Check[]> {
  const timeout = Math.min(CHECK_TIMEOUT_MS, cfg.UPSTREAM_HEADERS_TIMEOUT_MS);
  let upstreams: NamedUpstream[];
  try {
    upstreams = loadUpstreams({ ...cfg, UPSTREAM_HEADERS_TIMEOUT_MS: timeout, UPSTREAM_BODY_TIMEOUT_MS: timeout });
  } catch (e) {
    return [{ name: `upstreams file ${cfg.UPSTREAMS_FILE ?? ''}`.trim(), status: 'FAIL', detail: errText(e).replace(/\n/g, '; '), fix: 'Correct the upstreams file (JSON or YAML); the README describes its format.' }];
  }
  const configured = new Set([...cfg.MODELS, ...Object.keys(cfg.MODEL_PRICES)]);
  const single = upstreams.length === 1 && upstreams[0]!.name === 'default';
  try {
    const checks = await Promise.all(upstreams.map((u) => checkUpstream(u, single ? `upstream ${u.client.baseUrl}` : `upstream ${u.name} ${u.client.baseUrl}`)));
    const served = checks.reduce((n, c) => n + c.models, 0) + upstreams.reduce((n, u) => n + (u.models?.length ?? 0), 0);
    if (served === 0 && configured.size === 0 && checks.every((c) => c.check.status === 'ok')) {
      for (const c of checks) {
        c.check.status = 'FAIL';
        c.check.fix = 'Pull or enable a model at the upstream, or name the models to serve in MODELS or MODEL_PRICES.';
        c.check.detail += ', and none are configured';
      }
    }
    return checks.map((c) => c.check);
  } finally {
    await Promise.all(upstreams.map((u) => u.client.close()));
  }
}

async function checkUpstream(u: NamedUpstream, name: string): Promise<{ check: Check; models: number }> {
  const base = u.client.baseUrl;
  try {
    const models = await u.client.models();
    const shown = models.slice(0, 3).map((m) => m.id).join(', ');
    const listed = models.length ? `${models.length} models listed (${shown}${models.length > 3 ? ', …' : ''})` : 'GET /models lists no models';
    const fixed = u.models ? `; serves ${u.models.length} named in the upstreams file` : '';
    return { check: { name, status: 'ok', detail: listed + fixed }, models: u.models ? 0 : models.length };
  } catch (e) {
    const msg = errText(e);
    const status = /answered (\d{3})/.exec(msg)?.[1];
    let fix = `Check that the upstream is running and that ${base} is its OpenAI-compatible base URL (UPSTREAM_BASE_URL, or base_url in the upstreams file).`;
    if (status === '401' || status === '403') fix = 'The upstream refused the credentials: set UPSTREAM_API_KEY (or the api_key of this upstream) to a valid key for it.';
    else if (status === '404') fix = 'The base URL must include the API prefix, e.g. http://127.0.0.1:11434/v1 or https://openrouter.ai/api/v1.';
    if (u.models && status) {
      return { check: { name, status: 'warn', detail: `${msg}; it serves the ${u.models.length} models named in the upstreams file`, fix }, models: 0 };
    }
    return { check: { name, status: 'FAIL', detail: msg, fix }, models: 0 };
  }
}

interface MintInfo {
  name?: string;
  version?: string;
  nuts?: Record<string, { supported?: boolean; disabled?: boolean } | undefined>;
}

interface Keysets {
  keysets?: Array<{ id: string; unit: string; active: boolean; input_fee_ppk?: number }>;
}

export async function checkMint(mint: string, timeoutMs: number): Promise<Check[]> {
  const name = `mint ${mint}`;
  const timeout = Math.min(CHECK_TIMEOUT_MS, timeoutMs);
  let info: MintInfo;
  try {
    info = (await getJson(`${mint}/v1/info`, timeout)) as MintInfo;
  } catch (e) {
    return [
      {
        name,
        status: 'FAIL',
        detail: errText(e),
        fix: `Check that the mint is up and that CASHU_MINTS holds its base URL (${mint}/v1/info must answer).`,
      },
    ];
  }
  let keysets: Keysets;
  try {
    keysets = (await getJson(`${mint}/v1/keysets`, timeout)) as Keysets;
  } catch (e) {
    return [{ name, status: 'FAIL', detail: `/v1/info answers, /v1/keysets does not: ${errText(e)}`, fix: 'The mint must speak the Cashu v1 API (NUT-01, NUT-02).' }];
  }
  const active = (keysets.keysets ?? []).filter((k) => k.active);
  const units = [...new Set(active.map((k) => k.unit))].filter((u) => u === 'sat' || u === 'msat');
  const fees = [...new Set(active.filter((k) => units.includes(k.unit as 'sat')).map((k) => k.input_fee_ppk ?? 0))];
  const about = `${info.name ?? 'unnamed'} ${info.version ?? ''}`.trim();
  const checks: Check[] = [];
  if (units.length === 0) {
    checks.push({
      name,
      status: 'FAIL',
      detail: `${about}: no active sat or msat keyset (active units: ${[...new Set(active.map((k) => k.unit))].join(', ') || 'none'})`,
      fix: 'The gateway takes only sat and msat ecash: use a mint with a sat (or msat) keyset, or enable one at the mint.',
    });
  } else {
    const fee = fees.some((f) => f > 0) ? `, input fee ${fees.join('/')} ppk` : '';
    checks.push({ name, status: 'ok', detail: `${about}; keysets: ${units.join(', ')}${fee}` });
  }
  const supported = (n: string) => info.nuts?.[n]?.supported === true && info.nuts?.[n]?.disabled !== true;
  const nut = (n: string) => `NUT-${n.padStart(2, '0')}`;
  // Two NUTs a feature needs together: ok when the mint advertises both, else a warning saying which.
  const pair = (a: string, b: string, feature: string, works: string, fix: string): Check => {
    const ok = supported(a) && supported(b);
    const says = (n: string) => `${nut(n)}: ${supported(n) ? 'yes' : 'no'}`;
    return { name: `  ${nut(a)}/${b.padStart(2, '0')} (${feature})`, status: ok ? 'ok' : 'warn', detail: ok ? `supported: ${works}` : `not advertised (${says(a)}, ${says(b)})`, fix: ok ? undefined : fix };
  };
  checks.push(
    pair('11', '12', 'P2PK, DLEQ', 'ecash locked to the gateway key is taken without a mint call', 'Locked (zero round-trip) payments will not work with this mint; plain tokens still do. Prefer a mint that supports NUT-11 and NUT-12.'),
    pair('7', '9', 'state, restore', 'interrupted swaps can be settled after a crash', 'Without proof-state checks and restore, a swap interrupted by a crash cannot be settled automatically. Prefer a mint that supports both.'),
  );
  return checks;
}

export async function checkDatabase(url: string, open: (url: string) => Promise<Ledger>): Promise<Check> {
  const shown = url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
  const name = `database ${shown}`;
  const pg = /^postgres(ql)?:/.test(url);
  let ledger: Ledger | undefined;
  try {
    ledger = await Promise.race([
      open(url),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS).unref()),
    ]);
    const t = await ledger.totals();
    return {
      name,
      status: 'ok',
      detail: `opened, schema up to date; credited ${t.credited} msats, charged ${t.charged}, held on keys ${t.balances}`,
    };
  } catch (e) {
    return {
      name,
      status: 'FAIL',
      detail: errText(e),
      fix: pg
        ? 'Check that PostgreSQL is running and reachable, that the user and password in DATABASE_URL are right, and that the database exists (CREATE DATABASE …).'
        : 'DATABASE_URL=sqlite:<path>: the file (and its folder) must be creatable and writable by this user, and not a corrupt or foreign database.',
    };
  } finally {
    await ledger?.close().catch(() => {});
  }
}

/**
 * What the Nostr door will announce. Routstr's discovery drops a provider announcement (38421)
 * without the URL clients call, so without PUBLIC_URL none is published and this says so.
 */
/** Whether tokens from untrusted mints are taken, and at what most. */
export function checkForeignMints(
  cfg: Pick<Config, 'FOREIGN_MINTS' | 'FOREIGN_MINT_MAX_FEE_PERCENT' | 'FOREIGN_MINT_MIN_FEE_SATS' | 'PEER_FAILURE_COOLDOWN_SECONDS' | 'FOREIGN_MINT_MAX_PENDING_SWAPS'>,
): Check {
  const name = 'tokens from other mints';
  if (cfg.FOREIGN_MINTS === 'refuse') return { name, status: 'ok', detail: 'refused (FOREIGN_MINTS=refuse): only CASHU_MINTS are accepted' };
  return {
    name,
    status: 'ok',
    detail: `swapped over Lightning into the first trusted mint (FOREIGN_MINTS=swap), fee at most ${cfg.FOREIGN_MINT_MAX_FEE_PERCENT} % or ${cfg.FOREIGN_MINT_MIN_FEE_SATS} sats; a failed mint rests ${cfg.PEER_FAILURE_COOLDOWN_SECONDS} s; at most ${cfg.FOREIGN_MINT_MAX_PENDING_SWAPS} swaps pending per mint`,
  };
}

export function checkAnnouncements(cfg: Pick<Config, 'RELAYS' | 'PUBLIC_URL'>): Check[] {
  if (cfg.RELAYS.length === 0) return [];
  const name = 'Nostr announcements';
  if (!cfg.PUBLIC_URL) {
    return [
      {
        name,
        status: 'warn',
        detail: 'PUBLIC_URL is not set: kinds 0, 31990 and 10019 are published, no Routstr provider announcement (38421)',
        fix: 'Set PUBLIC_URL to the https:// address clients reach this gateway at, so Routstr clients can list it; Nostr jobs work either way.',
      },
    ];
  }
  return [{ name, status: 'ok', detail: `kinds 0, 31990, 10019 and a Routstr provider announcement (38421) for ${cfg.PUBLIC_URL}` }];
}

export async function checkRelay(url: string): Promise<Check> {
  const name = `relay ${url}`;
  const fix = 'Check the relay URL (ws:// or wss://) and that the relay is up; remove it from RELAYS if it is gone.';
  const start = performance.now();
  return new Promise<Check>((resolve) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      resolve({ name, status: 'FAIL', detail: errText(e), fix });
      return;
    }
    const done = (c: Check) => {
      clearTimeout(timer);
      ws.onopen = ws.onerror = ws.onclose = null;
      try {
        ws.close();
      } catch {
        /* already closed */
      }
      resolve(c);
    };
    const timer = setTimeout(() => done({ name, status: 'FAIL', detail: `no WebSocket connection within ${CHECK_TIMEOUT_MS} ms`, fix }), CHECK_TIMEOUT_MS);
    ws.onopen = () => done({ name, status: 'ok', detail: `WebSocket connected in ${Math.round(performance.now() - start)} ms` });
    ws.onerror = (ev) => done({ name, status: 'FAIL', detail: `WebSocket connection failed${(ev as ErrorEvent).message ? `: ${(ev as ErrorEvent).message}` : ''}`, fix });
    ws.onclose = () => done({ name, status: 'FAIL', detail: 'the connection closed before it opened', fix });
  });
}

/** The report: a table of every check, then what to do about each problem. */
export function report(checks: Check[]): string {
  const rows = checks.map((c) => [c.name, c.status, c.detail]);
  let out = table(['CHECK', 'STATUS', 'DETAIL'], rows);
  const todo = checks.filter((c) => c.status !== 'ok' && c.fix);
  if (todo.length) {
    out += '\n\nTo fix:\n';
    out += todo.map((c) => `- ${c.name.trim()} (${c.status}): ${c.fix}`).join('\n');
  }
  const failed = checks.filter((c) => c.status === 'FAIL').length;
  const warned = checks.filter((c) => c.status === 'warn').length;
  out += `\n\n${failed ? `${failed} failed` : 'all checks passed'}${warned ? `, ${warned} warning${warned > 1 ? 's' : ''}` : ''}\n`;
  return out;
}
