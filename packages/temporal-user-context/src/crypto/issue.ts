import { randomUUID } from 'node:crypto';
import { CompactEncrypt } from 'jose';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { numberOption } from '../context/number-option.js';
import { ensureUserContext, type UserContext } from '../context/schema.js';
import type { ContextHeader } from '../header/wire.js';
import { MAX_WINDOW, type BoundStart, type ContextClaims, type TokenUse } from './claims.js';
import type { KeyRing } from './keyring.js';
import { createArgsDigest } from './args-digest.js';
import { pseudonym } from './pseudonym.js';
import { signCompactEdDSA } from './jws-sign.js';

/** Media type of the inner signed token (JWS `typ`). */
export const TOKEN_TYPE = 'tuc+jwt';

/** What a token is issued for and how long its start window stays open ({@link issueContextToken}). */
export interface IssueOptions {
  /** The Temporal namespace: the token's audience. */
  namespace: string;
  /**
   * What the token is for: `start` (a workflow start, child or continue-as-new lineage), `actor` (a
   * signal, update or query sender) or `schedule` (a schedule's runs).
   */
  use: TokenUse;
  /** Workflow id the token is bound to (`start`, `actor`); for `schedule`, the action's workflow id. */
  workflowId?: string;
  /** Schedule id the token is bound to (`schedule`). */
  scheduleId?: string;
  /**
   * The schedule action (`schedule`, required): every run must have its workflow type and task queue and,
   * when `args` is given, have been started with those arguments.
   */
  scheduledAction?: BoundStart;
  /**
   * The start (`start`, optional): the lineage's root must have been started with this workflow type and
   * task queue and, when `args` or `argsDigest` is given, these arguments. The header then asks workflow
   * code to state the root's start in its lineage facts (`b`, docs/wire-format.md).
   */
  boundStart?: BoundStart;
  /**
   * The call (`actor`, optional): `signal:<name>`, `update:<name>` or `query:<name>`, whose handler alone
   * may act on the token (1 to 1000 characters). The header then asks workflow code to state the call it
   * handles in the lineage facts it sends (`b`, docs/wire-format.md).
   */
  call?: string;
  /**
   * Seconds the start window stays open (default: 60 for start, 300 for actor, 366 days for schedules;
   * at most a day, a day and 366 days, which workers hold tokens to).
   */
  windowSeconds?: number;
  /** Clock, for tests. */
  now?: () => number;
}

/**
 * The claims binding a start: workflow type, task queue and, when given, the arguments, and a start's
 * cron schedule and delay when it has them.
 */
function startClaims(action: BoundStart): Pick<ContextClaims, 'wt' | 'tq' | 'ad' | 'cr' | 'dl' | 'rp'> {
  const bound: Pick<ContextClaims, 'wt' | 'tq' | 'ad' | 'cr' | 'dl' | 'rp'> = {
    wt: action.workflowType,
    tq: action.taskQueue,
  };
  const ad = action.argsDigest ?? (action.args === undefined ? undefined : createArgsDigest(action.args));
  if (ad !== undefined) bound.ad = ad;
  if (action.cronSchedule) bound.cr = action.cronSchedule;
  if (action.startDelayMs) bound.dl = action.startDelayMs;
  if (action.retried) bound.rp = 1;
  return bound;
}

/** Default start windows, in seconds, by token use. */
export const DEFAULT_WINDOW = { start: 60, actor: 300, schedule: 366 * 24 * 3600 } as const;

/**
 * Issues a sealed context token: an Ed25519-signed JWT inside a `dir`/A256GCM JWE. Only an edge key
 * ring (with the private signing key) can call this. Returns the header to send (token plus
 * pseudonyms) and the claims, for the audit.
 *
 * @throws {@link UserContextError} `USER_CONTEXT_INVALID` or `USER_CONTEXT_TOO_LARGE` for a context
 *   outside the documented format (a token workers would refuse); `USER_CONTEXT_MISCONFIGURED` for a
 *   worker ring, a `use` that is none of the three, no namespace, a missing binding id (`workflowId`;
 *   with `schedule`, `scheduleId` and `scheduledAction`), a `call` not of 1 to 1000 characters, a
 *   `windowSeconds` out of range, or arguments that do not convert.
 */
export async function issueContextToken(
  ring: KeyRing,
  given: UserContext,
  options: IssueOptions,
): Promise<{ header: ContextHeader; claims: ContextClaims }> {
  // Found by review: a malformed context was issued (`roles: 'admin'` became five roles, `a,d,m,i,n`), and
  // only workers refused it. The edge's own contexts are parsed already and pass through unchanged.
  const ctx = ensureUserContext(given);
  if (options.use !== 'start' && options.use !== 'actor' && options.use !== 'schedule')
    throw new UserContextError(ErrorCodes.MISCONFIGURED, "a token's use is 'start', 'actor' or 'schedule'");
  const signer = ring.activeSigningKey();
  if (!signer)
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'this key ring cannot issue contexts (no private signing key)',
    );
  const schedule = options.use === 'schedule';
  // What the token binds of how its lineage starts: a schedule's action, or a start's (when given).
  const bound = schedule ? options.scheduledAction : options.use === 'start' ? options.boundStart : undefined;
  // Every token names its audience: one issued for no namespace would only be refused where it is opened.
  if (typeof options.namespace !== 'string' || options.namespace.length === 0)
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'a token needs the namespace it is issued for');
  // A call workers could not open (empty, or longer than the claim allows) would only be refused there.
  if (options.call !== undefined && (options.call.length === 0 || options.call.length > 1000))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'an actor token binds a call of 1 to 1000 characters',
    );
  if (!options.workflowId || (schedule && (!options.scheduleId || !options.scheduledAction))) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, `a ${options.use} token needs its binding ids`);
  }
  const window = numberOption('windowSeconds', options.windowSeconds, DEFAULT_WINDOW[options.use], {
    min: 1,
    max: MAX_WINDOW[options.use],
    integer: true,
  });
  const iat = Math.floor((options.now?.() ?? Date.now()) / 1000);
  const claims: ContextClaims = {
    iss: ring.issuer,
    aud: options.namespace,
    sub: ctx.userId,
    ws: ctx.workspaceId,
    roles: [...ctx.roles],
    use: options.use,
    wf: options.workflowId,
    ...(schedule ? { sch: options.scheduleId } : {}),
    ...(bound ? startClaims(bound) : {}),
    ...(options.use === 'actor' && options.call !== undefined ? { nm: options.call } : {}),
    wsh: pseudonym(ring.pseudonymKey, 'ws', ctx.workspaceId),
    subh: pseudonym(ring.pseudonymKey, 'sub', ctx.userId),
    iat,
    exp: iat + window,
    jti: randomUUID(),
  };
  const jws = signCompactEdDSA(claims, { kid: signer.kid, typ: TOKEN_TYPE }, signer.privateKey);
  const seal = ring.activeSealingKey();
  const tok = await new CompactEncrypt(new TextEncoder().encode(jws))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: seal.kid, cty: 'JWT' })
    .encrypt(seal.key);
  const header: ContextHeader = { v: 1, tok, ws: claims.wsh, sub: claims.subh };
  // A bound start (or call) asks workflow code to state the root's start (or the call it handles) in
  // `lin`; schedule runs are confirmed with the server instead (check 7).
  const binds = (options.use === 'start' && bound) || (options.use === 'actor' && options.call !== undefined);
  return { header: binds ? { ...header, b: 1 } : header, claims };
}
