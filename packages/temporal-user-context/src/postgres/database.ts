import type { EventEmitter } from 'node:events';
import type { Pool, PoolClient, QueryConfig, QueryResult } from 'pg';
import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import { numberOption } from '../context/number-option.js';
import { quoteIdent } from './ident.js';
import { sealSchema } from './seal.js';

/** A result row: column name to parsed value. */
export type SqlRow = Record<string, unknown>;

/** What every query returns, whichever driver ran it. */
export interface SqlResult<R extends object = SqlRow> {
  rows: R[];
  /** Rows returned by a SELECT, or changed by INSERT/UPDATE/DELETE. */
  rowCount: number;
}

/** Something that runs one parameterised statement. Values are always sent as bind parameters. */
export interface SqlQueryable {
  query<R extends object = SqlRow>(sql: string, params?: readonly unknown[]): Promise<SqlResult<R>>;
}

/**
 * One connection held for the duration of a callback, outside any transaction. Used by migration tools
 * that issue their own `BEGIN`/`COMMIT` and multi-statement scripts (which `exec` accepts).
 */
export interface SqlSession extends SqlQueryable {
  /** Runs a script of several statements without parameters (simple query protocol); returns the last result. */
  exec(sql: string): Promise<SqlResult>;
}

/**
 * The smallest database surface this library needs, implemented for a `pg` Pool and for PGlite.
 * Use {@link fromPgPool} or {@link fromPGlite} to get one.
 */
export interface SqlDatabase extends SqlQueryable {
  readonly driver: 'pg' | 'pglite';
  /**
   * The schema of the sealed scope (`scopeSealSql`) that `withUserScope` and the audit sink enter
   * through on this database, when the adapter was made with `seal`; undefined otherwise.
   */
  readonly seal?: string;
  /**
   * Runs `fn` in one transaction on one connection: COMMIT when it resolves, ROLLBACK when it throws.
   * The connection goes back to the pool only after COMMIT/ROLLBACK, so `SET LOCAL` and
   * `set_config(..., true)` never outlive the callback. The callback's queryable runs one statement per
   * call, one call at a time; a statement that ends the transaction (COMMIT, ROLLBACK, ...) and every
   * query after it are refused with `USER_CONTEXT_MISCONFIGURED`, and so is the transaction (what ran
   * before that statement stays committed; a pooled connection is closed, not reused). Afterwards the
   * connection's session is reset ({@link SESSION_RESET}).
   */
  transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T>;
  /**
   * Holds one connection for `fn` without opening a transaction; afterwards its session is reset
   * ({@link SESSION_RESET}). A callback that returns inside a transaction it began (awaited or not) is
   * refused (`USER_CONTEXT_MISCONFIGURED`) and its transaction rolled back. Use the session object
   * inside `fn`: on PGlite, whose one connection the session holds, the adapter's other calls wait
   * until the session ends (so a call on the adapter from inside `fn` would wait for ever).
   */
  session<T>(fn: (session: SqlSession) => Promise<T>): Promise<T>;
}

/** Reason of the refusal when a transaction's callback ended the transaction itself. */
const TRANSACTION_ENDED = 'the transaction was ended inside its callback (COMMIT, ROLLBACK or the like)';

/** The refusal of a query in a transaction its own callback ended: `USER_CONTEXT_MISCONFIGURED`. */
function transactionEnded(): UserContextError {
  return new UserContextError(ErrorCodes.MISCONFIGURED, TRANSACTION_ENDED);
}

/** True for the refusal {@link transactionEnded} makes. @internal */
export function isTransactionEnded(err: unknown): err is UserContextError {
  return isUserContextError(err, ErrorCodes.MISCONFIGURED) && err.reason === TRANSACTION_ENDED;
}

/** Reason of the refusal of a transaction-control statement sent by a transaction's callback. */
const TRANSACTION_CONTROL =
  'transaction control (BEGIN, COMMIT, ROLLBACK, ...) inside a transaction callback';

/**
 * The first `count` words of a statement, lower-cased, skipping what PostgreSQL skips before it:
 * whitespace, empty statements (`;`), `--` comments (to a line end, `\n` or `\r`) and block comments,
 * which nest. A quoted identifier is a word (its content). Stops at anything that is not a word.
 * @internal
 */
export function leadingWords(sql: string, count: number): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < sql.length && words.length < count) {
    const c = sql[i]!;
    if (/\s/.test(c) || (c === ';' && words.length === 0)) {
      i++;
    } else if (c === '-' && sql[i + 1] === '-') {
      while (i < sql.length && sql[i] !== '\n' && sql[i] !== '\r') i++;
    } else if (c === '/' && sql[i + 1] === '*') {
      let depth = 0;
      do {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          depth--;
          i += 2;
        } else i++;
      } while (depth > 0 && i < sql.length);
    } else if ((c === 'u' || c === 'U') && sql[i + 1] === '&' && sql[i + 2] === '"') {
      // A Unicode-escaped identifier (`U&"\0072ole"` is `role`): not decoded (its escape character may
      // be redefined by a UESCAPE clause), but kept apart from every plain word as `u&"…`, which callers
      // that look for a setting's name refuse.
      // Escapes make a name long (`\+000073` is one letter): one that does not end within the window is
      // still such a word, of unknown name.
      const quoted = /^"((?:[^"]|"")*)"/.exec(sql.slice(i + 2, i + 1026));
      if (!quoted) {
        words.push('u&"');
        break;
      }
      words.push(`u&"${quoted[1]!.toLowerCase()}`);
      i += 2 + quoted[0].length;
    } else if (c === '"') {
      // A quoted identifier, as its content (`""` is a quote): `SET LOCAL "role"` names the setting
      // `role`, and setting names are not case-sensitive.
      const quoted = /^"((?:[^"]|"")*)"/.exec(sql.slice(i, i + 130));
      if (!quoted) break;
      words.push(quoted[1]!.replaceAll('""', '"').toLowerCase());
      i += quoted[0].length;
    } else {
      const word = /^[A-Za-z_][A-Za-z0-9_$]*/.exec(sql.slice(i, i + 64))?.[0];
      if (word === undefined) break;
      words.push(word.toLowerCase());
      i += word.length;
    }
  }
  return words;
}

/** Whether a statement's first words begin or end a transaction (`ROLLBACK TO` a savepoint does not). */
function isTransactionControl([first, second, third]: string[]): boolean {
  switch (first) {
    case 'begin':
    case 'commit':
    case 'end':
    case 'abort':
      return true;
    case 'start':
    case 'prepare':
      return second === 'transaction';
    case 'rollback':
      return !(second === 'to' || ((second === 'work' || second === 'transaction') && third === 'to'));
    default:
      return false;
  }
}

/**
 * Whether a statement's first words change the session rather than the transaction: `SET` other than
 * `SET LOCAL`, `SET TRANSACTION` and `SET CONSTRAINTS`, and `RESET`. A session-level `SET ROLE`,
 * `search_path` or `SESSION CHARACTERISTICS` outlives the transaction on a pooled connection, into the
 * next borrower's; `RESET ROLE` (or `SET ROLE NONE`) goes back to the login role inside the scope.
 */
function isSessionChange([first, second]: string[]): boolean {
  if (first === 'reset') return true;
  return first === 'set' && second !== 'local' && second !== 'transaction' && second !== 'constraints';
}

/**
 * The refusal of `sql` in a transaction's callback when it would begin or end a transaction (a
 * helper's own `BEGIN … COMMIT` would end the caller's transaction and its `SET LOCAL`s) or change the
 * session (`SET` without `LOCAL`, `RESET`), or when it is no string (a driver's query object would
 * skip these checks). Undefined for anything else. Not seen: the same done through functions
 * (`set_config(…, false)`).
 */
function transactionControlRefusal(sql: unknown): UserContextError | undefined {
  if (typeof sql !== 'string')
    return new UserContextError(ErrorCodes.MISCONFIGURED, 'a query must be one SQL string');
  const words = leadingWords(sql, 3);
  if (isTransactionControl(words)) return new UserContextError(ErrorCodes.MISCONFIGURED, TRANSACTION_CONTROL);
  if (isSessionChange(words))
    return new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'session-level SET or RESET inside a transaction callback (SET LOCAL is transaction-local)',
    );
  return undefined;
}

/**
 * The check of a statement's first words that both the adapters and `withUserScope` run. A test turns
 * it off to reach the second line of defence (the transaction status), which no SQL known to get past
 * the first one reaches.
 * @internal
 */
export const transactionControl = { refusal: transactionControlRefusal };

/** What a driver returns for one statement; `command` is the statement's tag, where the driver has it. */
type Sent = SqlResult<never> & { command?: string };

/**
 * First words of the command tags (all pg keeps) of statements that begin or end a transaction and
 * leave the connection in one: `COMMIT AND CHAIN`, a `BEGIN` or `START TRANSACTION`. (`ROLLBACK` is also
 * a savepoint's, `PREPARE` also a prepared statement's; `PREPARE TRANSACTION` leaves no transaction.)
 */
const CONTROL_TAGS = new Set(['BEGIN', 'START', 'COMMIT']);

/**
 * The queryable a transaction's callback gets. A statement of the callback's own can end the
 * transaction (a helper's `BEGIN … COMMIT`: its BEGIN is a no-op inside ours, its COMMIT ends ours), and
 * with it every `SET LOCAL`: what the callback ran next would run as the login role, outside the scope
 * (a superuser login sees every workspace). So statements that begin or end a transaction are refused
 * before they are sent. Should one get through anyway, queries go one at a time, and after each, failed
 * or not, the connection must still be in the transaction and the statement's tag must not be a
 * transaction's (`COMMIT AND CHAIN` leaves the connection in a new one); else the statement is refused
 * after the fact (what ran before it is committed all the same), and so is every query after it.
 * `send` runs one statement (the drivers refuse several in one string) and settles only once the
 * connection's transaction status is current.
 */
function transactionQueryable(
  send: (sql: string, params: readonly unknown[]) => Promise<Sent>,
  inTransaction: () => boolean,
  state: { open: boolean; ended: boolean },
): SqlQueryable {
  let previous: Promise<unknown> = Promise.resolve();
  const run = async (sql: string, params: readonly unknown[]): Promise<SqlResult<never>> => {
    if (!state.open) throw queryAfterEnd();
    if (state.ended || !inTransaction()) {
      state.ended = true;
      throw transactionEnded();
    }
    const control = transactionControl.refusal(sql);
    if (control) throw control;
    let sent: Sent | undefined;
    let failure: { err: unknown } | undefined;
    try {
      sent = await send(sql, params);
    } catch (err) {
      failure = { err };
    }
    if (!inTransaction() || (sent?.command !== undefined && CONTROL_TAGS.has(sent.command))) {
      state.ended = true;
      throw failure ? transactionEndedWith(failure.err) : transactionEnded();
    }
    if (failure) throw failure.err;
    return { rows: sent!.rows, rowCount: sent!.rowCount };
  };
  return {
    query<R extends object>(sql: string, params: readonly unknown[] = []): Promise<SqlResult<R>> {
      // After the previous query settles, whatever its outcome: the check of each query sees the
      // connection as the statements before it left it, and none is queued behind a COMMIT.
      const next = previous.then(
        () => run(sql, params),
        () => run(sql, params),
      );
      previous = next.catch(() => undefined);
      return next as Promise<SqlResult<R>>;
    },
  };
}

/**
 * Runs a transaction's callback on the guarded queryable ({@link transactionQueryable}). When the
 * callback ended the transaction (or left it ended), that is the refusal, with what the callback threw
 * as its cause: its work is not committed as the transaction's.
 */
async function guardedCallback<T>(
  fn: (tx: SqlQueryable) => Promise<T>,
  send: (sql: string, params: readonly unknown[]) => Promise<Sent>,
  inTransaction: () => boolean,
  state: { open: boolean; ended: boolean },
): Promise<T> {
  let result: T;
  try {
    result = await fn(transactionQueryable(send, inTransaction, state));
  } catch (err) {
    if (state.ended) throw isTransactionEnded(err) ? err : transactionEndedWith(err);
    throw err;
  } finally {
    state.open = false;
  }
  if (state.ended || !inTransaction()) {
    state.ended = true;
    throw transactionEnded();
  }
  return result;
}

/**
 * Settles once `client` has its connection's answer to the last query in hand: `true`, or `false` when
 * none came within `limitMs`. `pg` rejects a query at the server's error message, before the
 * ReadyForQuery message that carries the transaction status, so the status read right after a failed
 * statement could be the one from before it. A connection that went silent (a failover or a network
 * cut whose close never reached this host) would hold the transaction, and its pool slot, for ever
 * (found by review): hence the limit. (`readyForQuery` and `connection` are fields of pg's Client that
 * its type declarations leave out.)
 */
function settledWithin(client: PoolClient, limitMs: number): Promise<boolean> {
  const c = client as unknown as {
    readyForQuery?: boolean;
    connection?: EventEmitter;
    _queryable?: boolean;
    _ending?: boolean;
    _ended?: boolean;
  };
  const connection = c.connection;
  // A lost or closing connection sends nothing more: its status will not change, and waiting for it
  // would hold the transaction (and its pool slot) forever.
  if (c.readyForQuery !== false || !connection || c._queryable === false || c._ending || c._ended)
    return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = limitMs === Infinity ? undefined : setTimeout(() => finish(false), limitMs);
    const done = () => finish(true);
    const finish = (answered: boolean) => {
      clearTimeout(timer);
      connection.off('readyForQuery', done);
      connection.off('end', done);
      connection.off('error', done);
      resolve(answered);
    };
    // Registered after the client's own listener, which records the status first.
    connection.on('readyForQuery', done);
    connection.on('end', done);
    connection.on('error', done);
  });
}

/** pg's `query_timeout` fired: the statement's answer never came, and the connection's state is unknown. */
function isReadTimeout(err: unknown): boolean {
  return err instanceof Error && err.message === 'Query read timeout';
}

/**
 * A COMMIT the database may or may not have applied: its answer was lost (the connection was lost or
 * reset, the backend terminated, or the adapter's `queryTimeoutMs` passed). The transaction's work may be in the database: check
 * before doing it again, unless it is idempotent. `cause` is the driver's error.
 */
export class CommitOutcomeUnknownError extends Error {
  override readonly name = 'CommitOutcomeUnknownError';

  constructor(options: { cause: unknown }) {
    super("the COMMIT's answer was lost: the transaction may or may not have been committed", options);
  }
}

/**
 * Whether `err`, from a COMMIT, is the database's refusal of it (a deferred constraint or trigger, a
 * serialization failure): a SQLSTATE, but not a lost connection's (class 08) nor a terminated or
 * shutting-down backend's (57P01–57P05), after which whether it committed is not known. A socket's error
 * (`ECONNRESET`) has a `code` too, but not a SQLSTATE's shape.
 */
function refusedByDatabase(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !/^(08|57P0[1-5])/.test(code);
}

/** Waited for the status after a failed statement when the adapter has no `queryTimeoutMs`. */
const SETTLE_LIMIT_MS = 10_000;

/**
 * The refusal of a statement sent on a transaction's (or session's) queryable after it ended: a coded
 * error, as `withUserScope` gives for the same misuse (found by review: a plain `Error`).
 */
function queryAfterEnd(): UserContextError {
  return new UserContextError(ErrorCodes.MISCONFIGURED, 'query after its transaction or session ended');
}

/** Whether a statement failed because the transaction it ran in was aborted (SQLSTATE 25P02). */
function leftAborted(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === '25P02';
}

/** The refusal of a session whose callback returned inside a transaction it began (rolled back). */
function sessionLeftTransaction(cause?: unknown): UserContextError {
  return new UserContextError(
    ErrorCodes.MISCONFIGURED,
    'a session callback returned inside a transaction it began: not committed, rolled back',
    cause === undefined ? undefined : { cause },
  );
}

/** The refusal, with what the callback threw after it as its cause. */
function transactionEndedWith(cause: unknown): UserContextError {
  return new UserContextError(ErrorCodes.MISCONFIGURED, TRANSACTION_ENDED, { cause });
}

/**
 * What a connection is given back after each transaction and session: what the `DISCARD ALL` of a
 * pooler resets, but for prepared statements and cached plans (pg keeps its own record of those, and a
 * statement of the app's prepared on this connection would then fail). Session-level settings
 * (`set_config(…, false)`, `search_path`, the roles a `SET ROLE` inside a function left), cursors
 * `WITH HOLD`, `LISTEN`, session advisory locks, temporary objects and sequence values (`currval`,
 * `lastval`) would otherwise pass to the next borrower, another user's scope, and to queries outside
 * any scope. The settings first, as `DISCARD ALL` does, so that a `statement_timeout` the callback left
 * cannot cancel the rest. `RESET ALL` also undoes a `SET` made when the pool opened the connection:
 * give such settings as connection options instead. Exported so that operators can read (or run) what
 * the adapters send.
 */
export const SESSION_RESET =
  'SET SESSION AUTHORIZATION DEFAULT; RESET ALL; RESET ROLE; CLOSE ALL; UNLISTEN *; ' +
  'SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES';

/**
 * What {@link fromPgPool}'s declaration asks of its pool: `Pool` from `pg` 8 satisfies it, so this
 * package's declarations need no `@types/pg` (an application on PGlite alone installs neither). At run
 * time the adapter uses the rest of `pg`'s Pool and client (their queries, release, connection state):
 * give it a `pg` Pool.
 */
export interface PgPoolLike {
  connect(): Promise<unknown>;
  on(event: 'error', listener: (err: Error) => void): unknown;
}

/** Options of {@link fromPgPool}. */
export interface PgPoolOptions {
  /**
   * Told about every connection the pool loses: an idle one (PostgreSQL restarted, failed over, or
   * `idle_session_timeout`, a proxy or `pg_terminate_backend` closed it) or one checked out by a
   * transaction or session, whose queries fail anyway. Default: one line on stderr. Must not throw.
   */
  onError?: (err: Error) => void;
  /**
   * The database has the sealed scope (`scopeSealSql`; `true`: schema `user_scope`): every
   * `withUserScope` and audit sink on this adapter enters through it unless told otherwise.
   */
  seal?: boolean | { schema?: string };
  /**
   * Most milliseconds the adapter waits for the answer to each statement of a transaction (`BEGIN`,
   * the callback's, `COMMIT` with the session reset, `ROLLBACK`), client-side: `pg`'s `query_timeout`,
   * given per statement. Past it the statement fails (`Query read timeout`, which callers should retry),
   * the connection is closed rather than pooled again, and a `COMMIT` fails with
   * {@link CommitOutcomeUnknownError}. `statement_timeout` is the database's own limit and ends nothing
   * once the database is unreachable: this one does (found by review: a connection that went silent held
   * its transaction, its pool slot and its activity for ever). Set it above `statement_timeout`.
   * Default: the pool's `query_timeout` (none unless set); a failed statement's status is then awaited at
   * most 10 s. Sessions (`session()`, the migrations') are not bounded by it.
   */
  queryTimeoutMs?: number;
}

/**
 * The settings a new session took from defaults of its login role (`ALTER ROLE … SET`, also `… IN
 * DATABASE`): pg_settings names their source `user` and `database user`. A database's own defaults
 * (`ALTER DATABASE … SET`, a DBA's) and connection options (`client`) are not among them.
 */
const LOGIN_DEFAULTS = `select coalesce(string_agg(name, ', ' order by name), '') as names
    from pg_catalog.pg_settings where source in ('user', 'database user')`;

/** Options of {@link fromPGlite}. */
export type PGliteOptions = Pick<PgPoolOptions, 'seal'>;

/** The `onError` of every adapter of a pool: the pool's one listener tells each of them. */
const poolErrorHandlers = new WeakMap<Pool, Set<(err: Error) => void>>();

/**
 * Calls an `onError` handler. One that throws must neither silence the others nor escape: thrown from a
 * pool or client `error` event, it would be the uncaught exception these listeners are here to prevent.
 */
function tell(handler: (err: Error) => void, err: Error): void {
  try {
    handler(err);
  } catch (thrown) {
    console.error('temporal-user-context: an onError handler threw', thrown);
  }
}

function reportLostConnection(err: Error): void {
  console.error(
    `temporal-user-context: a PostgreSQL connection was lost (${err.message}); the pool reconnects`,
  );
}

/**
 * Adapts a `pg` Pool. The pool stays owned by the caller (this adapter never ends it). Make one adapter
 * per pool, once: each call adds its `onError` to the pool's one listener for the pool's life.
 *
 * `pg` emits `error` on the pool when an idle connection drops, and on a checked-out client when its
 * connection drops, and an `error` event with no listener is thrown as an uncaught exception: one
 * database restart would take down every worker and API process. So the adapter listens on the pool
 * (once per pool) and on each client it checks out, reports the loss through `onError`, and never
 * returns a client that lost its connection to the pool.
 *
 * A transaction's or session's queryable refuses queries once its callback has settled. `pg` runs a
 * query on a client even after it went back to the pool, so a query sent late (a branch of a
 * `Promise.all` whose other branch rejected, a timer) would run outside the transaction as the login
 * role, or inside the next borrower's transaction, as that user, in that workspace.
 */
export function fromPgPool(given: PgPoolLike, options: PgPoolOptions = {}): SqlDatabase {
  const pool = given as Pool;
  const seal = sealSchema(options.seal);
  const queryTimeoutMs =
    options.queryTimeoutMs === undefined
      ? undefined
      : numberOption('queryTimeoutMs', options.queryTimeoutMs, 0, { min: 1, max: 3_600_000, integer: true });
  const onError = options.onError ?? reportLostConnection;
  let handlers = poolErrorHandlers.get(pool);
  if (!handlers) {
    const set = new Set<(err: Error) => void>();
    poolErrorHandlers.set(pool, set);
    pool.on('error', (err) => {
      for (const handler of set) tell(handler, err);
    });
    handlers = set;
  }
  handlers.add(onError);
  /** Connections whose session settings were checked (see checkOut). */
  const vetted = new WeakSet<object>();
  /**
   * Checks a client out with a listener for its lost connection, which also keeps it out of the pool.
   * A connection the pool opened is refused, on its first checkout, when its session took settings from
   * defaults of the login role (`ALTER ROLE … SET`): SQL inside a scope may switch back to its login
   * (`set_config('role', 'none', true)`) and set them for itself, and every later connection, of every
   * workspace, would start with them (found by review: a read-only default made every write fail, a
   * `search_path` every table vanish). The session's own settings are read, not a comparison with an
   * earlier connection's: a process started after the change, or a change undone between the session's
   * start and the check, would pass that (found by the round's review). Give such settings as
   * connection options instead (pg's `options: '-c name=value'`), which the check allows, as it allows
   * a database's defaults. Refused rather than repaired: the session reset keeps a session's defaults.
   */
  const checkOut = async () => {
    const client = await pool.connect();
    if (!vetted.has(client)) {
      let names: string;
      try {
        names = (await client.query<{ names: string }>(LOGIN_DEFAULTS)).rows[0]?.names ?? '';
      } catch (err) {
        client.release(err as Error);
        throw err;
      }
      if (names !== '') {
        const refused = new UserContextError(
          ErrorCodes.MISCONFIGURED,
          `the database session took ${names} from defaults of its login role (ALTER ROLE … SET), which SQL run inside a scope can set for every new connection: give them as connection options, and reset the role's (ALTER ROLE … RESET ALL)`,
        );
        client.release(refused);
        throw refused;
      }
      vetted.add(client);
    }
    let lostWith: Error | undefined;
    const listener = (err: Error) => {
      lostWith = err;
      tell(onError, err);
    };
    client.on('error', listener);
    return {
      client,
      release(broken: Error | undefined) {
        client.removeListener('error', listener);
        client.release(broken ?? lostWith);
      },
    };
  };
  const wrap = (client: Pool | PoolClient, open: () => boolean = () => true): SqlQueryable => ({
    async query<R extends object>(sql: string, params: readonly unknown[] = []) {
      if (!open()) throw queryAfterEnd();
      const res = await client.query(sql, params as unknown[]);
      return { rows: res.rows as R[], rowCount: res.rowCount ?? res.rows.length };
    },
  });
  return {
    driver: 'pg',
    ...(seal === undefined ? {} : { seal }),
    query: wrap(pool).query,
    async transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
      const checkedOut = await checkOut();
      const { client } = checkedOut;
      let broken: Error | undefined;
      let reset = false;
      const state = { open: true, ended: false };
      // A statement whose answer never came: the connection's state is unknown, and it is closed, not
      // rolled back (a ROLLBACK would wait behind the statement) nor pooled again.
      let lost: Error | undefined;
      const bounded = <C extends QueryConfig>(config: C): C =>
        queryTimeoutMs === undefined ? config : Object.assign(config, { query_timeout: queryTimeoutMs });
      const script = (text: string) => client.query(bounded({ text })) as unknown as Promise<QueryResult[]>;
      try {
        try {
          await client.query(bounded({ text: 'BEGIN' }));
          // The extended protocol runs one statement per call (the simple one, used for a query
          // without parameters, would run `COMMIT; SELECT …` as two).
          const send = async (text: string, values: readonly unknown[]): Promise<Sent> => {
            const config: QueryConfig & { queryMode: 'extended' } = bounded({
              text,
              values: values as unknown[],
              queryMode: 'extended',
            });
            // Nothing more once a statement got no answer: it may still run, and what the connection
            // answers next is not this statement's (found by review: a callback that caught the
            // timeout had its next statements, and its COMMIT, queued behind the one that hung).
            if (lost) throw lost;
            try {
              const res = await client.query(config);
              return {
                rows: res.rows as never[],
                rowCount: res.rowCount ?? res.rows.length,
                command: res.command,
              };
            } catch (err) {
              if (isReadTimeout(err)) lost = err as Error;
              else if (!(await settledWithin(client, queryTimeoutMs ?? SETTLE_LIMIT_MS)))
                lost = new Error('no answer from the database after a failed statement', { cause: err });
              throw err;
            }
          };
          const result = await guardedCallback(fn, send, () => client.getTransactionStatus() !== 'I', state);
          if (lost) throw lost;
          // COMMIT alone, then the session reset: sent together, a reset statement's failure after the
          // COMMIT is all pg reports, with its own SQLSTATE, and hid that the COMMIT had committed
          // (found by review).
          let commit: QueryResult;
          try {
            commit = await client.query(bounded({ text: 'COMMIT' }));
          } catch (err) {
            // The database's refusal of the COMMIT is an answer: not committed. A lost connection's
            // (class 08) or a terminated backend's (57P01–57P05), a socket's error or no answer in time
            // leave it unknown (found by review: recorded as rolled back, though it had committed).
            if (refusedByDatabase(err)) throw err;
            lost = err instanceof Error ? err : new Error(String(err));
            throw new CommitOutcomeUnknownError({ cause: err });
          }
          reset = true;
          // Committed (or, below, rolled back): a reset that fails leaves session state behind, and the
          // connection is closed instead of pooled again; the transaction's outcome stands.
          try {
            await script(SESSION_RESET);
          } catch (resetErr) {
            broken = resetErr instanceof Error ? resetErr : new Error(String(resetErr));
          }
          // On an aborted transaction (the callback swallowed an SQL error) Postgres answers COMMIT with
          // ROLLBACK. Say so, as PGlite does, rather than report writes that never happened.
          if (commit.command === 'ROLLBACK')
            // With PGlite's SQLSTATE for it, so that callers match one code whichever the driver.
            throw Object.assign(new Error('transaction was aborted and rolled back instead of committed'), {
              code: '25P02',
            });
          return result;
        } catch (err) {
          if (isReadTimeout(err)) lost ??= err as Error;
          if (state.ended) {
            // Whatever the callback ran before ending the transaction may have left session state
            // behind (a session-level SET): the connection is not pooled again.
            broken = transactionEnded();
            throw err;
          }
          if (lost) broken = lost;
          else if (!reset) {
            try {
              await script(`ROLLBACK; ${SESSION_RESET}`);
            } catch (rollbackErr) {
              // A connection we could not roll back (or reset) might still carry the transaction or its
              // session state: destroy it.
              broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
            }
          }
          throw err;
        }
      } finally {
        checkedOut.release(broken);
      }
    },
    async session<T>(fn: (session: SqlSession) => Promise<T>): Promise<T> {
      const checkedOut = await checkOut();
      const { client } = checkedOut;
      let broken: Error | undefined;
      let open = true;
      try {
        const result = await fn({
          ...wrap(client, () => open),
          async exec(sql: string) {
            if (!open) throw queryAfterEnd();
            // pg returns an array of results for a multi-statement script.
            const res: unknown = await client.query(sql);
            const last = (Array.isArray(res) ? res[res.length - 1] : res) as QueryResult | undefined;
            return { rows: last?.rows ?? [], rowCount: last?.rowCount ?? 0 };
          },
        });
        // A callback that began a transaction and returned: its work is not committed, and the
        // connection must not go back to the pool inside it (the next transaction would commit it).
        // Asked after one more round trip: pg runs a connection's queries in order, so statements the
        // callback sent without awaiting them (a `BEGIN`) have run by then.
        // (In a transaction the callback left aborted, the probe itself fails: refused all the same.)
        const probe = await client.query('SELECT 1').then(
          () => undefined,
          (err: unknown) => err,
        );
        // Any other failure (a connection lost meanwhile) is what it is.
        if (probe !== undefined && !leftAborted(probe)) throw probe;
        if (probe !== undefined || client.getTransactionStatus() !== 'I') throw sessionLeftTransaction(probe);
        return result;
      } catch (err) {
        // The callback may have left a transaction or session state behind: do not pool the connection.
        broken = err instanceof Error ? err : new Error(String(err));
        throw err;
      } finally {
        open = false;
        await resetSession(client, broken).then((err) => checkedOut.release(broken ?? err));
      }
    },
  };
}

/**
 * Runs {@link SESSION_RESET} on a connection going back to the pool (not on one that is closed anyway);
 * resolves to the error that makes it unfit to pool again, if the reset failed.
 */
async function resetSession(client: PoolClient, broken: Error | undefined): Promise<Error | undefined> {
  if (broken) return undefined;
  try {
    await client.query(SESSION_RESET);
    return undefined;
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** The part of a PGlite instance (or its transaction object) this adapter uses. */
export interface PGliteLikeQueryable {
  query<T>(sql: string, params?: unknown[]): Promise<{ rows: T[]; affectedRows?: number }>;
  exec(sql: string): Promise<Array<{ rows: SqlRow[]; affectedRows?: number }>>;
}

/** The part of a PGlite instance this adapter uses; `PGlite` from `@electric-sql/pglite` satisfies it. */
export interface PGliteLike extends PGliteLikeQueryable {
  transaction<T>(fn: (tx: PGliteLikeQueryable) => Promise<T>): Promise<T>;
  /**
   * Whether its one connection is in a transaction (`PGlite` has it): a transaction callback that
   * ended its transaction is refused from the statement that did. Without it, only the check of a
   * statement's first words stops that (a `PGliteInterface` or `PGliteWorker` has no such method).
   */
  isInTransaction?(): boolean;
}

/**
 * Per PGlite instance: the turn of its adapters' transactions and sessions (each holds it through its
 * session reset), and the open session, which their queries wait for too.
 */
interface InstanceTurns {
  tail: Promise<void>;
  session?: Promise<void>;
}
const instanceTurns = new WeakMap<object, InstanceTurns>();

/**
 * Adapts a PGlite instance. PGlite has a single connection and serialises transactions with a mutex,
 * so concurrent {@link SqlDatabase.transaction} calls queue rather than interleave.
 */
export function fromPGlite(db: PGliteLike, options: PGliteOptions = {}): SqlDatabase {
  const seal = sealSchema(options.seal);
  let turns = instanceTurns.get(db);
  if (!turns) instanceTurns.set(db, (turns = { tail: Promise.resolve() }));
  const instance = turns;
  /** Runs `fn` when no other transaction or session of this PGlite instance's adapters runs. */
  const inTurn = async <T>(fn: () => Promise<T>): Promise<T> => {
    const before = instance.tail;
    let release!: () => void;
    instance.tail = new Promise<void>((resolve) => (release = resolve));
    await before;
    try {
      return await fn();
    } finally {
      release();
    }
  };
  // PGlite's `username` option is a session-level SET ROLE, which the reset's RESET ROLE would undo (to
  // its superuser): the role of the connection when the adapter is made is set again after each reset.
  // Asked now, before any transaction of this adapter, and in turn: not while another adapter's
  // session has switched the role.
  const sessionRole = inTurn(() => db.query<{ role: string }>('select current_user::text as role')).then(
    (r) => r.rows[0]?.role,
    () => undefined,
  );
  const reset = async (run: (sql: string) => Promise<unknown>, prefix = ''): Promise<void> => {
    const role = await sessionRole;
    await run(`${prefix}${SESSION_RESET}${role ? `; SET ROLE ${quoteIdent(role)}` : ''}`);
  };
  const afterSessions = async (): Promise<void> => {
    while (instance.session) await instance.session;
  };
  const wrap = (q: PGliteLikeQueryable): SqlQueryable => ({
    async query<R extends object>(sql: string, params: readonly unknown[] = []) {
      const res = await q.query<R>(sql, [...params]);
      return { rows: res.rows, rowCount: res.rows.length > 0 ? res.rows.length : (res.affectedRows ?? 0) };
    },
  });
  return {
    driver: 'pglite',
    ...(seal === undefined ? {} : { seal }),
    async query<R extends object>(sql: string, params?: readonly unknown[]) {
      if (instance.session) await afterSessions();
      return wrap(db).query<R>(sql, params);
    },
    transaction: <T>(fn: (tx: SqlQueryable) => Promise<T>) => inTurn(() => transaction(fn)),
    session: <T>(fn: (session: SqlSession) => Promise<T>) => inTurn(() => session(fn)),
  };

  async function transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
    const state = { open: true, ended: false };
    let resetInside = false;
    try {
      const result = await db.transaction(async (tx) => {
        const send = wrap(tx).query as (sql: string, params: readonly unknown[]) => Promise<Sent>;
        const inTransaction = db.isInTransaction ? () => db.isInTransaction!() : () => true;
        const value = await guardedCallback(fn, send, inTransaction, state);
        // PGlite's one connection is everyone's, and PGlite lets no other query in between its
        // transaction's end and this adapter's next statement: the session is reset inside the
        // transaction, just before COMMIT (so deferred triggers run after it). In a transaction an
        // error aborted (the callback swallowed it) it cannot run: COMMIT rolls back, then below.
        // Deferred constraints and triggers first, while the transaction is still the callback's.
        resetInside = await reset((sql) => tx.exec(sql), 'SET CONSTRAINTS ALL IMMEDIATE; ').then(
          () => true,
          () => false,
        );
        return value;
      });
      if (!resetInside) await reset((sql) => db.exec(sql)).catch(() => undefined);
      return result;
    } catch (err) {
      // Rolled back: what the transaction set is undone, but not a session advisory lock, nor what a
      // callback that ended the transaction itself left. Reset, after other work queued meanwhile.
      await reset((sql) => db.exec(sql)).catch(() => undefined);
      throw err;
    }
  }

  async function session<T>(fn: (session: SqlSession) => Promise<T>): Promise<T> {
    // In its turn, and no query of this PGlite instance's adapters while it is open: its one
    // connection is the session's (its role, temporary objects, a transaction it began).
    let release!: () => void;
    instance.session = new Promise<void>((resolve) => (release = resolve));
    const state = { open: true };
    try {
      const result = await runSession(fn, state);
      // After one more statement: PGlite runs them in order, so any the callback did not await (a
      // `BEGIN`) have run by then. (It fails in a transaction the callback left aborted: asked below.)
      const probe = await db.query('SELECT 1').then(
        () => undefined,
        (err: unknown) => err,
      );
      if (probe !== undefined && !leftAborted(probe)) {
        // PGlite's one connection cannot be thrown away: out of any transaction, whatever happened.
        if (db.isInTransaction?.() ?? true) await db.exec('ROLLBACK').catch(() => undefined);
        throw probe;
      }
      const inTransaction = db.isInTransaction?.();
      if (probe !== undefined || inTransaction === true) {
        await db.exec('ROLLBACK');
        throw sessionLeftTransaction(probe);
      }
      // Without isInTransaction (a PGliteInterface) there is no telling: rolled back all the same,
      // which outside a transaction only warns.
      if (inTransaction === undefined) await db.exec('ROLLBACK').catch(() => undefined);
      return result;
    } finally {
      // Statements the callback left to be sent later are refused from here: they would run after
      // the reset, or in another adapter's turn.
      state.open = false;
      await reset((sql) => db.exec(sql)).catch(() => undefined);
      instance.session = undefined;
      release();
    }
  }

  /**
   * The session's callback on PGlite's connection. One that throws inside a transaction it began has
   * it rolled back here: the one connection cannot be thrown away as a pooled one is, and the next
   * transaction's COMMIT would commit that work.
   */
  async function runSession<T>(
    fn: (session: SqlSession) => Promise<T>,
    state: { open: boolean },
  ): Promise<T> {
    const ended = () => queryAfterEnd();
    try {
      return await fn({
        async query<R extends object>(sql: string, params?: readonly unknown[]) {
          if (!state.open) throw ended();
          return wrap(db).query<R>(sql, params);
        },
        async exec(sql: string) {
          if (!state.open) throw ended();
          const results = await db.exec(sql);
          const last = results[results.length - 1];
          return { rows: last?.rows ?? [], rowCount: last?.rows.length || (last?.affectedRows ?? 0) };
        },
      });
    } catch (err) {
      // (Asked after one more statement, for one the callback did not await.)
      await db.query('SELECT 1').catch(() => undefined);
      if (db.isInTransaction?.() ?? true) await db.exec('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }
}
