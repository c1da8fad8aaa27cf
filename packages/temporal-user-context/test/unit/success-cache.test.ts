import { AsyncLocalStorage } from 'node:async_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SuccessCache } from '../../src/worker/success-cache.js';

/** A lookup the test settles by hand, counting its calls. */
function controlled<V>() {
  const calls: Array<{ resolve: (v: V) => void; reject: (e: Error) => void }> = [];
  const lookup = () =>
    new Promise<V>((resolve, reject) => {
      calls.push({ resolve, reject });
    });
  return { lookup, calls };
}

/** Lets the cache's own handlers of settled lookups run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Looks `key` up in `cache` through `lookups`, which succeeds with the key; returns once it is kept. */
async function keep(
  cache: SuccessCache<string>,
  lookups: ReturnType<typeof controlled<string>>,
  key: string,
) {
  const got = cache.get(key, lookups.lookup);
  lookups.calls.at(-1)!.resolve(key);
  await got;
  await settle();
}

describe('SuccessCache', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('shares one lookup between concurrent callers, and keeps its success', async () => {
    const cache = new SuccessCache<string>(2);
    const { lookup, calls } = controlled<string>();
    const a = cache.get('k', lookup);
    const b = cache.get('k', lookup);
    expect(calls).toHaveLength(1);
    calls[0]!.resolve('v');
    expect(await Promise.all([a, b])).toEqual(['v', 'v']);
    await settle();
    expect(await cache.get('k', lookup)).toBe('v');
    expect(calls).toHaveLength(1);
  });

  it('forgets a failed lookup: the next caller looks again', async () => {
    const cache = new SuccessCache<string>(2);
    const { lookup, calls } = controlled<string>();
    const failed = cache.get('k', lookup);
    calls[0]!.reject(new Error('no'));
    await expect(failed).rejects.toThrow('no');
    await settle();
    const again = cache.get('k', lookup);
    expect(calls).toHaveLength(2);
    calls[1]!.resolve('v');
    expect(await again).toBe('v');
  });

  it('keeps at most `size` successes, evicting the oldest', async () => {
    const cache = new SuccessCache<string>(2);
    const lookups = controlled<string>();
    const { lookup, calls } = lookups;
    for (const key of ['a', 'b', 'c']) await keep(cache, lookups, key);
    expect(calls).toHaveLength(3);
    void cache.get('b', lookup);
    void cache.get('c', lookup);
    expect(calls).toHaveLength(3);
    void cache.get('a', lookup);
    expect(calls).toHaveLength(4);
  });

  it('evicts the least recently used: a key in use outlasts newer keys used once', async () => {
    const cache = new SuccessCache<string>(2);
    const lookups = controlled<string>();
    const { lookup, calls } = lookups;
    await keep(cache, lookups, 'a');
    await keep(cache, lookups, 'b');
    // 'a' is used again: 'b' is now the one used least recently.
    expect(await cache.get('a', lookup)).toBe('a');
    await keep(cache, lookups, 'c');
    expect(calls).toHaveLength(3);
    void cache.get('a', lookup);
    void cache.get('c', lookup);
    expect(calls).toHaveLength(3);
    void cache.get('b', lookup);
    expect(calls).toHaveLength(4);
  });

  it('bad keys, in flight or failed, do not push good ones out', async () => {
    const cache = new SuccessCache<string>(3);
    const { lookup, calls } = controlled<string>();
    for (const key of ['a', 'b']) {
      const got = cache.get(key, lookup);
      calls.at(-1)!.resolve(key);
      await got;
      await settle();
    }
    // Bad lookups still running while a third good one succeeds: room for all three good ones.
    const bad = Array.from({ length: 5 }, (_, i) => cache.get(`bad-${i}`, lookup).catch(() => 'failed'));
    const badCalls = calls.slice(2);
    const c = cache.get('c', lookup);
    calls.at(-1)!.resolve('c');
    await c;
    await settle();
    for (const call of badCalls) call.reject(new Error('bad'));
    expect(await Promise.all(bad)).toEqual(Array(5).fill('failed'));
    await settle();
    const before = calls.length;
    for (const key of ['a', 'b', 'c']) void cache.get(key, lookup);
    expect(calls).toHaveLength(before);
  });

  /** A cache with a 60 s TTL that holds `value` under `k`, and its controlled lookups. */
  async function keptFor60s(value: string) {
    const cache = new SuccessCache<string>(2, 60_000);
    const { lookup, calls } = controlled<string>();
    const first = cache.get('k', lookup);
    calls[0]!.resolve(value);
    await first;
    await settle();
    return { cache, lookup, calls };
  }

  it('with a TTL, looks a success up again once it is older than the TTL', async () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    const { cache, lookup, calls } = await keptFor60s('old');
    vi.advanceTimersByTime(59_000);
    expect(await cache.get('k', lookup)).toBe('old');
    vi.advanceTimersByTime(2_000);
    const fresh = cache.get('k', lookup);
    expect(calls).toHaveLength(2);
    calls[1]!.resolve('new');
    expect(await fresh).toBe('new');
  });

  it('a TTL runs on a monotonic clock: the wall clock stepped back does not keep a success longer (found by review)', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'performance'] });
    const { cache, lookup, calls } = await keptFor60s('old');
    // An NTP step back by an hour, then the TTL passes: looked up again all the same.
    vi.setSystemTime(Date.now() - 3_600_000);
    vi.advanceTimersByTime(61_000);
    void cache.get('k', lookup);
    expect(calls).toHaveLength(2);
  });

  it('with a TTL too, concurrent callers share one lookup in flight (found by mutation testing)', async () => {
    const cache = new SuccessCache<string>(10, 60_000);
    const lookups = controlled<string>();
    const first = cache.get('k', lookups.lookup);
    const second = cache.get('k', lookups.lookup);
    expect(lookups.calls).toHaveLength(1);
    lookups.calls[0]!.resolve('v');
    expect(await first).toBe('v');
    expect(await second).toBe('v');
  });

  it('a lookup that expired while in flight does not replace the one begun after it', async () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    const cache = new SuccessCache<string>(2, 1_000);
    const { lookup, calls } = controlled<string>();
    const slow = cache.get('k', lookup);
    vi.advanceTimersByTime(2_000);
    const later = cache.get('k', lookup);
    expect(calls).toHaveLength(2);
    calls[1]!.resolve('later');
    await later;
    await settle();
    calls[0]!.resolve('slow');
    await slow;
    await settle();
    expect(await cache.get('k', lookup)).toBe('later');
    expect(calls).toHaveLength(2);
  });

  // Found by review (a soak of a worker): the cache kept each lookup's promise, and on Node 20 a promise
  // keeps the async context it was made in: every entry held a finished activity, its info and scope.
  it('keeps the value, not the async context its lookup ran in', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const storage = new AsyncLocalStorage<object>();
    const cache = new SuccessCache<string>(10);
    let context!: WeakRef<object>;
    let expired!: WeakRef<object>;
    const ttl = new SuccessCache<string>(10, 1);
    await (async () => {
      const activity = { info: new Uint8Array(1_000_000) };
      context = new WeakRef(activity);
      await storage.run(activity, () => cache.get('k', async () => 'v'));
      const another = { info: new Uint8Array(1_000_000) };
      expired = new WeakRef(another);
      await storage.run(another, () => ttl.get('old', async () => 'v'));
    })();
    await settle();
    expect(await cache.get('k', async () => 'looked up again')).toBe('v');
    // An expired entry goes when the next one is kept, though its key is never asked again.
    await new Promise((resolve) => setTimeout(resolve, 5));
    await ttl.get('new', async () => 'w');
    await settle();
    for (let i = 0; i < 3; i++) {
      gc();
      await settle();
    }
    expect(context.deref()).toBeUndefined();
    expect(expired.deref()).toBeUndefined();
  });
});
