// An activity cancelled while its guard verifies the context does not run its body.
import { CancelledFailure } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { parseUserContext } from 'temporal-user-context';
import { userActivityEnvironment } from 'temporal-user-context/testing';

const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['member'] });

describe('an activity cancelled during verification', () => {
  it('is reported cancelled, and its body never runs', async () => {
    // Found by review: a cancel that arrived during a slow check (here the revocation hook) let the body
    // run, side effects and all, after the attempt was cancelled.
    // The hook cancels the environment it runs in, made just below.
    const made: { env?: { cancel(): void } } = {};
    const { env } = await userActivityEnvironment({
      user: alice,
      plugin: {
        isRevoked: async () => {
          made.env!.cancel();
          return false;
        },
      },
    });
    made.env = env;
    let ran = false;
    const outcome = env.run(async () => {
      ran = true;
      return 'ran';
    });
    await expect(outcome).rejects.toBeInstanceOf(CancelledFailure);
    expect(ran).toBe(false);
  });

  it('runs when nothing cancels it (the same environment and hook)', async () => {
    const { env } = await userActivityEnvironment({ user: alice, plugin: { isRevoked: async () => false } });
    expect(await env.run(async () => 'ran')).toBe('ran');
  });
});
