import { convertNexusLinkToWorkflowEventLink } from '@temporalio/nexus/lib/link-converter.js';
import type {
  NexusInboundCallsInterceptor,
  NexusStartOperationInput,
  NexusStartOperationOutput,
  Next,
} from '@temporalio/worker';
import { getClient, operationInfo } from '@temporalio/nexus';
import * as nexus from 'nexus-rpc';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { ORIGINATOR_HEADER, MAX_HEADER_BYTES, parseHeaderValue, type ContextHeader } from '../header/wire.js';
import type { Auditor } from '../audit/sinks.js';
import { toApplicationFailure } from './activity-interceptor.js';
import { auditAllowed, auditFailure, confirmOriginator, type OriginatorChecks } from './decision.js';
import {
  confirmNexusCaller,
  trustsLinksFrom,
  type NexusCaller,
  type NexusCallerPolicy,
} from './nexus-caller.js';
import { runInNexusScope, type ActivityScope } from './scope.js';
import type { ContextVerifier } from './verifier.js';

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

function parseNexusHeader(headers: Record<string, string>): ContextHeader | undefined {
  const raw = headers[ORIGINATOR_HEADER];
  if (raw === undefined) return undefined;
  if (raw.length > MAX_HEADER_BYTES)
    throw new UserContextError(ErrorCodes.TOO_LARGE, 'Nexus header over size cap');
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new UserContextError(ErrorCodes.HEADER_MALFORMED, 'Nexus header is not JSON');
  }
  return parseHeaderValue(value, 'Nexus ' + ORIGINATOR_HEADER);
}

/**
 * Verifies the caller's context on a Nexus operation before the handler runs: the token must be a
 * start token of the calling workflow's lineage, in the calling workflow's namespace. The request's
 * links name the caller and our header states its lineage, both writable by the caller, so for a
 * caller of the handler's own namespace the server confirms the request and states the root and chain
 * start the token is checked against ({@link confirmNexusCaller}, docs/wire-format.md check 8); a
 * caller of another namespace is refused unless `nexusCallers.trustLinksFrom` names it. The handler
 * then sees the context through `currentUserContext()`. Refusals are non-retryable handler errors,
 * audited.
 */
export class NexusGuard implements NexusInboundCallsInterceptor {
  constructor(
    private readonly options: OriginatorChecks & {
      verifier: ContextVerifier;
      auditor: Auditor;
      callerPolicy: NexusCallerPolicy;
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
    let scope: ActivityScope;
    try {
      const header = parseNexusHeader(input.ctx.headers);
      if (!header) throw new UserContextError(ErrorCodes.MISSING, 'Nexus operation without a user context');
      if (!caller)
        throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'Nexus request names no calling workflow');
      // The token must hold for the facts the request states before the server is asked about them.
      let checked = header;
      let verified = await this.options.verifier.verifyOriginator(checked, caller);
      // The links and `lin` are the caller's to write: the server confirms the caller, and states its
      // lineage (check 8), which the token must then hold for as well.
      const client = getClient();
      const confirmed = client.options.namespace === caller.namespace;
      if (confirmed) {
        const { service, operation } = input.ctx;
        const lineage = await confirmNexusCaller(client, caller, {
          endpoint: operationInfo().endpoint,
          service,
          operation,
        });
        const lin = Object.assign({}, header.lin, { root: lineage.root, start: lineage.chainStart });
        checked = Object.assign({}, header, { lin });
        verified = await this.options.verifier.verifyOriginator(checked, caller);
      } else if (!trustsLinksFrom(this.options.callerPolicy, caller.namespace)) {
        throw new UserContextError(
          ErrorCodes.LINEAGE_MISMATCH,
          'a Nexus caller in another namespace cannot be confirmed (nexusCallers.trustLinksFrom does not name it)',
        );
      }
      await confirmOriginator(verified, checked, this.options, () => {
        // Only the caller's namespace knows its schedule's runs; the handler's client is bound to its own.
        if (client.options.namespace !== caller.namespace || !caller.runId) {
          throw new UserContextError(
            ErrorCodes.LINEAGE_MISMATCH,
            'a scheduled lineage can only be confirmed from its own namespace',
          );
        }
        return { client, runKey: caller.runId };
      });
      const { lin: _lin, ...forward } = header;
      scope = {
        context: verified.context,
        claims: verified.claims,
        header: forward,
        allowedSystem: [],
        audit,
        auditor: this.options.auditor,
      };
      auditAllowed(
        this.options.auditor,
        audit,
        'nexus.start',
        verified,
        confirmed ? undefined : 'caller trusted on its links (nexusCallers.trustLinksFrom), not confirmed',
      );
    } catch (err) {
      const refusal = auditFailure(this.options.auditor, audit, 'nexus.start', err);
      throw new nexus.HandlerError('BAD_REQUEST', refusal.message, {
        cause: toApplicationFailure(refusal),
        retryableOverride: false,
      });
    }
    return runInNexusScope(scope, () => next(input));
  }
}
