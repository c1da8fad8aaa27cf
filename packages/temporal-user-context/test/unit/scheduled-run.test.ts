// Check 7's dating of a scheduled chain (docs/wire-format.md), on answers a server gives that the
// integration tests cannot produce on demand: a chain whose first run is past retention, a lookup that
// fails for want of an answer. The client is a stand-in that answers like the SDK's.
import { ScheduleNotFoundError, ServiceError, type Client } from '@temporalio/client';
import { defaultPayloadConverter, type Payload, type PayloadCodec } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, LookupRefusedError, UserContextError, isUserContextError } from 'temporal-user-context';
import { argsDigest } from '../../src/crypto/args-digest.js';
import { ScheduledRunCheck } from '../../src/worker/scheduled-run.js';
import { lookupDeadlines } from './lookup-deadline.js';

const HOUR = 3_600_000;
const now = Date.now();
/** The schedule was created a day ago, 2 s after its token was issued (`iat`, seconds). */
const CREATED = now - 24 * HOUR;
const ISSUED = Math.floor((CREATED - 2000) / 1000);
const root = 'report-2026-01-01T00:00:00Z';
const ts = (ms: number) => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 });
const grpcError = (code: number) =>
  Object.assign(new Error(`grpc ${code}`), { code, details: `grpc ${code}`, metadata: {} });

/**
 * A root that continued as new (latest run `r2`, first run `r1`), started by schedule `sch` two hours
 * ago; `first` is what describing `r1` gives: its start, or an error (past retention: NOT_FOUND).
 */
function server(first: { startedAt: number } | { error: Error }, takenAt = now - 2 * HOUR): Client {
  return {
    options: { namespace: 'default' },
    withDeadline: lookupDeadlines().withDeadline,
    workflow: {
      getHandle: (workflowId: string) => ({
        describe: async () => ({
          startTime: new Date(now - HOUR),
          raw: {
            workflowExecutionInfo: {
              firstRunId: 'r1',
              execution: { workflowId, runId: 'r2' },
              startTime: ts(now - HOUR),
            },
          },
        }),
      }),
    },
    workflowService: {
      describeWorkflowExecution: async () => {
        if ('error' in first) throw first.error;
        return { workflowExecutionInfo: { startTime: ts(first.startedAt) } };
      },
    },
    schedule: {
      getHandle: () => ({
        describe: async () => ({
          info: {
            createdAt: new Date(CREATED),
            runningActions: [],
            recentActions: [
              {
                scheduledAt: new Date(takenAt),
                takenAt: new Date(takenAt),
                action: { type: 'startWorkflow', workflow: { workflowId: root, firstExecutionRunId: 'r1' } },
              },
            ],
          },
        }),
      }),
    },
  } as unknown as Client;
}

async function verdict(client: Client, chainStart: number, issuedAt = ISSUED): Promise<string> {
  try {
    await new ScheduledRunCheck(30_000).confirm(client, 'sch', root, chainStart, issuedAt, 'caller-run');
    return 'confirmed';
  } catch (err) {
    return isUserContextError(err) ? err.code : `thrown: ${(err as Error).message}`;
  }
}

describe('check 7 dates the lineage against the chain the schedule started', () => {
  const firstStart = now - 2 * HOUR + 150;

  it('by its first run: the first run itself and later runs of the chain pass, an earlier chain does not', async () => {
    const client = server({ startedAt: firstStart });
    expect(await verdict(client, firstStart)).toBe('confirmed');
    expect(await verdict(client, firstStart + 60_000)).toBe('confirmed'); // a retry run dates itself
    expect(await verdict(client, firstStart - 1)).toBe(ErrorCodes.LINEAGE_MISMATCH);
  });

  it('asks every lookup with a deadline of its own (10 s), not the SDK core default', async () => {
    // Found by review: with none, each of up to ten lookups waited the core's 30 s on a slow cluster.
    const client = server({ startedAt: firstStart });
    const scope = lookupDeadlines();
    const outside: string[] = [];
    const watched = <F extends (...args: never[]) => Promise<unknown>>(name: string, fn: F) =>
      ((...args: Parameters<F>) => {
        if (!scope.inside()) outside.push(name);
        return fn(...args);
      }) as F;
    const service = client.workflowService as unknown as Record<string, (...a: never[]) => Promise<unknown>>;
    service.describeWorkflowExecution = watched('describe run', service.describeWorkflowExecution!);
    const workflowHandle = client.workflow.getHandle.bind(client.workflow);
    (client.workflow as { getHandle: unknown }).getHandle = (id: string) => {
      const handle = workflowHandle(id);
      return { ...handle, describe: watched('describe root', handle.describe.bind(handle)) };
    };
    const scheduleHandle = client.schedule.getHandle.bind(client.schedule);
    (client.schedule as { getHandle: unknown }).getHandle = (id: string) => {
      const handle = scheduleHandle(id);
      return { ...handle, describe: watched('describe schedule', handle.describe.bind(handle)) };
    };
    (client as { withDeadline: unknown }).withDeadline = scope.withDeadline;
    const before = Date.now();
    expect(await verdict(client, firstStart)).toBe('confirmed');
    expect(outside).toEqual([]);
    expect(scope.deadlines.length).toBeGreaterThanOrEqual(2);
    for (const deadline of scope.deadlines) {
      expect(deadline).toBeGreaterThanOrEqual(before + 10_000);
      expect(deadline).toBeLessThanOrEqual(Date.now() + 10_000);
    }
  });

  it("by the schedule's action when the first run is past retention", async () => {
    const client = server({ error: grpcError(5) });
    expect(await verdict(client, firstStart)).toBe('confirmed');
    expect(await verdict(client, now - 2 * HOUR - 900)).toBe('confirmed'); // within the second of slack
    expect(await verdict(client, now - 3 * HOUR)).toBe(ErrorCodes.LINEAGE_MISMATCH);
  });

  it('not at all when the first run is past retention and the schedule lists the chain only as running', async () => {
    // Out of the ten recent actions (a schedule that allows overlaps went on starting runs): no time
    // is left to date the lineage by, and one claiming an earlier chain of the id would pass.
    const client = server({ error: grpcError(5) });
    const listedRunningOnly = client.schedule.getHandle('sch') as unknown as {
      describe: () => Promise<unknown>;
    };
    const described = (await listedRunningOnly.describe()) as {
      info: { recentActions: Array<{ action: unknown }>; runningActions: unknown[] };
    };
    (client.schedule as unknown as { getHandle: () => unknown }).getHandle = () => ({
      describe: async () => ({
        info: {
          ...described.info,
          runningActions: described.info.recentActions.map((r) => r.action),
          recentActions: [],
        },
      }),
    });
    await expect(
      new ScheduledRunCheck(30_000).confirm(client, 'sch', root, now - 3 * HOUR, ISSUED, 'r'),
    ).rejects.toMatchObject({
      code: ErrorCodes.LINEAGE_MISMATCH,
      reason: expect.stringMatching(/cannot be dated/),
    });
  });

  it('only for the schedule created with the token: not for one re-created under its id later', async () => {
    const client = server({ startedAt: firstStart });
    expect(await verdict(client, firstStart, ISSUED)).toBe('confirmed');
    // Issued a day before this schedule existed (for the deleted schedule of the same id).
    expect(await verdict(client, firstStart, ISSUED - 24 * 3600)).toBe(ErrorCodes.LINEAGE_MISMATCH);
    // The server's older scheduler records the creation when its own workflow first runs: minutes late
    // under a backlog is still this schedule; a token issued long after it is not.
    expect(await verdict(client, firstStart, ISSUED - 5 * 60)).toBe('confirmed');
    expect(await verdict(client, firstStart, ISSUED + 120)).toBe(ErrorCodes.LINEAGE_MISMATCH);
  });

  it('a lookup without an answer is rethrown as it is (the activity retries), not a refusal', async () => {
    expect(await verdict(server({ error: grpcError(14) }), firstStart)).toBe('thrown: grpc 14');
  });

  it('a lookup the server refuses the worker is a retryable LookupRefusedError, not a first run past retention', async () => {
    // Taken for "past retention", a refused describe of the first run would date the chain by the
    // schedule's action instead, and confirm it.
    for (const status of [7, 16]) {
      const client = server({ error: grpcError(status) });
      const check = new ScheduledRunCheck(30_000).confirm(client, 'sch', root, firstStart, ISSUED, 'r');
      await expect(check).rejects.toBeInstanceOf(LookupRefusedError);
    }
    // The schedule's own describe, refused (the SDK's schedule client wraps the gRPC error).
    const refused = server({ startedAt: firstStart });
    (refused.schedule as unknown as { getHandle: () => unknown }).getHandle = () => ({
      describe: async () => {
        throw new ServiceError('describe failed', { cause: grpcError(7) });
      },
    });
    expect(await verdict(refused, firstStart)).toMatch(
      /^thrown: the server refused this worker a lookup of the schedule \(PERMISSION_DENIED\)/,
    );
  });
});

/** A run the schedule started, as its records name it (`firstExecutionRunId`: the chain's first run). */
const action = (firstExecutionRunId: string) => ({ workflow: { workflowId: root, firstExecutionRunId } });

/**
 * A stand-in server for the cases below: the root's chain (first run `r1`, of type `Report` on queue
 * `reports`, started `firstAge` ms ago; when `latest` is given, it continued as new into a run `r2` of
 * that type and queue, started 5 s ago), and the runs the schedule lists at each lookup (`running`).
 */
function chainServer(o: {
  firstAge: number;
  latest?: { type: string; queue: string };
  running?: (lookup: number) => unknown[];
}): { client: Client; lookups: () => number; firstStart: number } {
  let lookups = 0;
  // One clock reading for every time it states: the check compares the caller's chain start with the
  // first run's start to the millisecond.
  const at = Date.now();
  const firstStart = at - o.firstAge;
  const latestStart = o.latest ? at - 5000 : firstStart;
  const client = {
    options: { namespace: 'default' },
    withDeadline: lookupDeadlines().withDeadline,
    workflow: {
      getHandle: (workflowId: string) => ({
        describe: async () => ({
          startTime: new Date(latestStart),
          type: o.latest?.type ?? 'Report',
          taskQueue: o.latest?.queue ?? 'reports',
          raw: {
            workflowExecutionInfo: {
              firstRunId: 'r1',
              execution: { workflowId, runId: o.latest ? 'r2' : 'r1' },
              startTime: ts(latestStart),
              type: { name: o.latest?.type ?? 'Report' },
              taskQueue: o.latest?.queue ?? 'reports',
            },
          },
        }),
      }),
    },
    workflowService: {
      describeWorkflowExecution: async () => ({
        workflowExecutionInfo: {
          startTime: ts(firstStart),
          type: { name: 'Report' },
          taskQueue: 'reports',
        },
      }),
    },
    schedule: {
      getHandle: () => ({
        describe: async () => {
          lookups++;
          return {
            info: {
              createdAt: new Date(CREATED),
              runningActions: o.running?.(lookups) ?? [],
              recentActions: [],
            },
          };
        },
      }),
    },
  } as unknown as Client;
  return { client, lookups: () => lookups, firstStart };
}

/**
 * check 7 of a run of `rootId` in `chain` (its lineage dated by the chain's first run), its token
 * binding `bound`: confirmed, a code with its reason, or what was thrown.
 */
async function check7(
  chain: { client: Client; firstStart: number },
  bound = { workflowType: 'Report', taskQueue: 'reports' },
  rootId = root,
): Promise<string> {
  try {
    await new ScheduledRunCheck(30_000).confirm(
      chain.client,
      'sch',
      rootId,
      chain.firstStart,
      ISSUED,
      'r',
      bound,
    );
    return 'confirmed';
  } catch (err) {
    return isUserContextError(err) ? `${err.code}: ${err.reason}` : `thrown: ${(err as Error).message}`;
  }
}

const NOT_ITS_RUN = `${ErrorCodes.LINEAGE_MISMATCH}: the lineage is not a run its schedule started`;
const ANOTHER_CHAIN = `${ErrorCodes.LINEAGE_MISMATCH}: the schedule started another execution chain of this workflow id`;

describe('check 7 on a run its schedule has not recorded', () => {
  it('fails a run of moments ago retryable, not as a refusal (a busy scheduler records it late)', async () => {
    const fresh = chainServer({ firstAge: 1000 });
    expect(await check7(fresh)).toBe('thrown: the schedule has not recorded this run yet; retry');
    expect(fresh.lookups()).toBe(5);
  });

  it('refuses a fresh run where the schedule shows it is not its own, after its lookups', async () => {
    // The schedule started this very id as another chain (the id was taken again after its run closed).
    const other = chainServer({ firstAge: 1000, running: () => [action('r0')] });
    expect(await check7(other)).toBe(ANOTHER_CHAIN);
    expect(other.lookups()).toBe(5);
    // A run named for a time to come: a schedule names its runs by when they were due.
    const future = `report-${new Date(Date.now() + 3600_000).toISOString().slice(0, 19)}Z`;
    expect(await check7(chainServer({ firstAge: 1000 }), undefined, future)).toBe(NOT_ITS_RUN);
  });

  it("retries a fresh run that a worker clock ahead of the server's, within the skew, ages (found by review)", async () => {
    // Started 2 s ago by the server's clock, 31 s ago by a worker clock 29 s ahead (30 s tolerated).
    const ahead = chainServer({ firstAge: 31_000 });
    expect(await check7(ahead)).toBe('thrown: the schedule has not recorded this run yet; retry');
    expect(ahead.lookups()).toBe(5);
  });

  it('refuses the same run once it is older than the schedule could take to record it, on one lookup', async () => {
    const old = chainServer({ firstAge: 61_000 });
    expect(await check7(old)).toBe(NOT_ITS_RUN);
    expect(old.lookups()).toBe(1);
  });

  it('dates freshness by the first run: an unrecorded chain that just continued as new is refused, not retried', async () => {
    const continued = chainServer({ firstAge: 2 * HOUR, latest: { type: 'Report', queue: 'reports' } });
    expect(await check7(continued)).toBe(NOT_ITS_RUN);
    expect(continued.lookups()).toBe(1);
  });

  it('confirms the second of two runs named alike (due in the same second) once the schedule records it', async () => {
    const sameSecond = chainServer({
      firstAge: 500,
      running: (lookup) => (lookup === 1 ? [action('r0')] : [action('r0'), action('r1')]),
    });
    expect(await check7(sameSecond)).toBe('confirmed');
    expect(sameSecond.lookups()).toBe(2);
  });
});

describe("check 7 holds a run to the schedule's workflow type and task queue", () => {
  const recorded = (latest?: { type: string; queue: string }) =>
    chainServer({ firstAge: 2 * HOUR, ...(latest ? { latest } : {}), running: () => [action('r1')] });
  const OTHER_ACTION = `${ErrorCodes.LINEAGE_MISMATCH}: the run's workflow type or task queue is not the one its schedule was created with`;

  it("compares the chain's first run, the one the schedule started: a later run may continue as another", async () => {
    expect(await check7(recorded())).toBe('confirmed');
    expect(await check7(recorded({ type: 'ReportPart2', queue: 'other-queue' }))).toBe('confirmed');
  });

  it('refuses a chain whose first run is of another type or on another queue than the token binds', async () => {
    expect(await check7(recorded(), { workflowType: 'Invoice', taskQueue: 'reports' })).toBe(OTHER_ACTION);
    expect(await check7(recorded(), { workflowType: 'Report', taskQueue: 'elsewhere' })).toBe(OTHER_ACTION);
  });
});

describe("check 7 holds a run to the schedule's arguments: what it cannot read is a refusal, an outage is not", () => {
  const ARGS = ['x'];
  const bound = { workflowType: 'Report', taskQueue: 'reports', argsDigest: argsDigest(ARGS) };
  const UNREADABLE = `${ErrorCodes.LINEAGE_MISMATCH}: the run's arguments cannot be read`;
  /** The recorded chain of `r1`, its history's first event given by `history`, decoded by `codec`. */
  const withHistory = (
    history: () => Promise<unknown>,
    codec: PayloadCodec = { encode: echo, decode: echo },
    running: unknown[] = [action('r1')],
  ) => {
    const chain = chainServer({ firstAge: 2 * HOUR, running: () => running });
    const client = chain.client as unknown as {
      workflowService: Record<string, unknown>;
      options: Record<string, unknown>;
    };
    client.workflowService.getWorkflowExecutionHistory = history;
    client.options.loadedDataConverter = {
      payloadConverter: defaultPayloadConverter,
      payloadCodecs: [codec],
    };
    return chain;
  };
  const echo = async (payloads: Payload[]) => payloads;
  const started = (args: unknown[]) => async () => ({
    history: {
      events: [
        {
          workflowExecutionStartedEventAttributes: {
            input: { payloads: args.map((a) => defaultPayloadConverter.toPayload(a)) },
          },
        },
      ],
    },
  });

  it('confirms the arguments it was created with and refuses others', async () => {
    expect(await check7(withHistory(started(ARGS)), bound)).toBe('confirmed');
    expect(await check7(withHistory(started(['y'])), bound)).toBe(
      `${ErrorCodes.LINEAGE_MISMATCH}: the run's arguments are not the ones its schedule was created with`,
    );
  });

  it('refuses a first run the server no longer has, a history without a start, a payload the codec refuses', async () => {
    const refusing: PayloadCodec = {
      encode: echo,
      decode: async () => {
        throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'tampered');
      },
    };
    expect(
      await check7(
        withHistory(() => Promise.reject(grpcError(5))),
        bound,
      ),
    ).toMatch(/is not on the server$/);
    expect(
      await check7(
        withHistory(async () => ({ history: { events: [] } })),
        bound,
      ),
    ).toMatch(/shows no start of the root's chain$/);
    expect(await check7(withHistory(started(ARGS), refusing), bound)).toMatch(new RegExp(`^${UNREADABLE}`));
  });

  it("names a payload that does not convert by its error's class: its message may quote the payload", async () => {
    const notJson = async () => ({
      history: {
        events: [
          {
            workflowExecutionStartedEventAttributes: {
              input: {
                payloads: [
                  {
                    metadata: { encoding: new TextEncoder().encode('json/plain') },
                    data: new TextEncoder().encode('secret-api-key-123 is not JSON'),
                  },
                ],
              },
            },
          },
        ],
      },
    });
    expect(await check7(withHistory(notJson), bound)).toBe(`${UNREADABLE} (SyntaxError)`);
  });

  it('reads the input only of a run its schedule started, and once per chain, whichever of its runs asks', async () => {
    let reads = 0;
    const counted = () => {
      reads++;
      return started(ARGS)();
    };
    expect(await check7(withHistory(counted, undefined, []), bound)).toBe(NOT_ITS_RUN);
    expect(reads).toBe(0);
    const chain = withHistory(counted);
    const check = new ScheduledRunCheck(30_000);
    for (const runKey of ['r1', 'r1-child', 'r2'])
      await check.confirm(chain.client, 'sch', root, chain.firstStart, ISSUED, runKey, bound);
    expect(reads).toBe(1);
  });

  it('rethrows a lookup or codec outage as it is (the activity retries)', async () => {
    const down: PayloadCodec = {
      encode: echo,
      decode: async () => {
        throw new Error('codec server unreachable');
      },
    };
    expect(
      await check7(
        withHistory(() => Promise.reject(grpcError(14))),
        bound,
      ),
    ).toBe('thrown: grpc 14');
    expect(await check7(withHistory(started(ARGS), down), bound)).toBe('thrown: codec server unreachable');
  });

  it('refuses when the first run is past retention: the arguments cannot be compared', async () => {
    const client = server({ error: grpcError(5) });
    const described = client.workflow.getHandle(root).describe;
    Object.assign(client.workflow, {
      getHandle: () => ({
        describe: async () => Object.assign(await described(), { type: 'Report', taskQueue: 'reports' }),
      }),
    });
    await expect(
      new ScheduledRunCheck(30_000).confirm(
        client,
        'sch',
        root,
        now - 2 * HOUR + 150,
        ISSUED,
        'caller-run',
        bound,
      ),
    ).rejects.toMatchObject({
      code: ErrorCodes.LINEAGE_MISMATCH,
      reason: expect.stringMatching(/past retention/),
    });
  });
});

describe("a run's confirmation is kept for a while, then the schedule is asked again", () => {
  it('refuses the run once its schedule is gone and the confirmation expired', async () => {
    const base = server({ startedAt: now - 2 * HOUR + 150 });
    let deleted = false;
    let asked = 0;
    const client = {
      ...base,
      schedule: {
        getHandle: (id: string) => ({
          describe: async () => {
            asked++;
            if (deleted) throw new ScheduleNotFoundError('schedule not found', id);
            return base.schedule.getHandle(id).describe();
          },
        }),
      },
    } as unknown as Client;
    const check = new ScheduledRunCheck(30_000, 50);
    const confirm = () =>
      check.confirm(client, 'sch', root, now - 2 * HOUR + 150, ISSUED, 'caller-run').then(
        () => 'confirmed',
        (err: unknown) => (isUserContextError(err) ? err.code : 'thrown'),
      );
    expect(await confirm()).toBe('confirmed');
    deleted = true;
    // Within its time the confirmation stands, without asking.
    expect(await confirm()).toBe('confirmed');
    expect(asked).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(await confirm()).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(asked).toBe(2);
  });
});
