-- Up Migration
-- Sealed scopes (docs/data-isolation.md, "Sealed scopes"). The policies read the settings
-- app.workspace_id / app.user_id / app.roles, which any statement inside a scope may change with
-- set_config(..., true): SQL injected into a scope could set another workspace, read and write there,
-- and set its own back before the scope's end check. Below, the library's sealed scope (scopeSealSql)
-- is installed in schema user_scope: withUserScope enters through user_scope.enter, once per
-- transaction, which checks the membership and seals the three settings with an HMAC under a key only
-- the owner can read. Each tenant table gets a restrictive policy for every command: rows are visible
-- and writable only while user_scope.sealed() says the settings are still the sealed ones. Audit records
-- without a workspace (system records, written without a scope) pass it.

{{scope_seal}}

create policy workspaces_sealed on workspaces as restrictive for all using ((select user_scope.sealed()));
create policy memberships_sealed on memberships as restrictive for all using ((select user_scope.sealed()));
create policy agents_sealed on agents as restrictive for all using ((select user_scope.sealed()));
create policy agent_runs_sealed on agent_runs as restrictive for all using ((select user_scope.sealed()));
create policy documents_sealed on documents as restrictive for all using ((select user_scope.sealed()));
create policy audit_log_sealed on audit_log as restrictive for all
  using (workspace_id is null or (select user_scope.sealed()));

-- Down Migration
drop policy workspaces_sealed on workspaces;
drop policy memberships_sealed on memberships;
drop policy agents_sealed on agents;
drop policy agent_runs_sealed on agent_runs;
drop policy documents_sealed on documents;
drop policy audit_log_sealed on audit_log;
drop schema user_scope cascade;
