import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  generateKeySet,
  isUserContextError,
  KeyRing,
  memoryAuditSink,
  UserContextPlugin,
} from 'temporal-user-context';
import {
  activityLineage,
  actorWindowSeconds,
  createDataDir,
  ensureKeyFiles,
  ensurePrivateDir,
  platformKeyRing,
  searchAttributeMirror,
  taskQueue,
} from '../../src/config.js';

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

describe('activityLineage', () => {
  it("takes AGENT_PLATFORM_ACTIVITY_LINEAGE; unset or empty is 'server'", () => {
    expect(activityLineage({})).toBe('server');
    expect(activityLineage({ AGENT_PLATFORM_ACTIVITY_LINEAGE: '' })).toBe('server');
    expect(activityLineage({ AGENT_PLATFORM_ACTIVITY_LINEAGE: 'header' })).toBe('header');
    expect(activityLineage({ AGENT_PLATFORM_ACTIVITY_LINEAGE: 'server' })).toBe('server');
  });

  it('refuses anything else, naming the variable', () => {
    for (const value of ['Server', 'none', ' server'])
      expect(() => activityLineage({ AGENT_PLATFORM_ACTIVITY_LINEAGE: value })).toThrow(
        'AGENT_PLATFORM_ACTIVITY_LINEAGE',
      );
  });
});

describe('actorWindowSeconds', () => {
  const edge = KeyRing.fromJSON(generateKeySet('config').edge);
  const plugin = (env: NodeJS.ProcessEnv) =>
    new UserContextPlugin({
      keys: edge,
      audit: memoryAuditSink(),
      actorWindowSeconds: actorWindowSeconds(env),
    });

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

describe('platformKeyRing: where the API and the worker get their keys', () => {
  const root = mkdtempSync(join(tmpdir(), 'platform-keys-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const set = generateKeySet('platform-keys');
  const dev = {}; // no USER_CONTEXT_KEYS*, not production

  it('generates a development set on a first start, then reads the same files', () => {
    const dir = join(root, 'first');
    const worker = platformKeyRing('worker', dev, dir);
    const edge = platformKeyRing('edge', dev, dir);
    expect([worker.canIssue, edge.canIssue]).toEqual([false, true]);
    expect(statSync(join(dir, 'edge.json')).mode & 0o777).toBe(0o600);
    const before = readFileSync(join(dir, 'worker.json'), 'utf8');
    platformKeyRing('worker', dev, dir);
    expect(readFileSync(join(dir, 'worker.json'), 'utf8')).toBe(before);
  });

  it('a host given only its own file keeps it: refused, nothing generated or overwritten', () => {
    const dir = join(root, 'worker-host');
    ensureKeyFiles(dir);
    rmSync(join(dir, 'edge.json'));
    const workerFile = readFileSync(join(dir, 'worker.json'), 'utf8');
    expect(() => platformKeyRing('worker', dev, dir)).toThrow(/worker\.json exists without .*edge\.json/);
    expect(readFileSync(join(dir, 'worker.json'), 'utf8')).toBe(workerFile);
    expect(existsSync(join(dir, 'edge.json'))).toBe(false);
  });

  it('takes USER_CONTEXT_KEYS when set, without touching the development files', () => {
    const dir = join(root, 'env');
    const ring = platformKeyRing('worker', { USER_CONTEXT_KEYS: JSON.stringify(set.worker) }, dir);
    expect(ring.issuer).toBe('platform-keys');
    expect(existsSync(dir)).toBe(false);
  });

  it('refuses production without the variables, a worker ring that can issue and an API ring that cannot', () => {
    const dir = join(root, 'refusals');
    expect(() => platformKeyRing('worker', { NODE_ENV: 'production' }, dir)).toThrow(/USER_CONTEXT_KEYS/);
    expect(existsSync(dir)).toBe(false);
    expect(() => platformKeyRing('worker', { USER_CONTEXT_KEYS: JSON.stringify(set.edge) }, dir)).toThrow(
      /could mint/,
    );
    // Nor a private half kept on a retired key (the old rotation kept them): the worker could sign with it.
    const retiredWithD = JSON.parse(JSON.stringify(set.worker)) as typeof set.worker;
    const other = generateKeySet('platform-keys').edge.signing[0]!;
    retiredWithD.signing.push({ ...other, status: 'verify-only' });
    expect(() => platformKeyRing('worker', { USER_CONTEXT_KEYS: JSON.stringify(retiredWithD) }, dir)).toThrow(
      /could mint/,
    );
    expect(() => platformKeyRing('edge', { USER_CONTEXT_KEYS: JSON.stringify(set.worker) }, dir)).toThrow(
      /no active private signing key/,
    );
  });

  it('a malformed key file is refused with a code, its contents never quoted', () => {
    const dir = join(root, 'malformed');
    ensureKeyFiles(dir);
    const file = join(dir, 'edge.json');
    chmodSync(file, 0o600);
    writeFileSync(file, readFileSync(file, 'utf8').replace(/"d": "([^"]+)"/, '"d": $1'));
    const secret = /"d": (\S{10})/.exec(readFileSync(file, 'utf8'))![1]!;
    let message = '';
    try {
      platformKeyRing('edge', dev, dir);
    } catch (err) {
      expect(isUserContextError(err) && err.code).toBe(ErrorCodes.MISCONFIGURED);
      message = String((err as Error).message);
    }
    expect(message).toMatch(/not JSON/);
    expect(message).not.toContain(secret);
  });
});

describe('ensurePrivateDir', () => {
  const root = mkdtempSync(join(tmpdir(), 'private-dir-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('creates the directory and its missing parents for this user only', () => {
    const dir = join(root, 'new', 'pglite');
    ensurePrivateDir(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(root, 'new')).mode & 0o777).toBe(0o700);
  });

  it("creates the data directory for this user only, and leaves an operator's existing one as it is", () => {
    const fresh = join(root, 'data-new');
    createDataDir(fresh);
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
    const shared = join(root, 'data-shared');
    ensurePrivateDir(shared);
    chmodSync(shared, 0o1777);
    createDataDir(shared);
    expect(statSync(shared).mode & 0o7777).toBe(0o1777);
  });

  it('takes group and other access away from a directory an earlier version made', () => {
    const dir = join(root, 'old');
    ensurePrivateDir(dir);
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'wal'), 'kept');
    ensurePrivateDir(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(dir, 'wal'), 'utf8')).toBe('kept');
  });
});
