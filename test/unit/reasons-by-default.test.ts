import { describe, expect, it } from 'vitest';
import { reasonsByDefault } from '../../src/engine/catalog.ts';

describe('reasonsByDefault', () => {
  it('knows the models that reason unasked, with or without a prefix or date, and not their chat or later variants', () => {
    const yes = ['o1', 'o3', 'o3-mini', 'o4-mini', 'o3-pro', 'openai/o3', 'o3-2025-04-16', 'gpt-5', 'gpt-5-mini', 'openai/gpt-5-nano', 'gpt-5-2025-08-07'];
    const no = ['gpt-5-chat-latest', 'gpt-5.1', 'gpt-5.1-mini', 'gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4-5', 'o3-deep-research-x', 'gpt-test', 'foo3'];
    expect(yes.filter((id) => !reasonsByDefault(id))).toEqual([]);
    expect(no.filter((id) => reasonsByDefault(id))).toEqual([]);
  });
});
