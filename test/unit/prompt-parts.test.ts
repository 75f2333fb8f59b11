import { describe, expect, it } from 'vitest';
import { PromptParts } from '../../src/formats/prompt.ts';
import { chatFormat } from '../../src/formats/chat.ts';

// What a prompt is made of decides what it is reserved at: each media part by its type, at the
// allowance written out here by hand (image 85 low / 1600, audio 6000, file 3000 a started 3 KB).

const parts = (content: unknown) => {
  const p = new PromptParts();
  p.addContent(content);
  return { text: p.text, extraTokens: p.extraTokens, images: p.images };
};

describe('PromptParts', () => {
  it('starts empty', () => {
    expect(parts(undefined)).toStrictEqual({ text: [], extraTokens: 0, images: 0 });
  });

  it('takes a string content as text, and an empty string as nothing', () => {
    expect(parts('hello')).toStrictEqual({ text: ['hello'], extraTokens: 0, images: 0 });
    expect(parts('')).toStrictEqual({ text: [], extraTokens: 0, images: 0 });
  });

  it('takes a content that is neither a string nor parts as its JSON, and null as nothing', () => {
    expect(parts({ a: 1 }).text).toStrictEqual(['{"a":1}']);
    expect(parts(42).text).toStrictEqual(['42']);
    expect(parts(null).text).toStrictEqual([]);
  });

  it('adds text, JSON and nothing for what is not there', () => {
    const p = new PromptParts();
    p.addText('a');
    p.addText('');
    p.addText(5);
    p.addText(undefined);
    p.addJson({ b: [1] });
    p.addJson(null);
    p.addJson(undefined);
    p.addJson(0);
    expect(p.text).toStrictEqual(['a', '{"b":[1]}', '0']);
  });

  it('takes the text of every text part type, and an empty text as nothing', () => {
    const r = parts([
      { type: 'text', text: 'one' },
      { type: 'input_text', text: 'two' },
      { type: 'output_text', text: 'three' },
      { type: 'text', text: '' },
      { type: 'text' },
    ]);
    expect(r).toStrictEqual({ text: ['one', 'two', 'three'], extraTokens: 0, images: 0 });
  });

  it('reserves every image part type as an image, by its detail', () => {
    const r = parts([
      { type: 'image_url', image_url: { url: 'data:,', detail: 'low' } },
      { type: 'image_url', image_url: { url: 'data:,' } },
      { type: 'input_image', image_url: 'data:,', detail: 'low' },
      { type: 'image', source: { type: 'base64', data: 'AAAA' } },
    ]);
    // 85 + 1600 + 85 + 1600
    expect(r).toStrictEqual({ text: [], extraTokens: 3370, images: 4 });
  });

  it("takes image_url's detail over the part's own, and ignores a detail that is not a string", () => {
    expect(parts([{ type: 'image_url', image_url: { detail: 'high' }, detail: 'low' }]).extraTokens).toBe(1600);
    expect(parts([{ type: 'image_url', image_url: { detail: 'low' }, detail: 'high' }]).extraTokens).toBe(85);
    expect(parts([{ type: 'input_image', detail: 0 }]).extraTokens).toBe(1600);
  });

  it('reserves an image part that carries an empty text as an image, not as text', () => {
    expect(parts([{ type: 'image_url', text: '', image_url: { url: 'data:,', detail: 'low' } }])).toStrictEqual({ text: [], extraTokens: 85, images: 1 });
  });

  it('reserves every audio part type at 6000 tokens, not as an image', () => {
    expect(parts([{ type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } }, { type: 'audio' }])).toStrictEqual({
      text: [],
      extraTokens: 12000,
      images: 0,
    });
  });

  it('reserves every file part type by the size of the part, 3000 tokens a started 3 KB', () => {
    // {"type":"document","data":"…"} is 29 characters around the data.
    const doc = (n: number) => ({ type: 'document', data: 'x'.repeat(n) });
    expect(parts([doc(3072 - 29)])).toStrictEqual({ text: [], extraTokens: 3000, images: 0 });
    expect(parts([doc(3073 - 29)]).extraTokens).toBe(6000);
    expect(parts([doc(2 * 3072 - 29)]).extraTokens).toBe(6000);
    expect(parts([doc(2 * 3072 - 28)]).extraTokens).toBe(9000);
    expect(parts([{ type: 'file', file: { file_id: 'f' } }, { type: 'input_file', file_id: 'f' }]).extraTokens).toBe(6000);
  });

  it('marks a file it cannot see (by id or URL) as filling the context; inline bytes and images by URL are counted', () => {
    const whole = (part: unknown) => {
      const p = new PromptParts();
      p.addContent([part]);
      return p.wholeContext;
    };
    for (const part of [
      { type: 'file', file: { file_id: 'file-abc' } },
      { type: 'file', file: { filename: 'a.pdf', file_data: 'https://example.com/big.pdf' } },
      { type: 'input_file', file_url: 'https://example.com/big.pdf' },
      { type: 'input_file', file_id: 'file-abc' },
      { type: 'document', source: { type: 'url', url: 'https://example.com/big.pdf' } },
    ]) expect(whole(part), JSON.stringify(part)).toBe(true);
    for (const part of [
      { type: 'file', file: { filename: 'a.pdf', file_data: 'data:application/pdf;base64,JVBERi0xLjQK' } },
      { type: 'file', file: { filename: 'a.pdf', file_data: 'JVBERi0xLjQK' } },
      { type: 'image_url', image_url: { url: 'https://example.com/a.png' } },
    ]) expect(whole(part), JSON.stringify(part)).toBe(false);
  });

  it('has the chat door reserve a file it cannot see, in any message, as filling the context', () => {
    const estimate = (messages: unknown[]) => chatFormat.parse({ model: 'm', messages }).estimate;
    expect(estimate([{ role: 'user', content: [{ type: 'text', text: 'Read.' }, { type: 'file', file: { file_id: 'file-abc' } }] }]).wholeContext).toBe(true);
    expect(estimate([{ role: 'tool', tool_call_id: 'c', content: [{ type: 'file', file: { file_id: 'file-abc' } }] }]).wholeContext).toBe(true);
    expect(estimate([{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] }]).wholeContext).toBeFalsy();
  });

  it('has the chat door reserve for 1-hour cache writes a passed-through breakpoint asks for', () => {
    const estimate = (body: Record<string, unknown>) => chatFormat.parse({ model: 'm', ...body }).estimate;
    const part = (ttl?: string) => ({ type: 'text', text: 'Context.', cache_control: { type: 'ephemeral', ...(ttl ? { ttl } : {}) } });
    expect(estimate({ messages: [{ role: 'user', content: 'Hi' }] }).longCacheWrites).toBeFalsy();
    expect(estimate({ messages: [{ role: 'user', content: [part()] }] }).longCacheWrites).toBeFalsy();
    expect(estimate({ messages: [{ role: 'user', content: [part('5m')] }] }).longCacheWrites).toBeFalsy();
    expect(estimate({ messages: [{ role: 'system', content: [part('1h')] }, { role: 'user', content: 'Hi' }] }).longCacheWrites).toBe(true);
    expect(estimate({ messages: [{ role: 'user', content: [{ type: 'text', text: 'Q' }, part('1h')] }] }).longCacheWrites).toBe(true);
  });

  it('counts a part of a type it does not know, or no part at all, as the JSON it is', () => {
    expect(parts([{ type: 'weird', x: 1 }, { text: 'no type' }, null, 'str', 7]).text).toStrictEqual([
      '{"type":"weird","x":1}',
      '{"text":"no type"}',
      '{}',
      '{}',
      '{}',
    ]);
  });

  it('adds up text and media across parts', () => {
    expect(parts([{ type: 'text', text: 'look' }, { type: 'image_url', image_url: { detail: 'low' } }, { type: 'input_audio' }, { type: 'text', text: 'at this' }])).toStrictEqual({
      text: ['look', 'at this'],
      extraTokens: 6085,
      images: 1,
    });
  });
});
