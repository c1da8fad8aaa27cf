// Migration 0017 keeps an index built beforehand (`create index concurrently`, on a large database)
// only when it is valid: an invalid one would never be read, and is refused.
import { afterEach, describe, expect, it } from 'vitest';
import { BACKENDS, openBackend, type Backend } from '../../../../test-support/db-backends.js';
import { migrate } from '../../src/data/migrate.js';

describe.each(BACKENDS)('migration 0017 on %s', (kind) => {
  let b: Backend | undefined;
  afterEach(async () => {
    await b?.close();
    b = undefined;
  });

  it('refuses an index built beforehand that is not valid, and keeps a valid one', async () => {
    b = await openBackend(kind, { prefix: 'mig17' });
    await migrate(b.admin, { count: 16 });
    await b.admin.query('create index agents_page_idx on agents (workspace_id, created_at, id)');
    await b.admin.query(
      `update pg_index set indisvalid = false where indexrelid = to_regclass('agents_page_idx')`,
    );
    await expect(migrate(b.admin)).rejects.toThrow(/an index built beforehand is not valid/);
    await b.admin.query('drop index agents_page_idx');
    await b.admin.query('create index agents_page_idx on agents (workspace_id, created_at, id)');
    const ran = await migrate(b.admin, { count: 1 });
    expect(ran.map((m) => m.name)).toEqual(['0017_listing_page_indexes']);
    const { rows } = await b.admin.query<{ name: string; valid: boolean }>(
      `select c.relname as name, i.indisvalid as valid from pg_index i join pg_class c on c.oid = i.indexrelid
        where c.relname in ('agents_page_idx', 'agent_runs_page_idx', 'agent_runs_agent_page_idx')
        order by c.relname`,
    );
    expect(rows).toEqual([
      { name: 'agent_runs_agent_page_idx', valid: true },
      { name: 'agent_runs_page_idx', valid: true },
      { name: 'agents_page_idx', valid: true },
    ]);
  });
});
