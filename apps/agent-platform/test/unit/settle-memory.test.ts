// What the API keeps between settlings of workspaces' open run records: bounded by time and count.
import { describe, expect, it } from 'vitest';
import { SettleMemory } from '../../src/api/settle-memory.js';

describe('SettleMemory', () => {
  it('pauses a workspace after a settling that changed nothing, and forgets it once the pause is over', () => {
    const memory = new SettleMemory(1000);
    memory.settled('ws-1', false, 0);
    expect(memory.pausing('ws-1', 999)).toBe(true);
    expect(memory.pausing('ws-1', 1000)).toBe(false);
    expect(memory.pausing('ws-2', 0)).toBe(false);
    // A settling that changed something ends the pause.
    memory.settled('ws-1', true, 500);
    expect(memory.pausing('ws-1', 600)).toBe(false);
    // Found by review: every workspace that ever paused stayed in the map.
    for (let i = 0; i < 100; i++) memory.settled(`ws-${i}`, false, i);
    memory.settled('ws-late', false, 5000);
    expect(memory.sizes.idle).toBe(1);
    expect(memory.pausing('ws-late', 5500)).toBe(true);
  });

  it("keeps the looks of a workspace's open records only, and of the most recently settled workspaces", () => {
    const memory = new SettleMemory(1000, 2);
    const looks = memory.looks('ws-1', new Set(['r1', 'r2']));
    looks.set('r1', 10).set('r2', 20);
    // A record no longer open is forgotten; what is kept is the same map.
    expect([...memory.looks('ws-1', new Set(['r2']))]).toEqual([['r2', 20]]);
    // No open record: the workspace is forgotten.
    expect(memory.looks('ws-1', new Set()).size).toBe(0);
    expect(memory.sizes.looked).toBe(0);
    // Past the cap, the least recently settled workspace goes.
    memory.looks('ws-a', new Set(['a'])).set('a', 1);
    memory.looks('ws-b', new Set(['b'])).set('b', 1);
    memory.looks('ws-a', new Set(['a']));
    memory.looks('ws-c', new Set(['c'])).set('c', 1);
    expect(memory.sizes.looked).toBe(2);
    expect([...memory.looks('ws-a', new Set(['a']))]).toEqual([['a', 1]]);
    expect([...memory.looks('ws-b', new Set(['b']))]).toEqual([]);
  });
});
