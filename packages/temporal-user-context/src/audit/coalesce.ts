import { numberOption } from '../context/number-option.js';
import type { AuditEvent, AuditSink } from './event.js';
import { describeThrown, sanitizeField } from './sanitize.js';

/** Options of {@link coalescingAuditSink}. */
export interface CoalescingAuditSinkOptions {
  /**
   * The records that may be coalesced. Default: refusals that name neither a user nor a workflow.
   * Anyone can cause those, at any rate (an HTTP request without a valid token): one database write
   * each would let an anonymous flood fill the table, and fill a bounded sink's backlog so that the
   * records of real decisions are dropped. Records that name a workflow (a refused start, a payload
   * that failed to decrypt) keep their ids, one record each.
   */
  match?: (event: AuditEvent) => boolean;
  /** Length of a window, in milliseconds. Default 60 000. */
  windowMs?: number;
  /**
   * How many kinds (action and reason) are counted apart at once. Default 100; the records of further
   * kinds share one window.
   */
  maxKinds?: number;
}

/** A sink that coalesces repeated records; see {@link coalescingAuditSink}. */
export interface CoalescingAuditSink extends AuditSink {
  /** Writes the summaries of the open windows now, then flushes the inner sink when it has `flush`. */
  flush(): Promise<void>;
}

/** Never throws: a summary that could not be written is reported on stderr. */
function reportSummaryFailure(err: unknown): void {
  try {
    process.stderr.write(`temporal-user-context: audit summary not written: ${describeThrown(err)}\n`);
  } catch {
    // stderr itself failed: nowhere left to report to.
  }
}

/** The key of the window for the kinds past `maxKinds`. */
const OTHER = '\u0000other';

interface Window {
  readonly first: AuditEvent;
  readonly opened: number;
  readonly timer: ReturnType<typeof setTimeout>;
  count: number;
}

/**
 * Wraps `inner` so that matching records (by default, refusals that name neither a user nor a workflow) are written once per
 * window and kind: the first one of a kind (same action and reason) goes through at once, the next
 * ones in the same window are counted, and when the window closes one summary record says how many
 * there were (`detail`: "N more like it in S s, coalesced; first: …"). Every refusal is still on record,
 * the later ones as a count (their own details are not kept), and a flood costs `inner` one write per
 * kind and window instead of one per request.
 * Other records pass through untouched. Give it the sink a flood would hurt (the database), not the
 * log, so that the log keeps every record.
 *
 * @example
 * const db = postgresAuditSink(database);
 * const plugin = new UserContextPlugin({ keys, audit: [coalescingAuditSink(db), pinoAuditSink()] });
 */
export function coalescingAuditSink(
  inner: AuditSink & { flush?: () => Promise<void> },
  options: CoalescingAuditSinkOptions = {},
): CoalescingAuditSink {
  const match =
    options.match ?? ((event: AuditEvent) => event.decision === 'deny' && !event.userId && !event.workflowId);
  const windowMs = numberOption('windowMs', options.windowMs, 60_000, { min: 1, max: 24 * 3600 * 1000 });
  const maxKinds = numberOption('maxKinds', options.maxKinds, 100, { min: 1, max: 100_000, integer: true });
  const windows = new Map<string, Window>();

  const close = (key: string): void | Promise<void> => {
    const window = windows.get(key);
    if (!window) return;
    windows.delete(key);
    clearTimeout(window.timer);
    if (window.count === 0) return;
    const { first } = window;
    const seconds = Math.round((Date.now() - window.opened) / 1000);
    const summary: AuditEvent = {
      time: new Date().toISOString(),
      action: first.action,
      decision: first.decision,
      source: first.source,
      reason: first.reason,
      detail: sanitizeField(
        `${window.count} more like it in ${seconds} s, coalesced${key === OTHER ? ' (other kinds too)' : ''}; ` +
          `first: ${first.detail ?? '-'}`,
      ),
    };
    if (first.namespace !== undefined) summary.namespace = first.namespace;
    return inner.emit(summary);
  };

  return {
    emit(event) {
      if (!match(event)) return inner.emit(event);
      let key = `${event.action}\u0000${event.reason}`;
      if (!windows.has(key) && windows.size >= maxKinds) key = OTHER;
      const open = windows.get(key);
      if (open) {
        open.count++;
        return;
      }
      // Unref'd: an open window must not keep a process alive; flush() writes what it holds. What the
      // inner sink throws or rejects with here has no caller to go to: reported, as the Auditor does.
      const timer = setTimeout(() => {
        try {
          Promise.resolve(close(key)).then(undefined, reportSummaryFailure);
        } catch (err) {
          reportSummaryFailure(err);
        }
      }, windowMs);
      timer.unref?.();
      windows.set(key, { first: event, opened: Date.now(), timer, count: 0 });
      return inner.emit(event);
    },
    async flush() {
      await Promise.all([...windows.keys()].map((key) => close(key)));
      await inner.flush?.();
    },
  };
}
