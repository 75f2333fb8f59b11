import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Just enough RFC 6455 for a relay double (unfragmented text frames, ping, close): `opened` is
 * told of each connection, `message` of each client message, parsed.
 */
abstract class RelayDouble {
  url = '';
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;

  protected opened(_socket: Socket): void {}
  protected abstract message(socket: Socket, msg: unknown[]): void;

  async start(): Promise<string> {
    this.#server = createServer((_req, res) => res.writeHead(426).end());
    this.#server.on('upgrade', (req, socket: Socket) => {
      const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
      socket.on('error', () => {});
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`);
      this.opened(socket);
      let buffered = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        for (;;) {
          const frame = readFrame(buffered);
          if (!frame) break;
          buffered = buffered.subarray(frame.length);
          if (frame.opcode === 8) return void socket.end(Buffer.from([0x88, 0]));
          if (frame.opcode === 9) socket.write(Buffer.concat([Buffer.from([0x8a, frame.payload.length]), frame.payload]));
          if (frame.opcode !== 1) continue;
          this.message(socket, JSON.parse(frame.payload.toString('utf8')) as unknown[]);
        }
      });
    });
    await new Promise<void>((r) => this.#server!.listen(0, '127.0.0.1', r));
    this.url = `ws://127.0.0.1:${(this.#server.address() as { port: number }).port}`;
    return this.url;
  }

  stop(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((r) => this.#server?.close(() => r()) ?? r());
  }
}

/**
 * A WebSocket server that completes the opening handshake and then holds the connection, saying
 * nothing: enough for a client to see a relay that accepts connections.
 */
export class HandshakeServer extends RelayDouble {
  connections = 0;

  protected override opened(): void {
    this.connections++;
  }

  protected message(): void {}
}

/**
 * A relay that misbehaves the way nostr-rs-relay with `nip42_auth` does toward nostr-tools: it
 * sends a NIP-42 challenge, refuses every REQ and EVENT with `auth-required:`, and never answers
 * the AUTH it is sent. Only a double can promise never to answer; everything else in these tests
 * is a real relay.
 */
export class SilentAuthRelay extends RelayDouble {
  /** Every client message, parsed, in arrival order. */
  readonly received: unknown[][] = [];

  protected override opened(socket: Socket): void {
    send(socket, ['AUTH', randomBytes(16).toString('hex')]);
  }

  protected message(socket: Socket, msg: unknown[]): void {
    this.received.push(msg);
    if (msg[0] === 'REQ') send(socket, ['CLOSED', msg[1], 'auth-required: this relay wants NIP-42 AUTH first']);
    if (msg[0] === 'EVENT') send(socket, ['OK', (msg[1] as { id: string }).id, false, 'auth-required: this relay wants NIP-42 AUTH first']);
    // AUTH: silence, as the relay being imitated.
  }

  count(type: string): number {
    return this.received.filter((m) => m[0] === type).length;
  }
}

/**
 * A relay that takes every event and holds its OK until `release()`, answering REQs with an empty
 * EOSE: a publish to it stays under way as long as a test needs (up to the client's own timeout).
 */
export class HoldingRelay extends RelayDouble {
  /** Ids of the events it was sent, in arrival order. */
  readonly events: string[] = [];
  readonly #held: Array<() => void> = [];
  #released = false;

  protected message(socket: Socket, msg: unknown[]): void {
    if (msg[0] === 'REQ') send(socket, ['EOSE', msg[1]]);
    if (msg[0] !== 'EVENT') return;
    const id = (msg[1] as { id: string }).id;
    this.events.push(id);
    const ok = () => send(socket, ['OK', id, true, '']);
    if (this.#released) ok();
    else this.#held.push(ok);
  }

  /** OKs every event held, and every one from now on. */
  release(): void {
    this.#released = true;
    for (const ok of this.#held.splice(0)) ok();
  }
}

function send(socket: Socket, msg: unknown[]): void {
  const payload = Buffer.from(JSON.stringify(msg));
  const head =
    payload.length < 126
      ? Buffer.from([0x81, payload.length])
      : payload.length < 65_536
        ? Buffer.from([0x81, 126, payload.length >> 8, payload.length & 0xff])
        : Buffer.concat([Buffer.from([0x81, 127]), Buffer.from(new BigUint64Array([BigInt(payload.length)]).buffer).reverse()]);
  socket.write(Buffer.concat([head, payload]));
}

/** One client frame (clients always mask), or undefined while it is incomplete. */
function readFrame(b: Buffer): { opcode: number; payload: Buffer; length: number } | undefined {
  if (b.length < 2) return undefined;
  const opcode = b[0]! & 0x0f;
  let len = b[1]! & 0x7f;
  let offset = 2;
  if (len === 126) {
    if (b.length < 4) return undefined;
    len = b.readUInt16BE(2);
    offset = 4;
  } else if (len === 127) {
    if (b.length < 10) return undefined;
    len = Number(b.readBigUInt64BE(2));
    offset = 10;
  }
  const masked = (b[1]! & 0x80) !== 0;
  const mask = masked ? b.subarray(offset, offset + 4) : undefined;
  if (masked) offset += 4;
  if (b.length < offset + len) return undefined;
  const payload = Buffer.from(b.subarray(offset, offset + len));
  if (mask) for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ mask[i % 4]!;
  return { opcode, payload, length: offset + len };
}
