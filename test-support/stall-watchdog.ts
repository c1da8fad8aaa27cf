// A reporter that turns a hung test run into a short, explained failure.
//
// vitest's timeouts run inside the test process: a test that blocks its event loop, or a test process
// that never finishes its file, outlives them, and the run then waits until CI kills it (90 minutes,
// with nothing said about what hung); so does a test process that ends its file's tests but never
// reports the file finished (vitest ends a test process only after that report, and prints its summary
// only when every one has reported). This reporter runs in vitest's own process. When nothing has
// happened in any test file (no file, suite, hook or test started or ended) for `TEST_STALL_MINUTES`
// (default 6; the slowest test here takes ~20 s, the longest hook may take 5 minutes), it prints the
// files and tests still running and the test processes (state and CPU time: busy or waiting), and ends
// those processes with everything they started: vitest then goes on with the files still queued. If
// nothing happens in the minute after that, or vitest has not exited 3 minutes after its summary, it
// ends the run.
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SerializedError } from 'vitest';
import type { Reporter, TestCase, TestModule, TestSpecification, Vitest } from 'vitest/node';

const MINUTE = 60_000;
/** After its summary vitest stops the dev server of the global setup: seconds, normally. */
const AFTER_RUN_MINUTES = 3;
/** How vitest reports the end of a test process that it did not stop itself. */
const KILLED = /Worker exited unexpectedly|Worker forks emitted error/;
/** The command of vitest's test processes (pool `forks`). */
const FORK_ENTRY = '/vitest/dist/workers/forks.js';

export default class StallWatchdog implements Reporter {
  private readonly stallMs = stallMinutes() * MINUTE;
  private readonly running = new Map<string, number>();
  private readonly tests = new Map<string, { name: string; since: number }>();
  private readonly files = new Set<string>();
  private readonly ended = new Set<string>();
  /** Files the watchdog ended; files with a failed test or that failed as a whole. */
  private readonly stalled = new Set<string>();
  private readonly failed = new Set<string>();
  private diagnostics = '';
  private lastProgress = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private exitTimer: NodeJS.Timeout | undefined;
  private active = false;
  /** Watch mode: runs come and go in one process; the watchdog stays out of it. */
  private watch = false;
  /** Where each test process notes its file (test-support/fork-file.ts): `<pid>` holds the path. */
  private forkFiles = '';

  onInit(vitest: Vitest): void {
    this.watch = vitest.config.watch;
    if (this.watch) return;
    this.forkFiles = mkdtempSync(join(tmpdir(), 'vitest-forks-'));
    // Test processes inherit vitest's environment when they start, after this.
    process.env.TEST_FORK_FILES = this.forkFiles;
    this.timer = setInterval(() => this.check(), Math.min(30_000, this.stallMs / 4));
    // Never what keeps vitest alive.
    this.timer.unref();
  }

  onTestRunStart(specifications: readonly TestSpecification[]): void {
    for (const spec of specifications) this.files.add(spec.moduleId);
    this.active = true;
    this.progress();
  }

  // A file counts as running from the moment a test process starts loading it: a file that hangs
  // while it is imported is caught too.
  onTestModuleQueued(module: TestModule): void {
    this.running.set(module.moduleId, Date.now());
    this.progress();
  }

  onTestModuleEnd(module: TestModule): void {
    this.running.delete(module.moduleId);
    this.ended.add(module.moduleId);
    if (module.state() === 'failed') this.failed.add(module.moduleId);
    this.progress();
  }

  onTestCaseReady(test: TestCase): void {
    this.tests.set(test.id, { name: `${test.module.moduleId} > ${test.fullName}`, since: Date.now() });
    this.progress();
  }

  onTestCaseResult(test: TestCase): void {
    this.tests.delete(test.id);
    if (test.result().state === 'failed') this.failed.add(test.module.moduleId);
    this.progress();
  }

  // Long hooks (a dev server of a test's own, a browser) are progress too.
  onTestModuleStart = this.progress;
  onTestModuleCollected = this.progress;
  onTestSuiteReady = this.progress;
  onTestSuiteResult = this.progress;
  onHookStart = this.progress;
  onHookEnd = this.progress;

  onTestRunEnd(modules: readonly TestModule[], unhandledErrors: readonly SerializedError[]): void {
    if (this.watch) return;
    this.active = false;
    clearInterval(this.timer);
    clearTimeout(this.exitTimer);
    rmSync(this.forkFiles, { recursive: true, force: true });
    if (this.stalled.size > 0) {
      for (const module of modules) {
        const state = module.state();
        if (state === 'failed') this.failed.add(module.moduleId);
        // Ended by the watchdog, or never run because of it: the second run takes them.
        if (state !== 'passed' && state !== 'skipped' && state !== 'failed')
          this.stalled.add(module.moduleId);
      }
      const otherErrors = unhandledErrors.filter((e) => !KILLED.test(`${e.message} ${e.stack ?? ''}`));
      this.writeReport(otherErrors.map((e) => e.message));
    }
    // What runs after the summary (global teardown, open handles) must not hold the run either.
    setTimeout(() => {
      process.stderr.write(
        `[stall-watchdog] vitest has not exited ${AFTER_RUN_MINUTES} minutes after the run ended ` +
          `(global teardown, or a handle left open): exiting.\n${processLines(descendants(process.pid))}\n`,
      );
      process.exit(1);
    }, AFTER_RUN_MINUTES * MINUTE).unref();
  }

  private progress(): void {
    this.lastProgress = Date.now();
    clearTimeout(this.exitTimer);
    this.exitTimer = undefined;
  }

  private check(): void {
    const now = Date.now();
    // Not only while files run: a test process that finished its file's tests but never reported the
    // file finished holds vitest (and its summary) just as well.
    if (this.exitTimer || !this.active || now - this.lastProgress < this.stallMs) return;
    const ago = (since: number) => `${Math.round((now - since) / 1000)} s`;
    const processes = descendants(process.pid);
    const forks = processes.filter((p) => p.ppid === process.pid && p.cmd.includes(FORK_ENTRY));
    const files = new Map(forks.map((fork) => [fork.pid, this.fileOf(fork.pid)]));
    this.diagnostics += [
      ...(this.diagnostics ? [''] : []),
      `[stall-watchdog] nothing happened in any test file for ${ago(this.lastProgress)}.`,
      'Files still running:',
      ...[...this.running].map(([id, since]) => `  ${id} (for ${ago(since)})`),
      'Tests still running (none: a hook, a test blocking its process before vitest heard of it, or a file',
      'that is being loaded):',
      ...[...this.tests.values()].map((t) => `  ${t.name} (for ${ago(t.since)})`),
      'Test processes (state R: busy, S: waiting; CPU seconds used):',
      processLines(processes),
      'Their files:',
      ...[...files].map(([pid, file]) => `  ${pid}: ${file || '(none yet)'}`),
    ].join('\n');
    process.stderr.write(`\n${this.diagnostics}\n`);
    for (const id of this.running.keys()) this.stalled.add(id);
    // A file whose tests all ended in a process that then never finished: run again too.
    for (const file of files.values()) if (file) this.stalled.add(file);
    this.running.clear();
    this.tests.clear();
    // vitest's test processes and all they started (a browser, a dev server, an app), children first.
    const doomed = forks.flatMap((fork) => [...descendants(fork.pid, processes).reverse(), fork]);
    for (const p of doomed) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    this.exitTimer = setTimeout(() => {
      process.stderr.write('[stall-watchdog] nothing happened in the minute after that: exiting.\n');
      for (const id of this.files) if (!this.ended.has(id)) this.stalled.add(id);
      this.writeReport([]);
      process.exit(1);
    }, MINUTE);
    this.exitTimer.unref();
  }

  /** The file test process `pid` runs or ran last ('' before it loaded one). */
  private fileOf(pid: number): string {
    try {
      return readFileSync(join(this.forkFiles, String(pid)), 'utf8');
    } catch {
      return '';
    }
  }

  /**
   * With `TEST_STALL_REPORT` set, a run the watchdog stepped into leaves what it found there as JSON:
   * `stalled` (files it ended or that did not run because of it), `failed` (files with a failed test),
   * `otherErrors` (errors vitest caught outside any test, but the ends it caused) and `diagnostics`.
   * `.ci/run` runs the stalled files once more only when nothing else failed.
   */
  private writeReport(otherErrors: string[]): void {
    const path = process.env.TEST_STALL_REPORT;
    if (!path) return;
    const report = {
      stalled: [...this.stalled],
      failed: [...this.failed],
      otherErrors,
      diagnostics: this.diagnostics,
    };
    writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
  }
}

function stallMinutes(): number {
  const raw = process.env.TEST_STALL_MINUTES;
  if (raw === undefined) return 6;
  const minutes = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(minutes) || minutes <= 0)
    throw new Error(`TEST_STALL_MINUTES must be a number of minutes above 0, not ${JSON.stringify(raw)}`);
  return minutes;
}

interface Proc {
  pid: number;
  ppid: number;
  /** R running, S sleeping, D waiting on I/O, Z zombie... */
  state: string;
  cpuSeconds: number;
  cmd: string;
}

/** Every process, from /proc (Linux; none elsewhere). */
function allProcesses(): Proc[] {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return [];
  }
  const procs: Proc[] = [];
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // The command name may hold spaces and parentheses: the fields start after its last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
      procs.push({
        pid: Number(pid),
        ppid: Number(fields[1]),
        state: fields[0] ?? '?',
        // utime + stime, in clock ticks of 1/100 s on Linux.
        cpuSeconds: (Number(fields[11]) + Number(fields[12])) / 100,
        cmd,
      });
    } catch {
      // Gone meanwhile.
    }
  }
  return procs;
}

/** The descendants of `root`, parents before children. */
function descendants(root: number, procs: Proc[] = allProcesses()): Proc[] {
  const found: Proc[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const parent = queue.shift();
    for (const p of procs)
      if (p.ppid === parent) {
        found.push(p);
        queue.push(p.pid);
      }
  }
  return found;
}

function processLines(procs: Proc[]): string {
  if (procs.length === 0) return '  (none found)';
  return procs
    .map(
      (p) => `  ${p.pid} (parent ${p.ppid}) ${p.state} ${p.cpuSeconds.toFixed(1)} s ${p.cmd.slice(0, 200)}`,
    )
    .join('\n');
}
