/**
 * `temporal-user-context/testing`: run activities as a user in unit tests, through the plugin's real
 * guard (see {@link userActivityEnvironment}). Needs `@temporalio/testing`. For tests only: it issues
 * tokens with whatever edge key set it is given (a fresh one by default), so production code must not
 * import it, nor give it production keys.
 *
 * @packageDocumentation
 */
export {
  userActivityEnvironment,
  type UserActivityEnvironment,
  type UserActivityEnvironmentOptions,
} from './activity-environment.js';
