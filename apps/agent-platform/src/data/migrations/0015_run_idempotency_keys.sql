-- Up Migration
-- Idempotency keys of run starts (`Idempotency-Key` on POST .../runs). A client that retries a start
-- whose answer it never got (a timeout, a dropped connection) sends the same key and gets the same run,
-- not a second one. A key belongs to its author in its workspace, with a digest of the request it came
-- with: the same key with another request is refused. Keys are kept as long as their run records.

alter table agent_runs
  add column idempotency_key text check (length(idempotency_key) between 1 and 255),
  add column request_digest text check (request_digest ~ '^[A-Za-z0-9_-]{43}$'),
  add constraint agent_runs_idempotency_digest check ((idempotency_key is null) = (request_digest is null));
create unique index agent_runs_idempotency_idx on agent_runs (workspace_id, created_by, idempotency_key)
  where idempotency_key is not null;
grant insert (idempotency_key, request_digest) on agent_runs to {{app_role}};

-- Down Migration
revoke insert (idempotency_key, request_digest) on agent_runs from {{app_role}};
drop index agent_runs_idempotency_idx;
alter table agent_runs
  drop constraint agent_runs_idempotency_digest,
  drop column request_digest,
  drop column idempotency_key;
