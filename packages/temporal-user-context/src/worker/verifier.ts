import { ErrorCodes, UserContextError } from '../context/errors.js';
import { numberOption } from '../context/number-option.js';
import { isScheduledRunOf } from '../context/scheduled-run-id.js';
import { parseUserContext, type UserContext } from '../context/schema.js';
import { MAX_WINDOW, type ContextClaims } from '../crypto/claims.js';
import type { KeyRing } from '../crypto/keyring.js';
import { openContextToken } from '../crypto/open.js';
import type { ConfirmedLineage } from './server-lineage.js';
import { SuccessCache } from './success-cache.js';
import type { ContextHeader, Lineage } from '../header/wire.js';

/**
 * The key of {@link ContextVerifier}'s partial originator check, for this package's activity and Nexus
 * guards only (not exported from an entry point): it may leave check 10 to a second call with the
 * server's lineage, which a caller that forgot it would skip. The public `verifyOriginator` never does.
 */
export const verifyOriginatorInParts = Symbol('verifyOriginatorInParts');

/** How the guards split an originator check (see `ContextVerifier[verifyOriginatorInParts]`). */
export interface OriginatorParts {
  /**
   * `false` leaves the start binding (check 10) to a later call with the server's facts: for the first
   * check of a header whose lineage the server will state (a retry of a run continued as new into
   * another type states that type, and the server the first run's).
   */
  boundStart?: boolean;
  /**
   * The root and the start of its chain as the server records them, asked only when the header dates
   * the lineage after the token's window. Workflow code dates a workflow retry or a cron run by its own
   * start (`workflowInfo()` gives no earlier time), which the server writes when the previous run ends:
   * a first attempt that ran longer than the window, or an hourly cron, would otherwise be refused on
   * the server's own schedule. Without it, such lineages are refused. When it answers, how the root
   * started (check 10) is not compared here: the caller must verify again with the server's lineage
   * (`withServerLineage`), as a run of such a chain may state another start than its first run's (one
   * continued as new into another type, then retried).
   */
  lateStart?: () => Promise<Pick<ConfirmedLineage, 'root' | 'chainStart'>>;
}

/** Tuning of the worker's {@link ContextVerifier} (plugin option `verifier`). */
export interface VerifierOptions {
  /** Clock skew tolerated between the edge, the server and workers, in seconds (default 30, 0–3600). */
  clockSkewSeconds?: number;
  /** Opened tokens kept in memory (default 10 000, an integer ≥ 1); only tokens that opened are cached. */
  cacheSize?: number;
  /**
   * Refuse start tokens that bind no start (no `wt`), schedule tokens that bind no action (no `wt`: the
   * schedule's workflow type and task queue) and actor tokens that bind no call (no `nm`): issued by an
   * edge of an earlier version, or by `issueContextToken` without `boundStart` / `scheduledAction` /
   * `call`, which checks 7, 10 and 11 cannot hold to what they were issued for. Default `false`, for the
   * upgrade; turn it on once every edge binds them, the runs started before have ended and the
   * schedules created before have been re-created (docs/operations.md).
   */
  requireBoundTokens?: boolean;
  /**
   * The clock windows are checked against, in epoch milliseconds (default `Date.now`). For tests and
   * simulations; a clock that runs behind the edge's extends every window by the difference.
   */
  now?: () => number;
}

/** A verified token: the context it carries and its claims (frozen), as the revocation hook sees them. */
export interface Verified {
  readonly context: UserContext;
  readonly claims: ContextClaims;
}

/** How far past the tolerated skew a token's issue time may be and still be retried (seconds). */
const AHEAD_RETRY_SECONDS = 600;

/**
 * A token issued ahead of this worker's clock by more than the tolerated skew, but by at most ten
 * minutes more: not a refusal (no `UserContextError`), so that the activity fails retryable and is tried
 * again, on this worker once its clock has caught up, or on another. Audited as a `deny` of reason
 * `ERROR` each time. Fix the clock (NTP) of the worker that reports it.
 */
export class TokenIssuedAheadError extends Error {
  constructor(readonly aheadSeconds: number) {
    super(
      `the token was issued ${aheadSeconds} s past this worker's clock and its tolerated skew: its clock may be behind; retry`,
    );
    this.name = 'TokenIssuedAheadError';
  }
}

/**
 * Opens tokens and checks them against facts the Temporal server vouched for. One per worker; the
 * cache means that the activities of one workflow share one decryption and one signature check.
 */
export class ContextVerifier {
  private readonly cache: SuccessCache<ContextClaims>;
  private readonly contexts = new WeakMap<ContextClaims, UserContext>();
  private readonly skew: number;
  /** The clock skew tolerated, in seconds (the option, checked, or its default). */
  get skewSeconds(): number {
    return this.skew;
  }
  private readonly now: () => number;
  private readonly requireBoundTokens: boolean;

  constructor(
    private readonly ring: KeyRing,
    options: VerifierOptions = {},
  ) {
    // More than an hour of skew is not a clock problem any more: it would stretch every window by it.
    this.skew = numberOption('verifier.clockSkewSeconds', options.clockSkewSeconds, 30, {
      min: 0,
      max: 3600,
    });
    this.cache = new SuccessCache(
      numberOption('verifier.cacheSize', options.cacheSize, 10_000, {
        min: 1,
        max: Number.MAX_SAFE_INTEGER,
        integer: true,
      }),
    );
    this.now = options.now ?? Date.now;
    this.requireBoundTokens = options.requireBoundTokens === true;
  }

  /** Opens a token, from cache when this worker opened it before. */
  open(token: string): Promise<ContextClaims> {
    return this.cache.get(token, () => openContextToken(this.ring, token));
  }

  /**
   * Verifies the originator of a lineage: the token must be a start (or schedule) token for this
   * namespace, bound to the lineage's root workflow (or the schedule that started it), and the root's
   * execution chain must have started inside the token's start window, as the header's lineage says
   * (every check of docs/wire-format.md but those that ask the server: 7, and the dating of late runs).
   */
  verifyOriginator(
    header: ContextHeader,
    facts: { namespace: string; workflowId: string },
  ): Promise<Verified> {
    return this[verifyOriginatorInParts](header, facts);
  }

  /** @internal The guards' form of {@link verifyOriginator}: see {@link OriginatorParts}. */
  async [verifyOriginatorInParts](
    header: ContextHeader,
    facts: { namespace: string; workflowId: string },
    { boundStart = true, lateStart }: OriginatorParts = {},
  ): Promise<Verified> {
    const { claims, lin } = await this.prepare(header, facts);
    if (claims.use === 'start') {
      if (claims.wf !== lin.root)
        throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'token was issued for another workflow');
    } else if (claims.use === 'schedule') {
      if (lin.sched === undefined || claims.sch !== lin.sched) {
        throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'token was issued for another schedule');
      }
      // An unbound schedule token lives as long as its schedule: an update could give it any workflow
      // type, queue and arguments. Refused once the operator says every schedule is bound.
      if (this.requireBoundTokens && claims.wt === undefined)
        throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'the schedule token binds no action');
      // The server names each scheduled run `<action workflow id>-<nominal time, RFC 3339>`: a workflow
      // that merely claims the schedule's search attribute cannot also take another id.
      if (!isScheduledRunOf(lin.root, claims.wf!)) {
        throw new UserContextError(
          ErrorCodes.LINEAGE_MISMATCH,
          'not a run of the schedule the token was issued for',
        );
      }
    } else {
      throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'an actor token cannot start a lineage');
    }
    let startedAt = Math.floor(lin.start / 1000);
    let stated = boundStart;
    if (startedAt > claims.exp + this.skew && lateStart) {
      stated = false;
      // The server's word on the run the request names: its root, and when that root's chain started.
      // A new chain started with a copied header after the window is dated late by the server too.
      const confirmed = await lateStart();
      if (confirmed.root !== lin.root)
        throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'the server names another root for the run');
      startedAt = Math.floor(confirmed.chainStart / 1000);
    }
    if (startedAt < claims.iat - this.skew) {
      throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'lineage started before the token was issued');
    }
    if (startedAt > claims.exp + this.skew) {
      // The same workflow id started again after the window: a replay into a new execution chain.
      throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'lineage started after the token start window');
    }
    // The chain is the token's; it must also have started as the token says (start tokens that bind it).
    if (claims.use === 'start' && stated) checkBoundStart(claims, lin, this.requireBoundTokens);
    return { claims, context: this.contextOf(claims) };
  }

  /**
   * Verifies an actor token (signal, update, query): bound to this workflow or its root, within its
   * short window measured now (actors are verified as they act), or at `facts.at` (epoch ms) when given
   * and earlier: the server's time of an activity's first scheduling, so that a retry of an activity the
   * handler scheduled within the window acts as its actor too (found by review: a retry after the
   * window failed for good, though its first attempt had acted).
   */
  async verifyActor(
    header: ContextHeader,
    facts: { namespace: string; workflowId: string; at?: number },
  ): Promise<Verified> {
    const { claims, lin } = await this.prepare(header, facts);
    // Only actor tokens: a start token (forwarded by a workflow or a worker client, or copied from
    // history) never proves who acts now, and has no window that would bound its reuse.
    if (claims.use !== 'actor')
      throw new UserContextError(
        ErrorCodes.LINEAGE_MISMATCH,
        'not an actor token (a start token: what a signal from workflow code or a worker client carries, or one copied from history)',
      );
    if (claims.wf !== lin.wf && claims.wf !== lin.root) {
      throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'actor token was issued for another workflow');
    }
    const current = this.now();
    const at = facts.at !== undefined && facts.at > 0 && facts.at < current ? facts.at : current;
    if (Math.floor(at / 1000) > claims.exp + this.skew)
      throw new UserContextError(ErrorCodes.TOKEN_EXPIRED, 'actor token expired');
    // Retries act for the actor for a day past the window at most: an activity that fails until later
    // (a retry policy never gives up by default) must not carry the actor's authority for ever (found by
    // the round's review).
    if (Math.floor(current / 1000) > claims.exp + this.skew + MAX_WINDOW.actor)
      throw new UserContextError(
        ErrorCodes.TOKEN_EXPIRED,
        'actor token expired: retried past a day after its window',
      );
    checkBoundCall(claims, lin, this.requireBoundTokens);
    return { claims, context: this.contextOf(claims) };
  }

  /** The claims as a validated UserContext, built once per opened token (claims objects are cached). */
  private contextOf(claims: ContextClaims): UserContext {
    let context = this.contexts.get(claims);
    if (!context) {
      context = toContext(claims);
      this.contexts.set(claims, context);
    }
    return context;
  }

  /** Opens the token and runs the checks every use shares: audience, pseudonyms, issue time, lineage. */
  private async prepare(
    header: ContextHeader,
    facts: { namespace: string; workflowId: string },
  ): Promise<{ claims: ContextClaims; lin: Lineage }> {
    const claims = await this.open(header.tok);
    this.checkCommon(header, claims, facts.namespace);
    return { claims, lin: this.requireLineage(header.lin, facts.workflowId) };
  }

  private checkCommon(header: ContextHeader, claims: ContextClaims, namespace: string): void {
    if (claims.aud !== namespace)
      throw new UserContextError(ErrorCodes.AUDIENCE_MISMATCH, 'token was issued for another namespace');
    if (header.ws !== claims.wsh || header.sub !== claims.subh) {
      throw new UserContextError(ErrorCodes.TOKEN_INVALID, 'header pseudonyms differ from the signed ones');
    }
    const ahead = claims.iat - Math.floor(this.now() / 1000) - this.skew;
    // Past the skew by a little, this worker's clock is more likely behind than the token forged ahead
    // (it is signed by the edge): retried, not refused for good (found by review: one worker 45 s behind
    // failed every run whose first activity it took). Far past it, a verdict.
    if (ahead > 0 && ahead <= AHEAD_RETRY_SECONDS) throw new TokenIssuedAheadError(ahead);
    if (ahead > 0) throw new UserContextError(ErrorCodes.TOKEN_EXPIRED, 'token issued in the future');
  }

  private requireLineage(lin: Lineage | undefined, workflowId: string): Lineage {
    if (!lin) throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'no lineage facts in the header');
    if (lin.wf !== workflowId)
      throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'lineage names another workflow');
    return lin;
  }
}

/**
 * A start token that binds how its root started (`wt`, `tq`, `ad`) holds only for a lineage whose root
 * started so: its workflow type and task queue as the root's workflow code stated them in `lin`, or,
 * with the server's lineage, its workflow type, task queue and arguments as the server recorded them.
 * Without it, whoever could read the token from history and start workflows could start the token's
 * workflow id again within its window, as another workflow, elsewhere, or with other arguments, and
 * act as its user (docs/threat-model.md).
 */
function checkBoundStart(claims: ContextClaims, lin: Lineage, required: boolean): void {
  if (claims.wt === undefined) {
    if (!required) return;
    throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'the start token binds no start');
  }
  if (lin.wt === undefined || lin.tq === undefined)
    throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, "the lineage does not state its root's start");
  if (lin.wt !== claims.wt || lin.tq !== claims.tq)
    throw new UserContextError(
      ErrorCodes.LINEAGE_MISMATCH,
      'the lineage root was started as another workflow type or on another task queue than its token binds',
    );
  if (lin.cr !== claims.cr)
    throw new UserContextError(
      ErrorCodes.LINEAGE_MISMATCH,
      'the lineage root was started with another cron schedule than its token binds',
    );
  if (lin.rp !== claims.rp)
    throw new UserContextError(
      ErrorCodes.LINEAGE_MISMATCH,
      claims.rp === undefined
        ? 'the lineage root was started with a retry policy its token does not bind'
        : 'the lineage root was started without the retry policy its token binds',
    );
  // The delay only where a worker read it from the server: workflow code does not know it.
  if (lin.dl !== undefined && lin.dl !== (claims.dl ?? 0))
    throw new UserContextError(
      ErrorCodes.LINEAGE_MISMATCH,
      'the lineage root was started with another start delay than its token binds',
    );
  // Arguments only where a worker read them from the server (`withServerLineage`): no header carries a
  // digest of them (docs/wire-format.md, check 10).
  if (claims.ad !== undefined && lin.ad !== undefined && lin.ad !== claims.ad)
    throw new UserContextError(
      ErrorCodes.LINEAGE_MISMATCH,
      'the lineage root was started with other arguments than its token binds',
    );
}

/**
 * An actor token that binds its call (`nm`) holds only in the handler of that call: a signal or update
 * of that name, as the workflow code that handles it states in `lin` (`hn`). Without it, whoever could
 * read the token from history and send signals or updates could send any other one within its window
 * and act as its user (docs/threat-model.md). Its arguments are not bound: no server record ties an
 * activity to the call whose handler scheduled it, and a digest in the header would expose them.
 */
function checkBoundCall(claims: ContextClaims, lin: Lineage, required: boolean): void {
  if (claims.nm === undefined) {
    if (!required) return;
    throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'the actor token binds no call');
  }
  if (lin.hn !== claims.nm)
    throw new UserContextError(
      ErrorCodes.LINEAGE_MISMATCH,
      lin.hn === undefined
        ? 'the actor acts outside the handler of the call its token was issued for'
        : 'the actor token was issued for another signal or update',
    );
}

function toContext(claims: ContextClaims): UserContext {
  return parseUserContext({ userId: claims.sub, workspaceId: claims.ws, roles: claims.roles });
}
