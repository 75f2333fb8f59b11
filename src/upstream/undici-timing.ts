import { subscribe, unsubscribe } from 'node:diagnostics_channel';

/**
 * Times outgoing HTTP requests through undici's own diagnostics channels, which both the `fetch`
 * Node ships (what @cashu/cashu-ts calls the mints with) and the undici package (the upstream
 * pools) publish to: nothing is patched or wrapped. A request is timed from its creation to its
 * response headers; one that gets none (refused, timed out, aborted) ends as 'error'.
 */
export interface RequestTiming {
  /** Scheme, host and port, no trailing slash. */
  origin: string;
  /** As sent: the path and the query. */
  path: string;
  method: string;
  status: number | 'error';
  seconds: number;
}

/** The fields of undici's request object read here (see undici's docs/api/DiagnosticsChannel.md). */
interface UndiciRequest {
  origin: string | URL;
  path: string;
  method: string;
}

const CREATE = 'undici:request:create';
const HEADERS = 'undici:request:headers';
const ERROR = 'undici:request:error';

/**
 * Calls `listener` once for every request `wanted` takes (asked when the request is created);
 * returns the function that stops it.
 */
export function onRequests(listener: (t: RequestTiming) => void, wanted: (origin: string, path: string, method: string) => boolean): () => void {
  const started = new WeakMap<object, { origin: string; start: number }>();
  const create = (msg: unknown) => {
    const req = (msg as { request: UndiciRequest }).request;
    const origin = String(req.origin).replace(/\/$/, '');
    if (wanted(origin, req.path, req.method)) started.set(req, { origin, start: performance.now() });
  };
  // Only the first ending counts: a body that fails after its headers came is not a second call.
  const end = (req: UndiciRequest, status: RequestTiming['status']) => {
    const s = started.get(req);
    if (!s) return;
    started.delete(req);
    listener({ origin: s.origin, path: req.path, method: req.method, status, seconds: (performance.now() - s.start) / 1000 });
  };
  const headers = (msg: unknown) => {
    const m = msg as { request: UndiciRequest; response: { statusCode: number } };
    end(m.request, m.response.statusCode);
  };
  const error = (msg: unknown) => end((msg as { request: UndiciRequest }).request, 'error');
  subscribe(CREATE, create);
  subscribe(HEADERS, headers);
  subscribe(ERROR, error);
  return () => {
    unsubscribe(CREATE, create);
    unsubscribe(HEADERS, headers);
    unsubscribe(ERROR, error);
  };
}
