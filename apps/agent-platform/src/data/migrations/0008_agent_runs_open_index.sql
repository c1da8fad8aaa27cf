-- Up Migration
-- The runs a workspace has pending or running, which the API counts (under the workspace's run-start
-- lock) before every start to hold its quota: without this index the count scans all of the
-- workspace's runs, ended ones included, while other starts of the workspace wait.
create index agent_runs_open_idx on agent_runs (workspace_id, created_at)
  where status in ('pending', 'running');

-- Down Migration
drop index agent_runs_open_idx;
