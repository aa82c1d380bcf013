-- Supabase stand-in for plain Postgres (local default and tests). NEVER apply this on a Supabase project:
-- there the platform already provides every object below.
--
-- Run as a superuser (like Supabase's own init scripts, which run as `supabase_admin`). It creates what
-- a Supabase database has before any project migration runs, as a fresh hosted project has it:
-- - the role `postgres` that `supabase db push` applies migrations (and the seed) as: NOSUPERUSER with
--   CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS, member of the API roles; the migration runner and
--   the tests connect as it, so a migration needing superuser powers fails here first;
-- - the API roles with Supabase's timeouts; `supabase_auth_admin`, owner of the `auth` tables;
-- - `auth.users` and `auth.identities` with Supabase's columns, ownership, RLS (on, no policies) and no
--   invented defaults (Supabase Auth writes aud, role, instance_id, raw_app_meta_data and timestamps);
--   `postgres` holds every table privilege on them (not ownership: it cannot alter them) and no CREATE in
--   `auth`; `service_role` cannot read them;
-- - `auth.uid()/role()/jwt()` reading the claims PostgREST sets per request, the `extensions` schema;
-- - Supabase's default privileges in `public` for objects `postgres` creates (everything granted to anon,
--   authenticated and service_role), so that explicit revokes and RLS, not a missing grant, protect data.
-- Idempotent: safe to apply twice. Applies with: psql -v ON_ERROR_STOP=1 -f sql/00_supabase_bootstrap.sql

-- Roles are cluster-wide; create each once.
do $$
begin
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'supabase_admin') then
    create role supabase_admin nologin;
  end if;
  if not exists (select from pg_roles where rolname = 'supabase_auth_admin') then
    create role supabase_auth_admin noinherit createrole login noreplication;
  end if;
  if not exists (select from pg_roles where rolname = 'postgres') then
    create role postgres;
  end if;
  if (select rolsuper from pg_roles where rolname = 'postgres') then
    raise exception 'the stand-in needs a non-superuser role postgres, but postgres is the bootstrap superuser here'
      using hint = 'create the cluster with initdb -U supabase_admin (functions/dev/localdb.py does)';
  end if;
end
$$;
-- Exactly the attributes `postgres` has on a hosted project.
alter role postgres nosuperuser createdb createrole login replication bypassrls;

-- The API roles' settings on Supabase.
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';
alter role authenticator set lock_timeout = '8s';

grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to postgres;

-- What `postgres` may do in this database (as on Supabase: create schemas, use public).
do $$
begin
  execute format('grant all on database %I to postgres', current_database());
end
$$;
grant all on schema public to postgres;

create schema if not exists extensions;
grant usage on schema extensions to postgres, anon, authenticated, service_role;
do $$
begin
  if exists (select from pg_available_extensions where name = 'pgcrypto') then
    create extension if not exists pgcrypto with schema extensions;
  end if;
end
$$;

-- auth schema: the parts of Supabase Auth's schema that project SQL may reference, with its columns.
create schema if not exists auth authorization supabase_admin;
grant usage on schema auth to postgres, anon, authenticated, service_role;
grant all on schema auth to supabase_auth_admin;

create table if not exists auth.users (
  instance_id uuid,
  id uuid not null primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change_token_new varchar(255),
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_super_admin boolean,
  created_at timestamptz,
  updated_at timestamptz,
  phone text unique default null,
  phone_confirmed_at timestamptz,
  phone_change text default '',
  phone_change_token varchar(255) default '',
  phone_change_sent_at timestamptz,
  confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
  email_change_token_current varchar(255) default '',
  email_change_confirm_status smallint default 0 check (email_change_confirm_status between 0 and 2),
  banned_until timestamptz,
  reauthentication_token varchar(255) default '',
  reauthentication_sent_at timestamptz,
  is_sso_user boolean not null default false,
  deleted_at timestamptz,
  is_anonymous boolean not null default false
);
create unique index if not exists users_email_partial_key on auth.users (email) where is_sso_user = false;
comment on table auth.users is 'Auth: Stores user login data within a secure schema.';

create table if not exists auth.identities (
  provider_id text not null,
  user_id uuid not null references auth.users (id) on delete cascade,
  identity_data jsonb not null,
  provider text not null,
  last_sign_in_at timestamptz,
  created_at timestamptz,
  updated_at timestamptz,
  email text generated always as (lower(identity_data ->> 'email')) stored,
  id uuid not null default gen_random_uuid() primary key,
  constraint identities_provider_id_provider_unique unique (provider_id, provider)
);
create index if not exists identities_user_id_idx on auth.identities (user_id);
comment on table auth.identities is 'Auth: Stores identities associated to a user.';

alter table auth.users owner to supabase_auth_admin;
alter table auth.identities owner to supabase_auth_admin;
alter table auth.users enable row level security;
alter table auth.identities enable row level security;
-- As on Supabase: postgres holds every table privilege (granted by supabase_auth_admin), but is not the
-- owner and may not create objects in auth; service_role, anon and authenticated read nothing here.
revoke all on auth.users, auth.identities from public, anon, authenticated, service_role;
grant all on auth.users, auth.identities to postgres;
revoke create on schema auth from postgres;

-- Same bodies as Supabase's own helpers. `nullif(..., '')` because a rolled-back set_config leaves ''.
create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

grant execute on function auth.uid(), auth.role(), auth.jwt() to postgres, anon, authenticated, service_role;

-- Supabase's default privileges in public: the API roles get everything on what postgres (and the admin)
-- creates; RLS and the migrations' revokes do the rest.
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on functions to anon, authenticated, service_role;
