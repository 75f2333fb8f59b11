import { createServer, request, type Server } from 'node:http';

/**
 * How the proxy misbehaves on one path. `fail`: answers with this status and body, and the mint
 * never sees the call (a mint that refuses), the first `times` calls only if given, and only calls
 * whose body `when` picks if given (a mint that refuses some requests and takes the others).
 * `drop`: forwards the call, lets the mint act on it, then closes the connection instead of
 * answering (an answer lost on the way back). `drop` with `answer`: the mint acts, and the client is
 * told this instead (a mint that took a swap and says it refused it).
 */
export type Fault = { fail: number; body: unknown; times?: number; when?: (body: string) => boolean } | { drop: true; answer?: { status: number; body: unknown } };

/**
 * Sits in front of the real mint and counts every HTTP call made to it, so tests (and the
 * benchmark) report mint round trips as measured, not as assumed. Tests also make it a broken
 * mint, path by path: slow, refusing, or losing its answers.
 */
export class CountingProxy {
  url = '';
  calls: string[] = [];
  /** Holds requests to a path for a while before passing them on: a slow mint. */
  readonly delays = new Map<string, number>();
  /** Holds every request this long: a mint that far away (the benchmark's mint latency). */
  delayMs = 0;
  /** Faults by path (the path without its query), until removed. */
  readonly faults = new Map<string, Fault>();
  /** Calls the mint answered whose answer a `drop` fault threw away, by path. */
  readonly dropped: string[] = [];
  /** Runs before a request is passed on: a test looks at the world as the mint is asked. */
  onRequest: ((method: string, path: string) => Promise<void>) | undefined;
  /** Rewrites the mint's JSON answers (2xx only) before they are passed back: a mint that lies (or, async, one that takes its time to). */
  rewrite: ((method: string, path: string, json: Record<string, unknown>) => Record<string, unknown> | Promise<Record<string, unknown>>) | undefined;
  #server: Server | undefined;

  readonly target: string;

  constructor(target: string) {
    this.target = target;
  }

  /** `at`: a given port, to stand for a mint that comes back where it was. */
  async start(at = 0): Promise<string> {
    const target = new URL(this.target);
    this.#server = createServer(async (req, res) => {
      this.calls.push(`${req.method} ${req.url}`);
      const body: Buffer[] = [];
      for await (const c of req) body.push(c as Buffer);
      const delay = this.delays.get(req.url ?? '') ?? this.delayMs;
      if (delay) await new Promise((r) => setTimeout(r, delay));
      const path = (req.url ?? '').split('?')[0]!;
      const fault = this.faults.get(path);
      if (fault && 'fail' in fault && (fault.when?.(Buffer.concat(body).toString('utf8')) ?? true)) {
        if (fault.times !== undefined && --fault.times <= 0) this.faults.delete(path);
        const s = JSON.stringify(fault.body);
        res.writeHead(fault.fail, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
        res.end(s);
        return;
      }
      await this.onRequest?.(req.method ?? 'GET', req.url ?? '');
      const rewrite = this.rewrite;
      const up = request(
        // A rewritten answer is read as JSON, so the mint must not compress it (nutshell gzips larger ones).
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host, ...(rewrite && { 'accept-encoding': 'identity' }) } },
        async (r) => {
          if (fault && 'drop' in fault) {
            // The mint has done the work; read its whole answer so nothing of it is left in flight, then lose it.
            r.resume();
            r.on('end', () => {
              this.dropped.push(path);
              if (!fault.answer) return res.destroy();
              const s = JSON.stringify(fault.answer.body);
              res.writeHead(fault.answer.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) }).end(s);
            });
            return;
          }
          const status = r.statusCode ?? 502;
          if (!rewrite || status >= 300) {
            res.writeHead(status, r.headers);
            r.pipe(res);
            return;
          }
          const chunks: Buffer[] = [];
          for await (const c of r) chunks.push(c as Buffer);
          let text: string;
          try {
            text = JSON.stringify(await rewrite(req.method ?? 'GET', req.url ?? '', JSON.parse(Buffer.concat(chunks).toString('utf8'))));
          } catch {
            // Not JSON after all: the client sees a broken connection, not the test process an unhandled rejection.
            res.destroy();
            return;
          }
          res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
        },
      );
      up.on('error', () => res.destroy());
      up.end(Buffer.concat(body));
    });
    await new Promise<void>((r) => this.#server!.listen(at, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.#server.address() as { port: number }).port}`;
    return this.url;
  }

  reset(): void {
    this.calls = [];
  }

  /**
   * Holds every request to a path starting with `prefix` until `release()`: a mint that has the
   * call and has not answered yet. `reached` resolves once the first such call is in.
   */
  hold(prefix: string): { reached: Promise<void>; release: () => void } {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let arrived!: () => void;
    const reached = new Promise<void>((r) => (arrived = r));
    this.onRequest = async (_method, path) => {
      if (!path.startsWith(prefix)) return;
      arrived();
      await gate;
    };
    return {
      reached,
      release: () => {
        release();
        this.onRequest = undefined;
      },
    };
  }

  stop(): Promise<void> {
    return new Promise((r) => {
      this.#server?.closeAllConnections();
      this.#server?.close(() => r());
    });
  }
}
