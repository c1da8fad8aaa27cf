import { AsyncLocalStorage } from '@temporalio/workflow';
import type { UserContextErrorCode } from '../context/errors.js';
import type { ContextHeader, Lineage } from '../header/wire.js';

/** What a workflow knows of its originator: the opaque header and the server-vouched lineage. */
export interface Originator {
  readonly header: ContextHeader;
  readonly lineage: Lineage;
}

/** An actor as workflow code sees it: pseudonyms only; `verifyActor()` opens the real claims. */
export interface ActorRef {
  /** Pseudonym of the actor's user id. Equal pseudonyms mean the same user. */
  readonly subject: string;
  /** Pseudonym of the actor's workspace. */
  readonly workspace: string;
  /** True when the actor is the originator (same user and workspace). */
  readonly isOriginator: boolean;
  /** The header the actor sent, forwarded opaquely to verification. */
  readonly header: ContextHeader;
}

/** Decides whether an actor may signal, update or query this workflow. Must be pure and synchronous. */
export type ActorPolicy = (input: {
  kind: 'signal' | 'update' | 'query';
  name: string;
  actor: ActorRef | undefined;
  originator: Originator | undefined;
}) => boolean;

/** Default: the actor must be present and in the originator's workspace. */
export const sameWorkspacePolicy: ActorPolicy = ({ actor, originator }) =>
  actor !== undefined && originator !== undefined && actor.workspace === originator.header.ws;

export interface WorkflowContextState {
  originator?: Originator;
  /** Why there is no originator, when the start header was missing or bad. */
  originatorError?: { code: UserContextErrorCode; reason: string };
  policy: ActorPolicy;
  /** Memoised verified originator (one local activity per run). */
  verified?: Promise<unknown>;
}

/** Actor of the signal / update / query being handled; survives awaits inside the handler. */
export const actorStorage = new AsyncLocalStorage<ActorRef>();

// Per-workflow state lives on the workflow's own global object: the SDK isolates globals per workflow
// even when it reuses V8 contexts, while module-level variables would not be.
const STATE = Symbol.for('temporal-user-context.workflow-state');

export function workflowState(): WorkflowContextState {
  const holder = globalThis as unknown as Record<symbol, WorkflowContextState | undefined>;
  let state = holder[STATE];
  if (!state) {
    state = { policy: sameWorkspacePolicy };
    holder[STATE] = state;
  }
  return state;
}
