-- Billing that is exact against the real provider protocols, and that no one can get around.
--
-- 1. Token accounting of record: plain input, cached input (cache reads), cache writes, output and
--    reasoning tokens (reasoning is part of output, as OpenAI reports it), each priced from model_prices
--    (a cache price left null means the input price). Usage rows, messages and compile records carry
--    all five; the daily view and usage_summary report them.
-- 2. Delivered output is never free: a streamed hold records what has been delivered (touch_hold, before
--    the first delta goes out and again while the stream runs). A hold that recorded delivery is charged
--    for it, never released for free: by release_hold, and by expire_stale_holds when the settle never
--    came (the database was unreachable past the retries, or the instance died). Live streams keep their
--    hold alive (last_seen_at), so expiry only sees streams that stopped reporting.
-- 3. The session of a chat turn is resolved when the hold is placed (begin_chat_turn, which also returns
--    the history: one round trip) and kept on the hold; the settle no longer depends on the session
--    being live, so deleting it mid-stream cannot make the turn fail. Named sessions keep their name in
--    chat_sessions.name (unique per user among live sessions), not in an id another user could take.
-- 4. History trims whole exchanges, so a conversation always starts with a user turn and alternates.
-- 5. One default model per provider (is_default), so MODEL_PROVIDER chooses which one answers.

-- -- prices ------------------------------------------------------------------------------------------------

alter table public.model_prices
  add column cached_input_usd_per_mtok numeric(14,6) check (cached_input_usd_per_mtok >= 0),
  add column cache_write_usd_per_mtok numeric(14,6) check (cache_write_usd_per_mtok >= 0);
comment on column public.model_prices.cached_input_usd_per_mtok is
  'Price per million input tokens read from the prompt cache (OpenAI cached_tokens, Anthropic cache_read_input_tokens). Null: the input price.';
comment on column public.model_prices.cache_write_usd_per_mtok is
  'Price per million input tokens written to the prompt cache (Anthropic cache_creation_input_tokens). Null: the input price.';
comment on column public.model_prices.is_default is
  'The model that answers when a request names none, one per provider; MODEL_PROVIDER (or DEFAULT_MODEL) picks the provider.';
drop index public.model_prices_one_default;
create unique index model_prices_one_default_per_provider on public.model_prices (provider) where is_default;

-- -- token columns -----------------------------------------------------------------------------------------

alter table public.usage_logs
  add column cached_input_tokens integer not null default 0 check (cached_input_tokens >= 0),
  add column cache_write_tokens integer not null default 0 check (cache_write_tokens >= 0),
  add column reasoning_tokens integer not null default 0 check (reasoning_tokens >= 0);
comment on column public.usage_logs.input_tokens is 'Input tokens not read from or written to the prompt cache.';
comment on column public.usage_logs.output_tokens is 'All output tokens, reasoning included.';
comment on column public.usage_logs.reasoning_tokens is 'Of output_tokens, how many the model spent reasoning.';

alter table public.chat_messages
  add column cached_input_tokens integer check (cached_input_tokens >= 0),
  add column cache_write_tokens integer check (cache_write_tokens >= 0),
  add column reasoning_tokens integer check (reasoning_tokens >= 0);

alter table public.code_gen_requests
  add column cached_input_tokens integer not null default 0 check (cached_input_tokens >= 0),
  add column cache_write_tokens integer not null default 0 check (cache_write_tokens >= 0),
  add column reasoning_tokens integer not null default 0 check (reasoning_tokens >= 0);

-- -- sessions by name --------------------------------------------------------------------------------------

alter table public.chat_sessions add column name text check (length(name) between 1 and 200);
comment on column public.chat_sessions.name is 'The name a client gave the session ("session_id": "work"); unique per user among live sessions.';
create unique index chat_sessions_user_name_idx on public.chat_sessions (user_id, name)
  where deleted_at is null and name is not null;

-- -- holds: what a chat hold is for, what was delivered, when it was last heard of ------------------------

alter table public.holds
  add column session_id uuid,
  add column session_name text check (length(session_name) between 1 and 200),
  add column prompt_chars integer check (prompt_chars >= 0),
  add column delivered_chars integer not null default 0 check (delivered_chars >= 0),
  add column last_seen_at timestamptz;
alter table public.holds alter column last_seen_at set default now();
update public.holds set last_seen_at = created_at where status = 'open';
comment on column public.holds.session_id is 'Chat: the session the turn belongs to, resolved at begin (it may not exist yet).';
comment on column public.holds.delivered_chars is 'Characters of a streamed answer already sent to the user; > 0 means the hold is never closed for free.';
comment on column public.holds.last_seen_at is 'Last sign of life of the call (begin, stream progress); expiry counts from here.';
create index holds_open_last_seen_idx on public.holds ((coalesce(last_seen_at, created_at))) where status = 'open';
drop index public.holds_open_created_idx;

-- -- cost --------------------------------------------------------------------------------------------------

-- The token counts of one call, checked once: every count present and >= 0, reasoning within output.
create or replace function private.check_token_counts(
  p_input integer, p_cached integer, p_write integer, p_output integer, p_reasoning integer
) returns void
language plpgsql immutable
set search_path = ''
as $$
begin
  if p_input is null or p_input < 0 or p_cached is null or p_cached < 0 or p_write is null or p_write < 0
     or p_output is null or p_output < 0 or p_reasoning is null or p_reasoning < 0 or p_reasoning > p_output then
    raise exception using errcode = 'PT422', message = 'invalid_token_counts',
      detail = 'token counts are whole numbers >= 0, and reasoning_tokens <= output_tokens';
  end if;
end
$$;
revoke all on function private.check_token_counts(integer, integer, integer, integer, integer) from public;

-- What the tokens cost at a model's prices, each class at its own price, never more than the hold.
create or replace function private.hold_cost(
  p_hold public.holds, p_input integer, p_cached integer, p_write integer, p_output integer, p_reasoning integer
) returns numeric
language plpgsql stable
set search_path = ''
as $$
declare
  v_price public.model_prices;
begin
  perform private.check_token_counts(p_input, p_cached, p_write, p_output, p_reasoning);
  select * into v_price from public.model_prices where model = p_hold.model;
  return least(round((p_input::numeric * v_price.input_usd_per_mtok
                      + p_cached::numeric * coalesce(v_price.cached_input_usd_per_mtok, v_price.input_usd_per_mtok)
                      + p_write::numeric * coalesce(v_price.cache_write_usd_per_mtok, v_price.input_usd_per_mtok)
                      + p_output::numeric * v_price.output_usd_per_mtok) / 1000000, 6),
               p_hold.amount_usd);
end
$$;
revoke all on function private.hold_cost(public.holds, integer, integer, integer, integer, integer) from public;

-- Charge a locked open hold: usage row, then (under the account lock, taken last and held briefly)
-- balance, month spend, ledger entry, and the hold closed with its replayable result.
-- p_status: 'settled' (the call's own settle) or 'expired' (charged by expiry for delivered output).
create or replace function private.charge_hold(
  p_hold public.holds, p_cost numeric, p_service text, p_input integer, p_cached integer, p_write integer,
  p_output integer, p_reasoning integer, p_latency_ms integer, p_result jsonb,
  p_status text default 'settled', p_error_code text default null
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
  insert into public.usage_logs (user_id, service, operation, model, input_tokens, cached_input_tokens,
                                 cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, latency_ms, status,
                                 error_code, request_id, hold_id)
  values (p_hold.user_id, p_service, p_hold.operation, p_hold.model, p_input, p_cached, p_write, p_output,
          p_reasoning, p_cost, p_latency_ms, 'succeeded', p_error_code, p_hold.request_id, p_hold.id)
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
    'input_tokens', p_input, 'cached_input_tokens', p_cached, 'cache_write_tokens', p_write,
    'output_tokens', p_output, 'reasoning_tokens', p_reasoning, 'model', p_hold.model,
    'request_id', p_hold.request_id);
  update public.holds set status = p_status, charged_usd = p_cost, closed_at = now(), result = v_result
  where id = p_hold.id;
  return v_result;
end
$$;
revoke all on function private.charge_hold(public.holds, numeric, text, integer, integer, integer, integer, integer,
  integer, jsonb, text, text) from public;

-- A hold whose stream delivered output but whose settle never came: charge what was recorded as
-- delivered (prompt and delivered characters at 4 a token, never above the hold); usage and ledger only.
create or replace function private.charge_delivered(p_hold public.holds, p_status text, p_error_code text)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_in integer := ceil(coalesce(p_hold.prompt_chars, 0) / 4.0)::integer;
  v_out integer := ceil(p_hold.delivered_chars / 4.0)::integer;
begin
  return private.charge_hold(p_hold, private.hold_cost(p_hold, v_in, 0, 0, v_out, 0), p_hold.operation, v_in, 0, 0,
    v_out, 0, null, jsonb_build_object('error_code', p_error_code, 'partial', true, 'estimated', true,
                                       'delivered_chars', p_hold.delivered_chars),
    p_status, p_error_code);
end
$$;
revoke all on function private.charge_delivered(public.holds, text, text) from public;

-- -- begin -------------------------------------------------------------------------------------------------

-- The JSON a hold is answered with (begin_charge, replays).
create or replace function private.hold_json(p_hold public.holds, p_replay boolean, p_provider text) returns jsonb
language sql immutable
set search_path = ''
as $$
  select jsonb_build_object('hold_id', p_hold.id, 'request_id', p_hold.request_id, 'status', p_hold.status,
    'model', p_hold.model, 'provider', p_provider, 'amount_usd', p_hold.amount_usd, 'replay', p_replay,
    'session_id', p_hold.session_id, 'result', p_hold.result)
$$;

drop function public.begin_charge(uuid, text, text, text, integer, integer, integer);
create function public.begin_charge(
  p_user_id uuid,
  p_request_id text,
  p_operation text,
  p_model text,
  p_prompt_chars integer,
  p_max_output_tokens integer,
  p_calls integer default 1,
  p_provider text default null,
  p_session_id uuid default null,
  p_session_name text default null
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
  if p_model is null then
    -- No model named: the default model of the configured provider.
    if p_provider is null then
      raise exception using errcode = 'PT422', message = 'unknown_model', detail = 'name a model or a provider';
    end if;
    select * into v_price from public.model_prices where active and is_default and provider = p_provider;
    if not found then
      raise exception using errcode = 'PT422', message = 'no_default_model',
        detail = format('provider %L has no active default model in model_prices', p_provider);
    end if;
  else
    select * into v_price from public.model_prices where active and model = p_model;
    if not found then
      raise exception using errcode = 'PT422', message = 'unknown_model', detail = format('model %L has no active price', p_model);
    end if;
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

  -- Worst case: every prompt character a token at the dearest input class (a cache write costs more
  -- than plain input), every allowed output token used; rounded up.
  v_amount := ceil((p_prompt_chars::numeric * greatest(v_price.input_usd_per_mtok,
                        coalesce(v_price.cached_input_usd_per_mtok, 0), coalesce(v_price.cache_write_usd_per_mtok, 0))
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

  insert into public.holds (user_id, request_id, operation, model, amount_usd, session_id, session_name, prompt_chars)
  values (p_user_id, p_request_id, p_operation, v_price.model, v_amount,
          case when p_operation = 'chat' then coalesce(p_session_id, gen_random_uuid()) end,
          p_session_name, p_prompt_chars)
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

-- -- chat: sessions and history ----------------------------------------------------------------------------

-- The caller's session named by id, or by name (live sessions only; p_legacy_id is the UUIDv5 that
-- named sessions had before they kept their name). Null when a name has no session yet; PT404 for an
-- id that is not a live session of the user's.
create or replace function private.resolve_session(
  p_user_id uuid, p_session_id uuid, p_session_name text, p_legacy_id uuid
) returns uuid
language plpgsql stable
set search_path = ''
as $$
declare
  v_id uuid;
begin
  if p_session_name is not null then
    select s.id into v_id from public.chat_sessions s
    where s.user_id = p_user_id and s.name = p_session_name and s.deleted_at is null;
    if not found and p_legacy_id is not null then
      select s.id into v_id from public.chat_sessions s
      where s.id = p_legacy_id and s.user_id = p_user_id and s.name is null and s.deleted_at is null;
    end if;
    return v_id;
  end if;
  if p_session_id is not null then
    perform 1 from public.chat_sessions s
    where s.id = p_session_id and s.user_id = p_user_id and s.deleted_at is null;
    if not found then
      raise exception using errcode = 'PT404', message = 'session_not_found',
        detail = format('no live session %s of yours', p_session_id);
    end if;
  end if;
  return p_session_id;
end
$$;
revoke all on function private.resolve_session(uuid, uuid, text, uuid) from public;
grant execute on function private.resolve_session(uuid, uuid, text, uuid) to authenticated, service_role;

-- Recent history of a session, oldest first: the newest whole exchanges (a user message and the answer
-- to it) whose characters fit the budget, so it always starts with a user turn and alternates.
create or replace function private.session_history(p_session_id uuid, p_user_id uuid, p_max_chars integer)
returns jsonb
language sql stable
set search_path = ''
as $$
  with turns as (
    select cm.seq, cm.role, cm.content, (cm.seq + 1) / 2 as turn,
           sum(length(cm.content)) over (partition by (cm.seq + 1) / 2) as turn_chars,
           count(*) over (partition by (cm.seq + 1) / 2) as turn_size
    from public.chat_messages cm
    where cm.session_id = p_session_id and cm.user_id = p_user_id
      and cm.seq > (select coalesce(max(m.seq), 0) - 200 from public.chat_messages m where m.session_id = p_session_id)
  ),
  whole as (
    select distinct t.turn, t.turn_chars from turns t where t.turn_size = 2
  ),
  kept as (
    select w.turn from (
      select w.turn, sum(w.turn_chars) over (order by w.turn desc) as chars from whole w
    ) w
    where w.chars <= greatest(p_max_chars, 0)
  )
  select coalesce(jsonb_agg(jsonb_build_object('role', t.role, 'content', t.content) order by t.seq), '[]'::jsonb)
  from turns t join kept k on k.turn = t.turn
$$;
revoke all on function private.session_history(uuid, uuid, integer) from public;
grant execute on function private.session_history(uuid, uuid, integer) to authenticated, service_role;

create or replace function public.chat_history(
  p_session_id uuid, p_max_chars integer default 24000, p_must_exist boolean default true, p_user_id uuid default null
) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_user uuid := private.effective_user(p_user_id);
  v_owner uuid;
  v_deleted timestamptz;
begin
  select s.user_id, s.deleted_at into v_owner, v_deleted from public.chat_sessions s where s.id = p_session_id;
  if (not found and p_must_exist) or (found and (v_owner <> v_user or v_deleted is not null)) then
    raise exception using errcode = 'PT404', message = 'session_not_found',
      detail = format('no live session %s of yours', p_session_id);
  end if;
  return private.session_history(p_session_id, v_user, p_max_chars);
end
$$;

-- The first of a chat turn's two round trips: resolve the session, read its history, place the hold
-- (begin_charge's rules) with the session on it. The prompt is the fixed part (system prompt and the new
-- message, p_fixed_chars) plus the history.
create or replace function public.begin_chat_turn(
  p_user_id uuid,
  p_request_id text,
  p_model text,
  p_provider text,
  p_fixed_chars integer,
  p_max_output_tokens integer,
  p_session_id uuid default null,
  p_session_name text default null,
  p_legacy_session_id uuid default null,
  p_history_max_chars integer default 24000
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_session uuid;
  v_history jsonb := '[]'::jsonb;
  v_history_chars integer := 0;
  v_hold jsonb;
begin
  if p_fixed_chars is null or p_fixed_chars < 0 then
    raise exception using errcode = 'PT422', message = 'invalid_prompt_chars', detail = 'fixed_chars >= 0';
  end if;
  if p_session_name is not null and length(p_session_name) not between 1 and 200 then
    raise exception using errcode = 'PT422', message = 'invalid_session_name', detail = 'session name: 1 to 200 characters';
  end if;
  v_session := private.resolve_session(p_user_id, p_session_id, p_session_name, p_legacy_session_id);
  if v_session is not null then
    v_history := private.session_history(v_session, p_user_id, p_history_max_chars);
    select coalesce(sum(length(e ->> 'content')), 0) into v_history_chars from jsonb_array_elements(v_history) e;
  end if;
  v_hold := public.begin_charge(p_user_id, p_request_id, 'chat', p_model, p_fixed_chars + v_history_chars,
                                p_max_output_tokens, 1, p_provider, v_session, p_session_name);
  return v_hold || jsonb_build_object('history', v_history);
end
$$;

-- -- chat: settle ------------------------------------------------------------------------------------------

drop function public.settle_chat_turn(uuid, uuid, text, text, integer, integer, integer, text, boolean);
-- One chat turn, all or nothing: the hold's session (created if new; written even if it was deleted
-- meanwhile, so deleting it cannot make a delivered answer free), both messages, summary, usage row,
-- ledger entry, balance, hold closed. Replays of a settled hold return the stored answer.
create function public.settle_chat_turn(
  p_hold_id uuid,
  p_user_message text,
  p_assistant_message text,
  p_input_tokens integer,
  p_output_tokens integer,
  p_cached_input_tokens integer default 0,
  p_cache_write_tokens integer default 0,
  p_reasoning_tokens integer default 0,
  p_latency_ms integer default null,
  p_client_message_id text default null,
  p_partial boolean default false
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_hold public.holds := private.lock_hold(p_hold_id);
  v_session uuid;
  v_seq integer;
  v_user_msg uuid;
  v_asst_msg uuid;
  v_cost numeric(14,6);
  v_result jsonb;
begin
  if v_hold.status = 'settled' then
    return v_hold.result || jsonb_build_object('replay', true);
  end if;
  perform private.require_open_hold(v_hold, 'chat');
  if p_user_message is null or length(p_user_message) not between 1 and 32000 then
    raise exception using errcode = 'PT422', message = 'invalid_message', detail = 'message: 1 to 32000 characters';
  end if;
  if p_assistant_message is null or length(p_assistant_message) > 200000 then
    raise exception using errcode = 'PT422', message = 'invalid_assistant_message',
      detail = 'assistant message: at most 200000 characters';
  end if;
  -- PT422 on bad counts, before any write.
  v_cost := private.hold_cost(v_hold, p_input_tokens, p_cached_input_tokens, p_cache_write_tokens, p_output_tokens,
                              p_reasoning_tokens);

  -- The session placed on the hold at begin: created if new; an existing one (the user's, checked at
  -- begin) is touched and written whether or not it was deleted since.
  v_session := coalesce(v_hold.session_id, gen_random_uuid());
  insert into public.chat_sessions as cs (id, user_id, name, title)
  values (v_session, v_hold.user_id, v_hold.session_name, left(p_user_message, 80))
  on conflict do nothing;
  if not found then
    update public.chat_sessions set last_message_at = now()
    where id = v_session and user_id = v_hold.user_id;
    if not found then
      -- A concurrent first turn created the live session of this name under another id: join it.
      update public.chat_sessions set last_message_at = now()
      where user_id = v_hold.user_id and name = v_hold.session_name and deleted_at is null
      returning id into v_session;
      if not found then
        raise exception using errcode = 'PT409', message = 'session_conflict',
          detail = format('session %s of hold %s cannot be written', v_session, v_hold.id);
      end if;
    end if;
  end if;

  select coalesce(max(m.seq), 0) into v_seq from public.chat_messages m where m.session_id = v_session;
  insert into public.chat_messages (session_id, user_id, seq, role, content, request_id, client_message_id, hold_id)
  values (v_session, v_hold.user_id, v_seq + 1, 'user', p_user_message, v_hold.request_id, p_client_message_id, v_hold.id)
  returning id into v_user_msg;
  insert into public.chat_messages (session_id, user_id, seq, role, content, model, input_tokens, cached_input_tokens,
                                    cache_write_tokens, output_tokens, reasoning_tokens, status, request_id, hold_id)
  values (v_session, v_hold.user_id, v_seq + 2, 'assistant', p_assistant_message, v_hold.model, p_input_tokens,
          p_cached_input_tokens, p_cache_write_tokens, p_output_tokens, p_reasoning_tokens,
          case when p_partial then 'partial' else 'complete' end, v_hold.request_id, v_hold.id)
  returning id into v_asst_msg;

  insert into public.chat_session_summaries as s (session_id, user_id, summary, message_count, input_tokens,
                                                  output_tokens, cost_usd)
  values (v_session, v_hold.user_id, left(p_user_message, 280), 2,
          p_input_tokens + p_cached_input_tokens + p_cache_write_tokens, p_output_tokens, v_cost)
  on conflict (session_id) do update set
    summary = excluded.summary,
    message_count = s.message_count + 2,
    input_tokens = s.input_tokens + excluded.input_tokens,
    output_tokens = s.output_tokens + excluded.output_tokens,
    cost_usd = s.cost_usd + excluded.cost_usd,
    updated_at = now();

  -- Last, under the account lock: the charge, and the hold settled with this answer for replays.
  v_result := private.charge_hold(v_hold, v_cost, 'chat', p_input_tokens, p_cached_input_tokens, p_cache_write_tokens,
    p_output_tokens, p_reasoning_tokens, p_latency_ms,
    jsonb_build_object('session_id', v_session, 'user_message_id', v_user_msg, 'assistant_message_id', v_asst_msg,
                       'seq', v_seq + 2, 'partial', p_partial, 'content', p_assistant_message));
  return v_result || jsonb_build_object('replay', false);
end
$$;

-- -- delivery, release, expiry -----------------------------------------------------------------------------

-- A streamed call reports progress: called before the first delta is sent (so delivered output is on
-- record before the user has it) and again while the stream runs, which also keeps the hold from
-- expiring. Returns the hold's status: anything but 'open' means the call must stop.
create or replace function public.touch_hold(p_hold_id uuid, p_delivered_chars integer) returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_status text;
begin
  if p_delivered_chars is null or p_delivered_chars < 0 then
    raise exception using errcode = 'PT422', message = 'invalid_delivered_chars', detail = 'delivered_chars >= 0';
  end if;
  update public.holds set delivered_chars = greatest(delivered_chars, p_delivered_chars), last_seen_at = now()
  where id = p_hold_id and status = 'open'
  returning status into v_status;
  if not found then
    select h.status into v_status from public.holds h where h.id = p_hold_id;
    if not found then
      raise exception using errcode = 'PT404', message = 'hold_not_found';
    end if;
  end if;
  return v_status;
end
$$;

-- A failed model call: close the hold, no charge, and (unless p_record_usage is false) a usage row with
-- status failed. A hold whose stream delivered output (recorded on the hold, or p_delivered_chars when
-- the caller knows more) is charged for it instead: delivered output is never free. Idempotent: a
-- closed hold comes back as it is.
drop function public.release_hold(uuid, text, integer, text, boolean);
create function public.release_hold(
  p_hold_id uuid, p_error_code text, p_latency_ms integer default null, p_service text default null,
  p_record_usage boolean default true, p_delivered_chars integer default 0
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
  if p_delivered_chars is null or p_delivered_chars < 0 then
    raise exception using errcode = 'PT422', message = 'invalid_delivered_chars', detail = 'delivered_chars >= 0';
  end if;
  v_hold.delivered_chars := greatest(v_hold.delivered_chars, p_delivered_chars);
  if v_hold.delivered_chars > 0 then
    perform private.charge_delivered(v_hold, 'settled', coalesce(p_error_code, 'model_error'));
    select * into v_hold from public.holds where id = p_hold_id;
    return private.hold_json(v_hold, false, v_provider);
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

-- Close holds not heard of for longer than the limit (their call died with its instance, or could not
-- reach the database to settle). Holds with delivered output are charged for it; the rest are released
-- without a charge. Holds being settled right now are locked and skipped.
create or replace function public.expire_stale_holds(p_older_than_seconds integer default 900)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_hold public.holds;
  v_ids uuid[] := '{}';
  v_charged integer := 0;
begin
  if p_older_than_seconds is null or p_older_than_seconds < 1 then
    raise exception using errcode = 'PT422', message = 'invalid_older_than_seconds',
      detail = 'older_than_seconds: 1 or more';
  end if;
  for v_hold in
    select h.* from public.holds h
    where h.status = 'open'
      and coalesce(h.last_seen_at, h.created_at) < now() - make_interval(secs => p_older_than_seconds)
    order by h.user_id, h.id
    for update skip locked
  loop
    if v_hold.delivered_chars > 0 then
      perform private.charge_delivered(v_hold, 'expired', 'hold_expired_after_delivery');
      v_charged := v_charged + 1;
    else
      update public.billing_accounts set held_usd = held_usd - v_hold.amount_usd where user_id = v_hold.user_id;
      update public.holds set status = 'expired', closed_at = now(),
        result = jsonb_build_object('error_code', 'hold_expired')
      where id = v_hold.id;
    end if;
    v_ids := v_ids || v_hold.id;
  end loop;
  return jsonb_build_object('expired', cardinality(v_ids), 'charged', v_charged, 'hold_ids', to_jsonb(v_ids));
end
$$;

-- -- compile -----------------------------------------------------------------------------------------------

drop function public.settle_compile(uuid, text, text, text, boolean, jsonb, integer, integer, integer, uuid, boolean);
create function public.settle_compile(
  p_hold_id uuid,
  p_task text,
  p_language text,
  p_code text,
  p_valid boolean,
  p_diagnostics jsonb,
  p_input_tokens integer,
  p_output_tokens integer,
  p_cached_input_tokens integer default 0,
  p_cache_write_tokens integer default 0,
  p_reasoning_tokens integer default 0,
  p_latency_ms integer default null,
  p_project_id uuid default null,
  p_repaired boolean default false
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_hold public.holds := private.lock_hold(p_hold_id);
  v_cost numeric(14,6);
  v_id uuid;
  v_result jsonb;
begin
  if v_hold.status = 'settled' then
    return v_hold.result || jsonb_build_object('replay', true);
  end if;
  perform private.require_open_hold(v_hold, 'compile');
  if p_project_id is not null and not exists (
    select 1 from public.projects p where p.id = p_project_id and p.user_id = v_hold.user_id and p.deleted_at is null
  ) then
    raise exception using errcode = 'PT404', message = 'project_not_found',
      detail = format('no live project %s of yours', p_project_id);
  end if;
  v_cost := private.hold_cost(v_hold, p_input_tokens, p_cached_input_tokens, p_cache_write_tokens, p_output_tokens,
                              p_reasoning_tokens);
  insert into public.code_gen_requests (user_id, project_id, hold_id, request_id, task, language, code, valid,
    diagnostics, repaired, model, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
    reasoning_tokens, cost_usd)
  values (v_hold.user_id, p_project_id, v_hold.id, v_hold.request_id, p_task, p_language, p_code, p_valid,
    coalesce(p_diagnostics, '[]'::jsonb), p_repaired, v_hold.model, p_input_tokens, p_cached_input_tokens,
    p_cache_write_tokens, p_output_tokens, p_reasoning_tokens, v_cost)
  returning id into v_id;
  v_result := private.charge_hold(v_hold, v_cost, 'compile', p_input_tokens, p_cached_input_tokens,
    p_cache_write_tokens, p_output_tokens, p_reasoning_tokens, p_latency_ms,
    jsonb_build_object('id', v_id, 'language', p_language, 'code', p_code, 'valid', p_valid,
                       'diagnostics', coalesce(p_diagnostics, '[]'::jsonb), 'repaired', p_repaired,
                       'project_id', p_project_id));
  return v_result || jsonb_build_object('replay', false);
end
$$;

drop function private.hold_cost(public.holds, integer, integer);
drop function private.charge_hold(public.holds, numeric, text, integer, integer, integer, jsonb);

-- -- listings by name --------------------------------------------------------------------------------------

create or replace function public.list_sessions(
  p_limit integer default 20, p_before_at timestamptz default null, p_before_id uuid default null,
  p_user_id uuid default null
) returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'name', s.name, 'title', s.title,
           'last_message_at', s.last_message_at, 'created_at', s.created_at,
           'message_count', coalesce(ss.message_count, 0))
         order by s.last_message_at desc, s.id desc), '[]'::jsonb)
  from (
    select cs.* from public.chat_sessions cs
    where cs.user_id = private.effective_user(p_user_id) and cs.deleted_at is null
      and (p_before_at is null or (cs.last_message_at, cs.id) < (p_before_at, coalesce(p_before_id, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)))
    order by cs.last_message_at desc, cs.id desc
    limit least(greatest(coalesce(p_limit, 20), 1), 100)
  ) s
  left join public.chat_session_summaries ss on ss.session_id = s.id
$$;

drop function public.list_messages(uuid, integer, integer, uuid);
-- Messages of one session (by id, or by name), newest first; pass the last row's seq as p_before_seq.
create function public.list_messages(
  p_session_id uuid default null, p_limit integer default 50, p_before_seq integer default null,
  p_user_id uuid default null, p_session_name text default null, p_legacy_session_id uuid default null
) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_user uuid := private.effective_user(p_user_id);
  v_session uuid := private.resolve_session(v_user, p_session_id, p_session_name, p_legacy_session_id);
  v_out jsonb;
begin
  if v_session is null then
    raise exception using errcode = 'PT404', message = 'session_not_found',
      detail = format('no live session named %L of yours', p_session_name);
  end if;
  select coalesce(jsonb_agg(jsonb_build_object('id', m.id, 'seq', m.seq, 'role', m.role, 'content', m.content,
           'model', m.model, 'status', m.status, 'input_tokens', m.input_tokens,
           'cached_input_tokens', m.cached_input_tokens, 'cache_write_tokens', m.cache_write_tokens,
           'output_tokens', m.output_tokens, 'reasoning_tokens', m.reasoning_tokens,
           'created_at', m.created_at) order by m.seq desc), '[]'::jsonb)
  into v_out
  from (
    select * from public.chat_messages cm
    where cm.session_id = v_session and cm.user_id = v_user
      and (p_before_seq is null or cm.seq < p_before_seq)
    order by cm.seq desc
    limit least(greatest(coalesce(p_limit, 50), 1), 200)
  ) m;
  return v_out;
end
$$;

-- -- usage reporting with every token class ----------------------------------------------------------------

-- Sums are unbounded numeric / bigint: no tenant's rows can overflow the view for everyone.
drop materialized view private.daily_usage;
create materialized view private.daily_usage as
select (u.created_at at time zone 'utc')::date as day,
       u.user_id,
       u.service,
       u.operation,
       coalesce(u.model, '') as model,
       count(*)::bigint as requests,
       count(*) filter (where u.status = 'failed')::bigint as failures,
       sum(u.input_tokens)::bigint as input_tokens,
       sum(u.cached_input_tokens)::bigint as cached_input_tokens,
       sum(u.cache_write_tokens)::bigint as cache_write_tokens,
       sum(u.output_tokens)::bigint as output_tokens,
       sum(u.reasoning_tokens)::bigint as reasoning_tokens,
       sum(u.cost_usd) as cost_usd
from public.usage_logs u
where u.created_at < (date_trunc('day', now() at time zone 'utc') at time zone 'utc')
group by 1, 2, 3, 4, 5;
comment on materialized view private.daily_usage is 'Usage per UTC day, user, service, operation and model, for days closed at the last refresh.';
create unique index daily_usage_key_idx on private.daily_usage (user_id, day, service, operation, model);
revoke all on private.daily_usage from public, anon, authenticated;

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
    select d.day, d.service, d.operation, d.model, d.requests, d.failures, d.input_tokens, d.cached_input_tokens,
           d.cache_write_tokens, d.output_tokens, d.reasoning_tokens, d.cost_usd
    from private.daily_usage d
    where d.user_id = v_user and d.day between p_from and p_to and d.day < v_cut
    union all
    select (u.created_at at time zone 'utc')::date, u.service, u.operation, coalesce(u.model, ''), 1,
           (u.status = 'failed')::int, u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens,
           u.reasoning_tokens, u.cost_usd
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

-- Batch ingest from other services, with every token class.
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
    on conflict (event_id) do nothing
    returning 1
  )
  select count(*) into v_inserted from ins;
  return jsonb_build_object('received', v_n, 'inserted', v_inserted, 'duplicates', v_n - v_inserted);
end
$$;

-- The active models with their prices, defaults first (model pickers, health, GET /chat/models).
create or replace function public.list_models() returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object('model', m.model, 'provider', m.provider, 'is_default', m.is_default,
           'input_usd_per_mtok', m.input_usd_per_mtok,
           'cached_input_usd_per_mtok', coalesce(m.cached_input_usd_per_mtok, m.input_usd_per_mtok),
           'cache_write_usd_per_mtok', coalesce(m.cache_write_usd_per_mtok, m.input_usd_per_mtok),
           'output_usd_per_mtok', m.output_usd_per_mtok, 'max_output_tokens', m.max_output_tokens)
         order by m.is_default desc, m.provider, m.model), '[]'::jsonb)
  from public.model_prices m
  where m.active
$$;

-- -- grants ------------------------------------------------------------------------------------------------

revoke all on function public.begin_charge(uuid, text, text, text, integer, integer, integer, text, uuid, text)
  from public, anon, authenticated;
revoke all on function public.begin_chat_turn(uuid, text, text, text, integer, integer, uuid, text, uuid, integer)
  from public, anon, authenticated;
revoke all on function public.settle_chat_turn(uuid, text, text, integer, integer, integer, integer, integer, integer,
  text, boolean) from public, anon, authenticated;
revoke all on function public.settle_compile(uuid, text, text, text, boolean, jsonb, integer, integer, integer, integer,
  integer, integer, uuid, boolean) from public, anon, authenticated;
revoke all on function public.touch_hold(uuid, integer) from public, anon, authenticated;
revoke all on function public.release_hold(uuid, text, integer, text, boolean, integer) from public, anon, authenticated;
revoke all on function public.list_messages(uuid, integer, integer, uuid, text, uuid) from public, anon, authenticated;
grant execute on function public.begin_charge(uuid, text, text, text, integer, integer, integer, text, uuid, text)
  to service_role;
grant execute on function public.begin_chat_turn(uuid, text, text, text, integer, integer, uuid, text, uuid, integer)
  to service_role;
grant execute on function public.settle_chat_turn(uuid, text, text, integer, integer, integer, integer, integer, integer,
  text, boolean) to service_role;
grant execute on function public.settle_compile(uuid, text, text, text, boolean, jsonb, integer, integer, integer,
  integer, integer, integer, uuid, boolean) to service_role;
grant execute on function public.touch_hold(uuid, integer) to service_role;
revoke all on function public.list_models() from public, anon, authenticated;
grant execute on function public.list_models() to authenticated, service_role;
grant execute on function public.release_hold(uuid, text, integer, text, boolean, integer) to service_role;
grant execute on function public.list_messages(uuid, integer, integer, uuid, text, uuid) to authenticated, service_role;
