/**
 * `npm run bench:server` (a diagnostic, not a test): what each variant of `npm run bench` asks of the
 * Temporal server per workflow, read from the dev server's own metrics — frontend requests, persistence
 * requests by operation, and the history size it records. Counts, not times: they do not drift with the
 * machine's speed, so one short run answers whether a variant makes the server do *more things* (extra
 * calls, extra reads) or the same things with more bytes.
 *
 * Variants as in bench/propagation.ts: `baseline` (bare SDK), `sa` (bare SDK, the application setting
 * the two search attributes), `nomirror`, `memo` (this plugin's default mirrors), `candidate` (both
 * mirrors). One dev server; each variant gets a worker and task queue of its own, a warm-up, then
 * BENCH_WORKFLOWS (default 100) workflows between two scrapes, and the history size in bytes that the
 * server reports for one of them. Writes bench/results/server-requests.json.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { Client } from '@temporalio/client';
import { DefaultLogger, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import {
  KeyRing,
  UserContextPlugin,
  generateKeySet,
  runAsUser,
  type MirrorOptions,
} from 'temporal-user-context';
import { freePort } from '../test-support/net.js';
import { startTemporal } from '../test-support/temporal.js';
import * as activities from './workload/activities.js';
import { SA_PAIRS } from './workload/search-attributes.js';
import { SA_CACHE_SETTING, SERVER_ARGS } from './workload/server-settings.js';

const WORKFLOWS = Number(process.env.BENCH_WORKFLOWS ?? 100);
const WARM_UP = 20;
type Variant = 'baseline' | 'sa' | 'nomirror' | 'memo' | 'candidate';
const MIRRORS: Partial<Record<Variant, MirrorOptions>> = {
  nomirror: { memo: 'off', searchAttributes: 'off' },
  memo: { memo: 'pseudonym', searchAttributes: 'off' },
  candidate: { memo: 'pseudonym', searchAttributes: 'pseudonym' },
};
/** Metric families worth counting, and the labels that only split them further (summed away). */
const FAMILIES = /^(service_requests|persistence_requests|history_size_sum|history_size_count)\{/;
const SPLIT_LABELS =
  /,?(service_name|namespace_state|taskqueue|task_type|partition|is_retry|instance)="[^"]*"/g;

Runtime.install({ logger: new DefaultLogger('ERROR') });

async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(url)).text();
  const totals = new Map<string, number>();
  for (const line of text.split('\n')) {
    // The server's own system workers (scheduler, batcher) poll on their own clock: not our workload.
    if (!FAMILIES.test(line) || line.includes('namespace="temporal_system"')) continue;
    const at = line.lastIndexOf(' ');
    const name = line.slice(0, at).replace(SPLIT_LABELS, '').replace('{,', '{');
    totals.set(name, (totals.get(name) ?? 0) + Number(line.slice(at + 1)));
  }
  return totals;
}

async function main(): Promise<void> {
  if (process.env.TEMPORAL_ADDRESS)
    throw new Error('bench:server reads a dev server of its own: unset TEMPORAL_ADDRESS');
  const metricsPort = await freePort();
  const env = await startTemporal({ extraArgs: ['--metrics-port', String(metricsPort), ...SERVER_ARGS] });
  const metrics = `http://127.0.0.1:${metricsPort}/metrics`;
  const keys = generateKeySet('bench-server');
  const audit = { emit: () => undefined };
  const workflowsPath = fileURLToPath(new URL('./workload/workflows.ts', import.meta.url));
  const user = { userId: activities.BENCH_USER, workspaceId: 'ws-bench', roles: ['member'] };
  const perWorkflow: Record<string, Record<string, number>> = {};
  try {
    for (const variant of ['baseline', 'sa', 'nomirror', 'memo', 'candidate'] as const) {
      const mirror = MIRRORS[variant];
      const plugin = (ring: KeyRing) =>
        mirror ? [new UserContextPlugin({ keys: ring, audit, mirror, codec: false })] : [];
      const workerPlugins = plugin(KeyRing.fromJSON(keys.worker));
      const taskQueue = `bench-server-${variant}`;
      const worker = await Worker.create({
        connection: env.nativeConnection,
        taskQueue,
        workflowBundle: await bundleWorkflowCode({
          workflowsPath,
          plugins: workerPlugins as never,
          logger: new DefaultLogger('ERROR'),
        }),
        activities: { step: mirror ? activities.stepAsUser : activities.step },
        plugins: workerPlugins as never,
      });
      const client = new Client({
        connection: env.connection,
        plugins: plugin(KeyRing.fromJSON(keys.edge)) as never,
      });
      const run = (n: number) =>
        Promise.all(
          Array.from({ length: n }, async () => {
            const workflowId = `b-${randomUUID()}`;
            await runAsUser(user, () =>
              client.workflow.execute('threeSteps', {
                taskQueue,
                workflowId,
                args: ['x'],
                ...(variant === 'sa' ? { typedSearchAttributes: SA_PAIRS } : {}),
              }),
            );
            return workflowId;
          }),
        );
      const settle = () => new Promise((resolve) => setTimeout(resolve, 3000)); // visibility tasks
      await worker.runUntil(async () => {
        await run(WARM_UP);
        await settle();
        const before = await scrape(metrics);
        const ids = await run(WORKFLOWS);
        await settle();
        const after = await scrape(metrics);
        const counts: Record<string, number> = {};
        for (const [name, value] of after) {
          const delta = (value - (before.get(name) ?? 0)) / WORKFLOWS;
          if (Math.abs(delta) >= 0.005) counts[name] = Math.round(delta * 100) / 100;
        }
        // The history's size in bytes as the server counts it (all workflows of a variant have the same
        // events; ids differ only in their random part).
        const described = await client.workflow.getHandle(ids.at(-1)!).describe();
        counts['history bytes (describe)'] = described.historySize ?? Number.NaN;
        counts['history events (describe)'] = described.historyLength;
        perWorkflow[variant] = counts;
      });
    }
  } finally {
    await env.teardown();
  }
  // Print only what differs between variants by at least half a request per workflow (the server's
  // background scans — timer, transfer, visibility queues — wobble by less), and the history sizes.
  const names = [...new Set(Object.values(perWorkflow).flatMap((c) => Object.keys(c)))].sort();
  const variants = Object.keys(perWorkflow);
  process.stdout.write(`per workflow: ${variants.map((v) => v.padStart(9)).join(' ')}\n`);
  for (const name of names) {
    const values = variants.map((v) => perWorkflow[v]![name] ?? 0);
    if (Math.max(...values) - Math.min(...values) >= 0.5 || name.startsWith('history')) {
      process.stdout.write(
        `${' '.repeat(14)}${values.map((x) => String(x).padStart(9)).join(' ')}  ${name}\n`,
      );
    }
  }
  writeFileSync(
    new URL('./results/server-requests.json', import.meta.url),
    `${JSON.stringify(
      {
        workflows: WORKFLOWS,
        searchAttributeCache: SA_CACHE_SETTING,
        perWorkflow,
        node: process.version,
        date: new Date().toISOString(),
      },
      null,
      2,
    )}\n`,
  );
}

await main();
