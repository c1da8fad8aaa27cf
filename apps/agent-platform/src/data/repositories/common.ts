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

/**
 * One page of a listing, newest first: at most `limit` items, and `next`, the cursor of the page after
 * it, when there may be one.
 */
export interface Page<T> {
  items: T[];
  next?: string;
}

/** Where a page begins: after the item a cursor names (`<created_at in µs since 1970>.<id>`). */
export interface PageRequest {
  limit: number;
  before?: string;
}

/**
 * The shape of a page cursor; the API's schema takes this pattern. At most 17 digits of microseconds
 * either side of 1970: the rows of 1199 BC to 5138 AD, all within what `timestamptz` holds. Found by
 * review: 19 digits took values PostgreSQL's `bigint` or `interval` cannot hold (a 500 for any member
 * who sent one), and 16 refused the cursors of rows dated before 1653.
 */
export const PAGE_CURSOR_PATTERN =
  '^-?[0-9]{1,17}\\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
const PAGE_CURSOR = new RegExp(PAGE_CURSOR_PATTERN);

/**
 * A keyset page of `table`'s rows (`created_at desc, id desc`) that match `where` (SQL over `$3…`,
 * `true` for all), as `columns` plus their cursor. Keyed by the row's own values, not by a row to look
 * up: a cursor stays good when its row is deleted meanwhile, and new rows never shift a page. A cursor
 * of another shape is refused (a `RangeError`: the API's schema refuses it first). The cursor's time
 * goes back into SQL as seconds and microseconds apart: one product of microseconds and an interval
 * is computed in floating point, inexact past 2^53. A row whose transaction began before another's yet
 * committed after a walk passed its place is not in that walk (its `created_at` is its transaction's
 * start).
 */
export async function keysetPage<Row, T>(
  scope: Scope,
  sql: { columns: string; table: string; where: string; values: unknown[] },
  page: PageRequest,
  toItem: (row: Row) => T,
): Promise<Page<T>> {
  let after: [string, string] | [null, null] = [null, null];
  if (page.before !== undefined) {
    if (!PAGE_CURSOR.test(page.before)) throw new RangeError('not a page cursor');
    const [us, id] = page.before.split('.') as [string, string];
    after = [us, id];
  }
  // One row more than the page: whether there is a next page, without a page that comes back empty.
  const { rows } = await scope.query<Row & { page_cursor: string }>(
    `select ${sql.columns},
            ((extract(epoch from t.created_at) * 1000000)::bigint)::text || '.' || t.id::text as page_cursor
       from ${sql.table} as t
      where ${sql.where}
        and ($1::bigint is null
             or (t.created_at, t.id) < (timestamptz 'epoch' + ($1::bigint / 1000000) * interval '1 second'
                                                         + ($1::bigint % 1000000) * interval '1 microsecond',
                                        $2::uuid))
      order by t.created_at desc, t.id desc
      limit ${Math.trunc(page.limit) + 1}`,
    [...after, ...sql.values],
  );
  return pageOf(rows, page.limit, toItem, (row) => row.page_cursor);
}

/**
 * The page of `rows`, read with one row more than `limit` asks (whether there is a page after it): at
 * most `limit` items, and `next`, the cursor of the last one, when that extra row came.
 */
export function pageOf<Row, T>(
  rows: readonly Row[],
  limit: number,
  toItem: (row: Row) => T,
  cursorOf: (row: Row) => string,
): Page<T> {
  const kept = rows.slice(0, limit);
  const last = kept.at(-1);
  const items = kept.map(toItem);
  return rows.length > limit && last !== undefined ? { items, next: cursorOf(last) } : { items };
}
