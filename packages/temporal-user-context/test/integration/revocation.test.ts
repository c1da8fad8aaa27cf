// The revocation hook: a revoked token is refused (named, audited, not retried); a hook that fails
// is not a verdict, so the activity stays retryable.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, runAsUser } from 'temporal-user-context';
import { alice, bob, carol, failureTypeOf } from '../../../../test-support/harness.js';
import { useFixtureHarness } from '../fixtures/harness.js';

const h = useFixtureHarness({
  plugin: {
    isRevoked: ({ context }) => {
      if (context.userId === 'carol') throw new Error('revocation store unavailable');
      return context.userId === 'bob';
    },
  },
});

const run = (user: typeof alice, workflowId: string) =>
  runAsUser(user, () => h.client.workflow.execute('viaActivity', { taskQueue: h.taskQueue, workflowId }));

describe('revocation hook', () => {
  it('a revoked context is refused once, with USER_CONTEXT_REVOKED', async () => {
    const workflowId = `rev-${randomUUID()}`;
    expect(await failureTypeOf(run(bob, workflowId))).toBe(ErrorCodes.REVOKED);
    const denials = h.audit.events.filter(
      (e) => e.workflowId === workflowId && e.reason === ErrorCodes.REVOKED,
    );
    expect(denials.map((e) => e.attempt)).toEqual([1]);
  });

  it('a failing hook is not a verdict: audited as ERROR and retried', async () => {
    const workflowId = `rev-${randomUUID()}`;
    expect(await failureTypeOf(run(carol, workflowId))).toBe('Error');
    const errors = h.audit.events.filter((e) => e.workflowId === workflowId && e.reason === 'ERROR');
    expect(errors.map((e) => e.attempt)).toEqual([1, 2]); // the fixtures allow two attempts
  });

  it('others are unaffected', async () => {
    expect(await run(alice, `rev-${randomUUID()}`)).toEqual(alice);
  });
});
