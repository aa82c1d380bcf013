-- Health probe: a write and a read-back in one transaction, and the latest migration applied.

create table private.health_checks (
  id bigint generated always as identity primary key,
  checked_at timestamptz not null default now(),
  source text not null check (length(source) between 1 and 100)
);
comment on table private.health_checks is 'Rows written by the health probe; only the latest 100 are kept.';
revoke all on private.health_checks from public, anon, authenticated;

create or replace function public.health_probe(p_source text default 'health') returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_id bigint;
  v_read bigint;
  v_latest text;
begin
  insert into private.health_checks (source) values (coalesce(p_source, 'health')) returning id into v_id;
  select id into v_read from private.health_checks where id = v_id;
  delete from private.health_checks where id <= v_id - 100;
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    execute 'select max(version) from supabase_migrations.schema_migrations' into v_latest;
  end if;
  return jsonb_build_object('wrote', v_id, 'read_back', v_read = v_id, 'latest_migration', v_latest,
                            'database_time', now());
end
$$;
revoke all on function public.health_probe(text) from public, anon, authenticated;
grant execute on function public.health_probe(text) to service_role;
