import { describe, expect, it } from 'vitest';
import { reasonsByDefault } from '../../src/engine/catalog.ts';

describe('reasonsByDefault', () => {
  it('knows the models that reason unasked, with or without a prefix or date, and not their chat or later variants', () => {
    const yes = ['o1', 'o3', 'o3-mini', 'o4-mini', 'o3-pro', 'openai/o3', 'o3-2025-04-16', 'gpt-5', 'gpt-5-mini', 'openai/gpt-5-nano', 'gpt-5-2025-08-07'];
    const no = ['gpt-5-chat-latest', 'gpt-5.1', 'gpt-5.1-mini', 'gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4-5', 'o3-deep-research-x', 'gpt-test', 'foo3'];
    expect(yes.filter((id) => !reasonsByDefault(id))).toEqual([]);
    expect(no.filter((id) => reasonsByDefault(id))).toEqual([]);
  });

  it('knows the o-series with suffixes, and gpt-oss', () => {
    const yes = [
      'o1-mini', 'o1-preview', 'o1-preview-2024-09-12', 'openai/o3-mini-high', 'openai/o4-mini-high', 'o3-mini-low', 'o3-deep-research',
      'o4-mini-deep-research-2025-06-26', 'gpt-oss-120b', 'openai/gpt-oss-20b', 'gpt-oss:20b', 'openai/gpt-oss-120b:free',
    ];
    const no = ['o3-mini-x', 'o2', 'o5-mini', 'gpt-oss', 'gpt-ossify-7b', 'o4-mini-higher'];
    expect(yes.filter((id) => !reasonsByDefault(id))).toEqual([]);
    expect(no.filter((id) => reasonsByDefault(id))).toEqual([]);
  });

  it('knows the Gemini models that think by default, and not Flash-Lite or the image, audio and old models', () => {
    const yes = [
      'gemini-2.5-pro', 'gemini-2.5-flash', 'google/gemini-2.5-pro', 'models/gemini-2.5-flash', 'openrouter/google/gemini-2.5-flash',
      'gemini-2.5-pro-preview-06-05', 'gemini-2.5-flash-preview-09-2025', 'gemini-2.5-pro-exp-03-25', 'gemini-3-pro-preview',
      'gemini-3-flash-preview', 'google/gemini-3.1-pro-preview', 'gemini-flash-latest', 'gemini-pro-latest',
    ];
    const no = [
      'gemini-2.5-flash-lite', 'gemini-2.5-flash-lite-preview-06-17', 'gemini-3.1-flash-lite-preview', 'gemini-flash-lite-latest',
      'gemini-2.5-flash-image', 'gemini-2.5-flash-preview-tts', 'gemini-2.5-flash-native-audio-preview-09-2025', 'gemini-3-pro-image-preview',
      'gemini-2.0-flash', 'gemini-1.5-pro', 'gemini-pro', 'gemini-flash', 'gemini-embedding-001',
    ];
    expect(yes.filter((id) => !reasonsByDefault(id))).toEqual([]);
    expect(no.filter((id) => reasonsByDefault(id))).toEqual([]);
  });

  it('knows the Grok reasoning models, and not their non-reasoning variants or grok-3', () => {
    const yes = [
      'grok-4', 'grok-4-0709', 'grok-4-latest', 'xai/grok-4', 'x-ai/grok-4', 'grok-4-fast-reasoning', 'grok-4-1-fast-reasoning',
      'grok-4.20-reasoning', 'grok-4.20-0309-reasoning', 'grok-4.3', 'grok-3-mini', 'grok-3-mini-fast', 'grok-3-mini-beta', 'xai/grok-3-mini',
      'grok-code-fast-1', 'x-ai/grok-code-fast-1',
    ];
    const no = [
      'grok-4-fast-non-reasoning', 'grok-4-1-fast-non-reasoning', 'grok-4.20-non-reasoning', 'grok-4.20-0309-non-reasoning', 'grok-3',
      'grok-3-fast', 'grok-3-latest', 'grok-2-vision-1212', 'grok-40',
    ];
    expect(yes.filter((id) => !reasonsByDefault(id))).toEqual([]);
    expect(no.filter((id) => reasonsByDefault(id))).toEqual([]);
  });

  it('knows DeepSeek R1, QwQ and Qwen3 Thinking, in any case, and not their chat or instruct models', () => {
    const yes = [
      'deepseek-reasoner', 'deepseek-r1', 'deepseek/deepseek-r1', 'deepseek/deepseek-r1:free', 'deepseek-ai/DeepSeek-R1', 'deepseek-r1-0528',
      'deepseek-ai/DeepSeek-R1-Distill-Llama-70B', 'deepseek-r1-distill-qwen-32b', 'deepseek-r1:8b', 'qwq-32b', 'Qwen/QwQ-32B', 'qwq-plus',
      'qwen/qwq-32b:free', 'qwq:32b', 'Qwen/Qwen3-235B-A22B-Thinking-2507', 'qwen3-next-80b-a3b-thinking', 'Qwen/Qwen3-VL-235B-A22B-Thinking',
      'qwen/qwen3-30b-a3b-thinking-2507', 'Qwen/Qwen3-235B-A22B-Thinking-2507-FP8',
    ];
    const no = [
      'deepseek-chat', 'deepseek-v3', 'deepseek-ai/DeepSeek-V3.1', 'deepseek-r10', 'qwen3-235b-a22b-instruct-2507', 'Qwen/Qwen3-Coder-480B-A35B-Instruct',
      'qwen3-next-80b-a3b-non-thinking', 'qwen2.5-72b-instruct', 'qwen-max', 'qwqx',
    ];
    expect(yes.filter((id) => !reasonsByDefault(id))).toEqual([]);
    expect(no.filter((id) => reasonsByDefault(id))).toEqual([]);
  });

  it('knows the Codex models, Kimi K2 Thinking and MiniMax M1 and M2, which always reason, and not their instruct models', () => {
    const yes = [
      'gpt-5-codex', 'openai/gpt-5-codex', 'gpt-5.1-codex', 'gpt-5.1-codex-mini', 'gpt-5.1-codex-max', 'gpt-5.2-codex', 'codex-mini-latest',
      'kimi-k2-thinking', 'moonshotai/kimi-k2-thinking', 'moonshotai/Kimi-K2-Thinking', 'kimi-k2-thinking-turbo',
      'MiniMax-M2', 'minimax/minimax-m2', 'MiniMaxAI/MiniMax-M2', 'MiniMax-M2.1', 'minimax/minimax-m2:free', 'MiniMax-M1', 'minimax/minimax-m1',
    ];
    const no = [
      'gpt-5.1', 'gpt-5-codexx', 'codex', 'kimi-k2-instruct', 'moonshotai/kimi-k2-0905', 'kimi-k2-thinkingly', 'minimax-text-01', 'MiniMax-M20',
      'abab6.5s-chat',
    ];
    expect(yes.filter((id) => !reasonsByDefault(id))).toEqual([]);
    expect(no.filter((id) => reasonsByDefault(id))).toEqual([]);
  });
});
