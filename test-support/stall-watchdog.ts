// A reporter that turns a hung test run into a short, explained failure.
//
// vitest's timeouts run inside the test process: a test that blocks its event loop, or a test process
// that never exits after its file, outlives them, and the run then waits until CI kills it (90 minutes,
// with nothing said about what hung). This reporter runs in vitest's own process. When no test has
// started or finished for `TEST_STALL_MINUTES` (default 6; the slowest test here takes ~20 s, the
// longest hook timeout is 2 minutes), it prints the files and tests still running and the test
// processes (state and CPU time: busy or waiting), ends those processes so that vitest reports their
// files as failed, and ends the run if vitest does not finish within a minute after that, or does not
// exit within 3 minutes of its summary.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import type { Reporter, TestCase, TestModule } from 'vitest/node';

const MINUTE = 60_000;
/** The global teardown stops a dev server and a PostgreSQL: seconds, normally. */
const AFTER_RUN_MINUTES = 3;

export default class StallWatchdog implements Reporter {
  private readonly stallMs = Number(process.env.TEST_STALL_MINUTES ?? 6) * MINUTE;
  private readonly modules = new Map<string, number>();
  private readonly tests = new Map<string, { name: string; since: number }>();
  private lastProgress = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private fired = false;
  /** Files ended by the watchdog, and files that failed on their own. */
  private readonly stalled = new Set<string>();
  private readonly failed = new Set<string>();
  private diagnostics = '';

  onInit(): void {
    this.timer = setInterval(() => this.check(), Math.min(30_000, this.stallMs / 4));
    // Never what keeps vitest alive.
    this.timer.unref();
  }

  onTestModuleStart(module: TestModule): void {
    this.modules.set(module.moduleId, Date.now());
    this.progress();
  }

  onTestModuleEnd(module: TestModule): void {
    this.modules.delete(module.moduleId);
    if (module.state() === 'failed') this.failed.add(module.moduleId);
    this.progress();
  }

  onTestCaseReady(test: TestCase): void {
    this.tests.set(test.id, { name: `${test.module.moduleId} > ${test.fullName}`, since: Date.now() });
    this.progress();
  }

  onTestCaseResult(test: TestCase): void {
    this.tests.delete(test.id);
    this.progress();
  }

  onTestRunEnd(modules: readonly TestModule[]): void {
    clearInterval(this.timer);
    for (const module of modules) if (module.state() === 'failed') this.failed.add(module.moduleId);
    this.writeReport();
    // What runs after the summary (global teardown, open handles) must not hold the run either.
    setTimeout(() => {
      process.stderr.write(
        `[stall-watchdog] vitest has not exited ${AFTER_RUN_MINUTES} minutes after the run ended ` +
          '(global teardown, or a handle left open): exiting.\n' +
          descendants()
            .map((p) => `  ${p}\n`)
            .join(''),
      );
      this.writeReport();
      process.exit(1);
    }, AFTER_RUN_MINUTES * MINUTE).unref();
  }

  /**
   * With `TEST_STALL_REPORT` set, a run the watchdog stepped into leaves what it found there as JSON
   * (`stalled` and `failed` file paths, `diagnostics`): `.ci/run` runs stalled files once more when they
   * are all that failed.
   */
  private writeReport(): void {
    const path = process.env.TEST_STALL_REPORT;
    if (!path || this.stalled.size === 0) return;
    const report = { stalled: [...this.stalled], failed: [...this.failed], diagnostics: this.diagnostics };
    writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
  }

  private progress(): void {
    this.lastProgress = Date.now();
  }

  private check(): void {
    if (this.fired || this.modules.size === 0 || Date.now() - this.lastProgress < this.stallMs) return;
    this.fired = true;
    const now = Date.now();
    const ago = (since: number) => `${Math.round((now - since) / 1000)} s`;
    const lines = [
      `\n[stall-watchdog] no test started or finished for ${ago(this.lastProgress)}.`,
      'Files still running:',
      ...[...this.modules].map(([id, since]) => `  ${id} (for ${ago(since)})`),
      'Tests still running (none: a hook, or a test process that did not exit):',
      ...[...this.tests.values()].map((t) => `  ${t.name} (for ${ago(t.since)})`),
      'Test processes (STAT R: busy, S: waiting; TIME: CPU used):',
      ...descendants().map((p) => `  ${p}`),
    ];
    this.diagnostics = lines.join('\n');
    for (const id of this.modules.keys()) this.stalled.add(id);
    process.stderr.write(`${this.diagnostics}\n`);
    // Ending the test processes makes vitest fail their files and finish the run with its summary.
    for (const pid of forkPids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    setTimeout(() => {
      process.stderr.write(
        '[stall-watchdog] vitest did not finish after its test processes ended: exiting.\n',
      );
      this.writeReport();
      process.exit(1);
    }, MINUTE).unref();
  }
}

/** `ps` lines of this process's descendants (pid, state, elapsed, CPU time, command). */
function descendants(): string[] {
  try {
    const rows = execFileSync('ps', ['-eo', 'pid=,ppid=,stat=,etime=,time=,args='], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [pid, ppid] = line.trim().split(/\s+/, 2).map(Number);
        return { pid: pid!, ppid: ppid!, line: line.trim().slice(0, 240) };
      });
    const ours = new Set([process.pid]);
    // Parents come before children in ps output only usually: repeat until nothing is added.
    for (let added = true; added;) {
      added = false;
      for (const row of rows)
        if (ours.has(row.ppid) && !ours.has(row.pid)) {
          ours.add(row.pid);
          added = true;
        }
    }
    return rows
      .filter((r) => r.pid !== process.pid && ours.has(r.pid) && !r.line.includes('ps -eo'))
      .map((r) => r.line);
  } catch (error) {
    return [`(ps failed: ${String(error)})`];
  }
}

/** The pids of vitest's test processes: direct children running its forks pool entry. */
function forkPids(): number[] {
  return descendants()
    .map((line) => line.split(/\s+/))
    .filter(([, ppid, , , , ...args]) => Number(ppid) === process.pid && args.join(' ').includes('vitest'))
    .map(([pid]) => Number(pid));
}
