import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';

/**
 * The smallest WebSocket server that completes the opening handshake (RFC 6455) and then holds
 * the connection: enough for a client to see a relay that accepts connections.
 */
export class HandshakeServer {
  url = '';
  connections = 0;
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;

  async start(): Promise<string> {
    this.#server = createServer((_req, res) => res.writeHead(426).end());
    this.#server.on('upgrade', (req, socket: Socket) => {
      const key = req.headers['sec-websocket-key'];
      const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      this.connections++;
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
      socket.on('error', () => {});
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`);
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
