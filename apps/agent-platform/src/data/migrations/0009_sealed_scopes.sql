-- Up Migration
-- Sealed scopes (docs/data-isolation.md, "Sealed scopes"). Until now every policy read the settings
-- app.workspace_id / app.user_id / app.roles, which any statement inside a scope may change with
-- set_config(..., true): SQL injected into a scope could set another workspace, read and write there,
-- and set its own back before the scope's end check. Below, the library's sealed scope (scopeSealSql)
-- is installed in schema user_scope: withUserScope enters through user_scope.enter, once per
-- transaction, which checks the membership and seals the three settings and the transaction's id with
-- an HMAC under a key only the owner can read. Every policy now reads the values through
-- user_scope.workspace_id() / user_id() / roles(), which return a setting only while the seal still
-- matches it, checked in the same call (a check apart from the value could pass at another moment of
-- the statement). The column defaults keep reading the settings: a changed setting gives a default the
-- WITH CHECK policies refuse.

{{scope_seal}}

alter policy workspaces_current on workspaces using (id = (select user_scope.workspace_id()));
alter policy memberships_read on memberships using (
  workspace_id = (select user_scope.workspace_id()) and (user_id = (select user_scope.user_id()) or (select 'admin' = any (user_scope.roles())))
);
alter policy memberships_admin_insert on memberships with check (workspace_id = (select user_scope.workspace_id()) and (select 'admin' = any (user_scope.roles())));
alter policy memberships_admin_update on memberships
  using (workspace_id = (select user_scope.workspace_id()) and (select 'admin' = any (user_scope.roles())))
  with check (workspace_id = (select user_scope.workspace_id()));
alter policy memberships_admin_delete on memberships using (workspace_id = (select user_scope.workspace_id()) and (select 'admin' = any (user_scope.roles())));
alter policy agents_read on agents using (workspace_id = (select user_scope.workspace_id()));
alter policy agents_admin_write on agents
  using (workspace_id = (select user_scope.workspace_id()) and (select 'admin' = any (user_scope.roles())))
  with check (workspace_id = (select user_scope.workspace_id()) and (select 'admin' = any (user_scope.roles())));
alter policy agent_runs_workspace on agent_runs using (workspace_id = (select user_scope.workspace_id())) with check (workspace_id = (select user_scope.workspace_id()));
alter policy documents_read on documents using (workspace_id = (select user_scope.workspace_id()));
alter policy documents_admin_write on documents
  using (workspace_id = (select user_scope.workspace_id()) and (select 'admin' = any (user_scope.roles())))
  with check (workspace_id = (select user_scope.workspace_id()) and (select 'admin' = any (user_scope.roles())));
alter policy audit_log_insert on audit_log with check (workspace_id is null or workspace_id = (select user_scope.workspace_id()));
alter policy audit_log_admin_read on audit_log using (workspace_id = (select user_scope.workspace_id()) and (select 'admin' = any (user_scope.roles())));

-- Down Migration
alter policy workspaces_current on workspaces using (id = (select nullif(current_setting('app.workspace_id', true), '')));
alter policy memberships_read on memberships using (
  workspace_id = (select nullif(current_setting('app.workspace_id', true), '')) and (user_id = (select nullif(current_setting('app.user_id', true), '')) or (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ','))))
);
alter policy memberships_admin_insert on memberships with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')) and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ','))));
alter policy memberships_admin_update on memberships
  using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')) and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ','))))
  with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
alter policy memberships_admin_delete on memberships using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')) and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ','))));
alter policy agents_read on agents using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
alter policy agents_admin_write on agents
  using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')) and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ','))))
  with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')) and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ','))));
alter policy agent_runs_workspace on agent_runs using (workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))) with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
alter policy documents_read on documents using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
alter policy documents_admin_write on documents
  using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')) and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ','))))
  with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')) and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ','))));
alter policy audit_log_insert on audit_log with check (workspace_id is null or workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
alter policy audit_log_admin_read on audit_log using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')) and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ','))));

drop schema user_scope cascade;
