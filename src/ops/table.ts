/** A plain-text table: columns padded to their widest cell, a header row, no borders. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** A number without float noise: at most `digits` decimals, trailing zeros dropped. */
export function num(n: number, digits = 6): string {
  return String(Number(n.toFixed(digits)));
}
