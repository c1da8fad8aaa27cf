/**
 * `npm run bench`: workflows/s of one workflow + 3 activities, 50 in flight, on a real dev server, for
 * - `baseline`:  the bare SDK;
 * - `peer`:      the SDK with the OpenTelemetry plugin (another plugin propagating context in headers);
 * - `candidate`: the SDK with this plugin doing what the propagation issue asks — sealed context on
 *                every boundary, verification in every activity, memo + search-attribute mirrors —
 *                with the payload codec off (the codec is a separate feature, measured as `full`);
 * - `full`:      the candidate with payload encryption (the codec is on by default).
 * Every other variant's batch runs between two baseline batches and is compared with their mean, which
 * cancels the machine's drift (below); ratios are medians over rounds. Each measured batch has a dev
 * server of its own, so that every variant meets the same server state (BENCH_FRESH_SERVER=0 keeps
 * one for the whole run; with TEMPORAL_ADDRESS there is only that one). Writes
 * bench/results/propagation.json. Not a test: it asserts nothing, it measures.
 * Diagnostics: BENCH_VARIANTS=candidate,... (also `nomirror`, `memo`, `padded`, `null`, `sa`, `lineage`);
 * BENCH_NULL=1 adds an interceptor plugin that does nothing (the floor of any interceptor-based
 * plugin); BENCH_MIRROR=off|plain. Every batch also reports CPU per workflow, of this process by thread
 * (Linux) and of the dev server.
 */
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { PerformanceObserver } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { Resource } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { Client, Connection } from '@temporalio/client';
import { OpenTelemetryPlugin } from '@temporalio/interceptors-opentelemetry';
import { SimplePlugin } from '@temporalio/plugin';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { pino } from 'pino';
import {
  KeyRing,
  UserContextPlugin,
  generateKeySet,
  pinoAuditSink,
  runAsUser,
  type MirrorMode,
  type UserContextPluginOptions,
} from 'temporal-user-context';
import { disableEdgeScope } from '../packages/temporal-user-context/src/client/scope.js';
import { startTemporal } from '../test-support/temporal.js';
import * as activities from './workload/activities.js';
import { SA_PAIRS } from './workload/search-attributes.js';
import { SA_CACHE_SETTING, SERVER_ARGS } from './workload/server-settings.js';
import { PADDING_HEADER } from './workload/padded-interceptors.js';

const WORKFLOWS_PER_BATCH = Number(process.env.BENCH_WORKFLOWS ?? 200);
const IN_FLIGHT = 50;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 11);
type Variant =
  | 'baseline'
  | 'peer'
  | 'candidate'
  | 'full'
  | 'null'
  | 'nomirror'
  | 'memo'
  | 'defaults'
  | 'padded'
  | 'sa'
  | 'lineage';
/** Variants running this plugin. */
const OURS = new Set<Variant>(['candidate', 'full', 'nomirror', 'memo', 'defaults', 'lineage']);
/** Diagnostic variants: measured only when BENCH_VARIANTS names them. */
const DIAGNOSTIC = new Set<Variant>(['null', 'nomirror', 'memo', 'defaults', 'padded', 'sa', 'lineage']);
const mirrorMode = (process.env.BENCH_MIRROR ?? 'pseudonym') as MirrorMode;
const mirror = { memo: mirrorMode, searchAttributes: mirrorMode };

Runtime.install({ logger: new DefaultLogger('ERROR') });

/** Main-thread GC pause time so far (ms), for the per-batch breakdown. */
let gcPauseMs = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcPauseMs += entry.duration;
}).observe({ entryTypes: ['gc'] });

/**
 * A full collection before each batch, so that garbage one variant left behind is not collected (and
 * paid for) during the next variant's batch.
 */
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

/** The default audit sink (pino), writing into /dev/null rather than the bench's own output. */
function devNullPino() {
  return pinoAuditSink(pino(pino.destination('/dev/null')));
}

/**
 * The peer as its users run it: the OpenTelemetry API given a tracer provider, the W3C propagator and an
 * AsyncLocalStorage context manager (the SDK's sample does this with NodeSDK), so that client and
 * activity spans are recorded and the trace context travels in headers. Registered for the peer's
 * batches only: the global context manager's store would otherwise tax every other variant's promises.
 */
function registerOpenTelemetry(): () => Promise<void> {
  const provider = new BasicTracerProvider({ resource: new Resource({ 'service.name': 'bench' }) });
  provider.addSpanProcessor(new SimpleSpanProcessor(new InMemorySpanExporter()));
  provider.register({
    contextManager: new AsyncLocalStorageContextManager(),
    propagator: new W3CTraceContextPropagator(),
  });
  return async () => {
    trace.disable();
    context.disable();
    propagation.disable();
    await provider.shutdown();
  };
}

/** The `padded` variant's header: a json/plain payload the size of this plugin's header. */
const PADDING = {
  metadata: { encoding: new TextEncoder().encode('json/plain') },
  data: new TextEncoder().encode(
    JSON.stringify({ v: 1, tok: 'x'.repeat(850), ws: 'w'.repeat(22), sub: 's'.repeat(22) }),
  ),
};

async function main(): Promise<void> {
  const keys = generateKeySet('bench-edge');
  // The candidate's audit records go to a sink that drops them: what a sink costs is the sink's choice
  // (pino, a database); `defaults` pays for the default pino sink, written to /dev/null.
  const audit = { emit: () => undefined };
  const otel = () =>
    new OpenTelemetryPlugin({
      resource: new Resource({ 'service.name': 'bench' }),
      spanProcessor: new SimpleSpanProcessor(new InMemorySpanExporter()),
    });
  /** This plugin on the client (edge keys) and on the worker (worker keys). */
  const ours = (options: Pick<UserContextPluginOptions, 'mirror' | 'codec' | 'activityLineage'>) => ({
    client: () => [new UserContextPlugin({ keys: KeyRing.fromJSON(keys.edge), audit, ...options })],
    worker: () => [new UserContextPlugin({ keys: KeyRing.fromJSON(keys.worker), audit, ...options })],
  });
  const plugins: Record<Variant, { client: () => unknown[]; worker: () => unknown[] }> = {
    baseline: { client: () => [], worker: () => [] },
    peer: { client: () => [otel()], worker: () => [otel()] },
    // Diagnostic: an interceptor plugin that does nothing (BENCH_NULL=1 adds it to the rounds).
    null: {
      client: () => [new SimplePlugin({ name: 'null' })],
      worker: () => [
        new SimplePlugin({
          name: 'null',
          workerInterceptors: {
            workflowModules: [fileURLToPath(new URL('./workload/null-interceptors.ts', import.meta.url))],
          },
        }),
      ],
    },
    candidate: ours({ mirror, codec: false }),
    // Diagnostic (BENCH_VARIANTS=...,padded): a header of this plugin's size carried to every activity.
    padded: {
      client: () => [
        new SimplePlugin({
          name: 'padded',
          clientInterceptors: {
            workflow: [
              {
                start(input, next) {
                  return next({ ...input, headers: { ...input.headers, [PADDING_HEADER]: PADDING } });
                },
              },
            ],
          },
        }),
      ],
      worker: () => [
        new SimplePlugin({
          name: 'padded',
          workerInterceptors: {
            workflowModules: [fileURLToPath(new URL('./workload/padded-interceptors.ts', import.meta.url))],
          },
        }),
      ],
    },
    // Diagnostics (BENCH_VARIANTS=...): the candidate without mirrors, and with the memo mirror only
    // (the plugin's default mirrors: search attributes are opt-in), both with the codec off.
    nomirror: ours({ mirror: { memo: 'off', searchAttributes: 'off' }, codec: false }),
    memo: ours({ mirror: { memo: 'pseudonym', searchAttributes: 'off' }, codec: false }),
    // Diagnostic: the plugin as `new UserContextPlugin({ keys })` configures it: memo mirror only, the
    // codec on, audit records to pino (here into /dev/null, not the bench's stdout).
    defaults: {
      client: () => [new UserContextPlugin({ keys: KeyRing.fromJSON(keys.edge), audit: devNullPino() })],
      worker: () => [new UserContextPlugin({ keys: KeyRing.fromJSON(keys.worker), audit: devNullPino() })],
    },
    full: ours({ mirror }),
    // Diagnostic: the candidate with activity lineage from the server (activityLineage: 'server').
    lineage: ours({ mirror, codec: false, activityLineage: 'server' }),
    // Diagnostic: the bare SDK, the application itself setting the two search attributes the
    // candidate's mirror sets (values of the same length): what search attributes cost without us.
    sa: { client: () => [], worker: () => [] },
  };
  const workflowsPath = fileURLToPath(new URL('./workload/workflows.ts', import.meta.url));
  const only = process.env.BENCH_VARIANTS?.split(',');
  const variants = (Object.keys(plugins) as Variant[]).filter((v) =>
    only
      ? only.includes(v) || v === 'baseline' // every variant is measured against it
      : !DIAGNOSTIC.has(v) || (v === 'null' && process.env.BENCH_NULL === '1'),
  );
  // Each plugin adds its own workflow interceptor modules (and, for ours, preloads) at bundling time.
  const bundles = new Map(
    await Promise.all(
      variants.map(
        async (variant) =>
          [
            variant,
            await bundleWorkflowCode({
              workflowsPath,
              plugins: plugins[variant].worker() as never,
              logger: new DefaultLogger('ERROR'),
            }),
          ] as const,
      ),
    ),
  );

  /** A dev server (or TEMPORAL_ADDRESS) with one running worker and one client per given variant. */
  async function open(served: readonly Variant[]) {
    const env = await startTemporal({ extraArgs: SERVER_ARGS });
    const namespace = env.namespace ?? 'default';
    const nativeConnection = await NativeConnection.connect({ address: env.address });
    const setups = await Promise.all(
      served.map(async (variant) => {
        const taskQueue = `bench-${variant}`;
        // This plugin goes on the Connection, as its README shows (it then also sees the connection's
        // schedule calls); the others on the Client, as their docs show.
        const connection = await Connection.connect({
          address: env.address,
          plugins: (OURS.has(variant) ? plugins[variant].client() : []) as never,
        });
        const worker = await Worker.create({
          connection: nativeConnection,
          namespace,
          taskQueue,
          workflowBundle: bundles.get(variant)!,
          // The same step; under this plugin it also reads the verified context, as real code would.
          activities: { step: OURS.has(variant) ? activities.stepAsUser : activities.step },
          plugins: plugins[variant].worker() as never,
        });
        const client = new Client({
          connection,
          namespace,
          plugins: (OURS.has(variant) ? [] : plugins[variant].client()) as never,
        });
        return { variant, taskQueue, worker, client, connection };
      }),
    );
    const running = setups.map((s) => s.worker.run());
    const close = async () => {
      for (const s of setups) s.worker.shutdown();
      await Promise.all(running);
      for (const s of setups) await s.connection.close();
      try {
        await nativeConnection.close();
        await env.teardown();
      } finally {
        // SDK 1.24: NativeConnection.close() leaves the connection's AsyncLocalStorage enabled (the
        // worker runs each activity in it), and Node 20 walks every enabled store on every promise it
        // creates. One server per batch left ~45 of them behind by the end of a run: the cost of a promise
        // grew five-fold, the main thread's CPU per workflow by 40%, and more for the variants that create
        // more promises. Connection.close() already disables its own.
        nativeConnection.callContextStorage.disable();
        env.nativeConnection.callContextStorage.disable();
      }
    };
    return { setups, close, server: serverPid(env.address) };
  }

  const cpu: Record<string, { node: number[]; server: number[]; gc: number[] }> = {};
  const threads: Record<string, ThreadCpu[]> = {};
  type Opened = Awaited<ReturnType<typeof open>>;
  type Setup = Opened['setups'][number];
  async function batch(
    setup: Setup,
    server: string | undefined,
    workflows = WORKFLOWS_PER_BATCH,
    record = true,
  ): Promise<number> {
    collectGarbage();
    const unregister = setup.variant === 'peer' ? registerOpenTelemetry() : undefined;
    const ticks0 = threadTicks();
    const node0 = process.cpuUsage();
    const server0 = serverCpuMs(server);
    const gc0 = gcPauseMs;
    const user = { userId: activities.BENCH_USER, workspaceId: 'ws-bench', roles: ['member'] };
    // Only this plugin's variants start inside an edge scope: the others pay nothing for our code.
    const ours = OURS.has(setup.variant);
    let next = 0;
    const started = performance.now();
    const lane = async () => {
      while (next < workflows) {
        next++;
        const start = () =>
          setup.client.workflow.execute('threeSteps', {
            taskQueue: setup.taskQueue,
            workflowId: `b-${randomUUID()}`,
            args: ['x'],
            ...(setup.variant === 'sa' ? { typedSearchAttributes: SA_PAIRS } : {}),
          });
        await (ours ? runAsUser(user, start) : start());
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
    const rate = workflows / ((performance.now() - started) / 1000);
    // Measured; then the variant's process-wide state is put away before the next batch.
    const tidy = async () => {
      await unregister?.();
      if (ours) disableEdgeScope();
    };
    if (!record) {
      await tidy();
      return rate;
    }
    const node1 = process.cpuUsage(node0);
    const c = (cpu[setup.variant] ??= { node: [], server: [], gc: [] });
    c.node.push((node1.user + node1.system) / 1000 / WORKFLOWS_PER_BATCH);
    c.gc.push((gcPauseMs - gc0) / WORKFLOWS_PER_BATCH);
    c.server.push((serverCpuMs(server) - server0) / WORKFLOWS_PER_BATCH);
    (threads[setup.variant] ??= []).push(threadCpu(ticks0, threadTicks(), WORKFLOWS_PER_BATCH));
    await tidy();
    return rate;
  }

  const samples: Record<Variant, number[]> = {
    baseline: [],
    peer: [],
    candidate: [],
    full: [],
    null: [],
    nomirror: [],
    memo: [],
    defaults: [],
    padded: [],
    sa: [],
    lineage: [],
  };
  // A fresh dev server for every measured batch. The server's in-memory state grows with every
  // workflow, and its CPU per workflow with it: on one server for a whole run, throughput fell by 40%
  // over nine rounds; on one server per round, the variant measured later in a round paid ~1% per
  // earlier batch, so which variant came first swung a round's ratio by ±2.5% (0.92 in rounds where
  // the baseline ran first, 0.96 where it ran last). Each batch now starts from the same state: a new
  // server and worker, warmed up on a short unrecorded batch of the same variant.
  const fresh = !process.env.TEMPORAL_ADDRESS && process.env.BENCH_FRESH_SERVER !== '0';
  // Warm-up of this process (bundles, caches, JIT): one recorded batch per variant, left out of the
  // medians.
  const shared = await open(variants);
  for (const s of shared.setups) await batch(s, shared.server);
  if (fresh) await shared.close();
  const report = (round: number, variant: Variant, rate: number) => {
    const c = cpu[variant]!;
    const t = threads[variant]!.at(-1)!;
    process.stdout.write(
      `round ${round + 1}/${ROUNDS} ${variant.padEnd(9)} ${rate.toFixed(1)} workflows/s  ` +
        `cpu/workflow: this process ${c.node.at(-1)!.toFixed(2)} ms (main ${t.main.toFixed(2)}, ` +
        `workflow thread ${t.workflowThread.toFixed(2)}, core ${t.core.toFixed(2)}, other ${t.other.toFixed(2)}; ` +
        `main-thread GC pauses ${c.gc.at(-1)!.toFixed(2)}), ` +
        `server ${c.server.at(-1)!.toFixed(2)} ms\n`,
    );
  };
  /** One measured batch: a fresh server (unless shared), warm-up, the batch, its CPU. */
  async function measure(variant: Variant, round: number): Promise<Sample> {
    const opened = fresh ? await open([variant]) : shared;
    const setup = opened.setups.find((s) => s.variant === variant)!;
    if (fresh) await batch(setup, opened.server, IN_FLIGHT, false);
    const rate = await batch(setup, opened.server);
    samples[variant].push(rate);
    report(round, variant, rate);
    if (fresh) await opened.close();
    const c = cpu[variant]!;
    return { rate, cpu: { ...threads[variant]!.at(-1)!, process: c.node.at(-1)!, server: c.server.at(-1)! } };
  }
  // The machine's speed drifts by up to ±25% from one minute to the next on a shared VM: in one run the
  // same variant used 39 to 66 ms of CPU per workflow, at a constant ~1.8 cores busy, and its
  // throughput followed. That is more than the effect measured, and batches of one round are up to a
  // minute apart. So every other variant's batch is bracketed by baseline batches (B V1 B V2 B V3 B V3
  // B V2 ...) and compared with the mean of the two baselines around it, ~20 s on either side: drift that
  // is linear over that span cancels. The `…Ratio` fields are medians of these bracketed ratios;
  // `ratio` is the issue's: candidate/baseline, the medians of their batches.
  const others = variants.filter((v) => v !== 'baseline');
  const brackets: Record<string, { rate: number[]; cpu: Record<CpuPart, number[]> }> = {};
  let before = await measure('baseline', 0);
  for (let round = 0; round < ROUNDS; round++) {
    // The order alternates, so that no variant always follows the same one.
    for (const variant of round % 2 === 0 ? others : [...others].reverse()) {
      const sample = await measure(variant, round);
      const after = await measure('baseline', round);
      const b = (brackets[variant] ??= { rate: [], cpu: emptyCpuParts() });
      b.rate.push(sample.rate / ((before.rate + after.rate) / 2));
      for (const part of CPU_PARTS)
        b.cpu[part].push(sample.cpu[part] / ((before.cpu[part] + after.cpu[part]) / 2));
      before = after;
    }
  }
  /** The p-quantile, interpolated between the two nearest ranks. */
  const quantile = (xs: number[], p: number) => {
    if (!xs.length) return NaN;
    const sorted = [...xs].sort((a, b) => a - b);
    const at = (sorted.length - 1) * p;
    const lo = Math.floor(at);
    return sorted[lo]! + (sorted[Math.ceil(at)]! - sorted[lo]!) * (at - lo);
  };
  const median = (xs: number[]) => quantile(xs, 0.5);
  const m = Object.fromEntries(variants.map((v) => [v, median(samples[v])])) as Record<Variant, number>;
  const paired = (v: Variant) => median(brackets[v]?.rate ?? []);
  const candidateRatios = brackets.candidate?.rate ?? [];
  const result = {
    baseline: m.baseline,
    peer: m.peer,
    candidate: m.candidate,
    full: m.full,
    // As the propagation issue defines it: the candidate's workflows/s over the baseline's.
    ratio: m.candidate / m.baseline,
    // The same, drift cancelled: each candidate batch over the two baseline batches around it (median).
    ratioBracketed: paired('candidate'),
    peerRatio: paired('peer'),
    fullRatio: paired('full'),
    ...(m.null ? { nullRatio: paired('null') } : {}),
    ...(m.nomirror ? { nomirrorRatio: paired('nomirror') } : {}),
    ...(m.memo ? { memoRatio: paired('memo') } : {}),
    ...(m.defaults ? { defaultsRatio: paired('defaults') } : {}),
    ...(m.padded ? { paddedRatio: paired('padded') } : {}),
    ...(m.sa ? { saRatio: paired('sa') } : {}),
    ...(m.lineage ? { lineageRatio: paired('lineage') } : {}),
    // The spread of the bracketed candidate ratios: how far one run's ratio can be trusted.
    ratioQuartiles: [quantile(candidateRatios, 0.25), quantile(candidateRatios, 0.75)],
    unit: 'workflows/s (median of batches); ratio: candidate/baseline of those; ratioBracketed, ratioQuartiles and the other ratios: of each batch over the mean of the two baseline batches around it',
    candidateOptions: { mirror, codec: false, audit: 'a sink that drops records', onConnection: true },
    // Where the extra work goes, drift cancelled the same way: each variant's CPU per workflow over the
    // baseline's, by thread of this process and for the dev server.
    cpuOverBaseline: Object.fromEntries(
      Object.entries(brackets).map(([v, b]) => [
        v,
        Object.fromEntries(CPU_PARTS.map((part) => [part, median(b.cpu[part])])),
      ]),
    ),
    workload: {
      workflowsPerBatch: WORKFLOWS_PER_BATCH,
      activitiesPerWorkflow: 3,
      inFlight: IN_FLIGHT,
      rounds: ROUNDS,
      bracketedByBaseline: true,
      freshServerPerBatch: fresh,
      searchAttributeCache: SA_CACHE_SETTING,
    },
    samples,
    cpuPerWorkflowMs: Object.fromEntries(
      Object.entries(cpu).map(([v, c]) => {
        // The first batch of each variant is the warm-up: left out of the medians.
        const t = threads[v]!.slice(1);
        const byThread = (k: keyof ThreadCpu) => median(t.map((x) => x[k]));
        return [
          v,
          {
            process: median(c.node.slice(1)),
            server: median(c.server.slice(1)),
            mainGcPauses: median(c.gc.slice(1)),
            main: byThread('main'),
            workflowThread: byThread('workflowThread'),
            core: byThread('core'),
            other: byThread('other'),
          },
        ];
      }),
    ),
    node: process.version,
    date: new Date().toISOString(),
  };
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
  const r = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : '-');
  process.stdout.write(
    `\nbaseline ${f(m.baseline)}  peer (OpenTelemetry) ${f(m.peer)}  candidate ${f(m.candidate)}  full (with codec) ${f(m.full)} workflows/s\n` +
      `ratio candidate/baseline = ${r(result.ratio)} (target >= 0.97); bracketed ${r(result.ratioBracketed)} (quartiles ${r(result.ratioQuartiles[0]!)}–${r(result.ratioQuartiles[1]!)}); peer/baseline = ${r(result.peerRatio)}; full/baseline = ${r(result.fullRatio)}` +
      (m.defaults ? `; defaults/baseline = ${r(result.defaultsRatio!)}` : '') +
      '\n',
  );
  const out = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(out, { recursive: true });
  writeFileSync(`${out}propagation.json`, `${JSON.stringify(result, null, 2)}\n`);
  if (!fresh) await shared.close();
}

/** What one batch measured: workflows/s and CPU per workflow by part. */
interface Sample {
  rate: number;
  cpu: Record<CpuPart, number>;
}
const CPU_PARTS = ['process', 'main', 'workflowThread', 'core', 'other', 'server'] as const;
type CpuPart = (typeof CPU_PARTS)[number];
function emptyCpuParts(): Record<CpuPart, number[]> {
  return Object.fromEntries(CPU_PARTS.map((part) => [part, []])) as unknown as Record<CpuPart, number[]>;
}

/** Milliseconds per clock tick in /proc (USER_HZ = 100 on Linux). */
const TICK_MS = 10;

/** CPU ms per workflow of this process's threads during one batch, by kind of thread. */
interface ThreadCpu {
  /** The main thread: client, activities, the worker's Node side. */
  main: number;
  /** The busiest other Node thread: the variant's workflow thread (sandboxed workflow code). */
  workflowThread: number;
  /** The SDK core's Rust threads (gRPC, state machines). */
  core: number;
  /** Everything else: libuv's thread pool (crypto), V8's GC and compiler threads. */
  other: number;
}

/** Clock ticks used so far by each thread of this process (Linux /proc; empty elsewhere). */
function threadTicks(): Map<string, { ticks: number; name: string }> {
  const out = new Map<string, { ticks: number; name: string }>();
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      out.set(tid, { ticks: cpuTicks(stat), name });
    } catch {
      // the thread ended: its time is lost to this batch's breakdown (not to process.cpuUsage)
    }
  }
  return out;
}

function threadCpu(
  before: Map<string, { ticks: number; name: string }>,
  after: Map<string, { ticks: number; name: string }>,
  workflows: number,
): ThreadCpu {
  const out: ThreadCpu = { main: 0, workflowThread: 0, core: 0, other: 0 };
  for (const [tid, { ticks, name }] of after) {
    const ms = ((ticks - (before.get(tid)?.ticks ?? 0)) * TICK_MS) / workflows;
    if (tid === String(process.pid)) out.main += ms;
    else if (name.startsWith('tokio')) out.core += ms;
    else if (name === 'node' && ms > out.workflowThread) {
      out.other += out.workflowThread;
      out.workflowThread = ms;
    } else out.other += ms;
  }
  return out;
}

/**
 * The pid of the local dev server listening at `address` (found by its command line), or undefined
 * when it is not a local process (TEMPORAL_ADDRESS).
 */
function serverPid(address: string): string | undefined {
  const port = address.slice(address.lastIndexOf(':') + 1);
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (args.includes('start-dev') && args[args.indexOf('--port') + 1] === port) return pid;
    } catch {
      // the process went away or is not readable: keep looking
    }
  }
  return undefined;
}

/**
 * CPU milliseconds used so far by the dev server, or NaN when unknown. Diagnostic: CPU per workflow
 * is steadier than throughput here.
 */
function serverCpuMs(pid: string | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    return cpuTicks(readFileSync(`/proc/${pid}/stat`, 'utf8')) * TICK_MS;
  } catch {
    return Number.NaN;
  }
}

/** User + system clock ticks of a /proc `stat` line (after the parenthesised command name). */
function cpuTicks(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

await main();
