import Anthropic from '@anthropic-ai/sdk';
import { describe, expect, it } from 'vitest';
import { EngineError } from '../../src/engine/errors.ts';
import { HttpError, httpError } from '../../src/http/errors.ts';
import type { Bill, UpstreamEvent } from '../../src/engine/format.ts';
import { mediaTokens } from '../../src/engine/tokens.ts';
import {
  billMessage,
  countTokensEstimate,
  errorBody,
  limitMessages,
  messagesCodec,
  messagesGenerated,
  messagesRelay,
  parseMessages,
} from '../../src/formats/messages.ts';

type Obj = Record<string, unknown>;

/** A format's refusal as the HTTP door answers it. */
function refusal(fn: () => unknown): HttpError {
  try {
    fn();
  } catch (e) {
    if (e instanceof EngineError) return httpError(e);
    throw e;
  }
  throw new Error('expected an EngineError');
}

/** An SSE text as the upstream events the engine hands a format. */
function events(text: string): UpstreamEvent[] {
  return text.trim().split(/\n\n+/).map((raw) => {
    const ev: UpstreamEvent = { data: '' };
    for (const line of raw.split('\n')) {
      if (line.startsWith('event:')) ev.name = line.slice(6).trim();
      if (line.startsWith('data:')) ev.data = line.slice(5).trim();
    }
    return ev;
  });
}

/** The official SDK reading our SSE text as if it came from api.anthropic.com. */
function sdkOver(text: string): Anthropic {
  return new Anthropic({
    apiKey: 'unused',
    baseURL: 'http://gateway.invalid',
    maxRetries: 0,
    fetch: async () => new Response(text, { status: 200, headers: { 'content-type': 'text/event-stream' } }),
  });
}

const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Get the current weather in a given location',
  input_schema: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
};

/** Anthropic's documented tool-use stream (a text block, then a tool_use block whose input arrives in pieces). */
const TOOL_STREAM = `event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":1000,"cache_read_input_tokens":4000,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\": \\"San Fra"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}
`;

const BILL: Bill = {
  usage: { promptTokens: 5472, completionTokens: 89, cachedTokens: 4000, cacheWriteTokens: 1000 },
  cost: { inputMsats: 1234, outputMsats: 567, totalMsats: 1801 },
  change: 'cashuBo2FteCJodHRwOi8vbWludC50ZXN0',
  requestId: 'r-42',
};

describe('parseMessages', () => {
  it('marks a request that asks for the 1-hour cache anywhere, which costs more to write', () => {
    const base = { model: 'claude-test', max_tokens: 8, messages: [{ role: 'user', content: 'Hi' }] };
    const long = { type: 'ephemeral', ttl: '1h' };
    expect(parseMessages(base).estimate.longCacheWrites).toBeFalsy();
    expect(parseMessages({ ...base, system: [{ type: 'text', text: 'S', cache_control: { type: 'ephemeral', ttl: '5m' } }] }).estimate.longCacheWrites).toBeFalsy();
    for (const body of [
      { ...base, system: [{ type: 'text', text: 'S', cache_control: long }] },
      { ...base, messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi', cache_control: long }] }] },
      { ...base, tools: [{ ...WEATHER_TOOL, cache_control: long }] },
      // Automatic caching: one breakpoint for the whole request.
      { ...base, cache_control: long },
    ]) expect(parseMessages(body).estimate.longCacheWrites, JSON.stringify(body)).toBe(true);
  });

  it('walks a body nested deeper than the stack for cache breakpoints without throwing', () => {
    const deep = JSON.parse('['.repeat(200_000) + ']'.repeat(200_000)) as unknown;
    const base = { model: 'claude-test', max_tokens: 8, messages: [{ role: 'user', content: 'Hi' }] };
    expect(parseMessages({ ...base, metadata_extra: deep }).estimate.longCacheWrites).toBeFalsy();
  });

  it('collects every text piece, per-turn framing, media by type and the output limit', () => {
    const pdf = 'JVBERi0xLjQK'.repeat(700); // 8,400 base64 characters: three 3 KB pages
    const parsed = parseMessages({
      model: 'claude-test',
      max_tokens: 512,
      stream: true,
      system: [{ type: 'text', text: 'You are terse.', cache_control: { type: 'ephemeral' } }],
      tools: [WEATHER_TOOL],
      messages: [
        { role: 'user', content: [
          { type: 'text', text: 'What is in this image and this file?' },
          { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
          { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: pdf }, title: 'Report' },
        ] },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { location: 'Paris' } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: '18°C' }] }] },
      ],
    });
    expect(parsed.model).toBe('claude-test');
    expect(parsed.stream).toBe(true);
    expect(parsed.estimate.text).toEqual([
      'You are terse.',
      'What is in this image and this file?',
      'Report',
      'get_weather',
      '{"location":"Paris"}',
      '18°C',
      JSON.stringify(WEATHER_TOOL),
    ]);
    // 3 for the reply, 3 per turn, the tool-use system prompt, an image, a three-page PDF.
    expect(parsed.estimate.extraTokens).toBe(3 + 3 * 3 + 804 + mediaTokens('image') + mediaTokens('file', { bytes: pdf.length }));
    expect(mediaTokens('file', { bytes: pdf.length })).toBe(9000);
    expect(parsed.estimate.images).toBe(2);
    expect(parsed.estimate.requestedCompletionTokens).toBe(512);
    expect(parsed.estimate.choices).toBe(1);
  });

  it('counts text a client tucks where no text block is: tool inputs, document sources, thinking, unknown blocks', () => {
    const { estimate } = parseMessages({
      model: 'm', max_tokens: 1,
      messages: [
        { role: 'user', content: [
          { type: 'document', source: { type: 'content', content: [{ type: 'text', text: 'inside a document' }] } },
          { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'a plain text file' } },
          { type: 'search_result', source: 'https://x', title: 't', content: [{ type: 'text', text: 'a search result' }] },
          { type: 'tool_result', tool_use_id: 't', content: [{ type: 'image', source: { type: 'url', url: 'https://x/i.png' } }] },
        ] },
        { role: 'assistant', content: [
          { type: 'thinking', thinking: 'a long thought', signature: 's' },
          { type: 'tool_use', id: 't2', name: 'f', input: { essay: 'a long essay' } },
        ] },
      ],
    });
    const all = estimate.text.join('|');
    for (const hidden of ['inside a document', 'a plain text file', 'a search result', 'a long thought', 'a long essay']) expect(all).toContain(hidden);
    expect(estimate.images).toBe(1);
    expect(estimate.extraTokens).toBe(3 + 2 * 3 + mediaTokens('image'));
  });

  it('reserves a document it cannot see (by URL or file id) as filling the context; an image stays an image', () => {
    const estimate = (block: Obj) => parseMessages({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content: [{ type: 'text', text: 'Read.' }, block] }] }).estimate;
    const unseen: Obj[] = [
      { type: 'document', source: { type: 'url', url: 'https://example.com/big.pdf' } },
      { type: 'document', source: { type: 'file', file_id: 'file_011CNha8iCJcU1wXNR6q4V8w' } },
      { type: 'tool_result', tool_use_id: 't', content: [{ type: 'document', source: { type: 'url', url: 'https://example.com/big.pdf' } }] },
    ];
    for (const block of unseen) expect(estimate(block).wholeContext, JSON.stringify(block)).toBe(true);
    // Inline bytes are counted; Anthropic scales an image to at most about 1,600 tokens wherever it is.
    const seen: Obj[] = [
      { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: 'JVBERi0xLjQK' } },
      { type: 'image', source: { type: 'url', url: 'https://example.com/a.png' } },
      { type: 'image', source: { type: 'file', file_id: 'file_011' } },
    ];
    for (const block of seen) expect(estimate(block).wholeContext, JSON.stringify(block)).toBeFalsy();
  });

  it("allows each of Anthropic's own tools the definition the API adds for it, by family, and any other typed tool the dearest", () => {
    const extra = (tool: Obj) => parseMessages({ model: 'm', max_tokens: 1, tools: [tool], messages: [{ role: 'user', content: 'Hi' }] }).estimate.extraTokens;
    // The reply, one turn and the tool-use system prompt: all a custom tool adds beyond its own text.
    const base = 3 + 3 + 804;
    expect(extra(WEATHER_TOOL)).toBe(base);
    expect(extra({ ...WEATHER_TOOL, type: 'custom' })).toBe(base);
    const cases: Array<[Obj, number]> = [
      [{ type: 'bash_20250124', name: 'bash' }, 325],
      [{ type: 'bash_20270101', name: 'bash' }, 325],
      [{ type: 'text_editor_20250728', name: 'str_replace_based_edit_tool' }, 700],
      [{ type: 'text_editor_20241022', name: 'str_replace_editor' }, 700],
      [{ type: 'computer_20251124', name: 'computer', display_width_px: 1024, display_height_px: 768 }, 499 + 735],
      [{ type: 'computer_20270101', name: 'computer', display_width_px: 1024, display_height_px: 768 }, 499 + 735],
      [{ type: 'memory_20250818', name: 'memory' }, 499 + 735],
      [{ type: 'web_search_20250305', name: 'web_search' }, 499 + 735],
      [{ type: 'hologram_20270101', name: 'hologram' }, 499 + 735],
    ];
    for (const [tool, tokens] of cases) expect(extra(tool), String(tool.type)).toBe(base + tokens);
  });

  it('counts thinking signatures and redacted thinking, which go back to the upstream as input', () => {
    const signature = 'EqQBCkgIARABGAIiQL'.repeat(20);
    const data = 'EmwKAhgBEgy3va3pzix'.repeat(20);
    const { estimate } = parseMessages({
      model: 'm', max_tokens: 1,
      messages: [
        { role: 'user', content: 'Think.' },
        { role: 'assistant', content: [{ type: 'thinking', thinking: 'a thought', signature }, { type: 'redacted_thinking', data }] },
      ],
    });
    expect(estimate.text).toEqual(['Think.', 'a thought', signature, data]);
  });

  it('refuses a body without max_tokens, naming the field', () => {
    const err = refusal(() => parseMessages({ model: 'claude-test', messages: [{ role: 'user', content: 'hi' }] }));
    expect(err.status).toBe(400);
    expect(err.code).toBe('invalid_request');
    expect(err.message).toContain("'max_tokens'");
  });

  it('names the path of a malformed block', () => {
    const err = refusal(() => parseMessages({
      model: 'claude-test', max_tokens: 10,
      messages: [{ role: 'user', content: [{ type: 'text', text: 'ok' }, { type: 'image', source: { type: 'base64', media_type: 'image/png' } }] }],
    }));
    expect(err.code).toBe('invalid_request');
    expect(err.message).toContain("'messages.0.content.1.source.data'");
  });

  it('refuses a tool result inside a tool result, so nothing nests deeper than Anthropic allows', () => {
    let content: unknown = [{ type: 'text', text: 'deep' }];
    for (let i = 0; i < 3; i++) content = [{ type: 'tool_result', tool_use_id: `t${i}`, content }];
    const err = refusal(() => parseMessages({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content }] }));
    expect(err.code).toBe('invalid_request');
    expect(err.message).toBe("Invalid request body: 'messages.0.content.0.content': Invalid input");
  });

  it('takes a system turn inside messages (as Claude Code sends), counting it, and refuses a temperature above 1', () => {
    expect(parseMessages({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content: 'hi' }, { role: 'system', content: 'env' }] }).estimate.text).toEqual(['hi', 'env']);
    expect(refusal(() => parseMessages({ model: 'm', max_tokens: 1, messages: [{ role: 'tool', content: 'x' }] })).message).toContain("'messages.0.role'");
    expect(refusal(() => parseMessages({ model: 'm', max_tokens: 1, temperature: 1.5, messages: [{ role: 'user', content: 'x' }] })).message).toContain("'temperature'");
  });

  it('counts a count_tokens body, which has no max_tokens, without asking for output', () => {
    const { model, estimate } = countTokensEstimate({ model: 'claude-test', system: 'Be brief.', messages: [{ role: 'user', content: 'Hello, Claude' }] });
    expect(model).toBe('claude-test');
    expect(estimate.text).toEqual(['Be brief.', 'Hello, Claude']);
    expect(estimate.extraTokens).toBe(6);
    expect(estimate.requestedCompletionTokens).toBeUndefined();
  });
});

describe('usage', () => {
  it('counts cache reads and writes into the prompt, exactly', () => {
    const usage = messagesCodec.usageOf({
      input_tokens: 472, cache_creation_input_tokens: 1000, cache_read_input_tokens: 4000, output_tokens: 89,
      output_tokens_details: { thinking_tokens: 40 },
    });
    expect(usage).toEqual({ promptTokens: 5472, completionTokens: 89, cachedTokens: 4000, cacheWriteTokens: 1000, reasoningTokens: 40 });
  });

  it('believes no count an upstream could not mean', () => {
    expect(messagesCodec.usageOf({ input_tokens: -1, output_tokens: 3 })).toBeUndefined();
    expect(messagesCodec.usageOf({ input_tokens: 10, output_tokens: 3, cache_read_input_tokens: 1e12 })).toBeUndefined();
    expect(messagesCodec.usageOf({ input_tokens: 10, output_tokens: Number.NaN })).toBeUndefined();
    expect(messagesCodec.usageOf('lots')).toBeUndefined();
    expect(messagesCodec.usageOf({ input_tokens: 10, output_tokens: 3, cache_read_input_tokens: null })).toEqual({ promptTokens: 10, completionTokens: 3 });
  });

  it('writes the charge into a whole message in Anthropic words, input without the cached part', () => {
    const body: Obj = { type: 'message', usage: { input_tokens: 1, output_tokens: 1 } };
    billMessage(body, BILL);
    expect(body.usage).toEqual({
      input_tokens: 472, output_tokens: 89, cache_creation_input_tokens: 1000, cache_read_input_tokens: 4000,
      cost: { input_msats: 1234, output_msats: 567, total_msats: 1801 },
    });
  });
});

describe('Messages request → chat', () => {
  it('translates system, text, images, tool calls and results, tools, choice, stops and thinking', () => {
    const chat = messagesCodec.requestToChat({
      model: 'claude-test',
      max_tokens: 2048,
      stream: true,
      system: [{ type: 'text', text: 'You are terse.' }, { type: 'text', text: 'Use tools.', cache_control: { type: 'ephemeral' } }],
      tools: [WEATHER_TOOL],
      tool_choice: { type: 'any', disable_parallel_tool_use: true },
      stop_sequences: ['END'],
      temperature: 0.2,
      top_k: 5,
      metadata: { user_id: 'u-1' },
      thinking: { type: 'enabled', budget_tokens: 1024 },
      messages: [
        { role: 'user', content: [
          { type: 'text', text: 'Weather where this is?' },
          { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
          { type: 'image', source: { type: 'url', url: 'https://example.com/paris.jpg' } },
        ] },
        { role: 'assistant', content: [
          { type: 'thinking', thinking: 'It is Paris.', signature: 'sig' },
          { type: 'text', text: 'Checking.' },
          { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { location: 'Paris' } },
          { type: 'tool_use', id: 'toolu_2', name: 'get_weather', input: { location: 'Lyon' } },
        ] },
        { role: 'user', content: [
          { type: 'tool_result', tool_use_id: 'toolu_1', content: '18°C' },
          { type: 'tool_result', tool_use_id: 'toolu_2', content: [{ type: 'text', text: 'station offline' }], is_error: true },
          { type: 'text', text: 'And tomorrow?' },
        ] },
      ],
    });
    expect(chat).toEqual({
      model: 'claude-test',
      max_tokens: 2048,
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0.2,
      top_k: 5,
      stop: ['END'],
      user: 'u-1',
      reasoning_effort: 'low',
      tools: [{ type: 'function', function: { name: 'get_weather', description: WEATHER_TOOL.description, parameters: WEATHER_TOOL.input_schema } }],
      tool_choice: 'required',
      parallel_tool_calls: false,
      messages: [
        { role: 'system', content: [{ type: 'text', text: 'You are terse.' }, { type: 'text', text: 'Use tools.' }] },
        { role: 'user', content: [
          { type: 'text', text: 'Weather where this is?' },
          { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}` } },
          { type: 'image_url', image_url: { url: 'https://example.com/paris.jpg' } },
        ] },
        {
          role: 'assistant', content: 'Checking.', reasoning_content: 'It is Paris.',
          tool_calls: [
            { id: 'toolu_1', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } },
            { id: 'toolu_2', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Lyon"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'toolu_1', content: '18°C' },
        { role: 'tool', tool_call_id: 'toolu_2', content: [{ type: 'text', text: 'Error:' }, { type: 'text', text: 'station offline' }] },
        { role: 'user', content: 'And tomorrow?' },
      ],
    });
  });

  it('sends a PDF as a chat file part, its context as text beside it', () => {
    const chat = messagesCodec.requestToChat({
      model: 'm', max_tokens: 10,
      messages: [{ role: 'user', content: [
        { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: 'JVBERi0=' } },
        { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: 'JVBERi0=' }, title: 'q3.pdf', context: 'Third quarter report' },
      ] }],
    });
    expect((chat.messages as Obj[])[0]).toEqual({ role: 'user', content: [
      { type: 'file', file: { filename: 'document.pdf', file_data: 'data:application/pdf;base64,JVBERi0=' } },
      { type: 'text', text: 'Third quarter report' },
      { type: 'file', file: { filename: 'q3.pdf', file_data: 'data:application/pdf;base64,JVBERi0=' } },
    ] });
  });

  it('refuses what chat cannot express, each with its code', () => {
    const base = { model: 'm', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] };
    const webSearch = refusal(() => messagesCodec.requestToChat({ ...base, tools: [{ type: 'web_search_20250305', name: 'web_search', max_uses: 5 }] }));
    expect([webSearch.status, webSearch.code]).toEqual([400, 'unsupported_tool']);
    expect(webSearch.message).toContain('web_search_20250305');
    expect(refusal(() => messagesCodec.requestToChat({ ...base, container: 'c-1' })).code).toBe('untranslatable_field');
    expect(refusal(() => messagesCodec.requestToChat({ ...base, mcp_servers: [{ type: 'url', url: 'https://x', name: 'x' }] })).code).toBe('untranslatable_field');
    const imageResult = refusal(() => messagesCodec.requestToChat({
      ...base,
      messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 't', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } }] }] }],
    }));
    expect(imageResult.code).toBe('untranslatable_content');
    expect(imageResult.message).toContain("'messages.0'.content.0.content.0");
    const urlPdf = refusal(() => messagesCodec.requestToChat({
      ...base, messages: [{ role: 'user', content: [{ type: 'document', source: { type: 'url', url: 'https://x/a.pdf' } }] }],
    }));
    expect(urlPdf.code).toBe('untranslatable_content');
  });
});

describe('chat request → Messages', () => {
  const chat = {
    model: 'claude-test',
    max_completion_tokens: 300,
    stream: true,
    stream_options: { include_usage: true },
    stop: 'END',
    temperature: 0.5,
    user: 'u-7',
    reasoning_effort: 'medium',
    tools: [{ type: 'function', function: { name: 'get_weather', description: WEATHER_TOOL.description, parameters: WEATHER_TOOL.input_schema } }],
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    parallel_tool_calls: false,
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: [
        { type: 'text', text: 'Weather here?' },
        { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}`, detail: 'low' } },
        { type: 'image_url', image_url: { url: 'https://example.com/paris.jpg' } },
      ] },
      { role: 'assistant', content: null, tool_calls: [
        { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } },
        { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Lyon"}' } },
      ] },
      { role: 'tool', tool_call_id: 'call_1', content: '18°C' },
      { role: 'tool', tool_call_id: 'call_2', content: '21°C' },
      { role: 'user', content: 'Thanks.' },
    ],
  };

  it('hoists system, folds consecutive tool results and the next user text into one turn', () => {
    expect(messagesCodec.requestFromChat(chat)).toEqual({
      model: 'claude-test',
      max_tokens: 300,
      stream: true,
      system: 'You are terse.',
      stop_sequences: ['END'],
      temperature: 0.5,
      metadata: { user_id: 'u-7' },
      thinking: { type: 'enabled', budget_tokens: 4096 },
      tools: [WEATHER_TOOL],
      tool_choice: { type: 'tool', name: 'get_weather', disable_parallel_tool_use: true },
      messages: [
        { role: 'user', content: [
          { type: 'text', text: 'Weather here?' },
          { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
          { type: 'image', source: { type: 'url', url: 'https://example.com/paris.jpg' } },
        ] },
        { role: 'assistant', content: [
          { type: 'tool_use', id: 'call_1', name: 'get_weather', input: { location: 'Paris' } },
          { type: 'tool_use', id: 'call_2', name: 'get_weather', input: { location: 'Lyon' } },
        ] },
        { role: 'user', content: [
          { type: 'tool_result', tool_use_id: 'call_1', content: '18°C' },
          { type: 'tool_result', tool_use_id: 'call_2', content: '21°C' },
          { type: 'text', text: 'Thanks.' },
        ] },
      ],
    });
  });

  it('round-trips a tools conversation: Messages → chat → Messages is the same request', () => {
    const messages = messagesCodec.requestFromChat(chat);
    expect(messagesCodec.requestFromChat(messagesCodec.requestToChat(messages))).toEqual({ ...messages, thinking: { type: 'enabled', budget_tokens: 4096 } });
  });

  it('refuses what an Anthropic model cannot do, each with its code', () => {
    const base = { model: 'm', messages: [{ role: 'user', content: 'hi' }] };
    const cases: Array<[Obj, string]> = [
      [{ ...base, n: 2 }, 'untranslatable_field'],
      [{ ...base, logprobs: true }, 'untranslatable_field'],
      [{ ...base, top_logprobs: 3 }, 'untranslatable_field'],
      [{ ...base, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {} } } }, 'untranslatable_field'],
      [{ ...base, modalities: ['text', 'audio'], audio: { voice: 'alloy', format: 'mp3' } }, 'untranslatable_field'],
      [{ ...base, presence_penalty: 0.5 }, 'untranslatable_field'],
      [{ ...base, temperature: 1.7 }, 'untranslatable_field'],
      [{ ...base, messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } }] }] }, 'untranslatable_content'],
      [{ ...base, messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{"a":' } }] }] }, 'invalid_tool_arguments'],
      [{ ...base, messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '[1]' } }] }] }, 'invalid_tool_arguments'],
      [{ ...base, tools: [{ type: 'custom', custom: { name: 'grammar' } }] }, 'unsupported_tool'],
    ];
    for (const [body, code] of cases) {
      const err = refusal(() => messagesCodec.requestFromChat(body));
      expect([err.status, err.code], JSON.stringify(body)).toEqual([400, code]);
    }
    // Empty turns are left out: Anthropic refuses empty text blocks and empty assistant turns.
    expect(messagesCodec.requestFromChat({ model: 'm', messages: [{ role: 'user', content: '' }, { role: 'assistant', content: '' }, { role: 'user', content: 'hi' }] }).messages)
      .toEqual([{ role: 'user', content: [{ type: 'text', text: 'hi' }] }]);
    expect(messagesCodec.requestFromChat({ ...base, reasoning_effort: 'xhigh' }).thinking).toEqual({ type: 'enabled', budget_tokens: 32768 });
    expect(messagesCodec.requestFromChat({ ...base, reasoning_effort: 'minimal' }).thinking).toBeUndefined();
    // A zero penalty, as many chat clients send by default, asks for nothing.
    expect(messagesCodec.requestFromChat({ ...base, presence_penalty: 0, frequency_penalty: 0, n: 1 })).toEqual({
      model: 'm', messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }],
    });
  });
});

describe('limit', () => {
  it('holds max_tokens and keeps a thinking budget below it', () => {
    const body: Obj = { max_tokens: 64000, thinking: { type: 'enabled', budget_tokens: 10000 } };
    limitMessages(body, 4096);
    expect(body).toEqual({ max_tokens: 4096, thinking: { type: 'enabled', budget_tokens: 4095 } });
    limitMessages(body, 800);
    expect(body).toEqual({ max_tokens: 800, thinking: { type: 'disabled' } });
    const plain: Obj = { max_tokens: 10 };
    messagesCodec.limit(plain, 5);
    expect(plain).toEqual({ max_tokens: 5 });
  });
});

describe('whole answers', () => {
  const message = {
    id: 'msg_01XFDUDYJgAACzvnptvVoYEL',
    type: 'message',
    role: 'assistant',
    model: 'claude-sonnet-4-5',
    content: [
      { type: 'thinking', thinking: 'Paris, then.', signature: 'EqQBCgIYAhIM' },
      { type: 'text', text: 'Let me check.', citations: null },
      { type: 'tool_use', id: 'toolu_01A09q90qw90lq917835lq9', name: 'get_weather', input: { location: 'Paris' } },
    ],
    stop_reason: 'tool_use',
    stop_sequence: null,
    usage: { input_tokens: 472, cache_creation_input_tokens: 1000, cache_read_input_tokens: 4000, output_tokens: 89, service_tier: 'standard' },
  };

  it('turns a message into a chat completion with cached and cache-written tokens', () => {
    const chat = messagesCodec.responseToChat(message);
    expect(chat).toMatchObject({
      id: message.id,
      object: 'chat.completion',
      model: 'claude-sonnet-4-5',
      choices: [{
        index: 0,
        finish_reason: 'tool_calls',
        message: {
          role: 'assistant', content: 'Let me check.', reasoning_content: 'Paris, then.',
          tool_calls: [{ id: 'toolu_01A09q90qw90lq917835lq9', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } }],
        },
      }],
      usage: { prompt_tokens: 5472, completion_tokens: 89, total_tokens: 5561, prompt_tokens_details: { cached_tokens: 4000 }, cache_creation_input_tokens: 1000 },
    });
  });

  it('turns it back into the same message', () => {
    expect(messagesGenerated(message)).toBe('Paris, then.Let me check.get_weather{"location":"Paris"}');
    const back = messagesCodec.responseFromChat(messagesCodec.responseToChat(message));
    expect(back).toEqual({
      ...message,
      content: [{ ...message.content[0], signature: '' }, message.content[1], message.content[2]],
      usage: { input_tokens: 472, cache_creation_input_tokens: 1000, cache_read_input_tokens: 4000, output_tokens: 89 },
    });
  });

  it('maps every stop reason', () => {
    const cases: Array<[string, string]> = [['end_turn', 'stop'], ['stop_sequence', 'stop'], ['max_tokens', 'length'], ['tool_use', 'tool_calls'], ['refusal', 'content_filter']];
    for (const [stop, finish] of cases) {
      const chat = messagesCodec.responseToChat({ ...message, stop_reason: stop });
      expect((chat.choices as Obj[])[0]!.finish_reason).toBe(finish);
    }
    for (const [finish, stop] of [['stop', 'end_turn'], ['length', 'max_tokens'], ['tool_calls', 'tool_use'], ['content_filter', 'refusal']]) {
      const msg = messagesCodec.responseFromChat({ id: 'chatcmpl-1', model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'x' }, finish_reason: finish }] });
      expect(msg.stop_reason).toBe(stop);
      expect(msg.id).toBe('msg_chatcmpl-1');
    }
  });

  it('reads a chat answer whose content came as parts, and OpenRouter\'s reasoning', () => {
    const msg = messagesCodec.responseFromChat({ id: 'c', model: 'm', choices: [{ index: 0, message: { role: 'assistant', reasoning: 'Greet.', content: [{ type: 'text', text: 'Hello ' }, { type: 'text', text: 'there' }] }, finish_reason: 'stop' }] });
    expect(msg.content).toEqual([{ type: 'thinking', thinking: 'Greet.', signature: '' }, { type: 'text', text: 'Hello there', citations: null }]);
  });

  it('answers 502 for a tool call whose arguments the model broke', () => {
    const err = refusal(() => messagesCodec.responseFromChat({
      id: 'c', model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: null, tool_calls: [{ id: 't', type: 'function', function: { name: 'f', arguments: '{"a":' } }] }, finish_reason: 'tool_calls' }],
    }));
    expect([err.status, err.code]).toEqual([502, 'upstream_invalid_tool_call']);
  });
});

describe('stream decoder (Anthropic events → chat chunks)', () => {
  it('decodes the documented tool-use stream event by event, usage from message_start and message_delta', () => {
    const decoder = messagesCodec.decoder();
    const out = events(TOOL_STREAM).map((ev) => decoder.push(ev).map((c) => ({ choices: c.choices, usage: c.usage })));
    const one = (delta: Obj, finish: string | null = null) => [{ choices: [{ index: 0, delta, finish_reason: finish }], usage: undefined }];
    expect(out).toEqual([
      one({ role: 'assistant', content: '' }),
      [],
      [],
      one({ content: 'Okay' }),
      one({ content: ", let's check the weather." }),
      [],
      one({ tool_calls: [{ index: 0, id: 'toolu_01T1x1fJ34qAmk2tNTrN7Up6', type: 'function', function: { name: 'get_weather', arguments: '' } }] }),
      one({ tool_calls: [{ index: 0, function: { arguments: '' } }] }),
      one({ tool_calls: [{ index: 0, function: { arguments: '{"location": "San Fra' } }] }),
      one({ tool_calls: [{ index: 0, function: { arguments: 'ncisco, CA"}' } }] }),
      [],
      [
        ...one({}, 'tool_calls'),
        { choices: [], usage: { prompt_tokens: 5472, completion_tokens: 89, total_tokens: 5561, prompt_tokens_details: { cached_tokens: 4000 }, cache_creation_input_tokens: 1000 } },
      ],
      [],
    ]);
  });

  it('decodes thinking and turns an error event into a 502', () => {
    const decoder = messagesCodec.decoder();
    decoder.push({ name: 'message_start', data: '{"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":5,"output_tokens":1}}}' });
    decoder.push({ name: 'content_block_start', data: '{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}' });
    expect(decoder.push({ name: 'content_block_delta', data: '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"I need to find the GCD..."}}' })[0]!.choices)
      .toEqual([{ index: 0, delta: { reasoning_content: 'I need to find the GCD...' }, finish_reason: null }]);
    expect(decoder.push({ name: 'content_block_delta', data: '{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA"}}' })).toEqual([]);
    const err = refusal(() => decoder.push({ name: 'error', data: '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}' }));
    expect([err.status, err.code, err.message]).toEqual([502, 'upstream_error', 'Upstream error: Overloaded']);
  });
});

/** OpenAI's chat chunks for a text answer followed by one tool call, then the usage chunk. */
function chatChunks(): Obj[] {
  const base = { id: 'chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT', object: 'chat.completion.chunk', created: 1741569952, model: 'gpt-4o-2024-08-06', system_fingerprint: 'fp_f9f4fb6dbf' };
  const c = (delta: Obj, finish: string | null = null) => ({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] });
  return [
    c({ role: 'assistant', content: '', refusal: null }),
    c({ content: 'Let me ' }),
    c({ content: 'check.' }),
    c({ tool_calls: [{ index: 0, id: 'call_DdmO9pD3xa9XTPNJ32zg2hcA', type: 'function', function: { name: 'get_weather', arguments: '' } }] }),
    c({ tool_calls: [{ index: 0, function: { arguments: '{"lo' } }] }),
    c({ tool_calls: [{ index: 0, function: { arguments: 'cation":"Paris"}' } }] }),
    c({}, 'tool_calls'),
    { ...base, choices: [], usage: { prompt_tokens: 5472, completion_tokens: 89, total_tokens: 5561, prompt_tokens_details: { cached_tokens: 4000, audio_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0 } } },
  ];
}

describe('stream encoder (chat chunks → Anthropic events)', () => {
  it('writes the real event sequence, and the bill with cost and change in the last message_delta', () => {
    const encoder = messagesCodec.encoder();
    const text = chatChunks().map((c) => encoder.push(c)).join('') + encoder.close(BILL);
    const evs = events(text);
    expect(evs.map((e) => e.name)).toEqual([
      'message_start',
      'content_block_start', 'content_block_delta', 'content_block_delta', 'content_block_stop',
      'content_block_start', 'content_block_delta', 'content_block_delta', 'content_block_stop',
      'message_delta', 'message_stop',
    ]);
    for (const e of evs) expect(JSON.parse(e.data).type).toBe(e.name);
    expect(JSON.parse(evs[0]!.data).message).toMatchObject({ id: 'msg_chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT', type: 'message', role: 'assistant', model: 'gpt-4o-2024-08-06', content: [] });
    expect(JSON.parse(evs[5]!.data)).toEqual({ type: 'content_block_start', index: 1, content_block: { type: 'tool_use', id: 'call_DdmO9pD3xa9XTPNJ32zg2hcA', name: 'get_weather', input: {} } });
    expect(JSON.parse(evs[9]!.data)).toEqual({
      type: 'message_delta',
      delta: { stop_reason: 'tool_use', stop_sequence: null },
      usage: {
        input_tokens: 472, output_tokens: 89, cache_creation_input_tokens: 1000, cache_read_input_tokens: 4000,
        cost: { input_msats: 1234, output_msats: 567, total_msats: 1801 },
      },
      x_cashu: BILL.change,
    });
  });

  it('is read by the official SDK into the final message, content and usage matching', async () => {
    const encoder = messagesCodec.encoder();
    const text = chatChunks().map((c) => encoder.push(c)).join('') + encoder.close(BILL);
    const stream = sdkOver(text).messages.stream({ model: 'claude-test', max_tokens: 100, messages: [{ role: 'user', content: 'Weather in Paris?' }] });
    const deltas: Obj[] = [];
    stream.on('streamEvent', (ev) => {
      if (ev.type === 'message_delta') deltas.push(ev as unknown as Obj);
    });
    const final = await stream.finalMessage();
    expect(final.content).toEqual([
      { type: 'text', text: 'Let me check.', citations: null },
      { type: 'tool_use', id: 'call_DdmO9pD3xa9XTPNJ32zg2hcA', name: 'get_weather', input: { location: 'Paris' } },
    ]);
    expect(final.stop_reason).toBe('tool_use');
    expect(final.usage).toMatchObject({ input_tokens: 472, output_tokens: 89, cache_creation_input_tokens: 1000, cache_read_input_tokens: 4000 });
    expect(deltas).toHaveLength(1);
    expect((deltas[0]!.usage as Obj).cost).toEqual({ input_msats: 1234, output_msats: 567, total_msats: 1801 });
    expect(deltas[0]!.x_cashu).toBe(BILL.change);
  });

  it('encodes reasoning as a thinking block the SDK reads', async () => {
    const encoder = messagesCodec.encoder();
    const base = { id: 'chatcmpl-r', object: 'chat.completion.chunk', created: 1, model: 'deepseek-reasoner' };
    const c = (delta: Obj, finish: string | null = null) => ({ ...base, choices: [{ index: 0, delta, finish_reason: finish }] });
    const text = [c({ role: 'assistant', content: '' }), c({ reasoning_content: 'Two and ' }), c({ reasoning: 'two.' }), c({ content: 'Four.' }), c({}, 'stop')]
      .map((ch) => encoder.push(ch)).join('') + encoder.close({ ...BILL, change: undefined, usage: { promptTokens: 10, completionTokens: 7, reasoningTokens: 5 } });
    const final = await sdkOver(text).messages.stream({ model: 'm', max_tokens: 100, messages: [{ role: 'user', content: '2+2?' }] }).finalMessage();
    expect(final.content).toEqual([{ type: 'thinking', thinking: 'Two and two.', signature: '' }, { type: 'text', text: 'Four.', citations: null }]);
    expect(final.stop_reason).toBe('end_turn');
    expect(final.usage).toMatchObject({ input_tokens: 10, output_tokens: 7, output_tokens_details: { thinking_tokens: 5 } });
    expect(text).not.toContain('x_cashu');
  });

  it('still opens and closes a message when the upstream sent nothing', async () => {
    const text = messagesCodec.encoder().close({ ...BILL, usage: { promptTokens: 12, completionTokens: 0 } });
    const final = await sdkOver(text).messages.stream({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content: 'x' }] }).finalMessage();
    expect(final.id).toBe('msg_r-42');
    expect(final.content).toEqual([]);
    expect(final.usage.input_tokens).toBe(12);
  });

  it('writes a failure as an error event the SDK raises with its type', async () => {
    const encoder = messagesCodec.encoder();
    const text = encoder.push(chatChunks()[0]!) + encoder.fail(httpError(new EngineError('upstream_error', 'Upstream error: boom')));
    const err = await sdkOver(text).messages.stream({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content: 'x' }] }).finalMessage().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect((err as InstanceType<typeof Anthropic.APIError>).error).toEqual({ type: 'error', error: { type: 'api_error', message: 'Upstream error: boom', code: 'upstream_error' } });
  });

  it('decoded then encoded, the documented stream reaches the SDK as the same message', async () => {
    const decoder = messagesCodec.decoder();
    const encoder = messagesCodec.encoder();
    let text = '';
    for (const ev of events(TOOL_STREAM)) for (const chunk of decoder.push(ev)) text += encoder.push(chunk);
    text += encoder.close(BILL);
    const final = await sdkOver(text).messages.stream({ model: 'm', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] }).finalMessage();
    expect(final.id).toBe('msg_014p7gG3wDgGV9EUtLvnow3U');
    expect(final.content).toEqual([
      { type: 'text', text: "Okay, let's check the weather.", citations: null },
      { type: 'tool_use', id: 'toolu_01T1x1fJ34qAmk2tNTrN7Up6', name: 'get_weather', input: { location: 'San Francisco, CA' } },
    ]);
    expect(final.stop_reason).toBe('tool_use');
  });
});

describe('native relay (Messages client, Anthropic upstream)', () => {
  it('passes events through, meters them, and writes the bill in place of the upstream usage', async () => {
    const relay = messagesRelay();
    let text = '';
    const withheld: string[] = [];
    for (const ev of events(TOOL_STREAM)) {
      const out = relay.push(ev);
      if (!out) withheld.push(ev.name!);
      text += out;
    }
    expect(withheld).toEqual(['message_delta', 'message_stop']);
    expect(relay.metered.usage).toEqual({ promptTokens: 5472, completionTokens: 89, cachedTokens: 4000, cacheWriteTokens: 1000 });
    expect(relay.metered.generated).toBe('Okay, let\'s check the weather.get_weather{"location": "San Francisco, CA"}');
    text += relay.close(BILL);
    const stream = sdkOver(text).messages.stream({ model: 'm', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] });
    let cost: unknown;
    stream.on('streamEvent', (ev) => {
      if (ev.type === 'message_delta') cost = (ev.usage as unknown as Obj).cost;
    });
    const final = await stream.finalMessage();
    expect(final.stop_reason).toBe('tool_use');
    expect(final.usage).toMatchObject({ input_tokens: 472, output_tokens: 89, cache_read_input_tokens: 4000, cache_creation_input_tokens: 1000 });
    expect(cost).toEqual({ input_msats: 1234, output_msats: 567, total_msats: 1801 });
  });

  it('lets no upstream write the charge or the change: its own message_delta is replaced by ours', () => {
    const relay = messagesRelay();
    relay.push({ name: 'message_start', data: '{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"usage":{"input_tokens":9,"output_tokens":1}}}' });
    expect(relay.push({ name: 'message_delta', data: '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3,"cost":{"total_msats":0}},"x_cashu":"cashuBforged"}' })).toBe('');
    const closing = events(relay.close({ ...BILL, change: undefined, usage: { promptTokens: 9, completionTokens: 3 } }));
    const delta = JSON.parse(closing[0]!.data) as Obj;
    expect(delta.x_cashu).toBeUndefined();
    expect(delta.usage).toEqual({ input_tokens: 9, output_tokens: 3, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, cost: { input_msats: 1234, output_msats: 567, total_msats: 1801 } });
    expect(delta.delta).toEqual({ stop_reason: 'end_turn', stop_sequence: null });
  });

  it('turns an upstream error event into a 502 for the engine to fail with', () => {
    const relay = messagesRelay();
    const err = refusal(() => relay.push({ name: 'error', data: '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}' }));
    expect([err.status, err.code]).toEqual([502, 'upstream_error']);
    expect(JSON.parse(events(relay.fail(err))[0]!.data)).toEqual({ type: 'error', error: { type: 'api_error', message: 'Upstream error: Overloaded', code: 'upstream_error' } });
  });
});

describe('errorBody', () => {
  it('writes Anthropic error types with our stable code', () => {
    const cases: Array<[number, string]> = [
      [400, 'invalid_request_error'], [401, 'authentication_error'], [402, 'billing_error'], [403, 'permission_error'],
      [404, 'not_found_error'], [413, 'request_too_large'], [429, 'rate_limit_error'], [500, 'api_error'], [502, 'api_error'],
      [504, 'timeout_error'], [529, 'overloaded_error'],
    ];
    for (const [status, type] of cases) {
      expect(errorBody(new HttpError(status, 'some_code', 'Something.'))).toEqual({ type: 'error', error: { type, message: 'Something.', code: 'some_code' } });
    }
    expect(errorBody(httpError(new EngineError('payment_required', 'Pay.', { extra: { refund: 'cashuB…' } })))).toEqual({
      type: 'error', error: { type: 'billing_error', message: 'Pay.', code: 'payment_required', refund: 'cashuB…' },
    });
  });
});
