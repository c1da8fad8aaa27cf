// Plugin and verifier options that would quietly turn a check off are refused when the plugin is built,
// with USER_CONTEXT_MISCONFIGURED, instead of being read as some default.
import { createRequire } from 'node:module';
import { ApplicationFailure, defaultPayloadConverter, type FailureConverter } from '@temporalio/common';
import { Client, Connection } from '@temporalio/client';
import { SimplePlugin } from '@temporalio/plugin';
import { describe, expect, it } from 'vitest';
import {
  Auditor,
  ContextVerifier,
  ErrorCodes,
  generateKeySet,
  issueContextToken,
  KeyRing,
  memoryAuditSink,
  openContextToken,
  runAsUser,
  UserContextError,
  UserContextPlugin,
  type UserContextPluginOptions,
} from 'temporal-user-context';
import { failureConverterPath } from '../../src/plugin.js';
import { ContextSource } from '../../src/client/source.js';
import { edgeSource } from './edge-source.js';
import { mirrorOptionsOf } from '../../src/client/mirror.js';
import { createArgsDigest } from '../../src/crypto/args-digest.js';
import { ORIGINATOR_HEADER, decodeHeader, encodeHeader } from '../../src/header/wire.js';

// The module the SDK require()s: loaded the same way here.
const { failureConverter } = createRequire(import.meta.url)(failureConverterPath) as {
  failureConverter: FailureConverter;
};

const keys = generateKeySet('options');
const edge = KeyRing.fromJSON(keys.edge);
const worker = KeyRing.fromJSON(keys.worker);
const alice = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };
const START = { workflowType: 'wf', taskQueue: 'tq', args: [] };

/** An edge's context source without mirrors, auditing into memory. */
const sourceWith = (bindStartArguments?: boolean) => edgeSource(edge, { bindStartArguments });

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(UserContextError);
    return (err as UserContextError).code;
  }
}

const plugin = (options: Partial<UserContextPluginOptions>) =>
  new UserContextPlugin({ keys: edge, audit: memoryAuditSink(), ...options });

describe('verifier options', () => {
  it.each([
    ['NaN skew', { clockSkewSeconds: NaN }],
    ['infinite skew', { clockSkewSeconds: Infinity }],
    ['negative skew', { clockSkewSeconds: -1 }],
    ['a skew of more than an hour', { clockSkewSeconds: 3601 }],
    ['a skew that is not a number', { clockSkewSeconds: '30' as unknown as number }],
    ['NaN cache size', { cacheSize: NaN }],
    ['infinite cache size', { cacheSize: Infinity }],
    ['negative cache size', { cacheSize: -5 }],
    ['zero cache size', { cacheSize: 0 }],
    ['fractional cache size', { cacheSize: 0.5 }],
    ['fractional cache size above 1', { cacheSize: 2.5 }],
  ])('refuses %s, directly and through the plugin', (_name, options) => {
    expect(codeOf(() => new ContextVerifier(worker, options))).toBe(ErrorCodes.MISCONFIGURED);
    expect(codeOf(() => plugin({ verifier: options }))).toBe(ErrorCodes.MISCONFIGURED);
  });

  it('accepts the bounds themselves and no options at all', () => {
    for (const options of [{}, { clockSkewSeconds: 0, cacheSize: 1 }, { clockSkewSeconds: 3600 }]) {
      expect(() => new ContextVerifier(worker, options)).not.toThrow();
      expect(() => plugin({ verifier: options })).not.toThrow();
    }
  });
});

describe('startWindowSeconds', () => {
  it.each([0, -1, NaN, Infinity, -Infinity, 1.5, 86_401, 1e12])('refuses %s', (startWindowSeconds) => {
    expect(codeOf(() => plugin({ startWindowSeconds }))).toBe(ErrorCodes.MISCONFIGURED);
  });

  it.each([1, 60, 86_400])('issues start tokens with a window of %s s', async (startWindowSeconds) => {
    const source = new ContextSource({
      ring: edge,
      namespace: 'default',
      auditor: new Auditor([]),
      mirror: { memo: 'off', searchAttributes: 'off' },
      startWindowSeconds,
    });
    const { originator } = await runAsUser(alice, () => source.forStart('wf-window', 'client.start', START));
    const claims = await openContextToken(worker, originator.tok);
    expect(claims.exp - claims.iat).toBe(startWindowSeconds);
  });
});

describe('actorWindowSeconds', () => {
  it.each([0, -1, NaN, Infinity, 1.5, 86_401, '300' as unknown as number])(
    'refuses %s',
    (actorWindowSeconds) => {
      expect(codeOf(() => plugin({ actorWindowSeconds }))).toBe(ErrorCodes.MISCONFIGURED);
    },
  );

  const sourceWith = (actorWindowSeconds?: number) =>
    new ContextSource({
      ring: edge,
      namespace: 'default',
      auditor: new Auditor([]),
      mirror: { memo: 'off', searchAttributes: 'off' },
      actorWindowSeconds,
    });

  it.each([
    [undefined, 300],
    [1, 1],
    [3600, 3600],
    [86_400, 86_400],
  ])('issues actor tokens with a window of %s s (%s s)', async (actorWindowSeconds, expected) => {
    const tok = await runAsUser(alice, () =>
      sourceWith(actorWindowSeconds).forActor({ workflowId: 'wf-window', action: 'client.signal' }),
    );
    const claims = await openContextToken(worker, tok.tok);
    expect(claims.use).toBe('actor');
    expect(claims.exp - claims.iat).toBe(expected);
  });

  it('leaves start tokens to their own window', async () => {
    const { originator } = await runAsUser(alice, () =>
      sourceWith(3600).forStart('wf-window', 'client.start', START),
    );
    const claims = await openContextToken(worker, originator.tok);
    expect(claims.exp - claims.iat).toBe(60);
  });
});

describe('nexusCallers', () => {
  it.each([
    ['trust-links'],
    [''],
    ['CONFIRM'],
    [1],
    [null],
    [{}],
    [{ trustLinksFrom: 'other' }],
    [{ trustLinksFrom: [''] }],
    [{ trustLinksFrom: [1] }],
    [{ trustLinksFrom: ['other'], trustEverything: true }],
    [{ trustLinksFrom: ['other', 'other'] }],
  ])('refuses %j', (nexusCallers) => {
    expect(codeOf(() => plugin({ nexusCallers: nexusCallers as never }))).toBe(ErrorCodes.MISCONFIGURED);
  });

  it('takes confirm, an allow-list of namespaces, and undefined (confirm)', () => {
    for (const nexusCallers of [
      'confirm',
      { trustLinksFrom: ['other', 'third'] },
      { trustLinksFrom: [] },
      undefined,
    ])
      expect(() => plugin({ nexusCallers: nexusCallers as never })).not.toThrow();
  });
});

describe('activityLineage', () => {
  it.each(['Server', 'servers', '', null, 1, {}])('refuses %j', (activityLineage) => {
    expect(codeOf(() => plugin({ activityLineage: activityLineage as never }))).toBe(
      ErrorCodes.MISCONFIGURED,
    );
  });

  it('takes header, server and undefined (header)', () => {
    for (const activityLineage of ['header', 'server', undefined] as const)
      expect(() => plugin({ activityLineage })).not.toThrow();
  });
});

describe('mirror', () => {
  it.each([
    ['a string', 'plain'],
    ['null', null],
    ['an array', ['plain']],
    ['a number', 1],
    ['an object with a misspelt field', { memo: 'plain', serchAttributes: 'plain' }],
  ])('refuses %s instead of reading it as the defaults', (_name, mirror) => {
    expect(codeOf(() => plugin({ mirror: mirror as never }))).toBe(ErrorCodes.MISCONFIGURED);
  });

  it('still takes a partial object, and undefined, as the defaults for what is left out', () => {
    expect(() => plugin({ mirror: { memo: 'plain' } })).not.toThrow();
    expect(() => plugin({ mirror: { memo: undefined } })).not.toThrow();
    expect(() => plugin({ mirror: undefined })).not.toThrow();
    // What the plugin then mirrors: the defaults field by field.
    expect(mirrorOptionsOf({ memo: 'plain' })).toEqual({ memo: 'plain', searchAttributes: 'off' });
    expect(mirrorOptionsOf({ memo: undefined })).toEqual({ memo: 'pseudonym', searchAttributes: 'off' });
    expect(mirrorOptionsOf(undefined)).toEqual({ memo: 'pseudonym', searchAttributes: 'off' });
  });
});

describe('failureMessages', () => {
  const converterPath = (plugin: UserContextPlugin) =>
    plugin.configureClient({ namespace: 'default' }).dataConverter?.failureConverterPath;

  it("is 'encrypted' with the codec (clients, workers and bundles get the converter), 'clear' without", () => {
    const encrypting = new UserContextPlugin({ keys: edge });
    expect(converterPath(encrypting)).toBe(failureConverterPath);
    expect(
      encrypting.configureWorker({ taskQueue: 'q', namespace: 'default' }).dataConverter
        ?.failureConverterPath,
    ).toBe(failureConverterPath);
    expect(encrypting.configureBundler({ workflowsPath: 'w' }).failureConverterPath).toBe(
      failureConverterPath,
    );
    expect(converterPath(new UserContextPlugin({ keys: edge, codec: false }))).toBeUndefined();
    const clear = new UserContextPlugin({ keys: edge, failureMessages: 'clear' });
    expect(converterPath(clear)).toBeUndefined();
    expect(clear.configureBundler({ workflowsPath: 'w' }).failureConverterPath).toBeUndefined();
  });

  it("leaves an application's own failure converter in place", () => {
    const plugin = new UserContextPlugin({ keys: edge });
    const client = plugin.configureClient({ dataConverter: { failureConverterPath: '/app/failures.js' } });
    expect(client.dataConverter?.failureConverterPath).toBe('/app/failures.js');
    expect(
      plugin.configureBundler({ workflowsPath: 'w', failureConverterPath: '/app/failures.js' })
        .failureConverterPath,
    ).toBe('/app/failures.js');
  });

  it("refuses 'encrypted' with the codec off, and anything else than the two values", () => {
    expect(
      codeOf(() => new UserContextPlugin({ keys: edge, codec: false, failureMessages: 'encrypted' })),
    ).toBe(ErrorCodes.MISCONFIGURED);
    for (const failureMessages of ['plain', null, true])
      expect(
        codeOf(() => new UserContextPlugin({ keys: edge, failureMessages: failureMessages as never })),
        String(failureMessages),
      ).toBe(ErrorCodes.MISCONFIGURED);
  });

  it('the converter encodes what applications fail with, and leaves refusals of this library as they are', () => {
    const payloadConverter = defaultPayloadConverter;
    const app = failureConverter.errorToFailure(
      ApplicationFailure.nonRetryable('quotes user data', 'AppError'),
      payloadConverter,
    );
    expect(app.message).toBe('Encoded failure');
    expect(app.encodedAttributes).toBeDefined();
    const refusal = failureConverter.errorToFailure(
      ApplicationFailure.nonRetryable(
        `${ErrorCodes.ACTOR_FORBIDDEN}: query refused`,
        ErrorCodes.ACTOR_FORBIDDEN,
      ),
      payloadConverter,
    );
    expect(refusal.message).toBe(`${ErrorCodes.ACTOR_FORBIDDEN}: query refused`);
    const thrown = failureConverter.errorToFailure(
      new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'bound to another workflow'),
      payloadConverter,
    );
    expect(thrown.message).toBe(`${ErrorCodes.PAYLOAD_TAMPERED}: bound to another workflow`);
    // A UserContextError thrown in a query or update handler, as the SDK wraps it.
    const wrapped = ApplicationFailure.create({
      message: `${ErrorCodes.ROLE_MISSING}: role admin required`,
      type: 'UserContextError',
    });
    expect(failureConverter.errorToFailure(wrapped, payloadConverter).message).toBe(
      `${ErrorCodes.ROLE_MISSING}: role admin required`,
    );
    const pretending = ApplicationFailure.create({ message: 'quotes user data', type: 'UserContextError' });
    expect(failureConverter.errorToFailure(pretending, payloadConverter).message).toBe('Encoded failure');
    // An application's error that only calls itself so is encoded.
    const named = Object.assign(new Error('quotes user data'), {
      name: 'UserContextError',
      code: 'NOT_OURS',
    });
    expect(failureConverter.errorToFailure(named, payloadConverter).message).toBe('Encoded failure');
    // What it encoded, it decodes.
    expect(failureConverter.failureToError(app, payloadConverter).message).toBe('quotes user data');
  });
});

describe('the options object itself', () => {
  const sink = memoryAuditSink();
  it.each([
    ['an unknown option (a typo that would mean a default)', { activitylineage: 'server' }],
    ['another unknown option', { failureMessage: 'clear' }],
    ['keys that are no KeyRing', { keys: {} }],
    ['an empty namespace', { namespace: '' }],
    ['a namespace that is not a string', { namespace: 123 }],
    ['no audit sink at all', { audit: [] }],
    ['an audit sink without emit', { audit: {} }],
    ['a null audit sink', { audit: null }],
    ['a list holding a non-sink', { audit: [sink, 1] }],
    ['the same sink twice', { audit: [sink, sink] }],
    ['isRevoked false (revocation silently off)', { isRevoked: false }],
    ['isRevoked that is not a function', { isRevoked: 'yes' }],
    ['a verifier clock (a test hook: NaN turns every window check off)', { verifier: { now: () => NaN } }],
    ['an unknown verifier option', { verifier: { clockskewseconds: 9999 } }],
    ['a verifier that is not an object', { verifier: 'x' }],
    ['codec 0 (read as off)', { codec: 0 }],
    ['codec null', { codec: null }],
    ['codec a string', { codec: 'yes' }],
    ['codec flags as strings', { codec: { acceptNamespaceBound: 'false' } }],
    ['acceptScheduledRuns as a string', { codec: { acceptScheduledRuns: 'no' } }],
    ["an unknown codec option (another ring's keys)", { codec: { keys: { keys: [] } } }],
    ['allowPlaintextEncodings as a string', { codec: { allowPlaintextEncodings: 'json/plain' } }],
    ['checkWorkflowBundle as a string', { checkWorkflowBundle: 'false' }],
    ['bindScheduleArguments as a string', { bindScheduleArguments: 'false' }],
    ['bindScheduleArguments as a number', { bindScheduleArguments: 0 }],
    ['bindStartArguments as a string', { bindStartArguments: 'false' }],
    ['bindStartArguments as null', { bindStartArguments: null }],
    ['verifier.requireBoundTokens as a string', { verifier: { requireBoundTokens: 'true' } }],
    ['systemActivities that is not an object', { systemActivities: 'x' }],
    ['systemActivities as pairs', { systemActivities: [['a']] }],
    ['a principal that is not a name', { systemActivities: { sweep: [1] } }],
    ['a principal listed twice', { systemActivities: { sweep: ['janitor', 'janitor'] } }],
  ])('refuses %s', (_name, options) => {
    expect(codeOf(() => plugin(options as never))).toBe(ErrorCodes.MISCONFIGURED);
  });

  it('takes every documented form', () => {
    for (const options of [
      { audit: sink },
      { audit: [sink, memoryAuditSink()] },
      { namespace: 'ns-a' },
      { isRevoked: () => false },
      { verifier: { clockSkewSeconds: 5, cacheSize: 10 } },
      { codec: false },
      { codec: true },
      {
        codec: {
          acceptNamespaceBound: true,
          acceptScheduledRuns: false,
          allowPlaintextEncodings: ['json/plain'],
        },
      },
      { checkWorkflowBundle: false },
      { bindScheduleArguments: false },
      { bindScheduleArguments: true },
      { bindStartArguments: false },
      { verifier: { requireBoundTokens: true } },
      { systemActivities: { sweep: ['janitor', 'reporter'] } },
    ])
      expect(() => plugin(options as never)).not.toThrow();
  });
});

describe('start tokens bind how the workflow starts (bindStartArguments)', () => {
  const start = {
    workflowType: 'AgentExecutionWorkflow',
    taskQueue: 'agent-tasks',
    args: [{ agentId: 'a' }],
  };

  it('binds type, queue and arguments by default; type and queue only with false', async () => {
    for (const [option, ad] of [
      [undefined, createArgsDigest(start.args)],
      [true, createArgsDigest(start.args)],
      [false, undefined],
    ] as const) {
      const { originator } = await runAsUser(alice, () =>
        sourceWith(option).source.forStart('wf-bound', 'client.start', start),
      );
      const claims = await openContextToken(worker, originator.tok);
      expect([claims.wt, claims.tq, claims.ad], String(option)).toEqual([
        start.workflowType,
        start.taskQueue,
        ad,
      ]);
      expect(originator.b).toBe(1);
    }
  });

  it('refuses, on record, arguments the default payload converter cannot carry', async () => {
    const { source, audit } = sourceWith();
    await expect(
      runAsUser(alice, () => source.forStart('wf-bigint', 'client.start', { ...start, args: [10n] })),
    ).rejects.toMatchObject({
      code: ErrorCodes.MISCONFIGURED,
      message: expect.stringContaining('bindStartArguments'),
    });
    expect(audit.events.map((e) => [e.decision, e.reason, e.userId])).toEqual([
      ['deny', ErrorCodes.MISCONFIGURED, 'alice'],
    ]);
    // Unbound arguments are not digested: the start goes ahead.
    await expect(
      runAsUser(alice, () =>
        sourceWith(false).source.forStart('wf-bigint', 'client.start', { ...start, args: [10n] }),
      ),
    ).resolves.toMatchObject({ context: alice });
  });

  it('refuses a start whose header, with the lineage facts its workflow adds, would pass the size workers accept', async () => {
    const { source, audit } = sourceWith();
    const long = { ...start, workflowType: 'T'.repeat(1000), taskQueue: 'Q'.repeat(1000) };
    await expect(
      runAsUser(alice, () => source.forStart('W'.repeat(1000), 'client.start', long)),
    ).rejects.toMatchObject({ code: ErrorCodes.TOO_LARGE });
    expect(audit.events.at(-1)).toMatchObject({ decision: 'deny', reason: ErrorCodes.TOO_LARGE });
    await expect(
      runAsUser(alice, () => source.forStart('W'.repeat(200), 'client.start', long)),
    ).resolves.toBeDefined();
  });

  it('counts the retry policy its workflow states: every start it issues makes headers workers accept', async () => {
    // Found by review: the edge's stand-in lineage lacked `rp`, and a start just under the cap was
    // issued, then every activity of its run refused TOO_LARGE.
    const { source } = sourceWith();
    const workflowId = 'W'.repeat(1000);
    let issued = 0;
    let refused = 0;
    for (let length = 560; length <= 680; length++) {
      const workflowType = 'T'.repeat(length);
      const bound = { ...start, workflowType, taskQueue: 'Q'.repeat(600), retried: true };
      const made: Awaited<ReturnType<typeof source.forStart>> | string | undefined = await runAsUser(
        alice,
        () => source.forStart(workflowId, 'client.start', bound),
      ).catch((err: { code?: string }) => err.code);
      if (typeof made !== 'object') {
        expect(made).toBe(ErrorCodes.TOO_LARGE);
        refused++;
        continue;
      }
      issued++;
      // What the run's workflow code writes on its activities' headers (lineageOf: `b`, a retry policy).
      const lin = {
        root: workflowId,
        start: Date.now(),
        wf: workflowId,
        wt: workflowType,
        tq: bound.taskQueue,
        rp: 1 as const,
      };
      const payload = encodeHeader({ ...made.originator, lin });
      expect(decodeHeader({ [ORIGINATOR_HEADER]: payload }, ORIGINATOR_HEADER)).toMatchObject({ lin });
    }
    // The lengths span the cap: some issued, the rest refused.
    expect(issued).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
  });
});

describe('issueContextToken', () => {
  it('refuses a schedule token that does not bind its action (workflow type and task queue)', async () => {
    await expect(
      issueContextToken(edge, alice, {
        namespace: 'default',
        use: 'schedule',
        scheduleId: 's',
        workflowId: 'w',
      }),
    ).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
  });

  it('refuses to issue a token for no namespace', async () => {
    await expect(
      issueContextToken(edge, alice, { namespace: '', use: 'start', workflowId: 'wf-1' }),
    ).rejects.toMatchObject({ code: ErrorCodes.MISCONFIGURED });
  });
});

describe("an application's own interceptors", () => {
  it('stay where SDK 1.24 SimplePlugin would drop them: client nexus and activity, worker activityInbound', () => {
    const nexus = { startOperation: async () => undefined } as never;
    const activity = { start: async () => undefined } as never;
    const workflow = {} as never;
    const inbound = (() => ({})) as never;
    const client = new UserContextPlugin({ keys: edge, codec: false }).configureClient({
      namespace: 'default',
      interceptors: { workflow: [workflow], nexus: [nexus], activity: [activity] },
    });
    // The application's first, then the plugin's own (standalone calls: refused with no user in scope).
    expect(client.interceptors?.nexus?.[0]).toBe(nexus);
    expect(client.interceptors?.nexus).toHaveLength(2);
    expect(client.interceptors?.activity?.[0]).toBe(activity);
    expect(client.interceptors?.activity).toHaveLength(2);
    // The plugin's own are added, the application's kept, in the order they were given.
    expect((client.interceptors?.workflow as unknown[])[0]).toBe(workflow);
    expect((client.interceptors?.workflow as unknown[]).length).toBe(2);

    const configured = new UserContextPlugin({ keys: worker, codec: false }).configureWorker({
      taskQueue: 'q',
      namespace: 'default',
      interceptors: { activityInbound: [inbound], client: { nexus: [nexus], activity: [activity] } },
    });
    expect(configured.interceptors?.activityInbound).toEqual([inbound]);
    expect(configured.interceptors?.client?.nexus?.[0]).toBe(nexus);
    expect(configured.interceptors?.client?.activity?.[0]).toBe(activity);
    expect(configured.interceptors?.activity?.length).toBe(1);
  });

  it('the standalone interceptors come back once when another plugin configured after this one dropped them', () => {
    const p = new UserContextPlugin({ keys: edge, codec: false });
    const first = p.configureClient({ namespace: 'default' });
    const ours = { activity: first.interceptors?.activity, nexus: first.interceptors?.nexus };
    expect(ours.activity).toHaveLength(1);
    // What SDK 1.24's SimplePlugin of another plugin hands on: workflow and schedule only.
    const dropped = {
      ...first,
      interceptors: { workflow: first.interceptors?.workflow, schedule: first.interceptors?.schedule },
    };
    const again = p.configureClient(dropped);
    expect(again.interceptors?.activity).toEqual(ours.activity);
    expect(again.interceptors?.nexus).toEqual(ours.nexus);
    expect(p.configureClient({ ...again }).interceptors?.activity).toEqual(ours.activity);
  });
});

describe('beside another SimplePlugin on a Client', () => {
  const clientOf = (plugins: { client?: object[]; connection?: object[] }) =>
    new Client({
      connection: Connection.lazy({ address: '127.0.0.1:1', plugins: plugins.connection as never }),
      plugins: plugins.client as never,
    });
  const tracing = () => new SimplePlugin({ name: 'tracing', clientInterceptors: { workflow: [{}] } });
  /** A standalone activity with no user in scope: refused before any connection when the check is there. */
  const standaloneRefusal = (client: Client) =>
    client.activity
      .start('whoami', { id: 'standalone', taskQueue: 'q', startToCloseTimeout: '10s' })
      .catch((err: unknown) => err);

  it('is refused when that plugin comes after it and gives client interceptors, which would drop its standalone checks', () => {
    // Found by review: SDK 1.24's SimplePlugin rebuilds a client's interceptors from `workflow` and
    // `schedule` only, so a standalone activity or Nexus call with no user in scope went out unrefused and
    // unaudited.
    const ours = new UserContextPlugin({ keys: edge, codec: false });
    expect(() => clientOf({ client: [ours, tracing()] })).toThrow(
      expect.objectContaining({
        code: ErrorCodes.MISCONFIGURED,
        message: expect.stringContaining('"tracing"'),
      }),
    );
    // The Client's own plugins come before its Connection's.
    const onConnection = new UserContextPlugin({ keys: edge, codec: false });
    expect(() => clientOf({ client: [onConnection], connection: [tracing()] })).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
  });

  it('is refused when that plugin replaces its codec or failure converter, unless this plugin has none', () => {
    // Found by the round's review: a data converter with codecs replaces the list, and the client then
    // wrote history unencrypted.
    const codecs = () => new SimplePlugin({ name: 'compression', dataConverter: { payloadCodecs: [] } });
    const failures = () => new SimplePlugin({ name: 'failures', dataConverter: { failureConverterPath } });
    for (const later of [codecs, failures])
      expect(() => clientOf({ client: [new UserContextPlugin({ keys: edge }), later()] })).toThrow(
        expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
      );
    expect(() =>
      clientOf({ client: [new UserContextPlugin({ keys: edge, codec: false }), codecs(), failures()] }),
    ).not.toThrow();
  });

  it('on a worker too, is refused when that plugin replaces its codec', () => {
    // Found by the round's docs check: SimplePlugin replaces a worker's data converter field by field.
    const later = new SimplePlugin({ name: 'compression', dataConverter: { payloadCodecs: [] } });
    const workerOptions = (ours: UserContextPlugin) => ({
      taskQueue: 'q',
      namespace: 'default',
      plugins: [ours, later],
    });
    const ours = new UserContextPlugin({ keys: worker });
    expect(() => ours.configureWorker(workerOptions(ours))).toThrow(
      expect.objectContaining({
        code: ErrorCodes.MISCONFIGURED,
        message: expect.stringContaining('worker plugin'),
      }),
    );
    const noCodec = new UserContextPlugin({ keys: worker, codec: false });
    expect(() => noCodec.configureWorker(workerOptions(noCodec))).not.toThrow();
  });

  it('keeps its standalone checks when listed after it, or when it gives no client interceptors', async () => {
    for (const plugins of [
      { client: [tracing(), new UserContextPlugin({ keys: edge, codec: false })] },
      { client: [tracing()], connection: [new UserContextPlugin({ keys: edge, codec: false })] },
      {
        client: [
          new UserContextPlugin({ keys: edge, codec: false }),
          new SimplePlugin({ name: 'quiet', dataConverter: {} }),
        ],
      },
      // Given as a function, client interceptors may keep what they are given: not judged.
      {
        client: [
          new UserContextPlugin({ keys: edge, codec: false }),
          new SimplePlugin({
            name: 'keeps',
            clientInterceptors: (existing) => ({ ...existing }),
          }),
        ],
      },
    ])
      expect(await standaloneRefusal(clientOf(plugins))).toMatchObject({ code: ErrorCodes.MISSING });
  });
});

describe('schedule control records', () => {
  it('keep what the call did when the schedule id is long: the id is shortened, not the kind', () => {
    const { source, audit } = sourceWith();
    const id = 's'.repeat(300);
    runAsUser(alice, () =>
      source.recordControlCall('schedule.patch', {
        kind: 'schedule',
        id,
        detail: 'trigger',
        namespace: 'default',
      }),
    );
    const [record] = audit.events;
    expect(record?.detail).toBe(`schedule ${'s'.repeat(120)}…; trigger`);
    source.recordControlCall('schedule.patch', {
      kind: 'schedule',
      id: 'nightly',
      detail: 'pause: maintenance',
      namespace: 'default',
    });
    expect(audit.events[1]?.detail).toBe('schedule nightly; pause: maintenance');
  });
});

describe("a worker's patchActivationCallback", () => {
  it("does not decide this package's patches; it decides every other, once wrapped", () => {
    const plugin = new UserContextPlugin({ keys: worker, audit: memoryAuditSink() });
    const asked: string[] = [];
    const configured = plugin.configureWorker({
      taskQueue: 'q',
      // A rollout callback that leaves every patch it does not know inactive.
      patchActivationCallback: ({ patchId }) => {
        asked.push(patchId);
        return false;
      },
    });
    const callback = configured.patchActivationCallback!;
    const workflowInfo = {} as Parameters<typeof callback>[0]['workflowInfo'];
    for (const patchId of [
      'temporal-user-context:shared-verification',
      'temporal-user-context:whole-actor-verification',
    ])
      expect(callback({ patchId, workflowInfo }), patchId).toBe(true);
    expect(callback({ patchId: 'app:new-path', workflowInfo })).toBe(false);
    expect(asked).toEqual(['app:new-path']);
    // Configured again in a copy (another plugin after this one): wrapped once.
    expect(plugin.configureWorker({ ...configured }).patchActivationCallback).toBe(callback);
  });
});
