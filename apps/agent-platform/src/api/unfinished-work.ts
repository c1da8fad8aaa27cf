/**
 * Work of the API that its closing must wait for, so that the work's writes and records go before the
 * database pool and the audit sinks close: what requests run (their authentication, their handlers),
 * which Node's server does not wait for once a request's client went away, and work after an answer
 * (the late deletes of a schedule create that timed out), each by its timer, with what to do instead
 * when the API closes first (`dropped`: log and record what was left undone).
 */
export class UnfinishedWork {
  private readonly pending = new Map<NodeJS.Timeout, () => void>();
  private readonly working = new Set<Promise<void>>();
  private closed = false;

  /**
   * Waits at closing for `work` (begun elsewhere: a hook's or a handler's promise) to settle, whichever
   * way; a value that is not a promise is done already.
   */
  track(work: unknown): void {
    if (!(work instanceof Promise)) return;
    const job: Promise<void> = work
      .then(
        () => undefined,
        () => undefined,
      )
      // A turn of the event loop later: what Fastify runs next for the request (the next hook, its
      // handler, which is then tracked in turn; the error handler's record) comes before this is done.
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
    // A request whose client left as the server closed fails its body's read (Fastify's error handler,
    // which records it) a turn or two after the server's 'close': let those run first.
    for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve));
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
