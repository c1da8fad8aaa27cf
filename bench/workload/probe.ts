import { currentUserContext } from 'temporal-user-context';

/** True inside an activity run by a UserContextPlugin worker. */
export function activityScopeIsActive(): boolean {
  try {
    currentUserContext();
    return true;
  } catch {
    return false;
  }
}
