-- Up Migration
-- Every unique key of a table the app role may insert into and update leads with workspace_id.
-- PostgreSQL evaluates INSERT ... ON CONFLICT DO UPDATE's WHERE on the row that conflicts before the
-- UPDATE policy checks that row: with a key of `id` alone, SQL inside a scope could name another
-- workspace's id and read its row (a WHERE that calls a function with the row), without an error, and
-- lock it. Keyed by (workspace_id, id), a conflict can only be with the scope's own workspace's rows.
-- agents keeps its unique (workspace_id, id), which agent_runs' foreign key uses.
alter table agents drop constraint agents_pkey, add primary key (workspace_id, id);
alter table agent_runs drop constraint agent_runs_pkey, add primary key (workspace_id, id);
alter table documents drop constraint documents_pkey, add primary key (workspace_id, id);

-- Down Migration
alter table agents drop constraint agents_pkey, add primary key (id);
alter table agent_runs drop constraint agent_runs_pkey, add primary key (id);
alter table documents drop constraint documents_pkey, add primary key (id);
