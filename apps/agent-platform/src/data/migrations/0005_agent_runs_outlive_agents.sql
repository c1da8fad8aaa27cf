-- Up Migration
-- Deleting an agent that has runs is refused: the foreign key cascaded to the run records (as the
-- table owner, past the app role's missing DELETE grant on agent_runs) while the runs themselves went
-- on, their records gone from every route. The API now answers 409 AGENT_IN_USE; run records are the
-- workspace's history. Foreign-key checks see every row, whatever the row-level security policies.

alter table agent_runs drop constraint agent_runs_workspace_id_agent_id_fkey;
alter table agent_runs
  add constraint agent_runs_workspace_id_agent_id_fkey
  foreign key (workspace_id, agent_id) references agents (workspace_id, id) on delete restrict;

-- Down Migration
alter table agent_runs drop constraint agent_runs_workspace_id_agent_id_fkey;
alter table agent_runs
  add constraint agent_runs_workspace_id_agent_id_fkey
  foreign key (workspace_id, agent_id) references agents (workspace_id, id) on delete cascade;
