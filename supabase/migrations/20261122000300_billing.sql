-- Billing: accounts, the append-only credit ledger, holds, usage rows, and the RPCs that move money.
-- Every rule about money lives here, under a row lock on the user's billing account:
--   begin_charge  -> lock account, refuse (PT403 / PT402 / PT429), place the worst-case hold
--   settle_*      -> (chat and code migrations) charge actual cost <= hold, usage row, ledger, close hold
--   release_hold  -> model failed: close hold, usage row with status failed, no charge
--   expire_stale_holds, top_up, ingest_usage
-- Lock order everywhere: the holds row first, the billing_accounts row last (taken as late as possible,
-- so concurrent calls of one user wait on it only briefly). Errors raise PTnnn (HTTP nnn in PostgREST).

create table public.billing_accounts (
  user_id uuid primary key references public.profiles (id) on delete cascade,
  balance_usd numeric(14,6) not null default 0 check (balance_usd >= 0),
  held_usd numeric(14,6) not null default 0 check (held_usd >= 0),
  month_spend_usd numeric(14,6) not null default 0 check (month_spend_usd >= 0),
  period_start date not null default (date_trunc('month', now() at time zone 'utc'))::date,
  rate_window_start timestamptz,
  rate_window_count integer not null default 0 check (rate_window_count >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint holds_covered_by_balance check (held_usd <= balance_usd)
);
comment on table public.billing_accounts is 'Credit balance, open holds and this month''s spend per user. Written only by billing functions.';
comment on column public.billing_accounts.held_usd is 'Sum of open holds: the worst case of calls in flight.';
comment on column public.billing_accounts.rate_window_count is 'Holds placed in the one-minute window from rate_window_start (plan request rate).';
create trigger billing_accounts_touch before update on public.billing_accounts
  for each row execute function private.touch_updated_at();
alter table public.billing_accounts enable row level security;
create policy "owner reads own billing account" on public.billing_accounts for select to authenticated
  using ((select auth.uid()) = user_id);

create table public.holds (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.profiles (id) on delete cascade,
  request_id text not null check (length(request_id) between 1 and 200),
  operation text not null check (operation in ('chat', 'compile')),
  model text not null references public.model_prices (model) on delete restrict,
  amount_usd numeric(14,6) not null check (amount_usd >= 0),
  status text not null default 'open' check (status in ('open', 'settled', 'released', 'expired')),
  charged_usd numeric(14,6) check (charged_usd >= 0 and charged_usd <= amount_usd),
  result jsonb,
  created_at timestamptz not null default now(),
  closed_at timestamptz,
  constraint holds_one_per_request unique (user_id, request_id),
  constraint holds_closed_when_not_open check ((status = 'open') = (closed_at is null))
);
comment on table public.holds is 'Worst-case reservation for one model call, idempotent on (user_id, request_id). result replays a settled call.';
create index holds_model_idx on public.holds (model);
create index holds_open_created_idx on public.holds (created_at) where status = 'open';
alter table public.holds enable row level security;
create policy "owner reads own holds" on public.holds for select to authenticated
  using ((select auth.uid()) = user_id);

create table public.credit_ledger (
  id bigint generated always as identity primary key,
  user_id uuid not null references public.profiles (id) on delete cascade,
  kind text not null check (kind in ('top_up', 'charge', 'refund', 'grant', 'adjustment')),
  amount_usd numeric(14,6) not null,
  balance_after numeric(14,6) not null check (balance_after >= 0),
  idempotency_key text not null unique check (length(idempotency_key) between 1 and 300),
  hold_id uuid references public.holds (id) on delete set null,
  description text,
  created_at timestamptz not null default now(),
  constraint ledger_sign_matches_kind check (
    (kind = 'charge' and amount_usd <= 0)
    or (kind in ('top_up', 'refund', 'grant') and amount_usd > 0)
    or (kind = 'adjustment' and amount_usd <> 0))
);
comment on table public.credit_ledger is 'Append-only money movements; the amounts of a user sum to the balance.';
create index credit_ledger_user_created_idx on public.credit_ledger (user_id, created_at desc);
create index credit_ledger_hold_id_idx on public.credit_ledger (hold_id);
alter table public.credit_ledger enable row level security;
create policy "owner reads own ledger" on public.credit_ledger for select to authenticated
  using ((select auth.uid()) = user_id);

create or replace function private.forbid_update() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception using errcode = 'PT409', message = 'append_only',
    detail = format('%I.%I rows cannot be changed', tg_table_schema, tg_table_name);
end
$$;
revoke all on function private.forbid_update() from public;
create trigger credit_ledger_append_only before update on public.credit_ledger
  for each row execute function private.forbid_update();

create table public.usage_logs (
  id bigint generated always as identity primary key,
  event_id uuid not null unique default gen_random_uuid(),
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
  created_at timestamptz not null default now()
);
comment on table public.usage_logs is 'One row per model call or ingested event; event_id makes ingest idempotent.';
create index usage_logs_user_created_idx on public.usage_logs (user_id, created_at);
create index usage_logs_hold_id_idx on public.usage_logs (hold_id);
alter table public.usage_logs enable row level security;
create policy "owner reads own usage" on public.usage_logs for select to authenticated
  using ((select auth.uid()) = user_id);

-- Only functions write billing tables; the browser roles may read (RLS filters to the owner).
revoke insert, update, delete, truncate, references, trigger
  on public.billing_accounts, public.holds, public.credit_ledger, public.usage_logs from anon, authenticated;
revoke update, delete, truncate on public.credit_ledger from service_role;

-- Billing account and sign-up grant for every new profile.
create or replace function private.handle_new_profile() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_grant numeric(14,6);
begin
  select signup_grant_usd into v_grant from public.plans where id = new.plan_id;
  insert into public.billing_accounts (user_id, balance_usd) values (new.id, coalesce(v_grant, 0));
  if coalesce(v_grant, 0) > 0 then
    insert into public.credit_ledger (user_id, kind, amount_usd, balance_after, idempotency_key, description)
    values (new.id, 'grant', v_grant, v_grant, 'signup:' || new.id, 'sign-up grant of plan ' || new.plan_id);
  end if;
  return new;
end
$$;
revoke all on function private.handle_new_profile() from public;
create trigger on_profile_created after insert on public.profiles
  for each row execute function private.handle_new_profile();

-- The JSON a hold is answered with (begin_charge, replays).
create or replace function private.hold_json(p_hold public.holds, p_replay boolean, p_provider text) returns jsonb
language sql immutable
set search_path = ''
as $$
  select jsonb_build_object('hold_id', p_hold.id, 'request_id', p_hold.request_id, 'status', p_hold.status,
    'model', p_hold.model, 'provider', p_provider, 'amount_usd', p_hold.amount_usd, 'replay', p_replay,
    'result', p_hold.result)
$$;
revoke all on function private.hold_json(public.holds, boolean, text) from public;

-- An existing hold for (user, request id) as a replay; reusing the id for another operation is PT409.
create or replace function private.replay_hold(p_user_id uuid, p_request_id text, p_operation text) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_hold public.holds;
begin
  select * into v_hold from public.holds where user_id = p_user_id and request_id = p_request_id;
  if not found then
    return null;
  end if;
  if v_hold.operation <> p_operation then
    raise exception using errcode = 'PT409', message = 'request_id_reused',
      detail = format('request id %s was used for a %s call', p_request_id, v_hold.operation);
  end if;
  return private.hold_json(v_hold, true,
    (select mp.provider from public.model_prices mp where mp.model = v_hold.model));
end
$$;
revoke all on function private.replay_hold(uuid, text, text) from public;

create or replace function public.begin_charge(
  p_user_id uuid,
  p_request_id text,
  p_operation text,
  p_model text,
  p_prompt_chars integer,
  p_max_output_tokens integer,
  p_calls integer default 1
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_acct public.billing_accounts;
  v_price public.model_prices;
  v_hold public.holds;
  v_replay jsonb;
  v_status text;
  v_quota numeric(14,6);
  v_rpm integer;
  v_window timestamptz;
  v_count integer;
  v_amount numeric(14,6);
  v_month date := (date_trunc('month', now() at time zone 'utc'))::date;
begin
  -- Everything that needs no lock comes first, so the account row is locked as briefly as possible.
  if p_request_id is null or length(p_request_id) not between 1 and 200 then
    raise exception using errcode = 'PT422', message = 'invalid_request_id', detail = 'request_id: 1 to 200 characters';
  end if;
  if p_operation is null or p_operation not in ('chat', 'compile') then
    raise exception using errcode = 'PT422', message = 'invalid_operation', detail = 'operation: chat or compile';
  end if;
  if p_prompt_chars is null or p_prompt_chars < 0 then
    raise exception using errcode = 'PT422', message = 'invalid_prompt_chars', detail = 'prompt_chars >= 0';
  end if;
  -- No model named: the default one.
  select * into v_price from public.model_prices
  where active and (model = p_model or (p_model is null and is_default));
  if not found then
    raise exception using errcode = 'PT422', message = 'unknown_model', detail = format('model %L has no active price', p_model);
  end if;
  -- p_calls: model calls this hold covers (compile may make a repair call); each within the model's limit.
  if p_calls is null or p_calls not between 1 and 4 then
    raise exception using errcode = 'PT422', message = 'invalid_calls', detail = 'calls: 1 to 4';
  end if;
  if p_max_output_tokens is null or p_max_output_tokens not between 1 and v_price.max_output_tokens * p_calls then
    raise exception using errcode = 'PT422', message = 'invalid_max_tokens',
      detail = format('max_tokens: 1 to %s for %s', v_price.max_output_tokens, v_price.model);
  end if;

  -- Idempotency: the same request id answers with the hold it already has, whatever its state.
  v_replay := private.replay_hold(p_user_id, p_request_id, p_operation);
  if v_replay is not null then
    return v_replay;
  end if;

  select p.status, pl.monthly_quota_usd, pl.requests_per_minute into v_status, v_quota, v_rpm
  from public.profiles p join public.plans pl on pl.id = p.plan_id
  where p.id = p_user_id;
  if v_status is not null and v_status <> 'active' then
    raise exception using errcode = 'PT403', message = 'account_' || v_status;
  end if;

  -- Worst case: every prompt character a token, every allowed output token used; rounded up.
  v_amount := ceil((p_prompt_chars::numeric * v_price.input_usd_per_mtok
                    + p_max_output_tokens::numeric * v_price.output_usd_per_mtok)) / 1000000;

  select * into v_acct from public.billing_accounts where user_id = p_user_id for update;
  if not found then
    raise exception using errcode = 'PT404', message = 'account_not_found';
  end if;
  -- A duplicate of this request may have placed its hold while we waited for the lock.
  v_replay := private.replay_hold(p_user_id, p_request_id, p_operation);
  if v_replay is not null then
    return v_replay;
  end if;

  -- Rate: a fixed one-minute window counted on the locked account row.
  v_window := v_acct.rate_window_start;
  v_count := v_acct.rate_window_count;
  if v_window is null or v_window <= now() - interval '1 minute' then
    v_window := now();
    v_count := 0;
  end if;
  if v_count >= v_rpm then
    raise exception using errcode = 'PT429', message = 'rate_limited',
      detail = format('%s requests per minute on this plan', v_rpm);
  end if;

  if v_acct.period_start < v_month then
    v_acct.month_spend_usd := 0;
  end if;
  if v_acct.month_spend_usd + v_acct.held_usd + v_amount > v_quota then
    raise exception using errcode = 'PT402', message = 'quota_exceeded',
      detail = format('month spend %s + held %s + this call %s > quota %s',
                      v_acct.month_spend_usd, v_acct.held_usd, v_amount, v_quota);
  end if;
  if v_acct.balance_usd - v_acct.held_usd < v_amount then
    raise exception using errcode = 'PT402', message = 'insufficient_credits',
      detail = format('available %s < this call %s', v_acct.balance_usd - v_acct.held_usd, v_amount);
  end if;

  insert into public.holds (user_id, request_id, operation, model, amount_usd)
  values (p_user_id, p_request_id, p_operation, v_price.model, v_amount)
  returning * into v_hold;
  update public.billing_accounts
  set held_usd = held_usd + v_amount,
      month_spend_usd = v_acct.month_spend_usd,
      period_start = greatest(period_start, v_month),
      rate_window_start = v_window,
      rate_window_count = v_count + 1
  where user_id = p_user_id;
  return private.hold_json(v_hold, false, v_price.provider);
end
$$;

-- Lock one hold (the first lock every hold-closing function takes; the account row comes after).
-- Settled holds come back as they are, for the caller to replay.
create or replace function private.lock_hold(p_hold_id uuid) returns public.holds
language plpgsql
set search_path = ''
as $$
declare
  v_hold public.holds;
begin
  select * into v_hold from public.holds where id = p_hold_id for update;
  if not found then
    raise exception using errcode = 'PT404', message = 'hold_not_found';
  end if;
  return v_hold;
end
$$;
revoke all on function private.lock_hold(uuid) from public;

create or replace function private.require_open_hold(p_hold public.holds, p_operation text) returns void
language plpgsql immutable
set search_path = ''
as $$
begin
  if p_hold.status in ('released', 'expired') then
    raise exception using errcode = 'PT409', message = 'hold_closed',
      detail = format('hold %s is %s', p_hold.id, p_hold.status);
  end if;
  if p_hold.operation <> p_operation then
    raise exception using errcode = 'PT409', message = 'wrong_operation',
      detail = format('the hold is for %s, not %s', p_hold.operation, p_operation);
  end if;
end
$$;
revoke all on function private.require_open_hold(public.holds, text) from public;

-- What the tokens actually used cost, never more than the hold: the balance and the quota checked at
-- begin_charge then still hold.
create or replace function private.hold_cost(p_hold public.holds, p_input_tokens integer, p_output_tokens integer)
returns numeric
language plpgsql stable
set search_path = ''
as $$
declare
  v_price public.model_prices;
begin
  if p_input_tokens is null or p_input_tokens < 0 or p_output_tokens is null or p_output_tokens < 0 then
    raise exception using errcode = 'PT422', message = 'invalid_token_counts';
  end if;
  select * into v_price from public.model_prices where model = p_hold.model;
  return least(round((p_input_tokens::numeric * v_price.input_usd_per_mtok
                      + p_output_tokens::numeric * v_price.output_usd_per_mtok) / 1000000, 6),
               p_hold.amount_usd);
end
$$;
revoke all on function private.hold_cost(public.holds, integer, integer) from public;

-- Charge a locked open hold: usage row, then (under the account lock, taken last and held briefly)
-- balance, month spend, ledger entry, and the hold settled with its replayable result.
create or replace function private.charge_hold(
  p_hold public.holds, p_cost numeric, p_service text, p_input_tokens integer, p_output_tokens integer,
  p_latency_ms integer, p_result jsonb
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_usage_id bigint;
  v_balance numeric(14,6);
  v_result jsonb;
  v_month date := (date_trunc('month', now() at time zone 'utc'))::date;
begin
  insert into public.usage_logs (user_id, service, operation, model, input_tokens, output_tokens, cost_usd,
                                 latency_ms, status, request_id, hold_id)
  values (p_hold.user_id, p_service, p_hold.operation, p_hold.model, p_input_tokens, p_output_tokens, p_cost,
          p_latency_ms, 'succeeded', p_hold.request_id, p_hold.id)
  returning id into v_usage_id;

  -- A hold begun last month and settled in this one counts in this month's spend.
  update public.billing_accounts
  set balance_usd = balance_usd - p_cost,
      held_usd = held_usd - p_hold.amount_usd,
      month_spend_usd = case when period_start < v_month then 0 else month_spend_usd end + p_cost,
      period_start = greatest(period_start, v_month)
  where user_id = p_hold.user_id
  returning balance_usd into v_balance;

  insert into public.credit_ledger (user_id, kind, amount_usd, balance_after, idempotency_key, hold_id, description)
  values (p_hold.user_id, 'charge', -p_cost, v_balance, 'charge:' || p_hold.id, p_hold.id,
          p_hold.operation || ' ' || p_hold.model);

  v_result := p_result || jsonb_build_object('cost_usd', p_cost, 'usage_id', v_usage_id, 'balance_usd', v_balance,
    'input_tokens', p_input_tokens, 'output_tokens', p_output_tokens, 'model', p_hold.model,
    'request_id', p_hold.request_id);
  update public.holds set status = 'settled', charged_usd = p_cost, closed_at = now(), result = v_result
  where id = p_hold.id;
  return v_result;
end
$$;
revoke all on function private.charge_hold(public.holds, numeric, text, integer, integer, integer, jsonb) from public;

-- A failed model call: close the hold, no charge, and (unless p_record_usage is false, as when the
-- settle itself failed) a usage row with status failed. Idempotent: a closed hold comes back as it is.
create or replace function public.release_hold(
  p_hold_id uuid, p_error_code text, p_latency_ms integer default null, p_service text default null,
  p_record_usage boolean default true
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_hold public.holds := private.lock_hold(p_hold_id);
  v_provider text := (select mp.provider from public.model_prices mp where mp.model = v_hold.model);
begin
  if v_hold.status <> 'open' then
    return private.hold_json(v_hold, true, v_provider);
  end if;
  if coalesce(p_record_usage, true) then
    insert into public.usage_logs (user_id, service, operation, model, status, error_code, latency_ms,
                                   request_id, hold_id)
    values (v_hold.user_id, coalesce(p_service, v_hold.operation), v_hold.operation, v_hold.model, 'failed',
            coalesce(p_error_code, 'model_error'), p_latency_ms, v_hold.request_id, v_hold.id);
  end if;
  update public.billing_accounts set held_usd = held_usd - v_hold.amount_usd where user_id = v_hold.user_id;
  update public.holds set status = 'released', closed_at = now(),
    result = jsonb_build_object('error_code', coalesce(p_error_code, 'model_error'))
  where id = p_hold_id returning * into v_hold;
  return private.hold_json(v_hold, false, v_provider);
end
$$;

-- Close holds older than the limit (their call died with its instance). Holds being settled right now
-- are locked and skipped: they end settled, or are expired by the next run.
create or replace function public.expire_stale_holds(p_older_than_seconds integer default 900)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row record;
  v_ids uuid[] := '{}';
begin
  if p_older_than_seconds is null or p_older_than_seconds < 1 then
    raise exception using errcode = 'PT422', message = 'invalid_older_than_seconds';
  end if;
  for v_row in
    select h.id, h.user_id, h.amount_usd from public.holds h
    where h.status = 'open' and h.created_at < now() - make_interval(secs => p_older_than_seconds)
    order by h.user_id, h.id
    for update skip locked
  loop
    update public.billing_accounts set held_usd = held_usd - v_row.amount_usd where user_id = v_row.user_id;
    update public.holds set status = 'expired', closed_at = now(),
      result = jsonb_build_object('error_code', 'hold_expired')
    where id = v_row.id;
    v_ids := v_ids || v_row.id;
  end loop;
  return jsonb_build_object('expired', cardinality(v_ids), 'hold_ids', to_jsonb(v_ids));
end
$$;

-- Credit movements from outside (payments, grants, refunds, operator adjustments), idempotent on the
-- external reference: the same (kind, reference) applies once; a replay with another amount is PT409.
create or replace function public.top_up(
  p_user_id uuid, p_amount_usd numeric, p_payment_ref text, p_kind text default 'top_up',
  p_description text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_key text;
  v_entry public.credit_ledger;
  v_balance numeric(14,6);
begin
  if p_kind is null or p_kind not in ('top_up', 'grant', 'refund', 'adjustment') then
    raise exception using errcode = 'PT422', message = 'invalid_kind', detail = 'kind: top_up, grant, refund or adjustment';
  end if;
  if p_amount_usd is null or p_amount_usd = 0 or (p_kind <> 'adjustment' and p_amount_usd < 0)
     or abs(p_amount_usd) >= 100000000 or round(p_amount_usd, 6) <> p_amount_usd then
    raise exception using errcode = 'PT422', message = 'invalid_amount',
      detail = 'amount_usd: positive (adjustments: non-zero), at most 6 decimals, below 1e8';
  end if;
  if p_payment_ref is null or length(p_payment_ref) not between 1 and 200 then
    raise exception using errcode = 'PT422', message = 'invalid_payment_ref', detail = 'payment_ref: 1 to 200 characters';
  end if;
  v_key := p_kind || ':' || p_payment_ref;

  perform 1 from public.billing_accounts where user_id = p_user_id for update;
  if not found then
    raise exception using errcode = 'PT404', message = 'account_not_found';
  end if;
  select * into v_entry from public.credit_ledger where idempotency_key = v_key;
  if found then
    if v_entry.user_id <> p_user_id or v_entry.amount_usd <> p_amount_usd then
      raise exception using errcode = 'PT409', message = 'idempotency_conflict',
        detail = format('%s was already applied with other values', v_key);
    end if;
    return to_jsonb(v_entry) || jsonb_build_object('replay', true);
  end if;

  update public.billing_accounts set balance_usd = balance_usd + p_amount_usd
  where user_id = p_user_id and balance_usd + p_amount_usd >= held_usd
  returning balance_usd into v_balance;
  if not found then
    raise exception using errcode = 'PT409', message = 'would_overdraw',
      detail = 'an adjustment may not take the balance below the open holds';
  end if;
  insert into public.credit_ledger (user_id, kind, amount_usd, balance_after, idempotency_key, description)
  values (p_user_id, p_kind, p_amount_usd, v_balance, v_key, p_description)
  returning * into v_entry;
  return to_jsonb(v_entry) || jsonb_build_object('replay', false);
end
$$;

-- Batch ingest from other services: up to 1,000 events, one insert, duplicates (same event_id) ignored.
create or replace function public.ingest_usage(p_events jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_n integer;
  v_inserted integer;
  v_unknown uuid[];
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

  with ins as (
    insert into public.usage_logs (event_id, user_id, service, operation, model, input_tokens, output_tokens,
                                   cost_usd, latency_ms, status, error_code, request_id, created_at)
    select e.event_id, e.user_id, e.service, e.operation, e.model, coalesce(e.input_tokens, 0),
           coalesce(e.output_tokens, 0), coalesce(e.cost_usd, 0), e.latency_ms, coalesce(e.status, 'succeeded'),
           e.error_code, e.request_id, coalesce(e.created_at, now())
    from jsonb_to_recordset(p_events) as e(
      event_id uuid, user_id uuid, service text, operation text, model text, input_tokens integer,
      output_tokens integer, cost_usd numeric, latency_ms integer, status text, error_code text,
      request_id text, created_at timestamptz)
    on conflict (event_id) do nothing
    returning 1
  )
  select count(*) into v_inserted from ins;
  return jsonb_build_object('received', v_n, 'inserted', v_inserted, 'duplicates', v_n - v_inserted);
end
$$;

revoke all on function public.begin_charge(uuid, text, text, text, integer, integer, integer) from public, anon, authenticated;
revoke all on function public.release_hold(uuid, text, integer, text, boolean) from public, anon, authenticated;
revoke all on function public.expire_stale_holds(integer) from public, anon, authenticated;
revoke all on function public.top_up(uuid, numeric, text, text, text) from public, anon, authenticated;
revoke all on function public.ingest_usage(jsonb) from public, anon, authenticated;
grant execute on function public.begin_charge(uuid, text, text, text, integer, integer, integer) to service_role;
grant execute on function public.release_hold(uuid, text, integer, text, boolean) to service_role;
grant execute on function public.expire_stale_holds(integer) to service_role;
grant execute on function public.top_up(uuid, numeric, text, text, text) to service_role;
grant execute on function public.ingest_usage(jsonb) to service_role;
