// Refusals raised outside any plugin worker, with no plugin's auditor at hand, are recorded by the
// process's default auditor (silenced for tests in test-support/quiet-default-auditor.ts; read here).
import { beforeEach, describe, expect, it, vi } from 'vitest';
import {
  ErrorCodes,
  currentActor,
  currentUserContext,
  defaultAuditor,
  isUserContextError,
  resolveUserContext,
  runAsUser,
} from 'temporal-user-context';

const emitted = () =>
  vi.mocked(defaultAuditor().emit).mock.calls.map(([e]) => [e.action, e.decision, e.reason]);
const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return undefined;
  } catch (err) {
    return isUserContextError(err) ? err.code : 'not a refusal';
  }
};

describe("the process's default auditor", () => {
  beforeEach(() => vi.mocked(defaultAuditor().emit).mockClear());

  it('records the activity API called outside any activity', () => {
    expect(codeOf(() => currentUserContext())).toBe(ErrorCodes.MISSING);
    expect(codeOf(() => currentActor())).toBe(ErrorCodes.MISSING);
    expect(codeOf(() => resolveUserContext())).toBe(ErrorCodes.MISSING);
    expect(emitted()).toEqual([
      ['activity.resolve', 'deny', ErrorCodes.MISSING],
      ['activity.resolve', 'deny', ErrorCodes.MISSING],
      ['activity.resolve', 'deny', ErrorCodes.MISSING],
    ]);
  });

  it('records an invalid context handed to runAsUser at the edge, and nothing for a valid one', () => {
    let ran = false;
    expect(
      codeOf(() =>
        runAsUser({ userId: 'alice\r\nadmin', workspaceId: 'ws', roles: [] }, () => {
          ran = true;
        }),
      ),
    ).toBe(ErrorCodes.INVALID);
    expect(ran).toBe(false);
    expect(runAsUser({ userId: 'alice', workspaceId: 'ws', roles: [] }, () => 'ok')).toBe('ok');
    expect(emitted()).toEqual([['client.scope', 'deny', ErrorCodes.INVALID]]);
    // The record quotes no part of the refused context.
    expect(JSON.stringify(vi.mocked(defaultAuditor().emit).mock.calls)).not.toContain('admin');
  });
});
