import { describe, expect, it } from 'vitest';
import { chatReasoning } from '../../src/formats/openai.ts';

describe('a chat request asks its model to reason', () => {
  it('by reasoning_effort, any value but none: minimal still reasons', () => {
    for (const effort of ['minimal', 'low', 'medium', 'high', 'xhigh']) expect(chatReasoning({ reasoning_effort: effort }).reasons).toBe(true);
    expect(chatReasoning({ reasoning_effort: 'none' }).reasons).toBe(false);
  });

  it("by OpenRouter's reasoning, unless it turns reasoning off; excluding it from the answer only hides it", () => {
    for (const reasoning of [{}, { effort: 'low' }, { max_tokens: 2_000 }, { enabled: true }, { exclude: true }]) expect(chatReasoning({ reasoning }).reasons).toBe(true);
    for (const reasoning of [{ enabled: false }, { effort: 'none' }, null]) expect(chatReasoning({ reasoning }).reasons).toBe(false);
  });

  it("by Anthropic's thinking, unless disabled", () => {
    for (const thinking of [{ type: 'enabled', budget_tokens: 1_024 }, { type: 'adaptive' }]) expect(chatReasoning({ thinking }).reasons).toBe(true);
    for (const thinking of [{ type: 'disabled' }, null]) expect(chatReasoning({ thinking }).reasons).toBe(false);
  });

  it("by OpenRouter's include_reasoning; a request saying nothing does not ask, and a chat upstream may hide it either way", () => {
    expect(chatReasoning({ include_reasoning: true }).reasons).toBe(true);
    expect(chatReasoning({ include_reasoning: false })).toEqual({ hidesReasoning: true, reasons: false });
    expect(chatReasoning({ model: 'o3', messages: [] })).toEqual({ hidesReasoning: true, reasons: false });
  });
});
