/** One scrape of a Prometheus text endpoint, as series (name and labels as written) to values. */
export type Scrape = Map<string, number>;

export function parsePrometheus(text: string): Scrape {
  const out: Scrape = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** A series' value, 0 when absent; labels in any order. */
export function series(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels);
  for (const [key, value] of s) {
    const brace = key.indexOf('{');
    const n = brace < 0 ? key : key.slice(0, brace);
    if (n !== name) continue;
    const have = new Map<string, string>();
    if (brace >= 0) {
      for (const m of key.slice(brace + 1, -1).matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have.set(m[1]!, m[2]!);
    }
    if (want.length === have.size && want.every(([k, v]) => have.get(k) === v)) return value;
  }
  return 0;
}

export async function scrape(url: string, headers: Record<string, string> = {}): Promise<Scrape> {
  const res = await fetch(`${url}/metrics`, { headers });
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return parsePrometheus(await res.text());
}
