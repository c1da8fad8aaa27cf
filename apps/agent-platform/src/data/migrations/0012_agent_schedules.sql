-- Up Migration
-- The schedules the API created, one row each, which the API counts (under the workspace's
-- schedule-create lock) before every create to hold the workspace's schedule limit. Temporal holds the
-- schedules themselves; its listing shows a new one only a while after its create (up to ~15 s), so a
-- count of the listing alone let creates at the same moment, through several API processes, all pass
-- the limit. A row is written before its schedule is created and marked deleted (`deleted_at`) once the
-- schedule is deleted: the listing lags behind deletes too, and a deleted schedule it still shows is not
-- counted. Rows whose schedule Temporal does not list (a crash between a create and its row, a delete
-- outside the API), and marks older than the listing's lag, are dropped by the next create.

create table agent_schedules (
  workspace_id text not null default nullif(current_setting('app.workspace_id', true), '')
    references workspaces (id) on delete cascade,
  schedule_id text not null check (length(schedule_id) between 1 and 200),
  created_by text not null default nullif(current_setting('app.user_id', true), ''),
  created_at timestamptz not null default now(),
  deleted_at timestamptz,
  primary key (workspace_id, schedule_id)
);

alter table agent_schedules enable row level security;
alter table agent_schedules force row level security;
-- Any member of the workspace sees its rows and marks or drops them (the API decides who may delete a
-- schedule); a row is written only as its creator.
create policy agent_schedules_read on agent_schedules for select
  using (workspace_id = (select user_scope.workspace_id()));
create policy agent_schedules_insert on agent_schedules for insert
  with check (workspace_id = (select user_scope.workspace_id()) and created_by = (select user_scope.user_id()));
create policy agent_schedules_update on agent_schedules for update
  using (workspace_id = (select user_scope.workspace_id()))
  with check (workspace_id = (select user_scope.workspace_id()));
create policy agent_schedules_delete on agent_schedules for delete
  using (workspace_id = (select user_scope.workspace_id()));

grant select, delete on agent_schedules to {{app_role}};
grant insert (schedule_id) on agent_schedules to {{app_role}};
grant update (deleted_at) on agent_schedules to {{app_role}};

-- Down Migration
drop table agent_schedules;
