-- Shorter chat turns in the database (issue 10). The same rows, results, errors and invariants; less work
-- per turn, and less of it while the user's billing_accounts row is locked (every turn of a user, and every
-- settle, waits for that lock, so its length bounds one user's turns per second):
-- - begin_charge places the hold BEFORE it locks the account. Every refusal under the lock raises, which
--   rolls the hold back with the transaction, so a refused call leaves no hold, as before. A duplicate
--   request id still answers with the existing hold: the insert waits on the unique (user_id, request_id)
--   entry of a concurrent duplicate, skips (on conflict do nothing) once it commits, and replays it; so the
--   second replay check under the lock is no longer needed. The hold's JSON is built before the lock too.
--   Under the lock: read the account, the rate/quota/balance checks, one update, commit.
-- - The JSON helpers a turn calls (hold_json, with_answer, session_history) were SQL functions with a SET
--   clause: such a function is never inlined, and called from PL/pgSQL its body was parsed and planned again
--   in every transaction (with_answer and hold_json alone: ~140 us per begin, measured with
--   track_functions, all of it under the account lock). As PL/pgSQL their plans are cached per connection,
--   and a hold without a result (every fresh hold) no longer looks for its answer's text.

create or replace function private.with_answer(p_result jsonb) returns jsonb
language plpgsql stable
set search_path = ''
as $$
begin
  if p_result is null or not p_result ? 'assistant_message_id' or p_result ? 'content' then
    return p_result;
  end if;
  return p_result || jsonb_build_object('content',
    (select m.content from public.chat_messages m where m.id = (p_result ->> 'assistant_message_id')::uuid));
end
$$;
revoke all on function private.with_answer(jsonb) from public;

create or replace function private.hold_json(p_hold public.holds, p_replay boolean, p_provider text) returns jsonb
language plpgsql stable
set search_path = ''
as $$
begin
  return jsonb_build_object('hold_id', p_hold.id, 'request_id', p_hold.request_id, 'status', p_hold.status,
    'model', p_hold.model, 'provider', p_provider, 'amount_usd', p_hold.amount_usd, 'replay', p_replay,
    'session_id', p_hold.session_id,
    'result', case when p_hold.result is null then null else private.with_answer(p_hold.result) end);
end
$$;
revoke all on function private.hold_json(public.holds, boolean, text) from public;

-- As in 20261202000100_billing_exact, as PL/pgSQL (one cached plan per connection).
create or replace function private.session_history(p_session_id uuid, p_user_id uuid, p_max_chars integer)
returns jsonb
language plpgsql stable
set search_path = ''
as $$
begin
  return (
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
  );
end
$$;
revoke all on function private.session_history(uuid, uuid, integer) from public;
grant execute on function private.session_history(uuid, uuid, integer) to authenticated, service_role;

-- As in 20261202000100_billing_exact, with the hold placed (and its JSON built) before the account lock.
create or replace function public.begin_charge(
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
  v_json jsonb;
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
  if not found then  -- no profile, so no account (checked here: the hold below references the profile)
    raise exception using errcode = 'PT404', message = 'account_not_found';
  end if;
  if v_status <> 'active' then
    raise exception using errcode = 'PT403', message = 'account_' || v_status;
  end if;

  -- Worst case: every prompt character a token at the dearest input class (a cache write costs more
  -- than plain input), every allowed output token used; rounded up.
  v_amount := ceil((p_prompt_chars::numeric * greatest(v_price.input_usd_per_mtok,
                        coalesce(v_price.cached_input_usd_per_mtok, 0), coalesce(v_price.cache_write_usd_per_mtok, 0))
                    + p_max_output_tokens::numeric * v_price.output_usd_per_mtok)) / 1000000;

  -- The hold, before the account lock: a refusal below raises and takes it back with the transaction. A
  -- concurrent duplicate's hold makes this insert wait for that transaction, then do nothing: replay it.
  insert into public.holds (user_id, request_id, operation, model, amount_usd, session_id, session_name, prompt_chars)
  values (p_user_id, p_request_id, p_operation, v_price.model, v_amount,
          case when p_operation = 'chat' then coalesce(p_session_id, gen_random_uuid()) end,
          p_session_name, p_prompt_chars)
  on conflict (user_id, request_id) do nothing
  returning * into v_hold;
  if not found then
    v_replay := private.replay_hold(p_user_id, p_request_id, p_operation);
    if v_replay is null then  -- the duplicate's hold is gone again (its user deleted meanwhile)
      raise exception using errcode = 'PT404', message = 'account_not_found';
    end if;
    return v_replay;
  end if;
  v_json := private.hold_json(v_hold, false, v_price.provider);

  select * into v_acct from public.billing_accounts where user_id = p_user_id for update;
  if not found then
    raise exception using errcode = 'PT404', message = 'account_not_found';
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

  update public.billing_accounts
  set held_usd = held_usd + v_amount,
      month_spend_usd = v_acct.month_spend_usd,
      period_start = greatest(period_start, v_month),
      rate_window_start = v_window,
      rate_window_count = v_count + 1
  where user_id = p_user_id;
  return v_json;
end
$$;
revoke all on function public.begin_charge(uuid, text, text, text, integer, integer, integer, text, uuid, text)
  from public, anon, authenticated;
grant execute on function public.begin_charge(uuid, text, text, text, integer, integer, integer, text, uuid, text)
  to service_role;
