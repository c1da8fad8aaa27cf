/**
 * Work of the API that its closing must wait for, so that the work's writes and records go before the
 * database pool and the audit sinks close: requests still being handled, and work after an answer (the
 * late deletes of a schedule create that timed out), each by its timer, with what to do instead when
 * the API closes first (`dropped`: log and record what was left undone).
 *
 * Node's server waits at closing for connections with a request in flight, but not for a request whose
 * client went away: Fastify still runs its hooks and its handler (or the error handler) to their end,
 * and those write and record. A request is done once it is answered, or once its client left and what
 * Fastify runs for it has run ({@link RequestWork}).
 */
export class UnfinishedWork {
  private readonly pending = new Map<NodeJS.Timeout, () => void>();
  private readonly working = new Set<Promise<void>>();
  private closed = false;

  /** A request begun (its first hook): closing waits until it is done. */
  begin(): RequestWork {
    let finish!: () => void;
    const job = new Promise<void>((resolve) => (finish = resolve)).finally(() => this.working.delete(job));
    this.working.add(job);
    let ran = false;
    let gone = false;
    // A turn of the event loop later: what Fastify does after a handler (its error handler's record)
    // comes before closing goes on.
    const done = () => setImmediate(finish);
    return {
      answered: done,
      ran: () => {
        ran = true;
        if (gone) done();
      },
      gone: () => {
        gone = true;
        if (ran) done();
      },
    };
  }

  /** Waits at closing for `work` (begun elsewhere) to settle, whichever way. */
  track(work: Promise<unknown>): void {
    const job: Promise<void> = work
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => this.working.delete(job));
    this.working.add(job);
  }

  /** Runs `work` in `delayMs` (its errors its own), or `dropped` if the API closes first. */
  later(delayMs: number, work: () => Promise<void>, dropped: () => void): void {
    if (this.closed) return dropped();
    const timer = setTimeout(() => {
      this.pending.delete(timer);
      this.track(work());
    }, delayMs);
    timer.unref();
    this.pending.set(timer, dropped);
  }

  /**
   * Drops what has not begun, and waits, at most `maxWaitMs`, until no work is left: work begun while
   * it waits too (a request that was still in its hooks). Resolves to how much was still left then.
   */
  async close(maxWaitMs: number): Promise<number> {
    this.closed = true;
    for (const [timer, dropped] of this.pending) {
      clearTimeout(timer);
      dropped();
    }
    this.pending.clear();
    const end = Date.now() + maxWaitMs;
    while (this.working.size > 0 && Date.now() < end) {
      let waited: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.working]),
        new Promise((resolve) => (waited = setTimeout(resolve, end - Date.now()))),
      ]);
      clearTimeout(waited);
    }
    return this.working.size;
  }
}

/** One request's part in {@link UnfinishedWork}: whichever of these completes it. */
export interface RequestWork {
  /** The answer went out (Fastify's `onResponse`): done. */
  answered(): void;
  /** Its handler settled, or the error or not-found handler ran: done once its client has left. */
  ran(): void;
  /** Its client left before the answer (`onRequestAbort`): done once it has run. */
  gone(): void;
}
