import { describe, expect, it } from 'vitest';
import { EngineError } from '../../src/engine/errors.ts';
import type { UpstreamKind, WireFormat } from '../../src/engine/format.ts';
import { httpError } from '../../src/http/errors.ts';
import { chatFormat } from '../../src/formats/chat.ts';
import { errorBody as messagesErrorBody, messagesFormat } from '../../src/formats/messages.ts';
import { errorBody as responsesErrorBody, responsesFormat } from '../../src/formats/responses.ts';

// Every door refuses, by one rule, the parameters that make an upstream charge more than the price
// the gateway bills: whatever protocol the client speaks and whatever its upstream speaks.

type Obj = Record<string, unknown>;

const doors: Array<{ name: string; format: WireFormat; body: Obj; kinds: UpstreamKind[]; errorBody: (e: ReturnType<typeof httpError>) => Obj }> = [
  {
    name: 'chat',
    format: chatFormat,
    body: { model: 'm', messages: [{ role: 'user', content: 'Hi' }] },
    kinds: ['openai', 'openai-responses', 'anthropic'],
    errorBody: (e) => chatFormat.errorBody(e),
  },
  {
    name: 'responses',
    format: responsesFormat,
    body: { model: 'm', input: 'Hi', store: false },
    kinds: ['openai-responses', 'openai', 'anthropic'],
    errorBody: (e) => responsesErrorBody(e),
  },
  {
    name: 'messages',
    format: messagesFormat,
    body: { model: 'm', max_tokens: 10, messages: [{ role: 'user', content: 'Hi' }] },
    kinds: ['anthropic', 'openai', 'openai-responses'],
    errorBody: (e) => messagesErrorBody(e),
  },
];

function exchange(format: WireFormat, body: Obj, kind: UpstreamKind, allowed: string[] = []) {
  return format.parse(structuredClone(body)).exchange(kind, { maxCompletionTokens: 10, allowed: new Set(allowed) });
}

/** What each door's client reads: the door's own error shape, with the stable code and the field. */
function refusalOf(door: (typeof doors)[number], x: unknown): { status: number; code: unknown; param: unknown } {
  expect(x).toBeInstanceOf(EngineError);
  const http = httpError(x as EngineError);
  const err = door.errorBody(http).error as Obj;
  return { status: http.status, code: err.code, param: err.param };
}

/** Priority and scale tiers bill above the standard price (priority about twice). */
const DEARER_TIERS = ['priority', 'scale', 'some_future_tier'];

describe('parameters that raise the upstream price', () => {
  for (const door of doors) {
    for (const kind of door.kinds) {
      for (const [field, value] of [
        ['service_tier', DEARER_TIERS[0]],
        ['service_tier', DEARER_TIERS[1]],
        ['service_tier', DEARER_TIERS[2]],
        ['plugins', [{ id: 'web' }]],
        ['models', ['m', 'm-expensive']],
        ['route', 'fallback'],
      ] as const) {
        it(`${door.name} → ${kind}: refuses ${field}: ${JSON.stringify(value)} with 400 unpriced_parameter`, () => {
          expect(refusalOf(door, exchange(door.format, { ...door.body, [field]: value }, kind))).toEqual({ status: 400, code: 'unpriced_parameter', param: field });
        });
      }
    }
  }

  for (const kind of ['anthropic', 'openai'] as const) {
    const door = doors[2]!;
    for (const [field, value] of [
      // US-only inference bills 1.1x; fast mode several times the standard rates.
      ['inference_geo', 'us'],
      ['speed', 'fast'],
      ['mcp_servers', [{ type: 'url', url: 'https://x', name: 'x' }]],
      ['container', 'c-1'],
    ] as const) {
      it(`messages → ${kind}: refuses ${field}: ${JSON.stringify(value)} with 400 unpriced_parameter`, () => {
        expect(refusalOf(door, exchange(door.format, { ...door.body, [field]: value }, kind))).toEqual({ status: 400, code: 'unpriced_parameter', param: field });
      });
    }
  }

  it('lets through what the operator allows for the upstream', () => {
    const r = exchange(responsesFormat, { ...doors[1]!.body, service_tier: 'priority', plugins: [{ id: 'web' }] }, 'openai-responses', ['service_tier', 'plugins']);
    expect(r).not.toBeInstanceOf(EngineError);
    expect((r as { body: Obj }).body).toMatchObject({ service_tier: 'priority', plugins: [{ id: 'web' }] });
    const m = exchange(messagesFormat, { ...doors[2]!.body, speed: 'fast', inference_geo: 'us' }, 'anthropic', ['speed', 'inference_geo']);
    expect((m as { body: Obj }).body).toMatchObject({ speed: 'fast', inference_geo: 'us' });
  });
});

describe('values at or below the standard price pass untouched', () => {
  it.each([
    ['responses', 'openai-responses', { service_tier: 'default' }],
    ['responses', 'openai-responses', { service_tier: 'auto' }],
    // Flex processing bills half the standard price.
    ['responses', 'openai-responses', { service_tier: 'flex' }],
    ['responses', 'openai', { service_tier: 'flex' }],
    ['chat', 'openai', { service_tier: 'default' }],
    ['chat', 'openai-responses', { service_tier: 'flex' }],
    ['messages', 'anthropic', { service_tier: 'standard_only' }],
    ['messages', 'anthropic', { service_tier: 'auto' }],
    ['messages', 'anthropic', { inference_geo: 'global', speed: 'standard' }],
  ] as const)('%s → %s: %j', (name, kind, extra) => {
    const door = doors.find((d) => d.name === name)!;
    const r = exchange(door.format, { ...door.body, ...extra }, kind);
    expect(r).not.toBeInstanceOf(EngineError);
    expect((r as { body: Obj }).body).toMatchObject(extra);
  });
});
