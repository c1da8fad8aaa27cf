import { vi } from 'vitest';
import { defaultAuditor } from 'temporal-user-context';

// Scopes that tests open outside a plugin worker, without an auditor of their own, record to the
// process's default auditor (pino on stdout): hundreds of lines that would bury vitest's report. Each
// test file's default auditor records nothing instead; `scope.test.ts` checks what reaches it.
vi.spyOn(defaultAuditor(), 'emit').mockImplementation(() => undefined);
