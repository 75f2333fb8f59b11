/**
 * The mint a URL belongs to (by prefix, so a mint served under a path works) and its endpoint,
 * with ids and quote ids folded to `:id` so the label set stays small.
 */
export function mintEndpoint(url: string, mints: readonly string[]): { mint: string; endpoint: string } | undefined {
  const bare = url.split(/[?#]/, 1)[0]!;
  for (const mint of mints) {
    if (bare.startsWith(`${mint}/`)) {
      const endpoint = bare
        .slice(mint.length)
        .split('/')
        .map((seg) => (/^[0-9A-Za-z_-]{16,}$/.test(seg) ? ':id' : seg))
        .join('/');
      return { mint, endpoint };
    }
  }
  return undefined;
}
