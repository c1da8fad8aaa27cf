import { convertNexusLinkToWorkflowEventLink } from '@temporalio/nexus/lib/link-converter.js';
import type {
  NexusCancelOperationInput,
  NexusInboundCallsInterceptor,
  NexusStartOperationInput,
  NexusStartOperationOutput,
  Next,
} from '@temporalio/worker';
import { ApplicationFailure } from '@temporalio/common';
import { getClient, log, operationInfo } from '@temporalio/nexus';
import * as nexus from 'nexus-rpc';
import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import type { KeyRing } from '../crypto/keyring.js';
import { openOperationToken, sealOperationToken, type OperationBinding } from '../crypto/operation-token.js';
import { ORIGINATOR_HEADER, MAX_HEADER_BYTES, parseHeaderValue, type ContextHeader } from '../header/wire.js';
import type { Auditor } from '../audit/sinks.js';
import { toApplicationFailure } from './activity-interceptor.js';
import {
  auditAllowed,
  auditFailure,
  auditRefusedByCode,
  confirmOriginator,
  type OriginatorChecks,
} from './decision.js';
import {
  confirmNexusCancel,
  confirmNexusCaller,
  trustsLinksFrom,
  type NexusCaller,
  type NexusCallerPolicy,
} from './nexus-caller.js';
import { withServerLineage, type ConfirmedLineage, type FirstRunStarts } from './server-lineage.js';
import { runInNexusScope, type ActivityScope } from './scope.js';
import { verifyOriginatorInParts, type ContextVerifier, type Verified } from './verifier.js';
import { parseJsonUniqueKeys } from '../header/unique-keys.js';
import { wasRecordedIn } from '../audit/recorded.js';

/**
 * Runs handler code, failing the operation with the code of a refusal that code raised (`withUserScope`,
 * the worker's own client, `resolveUserContext`), audited where it happened, or else here. Left to the
 * SDK, such a refusal became a retryable `INTERNAL` handler error, and the operation was retried, each
 * attempt admitted and refused again, until it timed out.
 */
async function handled<T>(scope: ActivityScope, action: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!isUserContextError(err)) throw err;
    if (!wasRecordedIn(err, scope)) auditRefusedByCode(scope, action, err);
    throw toHandlerError(err);
  }
}

/** A refusal as the handler's error: `BAD_REQUEST`, not retried (its cause carries the code). */
function toHandlerError(refusal: UserContextError): nexus.HandlerError {
  return new nexus.HandlerError('BAD_REQUEST', refusal.message, {
    cause: toApplicationFailure(refusal),
    retryableOverride: refusal.retryable,
  });
}

/**
 * The calling workflow, from the request's links. The server attaches a correct one, but a caller that
 * writes its own `nexus-link` header replaces it (server 1.32): see docs/wire-format.md, _Limits_.
 */
function callerOf(links: readonly nexus.Link[]): NexusCaller | undefined {
  for (const link of links) {
    try {
      const event = convertNexusLinkToWorkflowEventLink(link);
      if (event.namespace && event.workflowId) {
        const eventId = event.eventRef?.eventId ? Number(event.eventRef.eventId) : 0;
        return {
          namespace: event.namespace,
          workflowId: event.workflowId,
          ...(event.runId ? { runId: event.runId } : {}),
          ...(eventId > 0 ? { eventId } : {}),
        };
      }
    } catch {
      // Not a workflow event link: ignore.
    }
  }
  return undefined;
}

/** The context header of a Nexus request (a string header): size, JSON, then the v1 shape. */
export function parseNexusHeader(headers: Record<string, string>): ContextHeader | undefined {
  const raw = headers[ORIGINATOR_HEADER];
  if (raw === undefined) return undefined;
  // Bytes, as every other header's cap (decodeHeader): a character count let 15 KB of UTF-8 through.
  if (Buffer.byteLength(raw, 'utf8') > MAX_HEADER_BYTES)
    throw new UserContextError(ErrorCodes.TOO_LARGE, 'Nexus header over size cap');
  let value: unknown;
  try {
    value = parseJsonUniqueKeys(raw);
  } catch {
    throw new UserContextError(ErrorCodes.HEADER_MALFORMED, 'Nexus header is not JSON (or repeats a key)');
  }
  return parseHeaderValue(value, 'Nexus ' + ORIGINATOR_HEADER);
}

/** What a guard established about a request before its common checks: see {@link NexusGuard}. */
interface Admission {
  verified: Verified;
  /** The header with the lineage it was finally checked against. */
  checked: ContextHeader;
  /** The caller's run, when the server confirmed it. */
  confirmedRun?: string;
}

/** Where a request is handled: this handler's namespace, the endpoint, service and operation. */
function operationOf(ctx: { service: string; operation: string }): OperationBinding['at'] {
  return {
    ns: getClient().options.namespace,
    ep: operationInfo().endpoint,
    svc: ctx.service,
    op: ctx.operation,
  };
}

/**
 * Prefixes the detail of a start refused before the server confirmed its caller: the record's
 * namespace, workflow and run are what the request's links claim, which the caller may have written
 * (a forger names its victim).
 */
const UNCONFIRMED_CALLER = 'unconfirmed caller';
/**
 * How a refused cancel's detail starts while the server has not confirmed that the run its sealed token
 * names asked for the cancel: the ids are that run's, the sender may be anyone who holds the token.
 */
const UNCONFIRMED_SENDER = 'unconfirmed sender';

/** A request being admitted: its kind, its audit fields, and what its refusal's detail says of them. */
interface Request {
  kind: 'start' | 'cancel';
  audit: ActivityScope['audit'];
  /** Prefix of a refusal's detail, when the audit fields are not (yet) facts. */
  qualifier: () => string | undefined;
}

const OTHER_NAMESPACE =
  'a Nexus caller in another namespace cannot be confirmed (nexusCallers.trustLinksFrom does not name it)';

/**
 * Verifies the caller's context on a Nexus request before the handler runs: the token must be a
 * start token of the calling workflow's lineage, in the calling workflow's namespace.
 * - A **start** names its caller in the request's links, and our header states its lineage, both
 *   writable by the caller: for a caller of the handler's own namespace the server confirms the request
 *   and states the root and chain start the token is checked against ({@link confirmNexusCaller},
 *   docs/wire-format.md check 8). The token of an asynchronous operation is returned sealed together
 *   with its caller and context token ({@link sealOperationToken}).
 * - A **cancel** carries no links: the sealed operation token names the caller, the cancel must carry
 *   the context token the operation was started with, and the server must show that caller's run
 *   holding the operation with a cancel in flight ({@link confirmNexusCancel}, check 9). The handler
 *   gets its own token back.
 *
 * A caller of another namespace is refused unless `nexusCallers.trustLinksFrom` names it. The handler
 * then sees the context through `currentUserContext()`. Refusals are non-retryable handler errors,
 * audited (`nexus.start`, `nexus.cancel`).
 */
export class NexusGuard implements NexusInboundCallsInterceptor {
  constructor(
    private readonly options: OriginatorChecks & {
      ring: KeyRing;
      verifier: ContextVerifier;
      auditor: Auditor;
      callerPolicy: NexusCallerPolicy;
      /**
       * How the callers' chains' first runs started, for tokens that bind their root's start: the
       * worker's, shared by its guards (the SDK makes a guard per request).
       */
      starts: FirstRunStarts;
    },
  ) {}

  async startOperation(
    input: NexusStartOperationInput,
    next: Next<NexusInboundCallsInterceptor, 'startOperation'>,
  ): Promise<NexusStartOperationOutput> {
    const caller = callerOf(input.ctx.inboundLinks);
    const audit: ActivityScope['audit'] = {
      namespace: caller?.namespace,
      workflowId: caller?.workflowId,
      runId: caller?.runId,
      activityType: `nexus:${input.ctx.service}/${input.ctx.operation}`,
    };
    // Until the server confirms the caller (or the policy trusts its namespace), its ids are the links'.
    let claimed = true;
    const start: Request = {
      kind: 'start',
      audit,
      qualifier: () => (claimed ? UNCONFIRMED_CALLER : undefined),
    };
    const { scope, verified } = await this.admit(start, input.ctx.headers, async (header) => {
      if (!caller)
        throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'Nexus request names no calling workflow');
      // The links and `lin` are the caller's to write: the server confirms the caller, and states its
      // lineage (check 8), which the token must then hold for as well. Asked once, after the token
      // held for the facts the request states, or sooner, when those date the lineage after the
      // token's window (a workflow retry, a cron run: `OriginatorParts.lateStart`).
      const { service, operation } = input.ctx;
      const ownNamespace = getClient().options.namespace === caller.namespace;
      let confirming: Promise<ConfirmedLineage> | undefined;
      const confirm = () =>
        (confirming ??= confirmNexusCaller(getClient(), caller, {
          endpoint: operationInfo().endpoint,
          service,
          operation,
        }).then((lineage) => {
          // Confirmed from here on: a refusal's record no longer qualifies the caller.
          claimed = false;
          return lineage;
        }));
      // (How its root started, check 10, is compared once the server stated it, or in `trusted`.)
      await this.options.verifier[verifyOriginatorInParts](header, caller, {
        boundStart: false,
        ...(ownNamespace ? { lateStart: confirm } : {}),
      });
      // A trusted namespace's caller stays unconfirmed (`claimed`): a later refusal's record says so.
      if (!ownNamespace) return this.trusted(caller.namespace, caller, header);
      const lineage = await confirm();
      return this.reverified(header, lineage, caller, caller.runId);
    });
    // A request given up on while it was being checked (timed out, the caller gone) does not start the
    // operation: the handler rethrows the signal's error, as nexus-rpc asks.
    const output = await handled(scope, 'nexus.start', () =>
      runInNexusScope(scope, () => {
        input.ctx.abortSignal.throwIfAborted();
        return next(input);
      }),
    );
    // (`caller` is set here: admit refused a start without one; the test only narrows its type.)
    if (!output.result.isAsync || !caller) return output;
    // The operation can be cancelled later, by a request with no links: its token carries who started
    // it, sealed, for the cancel to be held to (check 9).
    try {
      const token = await sealOperationToken(this.options.ring, {
        tok: output.result.token,
        ns: caller.namespace,
        wf: caller.workflowId,
        ...(caller.runId ? { run: caller.runId } : {}),
        jti: verified.claims.jti,
        at: operationOf(input.ctx),
      });
      return { result: nexus.HandlerStartOperationResult.async(token) };
    } catch (err) {
      // The operation has started: its start is not undone (rethrown, it would be retried and run the
      // handler again). Only its cancels will be refused.
      try {
        auditFailure(this.options.auditor, audit, 'nexus.seal', err);
      } catch {
        // A failure that is no verdict: recorded as `ERROR`, and rethrown by auditFailure.
      }
      return output;
    }
  }

  async cancelOperation(
    input: NexusCancelOperationInput,
    next: Next<NexusInboundCallsInterceptor, 'cancelOperation'>,
  ): Promise<void> {
    const audit: ActivityScope['audit'] = {
      activityType: `nexus:${input.ctx.service}/${input.ctx.operation}`,
    };
    let own = '';
    // The ids come from the sealed token, which the guard wrote at the start, once the server
    // confirmed the caller (or its namespace was trusted): they name the operation's caller, not
    // necessarily the sender of this cancel, until the server confirms that run asked for it.
    let confirmed = false;
    const cancel: Request = {
      kind: 'cancel',
      audit,
      qualifier: () => (audit.workflowId !== undefined && !confirmed ? UNCONFIRMED_SENDER : undefined),
    };
    const { scope } = await this.admit(cancel, input.ctx.headers, async (header) => {
      const bound = await openOperationToken(this.options.ring, input.token);
      own = bound.tok;
      Object.assign(audit, { namespace: bound.ns, workflowId: bound.wf, runId: bound.run });
      // The operation the token was sealed for, or one of another handler that shares the keys.
      const here = operationOf(input.ctx);
      if (Object.entries(bound.at).some(([k, v]) => here[k as keyof typeof here] !== v))
        throw new UserContextError(
          ErrorCodes.LINEAGE_MISMATCH,
          'the operation token is for another operation',
        );
      const caller = { namespace: bound.ns, workflowId: bound.wf };
      const ownNamespace = getClient().options.namespace === bound.ns;
      const { service, operation } = input.ctx;
      // Asked once, as for a start (the lineage of a retry or cron run, dated late by its header).
      let confirming: ReturnType<typeof confirmNexusCancel> | undefined;
      const confirm = () => {
        if (!bound.run) throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'the operation names no run');
        return (confirming ??= confirmNexusCancel(
          getClient(),
          { workflowId: bound.wf, runId: bound.run },
          { endpoint: operationInfo().endpoint, service, operation, token: input.token },
        ).then((holder) => {
          // The run the server names, confirmed: a refusal's record says so from here on.
          audit.runId = holder.runId;
          confirmed = true;
          return holder;
        }));
      };
      const sameToken = (claims: { jti: string }) => {
        if (claims.jti !== bound.jti)
          throw new UserContextError(
            ErrorCodes.LINEAGE_MISMATCH,
            'the Nexus cancel carries another context token than its operation was started with',
          );
      };
      const verified = await this.options.verifier[verifyOriginatorInParts](header, caller, {
        boundStart: false,
        // Another token than the operation's is refused before the server is asked about its lineage.
        ...(ownNamespace
          ? {
              lateStart: async () => {
                sameToken(await this.options.verifier.open(header.tok));
                return confirm();
              },
            }
          : {}),
      });
      sameToken(verified.claims);
      if (!ownNamespace) return this.trusted(bound.ns, caller, header);
      const holder = await confirm();
      return this.reverified(header, holder, caller, holder.runId);
    });
    return handled(scope, 'nexus.cancel', () =>
      runInNexusScope(scope, () => {
        input.ctx.abortSignal.throwIfAborted();
        return next({ ...input, token: own });
      }),
    );
  }

  /** The token checked again against the lineage the server stated, instead of the header's. */
  private async reverified(
    header: ContextHeader,
    lineage: ConfirmedLineage,
    caller: { namespace: string; workflowId: string },
    confirmedRun: string | undefined,
  ): Promise<Admission> {
    const bound = await this.options.verifier.open(header.tok);
    const checked = await withServerLineage(getClient(), header, lineage, bound, this.options.starts);
    const verified = await this.options.verifier.verifyOriginator(checked, caller);
    return { verified, checked, confirmedRun };
  }

  /** A caller of another namespace: accepted on what it wrote only where the policy says so. */
  private async trusted(
    namespace: string,
    caller: { namespace: string; workflowId: string },
    checked: ContextHeader,
  ): Promise<Admission> {
    if (!trustsLinksFrom(this.options.callerPolicy, namespace))
      throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, OTHER_NAMESPACE);
    // On the caller's own statement of how its root started, as every other fact here (docs/wire-format.md).
    const verified = await this.options.verifier.verifyOriginator(checked, caller);
    return { verified, checked };
  }

  /**
   * The steps a start and a cancel share: the header must be there, `verify` (the request's own
   * checks) must pass, then revocation and a schedule's runs are checked, and the decision is audited
   * (a refusal's detail prefixed with what the request's `qualifier` says of its ids at that point).
   * Returns the scope the handler runs in; throws the refusal as a handler error ({@link toHandlerError}).
   */
  private async admit(
    { kind: request, audit, qualifier }: Request,
    headers: Record<string, string>,
    verify: (header: ContextHeader) => Promise<Admission>,
  ): Promise<{ scope: ActivityScope; verified: Verified }> {
    const action = `nexus.${request}`;
    let identified: Verified | undefined;
    try {
      const header = parseNexusHeader(headers);
      if (!header) throw new UserContextError(ErrorCodes.MISSING, `Nexus ${request} without a user context`);
      const { verified, checked, confirmedRun } = await verify(header);
      identified = verified;
      await confirmOriginator(verified, checked, this.options, () => {
        // Only the caller's namespace knows its schedule's runs; the handler's client is bound to its own.
        if (confirmedRun === undefined)
          throw new UserContextError(
            ErrorCodes.LINEAGE_MISMATCH,
            'a scheduled lineage can only be confirmed from its own namespace',
          );
        return { client: getClient(), runKey: confirmedRun };
      });
      const { lin: _lin, ...forward } = header;
      const trusted = confirmedRun === undefined;
      auditAllowed(
        this.options.auditor,
        audit,
        action,
        verified,
        trusted ? 'caller trusted on what it wrote (nexusCallers.trustLinksFrom), not confirmed' : undefined,
      );
      const scope = {
        context: verified.context,
        claims: verified.claims,
        header: forward,
        allowedSystem: [],
        audit,
        auditor: this.options.auditor,
      };
      return { scope, verified };
    } catch (err) {
      let refusal: UserContextError;
      try {
        refusal = auditFailure(this.options.auditor, audit, action, err, {
          qualifier: qualifier(),
          verified: identified,
        });
      } catch (raw) {
        // No verdict (a lookup the server refused this worker, a revocation hook that failed, the server
        // unreachable): recorded as `ERROR` with what happened, and logged here with its stack; the
        // caller, who may be another namespace's, learns only that it may try again, not the worker's
        // permissions or hosts. An ApplicationFailure (a hook's own, deliberate answer) goes as it is.
        if (raw instanceof ApplicationFailure) throw raw;
        log.warn('the Nexus guard could not check the caller', { error: raw });
        throw new nexus.HandlerError('INTERNAL', 'the handler could not check the caller: try again', {
          retryableOverride: true,
        });
      }
      throw toHandlerError(refusal);
    }
  }
}
