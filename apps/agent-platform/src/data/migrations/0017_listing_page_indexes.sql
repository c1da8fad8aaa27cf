-- Up Migration
-- The API's listings come a page at a time, newest first, by (created_at, id) (keyset paging): each
-- page reads its rows from one of these in order, backwards, and stops at the page's end. Without the
-- id, and without the agent's created_at for the runs of one agent, every page read and sorted all of
-- the agent's or workspace's rows (a review counted a walk of the whole listing as quadratic). Each
-- replaces the index its first columns were.
create index agents_page_idx on agents (workspace_id, created_at, id);
create index agent_runs_page_idx on agent_runs (workspace_id, created_at, id);
create index agent_runs_agent_page_idx on agent_runs (workspace_id, agent_id, created_at, id);
drop index agents_workspace_idx;
drop index agent_runs_workspace_idx;
drop index agent_runs_agent_idx;

-- Down Migration
create index agents_workspace_idx on agents (workspace_id, created_at);
create index agent_runs_workspace_idx on agent_runs (workspace_id, created_at);
create index agent_runs_agent_idx on agent_runs (workspace_id, agent_id);
drop index agent_runs_agent_page_idx;
drop index agent_runs_page_idx;
drop index agents_page_idx;
