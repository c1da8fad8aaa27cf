-- Up Migration
-- Only a workspace admin writes agents and documents. The API already requires the admin role on
-- those routes (withUserScope's requireRole); the policies now require it too, from the effective
-- roles withUserScope sets after its live membership check (`app.roles`), so that a route or an
-- activity that forgets the requirement is refused by the database. Every member still reads them:
-- permissive policies are OR'ed, so a read passes on `*_read`, and a write only on `*_admin_write`.

drop policy agents_workspace on agents;
create policy agents_read on agents for select
  using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
create policy agents_admin_write on agents for all
  using (
    workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
    and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ',')))
  )
  with check (
    workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
    and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ',')))
  );

drop policy documents_workspace on documents;
create policy documents_read on documents for select
  using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
create policy documents_admin_write on documents for all
  using (
    workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
    and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ',')))
  )
  with check (
    workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
    and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ',')))
  );

-- Down Migration
drop policy agents_read on agents;
drop policy agents_admin_write on agents;
create policy agents_workspace on agents for all
  using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')))
  with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));

drop policy documents_read on documents;
drop policy documents_admin_write on documents;
create policy documents_workspace on documents for all
  using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')))
  with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
