import autocannon from 'autocannon';

export interface LoadSpec {
  url: string;
  connections: number;
  /** Seconds; or a fixed number of requests with `amount`. */
  duration?: number;
  amount?: number;
  body: string;
  headers?: Record<string, string>;
  /** Per-request headers (each X-Cashu request spends its own token). */
  perRequest?: () => Record<string, string>;
  timeoutSec?: number;
}

export interface LoadResult {
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  elapsedMs: number;
  /** Latency of each 2xx response in ms (whole response, whole stream for SSE), unsorted. */
  latencies: number[];
  statusCodes: Record<string, number>;
}

/**
 * One autocannon run. Latencies come from autocannon's per-response event, which carries the
 * exact duration (autocannon's own histogram truncates to whole milliseconds, too coarse for
 * sub-millisecond added latency).
 */
export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const latencies: number[] = [];
  const statusCodes: Record<string, number> = {};
  const headers = { 'content-type': 'application/json', ...spec.headers };
  const request: autocannon.Request = { method: 'POST', body: spec.body, headers };
  if (spec.perRequest) {
    const extra = spec.perRequest;
    request.setupRequest = (req) => ({ ...req, headers: { ...headers, ...extra() } });
  }
  const started = performance.now();
  // Without a callback autocannon returns its emitter, which is also a promise of the result.
  const instance = autocannon({
    url: spec.url,
    connections: spec.connections,
    ...(spec.amount ? { amount: spec.amount } : { duration: spec.duration ?? 5 }),
    timeout: spec.timeoutSec ?? 30,
    requests: [request],
  }) as unknown as autocannon.Instance & Promise<autocannon.Result>;
  instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
    statusCodes[status] = (statusCodes[status] ?? 0) + 1;
    if (status >= 200 && status < 300) latencies.push(ms);
  });
  const result = await instance;
  const elapsedMs = performance.now() - started;
  return {
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    elapsedMs,
    latencies,
    statusCodes,
  };
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function sortedCopy(xs: number[]): Float64Array {
  return Float64Array.from(xs).sort();
}
