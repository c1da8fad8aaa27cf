import type { AuditSink } from './audit/event.js';
import { ErrorCodes, UserContextError } from './context/errors.js';
import { ID_PATTERN } from './context/schema.js';
import { KeyRing } from './crypto/keyring.js';
import type { MirrorOptions } from './client/mirror.js';
import type { AesGcmPayloadCodecOptions } from './crypto/payload-codec.js';
import type { NexusCallerPolicy } from './worker/nexus-caller.js';
import type { Verified, VerifierOptions } from './worker/verifier.js';

/** Options of `UserContextPlugin`; the README's configuration table lists them with defaults. */
export interface UserContextPluginOptions {
  /**
   * Key ring. At the edge (API), a ring with the Ed25519 private key: it issues contexts. On workers,
   * a ring without it: workers verify and forward, never mint.
   */
  keys: KeyRing;
  /**
   * The namespace this plugin serves: its tokens' audience, its codec's fallback, and the namespace it
   * replays histories as (the SDK's replayer has none of its own). Default: the namespace of the first
   * client or worker it configures. A client or worker of another namespace (a
   * client without one is in `default`) is refused with `USER_CONTEXT_MISCONFIGURED`. A codec server
   * needs none: `createCodecServer` binds the codec to the namespace it serves.
   */
  namespace?: string;
  /** Audit sinks (default: one pino sink on stdout). */
  audit?: AuditSink | AuditSink[];
  /**
   * Mirror the context into memo / search attributes at start, for the Web UI and audits (never read
   * back as the truth). Default: pseudonyms in the memo, no search attributes. Search attributes are
   * opt-in because the server refuses every start that sets one the namespace has not registered:
   * register `UserId` and `WorkspaceId` (Keyword) first, then set `searchAttributes`.
   */
  mirror?: Partial<MirrorOptions>;
  /** Activity type → system principal names it may run as without a user (default: none). */
  systemActivities?: Record<string, string[]>;
  /**
   * Revocation hook, consulted after verification on every activity (for its originator token and, when
   * it has one, its actor token: a revoked actor does not pass `verifyActor()`) and on every Nexus
   * operation. `true` refuses with `USER_CONTEXT_REVOKED`. The claims it gets are frozen.
   */
  isRevoked?: (verified: Verified) => boolean | Promise<boolean>;
  /** Verifier tuning: clock skew, cache size, `requireBoundTokens` (its test clock `now` is refused here). */
  verifier?: Omit<VerifierOptions, 'now'>;
  /** Start window of start tokens in seconds: an integer from 1 to 86 400 (default 60). */
  startWindowSeconds?: number;
  /**
   * Window of actor tokens (signals, updates, queries) in seconds: an integer from 1 to 86 400 (default
   * 300). `verifyActor()` refuses an actor token after it, plus the verifier's `clockSkewSeconds`
   * (`USER_CONTEXT_TOKEN_EXPIRED`), so it is
   * both how long a copied actor header can act again on its workflow and how long a signal may wait
   * for a worker (an outage, a backlog) and still verify. Set it on the edge's plugin: it issues them.
   */
  actorWindowSeconds?: number;
  /**
   * Nexus callers the handler's worker cannot confirm with the server. A request names its caller in
   * links the caller can overwrite (Server 1.32), so a handler confirms the named run's start attempt
   * and its lineage with its own client (docs/wire-format.md, check 8); that client only reaches its
   * own namespace. `'confirm'` (default) refuses callers of other namespaces. `{ trustLinksFrom }`
   * accepts, on their links alone, requests whose links name one of these namespaces: anyone who can
   * call the endpoint can write such links, so this trusts every caller of the endpoint to replay the
   * tokens of those namespaces that it can read.
   */
  nexusCallers?: NexusCallerPolicy;
  /**
   * Where an activity's lineage facts (its root, and when the root's execution chain started) come
   * from. `'header'` (default): the `lin` facts our workflow interceptor wrote, from `workflowInfo()`.
   * A workflow run by a worker without this plugin can forge them and, with a token copied from
   * history, get activities it schedules onto your task queues run as that token's user
   * (docs/wire-format.md, _Limits_). `'server'`: the worker asks the server for the activity's run
   * (one to three `DescribeWorkflowExecution` per run per worker, cached), which closes that; a chain
   * whose first run is past the namespace's retention is then refused. In either mode, a run whose
   * header dates its lineage after its token's window (a workflow retry after a long first attempt, a
   * cron run) is dated by the server's record of its chain, with the same lookups.
   */
  activityLineage?: 'header' | 'server';
  /**
   * Encrypt payloads (arguments, results, memo, signal/update/query arguments) with the key ring's
   * codec keys: AES-256-GCM bound to namespace and workflow id (docs/codec.md). Default: on when the
   * key set has codec keys. `false` turns it off; an object tunes it. In the plugin,
   * `acceptScheduledRuns` defaults to `true` (schedules' runs need it; the codec class's own default is
   * `false`).
   */
  codec?:
    | boolean
    | Pick<
        AesGcmPayloadCodecOptions,
        'allowPlaintextEncodings' | 'acceptScheduledRuns' | 'acceptNamespaceBound'
      >;
  /**
   * A failure's message and stack trace, while the codec is on: `'encrypted'` (the default) moves them
   * into a payload the codec encrypts (the SDK's `encodeCommonAttributes`), so that history shows
   * `Encoded failure` and the failure's type (a refusal code) until the codec server decodes it;
   * `'clear'` leaves them readable in history. Not applied when the data converter already names a
   * `failureConverterPath` (yours wins). `'encrypted'` with the codec off is `USER_CONTEXT_MISCONFIGURED`,
   * and so is a prebuilt `workflowBundle` built without the converter (`checkWorkflowBundle`). A failed
   * query's caller sees only the message, `Encoded failure`, except for this library's own refusals
   * (type `USER_CONTEXT_…`), which stay readable (docs/codec.md).
   */
  failureMessages?: 'encrypted' | 'clear';
  /**
   * Check a prebuilt `workflowBundle` given to `Worker.create` or the replayer: refuse
   * (`USER_CONTEXT_MISCONFIGURED`) one that does not register this plugin's workflow interceptors, which
   * the SDK would then not run at all, and, on a worker (not the replayer) whose failure messages are
   * encrypted, one without this plugin's failure converter. Default `true`. Set `false` only for a
   * bundle built with the plugin whose module ids a `webpackConfigHook` changed (production mode,
   * deterministic ids) or that the bundler wrote as absolute paths.
   */
  checkWorkflowBundle?: boolean;
  /**
   * Bind a schedule's arguments into the token its `create` issues (claim `ad`): workers then refuse
   * its runs once an update changed them (check 7; change them by re-creating the schedule). Default
   * `true`. The digest is taken over what the SDK's default payload converter delivers, and workers
   * compare the arguments the chain's first run was started with. An edge option (workers compare the
   * claim whenever a token has it): `false` on the clients that create schedules whose arguments need
   * another payload converter, or whose runs continue as new past the namespace's retention (their first
   * run is then gone, and their activities would be refused). Without it, whoever may update such a
   * schedule can change the arguments its runs act on as its creator.
   */
  bindScheduleArguments?: boolean;
  /**
   * Bind a workflow start's arguments into its start token (claim `ad`), as its workflow type and task
   * queue always are (`wt`, `tq`): whoever copies the token from history within its start window cannot
   * start the workflow id again as another workflow, elsewhere or, where workers read the start from the
   * server, with other arguments, as its user (check 10). Default `true`. The digest is taken over what
   * the SDK's default payload converter delivers. Workers compare it where they read the root's first
   * run from the server (`activityLineage: 'server'`, Nexus handlers, and a run whose header dates it
   * after its token's window); otherwise with the header's lineage they compare type and queue only (no
   * header carries a digest of the input: it would expose it). An edge option: `false` on clients whose
   * workflows' arguments need another payload converter (workers that read the start would refuse
   * their activities), at the cost of that binding.
   */
  bindStartArguments?: boolean;
}

/** Every option `UserContextPlugin` takes: any other key is a typo that would silently mean a default. */
// A record over every key of the options type: an option added there and not here fails to compile.
const OPTIONS: ReadonlySet<string> = new Set(
  Object.keys({
    keys: true,
    namespace: true,
    audit: true,
    mirror: true,
    systemActivities: true,
    isRevoked: true,
    verifier: true,
    startWindowSeconds: true,
    actorWindowSeconds: true,
    nexusCallers: true,
    activityLineage: true,
    codec: true,
    failureMessages: true,
    checkWorkflowBundle: true,
    bindScheduleArguments: true,
    bindStartArguments: true,
  } satisfies Record<keyof UserContextPluginOptions, true>),
);
const VERIFIER_OPTIONS: ReadonlySet<string> = new Set([
  'clockSkewSeconds',
  'cacheSize',
  'requireBoundTokens',
]);
const CODEC_OPTIONS: ReadonlySet<string> = new Set([
  'allowPlaintextEncodings',
  'acceptScheduledRuns',
  'acceptNamespaceBound',
]);

function misconfigured(reason: string): never {
  throw new UserContextError(ErrorCodes.MISCONFIGURED, reason);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** The key named in a refusal: a name as written in code, or a placeholder (never odd input echoed). */
function named(key: string): string {
  return /^[A-Za-z0-9_]{1,64}$/.test(key) ? key : '(unprintable)';
}

function onlyKeys(value: Record<string, unknown>, allowed: ReadonlySet<string>, what: string): void {
  for (const key of Object.keys(value))
    if (!allowed.has(key)) misconfigured(`${what}: unknown option ${named(key)}`);
}

function booleanOrUndefined(value: unknown, what: string): void {
  // A truthiness check would read 'false' or 'no' (an environment variable) as on, and 0 as off.
  if (value !== undefined && typeof value !== 'boolean') misconfigured(`${what} must be true or false`);
}

function isSink(value: unknown): value is AuditSink {
  return typeof value === 'object' && value !== null && typeof (value as AuditSink).emit === 'function';
}

/**
 * Refuses, with `USER_CONTEXT_MISCONFIGURED`, plugin options outside what docs/operations.md
 * describes, before anything is built: unknown keys, and options whose wrong type would otherwise turn
 * a protection off without a word (`isRevoked: false`, `codec: 0`, `acceptNamespaceBound: 'false'`,
 * `audit: []`). The number options and `mirror`, `activityLineage`, `failureMessages` and
 * `nexusCallers` are checked where they are read.
 */
export function validatePluginOptions(options: unknown): asserts options is UserContextPluginOptions {
  if (!isPlainObject(options)) misconfigured('plugin options must be an object');
  onlyKeys(options, OPTIONS, 'UserContextPlugin');
  if (!(options.keys instanceof KeyRing))
    misconfigured(
      'keys must be a KeyRing of this package (KeyRing.fromEnv(), fromFile or fromJSON; one made by another copy of the package is not)',
    );
  const { namespace, audit, systemActivities, isRevoked, verifier, codec } = options;
  if (
    namespace !== undefined &&
    (typeof namespace !== 'string' || namespace.length === 0 || namespace.length > 1000)
  )
    misconfigured('namespace must be a non-empty string');
  if (audit !== undefined) {
    // Every decision is audited somewhere: none at all is a refusal, not a quiet default.
    const sinks = Array.isArray(audit) ? audit : [audit];
    if (sinks.length === 0 || !sinks.every(isSink))
      misconfigured('audit must be a sink (an object with emit) or a non-empty list of them');
    if (new Set(sinks).size !== sinks.length) misconfigured('audit: the same sink is listed twice');
  }
  if (systemActivities !== undefined) {
    if (!isPlainObject(systemActivities))
      misconfigured('systemActivities must be an object: activity type -> system principal names');
    for (const principals of Object.values(systemActivities)) {
      if (
        !Array.isArray(principals) ||
        !principals.every((p) => typeof p === 'string' && ID_PATTERN.test(p)) ||
        new Set(principals).size !== principals.length
      )
        misconfigured('systemActivities: each activity type needs a list of distinct system principal names');
    }
  }
  if (isRevoked !== undefined && typeof isRevoked !== 'function')
    misconfigured('isRevoked must be a function (verified) => boolean | Promise<boolean>');
  if (verifier !== undefined) {
    if (!isPlainObject(verifier)) misconfigured('verifier must be an object');
    // `ContextVerifier`'s test clock (`now`) is not a plugin option: a clock that returns NaN turns
    // every window check off.
    onlyKeys(verifier, VERIFIER_OPTIONS, 'verifier');
    booleanOrUndefined(verifier.requireBoundTokens, 'verifier.requireBoundTokens');
  }
  if (codec !== undefined && typeof codec !== 'boolean') {
    if (!isPlainObject(codec)) misconfigured('codec must be true, false or an object of codec options');
    onlyKeys(codec, CODEC_OPTIONS, 'codec');
    booleanOrUndefined(codec.acceptScheduledRuns, 'codec.acceptScheduledRuns');
    booleanOrUndefined(codec.acceptNamespaceBound, 'codec.acceptNamespaceBound');
    const encodings = codec.allowPlaintextEncodings;
    if (
      encodings !== undefined &&
      (!Array.isArray(encodings) || !encodings.every((e) => typeof e === 'string'))
    )
      misconfigured('codec.allowPlaintextEncodings must be a list of encodings');
  }
  booleanOrUndefined(options.checkWorkflowBundle, 'checkWorkflowBundle');
  booleanOrUndefined(options.bindScheduleArguments, 'bindScheduleArguments');
  booleanOrUndefined(options.bindStartArguments, 'bindStartArguments');
}
