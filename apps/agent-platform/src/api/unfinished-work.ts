/**
 * Work of the API that its closing must wait for, so that the work's writes and records go before the
 * database pool and the audit sinks close: route handlers still running (one whose client went away
 * still runs to its end, and Node's server does not wait for it), and work after an answer (the late
 * deletes of a schedule create that timed out), each by its timer, with what to do instead when the API
 * closes first (`dropped`: log and record what was left undone).
 */
export class UnfinishedWork {
  private readonly pending = new Map<NodeJS.Timeout, () => void>();
  private readonly working = new Set<Promise<void>>();
  private closed = false;

  /**
   * Waits at closing for `work` (begun elsewhere: what a handler returned) to settle, whichever way;
   * a value that is not a promise is done already.
   */
  track(work: unknown): void {
    if (typeof (work as PromiseLike<unknown> | undefined)?.then !== 'function') return;
    const job: Promise<void> = Promise.resolve(work)
      .then(
        () => undefined,
        () => undefined,
      )
      // A turn of the event loop later: what the framework does with the outcome (an error handler's
      // record, the answer) comes before closing goes on.
      .then(() => new Promise<void>((resolve) => setImmediate(resolve)))
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
   * Drops what has not begun, and waits for what has, at most `maxWaitMs`. Resolves to how many pieces
   * of work were still running then.
   */
  async close(maxWaitMs: number): Promise<number> {
    this.closed = true;
    for (const [timer, dropped] of this.pending) {
      clearTimeout(timer);
      dropped();
    }
    this.pending.clear();
    let waited: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.working]),
      new Promise((resolve) => (waited = setTimeout(resolve, maxWaitMs))),
    ]);
    clearTimeout(waited);
    return this.working.size;
  }
}
