/**
 * `npm run bench`: workflows/s with the bare SDK (baseline), the SDK with the OpenTelemetry plugin
 * (the peer: another plugin that propagates context through headers) and the SDK with this plugin
 * (candidate). One workflow + 3 activities each, 50 in flight, on a real dev server; the three
 * variants are interleaved in rounds so that drift affects them alike. Writes
 * bench/results/propagation.json. Not a test: it asserts nothing, it measures.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { Resource } from '@opentelemetry/resources';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Client, Connection } from '@temporalio/client';
import { OpenTelemetryPlugin } from '@temporalio/interceptors-opentelemetry';
import { SimplePlugin } from '@temporalio/plugin';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import {
  KeyRing,
  UserContextPlugin,
  generateKeySet,
  runAsUser,
  type MirrorMode,
} from 'temporal-user-context';
import { startTemporal } from '../test-support/temporal.js';
import * as activities from './workload/activities.js';

const WORKFLOWS_PER_BATCH = Number(process.env.BENCH_WORKFLOWS ?? 300);
const IN_FLIGHT = 50;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
type Variant = 'baseline' | 'peer' | 'candidate' | 'null';
// Ablations, to see where the cost goes: BENCH_CODEC=0 (no payload encryption), BENCH_MIRROR=off.
const mirrorMode = (process.env.BENCH_MIRROR ?? 'pseudonym') as MirrorMode;
const candidateOptions = {
  ...(process.env.BENCH_CODEC === '0' ? { codec: false } : {}),
  mirror: { memo: mirrorMode, searchAttributes: mirrorMode },
};

Runtime.install({ logger: new DefaultLogger('ERROR') });

async function main(): Promise<void> {
  const env = await startTemporal();
  const address = env.address;
  const namespace = env.namespace ?? 'default';
  const keys = generateKeySet('bench-edge');
  const audit = { emit: () => undefined }; // audit cost is the sink's, not the plugin's: measured separately
  const otel = () =>
    new OpenTelemetryPlugin({
      resource: new Resource({ 'service.name': 'bench' }),
      spanProcessor: new SimpleSpanProcessor(new InMemorySpanExporter()),
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
    candidate: {
      client: () => [
        new UserContextPlugin({ keys: KeyRing.fromJSON(keys.edge), audit, ...candidateOptions }),
      ],
      worker: () => [
        new UserContextPlugin({ keys: KeyRing.fromJSON(keys.worker), audit, ...candidateOptions }),
      ],
    },
  };
  const workflowsPath = fileURLToPath(new URL('./workload/workflows.ts', import.meta.url));
  const connection = await Connection.connect({ address });
  const nativeConnection = await NativeConnection.connect({ address });
  const variants = (Object.keys(plugins) as Variant[]).filter(
    (v) => v !== 'null' || process.env.BENCH_NULL === '1',
  );
  const setups = await Promise.all(
    variants.map(async (variant) => {
      const taskQueue = `bench-${variant}`;
      // Each plugin adds its own workflow interceptor modules (and, for ours, preloads) at bundling time.
      const workflowBundle = await bundleWorkflowCode({
        workflowsPath,
        plugins: plugins[variant].worker() as never,
        logger: new DefaultLogger('ERROR'),
      });
      const worker = await Worker.create({
        connection: nativeConnection,
        namespace,
        taskQueue,
        workflowBundle,
        activities,
        plugins: plugins[variant].worker() as never,
      });
      const client = new Client({ connection, namespace, plugins: plugins[variant].client() as never });
      return { variant, taskQueue, worker, client };
    }),
  );
  const running = setups.map((s) => s.worker.run());

  async function batch(setup: (typeof setups)[number]): Promise<number> {
    const user = { userId: 'bench-user', workspaceId: 'ws-bench', roles: ['member'] };
    let next = 0;
    const started = performance.now();
    const lane = async () => {
      while (next < WORKFLOWS_PER_BATCH) {
        next++;
        await runAsUser(user, () =>
          setup.client.workflow.execute('threeSteps', {
            taskQueue: setup.taskQueue,
            workflowId: `b-${randomUUID()}`,
            args: ['x'],
          }),
        );
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
    return WORKFLOWS_PER_BATCH / ((performance.now() - started) / 1000);
  }

  // Warm-up: bundles, caches, JIT, server.
  for (const s of setups) await batch(s);
  const samples: Record<Variant, number[]> = { baseline: [], peer: [], candidate: [], null: [] };
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? setups : [...setups].reverse();
    for (const s of order) {
      const rate = await batch(s);
      samples[s.variant].push(rate);
      process.stdout.write(
        `round ${round + 1}/${ROUNDS} ${s.variant.padEnd(9)} ${rate.toFixed(1)} workflows/s\n`,
      );
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const result = {
    baseline: median(samples.baseline),
    peer: median(samples.peer),
    candidate: median(samples.candidate),
    ratio: median(samples.candidate) / median(samples.baseline),
    peerRatio: median(samples.peer) / median(samples.baseline),
    unit: 'workflows/s (median of rounds)',
    workload: {
      workflowsPerBatch: WORKFLOWS_PER_BATCH,
      activitiesPerWorkflow: 3,
      inFlight: IN_FLIGHT,
      rounds: ROUNDS,
    },
    samples,
    node: process.version,
    date: new Date().toISOString(),
  };
  process.stdout.write(
    `\nbaseline ${result.baseline.toFixed(1)}  peer (OpenTelemetry) ${result.peer.toFixed(1)}  candidate (user context) ${result.candidate.toFixed(1)} workflows/s\n` +
      `ratio candidate/baseline = ${result.ratio.toFixed(3)} (target >= 0.97); peer/baseline = ${result.peerRatio.toFixed(3)}\n`,
  );
  const out = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(out, { recursive: true });
  writeFileSync(`${out}propagation.json`, `${JSON.stringify(result, null, 2)}\n`);
  for (const s of setups) s.worker.shutdown();
  await Promise.all(running);
  await connection.close();
  await nativeConnection.close();
  await env.teardown();
}

await main();
