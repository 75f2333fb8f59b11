import { BlockList, isIP } from 'node:net';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { Agent, request } from 'undici';

/**
 * Fetching from a peer a stranger named (a Lightning address's server, a mint inside a token):
 * the name is the attacker's choice, so the gateway must not become their way into its own
 * network, nor be held up or filled up by what answers.
 */
export interface PeerRules {
  timeoutMs: number;
  maxBytes: number;
  /** Tests only: plain http and loopback addresses (never other private ones) are allowed. */
  allowLoopback: boolean;
}

export class PeerError extends Error {
  /** A stable reason: `insecure_url`, `private_address`, `redirect`, `status`, `too_large`, `timeout`, `unreachable`, `not_json`. */
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** Everything that is not the public internet: private, loopback, link-local, CGNAT, multicast, reserved. */
const NOT_PUBLIC = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 3],
] as const) NOT_PUBLIC.addSubnet(net, bits, 'ipv4');
// ::/96 holds :: and ::1 and the IPv4-compatible ::a.b.c.d, ::ffff:0:0:0/96 SIIT's IPv4-translated
// ::ffff:0:a.b.c.d: wherever a host maps either to IPv4 they reach the address inside.
for (const [net, bits] of [
  ['::', 96], ['::ffff:0:0:0', 96], ['64:ff9b::', 96], ['64:ff9b:1::', 48], ['100::', 64], ['2001::', 23], ['2001:db8::', 32], ['2002::', 16],
  ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8],
] as const) NOT_PUBLIC.addSubnet(net, bits, 'ipv6');

/** Whether `address` may be connected to under `rules`. An IPv4-mapped IPv6 address is judged as IPv4. */
export function allowedAddress(address: string, rules: Pick<PeerRules, 'allowLoopback'>): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const ip = mapped ? mapped[1]! : address;
  const family = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
  if (rules.allowLoopback && LOOPBACK.check(ip, family)) return true;
  return !NOT_PUBLIC.check(ip, family);
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * The resolver the peer's socket uses: every address the name resolves to is checked here, and
 * the socket connects to one of exactly these, so no second resolution can swap in another.
 */
function checkedLookup(rules: PeerRules) {
  return (hostname: string, options: { all?: boolean; family?: number | string }, cb: LookupCallback) => {
    dnsLookup(hostname, { all: true, family: options.family === 'IPv6' ? 6 : options.family === 'IPv4' ? 4 : (options.family as number | undefined) ?? 0 }, (err, addresses) => {
      if (err) return cb(err, '');
      const bad = addresses.find((a) => !allowedAddress(a.address, rules));
      if (bad || addresses.length === 0) {
        const e = new PeerError('private_address', `${hostname} resolves to an address that is not public`) as PeerError & NodeJS.ErrnoException;
        return cb(e, '');
      }
      if (options.all) return cb(null, addresses);
      cb(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}

/** Drops an answer unread; the abort error a dropped body emits is expected, and must not go uncaught. */
function discard(body: NodeJS.ReadableStream & { destroy(): void }): void {
  body.on('error', () => {});
  body.destroy();
}

function findPeerError(e: unknown): PeerError | undefined {
  for (let c: unknown = e, i = 0; c && i < 6; c = (c as { cause?: unknown }).cause, i++) if (c instanceof PeerError) return c;
  return undefined;
}

/** A fetcher bound to one set of rules, with its own connection pool. */
export class PeerFetch {
  readonly rules: PeerRules;
  readonly #agent: Agent;

  constructor(rules: PeerRules) {
    this.rules = rules;
    this.#agent = new Agent({
      connect: { lookup: checkedLookup(rules), timeout: rules.timeoutMs },
      headersTimeout: rules.timeoutMs,
      bodyTimeout: rules.timeoutMs,
      connections: 16,
    });
  }

  /** Throws unless `raw` is a URL this gateway may call: https (http only to loopback in tests), no credentials, no non-public IP literal. */
  check(raw: string): URL {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new PeerError('insecure_url', 'not a URL');
    }
    if (url.username || url.password) throw new PeerError('insecure_url', 'a URL with credentials');
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host) && !allowedAddress(host, this.rules)) throw new PeerError('private_address', `${host} is not a public address`);
    const loopbackHost = host === 'localhost' || (isIP(host) !== 0 && LOOPBACK.check(host, isIP(host) === 6 ? 'ipv6' : 'ipv4'));
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.rules.allowLoopback && loopbackHost)) {
      throw new PeerError('insecure_url', 'only https URLs are fetched');
    }
    return url;
  }

  /** GETs a JSON document: no redirect followed, at most `maxBytes`, within `timeoutMs` in all. */
  async getJson(raw: string): Promise<unknown> {
    const res = await this.send(raw, { method: 'GET', headers: { accept: 'application/json' } });
    let json: unknown;
    try {
      json = JSON.parse(res.text);
    } catch {
      if (res.status >= 400) throw new PeerError('status', `answered ${res.status}`);
      throw new PeerError('not_json', 'the answer is not JSON');
    }
    // LNURL servers report errors as JSON under 4xx as well as under 200: the caller reads either.
    if (res.status >= 400 && (typeof json !== 'object' || json === null)) throw new PeerError('status', `answered ${res.status}`);
    return json;
  }

  /**
   * One request under the rules, its answer read whole as text whatever its status (a mint's
   * errors are JSON bodies under 400): no redirect followed, at most `maxBytes`, within `timeoutMs`.
   */
  async send(raw: string, init: { method: string; body?: string; headers?: Record<string, string> }): Promise<{ status: number; text: string }> {
    const url = this.check(raw);
    const signal = AbortSignal.timeout(this.rules.timeoutMs);
    let res;
    try {
      res = await request(url, { method: init.method as 'GET', body: init.body, dispatcher: this.#agent, signal, headers: init.headers ?? {} });
    } catch (e) {
      throw findPeerError(e) ?? (signal.aborted ? new PeerError('timeout', 'no answer in time') : new PeerError('unreachable', (e as Error).message));
    }
    if (res.statusCode >= 300 && res.statusCode < 400) {
      discard(res.body);
      throw new PeerError('redirect', `answered with a redirect (${res.statusCode}), which is not followed`);
    }
    const declared = Number(res.headers['content-length'] ?? 0);
    if (declared > this.rules.maxBytes) {
      discard(res.body);
      throw new PeerError('too_large', `answer larger than ${this.rules.maxBytes} bytes`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > this.rules.maxBytes) {
          discard(res.body);
          throw new PeerError('too_large', `answer larger than ${this.rules.maxBytes} bytes`);
        }
        chunks.push(chunk);
      }
    } catch (e) {
      throw findPeerError(e) ?? (signal.aborted ? new PeerError('timeout', 'no answer in time') : new PeerError('unreachable', (e as Error).message));
    }
    return { status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') };
  }

  close(): Promise<void> {
    return this.#agent.close();
  }
}
