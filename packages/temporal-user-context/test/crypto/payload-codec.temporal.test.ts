/**
 * The codec inside a real worker and client (dev server): workflow input, continue-as-new, signal,
 * query, memo, activity and local activity arguments and results, child workflow input and result.
 * Every one of them must round-trip under the workflow binding, and history must hold only ciphertext.
 */
import { fileURLToPath } from 'node:url';
import { Client } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRetrying, startTemporal } from '../../../../test-support/temporal.js';
import { makeCodec } from './codec-helpers.js';

const codec = makeCodec();
let env: TestWorkflowEnvironment;

beforeAll(async () => {
  env = await startRetrying(() => startTemporal());
}, 120_000);
afterAll(async () => {
  await env?.teardown();
});

type RawPayload = { metadata?: Record<string, Uint8Array> | null; data?: Uint8Array | null };

/** Every payload anywhere in a history: objects with `metadata` and bytes `data`. */
function payloadsIn(value: unknown, found: RawPayload[] = []): RawPayload[] {
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) return found;
  const candidate = value as RawPayload;
  if (candidate.metadata && candidate.data instanceof Uint8Array) found.push(candidate);
  else
    for (const [key, child] of Object.entries(value)) {
      // A local activity's marker: `details.data` is the SDK core's own record of the call (sequence
      // number, attempt, times), written in clear by every SDK; its `result` is the activity's payload.
      if (key === 'details' && 'markerName' in value) {
        const { data: _core, ...rest } = child as Record<string, unknown>;
        payloadsIn(rest, found);
      } else payloadsIn(child, found);
    }
  return found;
}

describe('AesGcmPayloadCodec with a real worker', () => {
  it('round-trips every payload path and stores only ciphertext', async () => {
    const taskQueue = `codec-${Date.now()}`;
    const worker = await Worker.create({
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      taskQueue,
      workflowsPath: fileURLToPath(new URL('./fixtures/codec-workflows.ts', import.meta.url)),
      activities: { shout: async (s: string) => `${s.toUpperCase()}!` },
      dataConverter: { payloadCodecs: [codec] },
    });
    const client = new Client({
      connection: env.connection,
      namespace: env.namespace ?? 'default',
      dataConverter: { payloadCodecs: [codec] },
    });
    const workflowId = `codec-it-${Date.now()}`;
    const result = await worker.runUntil(async () => {
      const handle = await client.workflow.start('parent', { taskQueue, workflowId, args: [workflowId] });
      await handle.signal('add', 'signalled');
      expect(await handle.query('items')).toEqual(['signalled']);
      const out = await handle.result();
      const desc = await handle.describe();
      expect(await desc.memo).toEqual({ note: `memo-${workflowId}` });
      // Raw history of both runs and of the child: every payload is encrypted, and no payload's bytes
      // hold the signal's value in clear (JSON.stringify of history would show bytes as base64).
      const runs = [
        client.workflow.getHandle(workflowId, handle.firstExecutionRunId),
        client.workflow.getHandle(workflowId, desc.runId),
        client.workflow.getHandle(`${workflowId}-child`),
      ];
      expect(desc.runId).not.toBe(handle.firstExecutionRunId);
      const payloads = (await Promise.all(runs.map(async (r) => payloadsIn(await r.fetchHistory())))).flat();
      // Input of each run, the signal, the CAN's arguments, the memo, two activities' input and result,
      // the child's input and result, each run's result.
      expect(payloads.length).toBeGreaterThanOrEqual(12);
      for (const payload of payloads) {
        expect(new TextDecoder().decode(payload.metadata?.encoding ?? undefined)).toBe('binary/encrypted');
        const bytes = Buffer.from(payload.data ?? new Uint8Array()).toString('latin1');
        expect(bytes).not.toMatch(/signalled/i);
        expect(bytes).not.toContain(workflowId);
      }
      return out;
    });
    expect(result).toBe(`${workflowId.toUpperCase()}!|SIGNALLED!|child(${workflowId})`);
  });
});
