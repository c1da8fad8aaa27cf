import { Context } from '@temporalio/activity';
import { currentUserContext } from 'temporal-user-context';

/** A tiny step. Workers of the variants without this plugin run this one. */
export async function step(value: string, i: number): Promise<string> {
  return `${value}.${i}:anon:${Context.current().info.attempt}`;
}

/** The same step under the user-context plugin: it also reads the verified context, as real code would. */
export async function stepAsUser(value: string, i: number): Promise<string> {
  return `${value}.${i}:${currentUserContext().userId}:${Context.current().info.attempt}`;
}
