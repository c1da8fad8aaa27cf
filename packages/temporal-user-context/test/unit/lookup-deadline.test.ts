import { createServer } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { Client, Connection, isGrpcDeadlineError } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { describeRun } from '../../src/worker/server-lineage.js';

describe("the worker's lookups of the server's records", () => {
  it('end at their deadline when the server takes the call and never answers', async () => {
    const hole = createServer();
    hole.on('stream', () => undefined); // takes every call, answers none
    await new Promise<void>((resolve) => hole.listen(0, '127.0.0.1', resolve));
    const connection = Connection.lazy({ address: `127.0.0.1:${(hole.address() as AddressInfo).port}` });
    try {
      const client = new Client({ connection, namespace: 'default' });
      const lookup = describeRun(client, { workflowId: 'wf', runId: 'run' }, 'the run');
      const failed = await lookup.then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(isGrpcDeadlineError(failed)).toBe(true);
    } finally {
      await connection.close();
      await new Promise((resolve) => hole.close(resolve));
    }
  }, 30_000);
});
