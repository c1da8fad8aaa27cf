-- Up Migration
-- A row's author (`created_by`) is the user of the scope that wrote it, and stays so. Until now the
-- column only defaulted to the scope's user: SQL inside a member's scope could insert a run record
-- naming another member as its author (an admin's, an agent or a document), and the app role's UPDATE
-- on every column let it rewrite an author afterwards, or a run's input and creation time; its INSERT
-- on every column let it write a run already `completed`, with a result and a creation time of its
-- choosing. Inserts and updates now reach only the columns the application writes (the others take
-- their defaults), and a new row's author must be the scope's own user (a restrictive policy, checked
-- with the permissive ones: the author's default reads a setting, which SQL in the scope can change).

create policy agents_author on agents as restrictive for insert
  with check (created_by = (select user_scope.user_id()));
create policy documents_author on documents as restrictive for insert
  with check (created_by = (select user_scope.user_id()));
create policy agent_runs_author on agent_runs as restrictive for insert
  with check (created_by = (select user_scope.user_id()));

revoke insert, update on agents, documents, agent_runs from {{app_role}};
grant insert (name, instructions, model, tools) on agents to {{app_role}};
grant insert (title, body) on documents to {{app_role}};
grant insert (agent_id, workflow_id, run_id, input) on agent_runs to {{app_role}};
grant update (name, instructions, model, tools, updated_at) on agents to {{app_role}};
grant update (title, body, updated_at) on documents to {{app_role}};
grant update (status, result, error, run_id, updated_at) on agent_runs to {{app_role}};

-- Down Migration
revoke insert (name, instructions, model, tools) on agents from {{app_role}};
revoke insert (title, body) on documents from {{app_role}};
revoke insert (agent_id, workflow_id, run_id, input) on agent_runs from {{app_role}};
grant insert on agents, documents, agent_runs to {{app_role}};
revoke update (name, instructions, model, tools, updated_at) on agents from {{app_role}};
revoke update (title, body, updated_at) on documents from {{app_role}};
revoke update (status, result, error, run_id, updated_at) on agent_runs from {{app_role}};
grant update on agents, documents, agent_runs to {{app_role}};
drop policy agent_runs_author on agent_runs;
drop policy documents_author on documents;
drop policy agents_author on agents;
