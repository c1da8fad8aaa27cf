// pseudonymsOf: what an operator searches for equals what headers and mirrors show.
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  generateKeySet,
  issueContextToken,
  pseudonymsOf,
  type UserContext,
} from 'temporal-user-context';

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
