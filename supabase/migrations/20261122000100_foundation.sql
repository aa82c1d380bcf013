-- Foundation: safe default privileges, the private schema, shared trigger and caller helpers.

-- New functions are executable by nobody until a migration grants exactly the roles that may call them.
alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke execute on functions from anon, authenticated;

-- private: not served by the API. Holds materialized views, helpers and operator-only tables.
create schema if not exists private;
revoke all on schema private from public, anon;
-- Policies call helpers here, so authenticated needs usage (each helper grants execute itself).
grant usage on schema private to authenticated, service_role;

-- One trigger keeps updated_at for every table that has it.
create or replace function private.touch_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

-- The API role of the current request: the role PostgREST switched to (`set local role`), which
-- security definer functions do not change; never the role named in the JWT claims, which SQL could
-- forge with set_config. Outside a request (no role set): the SQL user.
create or replace function private.request_role() returns text
language sql stable
set search_path = ''
as $$
  select coalesce(nullif(current_setting('role'), 'none'), current_user::text)
$$;

-- The user a request acts for. authenticated: the caller (p_user_id, if given, must be the caller);
-- service_role: p_user_id, which it must name. Anyone else: PT401. One rule for every RPC that serves
-- both the browser (as authenticated) and the functions (as service_role).
create or replace function private.effective_user(p_user_id uuid) returns uuid
language plpgsql stable
set search_path = ''
as $$
declare
  v_role text := private.request_role();
  v_uid uuid := auth.uid();
begin
  if v_role = 'service_role' then
    if p_user_id is null then
      raise exception using errcode = 'PT400', message = 'user_id_required',
        detail = 'service calls must name p_user_id';
    end if;
    return p_user_id;
  end if;
  if v_role = 'authenticated' and v_uid is not null then
    if p_user_id is not null and p_user_id <> v_uid then
      raise exception using errcode = 'PT403', message = 'forbidden',
        detail = 'p_user_id must be the caller';
    end if;
    return v_uid;
  end if;
  raise exception using errcode = 'PT401', message = 'not_authenticated';
end
$$;

revoke all on function private.touch_updated_at() from public;
revoke all on function private.request_role() from public;
revoke all on function private.effective_user(uuid) from public;
grant execute on function private.request_role() to authenticated, service_role;
grant execute on function private.effective_user(uuid) to authenticated, service_role;
