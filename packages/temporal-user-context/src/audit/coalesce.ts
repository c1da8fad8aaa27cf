import { numberOption } from '../context/number-option.js';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { REJECTED_BY_VALIDATOR, type AuditEvent, type AuditSink } from './event.js';
import { describeThrown, sanitizeField } from './sanitize.js';
import { reportOnStderr } from './stderr.js';

/** Options of {@link coalescingAuditSink}. */
export interface CoalescingAuditSinkOptions {
  /**
   * The records that may be coalesced. Default: refusals (`decision: 'deny'`). Anyone can cause those,
   * at any rate (an HTTP request without a valid token): one database write each would let an
   * anonymous flood fill the table, and fill a bounded sink's backlog so that the records of real
   * decisions are dropped. Whatever `match` says, a record that names someone or something (a user,
   * workspace, principal, token, workflow, run or activity id, a workflow or activity type, an
   * attempt) is never coalesced, but for the fields named in `keep`: a summary could not keep the
   * others, so it passes through, one record each.
   */
  match?: (event: AuditEvent) => boolean;
  /** Length of a window, in milliseconds. Default 60 000. */
  windowMs?: number;
  /**
   * How many kinds (action, decision, source, reason and namespace, the `keep` fields' values, and the
   * detail with `byDetail`) are counted apart at once. Default 100; the records of further kinds share
   * one window per decision, whose summary is an `audit.coalesced` record with reason `COALESCED` and
   * names nothing. When `keep` has `workspaceId`, those that name a workspace share a window per
   * decision and workspace instead (at most `maxKinds` such windows, then the shared one), whose
   * summary names the workspace. Either way a flood of distinct records costs `inner` a bounded number
   * of writes per window.
   */
  maxKinds?: number;
  /**
   * Naming fields a summary may carry (default none): a record that `match`es and names no one but
   * through these is coalesced too, counted apart for each value of them, and its window's summary names
   * them. E.g. `{ keep: ['userId', 'workspaceId'], match: (e) => e.reason ===
   * ErrorCodes.MEMBERSHIP_REVOKED }`: a removed member's token, used again and again, costs one record
   * per window, with the count, instead of one per request.
   */
  keep?: readonly KeptField[];
  /**
   * Count records apart by their `detail` too (default false: a window's summary quotes the first
   * record's detail only). For records whose detail says who and what, such as the queries workflow
   * code judges ({@link isHistorylessCall}): repeats of one call are counted, distinct calls keep their
   * own records until `maxKinds`.
   */
  byDetail?: boolean;
}

/** Naming fields a {@link CoalescingAuditSinkOptions.keep} may name. */
export type KeptField = 'userId' | 'workspaceId' | 'workflowId' | 'runId' | 'workflowType';

/**
 * Whether `event` is workflow code's record of a call that left nothing in the workflow's history: a
 * query, or an update refused (before it was accepted, or withdrawn with its acceptance) or rejected by
 * the workflow's own validator (an admission with reason `REJECTED_BY_VALIDATOR`). Anyone who
 * may query or update workflows in the namespace can cause these at any rate, with no key and at no
 * cost in history, and each is filed under the workflow's workspace: give the sink a flood would hurt
 * `coalescingAuditSink(sink, { match: isHistorylessCall, keep: ['workspaceId', 'workflowId', 'runId',
 * 'workflowType'], byDetail: true })` on workers. Signals and accepted updates are in history, each at
 * the sender's cost: their records stay one each.
 */
export function isHistorylessCall(event: AuditEvent): boolean {
  if (event.action === 'workflow.query') return true;
  // Refused by the policy, or admitted and then rejected by the workflow's own validator.
  return (
    event.action === 'workflow.update' &&
    (event.decision === 'deny' || event.reason === REJECTED_BY_VALIDATOR)
  );
}

const KEEPABLE: ReadonlySet<string> = new Set<KeptField>([
  'userId',
  'workspaceId',
  'workflowId',
  'runId',
  'workflowType',
]);

/** A sink that coalesces repeated records; see {@link coalescingAuditSink}. */
export interface CoalescingAuditSink extends AuditSink {
  /**
   * Writes the summaries of the open windows now, then flushes the inner sink when it has `flush`
   * (passing `options` on: a `postgresAuditSink` takes a `timeoutMs`). Coalescing goes on afterwards: a window opened later is written when it closes, by a timer that
   * does not keep the process alive. At shutdown, call {@link CoalescingAuditSink.close} instead.
   */
  flush(options?: { timeoutMs?: number }): Promise<void>;
  /**
   * For shutdown: from now on every record passes straight through to the inner sink (none is held
   * in a window that the process might exit before writing), then does what `flush()` does, closing
   * the inner sink instead of flushing it when it is another coalescing sink.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

/** Never throws: a summary that could not be written is reported on stderr. */
function reportSummaryFailure(err: unknown): void {
  reportOnStderr(`temporal-user-context: audit summary not written: ${describeThrown(err)}\n`);
}

/** The sinks {@link coalescingAuditSink} made: closing one closes one of these it wraps. */
const coalescing = new WeakSet<object>();

/**
 * The keys of the windows for the kinds past `maxKinds`: one per decision, so that a summary never counts
 * allows and denials together (a `match` may take both).
 */
const OTHER = { allow: '\u0000other:allow', deny: '\u0000other:deny' } as const;
const isOther = (key: string) => key.startsWith('\u0000other:');
/** A shared window of one workspace's, not one of {@link OTHER}. */
const isWorkspaceOther = (key: string) => isOther(key) && key !== OTHER.allow && key !== OTHER.deny;
/** The key of a shared window of one workspace (`keep` has `workspaceId`). */
const otherOf = (decision: 'allow' | 'deny', workspaceId: string) =>
  `${OTHER[decision]}\u0000${JSON.stringify(workspaceId)}`;

/**
 * Fields a summary does not carry: a record that has any of them passes through. A window is keyed
 * by the other fields (detail and time aside), so that its summary is true of every record it counts.
 */
const NAMING = [
  'userId',
  'workspaceId',
  'principal',
  'tokenId',
  'workflowId',
  'runId',
  'activityId',
  'workflowType',
  'activityType',
  'attempt',
] as const satisfies readonly (keyof AuditEvent)[];

interface Window {
  readonly first: AuditEvent;
  readonly opened: number;
  readonly timer: ReturnType<typeof setTimeout>;
  count: number;
}

/**
 * Wraps `inner` so that matching records (by default, refusals that name nobody: no user, workspace,
 * principal, token, workflow, run or activity, but through `keep`) are written once per window and
 * kind: the first one of a kind (same action, decision, source, reason and namespace, and `keep`'s
 * fields and the detail where asked) goes through at once, the next ones in
 * the same window are counted, and when the window closes one summary record with the kind's fields
 * says how many there were (`detail`: "N more like it in S s, coalesced; first: …"). Every refusal is
 * still on record, the later ones as a count (their own details are not kept), and a flood costs
 * `inner` one write per kind and window instead of one per request.
 * Other records pass through untouched. Give it the sink a flood would hurt (the database), not the
 * log, so that the log keeps every record. At shutdown, `await sink.close()` before the inner sink's
 * resources go.
 *
 * @example
 * const db = postgresAuditSink(database);
 * const plugin = new UserContextPlugin({ keys, audit: [coalescingAuditSink(db), pinoAuditSink()] });
 */
export function coalescingAuditSink(
  inner: AuditSink & { flush?: (options?: { timeoutMs?: number }) => Promise<void> },
  options: CoalescingAuditSinkOptions = {},
): CoalescingAuditSink {
  const match = options.match ?? ((event: AuditEvent) => event.decision === 'deny');
  const windowMs = numberOption('windowMs', options.windowMs, 60_000, { min: 1, max: 24 * 3600 * 1000 });
  const maxKinds = numberOption('maxKinds', options.maxKinds, 100, { min: 1, max: 100_000, integer: true });
  const keep: readonly KeptField[] = [...(options.keep ?? [])];
  for (const field of keep)
    if (!KEEPABLE.has(field))
      throw new UserContextError(
        ErrorCodes.MISCONFIGURED,
        `keep: ${String(field)} is no field a summary keeps`,
      );
  /** The naming fields that make a record pass through. */
  const naming = NAMING.filter((field) => !(keep as readonly string[]).includes(field));
  const byDetail = options.byDetail === true;
  const keepsWorkspace = keep.includes('workspaceId');
  const windows = new Map<string, Window>();
  /** How many of `windows` are shared windows of one workspace. */
  let workspaceWindows = 0;
  let closed = false;

  const closeWindow = (key: string): void | Promise<void> => {
    const window = windows.get(key);
    if (!window) return;
    windows.delete(key);
    clearTimeout(window.timer);
    const shared = isOther(key);
    if (isWorkspaceOther(key)) workspaceWindows--;
    if (window.count === 0) return;
    const { first } = window;
    const seconds = Math.round((Date.now() - window.opened) / 1000);
    if (shared) {
      // The records of a shared window share their decision only (it is in its key), and the
      // workspace of a workspace's own: the summary states nothing else of them, so that a query by
      // action, reason or namespace is not misled.
      const summary: AuditEvent = {
        time: new Date().toISOString(),
        action: 'audit.coalesced',
        decision: first.decision,
        source: 'none',
        reason: 'COALESCED',
        detail: sanitizeField(
          `${window.count} more of kinds past maxKinds in ${seconds} s, coalesced; first: ${first.action} ` +
            `${first.reason} in ${first.namespace ?? '-'}: ${first.detail ?? '-'}`,
        ),
      };
      if (isWorkspaceOther(key) && first.workspaceId !== undefined) summary.workspaceId = first.workspaceId;
      return inner.emit(summary);
    }
    const summary: AuditEvent = {
      time: new Date().toISOString(),
      action: first.action,
      decision: first.decision,
      source: first.source,
      reason: first.reason,
      detail: sanitizeField(
        `${window.count} more like it in ${seconds} s, coalesced; first: ${first.detail ?? '-'}`,
      ),
    };
    if (first.namespace !== undefined) summary.namespace = first.namespace;
    // Every record of a window of its own had these values (they are in its key).
    for (const field of keep) if (first[field] !== undefined) summary[field] = first[field];
    return inner.emit(summary);
  };

  const flush = async (flushOptions?: { timeoutMs?: number }, closing = false): Promise<void> => {
    // Each window on its own: an inner sink that throws for one summary must not leave the others open
    // on timers the exit does not wait for, nor the inner sink unflushed (found by review).
    const summaries = [...windows.keys()].map((key) => {
      try {
        return closeWindow(key);
      } catch (err) {
        reportSummaryFailure(err);
        return undefined;
      }
    });
    // A sink that flushes holds the summaries just handed to it: its flush (and its deadline) covers
    // them. Awaiting each first would wait on a hung database with no deadline armed. Closing, an inner
    // sink that closes (another coalescing sink) is closed too, so that it holds nothing at exit.
    const settle = closing && coalescing.has(inner) ? (inner as CoalescingAuditSink).close : inner.flush;
    if (settle) {
      for (const summary of summaries) Promise.resolve(summary).then(undefined, reportSummaryFailure);
      await settle.call(inner, flushOptions);
    } else
      await Promise.all(summaries.map((summary) => Promise.resolve(summary).catch(reportSummaryFailure)));
  };

  const sink: CoalescingAuditSink = {
    emit(event) {
      if (closed || naming.some((field) => event[field] !== undefined) || !match(event))
        return inner.emit(event);
      // JSON: an unambiguous key whatever the strings hold (also a namespace left out).
      let key = JSON.stringify([
        event.action,
        event.decision,
        event.source,
        event.reason,
        event.namespace ?? null,
        ...keep.map((field) => event[field] ?? null),
        ...(byDetail ? [event.detail ?? null] : []),
      ]);
      if (!windows.has(key) && windows.size - workspaceWindows >= maxKinds) {
        const decision = event.decision === 'allow' ? 'allow' : 'deny';
        key = OTHER[decision];
        // The workspace's own shared window, whose summary names it (every record of it does), while
        // there are fewer than maxKinds of those; else the one shared window, which names nothing. Found
        // by review: records naming someone passed through here, one write each, at any rate.
        if (keepsWorkspace && event.workspaceId !== undefined) {
          const own = otherOf(decision, event.workspaceId);
          if (windows.has(own)) key = own;
          else if (workspaceWindows < maxKinds) {
            key = own;
            workspaceWindows++;
          }
        }
      }
      const open = windows.get(key);
      if (open) {
        open.count++;
        return;
      }
      // Unref'd: an open window must not keep a process alive; flush() and close() write what it
      // holds. What the inner sink throws or rejects with here has no caller to go to: reported, as
      // the Auditor does.
      const timer = setTimeout(() => {
        try {
          Promise.resolve(closeWindow(key)).then(undefined, reportSummaryFailure);
        } catch (err) {
          reportSummaryFailure(err);
        }
      }, windowMs);
      timer.unref?.();
      windows.set(key, { first: event, opened: Date.now(), timer, count: 0 });
      return inner.emit(event);
    },
    flush,
    async close(flushOptions) {
      closed = true;
      await flush(flushOptions, true);
    },
  };
  coalescing.add(sink);
  return sink;
}
