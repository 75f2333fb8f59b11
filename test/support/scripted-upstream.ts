import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/**
 * What the scripted upstreams (OpenAI chat, Responses, Anthropic) share: a server on loopback
 * under `/v1`, stopped with its open connections, the scripted modes and recorded requests a
 * test reads back, and the count of streams their client left. Each API's answers are its own.
 */
export abstract class ScriptedUpstream<Mode extends string, Request> {
  url = '';
  readonly requests: Request[] = [];
  /** Modes for the next requests, in order; afterwards 'ok'. */
  readonly modes: Mode[] = [];
  /** Streams the client closed before their end. */
  closedEarly = 0;
  #server: Server | undefined;

  /** `at`: a given port, to stand for an upstream that comes back where it was. */
  async start(at = 0): Promise<string> {
    const server = createServer((req, res) => void this.handle(req, res));
    this.#server = server;
    await new Promise<void>((r) => server.listen(at, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    this.url = `http://127.0.0.1:${port}/v1`;
    return this.url;
  }

  stop(): Promise<void> {
    return new Promise((r) => {
      this.#server?.closeAllConnections();
      this.#server?.close(() => r());
    });
  }

  protected abstract handle(req: IncomingMessage, res: ServerResponse): Promise<void>;

  protected nextMode(): Mode | 'ok' {
    return this.modes.shift() ?? 'ok';
  }

  /** Counts the stream in `closedEarly` if its client leaves before the end; the result tells whether it has. */
  protected watchClose(res: ServerResponse): () => boolean {
    let closed = false;
    res.on('close', () => {
      if (!res.writableFinished) {
        closed = true;
        this.closedEarly++;
      }
    });
    return () => closed;
  }
}

/** The request's path below `/v1`, without its query. */
export function apiPath(req: IncomingMessage): string {
  return (req.url ?? '').replace(/^\/v1/, '').split('?')[0]!;
}

export async function readBody(req: IncomingMessage): Promise<string> {
  let raw = '';
  for await (const c of req) raw += c;
  return raw;
}

export function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s), ...headers });
  res.end(s);
}
