import { describe, expect, it } from 'vitest';
import { TopLevelFields } from '../../src/upstream/top-field.ts';

/** The usage of an answer too large to keep, found as it goes by. */
function usageOf(text: string, chunk = 7, maxValue?: number): unknown {
  const fields = new TopLevelFields(['usage'], maxValue);
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += chunk) fields.push(bytes.subarray(i, i + chunk));
  return fields.get('usage');
}

describe('TopLevelFields: usage', () => {
  it.each([
    ['after the choices', '{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}}', { prompt_tokens: 3, completion_tokens: 4 }],
    ['not one nested in a choice', '{"choices":[{"usage":{"prompt_tokens":0}}],"usage":{"prompt_tokens":9}}', { prompt_tokens: 9 }],
    ['not one written inside a string', '{"choices":[{"text":"\\"usage\\":{\\"prompt_tokens\\":0}}"}],"usage":{"prompt_tokens":5}}', { prompt_tokens: 5 }],
    ['past a string ending in an escaped backslash', '{"a":"x\\\\","usage" : {"n":{"deep":[1,2]},"s":"}"}}', { n: { deep: [1, 2] }, s: '}' }],
    ['a string kept as it is, for the caller to refuse', '{"usage":"free"}', 'free'],
    ['none that is a number', '{"usage":12}', undefined],
    ['none where there is none', '{"choices":[]}', undefined],
    ['the last of two', '{"usage":{"a":1},"usage":{"a":2}}', { a: 2 }],
  ])('finds the top-level usage %s', (_, text, expected) => {
    expect(usageOf(text)).toEqual(expected);
    expect(usageOf(text, 1)).toEqual(expected);
  });

  it('believes no usage larger than its limit', () => {
    expect(usageOf(`{"usage":{"pad":"${'x'.repeat(100)}"}}`, 7, 50)).toBeUndefined();
  });
});

describe('TopLevelFields: model beside usage', () => {
  it.each([
    ['a string value, not one in a choice or in text', '{"model":"a","choices":[{"model":"b","text":"\\"model\\":\\"c\\""}],"usage":{"n":1}}', 'a'],
    ['the last of two, escapes kept', '{"model":"a","model":"x\\"y\\\\","usage":{}}', 'x"y\\'],
    ['none that is neither string nor object', '{"model":12,"usage":{}}', undefined],
  ])('finds the top-level model %s, and the usage beside it', (_, text, expected) => {
    for (const chunk of [1, 7]) {
      const f = new TopLevelFields(['usage', 'model']);
      const bytes = Buffer.from(text);
      for (let i = 0; i < bytes.length; i += chunk) f.push(bytes.subarray(i, i + chunk));
      expect(f.get('model')).toEqual(expected);
      expect(f.get('usage')).toEqual(JSON.parse(text).usage);
    }
  });
});
