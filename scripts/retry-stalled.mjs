#!/usr/bin/env node
// After a failed `npm test` in CI: when the stall watchdog (test-support/stall-watchdog.ts) ended test
// files that had hung, and nothing else failed (no test in any file, the stalled ones included; no
// error outside a test but the ends the watchdog caused), runs those files (and any the run did not
// reach) once more and exits with their result. Anything else (a failed test, a type or lint error, no
// report) exits 1 at once: only a hang, which gave no verdict, gets a second run, printed loudly.
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
console.error(`\n== STALLED TEST FILES (the watchdog ended them):\n${report.diagnostics}\n`);
if (report.stalled.length === 0 || report.failed.length > 0 || report.otherErrors.length > 0) {
  const lines = [
    ...report.failed.map((file) => `  failed: ${file}`),
    ...report.otherErrors.map((error) => `  error: ${error}`),
  ];
  console.error(`== something else failed too: no second run.\n${lines.join('\n')}`);
  process.exit(1);
}
console.error(`== running them once more:\n${report.stalled.map((f) => `  ${f}`).join('\n')}`);
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
