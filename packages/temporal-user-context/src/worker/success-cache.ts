/**
 * Promises of a lookup by key, kept only once they succeed: concurrent callers share one lookup, a
 * failed one is forgotten (the next caller looks again), and only successes count toward `size`
 * (eviction, least recently used first, happens when one is added), so a flood of bad keys, in flight
 * or failed, cannot push good ones out, and a stream of new good ones pushes out the idle ones first. With `ttlMs`, a success is kept that long after its lookup began,
 * then looked up again: for answers that can change (a schedule that is deleted). A lookup that never
 * settles holds its key (its callers wait with it): lookups bound their own time (the worker's calls to
 * the server end at the native connection's 30 s).
 */
export class SuccessCache<V> {
  /** Lookups that succeeded, least recently used first: at most `size`. */
  private readonly kept = new Map<string, Entry<V>>();
  /** Lookups in flight, shared by concurrent callers; bounded by how many run at once. */
  private readonly inFlight = new Map<string, Entry<V>>();

  constructor(
    private readonly size: number,
    private readonly ttlMs = Infinity,
  ) {}

  get(key: string, lookup: () => Promise<V>): Promise<V> {
    const kept = this.kept.get(key);
    const hit = kept ?? this.inFlight.get(key);
    // Without a TTL no clock is read (the verifier's token cache is on every activity's path).
    if (hit && (this.ttlMs === Infinity || Date.now() < hit.until)) {
      // Used now: moved to the end, last to go. Found by review: evicted oldest-first regardless, a
      // run's token used by every activity could go before tokens used once.
      if (kept) {
        this.kept.delete(key);
        this.kept.set(key, kept);
      }
      return hit.value;
    }
    if (hit) {
      this.kept.delete(key);
      this.inFlight.delete(key);
    }
    const pending = lookup();
    const entry = { value: pending, until: this.ttlMs === Infinity ? Infinity : Date.now() + this.ttlMs };
    this.inFlight.set(key, entry);
    pending.then(
      () => {
        // Only this lookup's entry: one begun after it expired, under the same key, stays in flight.
        if (this.inFlight.get(key) !== entry) return;
        this.inFlight.delete(key);
        this.kept.set(key, entry);
        if (this.kept.size > this.size) this.kept.delete(this.kept.keys().next().value as string);
      },
      () => {
        if (this.inFlight.get(key) === entry) this.inFlight.delete(key);
      },
    );
    return pending;
  }
}

interface Entry<V> {
  readonly value: Promise<V>;
  readonly until: number;
}
