/**
 * Lookups by key, their values kept only once they succeed: concurrent callers share one lookup, a
 * failed one is forgotten (the next caller looks again), and only successes count toward `size`
 * (eviction, least recently used first, happens when one is added), so a flood of bad keys, in flight
 * or failed, cannot push good ones out, and a stream of new good ones pushes out the idle ones first. With `ttlMs`, a success is kept that long after its lookup began,
 * then looked up again (on a monotonic clock): for answers that can change (a schedule that is deleted). A lookup that never
 * settles holds its key (its callers wait with it): lookups bound their own time (the worker's calls to
 * the server end at `LOOKUP_TIMEOUT_MS`, 10 s).
 */
export class SuccessCache<V> {
  /** Values of lookups that succeeded, least recently used first: at most `size`. */
  private readonly kept = new Map<string, Kept<V>>();
  /** Lookups in flight, shared by concurrent callers; bounded by how many run at once. */
  private readonly inFlight = new Map<string, InFlight<V>>();

  constructor(
    private readonly size: number,
    private readonly ttlMs = Infinity,
  ) {}

  get(key: string, lookup: () => Promise<V>): Promise<V> {
    const kept = this.kept.get(key);
    // Without a TTL no clock is read (the verifier's token cache is on every activity's path).
    if (kept && (this.ttlMs === Infinity || monotonicNow() < kept.until)) {
      // Used now: moved to the end, last to go. Found by review: evicted oldest-first regardless, a
      // run's token used by every activity could go before tokens used once.
      this.kept.delete(key);
      this.kept.set(key, kept);
      // A promise made for this caller: the kept value is not the lookup's promise (below).
      return Promise.resolve(kept.value);
    }
    if (kept) this.kept.delete(key);
    const flying = this.inFlight.get(key);
    if (flying && (this.ttlMs === Infinity || monotonicNow() < flying.until)) return flying.pending;
    const pending = lookup();
    const entry = { pending, until: this.ttlMs === Infinity ? Infinity : monotonicNow() + this.ttlMs };
    this.inFlight.set(key, entry);
    pending.then(
      (value) => {
        // Only this lookup's entry: one begun after it expired, under the same key, stays in flight.
        if (this.inFlight.get(key) !== entry) return;
        this.inFlight.delete(key);
        // The value, not the promise (found by review): on Node 20 a promise keeps the async context it
        // was made in, here the activity that looked it up, with its info, task token and scope, for as
        // long as the entry is kept: some 6 to 19 KB an entry instead of the value's 1 or 2.
        this.kept.set(key, { value, until: entry.until });
        this.evict();
      },
      () => {
        if (this.inFlight.get(key) === entry) this.inFlight.delete(key);
      },
    );
    return pending;
  }

  /**
   * Past `size`, the least recently used entry goes; with a TTL, expired entries at the old end go too
   * (found by review: each run's confirmation stayed, under a key never asked again, until it was the
   * oldest of `size`).
   */
  private evict(): void {
    if (this.kept.size > this.size) this.kept.delete(this.kept.keys().next().value as string);
    if (this.ttlMs === Infinity) return;
    const now = monotonicNow();
    for (const [key, { until }] of this.kept) {
      if (until > now) break;
      this.kept.delete(key);
    }
  }
}

/**
 * Milliseconds on a clock that only moves forward: a TTL kept by the wall clock grew by the size of any
 * backward step of it (an NTP correction), and a deleted schedule stayed confirmed that much longer
 * (found by review).
 */
function monotonicNow(): number {
  return performance.now();
}

interface Kept<V> {
  readonly value: V;
  readonly until: number;
}

interface InFlight<V> {
  readonly pending: Promise<V>;
  readonly until: number;
}
