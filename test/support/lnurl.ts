import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { externalInvoice } from './invoice.ts';

/**
 * A Lightning address server on loopback (LUD-16 and LUD-06), with one name per way such a
 * server can misbehave. `alice` is honest: her invoices come from a payee outside the mint, which
 * nutshell's FakeWallet pays (1 sat fee) as a real backend would route them.
 */
export class LnurlDouble {
  #server: Server | undefined;
  readonly #held = new Set<ServerResponse>();
  base = '';
  /** Requests seen, by path, so a test can tell what was (not) asked for. */
  readonly hits: string[] = [];

  address(name: string): string {
    return `${name}@${new URL(this.base).host}`;
  }

  async start(): Promise<void> {
    this.#server = createServer((req, res) => this.#handle(req, res));
    await new Promise<void>((r) => this.#server!.listen(0, '127.0.0.1', r));
    this.base = `http://127.0.0.1:${(this.#server.address() as { port: number }).port}`;
  }

  async stop(): Promise<void> {
    for (const res of this.#held) res.destroy();
    this.#server?.closeAllConnections();
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }

  #json(res: ServerResponse, body: unknown, status = 200): void {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  }

  #payRequest(name: string, callback = `${this.base}/cb/${name}`) {
    return { tag: 'payRequest', callback, minSendable: 1000, maxSendable: 100_000_000, metadata: JSON.stringify([['text/plain', name]]) };
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.base);
    this.hits.push(url.pathname);
    const wellKnown = /^\/\.well-known\/lnurlp\/([^/]+)$/.exec(url.pathname);
    const cb = /^\/cb\/([^/]+)$/.exec(url.pathname);
    if (wellKnown) {
      const name = wellKnown[1]!;
      switch (name) {
        case 'garbage':
          return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html>not what you asked for</html>');
        case 'wrongtag':
          return this.#json(res, { tag: 'withdrawRequest', callback: `${this.base}/cb/alice`, minSendable: 1, maxSendable: 1 });
        case 'refuses':
          return this.#json(res, { status: 'ERROR', reason: 'no such user' });
        case 'redirect':
          return void res.writeHead(302, { location: `${this.base}/.well-known/lnurlp/alice` }).end();
        case 'slow':
          // Never answers: only the gateway's own deadline ends this.
          this.#held.add(res);
          return;
        case 'huge': {
          // Chunked, no content-length: only counting the bytes as they come catches it.
          res.writeHead(200, { 'content-type': 'application/json' });
          res.write(`{"tag":"payRequest","pad":"`);
          const chunk = 'x'.repeat(64 * 1024);
          for (let i = 0; i < 32; i++) res.write(chunk);
          return void res.end(`"}`);
        }
        case 'private':
          return this.#json(res, this.#payRequest(name, 'http://10.0.0.1/cb/alice'));
        case 'cbredirect':
          return this.#json(res, this.#payRequest(name));
        default:
          return this.#json(res, this.#payRequest(name));
      }
    }
    if (cb) {
      const msats = Number(url.searchParams.get('amount'));
      if (cb[1] === 'cbredirect') return void res.writeHead(307, { location: `${this.base}/cb/alice?amount=${msats}` }).end();
      // One sat more than asked for: the gateway must see it before paying.
      const sats = cb[1] === 'greedy' ? msats / 1000 + 1 : msats / 1000;
      return this.#json(res, { pr: externalInvoice(sats), routes: [] });
    }
    this.#json(res, { status: 'ERROR', reason: 'not found' }, 404);
  }
}
