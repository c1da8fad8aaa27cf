// The revocation hook: a revoked token is refused (named, audited, not retried); a hook that fails
// is not a verdict, so the activity stays retryable. It applies to actors as well as originators.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, runAsUser, type UserContext } from 'temporal-user-context';
import { alice, bob, carol, failureTypeOf } from '../../../../test-support/harness.js';
import { useFixtureHarness } from '../fixtures/harness.js';

/** In alice's workspace; the tokens issued to her are revoked one by one, by `jti`. */
const dave = { userId: 'dave', workspaceId: 'ws-acme', roles: ['member'] };

const h = useFixtureHarness({
  plugin: {
    isRevoked: ({ context, claims }) => {
      if (context.userId === 'carol') throw new Error('revocation store unavailable');
      if (revokedJti(claims.jti)) return true;
      return context.userId === 'bob';
    },
  },
});

/**
 * A revocation list by token id, as an application would keep one: here every token issued to dave
 * (the edge audits each issued token with its jti), looked up when the hook runs.
 */
function revokedJti(jti: string): boolean {
  return h.audit.events.some(
    (e) => e.tokenId === jti && e.userId === dave.userId && e.source === 'edge' && e.decision === 'allow',
  );
}

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
    // Its token verified before the hook refused it: the record names whose it was.
    expect(denials.map((e) => [e.userId, e.workspaceId, typeof e.tokenId])).toEqual([
      [bob.userId, bob.workspaceId, 'string'],
    ]);
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

  it('a revoked actor token does not pass verifyActor(): refused with USER_CONTEXT_REVOKED and audited', async () => {
    const workflowId = `rev-actor-${randomUUID()}`;
    const handle = await runAsUser(alice, () =>
      h.client.workflow.start('interactive', { taskQueue: h.taskQueue, workflowId }),
    );
    await runAsUser(dave, () => handle.signal('go', 'revoked'));
    const result = (await handle.result()) as { actorVerified?: UserContext; actorRefused?: string };
    expect(result.actorVerified).toBeUndefined();
    expect(result.actorRefused).toBe(ErrorCodes.REVOKED);
    // One record of the refusal: the guard's, not a second when the activity rethrows it.
    const actorDecisions = h.audit.events.filter(
      (e) => e.workflowId === workflowId && (e.action === 'activity.actor' || e.decision === 'deny'),
    );
    expect(actorDecisions).toEqual([
      expect.objectContaining({
        decision: 'deny',
        source: 'header',
        reason: ErrorCodes.REVOKED,
        userId: dave.userId,
        workspaceId: dave.workspaceId,
      }),
    ]);
  });

  it('an actor whose token is not revoked is still verified', async () => {
    const handle = await runAsUser(alice, () =>
      h.client.workflow.start('interactive', {
        taskQueue: h.taskQueue,
        workflowId: `rev-actor-${randomUUID()}`,
      }),
    );
    await runAsUser(alice, () => handle.signal('go', 'fine'));
    expect(await handle.result()).toMatchObject({ actorVerified: alice });
  });
});
