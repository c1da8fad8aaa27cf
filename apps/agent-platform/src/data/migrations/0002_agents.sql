-- Up Migration
-- Agents, their runs, and the documents the agent's workspace-documents tool reads.
-- workspace_id and created_by default to the scope settings: repositories never pass a workspace id,
-- and the WITH CHECK policies refuse a row for any workspace other than the current one.
-- Composite foreign keys (workspace_id, agent_id) keep a run from pointing at another workspace's agent
-- (foreign-key checks bypass RLS, so a plain agent_id reference would be a cross-tenant oracle).

create table agents (
  id uuid primary key default gen_random_uuid(),
  workspace_id text not null default nullif(current_setting('app.workspace_id', true), '')
    references workspaces (id) on delete cascade,
  name text not null check (length(name) between 1 and 200),
  instructions text not null default '',
  model text not null,
  tools text[] not null default '{}',
  created_by text not null default nullif(current_setting('app.user_id', true), ''),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (workspace_id, id)
);
create index agents_workspace_idx on agents (workspace_id, created_at);

create table agent_runs (
  id uuid primary key default gen_random_uuid(),
  workspace_id text not null default nullif(current_setting('app.workspace_id', true), '')
    references workspaces (id) on delete cascade,
  agent_id uuid not null,
  workflow_id text,
  run_id text,
  status text not null default 'pending'
    check (status in ('pending', 'running', 'completed', 'failed', 'cancelled')),
  input jsonb,
  result jsonb,
  error text,
  created_by text not null default nullif(current_setting('app.user_id', true), ''),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  foreign key (workspace_id, agent_id) references agents (workspace_id, id) on delete cascade
);
create index agent_runs_workspace_idx on agent_runs (workspace_id, created_at);
create index agent_runs_agent_idx on agent_runs (workspace_id, agent_id);
create index agent_runs_workflow_idx on agent_runs (workflow_id);

create table documents (
  id uuid primary key default gen_random_uuid(),
  workspace_id text not null default nullif(current_setting('app.workspace_id', true), '')
    references workspaces (id) on delete cascade,
  title text not null check (length(title) between 1 and 500),
  body text not null default '',
  created_by text not null default nullif(current_setting('app.user_id', true), ''),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index documents_workspace_idx on documents (workspace_id, title);

alter table agents enable row level security;
alter table agents force row level security;
create policy agents_workspace on agents for all
  using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')))
  with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));

alter table agent_runs enable row level security;
alter table agent_runs force row level security;
create policy agent_runs_workspace on agent_runs for all
  using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')))
  with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));

alter table documents enable row level security;
alter table documents force row level security;
create policy documents_workspace on documents for all
  using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')))
  with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));

grant select, insert, update, delete on agents to {{app_role}};
grant select, insert, update on agent_runs to {{app_role}};
grant select, insert, update, delete on documents to {{app_role}};

-- Down Migration
drop table agent_runs;
drop table agents;
drop table documents;
