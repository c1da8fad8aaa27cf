// Runs in each test process before its file: notes which file this process runs, for the stall
// watchdog (stall-watchdog.ts), which can then name the file of a test process that never finished.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

const dir = process.env.TEST_FORK_FILES;
if (dir) writeFileSync(join(dir, String(process.pid)), expect.getState().testPath ?? '');
