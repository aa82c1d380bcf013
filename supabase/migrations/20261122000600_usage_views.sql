-- Usage reporting: a materialized view of closed days (private, not in the API), refreshed concurrently
-- by the scheduler, and a summary RPC that adds the live rows since the view's cut-off, so it is never stale.

create materialized view private.daily_usage as
select (u.created_at at time zone 'utc')::date as day,
       u.user_id,
       u.service,
       u.operation,
       coalesce(u.model, '') as model,
       count(*)::bigint as requests,
       count(*) filter (where u.status = 'failed')::bigint as failures,
       sum(u.input_tokens)::bigint as input_tokens,
       sum(u.output_tokens)::bigint as output_tokens,
       sum(u.cost_usd)::numeric(18,6) as cost_usd
from public.usage_logs u
where u.created_at < (date_trunc('day', now() at time zone 'utc') at time zone 'utc')
group by 1, 2, 3, 4, 5;
comment on materialized view private.daily_usage is 'Usage per UTC day, user, service, operation and model, for days closed at the last refresh.';
create unique index daily_usage_key_idx on private.daily_usage (user_id, day, service, operation, model);
revoke all on private.daily_usage from public, anon, authenticated;

create table private.view_refreshes (
  view_name text primary key,
  covers_before date not null,
  refreshed_at timestamptz not null default now(),
  duration_ms integer not null default 0
);
comment on table private.view_refreshes is 'When each materialized view was last refreshed and which days it covers (< covers_before).';
revoke all on private.view_refreshes from public, anon, authenticated;
insert into private.view_refreshes (view_name, covers_before)
values ('daily_usage', (now() at time zone 'utc')::date)
on conflict (view_name) do nothing;

-- The caller's usage for [p_from, p_to] (UTC days), grouped by day, model, operation, service or
-- day_model (one row per day and model, with `day` and `model` fields, for charts), with
-- month spend, quota and balance. Closed days come from the view; days from its cut-off on from the table.
create or replace function public.usage_summary(
  p_from date, p_to date, p_group_by text default 'day', p_user_id uuid default null
) returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  v_user uuid := private.effective_user(p_user_id);
  v_cut date;
  v_rows jsonb;
  v_totals jsonb;
  v_account jsonb;
begin
  if p_from is null or p_to is null or p_from > p_to then
    raise exception using errcode = 'PT422', message = 'invalid_range', detail = 'from must be on or before to';
  end if;
  if p_to - p_from > 366 then
    raise exception using errcode = 'PT422', message = 'invalid_range', detail = 'at most 366 days';
  end if;
  if p_group_by is null or p_group_by not in ('day', 'model', 'operation', 'service', 'day_model') then
    raise exception using errcode = 'PT422', message = 'invalid_group_by',
      detail = 'group_by: day, model, operation, service or day_model';
  end if;
  select covers_before into v_cut from private.view_refreshes where view_name = 'daily_usage';

  with parts as (
    select d.day, d.service, d.operation, d.model, d.requests, d.failures, d.input_tokens, d.output_tokens, d.cost_usd
    from private.daily_usage d
    where d.user_id = v_user and d.day between p_from and p_to and d.day < v_cut
    union all
    select (u.created_at at time zone 'utc')::date, u.service, u.operation, coalesce(u.model, ''), 1,
           (u.status = 'failed')::int, u.input_tokens, u.output_tokens, u.cost_usd
    from public.usage_logs u
    where u.user_id = v_user
      and u.created_at >= (greatest(p_from, v_cut)::timestamp at time zone 'utc')
      and u.created_at < ((p_to + 1)::timestamp at time zone 'utc')
  ),
  grouped as (
    select case p_group_by when 'day' then p.day::text when 'model' then p.model
                           when 'operation' then p.operation when 'service' then p.service
                           else p.day::text || ' ' || p.model end as key,
           case when p_group_by = 'day_model' then p.day end as day,
           case when p_group_by = 'day_model' then p.model end as model,
           sum(p.requests)::bigint as requests, sum(p.failures)::bigint as failures,
           sum(p.input_tokens)::bigint as input_tokens, sum(p.output_tokens)::bigint as output_tokens,
           sum(p.cost_usd)::numeric(18,6) as cost_usd
    from parts p
    group by 1, 2, 3
  )
  select coalesce(jsonb_agg(jsonb_strip_nulls(to_jsonb(g)) order by g.key), '[]'::jsonb),
         jsonb_build_object('requests', coalesce(sum(g.requests), 0), 'failures', coalesce(sum(g.failures), 0),
           'input_tokens', coalesce(sum(g.input_tokens), 0), 'output_tokens', coalesce(sum(g.output_tokens), 0),
           'cost_usd', coalesce(sum(g.cost_usd), 0))
  into v_rows, v_totals
  from grouped g;

  select jsonb_build_object(
    'balance_usd', a.balance_usd, 'held_usd', a.held_usd, 'available_usd', a.balance_usd - a.held_usd,
    'month_spend_usd', case when a.period_start < (date_trunc('month', now() at time zone 'utc'))::date
                            then 0 else a.month_spend_usd end,
    'monthly_quota_usd', pl.monthly_quota_usd,
    'quota_left_usd', greatest(pl.monthly_quota_usd - a.held_usd - case
        when a.period_start < (date_trunc('month', now() at time zone 'utc'))::date then 0 else a.month_spend_usd end, 0),
    'plan', pl.id, 'status', p.status)
  into v_account
  from public.billing_accounts a
  join public.profiles p on p.id = a.user_id
  join public.plans pl on pl.id = p.plan_id
  where a.user_id = v_user;

  return jsonb_build_object('from', p_from, 'to', p_to, 'group_by', p_group_by, 'rows', v_rows,
                            'totals', v_totals, 'account', v_account, 'view_covers_before', v_cut);
end
$$;

-- Owner-only refresh, called by the scheduler through the service role.
create or replace function public.refresh_usage_views() returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_started timestamptz := clock_timestamp();
  v_ms integer;
  v_cut date := (now() at time zone 'utc')::date;
begin
  refresh materialized view concurrently private.daily_usage;
  v_ms := (extract(epoch from clock_timestamp() - v_started) * 1000)::integer;
  insert into private.view_refreshes (view_name, covers_before, refreshed_at, duration_ms)
  values ('daily_usage', v_cut, now(), v_ms)
  on conflict (view_name) do update set covers_before = excluded.covers_before,
    refreshed_at = excluded.refreshed_at, duration_ms = excluded.duration_ms;
  return jsonb_build_object('view', 'daily_usage', 'covers_before', v_cut, 'duration_ms', v_ms);
end
$$;

revoke all on function public.usage_summary(date, date, text, uuid) from public, anon, authenticated;
revoke all on function public.refresh_usage_views() from public, anon, authenticated;
grant execute on function public.usage_summary(date, date, text, uuid) to authenticated, service_role;
grant execute on function public.refresh_usage_views() to service_role;

-- Where pg_cron is installed (Supabase: enable it in the dashboard), refresh every 10 minutes and expire
-- stale holds. Scheduling a job name again replaces it, so this is safe to re-run.
do $$
begin
  if exists (select from pg_extension where extname = 'pg_cron') then
    perform cron.schedule('refresh-usage-views', '*/10 * * * *', 'select public.refresh_usage_views()');
    perform cron.schedule('expire-stale-holds', '*/5 * * * *', 'select public.expire_stale_holds(900)');
  end if;
end
$$;
