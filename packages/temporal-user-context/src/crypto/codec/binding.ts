import type { SerializationContext } from '@temporalio/common';
import { ErrorCodes, UserContextError } from '../../context/errors.js';
import { isScheduledRunOf, scheduledRunAction } from '../../context/scheduled-run-id.js';

/**
 * What a payload is bound to. The SDK (1.24) hands codecs a {@link SerializationContext} naming the
 * namespace and the workflow that owns the payload — for activities, the workflow that scheduled them.
 * The codec binds ciphertext to exactly that pair through the AAD.
 */
export interface Binding {
  namespace: string;
  /** Absent when the SDK gave no workflow (no context, or a standalone activity). */
  workflowId: string | undefined;
}

const MAX_NAMESPACE_BYTES = 1024;
/** A surrogate code point on its own (in `u` mode a well-formed pair is one code point, not matched). */
const LONE_SURROGATE = /\p{Cs}/u;

/** The binding for the given context, falling back to the codec's namespace when there is none. */
export function bindingOf(context: SerializationContext | undefined, defaultNamespace: string): Binding {
  const namespace = context?.namespace || defaultNamespace;
  if (Buffer.byteLength(namespace, 'utf8') > MAX_NAMESPACE_BYTES) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'codec: namespace name too long');
  }
  // `||` on purpose: core reports "no workflow" for standalone activities as an empty string.
  const workflowId = context?.workflowId || undefined;
  // UTF-8 writes a lone surrogate as U+FFFD: `x\uD800` and `x\uFFFD` would share an AAD, and a payload
  // bound to one would open in the other (found by review; Temporal refuses such ids, a direct caller
  // of the codec may not).
  if (LONE_SURROGATE.test(namespace) || (workflowId !== undefined && LONE_SURROGATE.test(workflowId)))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'codec: a namespace or workflow id is not well-formed text',
    );
  return { namespace, workflowId };
}

/**
 * Refuses a payload bound to another workflow than the one decoding it (threat case 22), before any
 * decryption. The bound id comes from clear metadata, but it is also in the AAD: a payload whose
 * metadata was edited to pass this check fails authentication instead.
 *
 * @param boundWorkflowId the id the payload names, or undefined for a namespace-only payload
 * @param current the workflow decoding it, or undefined when the SDK did not say (codec server, CLI)
 */
export function checkBinding(
  boundWorkflowId: string | undefined,
  current: string | undefined,
  acceptScheduledRuns: boolean,
  acceptNamespaceBound = false,
): void {
  if (current === undefined || boundWorkflowId === current) return;
  if (boundWorkflowId === undefined && acceptNamespaceBound) return;
  if (boundWorkflowId === undefined) {
    // A workflow never receives namespace-only ciphertext from the SDK; such a payload was made
    // elsewhere (standalone activity, context-free call) and is being replayed into this workflow.
    throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'payload is not bound to this workflow');
  }
  if (
    acceptScheduledRuns &&
    (isScheduledRunOf(current, boundWorkflowId) || areRunsOfOneAction(boundWorkflowId, current))
  ) {
    return;
  }
  throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'payload is bound to another workflow');
}

/**
 * `a` and `b` are two runs of one schedule's action (`<action>-<time>` with the same action). The
 * scheduler hands each run the previous run's result or failure (`lastCompletionResult`,
 * `continuedFailure`), encoded by the worker bound to that run's id; backfills may run an earlier time
 * after a later one, so either order is accepted.
 */
function areRunsOfOneAction(a: string, b: string): boolean {
  const action = scheduledRunAction(a);
  return action !== undefined && isScheduledRunOf(b, action);
}
