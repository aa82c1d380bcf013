-- Least privilege for the API roles: RLS becomes the second wall, not the only one.
--
-- Supabase grants anon and authenticated every privilege on every table in public; until now RLS alone
-- kept anon out, and with pg_graphql every table and column a role holds a privilege on is listed in
-- /graphql/v1 introspection (database linter 0026/0027). From here on:
--   anon           nothing on any table or sequence in public (it reads and writes nothing directly);
--   authenticated  SELECT on what it may read (RLS keeps it to its own rows and the shared catalogs), and
--                  only the direct writes the browser makes, column by column:
--                    profiles        update (display_name)
--                    projects        insert (name, description), update (name, description, deleted_at)
--                    project_files   insert (project_id, user_id, path, content), update (path, content, deleted_at)
--                    project_thoughts insert (project_id, content)
--                    chat_sessions   insert (title), update (title, deleted_at)
--                  Never an id: ids come from column defaults, so the browser cannot choose a
--                  chat_sessions.id (and occupy another user's named session, uuid5(user, name)) nor
--                  any other; user_id only where an RPC run as the caller names it (RLS checks it is the caller);
--                  never plan, status or money.
-- Table-level revokes come first and also clear column grants of earlier migrations, so a column added
-- before this file is closed to the API roles unless granted below. Tables created later by `postgres`
-- start with no privilege for anon and authenticated: each migration grants what the browser needs.

revoke all on all tables in schema public from anon, authenticated;
revoke all on all sequences in schema public from anon, authenticated;

grant select on public.plans, public.model_prices, public.profiles, public.billing_accounts, public.holds,
  public.credit_ledger, public.usage_logs, public.chat_sessions, public.chat_messages,
  public.chat_session_summaries, public.projects, public.project_files, public.project_thoughts,
  public.code_gen_requests to authenticated;
-- api_keys: never the hash.
grant select (id, user_id, name, prefix, last_used_at, revoked_at, created_at) on public.api_keys to authenticated;

grant update (display_name) on public.profiles to authenticated;
grant insert (name, description), update (name, description, deleted_at) on public.projects to authenticated;
-- user_id too: save_project_files (run as the caller) names it; RLS holds it to the caller.
grant insert (project_id, user_id, path, content), update (path, content, deleted_at) on public.project_files
  to authenticated;
grant insert (project_id, content) on public.project_thoughts to authenticated;
grant insert (title), update (title, deleted_at) on public.chat_sessions to authenticated;

-- Safe by default for what later migrations create in public (as `postgres`, the role running this).
alter default privileges in schema public revoke all on tables from anon, authenticated;
alter default privileges in schema public revoke all on sequences from anon, authenticated;
alter default privileges in schema public revoke execute on functions from anon, authenticated;

-- pg_cron enabled after `supabase db push`: the operator schedules the jobs with one call, as `postgres`
-- in the SQL editor: `select private.schedule_jobs();`. Same jobs as the usage views migration schedules
-- when pg_cron is already there; scheduling a name again replaces the job, so calling twice is harmless.
create or replace function private.schedule_jobs() returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_refresh bigint;
  v_expire bigint;
begin
  if to_regprocedure('cron.schedule(text, text, text)') is null then
    raise exception using errcode = '55000', message = 'pg_cron is not enabled in this database',
      hint = 'Enable it (Dashboard -> Database -> Extensions -> pg_cron), then call private.schedule_jobs() again.';
  end if;
  v_refresh := cron.schedule('refresh-usage-views', '*/10 * * * *', 'select public.refresh_usage_views()');
  v_expire := cron.schedule('expire-stale-holds', '*/5 * * * *', 'select public.expire_stale_holds(900)');
  return jsonb_build_object('refresh-usage-views', v_refresh, 'expire-stale-holds', v_expire);
end
$$;
comment on function private.schedule_jobs() is
  'Operators: after enabling pg_cron, run once: select private.schedule_jobs(); (re-running replaces the jobs).';
revoke all on function private.schedule_jobs() from public, anon, authenticated;
grant execute on function private.schedule_jobs() to service_role;
