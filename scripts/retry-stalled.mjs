#!/usr/bin/env node
// After a failed `npm test` in CI: when the stall watchdog (test-support/stall-watchdog.ts) ended test
// files that had hung, and nothing else failed, runs those files once more and exits with their result.
// Anything else (a test that failed, a type or lint error, no report) exits 1 at once: only a hang,
// which says nothing about the test's own verdict, gets a second run, and it is printed loudly.
//
//   node scripts/retry-stalled.mjs <report.json>
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

const path = process.argv[2];
if (!path || !existsSync(path)) {
  console.error('== npm test failed, and not by a stall: no second run.');
  process.exit(1);
}
const report = JSON.parse(readFileSync(path, 'utf8'));
const stalled = new Set(report.stalled);
const otherFailures = report.failed.filter((file) => !stalled.has(file));
console.error(`\n== STALLED TEST FILES (the watchdog ended them):\n${report.diagnostics}\n`);
if (otherFailures.length > 0) {
  console.error(
    `== other files failed too: no second run.\n${otherFailures.map((f) => `  ${f}`).join('\n')}`,
  );
  process.exit(1);
}
console.error(`== running the stalled files once more:\n${report.stalled.map((f) => `  ${f}`).join('\n')}`);
const env = { ...process.env };
// The second run gets no third.
delete env.TEST_STALL_REPORT;
const run = spawnSync('npx', ['vitest', 'run', ...report.stalled], { stdio: 'inherit', env });
console.error(
  `\n== the first run stalled (above: the files, tests and processes); the second run of those files ${
    run.status === 0 ? 'passed' : 'failed'
  }.`,
);
process.exit(run.status ?? 1);
