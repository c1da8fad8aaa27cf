-- Up Migration
-- When each role of a membership was granted, so that a token issued before the grant does not get it
-- (found by review: a member removed and added again, or an admin demoted and promoted again, found
-- every token issued before the removal or the demotion valid again, for as long as it lived: 24 h for
-- the API's bearer tokens, a run's life for the run tokens its workers verify). The API and the workers
-- refuse a token whose roles include one granted after it was issued (less a 30 s tolerance for the
-- clocks of the identity provider and the database): src/data/repositories/workspaces.ts.
--
-- `role_since` maps each role of `roles` to when it was granted, as JSON timestamps. The trigger keeps
-- it, whoever writes the row (the API, a seed, SQL by hand): a role the row held already keeps its
-- time, one it did not hold gets the statement's time (not the transaction's: a change that waited for
-- the workspace's membership lock is dated after the wait), and a role taken away goes with its time.
-- It ignores what the statement writes into `role_since`, and a row moved to another user or workspace
-- is granted anew: no scope can date a grant back, nor hand one user's grant times to another. A
-- membership removed and added again is a new row: all its roles are granted then.
--
-- Rows already there: every role dated by the row's `created_at` (when it was granted is not known;
-- `updated_at` would refuse the tokens of members whose roles changed lately, demotions included).
-- Before this migration a demotion followed by a promotion is therefore not caught. Online: a column
-- with a constant default, one short update of the memberships, and a trigger; a lock wait gives up
-- after migrate's lock_timeout (5 s) and is tried again.

alter table memberships add column role_since jsonb not null default '{}'::jsonb;

-- Row-level security is forced on the owner too, and a migration runs with no scope: without this the
-- update saw no row, every role stayed undated, and every token was refused (found by an upgrade
-- rehearsal). As 0004 does, the owner reads the whole table for this statement only.
alter table memberships no force row level security;
update memberships m
   set role_since = coalesce((select jsonb_object_agg(r, to_jsonb(m.created_at))
                                from unnest(m.roles) as r where r is not null), '{}'::jsonb);
alter table memberships force row level security;

create function memberships_role_since() returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
begin
  new.role_since := coalesce((
    select jsonb_object_agg(r, case
             when tg_op = 'UPDATE' and old.workspace_id = new.workspace_id and old.user_id = new.user_id
                  and r = any (old.roles) and old.role_since ? r then old.role_since -> r
             else to_jsonb(statement_timestamp())
           end)
      from unnest(new.roles) as r where r is not null), '{}'::jsonb);
  return new;
end
$$;
revoke all on function memberships_role_since() from public;

create trigger memberships_role_since before insert or update on memberships
  for each row execute function memberships_role_since();

-- Down Migration
drop trigger memberships_role_since on memberships;
drop function memberships_role_since();
alter table memberships drop column role_since;
