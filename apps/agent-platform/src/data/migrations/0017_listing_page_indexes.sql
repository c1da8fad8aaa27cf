-- Up Migration
-- The API's listings come a page at a time, newest first, by (created_at, id) (keyset paging): each
-- page reads its rows from one of these in order, backwards, and stops at the page's end. Without the
-- id, and without the agent's created_at for the runs of one agent, every page read and sorted all of
-- the agent's or workspace's rows (a review counted a walk of one agent's runs as quadratic).
-- The indexes they extend stay: dropping them here would take locks that readers queue behind and
-- that a run start deadlocks with (found by review, on a live database). Building one blocks writes to
-- its table until the migration commits: a waiting lock gives up after 10 s instead of holding the
-- API's writes behind it (run the migration again). On a large database, build them first with
-- `create index concurrently` under the same names (check `pg_index.indisvalid`): they are then kept.
set local lock_timeout = '10s';
-- One built beforehand that is not valid (a concurrent build that failed) would be kept as it is, and
-- never read: refused, to be dropped and built again (found by review).
do $$
begin
  if exists (
    select 1 from pg_index
     where indexrelid in (to_regclass('agents_page_idx'), to_regclass('agent_runs_page_idx'),
                          to_regclass('agent_runs_agent_page_idx'))
       and not indisvalid
  ) then
    raise exception 'migration 0017: an index built beforehand is not valid: drop it and build it again';
  end if;
end
$$;
create index if not exists agents_page_idx on agents (workspace_id, created_at, id);
create index if not exists agent_runs_page_idx on agent_runs (workspace_id, created_at, id);
create index if not exists agent_runs_agent_page_idx on agent_runs (workspace_id, agent_id, created_at, id);
-- The migrations after this one, in the same transaction, run with the connection's own limit.
set local lock_timeout to default;

-- Down Migration
drop index if exists agent_runs_agent_page_idx;
drop index if exists agent_runs_page_idx;
drop index if exists agents_page_idx;
