-- Up Migration
-- One run record per workflow: ensureRunRecord creates a scheduled run's record with
-- INSERT ... ON CONFLICT against this constraint, so an activity attempt that timed out but still
-- committed and its retry can no longer write two. Per workspace, like every other key here: a
-- workflow id another workspace used must not block (or reveal) anything.
--
-- Duplicates written before the constraint are deleted first, keeping per workflow the row its
-- workflow wrote to (a status other than `pending`; the most recently updated if several), else the
-- newest. The others are records no workflow ever updated. RLS is forced on agent_runs, so the owner
-- running this migration would see no rows at all: it is lifted for the delete, inside this
-- migration's transaction, and forced again before it commits.

alter table agent_runs no force row level security;
delete from agent_runs r
 using (
   select id, row_number() over (
            partition by workspace_id, workflow_id
            order by (status <> 'pending') desc, updated_at desc, created_at desc, id
          ) as n
     from agent_runs
    where workflow_id is not null
 ) ranked
 where r.id = ranked.id and ranked.n > 1;
alter table agent_runs force row level security;

alter table agent_runs
  add constraint agent_runs_workspace_workflow_key unique (workspace_id, workflow_id);

-- Down Migration
-- The deleted duplicates are not restored.
alter table agent_runs drop constraint agent_runs_workspace_workflow_key;
