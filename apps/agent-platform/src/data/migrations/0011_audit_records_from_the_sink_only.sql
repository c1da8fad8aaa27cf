-- Up Migration
-- Audit records only from the audit sink's own scopes (docs/data-isolation.md, "Sealed scopes"). Until
-- now the INSERT policy admitted, from any scope, records of the scope's workspace naming anyone, and
-- records of no workspace: SQL injected into a user's scope could plant them in the trail. The
-- library's sealed scope (re-installed below; idempotent) now has a system scope,
-- user_scope.enter('', '', '{}'), in which the sink writes records of no workspace and which
-- user_scope.system_scope() vouches for; the sink writes a workspace's records in a scope of that
-- workspace alone (no user, no roles), whose workspace user_scope.sink_workspace_id() answers, checking
-- the seal in the same call. A user's scope is neither.

{{scope_seal}}

alter policy audit_log_insert on audit_log with check (
  (workspace_id is null and (select user_scope.system_scope()))
  or workspace_id = (select user_scope.sink_workspace_id())
);

-- Down Migration
-- (user_scope.enter keeps admitting the system scope: it sees no workspace, and no policy asks for it.)
alter policy audit_log_insert on audit_log with check (workspace_id is null or workspace_id = (select user_scope.workspace_id()));
drop function user_scope.system_scope();
drop function user_scope.sink_workspace_id();
drop function user_scope.sink_scope();
