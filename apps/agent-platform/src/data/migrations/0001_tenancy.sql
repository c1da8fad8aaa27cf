-- Up Migration
-- Workspaces and memberships. Runs as {{owner_role}} (migrate() switches to it), so that role owns
-- every table; {{app_role}} gets only the grants below and is subject to RLS (FORCE: even the owner is).
--
-- Every policy compares against `(select nullif(current_setting('app.workspace_id', true), ''))`:
--   * the sub-select makes Postgres evaluate the setting once per query (an InitPlan), not per row;
--   * `true` = missing_ok, and nullif turns the '' a prior SET LOCAL leaves behind into NULL, so an
--     unscoped transaction matches no row at all instead of a workspace called ''.

create table workspaces (
  id text primary key check (id ~ '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$'),
  name text not null check (length(name) between 1 and 200),
  created_at timestamptz not null default now()
);
alter table workspaces enable row level security;
alter table workspaces force row level security;
create policy workspaces_current on workspaces for select
  using (id = (select nullif(current_setting('app.workspace_id', true), '')));
grant select on workspaces to {{app_role}};

create table memberships (
  workspace_id text not null references workspaces (id) on delete cascade,
  user_id text not null check (user_id ~ '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$'),
  roles text[] not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (workspace_id, user_id)
);
create index memberships_user_idx on memberships (user_id);
alter table memberships enable row level security;
alter table memberships force row level security;
-- withUserScope's live membership check reads the caller's own row; an admin (app.roles is set by
-- withUserScope only after that check passed) reads and manages the whole workspace.
create policy memberships_read on memberships for select using (
  workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
  and (
    user_id = (select nullif(current_setting('app.user_id', true), ''))
    or (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ',')))
  )
);
create policy memberships_admin_insert on memberships for insert with check (
  workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
  and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ',')))
);
create policy memberships_admin_update on memberships for update
  using (
    workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
    and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ',')))
  )
  with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
create policy memberships_admin_delete on memberships for delete using (
  workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
  and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ',')))
);
grant select, insert, update, delete on memberships to {{app_role}};

-- Down Migration
drop table memberships;
drop table workspaces;
