import { createServer, type Server } from 'node:http';
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineError } from '../../src/engine/errors.ts';
import { HttpError, httpError } from '../../src/http/errors.ts';
import type { Bill } from '../../src/engine/format.ts';
import { billResponse, errorBody, parseResponses, responsesCodec as codec, responsesFormat } from '../../src/formats/responses.ts';
import { responseFromChat } from '../../src/formats/responses-response.ts';
import { ResponsesEncoder } from '../../src/formats/responses-stream.ts';
import { meterResponse, ResponsesPassthrough } from '../../src/formats/responses-native.ts';
import { SseSplitter, eventData } from '../../src/upstream/sse.ts';
import { FakeResponsesUpstream } from '../support/responses-upstream.ts';
import { REPLY_WORDS } from '../support/upstream.ts';

type Obj = Record<string, unknown>;

/** A format's refusal as the HTTP door answers it. */
function refusal(fn: () => unknown): { status: number; code: string; message: string } {
  try {
    fn();
  } catch (e) {
    if (e instanceof EngineError) {
      const { status, code, message } = httpError(e);
      return { status, code, message };
    }
    throw e;
  }
  throw new Error('expected an EngineError');
}

/** SSE text as `{ name, data }` pairs, parsed. */
function events(text: string): Array<{ name: string | undefined; data: Obj }> {
  const s = new SseSplitter();
  return [...s.push(new TextEncoder().encode(text)), ...s.flush()].map((ev) => ({
    name: /^event: (.*)$/m.exec(ev)?.[1],
    data: JSON.parse(eventData(ev)!) as Obj,
  }));
}

function sse(list: Obj[]): Array<{ name: string; data: string }> {
  return list.map((e) => ({ name: String(e.type), data: JSON.stringify(e) }));
}

const bill = (over: Partial<Bill> = {}): Bill => ({
  usage: { promptTokens: 2006, completionTokens: 300, cachedTokens: 1920, reasoningTokens: 192 },
  cost: { inputMsats: 120, outputMsats: 450, totalMsats: 570 },
  requestId: 'req_42',
  ...over,
});
/** The Responses usage object that `bill()` writes, with its cost. */
const BILLED_USAGE = {
  input_tokens: 2006,
  input_tokens_details: { cached_tokens: 1920, cache_write_tokens: 0 },
  output_tokens: 300,
  output_tokens_details: { reasoning_tokens: 192 },
  total_tokens: 2306,
  cost: { base_msats: 0, input_msats: 120, output_msats: 450, total_msats: 570 },
  cost_sats: 0.57,
};

describe('parseResponses', () => {
  it('validates a string input and collects what the engine prices', () => {
    const p = parseResponses({ model: 'gpt-test', input: 'Tell me a joke', instructions: 'Be brief.', max_output_tokens: 64, stream: true });
    expect(p.model).toBe('gpt-test');
    expect(p.stream).toBe(true);
    expect(p.storedPrompt).toBe(false);
    expect(p.estimate).toEqual({ text: ['Be brief.', 'Tell me a joke'], extraTokens: 3 + 3 + 3, requestedCompletionTokens: 64, choices: 1, images: 0 });
  });

  it('allows media by part type, and counts tool calls, results, tools and the schema as prompt', () => {
    const tools = [{ type: 'function', name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } }, strict: false }];
    const format = { type: 'json_schema', name: 'w', schema: { type: 'object' } };
    const p = parseResponses({
      model: 'gpt-test',
      input: [
        {
          role: 'user',
          content: [
            { type: 'input_text', text: 'What is in these?' },
            { type: 'input_image', image_url: 'https://example.com/a.png', detail: 'low' },
            { type: 'input_image', image_url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'high' },
            { type: 'input_file', filename: 'a.pdf', file_data: `data:application/pdf;base64,${'A'.repeat(7000)}` },
          ],
        },
        { type: 'function_call', call_id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}' },
        { type: 'function_call_output', call_id: 'call_1', output: '{"temp":21}' },
        { type: 'reasoning', id: 'rs_1', summary: [{ type: 'summary_text', text: 'Think.' }], encrypted_content: 'B'.repeat(160) },
      ],
      tools,
      text: { format },
    });
    expect(p.estimate.text).toEqual(['What is in these?', 'get_weather', '{"city":"Paris"}', '{"temp":21}', 'Think.', JSON.stringify(tools), JSON.stringify(format)]);
    // 3 a reply + 3 an item; images 85 (low) + 1600 (high); the PDF 3 × 3000; encrypted reasoning 160 × 3/16.
    expect(p.estimate.extraTokens).toBe(3 + 4 * 3 + 85 + 1600 + 9000 + 30);
    expect(p.estimate.images).toBe(3);
  });

  it('refuses malformed bodies with the path of the first problem', () => {
    expect(refusal(() => parseResponses({ input: 'hi' }))).toMatchObject({ status: 400, code: 'invalid_request', message: expect.stringContaining("'model'") });
    expect(refusal(() => parseResponses({ model: 'm' })).message).toContain("'input'");
    const badImage = { model: 'm', input: [{ role: 'user', content: [{ type: 'input_text', text: 'a' }, { type: 'input_image', detail: 'low' }] }] };
    expect(refusal(() => parseResponses(badImage)).message).toContain("'input.0.content.1'");
    const badCall = { model: 'm', input: [{ role: 'user', content: 'a' }, { type: 'function_call', name: 'f', arguments: '{}' }] };
    expect(refusal(() => parseResponses(badCall)).message).toContain("'input.1.call_id'");
    expect(refusal(() => parseResponses({ model: 'm', input: 'a', max_output_tokens: -1 })).message).toContain("'max_output_tokens'");
  });

  it('refuses hosted tools the gateway does not price, on any upstream', () => {
    const r = refusal(() => parseResponses({ model: 'm', input: 'news?', tools: [{ type: 'function', name: 'f', parameters: {}, strict: false }, { type: 'web_search' }] }));
    expect(r).toMatchObject({ status: 400, code: 'unsupported_tool' });
    expect(r.message).toContain("'tools.1'");
    for (const tool of [{ type: 'code_interpreter', container: { type: 'auto' } }, { type: 'shell', environment: { type: 'container_auto' } }, { type: 'some_future_tool' }]) {
      expect(refusal(() => parseResponses({ model: 'm', input: 'x', tools: [tool] })).code).toBe('unsupported_tool');
    }
    // Tools the client runs itself cost tokens only, and pass to a native upstream.
    const own = [{ type: 'shell', environment: { type: 'local' } }, { type: 'custom', name: 'apply_patch' }, { type: 'computer_use_preview', display_width: 1024, display_height: 768, environment: 'browser' }];
    expect(parseResponses({ model: 'm', input: 'x', tools: own }).body.tools).toEqual(own);
  });

  it('reserves a file whose bytes it cannot see (by URL or file id) as filling the context', () => {
    const user = (part: Obj) => [{ role: 'user', content: [{ type: 'input_text', text: 'Summarise.' }, part] }];
    const unseen: Obj[] = [
      { type: 'input_file', file_url: 'https://example.com/big.pdf' },
      { type: 'input_file', file_id: 'file-abc' },
      // A URL where the bytes belong: a chat upstream such as OpenRouter fetches it.
      { type: 'input_file', filename: 'a.pdf', file_data: 'https://example.com/big.pdf' },
    ];
    for (const part of unseen) expect(parseResponses({ model: 'm', input: user(part) }).estimate.wholeContext, JSON.stringify(part)).toBe(true);
    const output = [{ type: 'function_call_output', call_id: 'c', output: [{ type: 'input_file', file_url: 'https://example.com/a.pdf' }] }];
    expect(parseResponses({ model: 'm', input: output }).estimate.wholeContext).toBe(true);
    // Inline bytes are counted; an image costs what the provider scales it to, wherever it is.
    const seen: Obj[] = [
      { type: 'input_file', filename: 'a.pdf', file_data: 'data:application/pdf;base64,JVBERi0xLjQK' },
      { type: 'input_image', image_url: 'https://example.com/a.png', detail: 'high' },
      { type: 'input_image', file_id: 'file-img' },
    ];
    for (const part of seen) expect(parseResponses({ model: 'm', input: user(part) }).estimate.wholeContext, JSON.stringify(part)).toBeFalsy();
  });

  it('counts a media part by its type, whatever text key it carries: an empty text does not make a file free', () => {
    const user = (part: Obj) => [{ role: 'user', content: [part] }];
    const file = { type: 'input_file', file_url: 'https://example.com/big.pdf', text: '' };
    expect(parseResponses({ model: 'm', input: user(file) }).estimate.wholeContext).toBe(true);
    const plain = parseResponses({ model: 'm', input: user({ type: 'input_image', image_url: 'https://example.com/a.png', detail: 'high' }) }).estimate;
    const texted = parseResponses({ model: 'm', input: user({ type: 'input_image', image_url: 'https://example.com/a.png', detail: 'high', text: '' }) }).estimate;
    expect([texted.images, texted.extraTokens]).toEqual([plain.images, plain.extraTokens]);
    expect(plain.images).toBe(1);
  });

  it('marks a request continuing a stored response: its prompt cannot be counted here', () => {
    const p = parseResponses({ model: 'm', previous_response_id: 'resp_1', input: 'and then?' });
    expect(p.storedPrompt).toBe(true);
    expect(parseResponses({ model: 'm', previous_response_id: 'resp_1' }).storedPrompt).toBe(true);
    // The engine prices the reservation from the parsed estimate, before any upstream is chosen.
    expect(p.estimate.wholeContext).toBe(true);
    expect(parseResponses({ model: 'm', input: 'hi', conversation: 'conv_1' }).estimate.wholeContext).toBe(true);
    expect(parseResponses({ model: 'm', input: 'hi' }).estimate.wholeContext).toBeFalsy();
  });

  it('marks a stored item referenced in the input (item_reference) as a stored prompt', () => {
    const p = parseResponses({ model: 'm', input: [{ role: 'user', content: 'again:' }, { type: 'item_reference', id: 'msg_1' }] });
    expect(p.storedPrompt).toBe(true);
    expect(p.estimate.wholeContext).toBe(true);
  });
});

describe('stored state on a Responses upstream', () => {
  const LIMITS = { maxCompletionTokens: 64 };
  const exchange = (body: Obj, allowed: string[] = []) => responsesFormat.parse(body).exchange('openai-responses', { ...LIMITS, allowed: new Set(allowed) });
  const referencing = { model: 'm', input: [{ role: 'user', content: 'again:' }, { type: 'item_reference', id: 'msg_somebody_elses' }] };

  it('refuses an item_reference (another payer\'s stored item is readable by id) as it does previous_response_id', () => {
    const x = exchange(referencing);
    expect(x).toBeInstanceOf(EngineError);
    expect(httpError(x as EngineError)).toMatchObject({ status: 400, code: 'stateful_not_supported', extra: { param: 'input.1' } });
    expect(httpError(exchange({ model: 'm', input: 'hi', previous_response_id: 'resp_1' }) as EngineError)).toMatchObject({ status: 400, code: 'stateful_not_supported' });
  });

  it('takes background: false, the default, as asking for nothing stored, and reserves as usual', () => {
    const parsed = responsesFormat.parse({ model: 'm', input: 'hi', background: false });
    expect(parsed.estimate.wholeContext).toBeUndefined();
    expect(exchange({ model: 'm', input: 'hi', background: false })).not.toBeInstanceOf(EngineError);
    expect(httpError(exchange({ model: 'm', input: 'hi', background: true }) as EngineError)).toMatchObject({ status: 400, code: 'stateful_not_supported' });
  });

  it('passes one on where the operator allows it, and refuses it on a chat upstream, which stores nothing', () => {
    const x = exchange(referencing, ['item_reference']);
    expect(x).not.toBeInstanceOf(EngineError);
    expect((x as { body: Obj }).body.input).toEqual(referencing.input);
    const chat = responsesFormat.parse(referencing).exchange('openai', { ...LIMITS, allowed: new Set(['item_reference']) });
    expect(httpError(chat as EngineError)).toMatchObject({ status: 400, code: 'stateful_not_supported' });
  });
});

describe('Responses request → chat', () => {
  it('translates instructions, roles, images, files, tool calls and results, tools and settings', () => {
    const chat = codec.requestToChat({
      model: 'gpt-test',
      instructions: 'You are terse.',
      input: [
        { type: 'message', role: 'developer', content: 'Answer in French.' },
        {
          role: 'user',
          content: [
            { type: 'input_text', text: 'Weather where this is?' },
            { type: 'input_image', image_url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'low' },
            { type: 'input_file', filename: 'notes.pdf', file_data: 'data:application/pdf;base64,JVBERi0=' },
          ],
        },
        { type: 'reasoning', id: 'rs_1', summary: [{ type: 'summary_text', text: 'It is Paris.' }] },
        { id: 'msg_1', type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text: 'Let me check.', annotations: [] }] },
        { type: 'function_call', id: 'fc_1', call_id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}' },
        { type: 'function_call', id: 'fc_2', call_id: 'call_2', name: 'get_time', arguments: '{}' },
        { type: 'function_call_output', call_id: 'call_1', output: '{"temp":21}' },
        { type: 'function_call_output', call_id: 'call_2', output: [{ type: 'input_text', text: '14:00' }] },
      ],
      tools: [{ type: 'function', name: 'get_weather', description: 'Weather now', parameters: { type: 'object', properties: { city: { type: 'string' } } }, strict: true }],
      tool_choice: { type: 'function', name: 'get_weather' },
      max_output_tokens: 500,
      reasoning: { effort: 'low', summary: 'auto' },
      text: { format: { type: 'json_schema', name: 'weather', schema: { type: 'object' }, strict: true }, verbosity: 'low' },
      temperature: 0.2,
      top_p: 0.9,
      parallel_tool_calls: false,
      metadata: { app: 'test' },
      user: 'u1',
      stream: true,
      store: false,
      include: ['reasoning.encrypted_content'],
      truncation: 'disabled',
    });
    expect(chat).toEqual({
      model: 'gpt-test',
      stream: true,
      temperature: 0.2,
      top_p: 0.9,
      parallel_tool_calls: false,
      user: 'u1',
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'system', content: 'Answer in French.' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Weather where this is?' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'low' } },
            { type: 'file', file: { file_data: 'data:application/pdf;base64,JVBERi0=', filename: 'notes.pdf' } },
          ],
        },
        {
          role: 'assistant',
          content: 'Let me check.',
          tool_calls: [
            { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
            { id: 'call_2', type: 'function', function: { name: 'get_time', arguments: '{}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '{"temp":21}' },
        { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: '14:00' }] },
      ],
      tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather now', parameters: { type: 'object', properties: { city: { type: 'string' } } }, strict: true } }],
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
      max_completion_tokens: 500,
      reasoning_effort: 'low',
      response_format: { type: 'json_schema', json_schema: { name: 'weather', schema: { type: 'object' }, strict: true } },
      verbosity: 'low',
      stream_options: { include_usage: true },
    });
  });

  it('serves an absent store, which a chat upstream cannot honour, as not stored', () => {
    expect(codec.requestToChat({ model: 'm', input: 'hi' })).toEqual({ model: 'm', messages: [{ role: 'user', content: 'hi' }] });
  });

  it('refuses what needs stored state, with one stable code', () => {
    for (const body of [
      { model: 'm', input: 'hi', previous_response_id: 'resp_1' },
      { model: 'm', input: 'hi', store: true },
      { model: 'm', input: 'hi', conversation: 'conv_1' },
      { model: 'm', input: 'hi', background: true },
      { model: 'm', input: [{ type: 'item_reference', id: 'msg_1' }] },
    ]) {
      expect(refusal(() => codec.requestToChat(body))).toMatchObject({ status: 400, code: 'stateful_not_supported' });
    }
  });

  it('refuses what chat completions cannot express, never dropping it', () => {
    const cases: Array<[Obj, string, string]> = [
      [{ model: 'm', input: 'hi', tools: [{ type: 'file_search', vector_store_ids: ['vs_1'] }] }, 'unsupported_tool', "'file_search'"],
      [{ model: 'm', input: 'hi', tools: [{ type: 'computer_use_preview', display_width: 1024, display_height: 768, environment: 'browser' }] }, 'unsupported_tool', 'computer_use_preview'],
      [{ model: 'm', input: 'hi', tool_choice: { type: 'web_search_preview' } }, 'unsupported_tool', 'web_search_preview'],
      [{ model: 'm', input: 'hi', tools: [{ type: 'custom', name: 'apply_patch', format: { type: 'text' } }] }, 'unsupported_tool', "'custom'"],
      [{ model: 'm', input: [{ role: 'user', content: [{ type: 'input_image', file_id: 'file-1', detail: 'auto' }] }] }, 'unsupported_content', 'file_id'],
      [{ model: 'm', input: [{ role: 'user', content: [{ type: 'input_file', file_url: 'https://example.com/a.pdf' }] }] }, 'unsupported_content', 'file_url'],
      [{ model: 'm', input: [{ type: 'function_call_output', call_id: 'c', output: [{ type: 'input_image', image_url: 'https://x/y.png', detail: 'auto' }] }] }, 'unsupported_content', "'input.0.output.0'"],
      [{ model: 'm', input: [{ type: 'computer_call_output', call_id: 'c', output: { type: 'computer_screenshot', image_url: 'data:' } }] }, 'unsupported_input_item', 'computer_call_output'],
      [{ model: 'm', input: 'hi', truncation: 'auto' }, 'unsupported_parameter', 'truncation'],
      [{ model: 'm', input: 'hi', top_logprobs: 3 }, 'unsupported_parameter', 'top_logprobs'],
      [{ model: 'm', input: 'hi', include: ['message.output_text.logprobs'] }, 'unsupported_parameter', 'logprobs'],
      [{ model: 'm', input: 'hi', max_tool_calls: 2 }, 'unsupported_parameter', 'max_tool_calls'],
    ];
    for (const [body, code, words] of cases) {
      const r = refusal(() => codec.requestToChat(body));
      expect(r, JSON.stringify(body)).toMatchObject({ status: 400, code });
      expect(r.message).toContain(words);
    }
  });
});

describe('chat request → Responses', () => {
  const chat = {
    model: 'gpt-test',
    messages: [
      { role: 'system', content: 'You are terse.' },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Weather here?' },
          { type: 'image_url', image_url: { url: 'https://example.com/paris.jpg', detail: 'high' } },
        ],
      },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '{"temp":21}' },
      { role: 'assistant', content: 'It is 21 °C.' },
      { role: 'user', content: 'Thanks' },
    ],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
    tool_choice: 'auto',
    max_tokens: 300,
    reasoning_effort: 'medium',
    response_format: { type: 'json_object' },
    temperature: 0.5,
    stream: true,
    stream_options: { include_usage: true },
    n: 1,
    logprobs: false,
  };

  it('translates messages to items, tools to flat function tools, and asks for no storage', () => {
    expect(codec.requestFromChat(chat)).toEqual({
      model: 'gpt-test',
      stream: true,
      temperature: 0.5,
      input: [
        { type: 'message', role: 'system', content: 'You are terse.' },
        {
          type: 'message',
          role: 'user',
          content: [
            { type: 'input_text', text: 'Weather here?' },
            { type: 'input_image', image_url: 'https://example.com/paris.jpg', detail: 'high' },
          ],
        },
        { type: 'function_call', call_id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}' },
        { type: 'function_call_output', call_id: 'call_1', output: '{"temp":21}' },
        { type: 'message', role: 'assistant', content: 'It is 21 °C.' },
        { type: 'message', role: 'user', content: 'Thanks' },
      ],
      // Chat tools are not strict unless they say so; Responses tools are unless told otherwise.
      tools: [{ type: 'function', name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } }, strict: false }],
      tool_choice: 'auto',
      max_output_tokens: 300,
      reasoning: { effort: 'medium' },
      text: { format: { type: 'json_object' } },
      store: false,
    });
  });

  it('round-trips a conversation: chat → Responses → chat keeps every message', () => {
    const back = codec.requestToChat(codec.requestFromChat(chat));
    expect(back.messages).toEqual([
      chat.messages[0],
      { role: 'user', content: [{ type: 'text', text: 'Weather here?' }, { type: 'image_url', image_url: { url: 'https://example.com/paris.jpg', detail: 'high' } }] },
      chat.messages[2],
      chat.messages[3],
      chat.messages[4],
      chat.messages[5],
    ]);
    expect(back.tools).toEqual([{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } }, strict: false } }]);
    expect(back.max_completion_tokens).toBe(300);
    expect(back.response_format).toEqual({ type: 'json_object' });
  });

  it('refuses chat features the Responses API cannot express', () => {
    const base = { model: 'm', messages: [{ role: 'user', content: 'hi' }] };
    const cases: Array<[Obj, string]> = [
      [{ ...base, n: 2 }, "'n'"],
      [{ ...base, logprobs: true, top_logprobs: 2 }, "'logprobs'"],
      [{ ...base, stop: ['\n\n'] }, "'stop'"],
      [{ ...base, modalities: ['text', 'audio'], audio: { voice: 'alloy', format: 'wav' } }, "'modalities'"],
      [{ ...base, seed: 7 }, "'seed'"],
      [{ ...base, frequency_penalty: 0.5 }, "'frequency_penalty'"],
      [{ ...base, store: true }, "'store'"],
    ];
    for (const [body, words] of cases) {
      const r = refusal(() => codec.requestFromChat(body));
      expect(r, JSON.stringify(body)).toMatchObject({ status: 400, code: 'unsupported_parameter' });
      expect(r.message).toContain(words);
    }
    const audio = { model: 'm', messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'UklGR', format: 'wav' } }] }] };
    expect(refusal(() => codec.requestFromChat(audio))).toMatchObject({ code: 'unsupported_content' });
    const custom = { ...base, tools: [{ type: 'custom', custom: { name: 'sh' } }] };
    expect(refusal(() => codec.requestFromChat(custom))).toMatchObject({ code: 'unsupported_tool' });
  });

  it('holds a request to the reserved output limit', () => {
    const body: Obj = { model: 'm', input: 'hi', max_output_tokens: 5000 };
    codec.limit(body, 1200);
    expect(body.max_output_tokens).toBe(1200);
  });
});

// A non-streamed Response as the API returns it: reasoning summary, text, a function call, and a
// prompt mostly read from the cache.
const RESPONSE = {
  id: 'resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41',
  object: 'response',
  created_at: 1741476777,
  status: 'completed',
  error: null,
  incomplete_details: null,
  instructions: null,
  max_output_tokens: null,
  model: 'o4-mini-2025-04-16',
  output: [
    { id: 'rs_67ccd3aa1f6c8190', type: 'reasoning', summary: [{ type: 'summary_text', text: '**Checking the weather**' }] },
    {
      type: 'message',
      id: 'msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41',
      status: 'completed',
      role: 'assistant',
      content: [{ type: 'output_text', text: 'Let me look that up.', annotations: [], logprobs: [] }],
    },
    { type: 'function_call', id: 'fc_67ca09c6bedc8190', call_id: 'call_unLAR8MvFNptuiZK6K6HCy5k', name: 'get_weather', arguments: '{"location":"Paris, France"}', status: 'completed' },
  ],
  parallel_tool_calls: true,
  previous_response_id: null,
  reasoning: { effort: 'medium', summary: 'auto' },
  store: false,
  temperature: 1.0,
  text: { format: { type: 'text' } },
  tool_choice: 'auto',
  tools: [],
  top_p: 1.0,
  truncation: 'disabled',
  usage: { input_tokens: 2006, input_tokens_details: { cached_tokens: 1920 }, output_tokens: 300, output_tokens_details: { reasoning_tokens: 192 }, total_tokens: 2306 },
  user: null,
  metadata: {},
};

describe('Responses answer ↔ chat', () => {
  it('normalizes usage: cached tokens are part of the input, reasoning part of the output', () => {
    expect(codec.usageOf(RESPONSE.usage)).toEqual({ promptTokens: 2006, completionTokens: 300, cachedTokens: 1920, reasoningTokens: 192 });
    expect(
      codec.usageOf({ input_tokens: 100, input_tokens_details: { cached_tokens: 20, cache_write_tokens: 50 }, output_tokens: 10, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 110 }),
    ).toEqual({ promptTokens: 100, completionTokens: 10, cachedTokens: 20, cacheWriteTokens: 50 });
    // Details larger than their totals are held to them: they can never shrink a bill below the tokens used.
    expect(codec.usageOf({ input_tokens: 10, input_tokens_details: { cached_tokens: 99 }, output_tokens: 5, output_tokens_details: { reasoning_tokens: 50 } })).toEqual({
      promptTokens: 10,
      completionTokens: 5,
      cachedTokens: 10,
      reasoningTokens: 5,
    });
    expect(codec.usageOf({ input_tokens: -1, output_tokens: 3 })).toBeUndefined();
    expect(codec.usageOf(null)).toBeUndefined();
  });

  it('turns a Response into a chat completion', () => {
    expect(codec.responseToChat(RESPONSE)).toEqual({
      id: RESPONSE.id,
      object: 'chat.completion',
      created: 1741476777,
      model: 'o4-mini-2025-04-16',
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: 'Let me look that up.',
            reasoning_content: '**Checking the weather**',
            tool_calls: [{ id: 'call_unLAR8MvFNptuiZK6K6HCy5k', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris, France"}' } }],
          },
          finish_reason: 'tool_calls',
          logprobs: null,
        },
      ],
      usage: {
        prompt_tokens: 2006,
        completion_tokens: 300,
        total_tokens: 2306,
        prompt_tokens_details: { cached_tokens: 1920 },
        completion_tokens_details: { reasoning_tokens: 192 },
      },
    });
  });

  it('maps an incomplete Response to finish_reason length, and a failed one to an upstream error', () => {
    const cut = { ...RESPONSE, status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, output: [RESPONSE.output[1]] };
    expect((codec.responseToChat(cut).choices as Obj[])[0]!.finish_reason).toBe('length');
    const failed = { ...RESPONSE, status: 'failed', error: { code: 'server_error', message: 'The model crashed.' } };
    expect(refusal(() => codec.responseToChat(failed))).toEqual({ status: 502, code: 'upstream_error', message: 'Upstream error: The model crashed.' });
  });

  it('turns a chat completion into a Response, echoing the request', () => {
    const chat = {
      id: 'chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG',
      object: 'chat.completion',
      created: 1741570283,
      model: 'deepseek-reasoner',
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: null,
            reasoning_content: 'The user wants weather.',
            tool_calls: [{ id: 'call_abc', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
          },
          finish_reason: 'tool_calls',
        },
      ],
      usage: {
        prompt_tokens: 1117,
        completion_tokens: 46,
        total_tokens: 1163,
        prompt_tokens_details: { cached_tokens: 1024 },
        completion_tokens_details: { reasoning_tokens: 20 },
        cache_creation_input_tokens: 64,
      },
    };
    const request = { model: 'deepseek-reasoner', input: 'weather?', instructions: 'Be brief.', tools: [{ type: 'function', name: 'get_weather', parameters: {}, strict: false }], max_output_tokens: 500 };
    const r = responseFromChat(chat, request);
    expect(r).toMatchObject({
      id: 'resp_B9MHDbslfkBeAs8l4bebGdFOJ6PeG',
      object: 'response',
      created_at: 1741570283,
      status: 'completed',
      error: null,
      incomplete_details: null,
      model: 'deepseek-reasoner',
      instructions: 'Be brief.',
      max_output_tokens: 500,
      tools: request.tools,
      store: false,
      output: [
        { id: 'rs_B9MHDbslfkBeAs8l4bebGdFOJ6PeG', type: 'reasoning', summary: [{ type: 'summary_text', text: 'The user wants weather.' }] },
        { id: 'fc_call_abc', type: 'function_call', status: 'completed', arguments: '{"city":"Paris"}', call_id: 'call_abc', name: 'get_weather' },
      ],
      usage: {
        input_tokens: 1117,
        input_tokens_details: { cached_tokens: 1024, cache_write_tokens: 64 },
        output_tokens: 46,
        output_tokens_details: { reasoning_tokens: 20 },
        total_tokens: 1163,
      },
    });
    expect(codec.usageOf(r.usage)).toEqual({ promptTokens: 1117, completionTokens: 46, cachedTokens: 1024, cacheWriteTokens: 64, reasoningTokens: 20 });
    const cut = codec.responseFromChat({ ...chat, choices: [{ index: 0, message: { role: 'assistant', content: 'It is' }, finish_reason: 'length' }] });
    expect(cut).toMatchObject({
      status: 'incomplete',
      incomplete_details: { reason: 'max_output_tokens' },
      output: [{ type: 'message', status: 'incomplete', content: [{ type: 'output_text', text: 'It is', annotations: [], logprobs: [] }] }],
    });
  });

  it('writes the charge into a whole Response as the streamed one carries it', () => {
    const body = codec.responseFromChat({ id: 'chatcmpl-1', created: 1, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }] });
    billResponse(body, bill({ change: 'cashuBchange' }));
    expect(body.usage).toEqual(BILLED_USAGE);
    expect(body.x_cashu).toBe('cashuBchange');
    const unpaid = codec.responseFromChat({ id: 'chatcmpl-2', model: 'm', choices: [] });
    billResponse(unpaid, bill());
    expect(unpaid).not.toHaveProperty('x_cashu');
  });

  it('writes errors in OpenAI\'s shape with our stable code', () => {
    const err = httpError(new EngineError('insufficient_balance', 'Not enough balance.', { extra: { refund: 'cashuB…' } }));
    expect(errorBody(err)).toEqual({ error: { message: 'Not enough balance.', type: 'insufficient_quota', param: null, code: 'insufficient_balance', refund: 'cashuB…' } });
  });
});

// The events of a streamed reasoning answer with text and a function call, in the API's order and
// with its field names (sequence numbers, `event:` lines, `logprobs`, `obfuscation`).
const rid = 'resp_68a1c3d2e0f48190a0b2';
const started = { id: rid, object: 'response', created_at: 1755431890, status: 'in_progress', error: null, incomplete_details: null, model: 'o4-mini-2025-04-16', output: [], usage: null };
const STREAM: Obj[] = [
  { type: 'response.created', sequence_number: 0, response: started },
  { type: 'response.in_progress', sequence_number: 1, response: started },
  { type: 'response.output_item.added', sequence_number: 2, output_index: 0, item: { id: 'rs_1', type: 'reasoning', summary: [] } },
  { type: 'response.reasoning_summary_part.added', sequence_number: 3, item_id: 'rs_1', output_index: 0, summary_index: 0, part: { type: 'summary_text', text: '' } },
  { type: 'response.reasoning_summary_text.delta', sequence_number: 4, item_id: 'rs_1', output_index: 0, summary_index: 0, delta: '**Weather**', obfuscation: 'Tq' },
  { type: 'response.reasoning_summary_text.done', sequence_number: 5, item_id: 'rs_1', output_index: 0, summary_index: 0, text: '**Weather**' },
  { type: 'response.reasoning_summary_part.added', sequence_number: 6, item_id: 'rs_1', output_index: 0, summary_index: 1, part: { type: 'summary_text', text: '' } },
  { type: 'response.reasoning_summary_text.delta', sequence_number: 7, item_id: 'rs_1', output_index: 0, summary_index: 1, delta: 'Call the tool.', obfuscation: 'x' },
  { type: 'response.output_item.done', sequence_number: 8, output_index: 0, item: { id: 'rs_1', type: 'reasoning', summary: [{ type: 'summary_text', text: '**Weather**' }, { type: 'summary_text', text: 'Call the tool.' }] } },
  { type: 'response.output_item.added', sequence_number: 9, output_index: 1, item: { id: 'msg_1', type: 'message', status: 'in_progress', content: [], role: 'assistant' } },
  { type: 'response.content_part.added', sequence_number: 10, item_id: 'msg_1', output_index: 1, content_index: 0, part: { type: 'output_text', annotations: [], logprobs: [], text: '' } },
  { type: 'response.output_text.delta', sequence_number: 11, item_id: 'msg_1', output_index: 1, content_index: 0, delta: 'Checking', logprobs: [], obfuscation: 'Zq1' },
  { type: 'response.output_text.delta', sequence_number: 12, item_id: 'msg_1', output_index: 1, content_index: 0, delta: '.', logprobs: [], obfuscation: 'pQ3rT' },
  { type: 'response.output_text.done', sequence_number: 13, item_id: 'msg_1', output_index: 1, content_index: 0, text: 'Checking.', logprobs: [] },
  { type: 'response.content_part.done', sequence_number: 14, item_id: 'msg_1', output_index: 1, content_index: 0, part: { type: 'output_text', annotations: [], logprobs: [], text: 'Checking.' } },
  { type: 'response.output_item.done', sequence_number: 15, output_index: 1, item: { id: 'msg_1', type: 'message', status: 'completed', content: [{ type: 'output_text', annotations: [], logprobs: [], text: 'Checking.' }], role: 'assistant' } },
  { type: 'response.output_item.added', sequence_number: 16, output_index: 2, item: { id: 'fc_1', type: 'function_call', status: 'in_progress', arguments: '', call_id: 'call_Zx1', name: 'get_weather' } },
  { type: 'response.function_call_arguments.delta', sequence_number: 17, item_id: 'fc_1', output_index: 2, delta: '{"city":', obfuscation: 'a' },
  { type: 'response.function_call_arguments.delta', sequence_number: 18, item_id: 'fc_1', output_index: 2, delta: '"Paris"}', obfuscation: 'b' },
  { type: 'response.function_call_arguments.done', sequence_number: 19, item_id: 'fc_1', output_index: 2, arguments: '{"city":"Paris"}' },
  { type: 'response.output_item.done', sequence_number: 20, output_index: 2, item: { id: 'fc_1', type: 'function_call', status: 'completed', arguments: '{"city":"Paris"}', call_id: 'call_Zx1', name: 'get_weather' } },
  {
    type: 'response.completed',
    sequence_number: 21,
    response: {
      ...started,
      status: 'completed',
      usage: { input_tokens: 2006, input_tokens_details: { cached_tokens: 1920 }, output_tokens: 300, output_tokens_details: { reasoning_tokens: 192 }, total_tokens: 2306 },
    },
  },
];

describe('Responses stream → chat chunks', () => {
  it('decodes each semantic event into the chat chunk that carries it, usage last', () => {
    const d = codec.decoder();
    const out = sse(STREAM).flatMap((e) => d.push(e));
    const base = { id: rid, object: 'chat.completion.chunk', created: 1755431890, model: 'o4-mini-2025-04-16' };
    const c = (delta: Obj, finish: string | null = null) => ({ ...base, choices: [{ index: 0, delta, finish_reason: finish }] });
    expect(out).toEqual([
      c({ role: 'assistant', content: '' }),
      c({ reasoning_content: '**Weather**' }),
      c({ reasoning_content: '\n\nCall the tool.' }),
      c({ content: 'Checking' }),
      c({ content: '.' }),
      c({ tool_calls: [{ index: 0, id: 'call_Zx1', type: 'function', function: { name: 'get_weather', arguments: '' } }] }),
      c({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
      c({ tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] }),
      c({}, 'tool_calls'),
      {
        ...base,
        choices: [],
        usage: { prompt_tokens: 2006, completion_tokens: 300, total_tokens: 2306, prompt_tokens_details: { cached_tokens: 1920 }, completion_tokens_details: { reasoning_tokens: 192 } },
      },
    ]);
    expect(codec.usageOf(STREAM.at(-1)!.response && (STREAM.at(-1)!.response as Obj).usage)).toEqual({ promptTokens: 2006, completionTokens: 300, cachedTokens: 1920, reasoningTokens: 192 });
  });

  it('takes text that only a `.done` event carries, and ends an incomplete response with length', () => {
    const d = codec.decoder();
    const done: Obj[] = [
      STREAM[0]!,
      { type: 'response.output_text.done', sequence_number: 1, item_id: 'msg_1', output_index: 0, content_index: 0, text: 'All at once', logprobs: [] },
      { type: 'response.incomplete', sequence_number: 2, response: { ...started, status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, usage: { input_tokens: 5, output_tokens: 16 } } },
    ];
    const out = sse(done).flatMap((e) => d.push(e));
    expect(out.map((ch) => (ch.choices as Obj[])[0]?.delta ?? ch.usage)).toEqual([
      { role: 'assistant', content: '' },
      { content: 'All at once' },
      {},
      { prompt_tokens: 5, completion_tokens: 16, total_tokens: 21, prompt_tokens_details: { cached_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0 } },
    ]);
    expect((out[2]!.choices as Obj[])[0]!.finish_reason).toBe('length');
  });

  it('turns a failure in the stream into an upstream error', () => {
    const failed = { type: 'response.failed', sequence_number: 3, response: { ...started, status: 'failed', error: { code: 'server_error', message: 'The model produced invalid content.' } } };
    expect(refusal(() => codec.decoder().push({ name: 'response.failed', data: JSON.stringify(failed) }))).toEqual({
      status: 502,
      code: 'upstream_error',
      message: 'Upstream error: The model produced invalid content.',
    });
    const limited = { type: 'error', sequence_number: 2, error: { type: 'tokens', code: 'rate_limit_exceeded', message: 'Rate limit reached.', param: null } };
    expect(refusal(() => codec.decoder().push({ name: 'error', data: JSON.stringify(limited) }))).toMatchObject({ status: 429, code: 'upstream_rate_limited' });
  });
});

const chunk = (delta: Obj, finish: string | null = null): Obj => ({
  id: 'chatcmpl-Ab12',
  object: 'chat.completion.chunk',
  created: 1741570283,
  model: 'llama-3.3-70b',
  choices: [{ index: 0, delta, finish_reason: finish }],
});

const TOOL_CHUNKS = [
  chunk({ role: 'assistant', content: '' }),
  chunk({ reasoning_content: 'Need the weather.' }),
  chunk({ content: 'Checking' }),
  chunk({ content: '.' }),
  chunk({ tool_calls: [{ index: 0, id: 'call_9', type: 'function', function: { name: 'get_weather', arguments: '' } }] }),
  chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
  chunk({ tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] }),
  chunk({}, 'tool_calls'),
  { ...chunk({}), choices: [], usage: { prompt_tokens: 2006, completion_tokens: 300, total_tokens: 2306 } },
];

describe('chat chunks → Responses stream', () => {
  it('writes the API\'s events in order, numbered, and closes with the bill and the change', () => {
    const e = codec.encoder();
    const text = TOOL_CHUNKS.map((c) => e.push(c)).join('') + e.close(bill({ change: 'cashuBchange' }));
    const list = events(text);
    expect(list.every((ev) => ev.name === ev.data.type)).toBe(true);
    expect(list.map((ev) => ev.data.sequence_number)).toEqual(list.map((_, i) => i));
    expect(list.map((ev) => ev.data.type)).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.reasoning_summary_part.added',
      'response.reasoning_summary_text.delta',
      'response.reasoning_summary_text.done',
      'response.reasoning_summary_part.done',
      'response.output_item.done',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.output_item.added',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(list[10]!.data).toEqual({ type: 'response.output_text.delta', sequence_number: 10, item_id: 'msg_Ab12', output_index: 1, content_index: 0, delta: 'Checking', logprobs: [] });
    expect(list[18]!.data).toEqual({ type: 'response.function_call_arguments.done', sequence_number: 18, item_id: 'fc_call_9', output_index: 2, arguments: '{"city":"Paris"}' });
    const final = list.at(-1)!.data.response as Obj;
    expect(final).toMatchObject({ id: 'resp_Ab12', object: 'response', status: 'completed', model: 'llama-3.3-70b', store: false, x_cashu: 'cashuBchange' });
    expect(final.output).toEqual([
      { id: 'rs_Ab12', type: 'reasoning', summary: [{ type: 'summary_text', text: 'Need the weather.' }] },
      { id: 'msg_Ab12', type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: 'Checking.', annotations: [], logprobs: [] }] },
      { id: 'fc_call_9', type: 'function_call', status: 'completed', arguments: '{"city":"Paris"}', call_id: 'call_9', name: 'get_weather' },
    ]);
    expect(final.usage).toEqual(BILLED_USAGE);
  });

  it('ends a reply cut at the limit with response.incomplete', () => {
    const e = codec.encoder();
    const text = [chunk({ content: 'It is' }), chunk({}, 'length')].map((c) => e.push(c)).join('') + e.close(bill());
    const last = events(text).at(-1)!.data;
    expect(last.type).toBe('response.incomplete');
    expect(last.response).toMatchObject({ status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, output: [{ type: 'message', status: 'incomplete' }] });
    // A chat stream that ended without a finish reason was cut short: its answer is not complete.
    const cut = codec.encoder();
    const after = events(cut.push(chunk({ content: 'It is' })) + cut.close(bill())).at(-1)!.data;
    expect(after).toMatchObject({ type: 'response.incomplete', response: { status: 'incomplete', incomplete_details: null } });
  });

  it('echoes the client\'s request settings in the response, as the API does', () => {
    const request = { model: 'm', input: 'hi', instructions: 'Be brief.', max_output_tokens: 99, temperature: 0.3, metadata: { run: '7' }, tools: [{ type: 'function', name: 'f', parameters: {}, strict: false }] };
    const e = new ResponsesEncoder(request);
    const list = events(e.push(chunk({ content: 'ok' })) + e.close(bill()));
    for (const ev of [list[0]!, list.at(-1)!]) {
      expect(ev.data.response).toMatchObject({ instructions: 'Be brief.', max_output_tokens: 99, temperature: 0.3, metadata: { run: '7' }, tools: request.tools, store: false });
    }
  });

  it('decodes its own stream back into the chunks it was given', () => {
    const e = codec.encoder();
    const text = TOOL_CHUNKS.map((c) => e.push(c)).join('') + e.close(bill());
    const d = codec.decoder();
    const back = events(text).flatMap((ev) => d.push({ name: ev.name, data: JSON.stringify(ev.data) }));
    const deltas = back.flatMap((c) => (c.choices as Obj[]).map((ch) => ch.delta));
    expect(deltas).toEqual([
      { role: 'assistant', content: '' },
      { reasoning_content: 'Need the weather.' },
      { content: 'Checking' },
      { content: '.' },
      { tool_calls: [{ index: 0, id: 'call_9', type: 'function', function: { name: 'get_weather', arguments: '' } }] },
      { tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] },
      { tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] },
      {},
    ]);
    expect(codec.usageOf(((events(text).at(-1)!.data.response as Obj).usage))).toEqual(bill().usage);
  });
});

/** A local server that answers `POST /v1/responses` with the given text, as a gateway would. */
async function replay(body: () => string): Promise<{ client: OpenAI; close: () => Promise<void> }> {
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(body());
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  const client = new OpenAI({ apiKey: 'cashuBtoken', baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0 });
  return { client, close: () => new Promise((r) => server.close(() => r())) };
}

describe('the official openai SDK reads what the encoder writes', () => {
  const encode = (chunks: Obj[], b: Bill) => () => {
    const e = codec.encoder();
    return chunks.map((c) => e.push(c)).join('') + e.close(b);
  };

  it('responses.create({ stream: true }) yields every event', async () => {
    const { client, close } = await replay(encode(TOOL_CHUNKS, bill()));
    try {
      const stream = await client.responses.create({ model: 'llama-3.3-70b', input: 'weather?', stream: true });
      const seen: string[] = [];
      let text = '';
      for await (const ev of stream) {
        seen.push(ev.type);
        if (ev.type === 'response.output_text.delta') text += ev.delta;
      }
      expect(seen[0]).toBe('response.created');
      expect(seen.at(-1)).toBe('response.completed');
      expect(seen.length).toBe(21);
      expect(text).toBe('Checking.');
    } finally {
      await close();
    }
  });

  it('responses.stream(...).finalResponse() has the output, the usage, our cost and the change', async () => {
    const { client, close } = await replay(encode(TOOL_CHUNKS, bill({ change: 'cashuBchange' })));
    try {
      const stream = client.responses.stream({ model: 'llama-3.3-70b', input: 'weather?' });
      const deltas: string[] = [];
      stream.on('response.output_text.delta', (ev) => deltas.push(ev.snapshot));
      const final = await stream.finalResponse();
      expect(deltas).toEqual(['Checking', 'Checking.']);
      expect(final.status).toBe('completed');
      expect(final.output_text).toBe('Checking.');
      const call = final.output.find((o) => o.type === 'function_call');
      expect(call).toMatchObject({ call_id: 'call_9', name: 'get_weather', arguments: '{"city":"Paris"}' });
      expect(final.usage).toMatchObject({ input_tokens: 2006, input_tokens_details: { cached_tokens: 1920 }, output_tokens: 300, output_tokens_details: { reasoning_tokens: 192 }, total_tokens: 2306 });
      const extra = final as unknown as { usage: { cost: Obj }; x_cashu: string };
      expect(extra.usage.cost).toEqual({ base_msats: 0, input_msats: 120, output_msats: 450, total_msats: 570 });
      expect(extra.x_cashu).toBe('cashuBchange');
    } finally {
      await close();
    }
  });

  it('an empty reply still makes a complete message', async () => {
    const { client, close } = await replay(encode([chunk({ role: 'assistant', content: '' }), chunk({}, 'stop')], bill()));
    try {
      const final = await client.responses.stream({ model: 'm', input: 'hi' }).finalResponse();
      expect(final.output).toMatchObject([{ id: 'msg_Ab12', type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: '', annotations: [], logprobs: [] }] }]);
      expect(final.output).toHaveLength(1);
    } finally {
      await close();
    }
  });

  it('a failure after the start reaches the SDK as an APIError with our code', async () => {
    const { client, close } = await replay(() => {
      const e = codec.encoder();
      return e.push(chunk({ content: 'Partial' })) + e.fail(httpError(new EngineError('upstream_error', 'Upstream error: the connection broke.')));
    });
    try {
      const stream = await client.responses.create({ model: 'm', input: 'hi', stream: true });
      const seen: string[] = [];
      const err = await (async () => {
        try {
          for await (const ev of stream) seen.push(ev.type);
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(APIError);
      expect(err).toMatchObject({ code: 'upstream_error', type: 'upstream_error', message: 'Upstream error: the connection broke.' });
      expect(seen).toContain('response.output_text.delta');
    } finally {
      await close();
    }
    const e = codec.encoder();
    const list = events(e.push(chunk({ content: 'x' })) + e.fail(httpError(new EngineError('upstream_error', 'broke'))));
    expect(list.slice(-2).map((ev) => ev.name)).toEqual(['error', 'response.failed']);
    expect(list.at(-1)!.data.response).toMatchObject({ status: 'failed', error: { code: 'upstream_error', message: 'broke' } });
  });
});

describe('the Responses upstream double', () => {
  const up = new FakeResponsesUpstream();
  let client: OpenAI;
  beforeAll(async () => {
    client = new OpenAI({ apiKey: 'sk-upstream', baseURL: await up.start(), maxRetries: 0 });
  });
  afterAll(() => up.stop());

  it('answers the SDK with usage that has cached and reasoning tokens, and records the request', async () => {
    up.cachedTokens = 8;
    up.reasoningTokens = 4;
    try {
      const r = await client.responses.create({ model: 'gpt-test', input: 'hello', store: false });
      expect(r.output_text).toBe(REPLY_WORDS.join(' '));
      expect(r.usage).toMatchObject({ input_tokens_details: { cached_tokens: 8 }, output_tokens: 14, output_tokens_details: { reasoning_tokens: 4 } });
      expect(codec.usageOf(r.usage)).toEqual({ promptTokens: r.usage!.input_tokens, completionTokens: 14, cachedTokens: 8, reasoningTokens: 4 });
      expect(up.requests.at(-1)).toMatchObject({ path: '/responses', body: { model: 'gpt-test', input: 'hello', store: false } });
    } finally {
      up.cachedTokens = 0;
      up.reasoningTokens = 0;
    }
  });

  it('streams what the decoder turns into the reply and its usage', async () => {
    up.replies.push({ text: 'Calling now', summary: 'Use the tool', calls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }] });
    const res = await fetch(`${up.url}/responses`, { method: 'POST', body: JSON.stringify({ model: 'gpt-test', input: 'weather?', stream: true }) });
    const split = new SseSplitter();
    const d = codec.decoder();
    const chunks: Obj[] = [];
    for await (const bytes of res.body!) {
      for (const ev of split.push(bytes as Uint8Array)) chunks.push(...d.push({ name: /^event: (.*)$/m.exec(ev)?.[1], data: eventData(ev)! }));
    }
    const deltas = chunks.flatMap((c) => (c.choices as Obj[]).map((ch) => ch.delta as Obj));
    expect(deltas.map((x) => x.content ?? '').join('')).toBe('Calling now');
    expect(deltas.map((x) => x.reasoning_content ?? '').join('')).toBe('Use the tool');
    expect(deltas.flatMap((x) => (x.tool_calls as Obj[] | undefined) ?? []).map((t) => (t.function as Obj).arguments).join('')).toBe('{"city":"Paris"}');
    expect((chunks.at(-2)!.choices as Obj[])[0]!.finish_reason).toBe('tool_calls');
    expect(chunks.at(-1)!.usage).toMatchObject({ completion_tokens: 2 + 4 });
  });

  it('the SDK\'s own stream helper accepts its events, through max_output_tokens', async () => {
    const whole = await client.responses.stream({ model: 'gpt-test', input: 'count', max_output_tokens: 16, store: false }).finalResponse();
    expect(whole.status).toBe('completed');
    expect(whole.output_text).toBe(REPLY_WORDS.join(' '));
    up.replies.push({ text: Array.from({ length: 20 }, (_, i) => `w${i}`).join(' ') });
    const incomplete = await client.responses.stream({ model: 'gpt-test', input: 'count', max_output_tokens: 16, store: false }).finalResponse();
    expect(incomplete.status).toBe('incomplete');
    expect(incomplete.incomplete_details).toEqual({ reason: 'max_output_tokens' });
    expect(incomplete.usage?.output_tokens).toBe(16);
  });

  it('continues a stored response, and refuses an unknown one as the API does', async () => {
    const first = await client.responses.create({ model: 'gpt-test', input: 'remember 7' });
    const next = await client.responses.create({ model: 'gpt-test', input: 'what was it?', previous_response_id: first.id });
    const alone = await client.responses.create({ model: 'gpt-test', input: 'what was it?', store: false });
    // The continuation is billed the whole stored conversation as input.
    expect(next.usage!.input_tokens).toBe(first.usage!.total_tokens + alone.usage!.input_tokens);
    const err = await client.responses.create({ model: 'gpt-test', input: 'x', previous_response_id: 'resp_nope' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect(err).toMatchObject({ status: 400, code: 'previous_response_not_found', param: 'previous_response_id' });
  });

  async function decodeFrom(body: Obj): Promise<{ chunks: Obj[]; error?: unknown }> {
    const res = await fetch(`${up.url}/responses`, { method: 'POST', body: JSON.stringify(body) });
    const split = new SseSplitter();
    const d = codec.decoder();
    const chunks: Obj[] = [];
    try {
      for await (const bytes of res.body!) {
        for (const ev of split.push(bytes as Uint8Array)) chunks.push(...d.push({ name: /^event: (.*)$/m.exec(ev)?.[1], data: eventData(ev)! }));
      }
    } catch (error) {
      return { chunks, error: error instanceof EngineError ? httpError(error) : error };
    }
    return { chunks };
  }

  it('fails a stream with response.failed, or cuts it, as a broken upstream does', async () => {
    up.modes.push('failed');
    const failed = await decodeFrom({ model: 'gpt-test', input: 'x', stream: true });
    expect(failed.error).toMatchObject({ status: 502, code: 'upstream_error', message: 'Upstream error: The model produced invalid content.' });
    expect(failed.chunks.map((c) => ((c.choices as Obj[])[0]?.delta as Obj).content).join('')).toBe('The answer');
    up.modes.push('cut');
    const cut = await decodeFrom({ model: 'gpt-test', input: 'x', stream: true });
    // No terminal event: no finish and no usage, so the engine knows to count what it saw.
    expect(cut.chunks.some((c) => c.usage !== undefined || (c.choices as Obj[])[0]?.finish_reason)).toBe(false);
    expect(cut.chunks.map((c) => ((c.choices as Obj[])[0]?.delta as Obj).content).join('')).toBe('The answer is');
  });

  it('answers errors with the API\'s bodies and statuses', async () => {
    up.modes.push('fail_429', 'fail_500');
    await expect(client.responses.create({ model: 'gpt-test', input: 'x' })).rejects.toMatchObject({ status: 429, code: 'rate_limit_exceeded' });
    await expect(client.responses.create({ model: 'gpt-test', input: 'x' })).rejects.toMatchObject({ status: 500, type: 'server_error' });
    up.modes.push('error_event');
    const stream = await client.responses.create({ model: 'gpt-test', input: 'x', stream: true });
    await expect((async () => { for await (const _ of stream) void _; })()).rejects.toMatchObject({ code: 'server_error' });
  });
});

describe('a Responses upstream passed through to a Responses client', () => {
  const up = new FakeResponsesUpstream();
  beforeAll(() => up.start());
  afterAll(() => up.stop());

  /** The upstream's stream through the passthrough; `close` or `fail` as the engine would. */
  async function through(body: Obj, end: (p: ResponsesPassthrough, err?: HttpError) => string) {
    const res = await fetch(`${up.url}/responses`, { method: 'POST', body: JSON.stringify(body) });
    const split = new SseSplitter();
    const p = new ResponsesPassthrough();
    let text = '';
    let failure: HttpError | undefined;
    try {
      for await (const bytes of res.body!) for (const ev of split.push(bytes as Uint8Array)) text += p.push({ name: /^event: (.*)$/m.exec(ev)?.[1], data: eventData(ev)! });
    } catch (e) {
      if (e instanceof EngineError) failure = httpError(e);
    }
    return { p, text: text + end(p, failure) };
  }

  it('forwards the events untouched and closes with the bill, metering usage and every generated field', async () => {
    up.cachedTokens = 12;
    up.replies.push({ text: 'Calling now', summary: 'Use the tool', calls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }] });
    try {
      const { p, text } = await through({ model: 'gpt-test', input: 'weather?', stream: true }, (x) => x.close(bill({ change: 'cashuBchange' })));
      const list = events(text);
      expect(list.map((e) => e.data.sequence_number)).toEqual(list.map((_, i) => i));
      expect(p.metered.usage).toMatchObject({ cachedTokens: 12, completionTokens: 2 + 4 });
      expect(p.metered.generated).toBe('Use the toolCalling nowget_weather{"city":"Paris"}');
      const { client, close } = await replay(() => text);
      try {
        const final = await client.responses.stream({ model: 'gpt-test', input: 'weather?' }).finalResponse();
        expect(final.output_text).toBe('Calling now');
        expect(final.output.map((o) => o.type)).toEqual(['reasoning', 'message', 'function_call']);
        const extra = final as unknown as { usage: Obj; x_cashu: string };
        expect(extra.usage).toMatchObject({ input_tokens: 2006, input_tokens_details: { cached_tokens: 1920 }, cost: { total_msats: 570 } });
        expect(extra.x_cashu).toBe('cashuBchange');
      } finally {
        await close();
      }
    } finally {
      up.cachedTokens = 0;
    }
  });

  it('ends an upstream failure with our error, which the SDK raises', async () => {
    up.modes.push('failed');
    const { text } = await through({ model: 'gpt-test', input: 'x', stream: true }, (x, err) => x.fail(err!));
    const list = events(text);
    expect(list.map((e) => e.name).slice(-2)).toEqual(['error', 'response.failed']);
    expect(list.map((e) => e.data.sequence_number)).toEqual(list.map((_, i) => i));
    const { client, close } = await replay(() => text);
    try {
      const stream = await client.responses.create({ model: 'gpt-test', input: 'x', stream: true });
      await expect((async () => { for await (const _ of stream) void _; })()).rejects.toMatchObject({ code: 'upstream_error', message: 'Upstream error: The model produced invalid content.' });
    } finally {
      await close();
    }
  });

  it('closes a stream the upstream cut short as incomplete, keeping what was said', async () => {
    up.modes.push('cut');
    const { p, text } = await through({ model: 'gpt-test', input: 'x', stream: true }, (x) => x.close(bill()));
    expect(p.metered.usage).toBeUndefined();
    expect(p.metered.generated).toBe('The answer is');
    const { client, close } = await replay(() => text);
    try {
      const final = await client.responses.stream({ model: 'gpt-test', input: 'x' }).finalResponse();
      expect(final.status).toBe('incomplete');
      expect(final.output_text).toBe('The answer is');
      expect(final.usage?.total_tokens).toBe(2306);
    } finally {
      await close();
    }
  });

  it('meters a whole Response: usage and every generated field', () => {
    expect(meterResponse(RESPONSE)).toEqual({
      usage: { promptTokens: 2006, completionTokens: 300, cachedTokens: 1920, reasoningTokens: 192 },
      generated: '**Checking the weather**Let me look that up.get_weather{"location":"Paris, France"}',
    });
  });
});
