-- Up Migration
-- A row's author (`created_by`) is the user of the scope that wrote it, and stays so. Until now the
-- column only defaulted to the scope's user: SQL inside a member's scope could insert a run record
-- naming another member as its author (an admin's, an agent or a document), and the app role's UPDATE
-- on every column let it rewrite an author afterwards, or a run's input and creation time. Inserts
-- must now name the scope's own user (a restrictive policy, checked with the permissive ones), and
-- updates reach only the columns the application changes.

create policy agents_author on agents as restrictive for insert
  with check (created_by = (select user_scope.user_id()));
create policy documents_author on documents as restrictive for insert
  with check (created_by = (select user_scope.user_id()));
create policy agent_runs_author on agent_runs as restrictive for insert
  with check (created_by = (select user_scope.user_id()));

revoke update on agents, documents, agent_runs from {{app_role}};
grant update (name, instructions, model, tools, updated_at) on agents to {{app_role}};
grant update (title, body, updated_at) on documents to {{app_role}};
grant update (status, result, error, run_id, updated_at) on agent_runs to {{app_role}};

-- Down Migration
revoke update (name, instructions, model, tools, updated_at) on agents from {{app_role}};
revoke update (title, body, updated_at) on documents from {{app_role}};
revoke update (status, result, error, run_id, updated_at) on agent_runs from {{app_role}};
grant update on agents, documents, agent_runs to {{app_role}};
drop policy agent_runs_author on agent_runs;
drop policy documents_author on documents;
drop policy agents_author on agents;
