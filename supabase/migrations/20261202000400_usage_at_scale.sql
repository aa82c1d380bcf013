-- Usage history that grows for years without slowing anything (issue 11).
--
-- 1. Incremental daily rollup. private.daily_usage_rollup (per user, UTC day, service, operation, model)
--    replaces the materialized view. Every usage row carries the id of the transaction that wrote it
--    (xact_id, from pg_current_xact_id()). refresh_usage_views() adds the rows of the transactions in
--    [watermark, hi) to the rollup, where hi is the oldest transaction still running
--    (pg_snapshot_xmin): every transaction below hi has finished, so each committed row is added exactly
--    once, whatever its created_at (late events included) and whatever the commit order. The cost is the
--    rows written since the last run, never the history. usage_summary reads the rollup plus the rows at
--    or above the watermark, in one statement (one snapshot), so it is never stale and never counts twice.
-- 2. usage_logs partitioned by month (UTC) on created_at. Partitions live in `private` (not served by the
--    API), each with RLS and the owner policy; a default partition catches rows of a month whose partition
--    does not exist yet (they move into it when it is created). refresh_usage_views() creates partitions
--    ahead and drops those older than the retention (private.usage_settings, or its argument); the rollup
--    keeps those days. event_id stays unique across partitions through private.usage_event_ids (primary
--    key event_id), filled by a trigger on every insert; ingest skips an event whose id is known.
-- 3. No tenant can break it: rollup sums are numeric (cost) and bigint over bounded integers (tokens,
--    counts); ingest bounds each event (tokens per class <= 10,000,000, cost <= 1,000 USD, created_at
--    within the retention and at most a day ahead).

-- -- settings ------------------------------------------------------------------------------------------------

create table private.usage_settings (
  id boolean primary key default true check (id),
  raw_retention_months integer not null default 13 check (raw_retention_months between 1 and 1200),
  months_ahead integer not null default 3 check (months_ahead between 1 and 24),
  updated_at timestamptz not null default now()
);
comment on table private.usage_settings is
  'One row: how many whole months of raw usage_logs are kept before the current month (older partitions are dropped by refresh_usage_views; the daily rollup stays), and how many months of partitions are created ahead.';
insert into private.usage_settings default values;
alter table private.usage_settings enable row level security;
revoke all on private.usage_settings from public, anon, authenticated;

-- The first UTC instant kept in the raw log: the start of the month `retention` months before this one.
create or replace function private.usage_horizon(p_retention_months integer default null) returns timestamptz
language sql stable
set search_path = ''
as $$
  select (date_trunc('month', now() at time zone 'utc')
          - make_interval(months => coalesce(p_retention_months,
              (select s.raw_retention_months from private.usage_settings s)))) at time zone 'utc'
$$;
revoke all on function private.usage_horizon(integer) from public, anon, authenticated;

-- -- the partitioned table -----------------------------------------------------------------------------------

drop materialized view private.daily_usage;
alter table public.usage_logs rename to usage_logs_unpartitioned;

create table public.usage_logs (
  id bigint generated always as identity,
  event_id uuid not null default gen_random_uuid(),
  user_id uuid not null references public.profiles (id) on delete cascade,
  service text not null check (length(service) between 1 and 50),
  operation text not null check (length(operation) between 1 and 50),
  model text check (length(model) between 1 and 100),
  input_tokens integer not null default 0 check (input_tokens >= 0),
  output_tokens integer not null default 0 check (output_tokens >= 0),
  cost_usd numeric(14,6) not null default 0 check (cost_usd >= 0),
  latency_ms integer check (latency_ms >= 0),
  status text not null check (status in ('succeeded', 'failed')),
  error_code text,
  request_id text check (length(request_id) <= 200),
  hold_id uuid references public.holds (id) on delete set null,
  created_at timestamptz not null default now(),
  cached_input_tokens integer not null default 0 check (cached_input_tokens >= 0),
  cache_write_tokens integer not null default 0 check (cache_write_tokens >= 0),
  reasoning_tokens integer not null default 0 check (reasoning_tokens >= 0),
  xact_id bigint not null default (pg_current_xact_id()::text::bigint)
) partition by range (created_at);
comment on table public.usage_logs is
  'One row per model call or ingested event, partitioned by UTC month (partitions in private); event_id is unique across partitions (private.usage_event_ids).';
comment on column public.usage_logs.input_tokens is 'Input tokens not read from or written to the prompt cache.';
comment on column public.usage_logs.output_tokens is 'All output tokens, reasoning included.';
comment on column public.usage_logs.reasoning_tokens is 'Of output_tokens, how many the model spent reasoning.';
comment on column public.usage_logs.xact_id is
  'The writing transaction (pg_current_xact_id): the daily rollup has every row below its watermark.';

create table private.usage_logs_default partition of public.usage_logs default;
comment on table private.usage_logs_default is
  'Rows of a month that has no partition yet; they move into its partition when refresh_usage_views creates it.';

-- A partition of public.usage_logs: RLS with the owner policy (as the parent has), closed to the API roles.
create or replace function private.secure_usage_partition(p_table regclass) returns void
language plpgsql
set search_path = ''
as $$
begin
  execute format('alter table %s enable row level security', p_table);
  execute format('create policy "owner reads own usage" on %s for select to authenticated'
                 ' using ((select auth.uid()) = user_id)', p_table);
  execute format('revoke all on %s from public, anon, authenticated', p_table);
end
$$;
revoke all on function private.secure_usage_partition(regclass) from public, anon, authenticated;
select private.secure_usage_partition('private.usage_logs_default');

-- Monthly partitions covering [p_from, p_to] (UTC months), created where missing; rows the default
-- partition caught for such a month are moved into it. Returns the names created.
create or replace function private.ensure_usage_partitions(p_from date, p_to date) returns text[]
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_month date := date_trunc('month', p_from)::date;
  v_name text;
  v_lo timestamptz;
  v_hi timestamptz;
  v_created text[] := '{}';
begin
  while v_month <= p_to loop
    v_name := format('usage_logs_y%sm%s', to_char(v_month, 'YYYY'), to_char(v_month, 'MM'));
    v_lo := v_month::timestamp at time zone 'utc';
    v_hi := (v_month + interval '1 month')::timestamp at time zone 'utc';
    if to_regclass('private.' || v_name) is null then
      if exists (select 1 from private.usage_logs_default d where d.created_at >= v_lo and d.created_at < v_hi) then
        execute format('create table private.%I (like public.usage_logs including defaults including constraints)',
                       v_name);
        execute format('with moved as (delete from private.usage_logs_default d where d.created_at >= %L'
                       ' and d.created_at < %L returning d.*) insert into private.%I select * from moved',
                       v_lo, v_hi, v_name);
        execute format('alter table public.usage_logs attach partition private.%I for values from (%L) to (%L)',
                       v_name, v_lo, v_hi);
      else
        execute format('create table private.%I partition of public.usage_logs for values from (%L) to (%L)',
                       v_name, v_lo, v_hi);
      end if;
      perform private.secure_usage_partition(('private.' || quote_ident(v_name))::regclass);
      execute format('comment on table private.%I is %L', v_name,
                     format('Raw usage of %s (UTC); dropped after the retention, the daily rollup stays.',
                            to_char(v_month, 'YYYY-MM')));
      v_created := v_created || v_name;
    end if;
    v_month := (v_month + interval '1 month')::date;
  end loop;
  return v_created;
end
$$;
revoke all on function private.ensure_usage_partitions(date, date) from public, anon, authenticated;

-- Partitions for every month of the existing rows, the retention window and the months ahead.
select private.ensure_usage_partitions(
  least((select min(created_at) at time zone 'utc' from public.usage_logs_unpartitioned)::date,
        (private.usage_horizon() at time zone 'utc')::date),
  ((now() at time zone 'utc') + make_interval(months => (select months_ahead from private.usage_settings)))::date);

-- The existing rows, as they were (ids kept); xact_id 0: they are in the initial rollup below.
insert into public.usage_logs (id, event_id, user_id, service, operation, model, input_tokens, output_tokens,
  cost_usd, latency_ms, status, error_code, request_id, hold_id, created_at, cached_input_tokens,
  cache_write_tokens, reasoning_tokens, xact_id)
overriding system value
select id, event_id, user_id, service, operation, model, input_tokens, output_tokens, cost_usd, latency_ms,
       status, error_code, request_id, hold_id, created_at, cached_input_tokens, cache_write_tokens,
       reasoning_tokens, 0
from public.usage_logs_unpartitioned;
select setval(pg_get_serial_sequence('public.usage_logs', 'id'),
              coalesce((select max(id) from public.usage_logs_unpartitioned), 0) + 1, false);
drop table public.usage_logs_unpartitioned;

alter table public.usage_logs add primary key (id, created_at);
create index usage_logs_user_created_idx on public.usage_logs (user_id, created_at);
create index usage_logs_hold_id_idx on public.usage_logs (hold_id);
create index usage_logs_event_id_idx on public.usage_logs (event_id);
-- The rows not yet rolled up, per user (usage_summary), and all of them (refresh_usage_views: a BRIN
-- index, as xact_id grows with the heap and costs next to nothing to maintain).
create index usage_logs_user_xact_idx on public.usage_logs (user_id, xact_id);
create index usage_logs_xact_brin on public.usage_logs using brin (xact_id) with (pages_per_range = 16);

alter table public.usage_logs enable row level security;
create policy "owner reads own usage" on public.usage_logs for select to authenticated
  using ((select auth.uid()) = user_id);
revoke all on public.usage_logs from anon, authenticated;
grant select on public.usage_logs to authenticated;

-- -- event ids, unique across partitions ---------------------------------------------------------------------

create table private.usage_event_ids (
  event_id uuid primary key,
  created_at timestamptz not null
);
comment on table private.usage_event_ids is
  'Every usage_logs.event_id (a partitioned table cannot have a unique index without the partition key): what makes ingest idempotent across partitions. Ids older than the retention are forgotten with their partition.';
create index usage_event_ids_created_idx on private.usage_event_ids (created_at);
alter table private.usage_event_ids enable row level security;
revoke all on private.usage_event_ids from public, anon, authenticated;
insert into private.usage_event_ids (event_id, created_at) select event_id, created_at from public.usage_logs;

-- Registers each new row's event_id. A known id: the row is skipped inside ingest_usage (a retried event),
-- and anywhere else refused as a unique violation, so no writer can store an event twice.
create or replace function private.register_usage_event() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into private.usage_event_ids (event_id, created_at) values (new.event_id, new.created_at)
  on conflict (event_id) do nothing;
  if found then
    return new;
  end if;
  if current_setting('private.ingesting_usage', true) = 'on' then
    return null;
  end if;
  raise exception using errcode = '23505', message = 'duplicate usage event_id',
    detail = format('event %s is already recorded', new.event_id);
end
$$;
revoke all on function private.register_usage_event() from public, anon, authenticated;
create trigger register_usage_event before insert on public.usage_logs
  for each row execute function private.register_usage_event();

-- -- the daily rollup ----------------------------------------------------------------------------------------

create table private.daily_usage_rollup (
  user_id uuid not null references public.profiles (id) on delete cascade,
  day date not null,
  service text not null,
  operation text not null,
  model text not null,
  requests bigint not null default 0,
  failures bigint not null default 0,
  input_tokens bigint not null default 0,
  cached_input_tokens bigint not null default 0,
  cache_write_tokens bigint not null default 0,
  output_tokens bigint not null default 0,
  reasoning_tokens bigint not null default 0,
  cost_usd numeric not null default 0,
  updated_at timestamptz not null default now(),
  primary key (user_id, day, service, operation, model)
);
comment on table private.daily_usage_rollup is
  'Usage per UTC day, user, service, operation and model (model '''' when none) of every usage_logs row below the watermark in private.view_refreshes; kept after the raw partitions are dropped. Sums are numeric (cost) and bigint over bounded integers: they cannot overflow.';
alter table private.daily_usage_rollup enable row level security;
create policy "owner reads own daily usage" on private.daily_usage_rollup for select to authenticated
  using ((select auth.uid()) = user_id);
revoke all on private.daily_usage_rollup from public, anon, authenticated;

insert into private.daily_usage_rollup (user_id, day, service, operation, model, requests, failures, input_tokens,
  cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd)
select u.user_id, (u.created_at at time zone 'utc')::date, u.service, u.operation, coalesce(u.model, ''),
       count(*), count(*) filter (where u.status = 'failed'), coalesce(sum(u.input_tokens), 0),
       coalesce(sum(u.cached_input_tokens), 0), coalesce(sum(u.cache_write_tokens), 0),
       coalesce(sum(u.output_tokens), 0), coalesce(sum(u.reasoning_tokens), 0), coalesce(sum(u.cost_usd), 0)
from public.usage_logs u
group by 1, 2, 3, 4, 5;

alter table private.view_refreshes
  add column rolled_up_before_xact bigint not null default 0,
  add column rows_rolled_up bigint not null default 0;
comment on table private.view_refreshes is
  'The last run of refresh_usage_views: the daily rollup holds every usage row whose xact_id < rolled_up_before_xact.';
comment on column private.view_refreshes.rolled_up_before_xact is
  'Watermark: every transaction below it had finished when the rollup took its rows; rows at or above it are read live.';
delete from private.view_refreshes where view_name = 'daily_usage';
insert into private.view_refreshes (view_name, covers_before, rolled_up_before_xact)
values ('daily_usage_rollup', (now() at time zone 'utc')::date,
        pg_snapshot_xmin(pg_current_snapshot())::text::bigint);
alter table private.view_refreshes enable row level security;

-- -- the scheduled refresh -----------------------------------------------------------------------------------

drop function public.refresh_usage_views();
-- Adds the rows written since the last run to the rollup, creates the partitions ahead, then drops raw
-- partitions older than the retention (p_retention_months, stored when given; else the stored setting).
-- One run at a time (the watermark row is locked). Retention waits at most 2 s for its locks; when busy it
-- is skipped and done by a later run.
create function public.refresh_usage_views(p_retention_months integer default null) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_started timestamptz := clock_timestamp();
  v_lo bigint;
  v_hi bigint;
  v_rows bigint;
  v_keys bigint;
  v_settings private.usage_settings;
  v_horizon timestamptz;
  v_created text[];
  v_dropped text[] := '{}';
  v_part record;
  v_forgotten bigint := 0;
  v_retention_note text;
  v_ms integer;
  v_lock_timeout text := current_setting('lock_timeout');
  v_today date := (now() at time zone 'utc')::date;
begin
  if p_retention_months is not null then
    if p_retention_months not between 1 and 1200 then
      raise exception using errcode = 'PT422', message = 'invalid_retention',
        detail = 'retention_months: 1 to 1200';
    end if;
    update private.usage_settings set raw_retention_months = p_retention_months, updated_at = now()
    where raw_retention_months <> p_retention_months;
  end if;
  select * into v_settings from private.usage_settings;

  select r.rolled_up_before_xact into v_lo from private.view_refreshes r
  where r.view_name = 'daily_usage_rollup' for update;
  v_hi := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;

  with delta as (
    select u.user_id, (u.created_at at time zone 'utc')::date as day, u.service, u.operation,
           coalesce(u.model, '') as model, count(*) as requests,
           count(*) filter (where u.status = 'failed') as failures,
           sum(u.input_tokens) as input_tokens, sum(u.cached_input_tokens) as cached_input_tokens,
           sum(u.cache_write_tokens) as cache_write_tokens, sum(u.output_tokens) as output_tokens,
           sum(u.reasoning_tokens) as reasoning_tokens, sum(u.cost_usd) as cost_usd
    from public.usage_logs u
    where u.xact_id >= v_lo and u.xact_id < v_hi
    group by 1, 2, 3, 4, 5
  ),
  merged as (
    insert into private.daily_usage_rollup as r (user_id, day, service, operation, model, requests, failures,
      input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd)
    select * from delta
    on conflict (user_id, day, service, operation, model) do update set
      requests = r.requests + excluded.requests, failures = r.failures + excluded.failures,
      input_tokens = r.input_tokens + excluded.input_tokens,
      cached_input_tokens = r.cached_input_tokens + excluded.cached_input_tokens,
      cache_write_tokens = r.cache_write_tokens + excluded.cache_write_tokens,
      output_tokens = r.output_tokens + excluded.output_tokens,
      reasoning_tokens = r.reasoning_tokens + excluded.reasoning_tokens,
      cost_usd = r.cost_usd + excluded.cost_usd, updated_at = now()
    returning 1
  )
  select (select count(*) from merged), (select coalesce(sum(d.requests), 0) from delta d) into v_keys, v_rows;

  v_created := private.ensure_usage_partitions(v_today,
    (v_today + make_interval(months => v_settings.months_ahead))::date);

  -- Retention: whole partitions before the horizon go (rolled up above: ingest refuses rows that old).
  v_horizon := private.usage_horizon(v_settings.raw_retention_months);
  begin
    perform set_config('lock_timeout', '2s', true);
    for v_part in
      select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'public.usage_logs'::regclass and c.relname ~ '^usage_logs_y\d{4}m\d{2}$'
        and (to_date(substring(c.relname from 13), 'YYYY"m"MM') + interval '1 month')::timestamp
            at time zone 'utc' <= v_horizon
      order by c.relname
    loop
      execute format('drop table private.%I', v_part.relname);
      v_dropped := v_dropped || v_part.relname::text;
    end loop;
    delete from private.usage_logs_default d where d.created_at < v_horizon and d.xact_id < v_hi;
    -- Their event ids, a bounded number per run (the rest next time).
    with old as (
      select e.event_id from private.usage_event_ids e where e.created_at < v_horizon limit 20000
    )
    delete from private.usage_event_ids e using old where e.event_id = old.event_id;
    get diagnostics v_forgotten = row_count;
    perform set_config('lock_timeout', v_lock_timeout, true);
  exception when lock_not_available then
    v_dropped := '{}';
    v_retention_note := 'skipped: usage_logs busy, retried next run';
  end;

  v_ms := (extract(epoch from clock_timestamp() - v_started) * 1000)::integer;
  update private.view_refreshes set covers_before = v_today, refreshed_at = now(), duration_ms = v_ms,
    rolled_up_before_xact = greatest(v_lo, v_hi), rows_rolled_up = v_rows
  where view_name = 'daily_usage_rollup';
  return jsonb_build_object('view', 'daily_usage_rollup', 'covers_before', v_today, 'duration_ms', v_ms,
    'rows_rolled_up', v_rows, 'keys_updated', v_keys, 'partitions_created', to_jsonb(v_created),
    'partitions_dropped', to_jsonb(v_dropped), 'event_ids_forgotten', v_forgotten,
    'retention_months', v_settings.raw_retention_months, 'raw_kept_from', v_horizon)
    || case when v_retention_note is null then '{}'::jsonb
            else jsonb_build_object('retention', v_retention_note) end;
end
$$;
revoke all on function public.refresh_usage_views(integer) from public, anon, authenticated;
grant execute on function public.refresh_usage_views(integer) to service_role;

-- -- the summary: rollup + rows not yet rolled up, one snapshot ----------------------------------------------

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

  -- One statement: the rollup and the watermark it was written with are read in the same snapshot.
  with parts as (
    select d.day, d.service, d.operation, d.model, d.requests, d.failures, d.input_tokens, d.cached_input_tokens,
           d.cache_write_tokens, d.output_tokens, d.reasoning_tokens, d.cost_usd
    from private.daily_usage_rollup d
    where d.user_id = v_user and d.day between p_from and p_to
    union all
    select l.* from (
      -- The rows not yet rolled up, found by (user_id, xact_id) alone (offset 0 keeps the day filter out
      -- of the scan, so the planner never walks the user's whole range by (user_id, created_at)).
      select (u.created_at at time zone 'utc')::date as day, u.service, u.operation, coalesce(u.model, '') as model,
             1 as requests, (u.status = 'failed')::int as failures, u.input_tokens, u.cached_input_tokens,
             u.cache_write_tokens, u.output_tokens, u.reasoning_tokens, u.cost_usd
      from public.usage_logs u
      where u.user_id = v_user
        and u.xact_id >= (select r.rolled_up_before_xact from private.view_refreshes r
                          where r.view_name = 'daily_usage_rollup')
      offset 0
    ) l
    where l.day between p_from and p_to
  ),
  grouped as (
    select case p_group_by when 'day' then p.day::text when 'model' then p.model
                           when 'operation' then p.operation when 'service' then p.service
                           else p.day::text || ' ' || p.model end as key,
           case when p_group_by = 'day_model' then p.day end as day,
           case when p_group_by = 'day_model' then p.model end as model,
           sum(p.requests)::bigint as requests, sum(p.failures)::bigint as failures,
           sum(p.input_tokens)::bigint as input_tokens, sum(p.cached_input_tokens)::bigint as cached_input_tokens,
           sum(p.cache_write_tokens)::bigint as cache_write_tokens, sum(p.output_tokens)::bigint as output_tokens,
           sum(p.reasoning_tokens)::bigint as reasoning_tokens, sum(p.cost_usd) as cost_usd
    from parts p
    group by 1, 2, 3
  )
  select coalesce(jsonb_agg(jsonb_strip_nulls(to_jsonb(g)) order by g.key), '[]'::jsonb),
         jsonb_build_object('requests', coalesce(sum(g.requests), 0), 'failures', coalesce(sum(g.failures), 0),
           'input_tokens', coalesce(sum(g.input_tokens), 0),
           'cached_input_tokens', coalesce(sum(g.cached_input_tokens), 0),
           'cache_write_tokens', coalesce(sum(g.cache_write_tokens), 0),
           'output_tokens', coalesce(sum(g.output_tokens), 0),
           'reasoning_tokens', coalesce(sum(g.reasoning_tokens), 0),
           'cost_usd', coalesce(sum(g.cost_usd), 0))
  into v_rows, v_totals
  from grouped g;

  select r.covers_before into v_cut from private.view_refreshes r where r.view_name = 'daily_usage_rollup';

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

-- -- ingest with bounds that match reality -------------------------------------------------------------------

-- Batch ingest from other services. Per event: every token class at most 10,000,000 (above any context
-- window or output limit of today's models), cost at most 1,000 USD, created_at within the raw retention
-- and at most a day ahead. A known event_id (in any partition) is a duplicate, skipped.
create or replace function public.ingest_usage(p_events jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_n integer;
  v_inserted integer;
  v_unknown uuid[];
  v_bad record;
  v_horizon timestamptz := private.usage_horizon();
begin
  if p_events is null or jsonb_typeof(p_events) <> 'array' then
    raise exception using errcode = 'PT422', message = 'invalid_events', detail = 'events: a JSON array';
  end if;
  v_n := jsonb_array_length(p_events);
  if v_n not between 1 and 1000 then
    raise exception using errcode = 'PT422', message = 'invalid_events', detail = 'events: 1 to 1000 per batch';
  end if;
  select array_agg(distinct e.user_id) into v_unknown
  from jsonb_to_recordset(p_events) as e(user_id uuid)
  where not exists (select 1 from public.profiles p where p.id = e.user_id);
  if v_unknown is not null then
    raise exception using errcode = 'PT422', message = 'unknown_user',
      detail = format('events name users that do not exist: %s', array_to_string(v_unknown, ', '));
  end if;
  select e.event_id, e.created_at,
         greatest(e.input_tokens, e.cached_input_tokens, e.cache_write_tokens, e.output_tokens,
                  e.reasoning_tokens) as tokens, e.cost_usd
  into v_bad
  from jsonb_to_recordset(p_events) as e(event_id uuid, input_tokens bigint, cached_input_tokens bigint,
    cache_write_tokens bigint, output_tokens bigint, reasoning_tokens bigint, cost_usd numeric, created_at timestamptz)
  where greatest(e.input_tokens, e.cached_input_tokens, e.cache_write_tokens, e.output_tokens,
                 e.reasoning_tokens) > 10000000
     or e.cost_usd > 1000
     or e.created_at < v_horizon or e.created_at > now() + interval '1 day'
  limit 1;
  if found then
    raise exception using errcode = 'PT422', message = 'event_out_of_bounds',
      detail = format('event %s: token counts at most 10000000 per class, cost_usd at most 1000, created_at'
                      ' from %s to a day ahead (got tokens %s, cost_usd %s, created_at %s)', v_bad.event_id,
                      v_horizon, v_bad.tokens, v_bad.cost_usd, v_bad.created_at);
  end if;

  perform set_config('private.ingesting_usage', 'on', true);
  with ins as (
    insert into public.usage_logs (event_id, user_id, service, operation, model, input_tokens, cached_input_tokens,
                                   cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, latency_ms, status,
                                   error_code, request_id, created_at)
    select e.event_id, e.user_id, e.service, e.operation, e.model, coalesce(e.input_tokens, 0),
           coalesce(e.cached_input_tokens, 0), coalesce(e.cache_write_tokens, 0), coalesce(e.output_tokens, 0),
           coalesce(e.reasoning_tokens, 0), coalesce(e.cost_usd, 0), e.latency_ms, coalesce(e.status, 'succeeded'),
           e.error_code, e.request_id, coalesce(e.created_at, now())
    from jsonb_to_recordset(p_events) as e(
      event_id uuid, user_id uuid, service text, operation text, model text, input_tokens integer,
      cached_input_tokens integer, cache_write_tokens integer, output_tokens integer, reasoning_tokens integer,
      cost_usd numeric, latency_ms integer, status text, error_code text, request_id text, created_at timestamptz)
    returning 1
  )
  select count(*) into v_inserted from ins;
  perform set_config('private.ingesting_usage', 'off', true);
  return jsonb_build_object('received', v_n, 'inserted', v_inserted, 'duplicates', v_n - v_inserted);
end
$$;
revoke all on function public.ingest_usage(jsonb) from public, anon, authenticated;
grant execute on function public.ingest_usage(jsonb) to service_role;
