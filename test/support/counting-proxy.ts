import { createServer, request, type Server } from 'node:http';

/**
 * Sits in front of the real mint and counts every HTTP call made to it, so tests (and the
 * benchmark) report mint round trips as measured, not as assumed.
 */
export class CountingProxy {
  url = '';
  calls: string[] = [];
  /** Holds requests to a path for a while before passing them on: a slow mint. */
  readonly delays = new Map<string, number>();
  /** Holds every request this long: a mint that far away (the benchmark's mint latency). */
  delayMs = 0;
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
      const up = request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
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

  stop(): Promise<void> {
    return new Promise((r) => {
      this.#server?.closeAllConnections();
      this.#server?.close(() => r());
    });
  }
}
