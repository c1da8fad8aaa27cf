// The default pino sink holds at most a bounded number of bytes while its log does not drain: past
// them lines are dropped and counted, and the count is told once the log takes lines again.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { AuditEvent } from 'temporal-user-context';
import { boundedLinesTo } from '../../src/audit/sinks.js';
import { floodEvent } from '../fixtures/audit-flood.js';

describe('the default log sink', () => {
  it('drops lines past its buffer while the log stalls, and then says how many', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'tuc-log-')), 'log.ndjson');
    // A reader that takes nothing until told to: the pipe fills, then the sink's buffer.
    const reader = spawn(
      process.execPath,
      [
        '-e',
        `process.stdin.pause(); process.on('message', () => { process.stdin.pipe(require('fs').createWriteStream(${JSON.stringify(out)})); process.stdin.on('end', () => process.exit(0)); });`,
      ],
      { stdio: ['pipe', 'ignore', 'inherit', 'ipc'] },
    );
    try {
      const fd = (reader.stdin as unknown as { _handle: { fd: number } })._handle.fd;
      const sink = boundedLinesTo(fd, 100_000);
      const sent = 3000; // ~1 MB of lines: a pipe's 64 KiB and the 100 kB buffer, the rest dropped
      for (let i = 0; i < sent; i++) sink.emit(floodEvent(i));
      reader.send('read');
      // Once lines flow again, the next one is preceded by the count of those dropped.
      const lines = await waitForLog(async () => {
        const text = readFileSync(out, 'utf8');
        const written = text.split('\n').filter(Boolean);
        expect(written.length).toBeGreaterThan(200);
        return written;
      }, out);
      await new Promise((r) => setTimeout(r, 200));
      sink.emit(floodEvent(sent));
      const all = await waitForLog(async () => {
        const written = readFileSync(out, 'utf8').split('\n').filter(Boolean);
        expect(written.at(-1)).toContain(`request ${sent} `);
        return written.map((line) => JSON.parse(line) as { auditDropped?: number; audit?: AuditEvent });
      }, out);
      expect(lines.length).toBeLessThan(sent);
      // The line before the last is a notice. A notice shorter than the lines may fit where they did
      // not, so there can be several: every line sent is either in the log or in one count.
      expect(all.at(-2)!.auditDropped).toBeGreaterThan(0);
      const kept = all.filter((line) => line.audit).length;
      const counted = all.reduce((sum, line) => sum + (line.auditDropped ?? 0), 0);
      expect(kept + counted).toBe(sent + 1);
    } finally {
      reader.kill();
    }
  });
});

/**
 * Starts the stalled-log child with `sent` lines and a buffer of `maxBufferedBytes`; `closed` gives its
 * exit code once its output has all been read.
 */
function stalledLogChild(
  sent: number,
  maxBufferedBytes: number,
  stdout: 'pipe' | number = 'pipe',
  late = 0,
  through: 'sink' | 'logger' = 'sink',
) {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      fileURLToPath(new URL('../fixtures/stalled-log-child.ts', import.meta.url)),
      String(sent),
      String(maxBufferedBytes),
      String(late),
      through,
    ],
    { stdio: ['ignore', stdout, 'pipe', 'ipc'] },
  );
  // Killed however the test ends, also when it times out waiting for the child.
  onTestFinished(() => {
    child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const emitted = new Promise<void>((resolve) => child.once('message', () => resolve()));
  return { child, closed, emitted, stderr: () => stderr };
}

describe('the default log sink as the process exits', () => {
  it('writes what it holds, whole, and the count still untold once stdout takes them', async () => {
    // stdout is a FIFO that nothing reads until the exit has begun (a pipe to this process would be
    // read ahead by its stream): it fills at once, and the write that filled it was written in part,
    // its rest waiting to be retried as the exit begins.
    const fifo = join(mkdtempSync(join(tmpdir(), 'tuc-fifo-')), 'stdout');
    execFileSync('mkfifo', [fifo]);
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(fifo, constants.O_WRONLY);
    const sent = 8000;
    // A buffer larger than the pipe, small enough to be written well within the exit's 2 s.
    const { child, closed, emitted } = stalledLogChild(sent, 300_000, writer);
    closeSync(writer);
    await emitted;
    await new Promise((r) => setTimeout(r, 300));
    child.send('exit');
    await new Promise((r) => setTimeout(r, 300));
    // Read until every writer is gone (the child exited): the exit's flush takes its turn meanwhile.
    const chunks: Buffer[] = [];
    const chunk = Buffer.alloc(65536);
    for (;;) {
      let n: number;
      try {
        n = readSync(reader, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
        await new Promise((r) => setTimeout(r, 5));
        continue;
      }
      if (n === 0) break;
      chunks.push(Buffer.from(chunk.subarray(0, n)));
    }
    closeSync(reader);
    expect(await closed).toBe(0);
    // Every line whole: a write waiting at exit was lost, or cut in two, before the reviews' mends.
    const lines = Buffer.concat(chunks)
      .toString()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { auditDropped?: number; audit?: AuditEvent });
    const kept = lines.filter((line) => line.audit).length;
    const counted = lines.reduce((sum, line) => sum + (line.auditDropped ?? 0), 0);
    expect(kept).toBeLessThan(sent);
    expect(lines.some((line) => (line.auditDropped ?? 0) > 0)).toBe(true);
    expect(kept + counted).toBe(sent);
  });

  it.each(['sink', 'logger'] as const)(
    'writes the lines an exit listener emits after its flush (%s)',
    async (through) => {
      const { child, closed, emitted } = stalledLogChild(10, 1_000_000, 'pipe', 5, through);
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
      await emitted;
      child.send('exit');
      expect(await closed).toBe(0);
      const requests = out
        .split('\n')
        .filter(Boolean)
        .map((line) => Number((JSON.parse(line) as { audit: AuditEvent }).audit.detail?.split(' ')[1]));
      // Every line once (the listener's were lost before). In order but for a write the thread pool had
      // under way as the exit began, which lands when it finishes.
      expect(requests.sort((a, b) => a - b)).toEqual(Array.from({ length: 15 }, (_, i) => i));
    },
  );

  it('exits when stdout never takes them, and says on stderr what it could not write', async () => {
    // A buffer larger than the pipe and what a paused reader still takes in: most of it stays held.
    const { child, closed, emitted, stderr } = stalledLogChild(8000, 1_000_000);
    child.stdout!.pause();
    await emitted;
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.send('exit');
    // Before, pino retried the write for ever and the process never exited.
    expect(await exited).toBe(0);
    expect(stderr()).toMatch(
      /the audit log did not take its lines within 2000 ms of exit: lines still buffered were not written; [1-9]\d* lines dropped before/,
    );
    child.stdout!.destroy();
    await closed;
  });
});

describe('the default log sink on a stdout that refuses writes (a full disk)', () => {
  it('neither crashes the process nor hangs its exit, and says on stderr why', async () => {
    // Found by review: the failed write's error, re-emitted by pino, was an uncaught exception, and
    // sonic-boom's exit flush retried any error but EAGAIN for ever.
    const full = openSync('/dev/full', 'w');
    const { child, closed, emitted, stderr } = stalledLogChild(200, 1_000_000, full);
    closeSync(full);
    await emitted;
    // The first write fails on the thread pool meanwhile (the child's listener keeps it alive).
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.send('exit');
    expect(await closed).toBe(0);
    expect(stderr()).toMatch(
      /the audit log was refused at exit \(ENOSPC\): lines still buffered were not written/,
    );
    expect(stderr()).not.toMatch(/uncaught|ENOSPC: no space left on device, write\n\s+at/i);
  }, 20_000);
});

describe('the default log sink once the reader closes stdout', () => {
  it('counts the lines it can no longer write, and says on stderr how many at exit', async () => {
    // Found by review: pino's own EPIPE handler made the destination's write and flush do nothing, so
    // every later line was lost untold, and the exit said nothing.
    const { child, closed, emitted, stderr } = stalledLogChild(8000, 64 * 1024 * 1024, 'pipe', 50);
    child.stdout!.pause();
    await emitted;
    // The reader goes away with most of the lines still held: the next write fails EPIPE.
    child.stdout!.destroy();
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.send('exit');
    expect(await closed).toBe(0);
    const told = [
      ...stderr().matchAll(/the audit log was closed by its reader \(EPIPE\):.* (\d+) lines dropped before/g),
    ];
    expect(told.length, stderr()).toBeGreaterThan(0);
    // The last count includes the lines the exit listener emitted after the pipe closed.
    expect(Number(told.at(-1)![1])).toBeGreaterThanOrEqual(50);
  }, 20_000);
});

/** Retries `fn` for up to 10 s, naming the log file in the failure. */
async function waitForLog<T>(fn: () => Promise<T>, what: string): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: ${String(err)}`, { cause: err });
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
