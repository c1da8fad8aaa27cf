-- Up Migration
-- Ids may contain `|` and `+`, as the library's id format now does: the subjects identity providers
-- issue (Auth0's `auth0|…`, `google-oauth2|…`; e-mail addresses with a `+tag`) are user ids as they
-- are. The API and the workers check the same format first; these checks are the last line. Apply it
-- before upgrading the workers, and those before the API (docs/operations.md, _Database_).

alter table workspaces drop constraint workspaces_id_check;
alter table workspaces
  add constraint workspaces_id_check check (id ~ '^[A-Za-z0-9][A-Za-z0-9._:@|+-]{0,127}$');
alter table memberships drop constraint memberships_user_id_check;
alter table memberships
  add constraint memberships_user_id_check check (user_id ~ '^[A-Za-z0-9][A-Za-z0-9._:@|+-]{0,127}$');

-- Down Migration
-- Fails while a stored id uses `|` or `+`: remove those workspaces and members first.
alter table workspaces drop constraint workspaces_id_check;
alter table workspaces
  add constraint workspaces_id_check check (id ~ '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$');
alter table memberships drop constraint memberships_user_id_check;
alter table memberships
  add constraint memberships_user_id_check check (user_id ~ '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$');
