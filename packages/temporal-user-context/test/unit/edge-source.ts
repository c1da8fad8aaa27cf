import { Auditor, memoryAuditSink, type KeyRing } from '../../src/index.js';
import { ContextSource } from '../../src/client/source.js';

/** An edge's context source on `ring`, without mirrors, auditing into memory. */
export function edgeSource(ring: KeyRing, options: { bindStartArguments?: boolean } = {}) {
  const audit = memoryAuditSink();
  const source = new ContextSource({
    ring,
    namespace: 'default',
    auditor: new Auditor([audit]),
    mirror: { memo: 'off', searchAttributes: 'off' },
    ...options,
  });
  return { source, audit };
}
