// pseudonymsOf: what an operator searches for equals what headers and mirrors show.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  generateKeySet,
  issueContextToken,
  KeyRing,
  memoryAuditSink,
  mirrorQuery,
  pseudonymKeyFromJSON,
  pseudonymsOf,
  UserContextPlugin,
  type UserContext,
} from 'temporal-user-context';
import { keysCli } from '../../../../test-support/child.js';

const keys = generateKeySet('edge');
const edge = KeyRing.fromJSON(keys.edge);
const worker = KeyRing.fromJSON(keys.worker);
const alice: UserContext = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };

describe('pseudonymsOf', () => {
  it('gives the pseudonyms an issued header shows, from the edge or the worker key file', async () => {
    const { header } = await issueContextToken(edge, alice, {
      namespace: 'default',
      use: 'start',
      workflowId: 'wf-1',
    });
    const expected = { userId: header.sub, workspaceId: header.ws };
    expect(pseudonymsOf(edge, alice)).toEqual(expected);
    expect(pseudonymsOf(worker, alice)).toEqual(expected);
  });

  it('separates users, workspaces, the two kinds and key sets', () => {
    const a = pseudonymsOf(edge, alice);
    expect(pseudonymsOf(edge, { userId: 'bob', workspaceId: 'ws-acme' }).userId).not.toBe(a.userId);
    expect(pseudonymsOf(edge, { userId: 'alice', workspaceId: 'ws-globex' }).workspaceId).not.toBe(
      a.workspaceId,
    );
    // The same string as a user and as a workspace gets two different pseudonyms.
    const same = pseudonymsOf(edge, { userId: 'x1', workspaceId: 'x1' });
    expect(same.userId).not.toBe(same.workspaceId);
    expect(pseudonymsOf(KeyRing.fromJSON(generateKeySet('other').edge), alice)).not.toEqual(a);
    expect(a.userId).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });

  it('refuses an id no context can carry', () => {
    for (const ids of [
      { userId: 'al ice', workspaceId: 'ws-acme' },
      { userId: 'alice', workspaceId: 'ws\u202eacme' },
      { userId: '', workspaceId: 'ws-acme' },
    ]) {
      expect(() => pseudonymsOf(edge, ids)).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID }));
    }
  });
});

describe('pseudonym lookup files (keys export-pseudonym / keys pseudonym)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tuc-keys-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const keys = keysCli;

  it('holds the pseudonym key and nothing else, and looks users up like the full key set', () => {
    expect(keys('generate', '--out', dir).status).toBe(0);
    const lookupFile = join(dir, 'lookup.json');
    expect(keys('export-pseudonym', '--in', join(dir, 'edge.json'), '--out', lookupFile).status).toBe(0);
    const lookup = JSON.parse(readFileSync(lookupFile, 'utf8')) as Record<string, unknown>;
    expect(Object.keys(lookup).sort()).toEqual(['issuer', 'pseudonym', 'version']);
    expect(statSync(lookupFile).mode & 0o777).toBe(0o600);
    // It is no key ring: it opens no token and signs nothing.
    expect(() => KeyRing.fromJSON(lookup as never)).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    const edgeRing = KeyRing.fromFile(join(dir, 'edge.json'));
    const expected = pseudonymsOf(edgeRing, alice);
    expect(pseudonymsOf(pseudonymKeyFromJSON(lookup), alice)).toEqual(expected);
    const printed = keys('pseudonym', '--in', lookupFile, '--user', 'alice', '--workspace', 'ws-acme');
    expect(JSON.parse(printed.stdout)).toEqual({
      ...expected,
      query: `UserId = "${expected.userId}" AND WorkspaceId = "${expected.workspaceId}"`,
    });
  });

  it('looks up a user alone or a workspace alone', () => {
    const expected = pseudonymsOf(KeyRing.fromFile(join(dir, 'edge.json')), alice);
    const user = keys('pseudonym', '--in', join(dir, 'edge.json'), '--user', 'alice');
    expect(JSON.parse(user.stdout)).toEqual({
      userId: expected.userId,
      query: `UserId = "${expected.userId}"`,
    });
    const workspace = keys('pseudonym', '--in', join(dir, 'edge.json'), '--workspace', 'ws-acme');
    expect(JSON.parse(workspace.stdout)).toEqual({
      workspaceId: expected.workspaceId,
      query: `WorkspaceId = "${expected.workspaceId}"`,
    });
    // Neither: the usage line, not a lookup of a placeholder.
    const neither = keys('pseudonym', '--in', join(dir, 'edge.json'));
    expect(neither.status).toBe(2);
    expect(neither.stdout).toBe('');
  });

  it('refuses what is neither a key set nor a lookup file, with a code and no stack trace', () => {
    for (const doc of [{}, { version: 1, issuer: 'x', pseudonym: { k: 'short' } }, { pseudonym: {} }])
      expect(() => pseudonymKeyFromJSON(doc)).toThrow(
        expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
      );
    const missing = keys(
      'pseudonym',
      '--in',
      join(dir, 'absent.json'),
      '--user',
      'alice',
      '--workspace',
      'w',
    );
    expect(missing.status).toBe(1);
    expect(missing.stderr.trim()).toMatch(/^USER_CONTEXT_MISCONFIGURED: cannot read \S+absent\.json$/);
    const invalid = keys('pseudonym', '--in', join(dir, 'edge.json'), '--user', 'al ice', '--workspace', 'w');
    expect(invalid.status).toBe(1);
    expect(invalid.stderr).toMatch(/^USER_CONTEXT_INVALID: /);
    expect(invalid.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('mirrorQuery: the list filter for what the search-attribute mirror writes', () => {
  const p = pseudonymsOf(edge, { userId: 'alice', workspaceId: 'ws-acme' });

  it('writes the values of the mode: pseudonyms (any key of the set), plain ids; off is refused', () => {
    const both = { userId: 'alice', workspaceId: 'ws-acme' };
    expect(mirrorQuery('pseudonym', worker, both)).toBe(
      `UserId = "${p.userId}" AND WorkspaceId = "${p.workspaceId}"`,
    );
    expect(mirrorQuery('pseudonym', edge, { workspaceId: 'ws-acme' })).toBe(
      `WorkspaceId = "${p.workspaceId}"`,
    );
    expect(mirrorQuery('plain', edge, { userId: 'alice' })).toBe('UserId = "alice"');
    // No filter would list everyone's work (`list({ query: undefined })`): refused, not undefined.
    expect(() => mirrorQuery('off', edge, both)).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    // null is left out, as from JavaScript callers: never looked for as a placeholder's pseudonym.
    expect(mirrorQuery('plain', edge, { userId: null as never, workspaceId: 'ws-acme' })).toBe(
      'WorkspaceId = "ws-acme"',
    );
  });

  it('refuses ids outside the format (no value can close its quotes), and no id at all', () => {
    for (const mode of ['plain', 'pseudonym', 'off'] as const) {
      for (const bad of ['a" OR UserId != "', 'a\\', 'ws\nx', ''])
        expect(() => mirrorQuery(mode, edge, { workspaceId: bad })).toThrow(
          expect.objectContaining({ code: ErrorCodes.INVALID }),
        );
      for (const none of [{}, { userId: null, workspaceId: null }])
        expect(() => mirrorQuery(mode, edge, none as never)).toThrow(
          expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
        );
    }
  });

  it("follows the plugin's search-attribute mirror: off by default", () => {
    const plugin = (searchAttributes?: 'plain' | 'pseudonym') =>
      new UserContextPlugin({
        keys: edge,
        audit: memoryAuditSink(),
        ...(searchAttributes ? { mirror: { searchAttributes } } : {}),
      });
    expect(plugin().searchAttributeMirror).toBe('off');
    expect(() => plugin().mirrorQuery({ workspaceId: 'ws-acme' })).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    expect(plugin('pseudonym').searchAttributeMirror).toBe('pseudonym');
    expect(plugin('plain').mirrorQuery({ workspaceId: 'ws-acme' })).toBe('WorkspaceId = "ws-acme"');
    expect(plugin('pseudonym').mirrorQuery({ workspaceId: 'ws-acme' })).toBe(
      `WorkspaceId = "${p.workspaceId}"`,
    );
  });
});
