-- Up Migration
-- Append-only audit trail written by temporal-user-context's postgresAuditSink.
-- {{app_role}} may INSERT (for the current workspace, or a system record with no workspace) and SELECT
-- (a workspace admin, its own workspace only). There is no UPDATE or DELETE grant: records cannot be
-- altered or removed by the application. No foreign key to workspaces: a refusal for an unknown or
-- deleted workspace must still be recorded.

create table audit_log (
  id uuid primary key default gen_random_uuid(),
  time timestamptz not null,
  recorded_at timestamptz not null default now(),
  workspace_id text,
  user_id text,
  action text not null,
  decision text not null check (decision in ('allow', 'deny')),
  source text not null,
  reason text not null,
  principal text,
  token_id text,
  namespace text,
  workflow_id text,
  run_id text,
  workflow_type text,
  activity_type text,
  activity_id text,
  attempt integer,
  detail text
);
create index audit_log_workspace_idx on audit_log (workspace_id, time desc);

alter table audit_log enable row level security;
alter table audit_log force row level security;
create policy audit_log_insert on audit_log for insert with check (
  workspace_id is null
  or workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
);
create policy audit_log_admin_read on audit_log for select using (
  workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
  and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ',')))
);
grant select, insert on audit_log to {{app_role}};

-- Down Migration
drop table audit_log;
