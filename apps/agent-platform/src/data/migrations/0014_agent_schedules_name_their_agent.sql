-- Up Migration
-- Which agent each schedule starts runs of. Deleting an agent refuses while a schedule names it, and
-- Temporal's listing shows a new schedule only a while after its create (up to ~15 s): an agent deleted
-- in that window left a schedule whose every run failed (AGENT_NOT_FOUND). The agent's delete now also
-- counts the schedule rows that name it, under the workspace's schedule-create lock, which a create
-- holds while it checks the agent and writes its row. Rows written before this migration name none.

alter table agent_schedules add column agent_id uuid;
grant insert (agent_id) on agent_schedules to {{app_role}};

-- Down Migration
revoke insert (agent_id) on agent_schedules from {{app_role}};
alter table agent_schedules drop column agent_id;
