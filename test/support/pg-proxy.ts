import { connect, createServer, type Server, type Socket } from 'node:net';

/** ReadyForQuery: the server is done with a statement (committed, if it ran on its own). */
const READY = Buffer.from([0x5a, 0, 0, 0, 5]);

type Fault = { steps: string[]; how: 'lost' | 'cut' };

/**
 * Sits between the gateway and a real PostgreSQL and breaks connections as a network does. A
 * statement is picked by bytes the client sends for it (its text the first time a connection
 * prepares it, its parameters every time): `lose` lets the server run it to the end, then closes
 * the connection instead of passing the answer on (committed, and the client told the connection
 * dropped); `cut` closes it before the server sees the statement at all.
 */
export class PostgresProxy {
  url = '';
  /** The statements a fault took, in order: 'lost' or 'cut'. */
  readonly broken: string[] = [];
  #faults: Fault[] = [];
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  readonly #target: URL;

  constructor(target: string) {
    this.#target = new URL(target);
  }

  async start(): Promise<string> {
    this.#server = createServer((client) => this.#pipe(client));
    await new Promise<void>((r) => this.#server!.listen(0, '127.0.0.1', r));
    const u = new URL(this.#target);
    u.port = String((this.#server.address() as { port: number }).port);
    return (this.url = u.toString());
  }

  /**
   * The next statement on a connection whose bytes hold each of `steps` in turn (a transaction's
   * COMMIT after one of its statements, say) runs, and its answer is lost with the connection.
   */
  lose(...steps: string[]): void {
    this.#faults.push({ steps, how: 'lost' });
  }

  /** The next statement holding `text` never reaches the server: the connection drops first. */
  cut(text: string): void {
    this.#faults.push({ steps: [text], how: 'cut' });
  }

  #pipe(client: Socket): void {
    const server = connect(Number(this.#target.port), this.#target.hostname);
    for (const s of [client, server]) {
      this.#sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        this.#sockets.delete(s);
        client.destroy();
        server.destroy();
      });
    }
    let following: { fault: Fault; at: number } | undefined;
    let losing = Buffer.alloc(0);
    let lost = false;
    client.on('data', (chunk: Buffer) => {
      // A fault another connection took first is no longer this one's to follow.
      if (following && !this.#faults.includes(following.fault)) following = undefined;
      if (!following) {
        const fault = this.#faults.find((x) => chunk.includes(x.steps[0]!));
        if (fault) following = { fault, at: 0 };
      }
      if (following && chunk.includes(following.fault.steps[following.at]!) && ++following.at === following.fault.steps.length) {
        const { how } = following.fault;
        this.#faults.splice(this.#faults.indexOf(following.fault), 1);
        following = undefined;
        this.broken.push(how);
        if (how === 'cut') return void client.destroy();
        lost = true;
      }
      server.write(chunk);
    });
    server.on('data', (chunk: Buffer) => {
      if (!lost) return void client.write(chunk);
      // Held back until the server says it is done with the statement; then that answer is dropped.
      losing = Buffer.concat([losing, chunk]);
      if (losing.includes(READY)) client.destroy();
    });
  }

  async stop(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }
}
