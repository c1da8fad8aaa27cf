import type { AuditSink } from './audit/event.js';
import { ErrorCodes, UserContextError } from './context/errors.js';
import { ID_PATTERN } from './context/schema.js';
import { KeyRing } from './crypto/keyring.js';
import type { UserContextPluginOptions } from './plugin.js';

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
