/**
 * Workflow-side API (sandbox-safe). Import from `temporal-user-context/workflow` in workflow code.
 *
 * Refusals reach workflow code as Temporal failures (an `ApplicationFailure` whose `type` is the
 * `USER_CONTEXT_*` code), never as `UserContextError`: recognise them with `userContextFailureCode` or
 * `isUserContextFailure`.
 *
 * @packageDocumentation
 */
export { getUserContext, getOriginator, getActor, verifyActor, setActorPolicy } from './api.js';
export { userContextFailureCode, isUserContextFailure } from '../context/failure.js';
export { sameWorkspacePolicy, type ActorPolicy, type ActorRef, type Originator } from './state.js';
// The codes only: no `UserContextError` reaches workflow code (see above).
export { ErrorCodes, type UserContextErrorCode } from '../context/errors.js';
// The mirrors' keys: a child started here gets its parent's values under them (docs/operations.md).
export { MEMO_KEY, USER_ID_ATTRIBUTE, WORKSPACE_ID_ATTRIBUTE } from '../context/mirror-keys.js';
export type { UserContext } from '../context/schema.js';
export type { ContextHeader, Lineage } from '../header/wire.js';
