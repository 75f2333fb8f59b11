import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The house's rule, checked on every run: a room imports only from the rooms below it. A change
 * that makes the wallet throw an HTTP error, or the ledger read a wire format, fails here first.
 */
const BELOW: Record<string, string[]> = {
  ledger: [],
  net: [],
  upstream: [],
  cashu: ['ledger', 'net'],
  engine: ['ledger', 'cashu', 'net', 'upstream'],
  formats: ['engine', 'upstream'],
  nostr: ['engine', 'formats', 'cashu', 'ledger', 'net', 'upstream'],
  http: ['engine', 'formats', 'cashu', 'ledger', 'net', 'upstream'],
  ops: ['engine', 'formats', 'cashu', 'ledger', 'net', 'upstream'],
};
/** Top-level modules every room may read: the validated settings, the logger, the version. */
const SHARED = new Set(['config.ts', 'log.ts', 'version.ts']);

const SRC = resolve(import.meta.dirname, '..', '..', 'src');

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : []));
}

/** Every relative import of a module (static, re-exports and dynamic), as a path under src/. */
export function importsOf(file: string, text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) out.push(relative(SRC, resolve(file, '..', m[1]!)));
  return out;
}

/** The imports of `file` that break the rule, as "room/file.ts → other/file.ts". */
export function violations(file: string, text: string): string[] {
  const room = relative(SRC, file).split('/')[0]!;
  const allowed = BELOW[room];
  if (!allowed) return [];
  return importsOf(file, text)
    .filter((to) => {
      const target = to.split('/')[0]!;
      if (to === target) return !SHARED.has(to);
      return target !== room && !allowed.includes(target);
    })
    .map((to) => `${relative(SRC, file)} → ${to}`);
}

describe('rooms import only from the rooms below them', () => {
  it('names every room under src/', () => {
    const rooms = readdirSync(SRC, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
    expect(rooms).toEqual(Object.keys(BELOW).sort());
  });

  it('holds for every module in src/', () => {
    const broken = files(SRC).flatMap((f) => violations(f, readFileSync(f, 'utf8')));
    expect(broken).toEqual([]);
  });

  it('would catch a room that calls upward, or a room that reads the entry point', () => {
    const wallet = join(SRC, 'cashu', 'wallet.ts');
    expect(violations(wallet, "import { EngineError } from '../engine/errors.ts';")).toEqual(['cashu/wallet.ts → engine/errors.ts']);
    expect(violations(join(SRC, 'ledger', 'store.ts'), "const m = await import('../formats/chat.ts');")).toEqual(['ledger/store.ts → formats/chat.ts']);
    expect(violations(join(SRC, 'engine', 'engine.ts'), "export { x } from '../main.ts';")).toEqual(['engine/engine.ts → main.ts']);
    expect(violations(join(SRC, 'http', 'app.ts'), "import { Dvm } from '../nostr/dvm.ts';\nimport { cfg } from '../config.ts';")).toEqual(['http/app.ts → nostr/dvm.ts']);
  });
});
