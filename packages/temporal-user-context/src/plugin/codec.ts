import { ApplicationFailure, type PayloadCodec } from '@temporalio/common';
import { markRecorded } from '../audit/recorded.js';
import type { Auditor } from '../audit/sinks.js';
import { edgeUser } from '../client/scope.js';
import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import { AesGcmPayloadCodec } from '../crypto/payload-codec.js';
import type { UserContextPluginOptions } from '../plugin-options.js';
import { currentScope } from '../worker/scope.js';

/**
 * A codec refusal in an activity context: an ApplicationFailure whose type is the code (which a retry
 * policy's `nonRetryableErrorTypes` can name) and whose cause is the refusal itself. Retryable as far as
 * the failure goes: the SDK forces that for an activity's input anyway, and for heartbeat details from
 * an earlier attempt (which it does not force) a key missing on this worker may be back for the next.
 */
function asActivityFailure(err: unknown): never {
  if (!isUserContextError(err)) throw err;
  throw ApplicationFailure.create({ message: err.message, type: err.code, nonRetryable: false, cause: err });
}

/** The plugin's payload codec and failure converter setting, from its options. */
export interface PluginCodec {
  /** The codec itself (`undefined` when off): the instance a codec server is given. */
  codec: AesGcmPayloadCodec | undefined;
  /** What the data converter gets: the codec bound per call to the namespace of the client or worker. */
  registered: PayloadCodec | undefined;
  /** Whether failure messages move into encrypted payloads (`failureMessages: 'encrypted'`). */
  encryptFailures: boolean;
  /** Whether payloads bound to no workflow are refused inside workflows (the codec does not accept them). */
  bindsWorkflowPayloads: boolean;
}

/**
 * The codec a plugin registers (on by default when the key ring holds codec keys), auditing each
 * refusal, and whether failure messages are encrypted. `scope.namespace` is read per call: it is set
 * once the plugin configures a client or worker.
 *
 * @throws {@link UserContextError} `USER_CONTEXT_MISCONFIGURED` for a `failureMessages` value that is
 *   neither `'encrypted'` nor `'clear'`, or `'encrypted'` with the codec off.
 */
export function pluginCodec(
  pluginOptions: Pick<UserContextPluginOptions, 'codec' | 'keys' | 'failureMessages'>,
  scope: { readonly namespace: string },
  auditor: Auditor,
): PluginCodec {
  const codecOptions = pluginOptions.codec ?? pluginOptions.keys.codec.size > 0;
  const codec = codecOptions
    ? new AesGcmPayloadCodec({
        keys: pluginOptions.keys.codecKeyMaterial(),
        // Only the fallback for calls without a serialization context; the SDK passes one on every
        // workflow path, and createCodecServer rebinds it to the namespace it serves (forNamespace).
        namespace: scope.namespace,
        // Scheduled runs are named `<action id>-<time>` while their arguments were encoded for `<action id>`.
        acceptScheduledRuns: true,
        ...(typeof codecOptions === 'object' ? codecOptions : {}),
        onRefusal: (err, binding) => {
          // Whose call decoded it, where that is known: the edge user of a client call, or the
          // activity's user for its own client (an activity's input is decoded before its guard).
          const edge = edgeUser();
          const user = edge ?? currentScope()?.context;
          auditor.emit({
            action: 'codec.decode',
            decision: 'deny',
            source: edge ? 'edge' : user ? 'header' : 'none',
            reason: err.code,
            detail: err.reason,
            namespace: binding.namespace,
            workflowId: binding.workflowId,
            activityId: binding.activityId,
            userId: user?.userId,
            workspaceId: user?.workspaceId,
          });
          // Activity code that lets it propagate (its client's result, say) is not recorded again.
          markRecorded(err);
        },
      })
    : undefined;
  // What the data converter gets: the codec with the namespace of the client or worker as its fallback
  // for calls without a serialization context (a Nexus handler's input and result, an activity
  // completed by task token). That namespace is known only once configureClient/configureWorker ran,
  // so it is read per call: read at construction, it was 'default' for every plugin without a
  // `namespace` option, and a worker of another namespace refused its own Nexus payloads.
  //
  // A worker decodes an activity's input (and heartbeat details) before any interceptor runs, and
  // fails the task with `ApplicationFailure.fromError`, which keeps an ApplicationFailure's type but
  // takes an Error's class name ('UserContextError') and marks it retryable. A refusal in an activity
  // context is thrown as the guard throws it, so that the failure's type is the stable code, which
  // a retry policy's `nonRetryableErrorTypes` can name (the SDK forces `nonRetryable: false` there).
  const registered: PayloadCodec | undefined = codec && {
    encode: (payloads, context) => codec.forNamespace(scope.namespace).encode(payloads, context),
    decode: (payloads, context) => {
      const decoded = codec.forNamespace(scope.namespace).decode(payloads, context);
      return context?.type === 'activity' ? decoded.catch(asActivityFailure) : decoded;
    },
  };
  // Only undefined means the default: null is refused like any other value that is none of the two.
  const failureMessages =
    pluginOptions.failureMessages === undefined
      ? registered
        ? 'encrypted'
        : 'clear'
      : pluginOptions.failureMessages;
  if (failureMessages !== 'encrypted' && failureMessages !== 'clear')
    throw new UserContextError(ErrorCodes.MISCONFIGURED, "failureMessages must be 'encrypted' or 'clear'");
  if (failureMessages === 'encrypted' && !registered)
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "failureMessages: 'encrypted' needs the codec (with it off they would be encoded, not encrypted)",
    );
  const encryptFailures = failureMessages === 'encrypted';
  return {
    codec,
    registered,
    encryptFailures,
    bindsWorkflowPayloads:
      codec !== undefined &&
      !(typeof codecOptions === 'object' && codecOptions.acceptNamespaceBound === true),
  };
}
