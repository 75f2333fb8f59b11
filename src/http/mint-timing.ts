/**
 * Times the gateway's calls to Cashu mints without touching the wallet code: @cashu/cashu-ts
 * issues every mint request through the global `fetch` (resolved at call time), so a thin wrapper
 * around `globalThis.fetch`, installed once per process, sees each one. Requests to other URLs
 * pass through untouched. `fetch` resolves when the response headers arrive, which is the latency
 * measured; a call that gets no response (refused, timed out, aborted) is reported as 'error'.
 */
export interface MintTiming {
  url: string;
  method: string;
  status: number | 'error';
  seconds: number;
}

type Listener = (t: MintTiming) => void;

const listeners = new Set<Listener>();
let installed = false;

function urlOf(input: Parameters<typeof fetch>[0]): string {
  if (typeof input === 'string') return input;
  if (input instanceof URL) return input.href;
  return input.url;
}

function install(): void {
  if (installed) return;
  installed = true;
  const original = globalThis.fetch;
  globalThis.fetch = async function timedFetch(input, init) {
    if (listeners.size === 0) return original(input, init);
    const url = urlOf(input);
    const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const start = performance.now();
    const report = (status: MintTiming['status']) => {
      const t: MintTiming = { url, method, status, seconds: (performance.now() - start) / 1000 };
      for (const l of listeners) l(t);
    };
    try {
      const res = await original(input, init);
      report(res.status);
      return res;
    } catch (e) {
      report('error');
      throw e;
    }
  };
}

/** Calls `listener` for every fetch the process makes; returns the function that stops it. */
export function onFetch(listener: Listener): () => void {
  install();
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/**
 * The mint a URL belongs to (by prefix, so a mint served under a path works) and its endpoint,
 * with ids and quote ids folded to `:id` so the label set stays small.
 */
export function mintEndpoint(url: string, mints: readonly string[]): { mint: string; endpoint: string } | undefined {
  const bare = url.split(/[?#]/, 1)[0]!;
  for (const mint of mints) {
    if (bare.startsWith(`${mint}/`)) {
      const endpoint = bare
        .slice(mint.length)
        .split('/')
        .map((seg) => (/^[0-9A-Za-z_-]{16,}$/.test(seg) ? ':id' : seg))
        .join('/');
      return { mint, endpoint };
    }
  }
  return undefined;
}
