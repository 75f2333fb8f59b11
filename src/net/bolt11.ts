import { bech32 } from '@scure/base';

const MSATS_PER_BTC = 100_000_000_000n;
/** BOLT 11's amount multipliers, as msats per unit of the written amount (p is a tenth of an msat). */
const DIVISOR: Record<string, bigint> = { m: 1_000n, u: 1_000_000n, n: 1_000_000_000n, p: 1_000_000_000_000n };

export interface Bolt11 {
  /** bc, tb, bcrt, tbs or sb. */
  network: string;
  /** What the invoice asks for, undefined when it leaves the amount to the payer. */
  amountMsats: bigint | undefined;
}

/**
 * Reads the amount a BOLT 11 invoice asks for from its human-readable part, after checking the
 * bech32 checksum, so an invoice cannot say one amount to us and another to the mint.
 */
export function decodeBolt11(invoice: string): Bolt11 {
  const text = invoice.trim().toLowerCase().replace(/^lightning:/, '');
  let prefix: string;
  try {
    // Invoices are longer than bech32's 90 characters: BOLT 11 lifts that limit.
    ({ prefix } = bech32.decode(text as `${string}1${string}`, false));
  } catch {
    throw new Error('not a BOLT 11 invoice (bad bech32)');
  }
  const m = /^ln(bcrt|bc|tbs|tb|sb)(?:(\d+)([munp])?)?$/.exec(prefix);
  if (!m) throw new Error('not a BOLT 11 invoice (unknown prefix)');
  const [, network, digits, multiplier] = m;
  if (digits === undefined) return { network: network!, amountMsats: undefined };
  if (/^0/.test(digits)) throw new Error('a BOLT 11 amount has no leading zeros');
  const n = BigInt(digits);
  if (!multiplier) return { network: network!, amountMsats: n * MSATS_PER_BTC };
  const scaled = n * MSATS_PER_BTC;
  const div = DIVISOR[multiplier]!;
  // A pico-bitcoin amount that is not a whole msat is invalid (BOLT 11).
  if (scaled % div !== 0n) throw new Error('a BOLT 11 amount below one msat');
  return { network: network!, amountMsats: scaled / div };
}
