-- Up Migration
-- Two findings of a review that ran SQL as the application's role inside a scope
-- (docs/data-isolation.md, "What SQL inside a scope can still do"):
--
-- 1. A seal names its transaction id, which is unique in a running cluster, but a cluster restored from
--    a copy (a dump, a base backup) hands the same ids out again, under the same key: a seal read in a
--    victim's scope before the restore opened the victim's scope after it (and so did a crash restart
--    before the transaction wrote). The library's sealed scope (re-installed below; idempotent) now also
--    seals the transaction's start time, to the microsecond. Scopes entered while this migration
--    commits may be refused once (their seal was made the old way): they are retried.
--
-- 2. The two indexes that do not lead with workspace_id let `explain analyze` count other workspaces'
--    rows ("Rows Removed by Filter": row-level security is a filter there, not an index condition): a
--    member enumerated every user id on the platform and how many workspaces each belongs to. Every
--    query runs in a scope, whose workspace the composite keys lead with: (workspace_id, user_id) serves
--    the memberships, and (workspace_id, workflow_id) the run records. Dropping an index blocks its table
--    until the migration commits: a waiting lock gives up after 10 s (run the migration again), or drop
--    them first with `drop index concurrently`.

{{scope_seal}}

set local lock_timeout = '10s';
drop index if exists memberships_user_idx;
drop index if exists agent_runs_workflow_idx;
set local lock_timeout to default;

-- Down Migration
-- (The seal's functions stay as they are: the earlier ones sealed less, and are no safer to return to.)
create index if not exists agent_runs_workflow_idx on agent_runs (workflow_id);
create index if not exists memberships_user_idx on memberships (user_id);
