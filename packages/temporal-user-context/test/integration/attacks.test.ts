// Threat-model cases 2–8 against the real dev server, with a client that does not use the plugin.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { Client } from '@temporalio/client';
import http from 'node:http';
import https from 'node:https';
import { CompactEncrypt, CompactSign, SignJWT, UnsecuredJWT } from 'jose';
import { describe, expect, it, vi } from 'vitest';
import {
  ACTOR_HEADER,
  ErrorCodes,
  KeyRing,
  ORIGINATOR_HEADER,
  encodeHeader,
  generateKeySet,
  issueContextToken,
  runAsUser,
  UserContextPlugin,
  USER_ID_ATTRIBUTE,
  WORKSPACE_ID_ATTRIBUTE,
  type UserContext,
} from 'temporal-user-context';
import {
  alice,
  bob,
  carol,
  copiedStartHeaderClient,
  failureTypeOf,
  headerWritingClient,
} from '../../../../test-support/harness.js';
import { fixtureWorker, useFixtureHarness } from '../fixtures/harness.js';

const h = useFixtureHarness();

const enc = new TextEncoder();

/** Starts `viaActivity` under a forged header object and returns the refusal code. */
async function refusalFor(header: unknown, workflowId = `atk-${randomUUID()}`): Promise<string | undefined> {
  const client = headerWritingClient(h, { [ORIGINATOR_HEADER]: encodeHeader(header as never) });
  const code = await failureTypeOf(
    client.workflow.execute('viaActivity', { taskQueue: h.taskQueue, workflowId }),
  );
  if (code) {
    // Every refusal leaves an audit record naming the execution.
    expect(
      h.audit.events.some((e) => e.workflowId === workflowId && e.decision === 'deny' && e.reason === code),
    ).toBe(true);
  }
  return code;
}

/** A genuine header for alice and `workflowId`, from the edge ring. */
async function genuine(workflowId: string, user: UserContext = alice, now?: () => number) {
  return (
    await issueContextToken(h.edgeRing, user, {
      namespace: h.namespace,
      use: 'start',
      workflowId,
      ...(now ? { now } : {}),
    })
  ).header;
}

/** Seals an arbitrary inner JWS with the real sealing key (worst case: the sealing key leaked). */
async function sealWithRealKey(jws: string): Promise<string> {
  const seal = h.edgeRing.activeSealingKey();
  return new CompactEncrypt(enc.encode(jws))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: seal.kid, cty: 'JWT' })
    .encrypt(seal.key);
}

function claimsFor(workflowId: string, over: Record<string, unknown> = {}) {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: 'test-edge',
    aud: h.namespace,
    sub: 'mallory',
    ws: 'ws-acme',
    roles: ['admin'],
    use: 'start',
    wf: workflowId,
    wsh: 'x'.repeat(22),
    subh: 'y'.repeat(22),
    iat: now,
    exp: now + 60,
    jti: randomUUID(),
    ...over,
  };
}

describe('forged, plain and hostile headers are refused (cases 2–5)', () => {
  it('case 2: a token from an attacker key set (same shape, own keys)', async () => {
    const attacker = KeyRing.fromJSON(generateKeySet('test-edge').edge);
    const workflowId = `atk-${randomUUID()}`;
    const { header } = await issueContextToken(
      attacker,
      { ...bob, roles: ['admin'] },
      { namespace: h.namespace, use: 'start', workflowId },
    );
    expect(await refusalFor(header, workflowId)).toBe(ErrorCodes.KEY_UNKNOWN);
  });

  it('case 2: a token signed by an attacker key under the real key id (sealing key leaked)', async () => {
    const workflowId = `atk-${randomUUID()}`;
    const { privateKey } = generateKeyPairSync('ed25519');
    const kid = [...h.edgeRing.signing.keys()][0]!;
    const claims = claimsFor(workflowId);
    const jws = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'EdDSA', kid, typ: 'tuc+jwt' })
      .sign(privateKey);
    const header = { v: 1, tok: await sealWithRealKey(jws), ws: claims.wsh, sub: claims.subh };
    expect(await refusalFor(header, workflowId)).toBe(ErrorCodes.TOKEN_INVALID);
  });

  it('case 2: genuine pseudonyms but a forged claim of another workspace', async () => {
    const workflowId = `atk-${randomUUID()}`;
    const real = await genuine(workflowId);
    const header = { ...real, ws: (await genuine(workflowId, bob)).ws };
    expect(await refusalFor(header, workflowId)).toBe(ErrorCodes.TOKEN_INVALID);
  });

  it('case 3: a plain (unsealed) signed token where a sealed one is required', async () => {
    const workflowId = `atk-${randomUUID()}`;
    const kid = [...h.edgeRing.signing.keys()][0]!;
    const { privateKey } = generateKeyPairSync('ed25519');
    const jws = await new SignJWT(claimsFor(workflowId))
      .setProtectedHeader({ alg: 'EdDSA', kid })
      .sign(privateKey);
    expect(await refusalFor({ v: 1, tok: jws, ws: 'x'.repeat(22), sub: 'y'.repeat(22) }, workflowId)).toBe(
      ErrorCodes.HEADER_MALFORMED,
    );
    expect(await refusalFor({ userId: 'mallory', workspaceId: 'ws-acme', roles: ['admin'] })).toBe(
      ErrorCodes.HEADER_MALFORMED,
    );
  });

  it.each([
    ['path traversal', '../../etc/passwd', ErrorCodes.KEY_UNKNOWN],
    ['url', 'https://attacker.example/jwks', ErrorCodes.KEY_UNKNOWN],
    ['long', 'k'.repeat(300), ErrorCodes.KEY_UNKNOWN],
    // So long that the header passes its size cap: refused before the token is read.
    ['very long', 'k'.repeat(10_000), ErrorCodes.TOO_LARGE],
  ])('case 4: hostile key id (%s) is unknown, never fetched', async (_name, kid, expected) => {
    const workflowId = `atk-${randomUUID()}`;
    const tok = await new CompactEncrypt(enc.encode('x.y.z'))
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid, cty: 'JWT' })
      .encrypt(new Uint8Array(32));
    // The worker runs in this process: any attempt to fetch a key would go through one of these.
    const requests = [
      vi.spyOn(globalThis, 'fetch'),
      vi.spyOn(http, 'request'),
      vi.spyOn(http, 'get'),
      vi.spyOn(https, 'request'),
      vi.spyOn(https, 'get'),
    ];
    try {
      const code = await refusalFor({ v: 1, tok, ws: 'x'.repeat(22), sub: 'y'.repeat(22) }, workflowId);
      expect(code).toBe(expected);
      for (const request of requests) expect(request).not.toHaveBeenCalled();
    } finally {
      for (const request of requests) request.mockRestore();
    }
  });

  it('case 5: alg none inside a real seal', async () => {
    const workflowId = `atk-${randomUUID()}`;
    const claims = claimsFor(workflowId);
    const unsigned = new UnsecuredJWT(claims).encode();
    const header = { v: 1, tok: await sealWithRealKey(unsigned), ws: claims.wsh, sub: claims.subh };
    expect(await refusalFor(header, workflowId)).toBe(ErrorCodes.TOKEN_INVALID);
  });

  it('case 5: algorithm swap (HS256 keyed with the public key)', async () => {
    const workflowId = `atk-${randomUUID()}`;
    const signing = [...h.edgeRing.signing.values()][0]!;
    const publicBytes = signing.publicKey.export({ format: 'der', type: 'spki' });
    const claims = claimsFor(workflowId);
    const jws = await new CompactSign(enc.encode(JSON.stringify(claims)))
      .setProtectedHeader({ alg: 'HS256', kid: signing.kid, typ: 'tuc+jwt' })
      .sign(new Uint8Array(publicBytes));
    const header = { v: 1, tok: await sealWithRealKey(jws), ws: claims.wsh, sub: claims.subh };
    expect(await refusalFor(header, workflowId)).toBe(ErrorCodes.TOKEN_INVALID);
  });

  it('case 5: issued in the future', async () => {
    const workflowId = `atk-${randomUUID()}`;
    const header = await genuine(workflowId, alice, () => Date.now() + 3600_000);
    expect(await refusalFor(header, workflowId)).toBe(ErrorCodes.TOKEN_EXPIRED);
  });

  it('case 5: expired start window', async () => {
    const workflowId = `atk-${randomUUID()}`;
    const header = await genuine(workflowId, alice, () => Date.now() - 3600_000);
    expect(await refusalFor(header, workflowId)).toBe(ErrorCodes.LINEAGE_MISMATCH);
  });
});

describe('replayed headers are refused (cases 6–7)', () => {
  it('case 6: a header copied from workflow A into a new workflow B', async () => {
    const a = `wf-a-${randomUUID()}`;
    const header = await genuine(a);
    expect(await refusalFor(header, a)).toBeUndefined(); // genuine in A
    expect(await refusalFor(header, `wf-b-${randomUUID()}`)).toBe(ErrorCodes.LINEAGE_MISMATCH);
  });

  it("case 6: records about a workflow B carrying A's copied header are not filed in A's workspace", async () => {
    // The workflow's own records (a refused update) go under the workspace of its originator only when
    // that originator verifies as B's: a copied token must not put B's records into A's trail.
    const a = `wf-a-${randomUUID()}`;
    const b = `wf-b-${randomUUID()}`;
    const client = headerWritingClient(h, { [ORIGINATOR_HEADER]: encodeHeader(await genuine(a)) });
    const handle = await client.workflow.start('updates', { taskQueue: h.taskQueue, workflowId: b });
    try {
      await expect(
        runAsUser(bob, () => h.client.workflow.getHandle(b).executeUpdate('guarded', { args: ['x'] })),
      ).rejects.toMatchObject({ cause: { type: ErrorCodes.ACTOR_FORBIDDEN } });
      const refused = () =>
        h.audit.events.filter(
          (e) => e.workflowId === b && e.action === 'workflow.update' && e.decision === 'deny',
        );
      for (let i = 0; i < 250 && refused().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(refused().map((e) => [e.reason, e.workspaceId ?? null])).toEqual([
        [ErrorCodes.ACTOR_FORBIDDEN, null],
      ]);
    } finally {
      await handle.terminate();
    }
  });

  it('case 7: a header replayed into a new run of the same workflow id after A closed', async () => {
    const a = `wf-a-${randomUUID()}`;
    // Issued (and used) an hour ago: A's start window closed long before this new run starts.
    const old = await genuine(a, alice, () => Date.now() - 3600_000);
    expect(await refusalFor(old, a)).toBe(ErrorCodes.LINEAGE_MISMATCH);
  });

  it('a forged lineage in a start header is ignored, also in retry runs the server copies it into', async () => {
    // Copy a genuine header of A (closed long ago) and forge `lin` claiming A's original start time; ask
    // the server to retry the run, so that the next attempt has a "previous run" (continued-from).
    const a = `wf-a-${randomUUID()}`;
    const old = await genuine(a, alice, () => Date.now() - 3600_000);
    const forged = { ...old, lin: { root: a, wf: a, start: Date.now() - 3600_000 } };
    const client = headerWritingClient(h, { [ORIGINATOR_HEADER]: encodeHeader(forged) });
    const run = client.workflow.execute('viaActivity', {
      taskQueue: h.taskQueue,
      workflowId: a,
      retry: { maximumAttempts: 2, initialInterval: '100ms' },
    });
    expect(await failureTypeOf(run)).toBe(ErrorCodes.LINEAGE_MISMATCH);
    const decisions = h.audit.events.filter((e) => e.workflowId === a && e.action === 'activity.execute');
    expect(decisions.length).toBeGreaterThanOrEqual(2); // both attempts reached an activity
    expect(decisions.every((e) => e.decision === 'deny')).toBe(true);
  });

  it('the worker is still healthy after every refusal', async () => {
    const workflowId = `ok-${randomUUID()}`;
    expect(await refusalFor(await genuine(workflowId), workflowId)).toBeUndefined();
  });
});

describe('mirrors and ciphertext moved between workflows (cases 8, 22)', () => {
  it('case 8: search attributes and memo that disagree with the signed context are ignored', async () => {
    const workflowId = `sa-${randomUUID()}`;
    const header = await genuine(workflowId);
    const client = headerWritingClient(h, { [ORIGINATOR_HEADER]: encodeHeader(header) });
    const result = await client.workflow.execute('viaActivity', {
      taskQueue: h.taskQueue,
      workflowId,
      memo: { userContext: { userId: 'root', workspaceId: 'ws-globex' } },
      typedSearchAttributes: [
        { key: USER_ID_ATTRIBUTE, value: 'root' },
        { key: WORKSPACE_ID_ATTRIBUTE, value: 'ws-globex' },
      ],
    });
    expect(result).toEqual(alice);
  });

  it('case 22: an encrypted argument copied from workflow A into workflow B is refused (AAD binds it)', async () => {
    // A: a genuine run whose encrypted input we copy.
    const a = await runAsUser(alice, () =>
      h.client.workflow.start('explicitArgument', {
        taskQueue: h.taskQueue,
        workflowId: `ct-a-${randomUUID()}`,
        args: ['same'],
      }),
    );
    await a.result();
    const started = (await a.fetchHistory()).events?.[0]?.workflowExecutionStartedEventAttributes;
    const copiedInput = started?.input?.payloads;
    expect(copiedInput?.length).toBe(1);
    // B: the attacker starts a new workflow with A's ciphertext and a genuine header of its own.
    const b = `ct-b-${randomUUID()}`;
    const header = await genuine(b);
    await h.connection.workflowService.startWorkflowExecution({
      namespace: h.namespace,
      workflowId: b,
      requestId: randomUUID(),
      workflowType: { name: 'explicitArgument' },
      taskQueue: { name: h.taskQueue },
      input: { payloads: copiedInput },
      header: { fields: { [ORIGINATOR_HEADER]: encodeHeader(header) } },
    });
    const handle = h.rawClient.workflow.getHandle(b);
    let refused = false;
    for (let i = 0; i < 100 && !refused; i++) {
      refused = h.audit.events.some(
        (e) => e.action === 'codec.decode' && e.workflowId === b && e.reason === ErrorCodes.PAYLOAD_TAMPERED,
      );
      if (!refused) await new Promise((r) => setTimeout(r, 100));
    }
    expect(refused).toBe(true);
    // The run never executed workflow code with the moved argument; history names the refusal (the
    // worker reports the failed task after auditing the refusal: wait for it to be recorded).
    let events = (await handle.fetchHistory()).events ?? [];
    for (let i = 0; i < 100 && !events.some((e) => e.workflowTaskFailedEventAttributes); i++) {
      await new Promise((r) => setTimeout(r, 100));
      events = (await handle.fetchHistory()).events ?? [];
    }
    expect(events.some((e) => e.activityTaskScheduledEventAttributes)).toBe(false);
    expect(
      JSON.stringify(events.map((e) => e.workflowTaskFailedEventAttributes?.failure?.message)),
    ).toContain(ErrorCodes.PAYLOAD_TAMPERED);
    await handle.terminate('test: moved ciphertext refused');
  });
});

describe('a start token copied from history starts only what it was issued for (check 10)', () => {
  // Whoever can read a run's history and start workflows holds its start token, and within the token's
  // start window can start its workflow id again (TERMINATE_EXISTING even ends the genuine run). The
  // token binds the workflow type, task queue and arguments of the start: the root's workflow code
  // states them in its lineage facts, or the server's records give them (`activityLineage: 'server'`).
  const again = { workflowIdConflictPolicy: 'TERMINATE_EXISTING' } as const;

  /** Alice starts `workflowType` with `args` on `taskQueue` through the plugin; returns its id once done. */
  async function aliceRan(workflowType: string, taskQueue: string, args: unknown[]): Promise<string> {
    const workflowId = `genuine-${randomUUID()}`;
    const result = await runAsUser(alice, () =>
      h.client.workflow.execute(workflowType, { taskQueue, workflowId, args }),
    );
    expect(result).toEqual(alice);
    return workflowId;
  }

  /** A worker of the fixtures with this plugin, on a queue of its own. */
  async function otherWorker(activityLineage: 'header' | 'server' = 'header') {
    const taskQueue = `other-${randomUUID()}`;
    const worker = await fixtureWorker(
      h,
      taskQueue,
      new UserContextPlugin({ keys: h.workerRing, audit: h.audit, activityLineage }),
    );
    return { taskQueue, worker, running: worker.run() };
  }

  /** The refusal a copy of `genuine`'s start header gets when it starts `genuine` again so. */
  async function restartedCopy(
    genuine: string,
    workflowType: string,
    options: { taskQueue: string; args?: unknown[]; startDelay?: string },
  ): Promise<string | undefined> {
    const attacker = await copiedStartHeaderClient(h, genuine);
    return failureTypeOf(
      attacker.workflow.execute(workflowType, { workflowId: genuine, ...again, ...options }),
    );
  }

  /** Whether an activity of `workflowId` (any, when undefined) was refused saying `why`. */
  const refusedFor = (workflowId: string | undefined, why: string) =>
    h.audit.events.some(
      (e) =>
        (workflowId === undefined || e.workflowId === workflowId) &&
        e.decision === 'deny' &&
        e.reason === ErrorCodes.LINEAGE_MISMATCH &&
        e.detail?.includes(why),
    );

  it('another workflow type is refused', async () => {
    const genuine = await aliceRan('viaActivity', h.taskQueue, []);
    expect(await restartedCopy(genuine, 'viaLocalActivity', { taskQueue: h.taskQueue })).toBe(
      ErrorCodes.LINEAGE_MISMATCH,
    );
    expect(refusedFor(genuine, 'another workflow type or on another task queue')).toBe(true);
  });

  it('another task queue is refused', async () => {
    const other = await otherWorker();
    try {
      const genuine = await aliceRan('viaActivity', h.taskQueue, []);
      expect(await restartedCopy(genuine, 'viaActivity', { taskQueue: other.taskQueue })).toBe(
        ErrorCodes.LINEAGE_MISMATCH,
      );
      expect(refusedFor(genuine, 'another workflow type or on another task queue')).toBe(true);
    } finally {
      other.worker.shutdown();
      await other.running;
    }
  });

  it('other arguments are refused where workers read the start from the server, also after continue-as-new and in children', async () => {
    // Activities on a worker with the server's lineage: the genuine runs pass (their first run's type,
    // queue and input digest match the token), a copy started with other arguments does not. The
    // workflows themselves run on the harness's worker; `whoamiOn*` take `false` as a second argument
    // (whoamiOnAfterContinueAsNew: do continue as new), which still changes what started.
    const server = await otherWorker('server');
    try {
      for (const workflowType of ['whoamiOn', 'whoamiOnFromChild', 'whoamiOnAfterContinueAsNew']) {
        const genuine = await aliceRan(workflowType, h.taskQueue, [server.taskQueue]);
        const code = await restartedCopy(genuine, workflowType, {
          taskQueue: h.taskQueue,
          args: [server.taskQueue, false],
        });
        expect(code, workflowType).toBe(ErrorCodes.LINEAGE_MISMATCH);
      }
      expect(refusedFor(undefined, 'other arguments')).toBe(true);
    } finally {
      server.worker.shutdown();
      await server.running;
    }
  });

  // What stays (docs/wire-format.md, _Limits_): the same start again within the window, and, with the
  // header's lineage, other arguments too (no header states them).
  it.each([
    ['the same arguments', [1]],
    ['other arguments (header lineage)', [0]],
  ])('what stays: the same start again within the window, with %s, runs as the user', async (_what, args) => {
    const genuine = await aliceRan('viaContinueAsNew', h.taskQueue, [1]);
    const attacker = await copiedStartHeaderClient(h, genuine);
    expect(
      await attacker.workflow.execute('viaContinueAsNew', {
        taskQueue: h.taskQueue,
        workflowId: genuine,
        args,
        ...again,
      }),
    ).toEqual(alice);
  });

  /**
   * Waits for an activity of `workflowId` to be allowed or refused, among the records from `since` on;
   * returns those decisions.
   */
  async function activityDecisions(workflowId: string, since: number): Promise<string[]> {
    return vi.waitFor(
      () => {
        const seen = h.audit.events
          .slice(since)
          .filter((e) => e.workflowId === workflowId && e.action === 'activity.execute')
          .map((e) => (e.decision === 'allow' ? 'allow' : (e.detail ?? e.reason)));
        expect(seen.length).toBeGreaterThan(0);
        return seen;
      },
      { timeout: 15_000, interval: 50 },
    );
  }

  it('a cron schedule the start did not have is refused; one it had runs', async () => {
    // A copy that adds a cron schedule would run the user's workflow again and again, as the user.
    const cron = { cronSchedule: '@every 1s' } as const;
    const genuine = await aliceRan('viaActivity', h.taskQueue, []);
    const attacker = await copiedStartHeaderClient(h, genuine);
    const since = h.audit.events.length;
    const copy = await attacker.workflow.start('viaActivity', {
      taskQueue: h.taskQueue,
      workflowId: genuine,
      ...cron,
      ...again,
    });
    try {
      // (Every run of the copy, however many the cron started by now.)
      for (const decision of await activityDecisions(genuine, since))
        expect(decision).toContain('another cron schedule');
    } finally {
      await copy.terminate();
    }
    const ownSince = h.audit.events.length;
    const own = await runAsUser(alice, () =>
      h.client.workflow.start('viaActivity', {
        taskQueue: h.taskQueue,
        workflowId: `cron-${randomUUID()}`,
        ...cron,
      }),
    );
    try {
      for (const decision of await activityDecisions(own.workflowId, ownSince))
        expect(decision).toBe('allow');
    } finally {
      await own.terminate();
    }
  });

  it("a start delay the start did not have is refused with the server's lineage; one it had runs", async () => {
    // A delayed copy would run as the user long after the window; workflow code does not know the
    // delay, so only the server's record of the start shows it.
    const server = await otherWorker('server');
    try {
      const genuine = await aliceRan('whoamiOn', h.taskQueue, [server.taskQueue]);
      expect(
        await restartedCopy(genuine, 'whoamiOn', {
          taskQueue: h.taskQueue,
          args: [server.taskQueue],
          startDelay: '1s',
        }),
      ).toBe(ErrorCodes.LINEAGE_MISMATCH);
      expect(refusedFor(genuine, 'another start delay')).toBe(true);
      const delayed = await runAsUser(alice, () =>
        h.client.workflow.execute('whoamiOn', {
          taskQueue: h.taskQueue,
          workflowId: `delayed-${randomUUID()}`,
          args: [server.taskQueue],
          startDelay: '1s',
        }),
      );
      expect(delayed).toEqual(alice);
    } finally {
      server.worker.shutdown();
      await server.running;
    }
  });

  it.each(['header', 'server'] as const)(
    "a retry policy the start did not have is refused; one it had runs (the %s's lineage)",
    async (activityLineage) => {
      // A retry's start event is written when its previous attempt fails, inside the window, and its
      // first task waits for the backoff: a copy given a retry policy (and a run that fails) would run
      // as the user long after the window. failsFirstAttempt fails its first attempt; its retry asks.
      const other = await otherWorker(activityLineage);
      try {
        const retry = { initialInterval: '100ms', maximumAttempts: 2 };
        const own = await runAsUser(alice, () =>
          h.client.workflow.execute('failsFirstAttempt', {
            taskQueue: other.taskQueue,
            workflowId: `retried-${randomUUID()}`,
            retry,
          }),
        );
        expect(own).toEqual(alice);
        const plain = await aliceRan('viaActivity', other.taskQueue, []);
        const attacker = await copiedStartHeaderClient(h, plain);
        expect(
          await failureTypeOf(
            attacker.workflow.execute('viaActivity', {
              taskQueue: other.taskQueue,
              workflowId: plain,
              retry,
              ...again,
            }),
          ),
        ).toBe(ErrorCodes.LINEAGE_MISMATCH);
        expect(refusedFor(plain, 'a retry policy its token does not bind')).toBe(true);
      } finally {
        other.worker.shutdown();
        await other.running;
      }
    },
  );

  it('a header that drops the binding flag is refused, not run unbound', async () => {
    const genuine = await aliceRan('viaActivity', h.taskQueue, []);
    const history = await h.rawClient.workflow.getHandle(genuine).fetchHistory();
    const payload =
      history.events?.[0]?.workflowExecutionStartedEventAttributes?.header?.fields?.[ORIGINATOR_HEADER];
    const header = JSON.parse(new TextDecoder().decode(payload!.data!)) as Record<string, unknown>;
    expect(header.b).toBe(1);
    delete header.b;
    const client = headerWritingClient(h, { [ORIGINATOR_HEADER]: encodeHeader(header as never) });
    expect(
      await failureTypeOf(
        client.workflow.execute('viaActivity', { taskQueue: h.taskQueue, workflowId: genuine, ...again }),
      ),
    ).toBe(ErrorCodes.LINEAGE_MISMATCH);
  });
});

describe('an actor token copied from history acts only in the handler of its call (check 11)', () => {
  it('another signal, or an update of the same name, with the copied actor header gets no verified actor; the same signal again does', async () => {
    const workflowId = `two-signals-${randomUUID()}`;
    const handle = await runAsUser(alice, () =>
      h.client.workflow.start('twoSignals', { taskQueue: h.taskQueue, workflowId }),
    );
    await runAsUser(carol, () => handle.signal('first', 'x'));
    const copied = await vi.waitFor(
      async () => {
        const signaled = (await handle.fetchHistory()).events?.find(
          (e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'first',
        )?.workflowExecutionSignaledEventAttributes;
        const header = signaled?.header?.fields?.[ACTOR_HEADER];
        expect(header).toBeDefined();
        return header!;
      },
      { timeout: 10_000 },
    );
    const attacker = headerWritingClient(h, { [ACTOR_HEADER]: copied });
    await attacker.workflow.getHandle(workflowId).signal('second', 'y');
    await attacker.workflow.getHandle(workflowId).signal('first', 'z');
    // An update named like the signal: the token binds the call's kind too. (The raw client's update
    // carries no header of its own: the copied one is added by hand.)
    const updater = new Client({
      connection: h.connection,
      namespace: h.namespace,
      dataConverter: h.rawClient.options.dataConverter,
      interceptors: {
        workflow: [
          {
            startUpdate: (input, next) =>
              next({ ...input, headers: { ...input.headers, [ACTOR_HEADER]: copied } }),
          },
        ],
      },
    });
    expect(await updater.workflow.getHandle(workflowId).executeUpdate('first', { args: ['u'] })).toBe(
      ErrorCodes.LINEAGE_MISMATCH,
    );
    await runAsUser(alice, () => handle.signal('done'));
    expect(await handle.result()).toEqual({
      'first:x': carol.userId,
      'second:y': ErrorCodes.LINEAGE_MISMATCH,
      'update first:u': ErrorCodes.LINEAGE_MISMATCH,
      // What stays: the same call with other arguments (not bound: docs/wire-format.md, check 11).
      'first:z': carol.userId,
    });
  });
});
