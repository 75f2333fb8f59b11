import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readLocalChat, StopCutter, type LocalChat } from '../../src/upstream/local-chat.ts';
import { modelIdFromPath } from '../../src/upstream/local.ts';
import { loadUpstreams } from '../../src/upstream/upstreams.ts';
import { loadConfig, ConfigError } from '../../src/config.ts';

const read = (body: Record<string, unknown>) => readLocalChat({ messages: [{ role: 'user', content: 'hi' }], ...body });

describe('the local model reads a chat request', () => {
  it('turns OpenAI roles and text parts into a conversation closed by an open model turn', () => {
    const chat = readLocalChat({
      messages: [
        { role: 'developer', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'text', text: 'Two ' }, { type: 'text', text: 'parts' }] },
        { role: 'assistant', content: 'Yes.' },
        { role: 'user', content: 'Again' },
      ],
      max_tokens: 9,
      max_completion_tokens: 7,
      stop: 'END',
      temperature: 0,
    }) as LocalChat;
    expect(chat.history).toEqual([
      { type: 'system', text: 'Be brief.' },
      { type: 'user', text: 'Two parts' },
      { type: 'model', response: ['Yes.'] },
      { type: 'user', text: 'Again' },
      { type: 'model', response: [] },
    ]);
    expect(chat.chars).toBe('Be brief.Two partsYes.Again'.length);
    expect(chat.maxTokens).toBe(7);
    expect(chat.stop).toEqual(['END']);
    expect(chat.sampling).toMatchObject({ temperature: 0, topP: 0.95, topK: 40, minP: 0.05 });
  });

  it('refuses what it cannot do rather than dropping it', () => {
    expect(read({ tools: [{ type: 'function' }] })).toContain('tool calls');
    expect(read({ tools: [] })).not.toBeTypeOf('string');
    expect(read({ logprobs: true })).toContain('log-probabilities');
    expect(read({ logprobs: false })).not.toBeTypeOf('string');
    expect(read({ n: 3 })).toContain('one choice');
    expect(read({ response_format: { type: 'json_schema', json_schema: {} } })).toContain('plain text');
    expect(read({ response_format: { type: 'text' } })).not.toBeTypeOf('string');
    expect(read({ temperature: 7 })).toContain("'temperature'");
    expect(readLocalChat({ messages: [{ role: 'tool', content: '42' }] })).toContain("role 'tool'");
    expect(readLocalChat({ messages: [{ role: 'user', content: [{ type: 'input_audio' }] }] })).toContain('text only');
    expect(readLocalChat({ messages: [{ role: 'assistant', content: null, tool_calls: [{}] }] })).toContain('tool calls');
  });
});

describe('stop sequences', () => {
  const run = (stops: string[], pieces: string[]) => {
    const c = new StopCutter(stops);
    let out = '';
    for (const p of pieces) {
      out += c.push(p);
      if (c.stopped) return { out, stopped: true };
    }
    return { out: out + c.flush(), stopped: false };
  };

  it('cuts at a stop sequence split across pieces, sending no part of it', () => {
    const c = new StopCutter(['</end>']);
    expect(c.push('abc</e')).toBe('a');
    expect(c.push('nd> more')).toBe('bc');
    expect(c.stopped).toBe(true);
  });

  it('sends what only looked like the start of one, and cuts at the earliest of several', () => {
    expect(run(['STOP'], ['a S', 'TO', 'p b'])).toEqual({ out: 'a STOp b', stopped: false });
    expect(run(['zz', 'b'], ['a', 'bzz'])).toEqual({ out: 'a', stopped: true });
    expect(run([], ['x', 'y'])).toEqual({ out: 'xy', stopped: false });
  });

  it('never splits a surrogate pair between pieces', () => {
    const c = new StopCutter(['ab']);
    const first = c.push('x😀');
    expect(first).toBe('x');
    expect(first + c.flush()).toBe('x😀');
  });
});

describe('configuring the local model', () => {
  it('names a model after its file, without the quantization', () => {
    expect(modelIdFromPath('models/SmolLM2-135M-Instruct.Q4_1.gguf')).toBe('smollm2-135m-instruct');
    expect(modelIdFromPath('/m/Llama-3.2-1B-Instruct-Q4_K_M.gguf')).toBe('llama-3.2-1b-instruct');
    expect(modelIdFromPath('qwen2.5-0.5b-instruct-f16.GGUF')).toBe('qwen2.5-0.5b-instruct');
  });

  it('serves it alone when no upstream is named, beside the one that is, and stops on a missing file', () => {
    // An empty file does: nothing is loaded until the catalog asks.
    const path = join(mkdtempSync(join(tmpdir(), 'gguf-')), 'Tiny-Model.Q8_0.gguf');
    writeFileSync(path, '');
    const cfg = (env: Record<string, string>) => loadConfig({ LOCAL_MODEL: path, ...env });
    const alone = loadUpstreams(cfg({}), {});
    expect(alone.map((u) => [u.name, u.client.baseUrl])).toEqual([['local', 'local:tiny-model']]);
    const beside = loadUpstreams(cfg({ UPSTREAM_BASE_URL: 'http://127.0.0.1:9/v1' }), {});
    expect(beside.map((u) => u.name)).toEqual(['default', 'local']);
    expect(() => loadUpstreams(cfg({ LOCAL_MODEL: 'nowhere/model.gguf' }), {})).toThrow(ConfigError);
    expect(() => loadConfig({ LOCAL_MODEL: 'model.bin' })).toThrow(/\.gguf/);
  });
});
