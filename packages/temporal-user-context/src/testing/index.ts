/**
 * `temporal-user-context/testing`: run activities as a user in unit tests, through the plugin's real
 * guard (see {@link userActivityEnvironment}). Needs `@temporalio/testing`.
 *
 * @packageDocumentation
 */
export {
  userActivityEnvironment,
  type UserActivityEnvironment,
  type UserActivityEnvironmentOptions,
} from './activity-environment.js';
