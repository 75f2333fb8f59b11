import { EngineError, type EngineCode } from '../engine/errors.ts';

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function refuse(code: EngineCode, message: string): EngineError {
  return new EngineError(code, message);
}

/** Fields set to null mean "the default" in both protocols: they are the same as absent. */
export function given(v: unknown): boolean {
  return v !== undefined && v !== null;
}

/** Copies the fields both protocols spell the same way and mean the same thing. */
export function copyFields(from: Obj, to: Obj, names: readonly string[]): void {
  for (const k of names) if (given(from[k])) to[k] = from[k];
}

/** Parameters with one name and one meaning in chat completions and Responses. */
export const SAME_FIELDS = [
  'model',
  'stream',
  'temperature',
  'top_p',
  'parallel_tool_calls',
  'user',
  'service_tier',
  'prompt_cache_key',
  'prompt_cache_retention',
  'safety_identifier',
] as const;

/** `resp_…` from a chat id: ids stay stable across the translation and never collide with prefixes. */
export function suffixOf(id: unknown, fallback: string): string {
  const s = typeof id === 'string' ? id.replace(/^(chatcmpl|resp|msg)[-_]/, '').replace(/[^A-Za-z0-9_-]/g, '') : '';
  return s || fallback.replace(/[^A-Za-z0-9_-]/g, '') || 'gateway';
}
