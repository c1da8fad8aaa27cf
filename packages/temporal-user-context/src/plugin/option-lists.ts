import type { ClientOptions } from '@temporalio/client';
import { SimplePlugin } from '@temporalio/plugin';
import type { standaloneInterceptors } from '../client/interceptors.js';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { workflowInterceptorsPath } from './paths.js';

/** Whether each list holds its part exactly once (a part that is undefined: not contributed). */
export function complete(pairs: ReadonlyArray<readonly [unknown, unknown]>): boolean {
  return pairs.every(
    ([list, part]) =>
      part === undefined || (Array.isArray(list) && list.filter((x) => x === part).length === 1),
  );
}

/** `holder[key]` without this package's workflow interceptor module (a plugin adds it back once). */
export function withoutModule<T extends object, K extends keyof T>(holder: T, key: K): Partial<Pick<T, K>> {
  const list = holder[key];
  if (!Array.isArray(list)) return {};
  return { [key]: list.filter((path) => path !== workflowInterceptorsPath) } as Partial<Pick<T, K>>;
}

/**
 * `configured` (what `SimplePlugin` resolved) with the application's interceptors it left out, and this
 * plugin's standalone interceptors (`own`) added once: SDK 1.24's plugin rebuilds client interceptors
 * from `workflow` and `schedule` only, and worker interceptors from `client`, `activity`, `nexus` and
 * `workflowModules`, so an application's `nexus` and `activity` client interceptors and a worker's
 * `activityInbound` factories were silently dropped, and a plugin's own could not be given.
 */
export function keptClient(
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
export function refuseLaterRebuilds(
  ours: object,
  /** Whether a plugin is a UserContextPlugin (whose own checks cover it). */
  isUserContextPlugin: (plugin: unknown) => boolean,
  plugins: readonly unknown[] | undefined,
  own: { codec: boolean; failureConverter: boolean },
  kind: 'client' | 'worker' = 'client',
): void {
  const at = plugins?.lastIndexOf(ours) ?? -1;
  if (at < 0) return;
  for (const later of plugins!.slice(at + 1)) {
    if (isUserContextPlugin(later) || !(later instanceof SimplePlugin)) continue;
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
