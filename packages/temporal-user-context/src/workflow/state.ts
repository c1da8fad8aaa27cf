// Deep imports on purpose: these SDK modules are the ones its bundle entry already loads once per
// reusable V8 context, so this module can be preloaded (see `UserContextPlugin.configureBundler`) without changing
// how the SDK's public `@temporalio/workflow` entry is shared. `AsyncLocalStorage` is the host's class,
// injected into the sandbox.
import { AsyncLocalStorage } from '@temporalio/workflow/lib/cancellation-scope.js';
import type { Payload } from '@temporalio/common';
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
  /**
   * The header the actor sent, forwarded opaquely to verification. Not enumerable: a copy of the actor
   * (`JSON.stringify`, a spread) leaves out its token.
   */
  readonly header: ContextHeader;
  /**
   * The signal or update being handled (`signal:<name>` or `update:<name>`), when the actor's header
   * asks (`b`): stated to workers with the actor (`lin.hn`), which compare it with the call the actor's
   * token was issued for.
   */
  readonly call?: string;
}

/**
 * Decides whether an actor may signal, update or query this workflow. Must be pure and synchronous, and
 * answer `true` or `false`: anything else refuses (`USER_CONTEXT_POLICY_FAILED`).
 */
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
  /** The originator's verification while it runs, and once it succeeded; cleared when it rejects. */
  verified?: Promise<unknown>;
  /**
   * Settles once the last verification queued has ended (`SERIAL_VERIFICATION_PATCH`): the next starts
   * after it, so that no two of this package's local activities are ever in flight together.
   */
  verifying?: Promise<void>;
  /** The originator header with this run's lineage, encoded once for everything the run schedules. */
  outgoing?: Payload;
  /** Cancellations of other workflows asked and not answered yet: command seq → the record's detail. */
  externalCancels?: Map<number, string>;
}

// Actor of the signal / update / query being handled; survives awaits inside the handler. Not
// exported: a preloaded module's exports are frozen, and a frozen store could not enable itself.
// One store serves every workflow of a reusable context, so each value names the workflow it belongs
// to and is read back only by that workflow. That matters when a handler is stopped by the isolate
// execution timeout: its `run` never restores the previous value, which then stays on the worker
// thread's async resource and would otherwise be seen by every workflow activated after it.
interface ActorFrame {
  /** The per-workflow state object of the workflow that set the actor. */
  readonly owner: WorkflowContextState;
  readonly actor: ActorRef | undefined;
  /**
   * Until the handler settles. The store follows every continuation the handler starts, also one it
   * leaves running (a loop it did not await, a timer): that work must not go on acting as the sender
   * after the handler returned, for items other senders or workflow code give it.
   */
  open: boolean;
}
const actorStorage = new AsyncLocalStorage<ActorFrame>();

/**
 * Runs `fn` with `actor` as the current actor of this workflow, or with none: a call admitted without
 * an actor (a policy may admit one) gets a frame of its own too. Without it, the call would run in
 * whatever frame is current, and the SDK delivers buffered signals and updates synchronously inside
 * `setHandler`: a handler registered by another handler would take that handler's actor. The actor
 * ends when `fn` returns or, when it returns a promise, when that settles.
 */
export function runAsActor<T>(actor: ActorRef | undefined, fn: () => T): T {
  // No actor and no frame to shadow: nothing to do. The store then stays disabled until an actor needs
  // it (a workflow without signals, updates or queries never enables it): on Node 20 an enabled store
  // taxes every promise of the thread.
  if (actor === undefined && actorStorage.getStore() === undefined) return fn();
  const frame: ActorFrame = { owner: workflowState(), actor, open: true };
  const close = () => {
    frame.open = false;
  };
  let result: T;
  try {
    result = actorStorage.run(frame, fn);
  } catch (err) {
    close();
    throw err;
  }
  // Watched, not replaced: the caller gets the handler's own promise (a rejection stays its to handle).
  if (result instanceof Promise) result.then(close, close);
  else close();
  return result;
}

/** The actor of the handler being run by this workflow, if any. */
export function currentActor(): ActorRef | undefined {
  const frame = actorStorage.getStore();
  return frame !== undefined && frame.open && frame.owner === workflowState() ? frame.actor : undefined;
}

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
