// The workflow outbound interceptor outside the sandbox (pure code): what headers an activity gets.
// The sandbox injects the host's AsyncLocalStorage; here it is set the same way before the SDK's
// workflow modules load.
import { AsyncLocalStorage } from 'node:async_hooks';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import type { ActivityInput } from '@temporalio/workflow';
import { describe, expect, it } from 'vitest';

(globalThis as { AsyncLocalStorage?: unknown }).AsyncLocalStorage = AsyncLocalStorage;
const { interceptors } = await import('../../src/workflow/interceptors.js');
const { runAsActor, workflowState } = await import('../../src/workflow/state.js');
const { ACTOR_HEADER, ORIGINATOR_HEADER, decodeHeader } = await import('../../src/header/wire.js');
const { KeyRing, generateKeySet, issueContextToken } = await import('temporal-user-context');

const edge = KeyRing.fromJSON(generateKeySet('outbound').edge);
const alice = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };
const carol = { userId: 'carol', workspaceId: 'ws-acme', roles: ['admin'] };
const lineage = { root: 'wf-1', start: 1_700_000_000_000, wf: 'wf-1' };

async function scheduled(preset: Record<string, Payload>, actor?: Parameters<typeof runAsActor>[0]) {
  const { header } = await issueContextToken(edge, alice, {
    namespace: 'default',
    use: 'start',
    workflowId: 'wf-1',
  });
  const state = workflowState();
  state.originator = { header, lineage };
  state.outgoing = undefined;
  const outbound = interceptors().outbound![0]!;
  let sent: Record<string, Payload> = {};
  const input = {
    headers: preset,
    activityType: 'whoActs',
    args: [],
    seq: 1,
    options: {},
  } as unknown as ActivityInput;
  await runAsActor(actor, () =>
    outbound.scheduleActivity!(input, async (given) => {
      sent = given.headers;
      return undefined;
    }),
  );
  return sent;
}

describe('workflow outbound: activity headers', () => {
  it("drop an actor header this plugin did not write (another interceptor's, or workflow code's)", async () => {
    const { header: foreign } = await issueContextToken(edge, carol, {
      namespace: 'default',
      use: 'actor',
      workflowId: 'wf-1',
    });
    const preset = { [ACTOR_HEADER]: defaultPayloadConverter.toPayload({ ...foreign, lin: lineage }) };
    const sent = await scheduled(preset);
    expect(Object.keys(sent)).toEqual([ORIGINATOR_HEADER]);
    expect(decodeHeader(sent, ORIGINATOR_HEADER)?.lin).toEqual(lineage);
  });

  it("inside a handler, carry the handler's actor in place of any other", async () => {
    const { header: own } = await issueContextToken(edge, carol, {
      namespace: 'default',
      use: 'actor',
      workflowId: 'wf-1',
    });
    const { header: other } = await issueContextToken(edge, alice, {
      namespace: 'default',
      use: 'actor',
      workflowId: 'wf-1',
    });
    const preset = { [ACTOR_HEADER]: defaultPayloadConverter.toPayload(other) };
    const ref = { subject: own.sub, workspace: own.ws, isOriginator: false, header: own };
    const sent = await scheduled(preset, ref);
    expect(decodeHeader(sent, ACTOR_HEADER)).toEqual({ ...own, lin: lineage });
  });
});
