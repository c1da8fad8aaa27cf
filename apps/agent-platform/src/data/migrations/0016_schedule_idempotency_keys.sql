-- Up Migration
-- Idempotency keys of schedule creates (`Idempotency-Key` on POST .../schedules): a client that retries
-- a create whose answer it never got gets the schedule the first attempt created, not a second one
-- starting runs beside it. A key belongs to its author in its workspace while its schedule's row is
-- counted (not marked deleted): a create that failed, or a schedule deleted since, frees it.

alter table agent_schedules
  add column idempotency_key text check (length(idempotency_key) between 1 and 255),
  add column request_digest text check (request_digest ~ '^[A-Za-z0-9_-]{43}$'),
  add constraint agent_schedules_idempotency_digest
    check ((idempotency_key is null) = (request_digest is null));
create unique index agent_schedules_idempotency_idx
  on agent_schedules (workspace_id, created_by, idempotency_key)
  where idempotency_key is not null and deleted_at is null;
grant insert (idempotency_key, request_digest) on agent_schedules to {{app_role}};

-- Down Migration
revoke insert (idempotency_key, request_digest) on agent_schedules from {{app_role}};
drop index agent_schedules_idempotency_idx;
alter table agent_schedules
  drop constraint agent_schedules_idempotency_digest,
  drop column request_digest,
  drop column idempotency_key;
