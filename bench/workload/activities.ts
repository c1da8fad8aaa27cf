import { Context } from '@temporalio/activity';
import { currentUserContext } from 'temporal-user-context';

/** The user every benchmark workflow runs as. */
export const BENCH_USER = 'bench-user';

/** A tiny step. Workers of the variants without this plugin run this one. */
export async function step(value: string, i: number): Promise<string> {
  return `${value}.${i}:${Context.current().info.attempt}`;
}

/**
 * The same step under the user-context plugin: it also reads the verified context, as real code would,
 * and returns exactly what `step` returns, so that every variant moves the same bytes (an earlier
 * version appended the user id, and the candidate's results grew by 18 bytes a workflow).
 */
export async function stepAsUser(value: string, i: number): Promise<string> {
  if (currentUserContext().userId !== BENCH_USER) throw new Error('not the benchmark user');
  return `${value}.${i}:${Context.current().info.attempt}`;
}
