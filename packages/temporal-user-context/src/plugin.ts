import {
  defaultGrpcRetryOptions,
  makeGrpcRetryInterceptor,
  type ClientOptions,
  type ConnectionOptions,
} from '@temporalio/client';
import type { PayloadCodec } from '@temporalio/common';
import { SimplePlugin } from '@temporalio/plugin';
import type {
  BundleOptions,
  PatchActivationCallback,
  ReplayWorkerOptions,
  WorkerOptions,
} from '@temporalio/worker';
import type { AuditSink } from './audit/event.js';
import { Auditor, pinoAuditSink } from './audit/sinks.js';
import { controlCallsInterceptor } from './client/control-calls.js';
import {
  UserContextScheduleClientInterceptor,
  UserContextWorkflowClientInterceptor,
  standaloneInterceptors,
} from './client/interceptors.js';
import { mirrorOptionsOf, mirrorQuery, type MirrorOptions, type MirrorQueryIds } from './client/mirror.js';
import { decodedArguments, scheduleUpdateRefusal } from './client/schedule-update-check.js';
import { ContextSource } from './client/source.js';
import { ErrorCodes, UserContextError } from './context/errors.js';
import type { AesGcmPayloadCodec } from './crypto/payload-codec.js';
import { ORIGINATOR_HEADER } from './header/wire.js';
import { validatePluginOptions, type UserContextPluginOptions } from './plugin-options.js';
import { assertBundledWithPlugin } from './plugin/bundle-check.js';
import { pluginCodec } from './plugin/codec.js';
import { complete, keptClient, refuseLaterRebuilds, withoutModule } from './plugin/option-lists.js';
import { failureConverterPath, workflowInterceptorsPath } from './plugin/paths.js';
import { ActivityGuard } from './worker/activity-interceptor.js';
import { verificationActivities } from './worker/verification-activities.js';
import { withUserPseudonyms } from './worker/log-attributes.js';
import { nexusCallerPolicyOf } from './worker/nexus-caller.js';
import { NexusGuard } from './worker/nexus-interceptor.js';
import { ScheduledRunCheck } from './worker/scheduled-run.js';
import { ActivityLineageCheck, FirstRunStarts } from './worker/server-lineage.js';
import { ContextVerifier } from './worker/verifier.js';
import { workflowAuditSinks } from './worker/workflow-audit-sinks.js';
import { OWN_PATCHES } from './workflow/patches.js';

export type { UserContextPluginOptions } from './plugin-options.js';
export { failureConverterPath, workflowInterceptorsPath } from './plugin/paths.js';

/**
 * What each plugin contributed to options (interceptor instances and factories, its codec), to the
 * plugin: a plugin configuring options again finds its own and any other's.
 */
const contributions = new WeakMap<object, UserContextPlugin>();

const isUserContextPlugin = (plugin: unknown): boolean => plugin instanceof UserContextPlugin;

/** Distinct client codec lists a plugin keeps for the schedule update check. */
const MAX_CLIENT_CODEC_CHAINS = 8;

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
    const { codec, registered, encryptFailures, bindsWorkflowPayloads } = pluginCodec(
      pluginOptions,
      scope,
      auditor,
    );
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
      activities: verificationActivities,
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
      bindsWorkflowPayloads,
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
    refuseLaterRebuilds(this, isUserContextPlugin, options.plugins, {
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
      isUserContextPlugin,
      given.plugins,
      { codec: this.parts.codec !== undefined, failureConverter: this.encryptFailures },
      'worker',
    );
    const options = this.withOwnPatches(given);
    if (options.workflowBundle && this.pluginOptions.checkWorkflowBundle !== false)
      assertBundledWithPlugin(options.workflowBundle, this.installsFailureConverter(options));
    this.bindNamespace(options.namespace ?? 'default');
    const sinks = { ...options.sinks, ...workflowAuditSinks(this.auditor, this.verifier) };
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
    const sinks = { ...options.sinks, ...workflowAuditSinks(this.auditor, this.verifier) };
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
}
