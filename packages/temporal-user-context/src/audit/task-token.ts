import { createHash } from 'node:crypto';

/**
 * How audit records name an activity's task token: its SHA-256, shortened. The token completes the
 * activity (whoever holds it may), so records carry no token, only what ties the activity's own
 * `activity.async` record to the completion's.
 */
export function taskTokenRef(token: Uint8Array | null | undefined): string {
  if (!token?.length) return 'no task token';
  return `task token sha256:${createHash('sha256').update(token).digest('hex').slice(0, 16)}`;
}
