import { describe, expect, it } from 'vitest';
import { SseSplitter, eventData } from '../../src/upstream/sse.ts';

const enc = (s: string) => new TextEncoder().encode(s);

describe('SseSplitter', () => {
  it('returns events only once they are complete, across arbitrary chunk boundaries', () => {
    const s = new SseSplitter();
    expect(s.push(enc('data: {"a"'))).toEqual([]);
    expect(s.push(enc(':1}\n'))).toEqual([]);
    expect(s.push(enc('\ndata: [DO'))).toEqual(['data: {"a":1}']);
    expect(s.push(enc('NE]\n\n'))).toEqual(['data: [DONE]']);
  });

  it('normalises CRLF and splits several events in one chunk', () => {
    const s = new SseSplitter();
    expect(s.push(enc(': keep-alive\r\n\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n'))).toEqual([': keep-alive', 'data: 1', 'data: 2']);
  });

  it('keeps a CRLF split between chunks as one line break', () => {
    const s = new SseSplitter();
    expect(s.push(enc('event: delta\r'))).toEqual([]);
    expect(s.push(enc('\ndata: {}\r\n\r\n'))).toEqual(['event: delta\ndata: {}']);
  });

  it('keeps a multi-byte character split between chunks intact', () => {
    const s = new SseSplitter();
    const bytes = enc('data: "€"\n\n');
    expect(s.push(bytes.slice(0, 8))).toEqual([]);
    expect(s.push(bytes.slice(8))).toEqual(['data: "€"']);
  });

  it('flushes a last event that has no trailing blank line', () => {
    const s = new SseSplitter();
    s.push(enc('data: tail'));
    expect(s.flush()).toEqual(['data: tail']);
  });
});

describe('eventData', () => {
  it('joins data lines and ignores comments and other fields', () => {
    expect(eventData('event: x\ndata: a\ndata:b')).toBe('a\nb');
    expect(eventData(': comment')).toBeUndefined();
  });
});
