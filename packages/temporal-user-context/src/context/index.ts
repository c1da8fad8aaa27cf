// The context model's public names, listed one by one: a helper added to these modules stays internal
// until it is added here (`export *` published test helpers and the zod schema; found by review).
export { ErrorCodes, UserContextError, isUserContextError, type UserContextErrorCode } from './errors.js';
export { userContextFailureCode, isUserContextFailure } from './failure.js';
export {
  ID_PATTERN,
  ROLE_PATTERN,
  MAX_ROLES,
  MAX_CONTEXT_BYTES,
  parseUserContext,
  type UserContext,
} from './schema.js';
export { systemPrincipal, isSystemPrincipal, type SystemPrincipal } from './system-principal.js';
