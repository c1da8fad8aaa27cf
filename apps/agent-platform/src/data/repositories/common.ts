import type { ScopedTransaction } from 'temporal-user-context/postgres';

/**
 * What every repository is built on: the transaction {@link withUserScope} hands out. Repositories
 * never filter by workspace for correctness — row-level security does — and never pass a workspace
 * id on insert: the column defaults to the scope setting and the WITH CHECK policy refuses others.
 */
export type Scope = Pick<ScopedTransaction, 'query' | 'context' | 'effectiveRoles'>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * True for a canonical UUID. Ids from outside (URLs, tool calls) that are not UUIDs cannot name a row;
 * answering "not found" instead of letting Postgres raise keeps the transaction usable.
 */
export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

/** Converts `Date` columns to ISO strings, leaves the rest. */
export function iso(value: unknown): string {
  return value instanceof Date ? value.toISOString() : String(value);
}
