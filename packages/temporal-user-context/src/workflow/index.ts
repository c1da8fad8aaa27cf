/**
 * Workflow-side API (sandbox-safe). Import from `temporal-user-context/workflow` in workflow code.
 */
export { getUserContext, getOriginator, getActor, verifyActor, setActorPolicy } from './api.js';
export { sameWorkspacePolicy, type ActorPolicy, type ActorRef, type Originator } from './state.js';
export { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
export type { UserContext } from '../context/schema.js';
