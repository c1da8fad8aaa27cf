// The payload codec the plugin puts into the data converter: calls without a serialization context (a
// Nexus handler's input and result, an activity completed by task token) are bound to the namespace of
// the client or worker the plugin configured, not to the one it had when it was built.
import { ApplicationFailure, type Payload, type PayloadCodec } from '@temporalio/common';
import { SimplePlugin } from '@temporalio/plugin';
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  UserContextPlugin,
  generateKeySet,
  failureConverterPath,
  isUserContextError,
  memoryAuditSink,
  runAsUser,
  workflowInterceptorsPath,
} from 'temporal-user-context';

const payload: Payload = {
  metadata: { encoding: new TextEncoder().encode('json/plain') },
  data: new TextEncoder().encode('"secret"'),
};

/** The data of decoded payloads, as text. */
const text = (payloads: Payload[]) => payloads.map((p) => new TextDecoder().decode(p.data));

function registeredCodec(options: { namespace?: string }, workerNamespace = 'prod') {
  const plugin = new UserContextPlugin({
    keys: KeyRing.fromJSON(generateKeySet('plugin-codec').worker),
    audit: memoryAuditSink(),
    ...options,
  });
  const configured = plugin.configureWorker({ taskQueue: 'q', namespace: workerNamespace });
  const codecs = (configured.dataConverter as { payloadCodecs?: PayloadCodec[] } | undefined)?.payloadCodecs;
  return { plugin, codec: codecs?.at(-1) };
}

describe("the plugin's codec in the data converter", () => {
  it("binds calls without a context to the worker's namespace, set after the plugin was built", async () => {
    const { plugin, codec } = registeredCodec({});
    const sealed = await codec!.encode([payload]);
    expect(text(await codec!.decode(sealed))).toEqual(['"secret"']);
    expect(text(await plugin.codec!.forNamespace('prod').decode(sealed))).toEqual(['"secret"']);
    await expect(plugin.codec!.forNamespace('default').decode(sealed)).rejects.toMatchObject({
      code: ErrorCodes.PAYLOAD_TAMPERED,
    });
  });

  it('keeps a namespace given as an option, and refuses a worker of another namespace', async () => {
    expect(() => registeredCodec({ namespace: 'billing' }, 'prod')).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    const { plugin, codec } = registeredCodec({ namespace: 'billing' }, 'billing');
    const sealed = await codec!.encode([payload]);
    expect(text(await plugin.codec!.forNamespace('billing').decode(sealed))).toEqual(['"secret"']);
    await expect(plugin.codec!.forNamespace('prod').decode(sealed)).rejects.toMatchObject({
      code: ErrorCodes.PAYLOAD_TAMPERED,
    });
  });
});

describe('a refusal in an activity context', () => {
  it('is an ApplicationFailure typed with the code, retryable, caused by the refusal; elsewhere the refusal itself', async () => {
    const audit = memoryAuditSink();
    const plugin = new UserContextPlugin({ keys: KeyRing.fromJSON(generateKeySet('pc').worker), audit });
    const configured = plugin.configureWorker({ taskQueue: 'q', namespace: 'prod' });
    const codec = (configured.dataConverter as { payloadCodecs: PayloadCodec[] }).payloadCodecs.at(-1)!;
    const activity = {
      type: 'activity',
      namespace: 'prod',
      workflowId: 'wf-1',
      activityId: '1',
      isLocal: false,
    } as const;
    const failure = await codec.decode([payload], activity).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: ErrorCodes.PLAINTEXT_PAYLOAD, nonRetryable: false });
    expect(isUserContextError((failure as ApplicationFailure).cause, ErrorCodes.PLAINTEXT_PAYLOAD)).toBe(
      true,
    );
    const workflow = { type: 'workflow', namespace: 'prod', workflowId: 'wf-1' } as const;
    const refusal = await codec.decode([payload], workflow).catch((e: unknown) => e);
    expect(isUserContextError(refusal, ErrorCodes.PLAINTEXT_PAYLOAD)).toBe(true);
    // At the edge, the call's user is named.
    const alice = { userId: 'alice', workspaceId: 'ws-a', roles: ['member'] };
    await expect(runAsUser(alice, () => codec.decode([payload], workflow))).rejects.toMatchObject({
      code: ErrorCodes.PLAINTEXT_PAYLOAD,
    });
    // One record each, by the codec's refusal hook, with what it is known to be about.
    expect(
      audit.events.map((e) => [e.action, e.reason, e.workflowId, e.activityId, e.source, e.userId]),
    ).toEqual([
      ['codec.decode', ErrorCodes.PLAINTEXT_PAYLOAD, 'wf-1', '1', 'none', undefined],
      ['codec.decode', ErrorCodes.PLAINTEXT_PAYLOAD, 'wf-1', undefined, 'none', undefined],
      ['codec.decode', ErrorCodes.PLAINTEXT_PAYLOAD, 'wf-1', undefined, 'edge', 'alice'],
    ]);
  });
});

describe('forNamespace and the refusal hook', () => {
  it('keeps the hook unless told null', async () => {
    const audit = memoryAuditSink();
    const plugin = new UserContextPlugin({ keys: KeyRing.fromJSON(generateKeySet('pc').worker), audit });
    const codec = plugin.codec!;
    for (const options of [undefined, {}, { onRefusal: undefined }])
      await expect(codec.forNamespace('prod', options).decode([payload])).rejects.toMatchObject({
        code: ErrorCodes.PLAINTEXT_PAYLOAD,
      });
    expect(audit.events).toHaveLength(3);
    await expect(codec.forNamespace('prod', { onRefusal: null }).decode([payload])).rejects.toMatchObject({
      code: ErrorCodes.PLAINTEXT_PAYLOAD,
    });
    expect(audit.events).toHaveLength(3);
  });
});

describe('one plugin, configured more than once', () => {
  const newPlugin = () =>
    new UserContextPlugin({ keys: KeyRing.fromJSON(generateKeySet('twice').edge), audit: memoryAuditSink() });

  it('serves one namespace: a client or worker of a second namespace is refused', () => {
    const plugin = newPlugin();
    plugin.configureClient({ namespace: 'tenant-a' });
    expect(() => plugin.configureClient({ namespace: 'tenant-b' })).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    expect(() => plugin.configureWorker({ taskQueue: 'q', namespace: 'tenant-b' })).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    // A client without a namespace is in `default`.
    expect(() => plugin.configureClient({})).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    // The same namespace again is fine (a worker and its own client).
    plugin.configureWorker({ taskQueue: 'q', namespace: 'tenant-a' });
  });

  it('applied twice to the same options (given to a Connection and its Client, or a NativeConnection and its Worker), registers once', () => {
    const plugin = newPlugin();
    const once = plugin.configureClient({ namespace: 'ns' });
    const twice = plugin.configureClient(once);
    expect(twice).toBe(once);
    expect((twice.interceptors?.workflow as unknown[]).length).toBe(1);
    expect((twice.dataConverter as { payloadCodecs?: unknown[] }).payloadCodecs).toHaveLength(1);
    const worker = plugin.configureWorker({ taskQueue: 'q', namespace: 'ns' });
    expect(plugin.configureWorker(worker)).toBe(worker);
    expect(worker.interceptors?.activity).toHaveLength(1);
    const bundle = plugin.configureBundler({ workflowsPath: 'x' } as never);
    expect(plugin.configureBundler(bundle)).toBe(bundle);
  });

  it('given again after another plugin ([p, other, p]), registers once; a second UserContextPlugin is refused', () => {
    const plugin = newPlugin();
    const theirs = { start: (input: never, next: (i: never) => unknown) => next(input) };
    const theirActivity = () => ({});
    const theirCodec = { encode: async (p: Payload[]) => p, decode: async (p: Payload[]) => p };
    const other = new SimplePlugin({
      name: 'other',
      clientInterceptors: { workflow: [theirs] as never },
      workerInterceptors: { activity: [theirActivity], workflowModules: ['/their/module.js'] },
      dataConverter: (existing) => ({
        ...existing,
        payloadCodecs: [...(existing?.payloadCodecs ?? []), theirCodec],
      }),
    });
    const first = plugin.configureClient({ namespace: 'ns' });
    const client = plugin.configureClient(other.configureClient(first));
    const workflow = client.interceptors?.workflow as unknown[];
    expect(workflow).toHaveLength(2);
    expect(workflow.indexOf(theirs)).toBe(1);
    expect(client.interceptors?.schedule).toHaveLength(1);
    // Left in the order of `[p, other]`: ours encodes first there, and must here too, or the two sides
    // could not read each other's payloads.
    const codecs = (client.dataConverter as { payloadCodecs?: unknown[] }).payloadCodecs!;
    expect(codecs).toHaveLength(2);
    expect(codecs[0]).toBe((first.dataConverter as { payloadCodecs?: unknown[] }).payloadCodecs![0]);
    expect(codecs[1]).toBe(theirCodec);

    const worker = plugin.configureWorker(
      other.configureWorker(plugin.configureWorker({ taskQueue: 'q', namespace: 'ns', workflowsPath: 'w' })),
    );
    expect(worker.interceptors?.activity).toHaveLength(2);
    expect(worker.interceptors?.activity).toContain(theirActivity);
    expect(worker.interceptors?.nexus).toHaveLength(1);
    expect(worker.interceptors?.client?.workflow as unknown[]).toHaveLength(1);
    expect(worker.interceptors?.workflowModules?.filter((m) => m === workflowInterceptorsPath)).toHaveLength(
      1,
    );
    expect(worker.interceptors?.workflowModules).toContain('/their/module.js');
    expect((worker.dataConverter as { payloadCodecs?: unknown[] }).payloadCodecs).toHaveLength(2);
    expect(Object.keys(worker.sinks ?? {})).toContain('userContextAudit');
    const replay = plugin.configureReplayWorker(
      other.configureReplayWorker(plugin.configureReplayWorker({ workflowsPath: 'w' })),
    );
    expect(replay.interceptors?.activity).toHaveLength(2);
    expect(replay.interceptors?.workflowModules?.filter((m) => m === workflowInterceptorsPath)).toHaveLength(
      1,
    );

    const bundle = plugin.configureBundler(
      other.configureBundler(plugin.configureBundler({ workflowsPath: 'x' } as never)),
    );
    expect(bundle.preloadModules?.filter((m) => m === workflowInterceptorsPath)).toHaveLength(1);
    // Left as it was, but with the failure converter its codec calls for.
    expect(bundle.failureConverterPath).toBe(failureConverterPath);
    expect(
      plugin.configureBundler({
        workflowsPath: 'x',
        preloadModules: [workflowInterceptorsPath],
        workflowInterceptorModules: [workflowInterceptorsPath],
      }).failureConverterPath,
    ).toBe(failureConverterPath);
    expect(bundle.workflowInterceptorModules?.filter((m) => m === workflowInterceptorsPath)).toHaveLength(1);

    // Two UserContextPlugins on one client or worker: two issuers, two verifiers. Refused.
    const second = newPlugin();
    expect(() => second.configureClient(client)).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
    expect(() => second.configureWorker(worker)).toThrow(
      expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }),
    );
  });

  it('is not fooled by options that hold some of its parts, or one twice: those are configured', () => {
    const plugin = newPlugin();
    const a = plugin.configureClient({ namespace: 'ns' });
    const b = plugin.configureClient({ namespace: 'ns' });
    // Its workflow interceptor twice and its schedule interceptor, without its codec.
    const merged = plugin.configureClient({
      namespace: 'ns',
      interceptors: {
        workflow: [
          ...(a.interceptors!.workflow as unknown[]),
          ...(b.interceptors!.workflow as unknown[]),
        ] as never,
        schedule: a.interceptors!.schedule,
      },
    });
    expect(merged.interceptors?.workflow).toHaveLength(1);
    expect((merged.dataConverter as { payloadCodecs?: unknown[] }).payloadCodecs).toHaveLength(1);
    // A worker configured, then given to a plugin that drops the workflow interceptor module.
    const configured = plugin.configureWorker({ taskQueue: 'q', namespace: 'ns', workflowsPath: 'w' });
    const stripped = {
      ...configured,
      interceptors: { ...configured.interceptors, workflowModules: ['/their/module.js'] },
    };
    const again = plugin.configureWorker(stripped);
    expect(again.interceptors?.workflowModules).toEqual(['/their/module.js', workflowInterceptorsPath]);
    expect(again.interceptors?.activity).toHaveLength(1);
  });

  it('is not fooled by its interceptors copied from a configured client: such a worker is configured', () => {
    const plugin = newPlugin();
    const client = plugin.configureClient({ namespace: 'ns' });
    const worker = plugin.configureWorker({
      taskQueue: 'q',
      namespace: 'ns',
      interceptors: { client: client.interceptors as never },
    });
    expect(worker.interceptors?.activity).toHaveLength(1);
    expect(Object.keys(worker.sinks ?? {})).toContain('userContextAudit');
  });
});
