/**
 * temporal-user-context: carry a signed, sealed user context across every Temporal boundary.
 * Node entry point (client, worker, keys, audit). Workflow code imports `temporal-user-context/workflow`.
 *
 * @packageDocumentation
 */
export {
  UserContextPlugin,
  failureConverterPath,
  workflowInterceptorsPath,
  type UserContextPluginOptions,
} from './plugin.js';
export * from './context/index.js';
export * from './audit/index.js';
export { KeyRing, type SecretKey, type SigningKey } from './crypto/keyring.js';
export {
  type ActivateOptions,
  activateKeySet,
  generateKeySet,
  retireKey,
  rotateKeySet,
  stageKeySet,
  workerKeySet,
} from './crypto/generate.js';
export type { KeySetJson } from './crypto/key-set.js';
export { issueContextToken, type IssueOptions } from './crypto/issue.js';
export { openContextToken } from './crypto/open.js';
export { pseudonymKeyFromJSON, pseudonymsOf } from './crypto/pseudonym.js';
export type { BoundStart, ContextClaims, ScheduledAction, TokenUse } from './crypto/claims.js';
export type { ContextHeader, Lineage } from './header/wire.js';
export { runAsUser, edgeUser } from './client/scope.js';
export { WHOAMI_ACTIVITY, WHOIS_ACTOR_ACTIVITY } from './workflow/activity-names.js';
export { MEMO_KEY, USER_ID_ATTRIBUTE, WORKSPACE_ID_ATTRIBUTE } from './context/mirror-keys.js';
export { mirrorQuery, type MirrorMode, type MirrorOptions, type MirrorQueryIds } from './client/mirror.js';
export {
  currentUserContext,
  currentActor,
  peekUserContext,
  resolveUserContext,
  type ResolveOptions,
} from './worker/resolve.js';
export { recordDecision, type AppDecision } from './worker/record.js';
export { ContextVerifier, type Verified, type VerifierOptions } from './worker/verifier.js';
export type { NexusCallerPolicy } from './worker/nexus-caller.js';
export { ScheduledRunNotRecordedError } from './worker/scheduled-run.js';
export { TokenIssuedAheadError } from './worker/verifier.js';
export { LOOKUP_TIMEOUT_MS, LookupRefusedError } from './worker/server-lineage.js';
export {
  ACTOR_HEADER,
  ORIGINATOR_HEADER,
  HEADER_VERSION,
  MAX_HEADER_BYTES,
  decodeHeader,
  encodeHeader,
} from './header/wire.js';
export {
  AesGcmPayloadCodec,
  ENCODING_ENCRYPTED,
  type AesGcmPayloadCodecOptions,
  type CodecKey,
  type CodecKeyMaterial,
} from './crypto/payload-codec.js';
