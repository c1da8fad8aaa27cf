import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  UserContextPlugin,
  generateKeySet,
  isUserContextError,
} from 'temporal-user-context';
import { actorWindowSeconds, searchAttributeMirror, taskQueue } from '../../src/config.js';

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

describe('actorWindowSeconds', () => {
  const edge = KeyRing.fromJSON(generateKeySet('config').edge);
  const plugin = (env: NodeJS.ProcessEnv) =>
    new UserContextPlugin({ keys: edge, audit: [], actorWindowSeconds: actorWindowSeconds(env) });

  it('takes AGENT_PLATFORM_ACTOR_WINDOW_SECONDS; unset or empty leaves the library default', () => {
    expect(actorWindowSeconds({ AGENT_PLATFORM_ACTOR_WINDOW_SECONDS: '900' })).toBe(900);
    expect(actorWindowSeconds({})).toBeUndefined();
    expect(actorWindowSeconds({ AGENT_PLATFORM_ACTOR_WINDOW_SECONDS: '' })).toBeUndefined();
    expect(() => plugin({ AGENT_PLATFORM_ACTOR_WINDOW_SECONDS: '900' })).not.toThrow();
  });

  it('refuses what is not a whole number of seconds, naming the variable', () => {
    for (const value of ['15m', '-1', '1.5', '1e3', '0x12c', ' 900 '])
      expect(() => actorWindowSeconds({ AGENT_PLATFORM_ACTOR_WINDOW_SECONDS: value })).toThrow(
        /AGENT_PLATFORM_ACTOR_WINDOW_SECONDS must be a whole number/,
      );
  });

  it('lets the plugin refuse a number out of bounds, instead of reading it as the default', () => {
    for (const value of ['0', '86401']) {
      let thrown: unknown;
      try {
        plugin({ AGENT_PLATFORM_ACTOR_WINDOW_SECONDS: value });
      } catch (err) {
        thrown = err;
      }
      expect(isUserContextError(thrown, ErrorCodes.MISCONFIGURED)).toBe(true);
    }
  });
});

describe('taskQueue', () => {
  it('takes AGENT_PLATFORM_TASK_QUEUE; unset or empty is agent-tasks', () => {
    expect(taskQueue({})).toBe('agent-tasks');
    expect(taskQueue({ AGENT_PLATFORM_TASK_QUEUE: '' })).toBe('agent-tasks');
    expect(taskQueue({ AGENT_PLATFORM_TASK_QUEUE: 'agent-tasks-staging' })).toBe('agent-tasks-staging');
  });

  it('refuses a name with spaces or control characters, or too long, naming the variable', () => {
    for (const value of ['agent tasks', 'agent\ntasks', ' x', 'x'.repeat(201)])
      expect(() => taskQueue({ AGENT_PLATFORM_TASK_QUEUE: value })).toThrow(/AGENT_PLATFORM_TASK_QUEUE/);
  });
});
