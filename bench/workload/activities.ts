import { Context } from '@temporalio/activity';
import { currentUserContext } from 'temporal-user-context';
import { activityScopeIsActive } from './probe.js';

/** A tiny step; under the user-context plugin it also reads the verified context, as real code would. */
export async function step(value: string, i: number): Promise<string> {
  const who = activityScopeIsActive() ? currentUserContext().userId : 'anon';
  return `${value}.${i}:${who}:${Context.current().info.attempt}`;
}
