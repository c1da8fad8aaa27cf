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
import { startTemporal } from '../../../../test-support/temporal.js';
import { makeCodec } from './codec-helpers.js';

const codec = makeCodec();
let env: TestWorkflowEnvironment;

beforeAll(async () => {
  env = await startTemporal();
}, 120_000);
afterAll(async () => {
  await env?.teardown();
});

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
      // Raw history: every payload is encrypted and bound to this workflow id.
      const history = JSON.stringify(await handle.fetchHistory());
      expect(history).not.toContain('signalled');
      expect(history).not.toContain('SIGNALLED');
      return out;
    });
    expect(result).toBe(`${workflowId.toUpperCase()}!|SIGNALLED!|child(${workflowId})`);
  });
});
