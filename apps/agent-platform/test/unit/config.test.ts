import { describe, expect, it } from 'vitest';
import { searchAttributeMirror } from '../../src/config.js';

describe('searchAttributeMirror', () => {
  it('takes AGENT_PLATFORM_SEARCH_ATTRIBUTES, else the fallback', () => {
    expect(searchAttributeMirror('off', {})).toBe('off');
    expect(searchAttributeMirror('pseudonym', {})).toBe('pseudonym');
    expect(searchAttributeMirror('pseudonym', { AGENT_PLATFORM_SEARCH_ATTRIBUTES: 'off' })).toBe('off');
    expect(searchAttributeMirror('off', { AGENT_PLATFORM_SEARCH_ATTRIBUTES: 'plain' })).toBe('plain');
  });

  it('reads an empty value as unset', () => {
    expect(searchAttributeMirror('pseudonym', { AGENT_PLATFORM_SEARCH_ATTRIBUTES: '' })).toBe('pseudonym');
    expect(searchAttributeMirror('off', { AGENT_PLATFORM_SEARCH_ATTRIBUTES: '' })).toBe('off');
  });

  it('refuses anything else instead of guessing', () => {
    for (const value of ['on', 'PSEUDONYM', ' off'])
      expect(() => searchAttributeMirror('off', { AGENT_PLATFORM_SEARCH_ATTRIBUTES: value })).toThrow(
        /must be pseudonym, plain or off/,
      );
  });
});
