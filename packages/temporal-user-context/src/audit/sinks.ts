import { writeSync } from 'node:fs';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import type { AuditEvent, AuditSink } from './event.js';
import { describeThrown, sanitizeAuditEvent } from './sanitize.js';
import { reportOnStderr } from './stderr.js';

/**
 * How many bytes of lines the default logger holds while stdout does not take them (a stalled log
 * shipper or pipe reader). pino's own default holds them without bound: found by review, 200 000
 * refusals at 20 000 a second held 63 MB, and a flood that lasts runs the process out of memory.
 */
export const STDOUT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;

/**
 * Default sink: one pino line per event at `info` (allow) or `warn` (deny), under `audit`.
 *
 * Without `logger`, lines go to stdout through a buffer of at most {@link STDOUT_MAX_BUFFERED_BYTES}:
 * while stdout does not drain, lines past it are dropped, not held, and counted; the next audit line
 * that fits is preceded by an `error` line saying how many were dropped (`linesDropped`, of which
 * `auditDropped` audit records: {@link stdoutLogger}'s lines share the buffer). On
 * `process.exit` (in the main thread: pino flushes no worker thread's lines), what is buffered is
 * written, then a count still untold, within {@link EXIT_FLUSH_BUDGET_MS} in all (a reader that drains
 * slowly may not get them all); what that leaves unwritten is reported on stderr, and so are lines
 * emitted after it (an exit listener's), which are written at once otherwise. A write the thread pool
 * has under way as the exit begins finishes on its own: its lines may land after the exit's, or,
 * should stdout refuse it just then, be lost or cut (rare). A process that ends without `process.exit`
 * waits for stdout as Node does for its own writes: end a long-running process with `process.exit`
 * after its shutdown. A reader that went away (EPIPE) gets no more lines, as with pino. Every such sink
 * of the process shares that buffer, and so does {@link stdoutLogger}. A logger you pass keeps its own
 * destination's behaviour.
 */
export function pinoAuditSink(logger?: Logger): AuditSink {
  // One buffer for the process, however many sinks (an edge and a worker in one process, the default
  // auditor): the bound is the process's, not a multiple of it.
  if (logger) return linesTo(logger);
  stdoutLines ??= boundedLinesTo(1, STDOUT_MAX_BUFFERED_BYTES);
  return stdoutLines;
}

/** The default sink's lines to stdout, shared by the process. */
let stdoutLines: ReturnType<typeof boundedLinesTo> | undefined;

/**
 * A pino logger on the default audit sink's stdout: the same bounded buffer and the same exit flush
 * ({@link pinoAuditSink}). Give it to a process's other logs on stdout, an HTTP server's request log
 * say: pino's default destination holds lines without bound and retries its exit flush for ever, so a
 * stalled stdout reader would keep the process from exiting through that log (found by review, in the
 * agent platform's API). One destination also keeps the two logs' lines from interleaving mid-line.
 * Lines of either log past the buffer are dropped and counted in the audit sink's notices.
 */
export function stdoutLogger(options: Omit<LoggerOptions, 'transport'> = {}): Logger {
  // A transport would replace the destination: the bound would not apply.
  if ('transport' in options)
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      'stdoutLogger writes to stdout itself: no transport',
    );
  stdoutLines ??= boundedLinesTo(1, STDOUT_MAX_BUFFERED_BYTES);
  return pino(options, stdoutLines.destination);
}

/**
 * How long the default logger keeps trying, as the process exits, to write the lines it holds while
 * stdout does not take them. pino writes them synchronously on exit and retries for ever by default:
 * found by review, a process whose log reader had stalled never exited (`process.exit` hung until the
 * supervisor's SIGKILL, which loses the lines all the same).
 */
export const EXIT_FLUSH_BUDGET_MS = 2000;

/** How long sonic-boom (4.x) waits before it retries a write refused with EAGAIN. */
const RETRY_WAIT_MS = 100;

/** sonic-boom's (4.x) own record of the write it has started: see `boundedLinesTo`'s exit flush. */
interface StartedWrite {
  _writing?: unknown;
  _writingBuf?: unknown;
  _bufs?: unknown;
  _len?: unknown;
}

/** Sleeps the thread (the exit's flush is synchronous, as sonic-boom's own). */
const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** The default logger's sink, writing to file descriptor `fd`, and its destination; exported for tests. */
export function boundedLinesTo(
  fd: number,
  maxBufferedBytes: number,
): AuditSink & { readonly destination: DestinationStream } {
  // A pipe on fd 1 is left blocking until something opens `process.stdout`, which makes it
  // non-blocking: a blocking write to a stalled reader never returns EAGAIN, so no bound below would
  // apply and the exit would wait in the kernel (found by review, in a process that never logged
  // through `process.stdout`).
  if (fd === 1) void process.stdout;
  /** While flushing on exit: when to stop retrying a write stdout refuses for now (EAGAIN). */
  let giveUpAt: number | undefined;
  /** Whether the write sonic-boom started is waiting to be retried (EAGAIN) rather than done. */
  let retrying = false;
  /** Whether the exit's flush ran, and whether it gave up with lines left in the buffer. */
  let exited = false;
  let stuck = false;
  const destination = pino.destination({
    dest: fd,
    sync: false,
    maxLength: maxBufferedBytes,
    // Asynchronous writes retry as long as it takes (they hold no one up); the exit's only until then.
    retryEAGAIN: () => {
      if (giveUpAt !== undefined) return Date.now() < giveUpAt;
      // Waiting for sonic-boom's retry timer (100 ms, set right after this returns): this one, of the
      // same length and set first, fires first, so that a write the retry has under way when the
      // process exits is not also written again by the exit (found by review).
      retrying = true;
      setTimeout(() => {
        retrying = false;
      }, RETRY_WAIT_MS).unref();
      return true;
    },
  });
  destination.on('write', () => {
    retrying = false;
  });
  let dropped = 0;
  // Lines of every logger on this destination count (stdoutLogger's too); audit lines apart.
  let auditDropped = 0;
  let emitting = false;
  destination.on('drop', () => {
    dropped++;
    if (emitting) auditDropped++;
  });
  const log = pino({ name: 'temporal-user-context' }, destination);
  const lines = linesTo(log);
  const tellDropped = () => {
    const count = dropped;
    log.error(
      { auditDropped, linesDropped: count },
      `stdout log: ${count} lines dropped while it did not drain (${auditDropped} of them audit records)`,
    );
    // The notice fitted: the count is told. Dropped as well: the count stands, the notice not in it.
    if (dropped === count) {
      dropped = 0;
      auditDropped = 0;
    } else dropped -= 1;
  };
  /** Why the exit's flush gave up: EAGAIN past the budget, or what else stdout answered (EPIPE...). */
  let refusal = `did not take its lines within ${EXIT_FLUSH_BUDGET_MS} ms of exit`;
  /** What the exit could not write, on stderr (synchronously: the process is exiting). */
  const report = (unwritten: boolean, untold: number) => {
    try {
      writeSync(
        2,
        `temporal-user-context: the audit log ${refusal}:${unwritten ? ' lines still buffered were not written;' : ''} ${untold} lines dropped before\n`,
      );
    } catch {
      // stderr refuses too: nothing else is left to tell.
    }
  };
  /**
   * Writes what the destination holds, as sonic-boom's `flushSync` does, but bounded: that one retries
   * EAGAIN as `retryEAGAIN` says and every other error (ENOSPC, EPIPE, EIO) for ever, sleeping between
   * tries (found by review: a full disk behind stdout hung the exit). EAGAIN is retried until the exit's
   * deadline, any other error thrown at once.
   */
  const flushSync = () => {
    const started = destination as unknown as StartedWrite;
    const bufs = started._bufs;
    if (!Array.isArray(bufs)) throw new Error('the destination holds no buffer it can flush');
    while (bufs.length > 0) {
      const head = bufs[0] as unknown;
      const bytes = typeof head === 'string' ? Buffer.from(head) : head;
      if (!Buffer.isBuffer(bytes)) throw new Error('the destination holds a buffer it cannot flush');
      try {
        const n = writeSync(fd, bytes);
        if (typeof started._len === 'number') started._len = Math.max(started._len - n, 0);
        if (n >= bytes.length) bufs.shift();
        else bufs[0] = bytes.subarray(n);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException | undefined)?.code;
        if ((code === 'EAGAIN' || code === 'EBUSY') && Date.now() < (giveUpAt ?? 0)) pause(RETRY_WAIT_MS);
        else throw err;
      }
    }
  };
  // A write that failed for a reason other than EAGAIN (a full disk): pino re-emits such errors (all but
  // EPIPE) from the destination, which crashed the process with no listener (found by review).
  // sonic-boom keeps the failed bytes and tries them again with the next line; meanwhile the buffer
  // fills to its bound and drops lines, counted and told as for a stalled reader.
  // EPIPE (the reader closed stdout) pino handles itself, before this listener: it replaces the
  // destination's write and flushSync with functions that do nothing, so every later line was lost
  // untold and the exit said nothing (found by review). They are counted instead, and told on stderr
  // at exit.
  let closedByReader = false;
  destination.on('error', (err: unknown) => {
    if ((err as NodeJS.ErrnoException | undefined)?.code !== 'EPIPE' || closedByReader) return;
    closedByReader = true;
    refusal = 'was closed by its reader (EPIPE)';
    destination.write = () => {
      dropped++;
      if (emitting) auditDropped++;
      // Once the exit has told the count, a line an exit listener emits is told at once.
      if (exited) report(false, dropped);
      return true;
    };
    destination.flushSync = () => {
      exited = true;
      const held = (destination as unknown as StartedWrite)._bufs;
      report(Array.isArray(held) && held.length > 0, dropped);
    };
  });
  /** When the exit's budget ends: one budget for the flush and whatever is emitted after it. */
  let exitDeadline: number | undefined;
  let flushing = false;
  // After the exit's flush, every line (of any logger on this destination) is written at once, or, once
  // that flush gave up, dropped and told on stderr: nothing else writes the buffer any more.
  const write = destination.write.bind(destination);
  destination.write = (line: string) => {
    if (stuck) {
      report(true, ++dropped);
      return true;
    }
    const taken = write(line);
    if (exited && !flushing) destination.flushSync();
    return taken;
  };
  destination.flushSync = () => {
    flushing = true;
    exitDeadline ??= Date.now() + EXIT_FLUSH_BUDGET_MS;
    giveUpAt = exitDeadline;
    // A write waiting for its retry timer, which will not fire now, holds its bytes (a string, or what
    // is left of it after part was written: a Buffer) where flushSync does not look, as it skips a
    // write in progress: they go first, or the lines are lost, or cut in two (found by review). A
    // write the thread pool has under way at this very instant is not seen again: should stdout refuse
    // it, in whole or in part, its lines are lost or cut (rare: the write takes microseconds).
    const started = destination as unknown as StartedWrite;
    const waiting = started._writingBuf;
    if (
      (retrying || started._writing !== true) &&
      Array.isArray(started._bufs) &&
      (typeof waiting === 'string' || Buffer.isBuffer(waiting)) &&
      waiting.length > 0
    ) {
      (started._bufs as unknown[]).unshift(waiting);
      started._writingBuf = '';
    }
    // From here on sonic-boom starts no write of its own: the notice below is buffered, and written by
    // flushSync in its turn, not handed to a write that the exit may not wait for.
    started._writing = true;
    let unwritten = false;
    let untold = dropped;
    // Whatever the outcome, lines emitted after this (an exit listener's) are written or counted here.
    exited = true;
    try {
      flushSync();
      // The buffer is empty now: a notice of what was dropped fits.
      if (dropped > 0) {
        untold = dropped;
        tellDropped();
        flushSync();
      }
      untold = dropped;
    } catch (err) {
      // The notice, if written to the buffer, did not reach the log: its count is still untold.
      unwritten = true;
      const code = (err as NodeJS.ErrnoException | undefined)?.code;
      if (code !== 'EAGAIN' && code !== 'EBUSY')
        refusal = `was refused at exit (${typeof code === 'string' ? code : 'error'})`;
      // What is left may begin with bytes already written: never flushed again, it would repeat them.
      stuck = true;
    } finally {
      giveUpAt = undefined;
      flushing = false;
    }
    if (unwritten || untold > 0) report(unwritten, untold);
  };
  return {
    destination,
    emit(event) {
      if (dropped > 0 && !stuck && !closedByReader) tellDropped();
      emitting = true;
      try {
        lines.emit(event);
      } finally {
        emitting = false;
      }
    },
  };
}

function linesTo(logger: Logger): AuditSink {
  return {
    emit(event) {
      const level = event.decision === 'deny' ? 'warn' : 'info';
      logger[level]({ audit: event }, `user-context ${event.action} ${event.decision}`);
    },
  };
}

let processAuditor: Auditor | undefined;

/**
 * The auditor of last resort: pino lines on stdout ({@link pinoAuditSink}), made on first use and shared
 * by the process. Code that decides outside a plugin worker's activity with no auditor of its own (a
 * `withUserScope` in an HTTP handler or a script) records here, so that no decision goes unrecorded
 * because an option was left out.
 */
export function defaultAuditor(): Auditor {
  processAuditor ??= new Auditor([pinoAuditSink()]);
  return processAuditor;
}

/** Collects events in memory; for tests and for the demo's audit table. */
export function memoryAuditSink(): AuditSink & { readonly events: AuditEvent[]; clear(): void } {
  const events: AuditEvent[] = [];
  return {
    events,
    emit(event) {
      events.push(event);
    },
    clear() {
      events.length = 0;
    },
  };
}

/**
 * Fans one event out to several sinks; a failing sink never blocks the others or the caller. Whatever a
 * sink throws or rejects with (even a value that cannot be turned into a string) is reported on stderr
 * and goes no further: no exception reaches the caller and no rejection is left unhandled.
 */
export class Auditor {
  constructor(private readonly sinks: readonly AuditSink[]) {}

  /**
   * Sanitises `event` with {@link sanitizeAuditEvent} (its own {@link AuditEvent} fields only, each
   * checked for its type and made safe to log, `time` set to now unless given) and hands the same clean
   * event to every sink. Never throws.
   */
  emit(event: Omit<AuditEvent, 'time'> & { time?: string }): void {
    // No fallback time read here: `event.time` could be inherited, and the sanitiser reads own fields.
    const clean = sanitizeAuditEvent(event);
    for (const sink of this.sinks) {
      try {
        const pending: unknown = sink.emit(clean);
        if (isThenable(pending)) {
          // Promise.resolve adopts any thenable, also one whose `then` throws: every outcome lands in a
          // handler that cannot throw, so the chain ends fulfilled.
          Promise.resolve(pending).then(undefined, reportSinkFailure);
        }
      } catch (err) {
        reportSinkFailure(err);
      }
    }
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

/** Never throws: an audit sink must not crash a worker, and neither may the report of its failure. */
function reportSinkFailure(err: unknown): void {
  reportOnStderr(`temporal-user-context: audit sink failed: ${describeThrown(err)}\n`);
}
