import { validatePluginOptions } from './plugin-options.js';
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  defaultGrpcRetryOptions,
  makeGrpcRetryInterceptor,
  type ClientOptions,
  type ConnectionOptions,
} from '@temporalio/client';
import {
  ApplicationFailure,
  defaultPayloadConverter,
  type Payload,
  type PayloadCodec,
  type SerializationContext,
} from '@temporalio/common';
import type { WorkflowInfo } from '@temporalio/workflow';
import { SimplePlugin } from '@temporalio/plugin';
import type {
  BundleOptions,
  InjectedSinks,
  PatchActivationCallback,
  ReplayWorkerOptions,
  WorkerOptions,
} from '@temporalio/worker';
import {
  REJECTED_BY_VALIDATOR,
  type AuditDecision,
  type AuditSink,
  type IdentitySource,
} from './audit/event.js';
import { markRecorded } from './audit/recorded.js';
import { Auditor, pinoAuditSink } from './audit/sinks.js';
import {
  UserContextScheduleClientInterceptor,
  UserContextWorkflowClientInterceptor,
  standaloneInterceptors,
} from './client/interceptors.js';
import { mirrorOptionsOf, mirrorQuery, type MirrorOptions, type MirrorQueryIds } from './client/mirror.js';
import { controlCallsInterceptor, type UpdatedAction } from './client/control-calls.js';
import { edgeUser } from './client/scope.js';
import { ContextSource } from './client/source.js';
import type { KeyRing } from './crypto/keyring.js';
import { AesGcmPayloadCodec, type AesGcmPayloadCodecOptions } from './crypto/payload-codec.js';
import type { UserContextSinks } from './workflow/interceptors.js';
import { WHOAMI_ACTIVITY, WHOIS_ACTOR_ACTIVITY } from './workflow/activity-names.js';
import { ActivityGuard } from './worker/activity-interceptor.js';
import { nexusCallerPolicyOf, type NexusCallerPolicy } from './worker/nexus-caller.js';
import { ActivityLineageCheck, FirstRunStarts } from './worker/server-lineage.js';
import { OWN_PATCHES } from './workflow/patches.js';
import { NexusGuard } from './worker/nexus-interceptor.js';
import { ScheduledRunCheck } from './worker/scheduled-run.js';
import { currentActor, currentUserContext } from './worker/resolve.js';
import { currentScope } from './worker/scope.js';
import { withUserPseudonyms } from './worker/log-attributes.js';
import { ContextVerifier, type Verified, type VerifierOptions } from './worker/verifier.js';
import { ErrorCodes, UserContextError, isUserContextError } from './context/errors.js';
import { ORIGINATOR_HEADER, decodeHeader, type ContextHeader } from './header/wire.js';
import { openContextToken } from './crypto/open.js';
import { argsDigest } from './crypto/args-digest.js';

/** Options of {@link UserContextPlugin}; the README's configuration table lists them with defaults. */
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

const here = fileURLToPath(import.meta.url);

/**
 * The module id under which the SDK's bundler (webpack, development mode) registers this package's
 * workflow interceptor module: a path relative to where the bundle was built, ending in the package's
 * directory, its source or build folder and `workflow/interceptors`. Matched without touching the file
 * system, so that it holds for bundles built on another machine, and for workers that are bundled
 * themselves. Quotes may be escaped (`devtool: 'eval'`).
 */
const REGISTERED_INTERCEPTORS =
  /\/temporal-user-context\/(?:[\w.-]+\/)?workflow\/interceptors\.[cm]?[jt]s\\?"/;

/**
 * The module id under which the bundler registers this package's failure converter as the sandbox's
 * custom one (`failureConverterPath`), matched the same way.
 */
const REGISTERED_FAILURE_CONVERTER =
  /__temporal_custom_failure_converter \*\/ \\?"[^"\\]*\/temporal-user-context\/(?:[\w.-]+\/)?failure-converter\.cjs\\?"/;

/**
 * Refuses a prebuilt workflow bundle that does not register the workflow interceptors. Given a bundle,
 * the SDK ignores the interceptor modules plugins add, and a bundle built without this plugin would run
 * workflows with no check at start, no actor policy and no audit. The bundler lists the modules it
 * registers in the bundle's `importInterceptors` function: the check looks there (the workflow API
 * imports the interceptor module too, so finding it elsewhere in the bundle proves nothing).
 */
function assertBundledWithPlugin(
  bundle: NonNullable<WorkerOptions['workflowBundle']>,
  failureConverter: boolean,
): void {
  const code = 'code' in bundle ? bundle.code : readFileSync(bundle.codePath, 'utf8');
  const start = code.indexOf('function importInterceptors()');
  const end = code.indexOf('];', start);
  if (start < 0 || end < 0 || !REGISTERED_INTERCEPTORS.test(code.slice(start, end))) {
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "the workflow bundle does not register this plugin's workflow interceptors, so its workflows " +
        'would run unchecked: build it with bundleWorkflowCode({ workflowsPath, plugins: [plugin] }) ' +
        '(or, for a bundle whose module ids a webpack hook changed, set checkWorkflowBundle: false)',
    );
  }
  // A bundle built before failure messages were encrypted, or with failureMessages: 'clear', would keep
  // what workflows fail with in clear while this worker's activities encrypt theirs.
  if (failureConverter && !REGISTERED_FAILURE_CONVERTER.test(code))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "the workflow bundle does not have this plugin's failure converter, so what its workflows fail " +
        'with would be in clear in history: build it with bundleWorkflowCode({ workflowsPath, plugins: ' +
        '[plugin] }) and the same failureMessages, or pass it failureConverterPath (exported by this ' +
        'package); for a bundle whose module ids a webpack hook changed, set checkWorkflowBundle: false',
    );
}

/**
 * The failure converter module installed while the codec is on (`failureMessages`): clients and workers
 * require() it, the bundler puts it into the workflow sandbox.
 */
export const failureConverterPath = fileURLToPath(new URL('./failure-converter.cjs', import.meta.url));

/** The workflow interceptor module, bundled into the workflow sandbox by the worker. */
export const workflowInterceptorsPath = fileURLToPath(
  new URL(`./workflow/interceptors${extname(here)}`, import.meta.url),
);

/** Whether each list holds its part exactly once (a part that is undefined: not contributed). */
function complete(pairs: ReadonlyArray<readonly [unknown, unknown]>): boolean {
  return pairs.every(
    ([list, part]) =>
      part === undefined || (Array.isArray(list) && list.filter((x) => x === part).length === 1),
  );
}

/** `holder[key]` without this package's workflow interceptor module (a plugin adds it back once). */
function withoutModule<T extends object, K extends keyof T>(holder: T, key: K): Partial<Pick<T, K>> {
  const list = holder[key];
  if (!Array.isArray(list)) return {};
  return { [key]: list.filter((path) => path !== workflowInterceptorsPath) } as Partial<Pick<T, K>>;
}

/**
 * What each plugin contributed to options (interceptor instances and factories, its codec), to the
 * plugin: a plugin configuring options again finds its own and any other's.
 */
const contributions = new WeakMap<object, UserContextPlugin>();

/**
 * `configured` (what `SimplePlugin` resolved) with the application's interceptors it left out, and this
 * plugin's standalone interceptors (`own`) added once: SDK 1.24's plugin rebuilds client interceptors
 * from `workflow` and `schedule` only, and worker interceptors from `client`, `activity`, `nexus` and
 * `workflowModules`, so an application's `nexus` and `activity` client interceptors and a worker's
 * `activityInbound` factories were silently dropped, and a plugin's own could not be given.
 */
function keptClient(
  given: ClientOptions['interceptors'],
  configured: ClientOptions['interceptors'],
  own: ReturnType<typeof standaloneInterceptors>,
): NonNullable<ClientOptions['interceptors']> {
  const merged = given ? { ...given, ...configured } : { ...configured };
  return {
    ...merged,
    activity: [...(merged.activity ?? []).filter((i) => i !== own.activity), own.activity],
    nexus: [...(merged.nexus ?? []).filter((i) => i !== own.nexus), own.nexus],
  };
}

/** Distinct client codec lists a plugin keeps for the schedule update check. */
const MAX_CLIENT_CODEC_CHAINS = 8;

/**
 * A schedule action's arguments, as each codec list that decodes them reads them: the lists of the
 * clients this plugin configured, else this plugin's codec alone; each result read with the SDK's
 * default payload converter, as `bindScheduleArguments` digests them. Empty when none decodes them.
 * Every list is tried (found by the round's review: the first that decoded without an error answered,
 * and a client's list that passes payloads through, or reads them otherwise, refused an update that
 * kept the arguments, depending on which client was made last): no wrong list yields the token's digest.
 */
async function decodedArguments(
  chains: readonly (readonly PayloadCodec[])[],
  own: PayloadCodec | undefined,
  payloads: Payload[],
  context: SerializationContext,
): Promise<unknown[][]> {
  const tried = chains.length > 0 ? chains : [own ? [own] : []];
  const readings: unknown[][] = [];
  for (const chain of tried) {
    try {
      let plain = payloads;
      for (let i = chain.length - 1; i >= 0; i--) plain = await chain[i]!.decode(plain, context);
      readings.push(plain.map((p) => defaultPayloadConverter.fromPayload(p)));
    } catch {
      // Not this list's: another may read them.
    }
  }
  return readings;
}

/**
 * Refuses a client whose plugins (a `Client`'s, then its `Connection`'s) give, after `ours`, a
 * `SimplePlugin` that would undo part of this plugin without a word:
 *
 * - client interceptors: SDK 1.24's `SimplePlugin` rebuilds a client's interceptors from `workflow` and
 *   `schedule` only, dropping this plugin's standalone activity and Nexus checks (a call with no user in
 *   scope refused at the edge, and audited; found by review: the OpenTelemetry plugin listed after
 *   this one);
 * - a data converter with payload codecs, or a failure converter, while this plugin's are on: it
 *   replaces the lists, and the client then writes history unencrypted (found by the round's review);
 *   on a worker too, where only this case applies (its client interceptors are the SDK's own).
 *
 * Listed before this one, such a plugin is harmless (this plugin puts back what it dropped). Parameters
 * given as functions, and plugins of other classes, may keep what they are given: they cannot be judged
 * from here.
 */
function refuseLaterRebuilds(
  ours: UserContextPlugin,
  plugins: readonly unknown[] | undefined,
  own: { codec: boolean; failureConverter: boolean },
  kind: 'client' | 'worker' = 'client',
): void {
  const at = plugins?.lastIndexOf(ours) ?? -1;
  if (at < 0) return;
  for (const later of plugins!.slice(at + 1)) {
    if (later instanceof UserContextPlugin || !(later instanceof SimplePlugin)) continue;
    // `options` is SimplePlugin's own (protected) record of what the plugin gives.
    const given = (
      later as unknown as { options?: { clientInterceptors?: unknown; dataConverter?: unknown } }
    ).options;
    const converter = given?.dataConverter as
      { payloadCodecs?: unknown; failureConverterPath?: unknown } | undefined;
    const drops = [
      kind === 'client' &&
      given?.clientInterceptors !== undefined &&
      typeof given.clientInterceptors !== 'function'
        ? 'its standalone activity and Nexus checks (SimplePlugin rebuilds client interceptors)'
        : undefined,
      own.codec && typeof converter === 'object' && converter?.payloadCodecs !== undefined
        ? 'its payload codec (a data converter with codecs replaces the list)'
        : undefined,
      own.failureConverter && typeof converter === 'object' && converter?.failureConverterPath !== undefined
        ? 'its failure converter'
        : undefined,
    ].filter((what) => what !== undefined);
    if (drops.length > 0)
      throw new UserContextError(
        ErrorCodes.MISCONFIGURED,
        `the ${kind} plugin ${JSON.stringify(later.name)}, listed after UserContextPlugin, would drop ${drops.join(' and ')}: list UserContextPlugin after it (a ${kind === 'client' ? "Connection's plugins come after the Client's" : "NativeConnection's plugins come after the Worker's"})`,
      );
  }
}

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

/**
 * The single door: give it to `Client` (or its `Connection`) at the edge and to `Worker` on workers;
 * given to both, or twice around another plugin, it registers once. A second `UserContextPlugin` on one
 * client or worker is refused (`USER_CONTEXT_MISCONFIGURED`). One plugin serves one namespace: a client or worker of another
 * namespace is refused (`USER_CONTEXT_MISCONFIGURED`), so use one plugin per namespace.
 * It registers client and schedule interceptors (and those of standalone activities and Nexus
 * operations, which it refuses with no user in scope), the worker's own client interceptors, the
 * activity guard, the workflow interceptors (sandbox), the audit sink and the verification activities,
 * and keeps the application's own interceptors.
 *
 * Given to a client `Connection`, it is passed to every `Client` built on it (one namespace per
 * connection, then; the SDK does not pass it to a `WorkflowClient` or `ScheduleClient` built alone on
 * the connection), and also audits the calls no client interceptor sees: schedule changes, and
 * activities completed, failed or cancelled by an `AsyncCompletionClient`.
 *
 * @example
 * const plugin = new UserContextPlugin({ keys: KeyRing.fromEnv() });
 * const client = new Client({ connection: await Connection.connect({ address, plugins: [plugin] }) });
 * // On a worker machine (the worker key ring):
 * const worker = await Worker.create({
 *   connection: await NativeConnection.connect({ address }),
 *   taskQueue: 'agent-tasks', workflowsPath, activities,
 *   plugins: [new UserContextPlugin({ keys: KeyRing.fromEnv() })],
 * });
 */
export class UserContextPlugin extends SimplePlugin {
  /**
   * Where this plugin's decisions go (the `audit` sinks): give it to the code that makes decisions of
   * its own under the same trail, such as `withUserScope({ auditor })` outside activities or
   * `createCodecServer({ auditor })`.
   */
  readonly auditor: Auditor;
  /** The verifier workers use (key ring, clock skew, token cache); exposed for diagnostics and tests. */
  readonly verifier: ContextVerifier;
  /**
   * The payload codec, when enabled (`undefined` when the codec is off): give the same instance to a
   * codec server, which binds it to the namespace it serves (`createCodecServer({ codec, namespace })`).
   */
  readonly codec: AesGcmPayloadCodec | undefined;
  private readonly scope: { namespace: string };
  private readonly mirror: MirrorOptions;
  /**
   * The option objects this plugin returned: given them again (the SDK applies a plugin given to both a
   * connection and its client or worker twice in a row), it returns them as they are. Not recognised by
   * their contents: interceptors a caller copies from a configured client prove nothing.
   */
  private readonly configured = new WeakSet<object>();
  /**
   * The payload codecs of the clients this plugin configured, each list once (at most
   * {@link MAX_CLIENT_CODEC_CHAINS}, the least recently configured dropped first): the schedule update
   * check decodes an action's arguments as a client encoded them. With only this plugin's codec, an application's own codec left the arguments
   * unreadable and the check let every update through (found by review).
   */
  private readonly clientCodecs: (readonly PayloadCodec[])[] = [];
  /** The client connection's gRPC interceptor auditing calls no client interceptor sees ({@link configureConnection}). */
  private readonly controlCalls: ReturnType<typeof controlCallsInterceptor>;
  /** Whether bundles get the failure converter that moves messages into encrypted payloads. */
  private readonly encryptFailures: boolean;
  /** Client interceptors of standalone activities and Nexus operations (added after SimplePlugin's). */
  private readonly standalone: ReturnType<typeof standaloneInterceptors>;
  /** This plugin's contributions, by where they go (see {@link complete}). */
  private readonly parts: {
    workflow: object;
    schedule: object;
    activity: object;
    nexus: object;
    codec: object | undefined;
  };
  /** The `patchActivationCallback`s this plugin made (see {@link withOwnPatches}). */
  private readonly patchCallbacks = new WeakSet<PatchActivationCallback>();
  /** The namespace of the first client or worker configured (see {@link bindNamespace}). */
  private boundNamespace: string | undefined;

  constructor(private readonly pluginOptions: UserContextPluginOptions) {
    validatePluginOptions(pluginOptions);
    const sinks =
      pluginOptions.audit === undefined ? [pinoAuditSink()] : ([] as AuditSink[]).concat(pluginOptions.audit);
    const auditor = new Auditor(sinks);
    const scope = { namespace: pluginOptions.namespace ?? 'default' };
    const mirror = mirrorOptionsOf(pluginOptions.mirror);
    // The namespace is read when a call happens, so that configureClient/configureWorker can set it.
    const source = new ContextSource({
      ring: pluginOptions.keys,
      get namespace() {
        return scope.namespace;
      },
      auditor,
      mirror,
      // Passed as given: 0 and NaN must reach the source's check and be refused, not mean the default.
      startWindowSeconds: pluginOptions.startWindowSeconds,
      actorWindowSeconds: pluginOptions.actorWindowSeconds,
      bindStartArguments: pluginOptions.bindStartArguments !== false,
    });
    const verifier = new ContextVerifier(pluginOptions.keys, pluginOptions.verifier);
    const scheduledRuns = new ScheduledRunCheck(verifier.skewSeconds * 1000);
    // One per worker: the SDK builds the Nexus guard anew for every request.
    const nexusStarts = new FirstRunStarts();
    // Only undefined means the default: null, like any other value, must be refused, not read as it.
    const callerPolicy = nexusCallerPolicyOf(pluginOptions.nexusCallers);
    const activityLineage = pluginOptions.activityLineage;
    if (activityLineage !== undefined && activityLineage !== 'header' && activityLineage !== 'server') {
      throw new UserContextError(ErrorCodes.MISCONFIGURED, "activityLineage must be 'header' or 'server'");
    }
    // The server's lineage of activities' runs: of every run with `activityLineage: 'server'`, else of
    // those whose header dates them after their token's window (workflow retries, cron runs).
    const lineage = new ActivityLineageCheck();
    const clientInterceptors = {
      workflow: [new UserContextWorkflowClientInterceptor(source)],
      schedule: [
        new UserContextScheduleClientInterceptor(source, pluginOptions.bindScheduleArguments !== false),
      ],
    };
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
    super({
      name: 'UserContextPlugin',
      // Appended after any codec the application already has: ours runs last on encode, first on decode.
      ...(registered
        ? {
            dataConverter: (existing) => ({
              ...existing,
              payloadCodecs: [...(existing?.payloadCodecs ?? []), registered],
              ...(encryptFailures && !existing?.failureConverterPath ? { failureConverterPath } : {}),
            }),
          }
        : {}),
      clientInterceptors,
      workerInterceptors: {
        client: clientInterceptors,
        workflowModules: [workflowInterceptorsPath],
        activity: [
          (ctx) => ({
            inbound: new ActivityGuard(ctx, {
              verifier,
              auditor,
              systemActivities: pluginOptions.systemActivities ?? {},
              scheduledRuns,
              lineage,
              serverLineage: activityLineage === 'server',
              ...(pluginOptions.isRevoked ? { isRevoked: pluginOptions.isRevoked } : {}),
            }),
            outbound: { getLogAttributes: (input, next) => next(withUserPseudonyms(input)) },
          }),
        ],
        nexus: [
          () => ({
            inbound: new NexusGuard({
              ring: pluginOptions.keys,
              verifier,
              auditor,
              scheduledRuns,
              callerPolicy,
              starts: nexusStarts,
              ...(pluginOptions.isRevoked ? { isRevoked: pluginOptions.isRevoked } : {}),
            }),
            outbound: { getLogAttributes: (input, next) => next(withUserPseudonyms(input)) },
          }),
        ],
      },
      activities: {
        [WHOAMI_ACTIVITY]: async () => currentUserContext(),
        [WHOIS_ACTOR_ACTIVITY]: async () => {
          const actor = currentActor();
          if (!actor) {
            // No actor header at all (a refused one throws in currentActor(), audited by the guard):
            // workflow code asked outside a handler's actor, by the activity's name. A refusal too, on
            // the record with the activity's ids (currentActor() found its scope, so it is there).
            const scope = currentScope()!;
            scope.auditor.emit({
              ...scope.audit,
              action: 'activity.actor',
              decision: 'deny',
              source: 'none',
              reason: ErrorCodes.MISSING,
              detail: 'no actor header',
            });
            throw markRecorded(new UserContextError(ErrorCodes.MISSING, 'no actor'));
          }
          return actor;
        },
      },
    });
    this.auditor = auditor;
    this.verifier = verifier;
    this.codec = codec;
    this.scope = scope;
    this.mirror = mirror;
    this.encryptFailures = encryptFailures;
    this.controlCalls = controlCallsInterceptor(
      (action, target, refusal) => source.recordControlCall(action, target, refusal),
      {
        header: ORIGINATOR_HEADER,
        check: (updated) =>
          scheduleUpdateRefusal(pluginOptions.keys, updated, (payloads) =>
            // The arguments as the SDK encoded them for the action's workflow id, through a client's
            // codecs: decoded the same way.
            decodedArguments(this.clientCodecs, this.codec, payloads, {
              type: 'workflow',
              namespace: updated.namespace,
              workflowId: updated.workflowId,
            }),
          ),
      },
      (action, target) => source.scheduleControlRefusal(action, target),
      // Payloads bound to no workflow are refused inside workflows unless the codec accepts them.
      codec !== undefined &&
        !(typeof codecOptions === 'object' && codecOptions.acceptNamespaceBound === true),
    );
    this.standalone = standaloneInterceptors(source);
    const worker = this.options.workerInterceptors as { activity: object[]; nexus: object[] };
    this.parts = {
      workflow: clientInterceptors.workflow[0]!,
      schedule: clientInterceptors.schedule[0]!,
      activity: worker.activity[0]!,
      nexus: worker.nexus[0]!,
      codec: registered,
    };
    for (const part of [
      ...clientInterceptors.workflow,
      ...clientInterceptors.schedule,
      ...worker.activity,
      ...worker.nexus,
      ...(registered ? [registered] : []),
    ])
      contributions.set(part, this);
  }

  /**
   * The list filter that finds what this plugin's search-attribute mirror writes for a user, a
   * workspace or both, on workflows and schedules ({@link mirrorQuery}). A narrowing for listings,
   * never an authorisation: check what it finds. Children started by workflow code show their parent's
   * mirrors, so it finds them too.
   *
   * @throws {@link UserContextError} `USER_CONTEXT_MISCONFIGURED` when that mirror is off (the default:
   *   see {@link UserContextPlugin.searchAttributeMirror}): no filter would list everyone's work; or when
   *   no id is given. `USER_CONTEXT_INVALID` for a malformed id.
   *
   * @example
   * const query = plugin.mirrorQuery({ workspaceId: 'ws-acme' }); // 'WorkspaceId = "qfTG…"'
   * for await (const s of client.schedule.list({ query })) ...
   */
  mirrorQuery(ids: MirrorQueryIds): string {
    return mirrorQuery(this.mirror.searchAttributes, this.pluginOptions.keys, ids);
  }

  /** What this plugin's search-attribute mirror writes: `'off'` (the default), `'plain'` or `'pseudonym'`. */
  get searchAttributeMirror(): MirrorOptions['searchAttributes'] {
    return this.mirror.searchAttributes;
  }

  /**
   * Given to a client `Connection` (`Connection.connect({ plugins: [plugin] })`, which also passes it to
   * every client of the connection), the plugin audits the schedule calls that no client interceptor
   * sees: `schedule.update`, `schedule.delete` and `schedule.patch` (trigger, backfill, pause, unpause),
   * with who asked, through a gRPC interceptor placed outside the SDK's retry interceptor (once per call).
   */
  override configureConnection(options: ConnectionOptions): ConnectionOptions {
    const configured = super.configureConnection(options);
    // No interceptors means the SDK's default: its retry interceptor, which must stay.
    const interceptors = configured.interceptors ?? [makeGrpcRetryInterceptor(defaultGrpcRetryOptions())];
    if (interceptors.includes(this.controlCalls)) return configured;
    return { ...configured, interceptors: [this.controlCalls, ...interceptors] };
  }

  override configureClient(options: ClientOptions): ClientOptions {
    // Given to both a Connection and its Client, the SDK applies the plugin twice: once is enough (twice
    // issued two tokens per call and encrypted every payload twice).
    if (this.configured.has(options)) return options;
    this.bindNamespace(options.namespace ?? 'default');
    refuseLaterRebuilds(this, options.plugins, {
      codec: this.parts.codec !== undefined,
      failureConverter: this.encryptFailures,
    });
    const interceptors = options.interceptors;
    this.refuseOthers(
      [interceptors?.workflow, interceptors?.schedule, options.dataConverter?.payloadCodecs],
      'client',
    );
    // Configured by this plugin, then by another (`plugins: [p, other, p]`): left as it is, in the
    // order the first configuration gave it.
    if (
      complete([
        [interceptors?.workflow, this.parts.workflow],
        [interceptors?.schedule, this.parts.schedule],
        [options.dataConverter?.payloadCodecs, this.parts.codec],
      ])
    )
      // Another SimplePlugin configured after this one rebuilt the client interceptors without the
      // standalone ones: added back (once).
      return this.rememberClient({
        ...options,
        interceptors: keptClient(interceptors, interceptors, this.standalone),
      });
    const configured = super.configureClient({
      ...options,
      ...(interceptors ? { interceptors: this.withoutOwnClient(interceptors) } : {}),
      ...this.withoutOwnCodec(options.dataConverter),
    });
    return this.rememberClient({
      ...configured,
      interceptors: keptClient(interceptors, configured.interceptors, this.standalone),
    });
  }

  override configureWorker(given: WorkerOptions): WorkerOptions {
    if (this.configured.has(given)) return given;
    // A data converter of a plugin listed after this one replaces its codec or failure converter on the
    // worker as on a client (found by the round's docs check): refused the same way.
    refuseLaterRebuilds(
      this,
      given.plugins,
      { codec: this.parts.codec !== undefined, failureConverter: this.encryptFailures },
      'worker',
    );
    const options = this.withOwnPatches(given);
    if (options.workflowBundle && this.pluginOptions.checkWorkflowBundle !== false)
      assertBundledWithPlugin(options.workflowBundle, this.installsFailureConverter(options));
    this.bindNamespace(options.namespace ?? 'default');
    const sinks = { ...options.sinks, ...this.sinks() };
    const ownActivities = this.options.activities ?? {};
    if (
      this.workerComplete(options, 'worker') &&
      Object.entries(ownActivities).every(
        ([name, fn]) => (options.activities as Record<string, unknown> | undefined)?.[name] === fn,
      )
    )
      return this.remember({ ...options, sinks });
    const configured = super.configureWorker(this.withoutOwnParts(options, sinks));
    const interceptors = options.interceptors;
    // The application's `activityInbound` factories and its worker client's `nexus` and `activity`
    // interceptors, which SimplePlugin leaves out (see keptClient). SDK 1.24 then compiles a worker's own
    // client with its `workflow` and `schedule` interceptors only: this plugin adds no others there.
    if (!interceptors) return this.remember(configured);
    return this.remember({
      ...configured,
      interceptors: {
        ...interceptors,
        ...configured.interceptors,
        client: { ...interceptors.client, ...configured.interceptors?.client },
      },
    });
  }

  /** Whether these worker options get (or already have) this plugin's failure converter. */
  private installsFailureConverter(options: WorkerOptions | ReplayWorkerOptions): boolean {
    const path = options.dataConverter?.failureConverterPath;
    return this.encryptFailures && (path === undefined || path === failureConverterPath);
  }

  /** Refuses another UserContextPlugin's contributions in `lists`. */
  private refuseOthers(lists: readonly unknown[], what: string): void {
    for (const list of lists) {
      if (!Array.isArray(list)) continue;
      for (const part of list as unknown[]) {
        const owner =
          (typeof part === 'object' && part !== null) || typeof part === 'function'
            ? contributions.get(part)
            : undefined;
        if (owner !== undefined && owner !== this)
          throw new UserContextError(
            ErrorCodes.MISCONFIGURED,
            `this ${what} already has another UserContextPlugin: give a client or worker one`,
          );
      }
    }
  }

  /**
   * Whether worker (or replay worker) options hold every interceptor, the codec and, when the worker
   * bundles its workflows, the workflow interceptor module of this plugin, each once. Refuses another
   * UserContextPlugin's.
   */
  private workerComplete(options: WorkerOptions | ReplayWorkerOptions, what: string): boolean {
    const i = options.interceptors;
    const codecs = options.dataConverter?.payloadCodecs;
    this.refuseOthers([i?.activity, i?.nexus, i?.client?.workflow, i?.client?.schedule, codecs], what);
    return (
      complete([
        [i?.activity, this.parts.activity],
        [i?.nexus, this.parts.nexus],
        [i?.client?.workflow, this.parts.workflow],
        [i?.client?.schedule, this.parts.schedule],
        [codecs, this.parts.codec],
      ]) &&
      (options.workflowsPath === undefined || complete([[i?.workflowModules, workflowInterceptorsPath]]))
    );
  }

  /**
   * Options this plugin configured before, and that another plugin then changed (`plugins: [p, other,
   * p]`), are not recognised as returned. When they hold all of `p`'s contributions they are left as
   * they are (in the order the first configuration gave them: the codec order must match the other
   * side's); when they hold some (interceptors copied from a configured client), those are taken out
   * before all are added, so that none is there twice (two tokens per call, two verifications and audit
   * records per activity, every payload encrypted twice). Another UserContextPlugin's are refused: one
   * client or worker takes one.
   *
   * This helper: `holder[key]` without this plugin's contributions (another plugin's were refused
   * already).
   */
  private withoutOwn<T extends object, K extends keyof T>(holder: T, key: K): Partial<Pick<T, K>> {
    const list = holder[key];
    if (!Array.isArray(list)) return {};
    return { [key]: list.filter((part: object) => contributions.get(part) !== this) } as Partial<Pick<T, K>>;
  }

  /** Worker or replay options without this plugin's parts, with its sinks: ready to add them once. */
  private withoutOwnParts<T extends WorkerOptions | ReplayWorkerOptions>(options: T, sinks: T['sinks']): T {
    const interceptors = options.interceptors;
    return {
      ...options,
      ...(interceptors ? { interceptors: this.withoutOwnWorker(interceptors) } : {}),
      ...this.withoutOwnCodec(options.dataConverter),
      sinks,
    };
  }

  private withoutOwnWorker<T extends NonNullable<WorkerOptions['interceptors']>>(interceptors: T): T {
    return {
      ...interceptors,
      ...(interceptors.client ? { client: this.withoutOwnClient(interceptors.client) } : {}),
      ...this.withoutOwn(interceptors, 'activity'),
      ...this.withoutOwn(interceptors, 'nexus'),
      ...withoutModule(interceptors, 'workflowModules'),
    };
  }

  private withoutOwnClient<T extends NonNullable<ClientOptions['interceptors']>>(interceptors: T): T {
    return {
      ...interceptors,
      ...this.withoutOwn(interceptors as { workflow?: unknown }, 'workflow'),
      ...this.withoutOwn(interceptors as { schedule?: unknown }, 'schedule'),
    };
  }

  private withoutOwnCodec(
    dataConverter: ClientOptions['dataConverter'],
  ): Pick<ClientOptions, 'dataConverter'> | Record<string, never> {
    if (!dataConverter?.payloadCodecs) return {};
    return { dataConverter: { ...dataConverter, ...this.withoutOwn(dataConverter, 'payloadCodecs') } };
  }

  /**
   * Adds the workflow interceptor module to the bundle's preloaded modules: with reusable V8 contexts
   * (the SDK's default) it and its imports are evaluated once per context instead of once per
   * workflow. It is safe to share: it keeps per-workflow state on the workflow's own global object
   * and exports nothing mutable (the SDK freezes what a preloaded module exports).
   */
  override configureBundler(options: BundleOptions): BundleOptions {
    if (this.configured.has(options)) return options;
    if (
      options.preloadModules?.includes(workflowInterceptorsPath) &&
      options.workflowInterceptorModules?.includes(workflowInterceptorsPath)
    )
      return this.remember({
        ...options,
        ...(this.encryptFailures && !options.failureConverterPath ? { failureConverterPath } : {}),
      });
    const configured = super.configureBundler({
      ...options,
      ...withoutModule(options, 'workflowInterceptorModules'),
    });
    return this.remember({
      ...configured,
      ...(this.encryptFailures && !configured.failureConverterPath ? { failureConverterPath } : {}),
      preloadModules: [
        ...(withoutModule(configured, 'preloadModules').preloadModules ?? []),
        workflowInterceptorsPath,
      ],
    });
  }

  /**
   * `options` whose `patchActivationCallback` (SDK 1.24, experimental) leaves this package's patches on:
   * a rollout callback that answers `false` for patch ids it does not know would otherwise bring back,
   * for new runs, the verification paths those patches replaced (found by review). A callback this
   * plugin made already is kept as it is.
   */
  private withOwnPatches(options: WorkerOptions): WorkerOptions {
    const callback = options.patchActivationCallback;
    if (!callback || this.patchCallbacks.has(callback)) return options;
    const own: PatchActivationCallback = (input) => OWN_PATCHES.has(input.patchId) || callback(input);
    this.patchCallbacks.add(own);
    return { ...options, patchActivationCallback: own };
  }

  override configureReplayWorker(options: ReplayWorkerOptions): ReplayWorkerOptions {
    if (this.configured.has(options)) return options;
    // A replayer writes nothing to history: a bundle kept to replay a build's histories needs no
    // failure converter.
    if (options.workflowBundle && this.pluginOptions.checkWorkflowBundle !== false)
      assertBundledWithPlugin(options.workflowBundle, false);
    const sinks = { ...options.sinks, ...this.sinks() };
    // The SDK replays as namespace 'default' (its replay options have no namespace), and the codec binds
    // every payload to its namespace: another namespace's history was refused payload by payload
    // (found by review). Replayed as the plugin's namespace (its option, or its first client's or
    // worker's); a replay-only plugin of another namespace needs the `namespace` option.
    const namespace = this.pluginOptions.namespace ?? this.boundNamespace;
    const own = (namespace === undefined ? options : { ...options, namespace }) as ReplayWorkerOptions;
    if (this.workerComplete(own, 'replay worker')) return this.remember({ ...own, sinks });
    return this.remember(super.configureReplayWorker(this.withoutOwnParts(own, sinks)));
  }

  private remember<T extends object>(options: T): T {
    this.configured.add(options);
    return options;
  }

  /** Keeps a configured client's codecs for the schedule update check ({@link clientCodecs}). */
  private rememberClient(options: ClientOptions): ClientOptions {
    const codecs = options.dataConverter?.payloadCodecs ?? [];
    const same = (chain: readonly PayloadCodec[]) =>
      chain.length === codecs.length && chain.every((codec, i) => codec === codecs[i]);
    const at = this.clientCodecs.findIndex(same);
    if (at >= 0) this.clientCodecs.splice(at, 1);
    this.clientCodecs.push([...codecs]);
    if (this.clientCodecs.length > MAX_CLIENT_CODEC_CHAINS) this.clientCodecs.shift();
    return this.remember(options);
  }

  /**
   * One plugin serves one namespace: its tokens' audience and its codec's fallback. A second client or
   * worker of another namespace would have moved both for the first (its runs refused, and its tokens,
   * readable in its history, valid in the other namespace): refused instead. Use one plugin per namespace.
   */
  private bindNamespace(namespace: string): void {
    const bound = this.pluginOptions.namespace ?? this.boundNamespace;
    if (bound !== undefined && bound !== namespace) {
      throw new UserContextError(
        ErrorCodes.MISCONFIGURED,
        `this UserContextPlugin serves namespace ${bound}, not ${namespace}: use one plugin per namespace`,
      );
    }
    this.boundNamespace = namespace;
    this.scope.namespace = namespace;
  }

  /** Node side of the workflow interceptors' audit sink. Not called during replay. */
  private sinks(): InjectedSinks<UserContextSinks> {
    const auditor = this.auditor;
    const verifier = this.verifier;
    const record = (
      info: WorkflowInfo,
      decision: AuditDecision,
      source: IdentitySource,
      action: string,
      reason: string,
      detail: string,
      originator: ContextHeader | undefined,
      /** The workflow acted for its originator: the record names the verified user too. */
      byOriginator = false,
    ) => {
      const emit = (workspaceId?: string, userId?: string) =>
        auditor.emit({
          action,
          decision,
          source,
          reason,
          detail,
          ...(userId === undefined ? {} : { userId }),
          ...(workspaceId === undefined ? {} : { workspaceId }),
          namespace: info.namespace,
          workflowId: info.workflowId,
          runId: info.runId,
          workflowType: info.workflowType,
        });
      if (originator === undefined) return emit();
      // Filed under the workflow's workspace, so that its admins see what was refused on their
      // workflow (a sender of another workspace, say): the workspace of the workflow's start token, once
      // it verifies as this very workflow's originator (bound to its root, in its start window: a token
      // copied into another workflow does not, threat-model case 6). A schedule token would also need
      // the server's word on the run (check 7), and so would a retry or cron run that started after its
      // token's window (check 5): such records stay unfiled. Not who acted (`userId`):
      // the sender is unverified.
      return verifier
        .verifyOriginator(originator, { namespace: info.namespace, workflowId: info.workflowId })
        .then(
          (verified) =>
            verified.claims.use === 'start'
              ? emit(verified.context.workspaceId, byOriginator ? verified.context.userId : undefined)
              : emit(),
          () => emit(),
        );
    };
    return {
      userContextAudit: {
        deny: {
          fn: (info, event) =>
            // A refusal by the actor policy judged pseudonyms nobody verified (a sender may write any):
            // recorded as such, like the policy's admissions, not as a verified header's.
            record(
              info,
              'deny',
              event.pseudonyms ? 'pseudonym' : 'header',
              event.action,
              event.code,
              event.pseudonyms
                ? `refused by the actor policy on unverified pseudonyms: ${event.detail ?? ''}: ${event.reason}`
                : event.detail
                  ? `${event.detail}: ${event.reason}`
                  : event.reason,
              event.originator,
            ),
          callDuringReplay: false,
        },
        allow: {
          fn: (info, event) =>
            record(
              info,
              'allow',
              'pseudonym',
              event.action,
              event.rejected === true && event.action === 'workflow.update' ? REJECTED_BY_VALIDATOR : 'ok',
              `admitted by the actor policy on unverified pseudonyms: ${event.detail}`,
              event.originator,
            ),
          callDuringReplay: false,
        },
        acted: {
          fn: (info, event) =>
            record(info, 'allow', 'header', event.action, 'ok', event.detail, event.originator, true),
          callDuringReplay: false,
        },
      },
    };
  }
}

/**
 * The refusal of a schedule update that moves the action its creator's token binds (another schedule,
 * workflow id, type, task queue, or other arguments where they are bound), or nothing. Such an update leaves runs that workers refuse (checks 4 and
 * 7), and one to another workflow id worse: every later run is handed the previous run's result,
 * which the codec bound to the old id and refuses before any check, so each such run's first workflow
 * task fails for ever. Updates that keep the action (the spec, arguments, policies) pass, as does an
 * action whose header this process cannot read (workers judge it).
 */
async function scheduleUpdateRefusal(
  keys: KeyRing,
  updated: UpdatedAction,
  /** The arguments as each way of reading them that works reads them (none: not readable here). */
  argumentsOf: (payloads: Payload[]) => Promise<unknown[][]>,
): Promise<UserContextError | undefined> {
  let claims: Awaited<ReturnType<typeof openContextToken>>;
  try {
    const header = decodeHeader(
      updated.header ? { [ORIGINATOR_HEADER]: updated.header } : {},
      ORIGINATOR_HEADER,
    );
    if (!header) return undefined;
    claims = await openContextToken(keys, header.tok);
  } catch {
    return undefined;
  }
  if (claims.use !== 'schedule') return undefined;
  // Runs after the token's window are refused by workers: an update must keep the schedule ending
  // inside it, as schedule.create made it (found by review: an update could clear or move the end).
  const jitter = updated.jitterMs ?? 0;
  // A negative jitter would move the last run past the window (found by review): refused, as at create.
  if (!(jitter >= 0))
    return new UserContextError(ErrorCodes.MISCONFIGURED, 'the update gives the schedule a negative jitter');
  const latest = claims.exp * 1000 - jitter;
  if (updated.endMs === undefined || !(updated.endMs <= latest))
    return new UserContextError(
      ErrorCodes.MISCONFIGURED,
      `the update would let the schedule start runs after its creator's token window (${new Date(latest).toISOString()}, less jitter), which workers refuse: keep its endAt by then, and re-create the schedule to go on`,
    );
  const moved = [
    claims.sch !== undefined && claims.sch !== updated.scheduleId ? 'schedule' : undefined,
    claims.wf !== undefined && claims.wf !== updated.workflowId ? 'workflow id' : undefined,
    claims.wt !== undefined && claims.wt !== updated.workflowType ? 'workflow type' : undefined,
    claims.tq !== undefined && claims.tq !== updated.taskQueue ? 'task queue' : undefined,
  ].filter((what) => what !== undefined);
  // The arguments, where the token binds them (bindScheduleArguments): read as workers read them.
  if (moved.length === 0 && claims.ad !== undefined) {
    let readings: unknown[][];
    try {
      readings = await argumentsOf(updated.input);
    } catch {
      readings = []; // not readable here: workers judge them
    }
    const digests = readings.flatMap((args) => {
      try {
        return [argsDigest(args)];
      } catch {
        return []; // values no digest takes (a BigInt): not this reading
      }
    });
    // Refused only when read, and no reading gives the token's digest.
    if (digests.length > 0 && !digests.includes(claims.ad)) moved.push('arguments');
  }
  if (moved.length === 0) return undefined;
  return new UserContextError(
    ErrorCodes.LINEAGE_MISMATCH,
    `the update changes what the schedule's token binds (${moved.join(', ')}): re-create the schedule instead`,
  );
}
