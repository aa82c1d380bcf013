-- The OpenAI- and Anthropic-compatible API (issue 12): the same holds and settles as `chat`, two round trips
-- per call (begin_api_call, settle_api_call), with the protocol and the API key of each call on record.
--
-- - A call's hold is a 'chat' hold that names its protocol ('openai', 'anthropic') and the API key it came
--   through (null for an access token). Every usage row written for such a hold (the settle, a failed call,
--   a charge for delivered output, the expiry) says so: service 'v1', the protocol, the key. One trigger
--   makes that rule, whichever function writes the row.
-- - No session header: only the charge is written (usage row, ledger entry, balance, the hold closed with
--   the protocol response for replays). A session header: the exchange is also saved as a chat turn, in the
--   same transaction, by settle_chat_turn itself.

alter table public.holds
  add column protocol text check (protocol in ('openai', 'anthropic')),
  add column api_key_id uuid references public.api_keys (id) on delete set null;
create index holds_api_key_id_idx on public.holds (api_key_id);  -- the foreign key's (a key's delete finds its holds)
comment on column public.holds.protocol is 'The compatible API protocol the call came through; null for chat and compile.';
comment on column public.holds.api_key_id is 'The API key the compatible API call came through; null for an access token.';

alter table public.usage_logs
  add column protocol text check (protocol in ('openai', 'anthropic')),
  add column api_key_id uuid;
comment on column public.usage_logs.protocol is 'The compatible API protocol of the call (service v1); null otherwise.';
comment on column public.usage_logs.api_key_id is 'The API key a compatible API call came through (kept when the key is deleted).';

-- Usage rows of a compatible-API hold say so, whichever function writes them.
create or replace function private.usage_from_hold() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_protocol text;
  v_key uuid;
begin
  select h.protocol, h.api_key_id into v_protocol, v_key from public.holds h where h.id = new.hold_id;
  if v_protocol is not null then
    new.service := 'v1';
    new.protocol := v_protocol;
    new.api_key_id := v_key;
  end if;
  return new;
end
$$;
revoke all on function private.usage_from_hold() from public;

create trigger usage_from_hold before insert on public.usage_logs
  for each row when (new.hold_id is not null) execute function private.usage_from_hold();

-- The one estimate of a stream cut short (no usage reported): 4 characters a token, rounded up.
create or replace function private.estimated_tokens(p_chars integer) returns integer
language sql immutable
set search_path = ''
as $$
  select ceil(greatest(coalesce(p_chars, 0), 0) / 4.0)::integer
$$;
revoke all on function private.estimated_tokens(integer) from public;

-- The first of a call's two round trips: the session, if one is named (resolved as chat resolves it), and
-- the hold (begin_charge's rules: model, limits, idempotency on the request id, status, rate, quota,
-- balance), marked with the protocol and the key. The prompt is what the client sent (p_prompt_chars): these
-- protocols carry the whole conversation, so no history is read. A request id already used by a call that
-- is not a compatible-API call is PT409.
create or replace function public.begin_api_call(
  p_user_id uuid,
  p_request_id text,
  p_protocol text,
  p_model text,
  p_prompt_chars integer,
  p_max_output_tokens integer,
  p_api_key_id uuid default null,
  p_session_id uuid default null,
  p_session_name text default null,
  p_legacy_session_id uuid default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_persist boolean := p_session_id is not null or p_session_name is not null;
  v_session uuid;
  v_hold jsonb;
  v_protocol text;
begin
  if p_protocol is null or p_protocol not in ('openai', 'anthropic') then
    raise exception using errcode = 'PT422', message = 'invalid_protocol', detail = 'protocol: openai or anthropic';
  end if;
  if p_model is null then
    raise exception using errcode = 'PT422', message = 'model_required', detail = 'model: name an active model';
  end if;
  if p_session_name is not null and length(p_session_name) not between 1 and 200 then
    raise exception using errcode = 'PT422', message = 'invalid_session_name', detail = 'session name: 1 to 200 characters';
  end if;
  if v_persist then
    v_session := private.resolve_session(p_user_id, p_session_id, p_session_name, p_legacy_session_id);
  end if;
  v_hold := public.begin_charge(p_user_id, p_request_id, 'chat', p_model, p_prompt_chars, p_max_output_tokens, 1,
                                null, v_session, p_session_name);
  if (v_hold ->> 'replay')::boolean then
    select h.protocol into v_protocol from public.holds h where h.id = (v_hold ->> 'hold_id')::uuid;
    if v_protocol is null then
      raise exception using errcode = 'PT409', message = 'request_id_reused',
        detail = format('request id %s was used by a chat call', p_request_id);
    end if;
    return v_hold;
  end if;
  update public.holds
  set protocol = p_protocol,
      api_key_id = p_api_key_id,
      session_id = case when v_persist then session_id end
  where id = (v_hold ->> 'hold_id')::uuid
  returning session_id into v_session;
  return v_hold || jsonb_build_object('session_id', v_session);
end
$$;

-- The second round trip, all or nothing: the charge for the reported usage, the exchange saved as a chat turn
-- when the hold has a session, and the hold closed with the protocol response (p_response) for replays.
create or replace function public.settle_api_call(
  p_hold_id uuid,
  p_input_tokens integer,
  p_output_tokens integer,
  p_cached_input_tokens integer default 0,
  p_cache_write_tokens integer default 0,
  p_reasoning_tokens integer default 0,
  p_latency_ms integer default null,
  p_response jsonb default null,
  p_user_message text default null,
  p_assistant_message text default null,
  p_partial boolean default false
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_hold public.holds := private.lock_hold(p_hold_id);
  v_result jsonb;
begin
  if v_hold.status = 'settled' then
    return private.with_answer(v_hold.result) || jsonb_build_object('replay', true);
  end if;
  perform private.require_open_hold(v_hold, 'chat');
  if v_hold.protocol is null then
    raise exception using errcode = 'PT409', message = 'wrong_operation',
      detail = 'the hold is for a chat call, not a compatible-API call';
  end if;
  if p_partial and p_input_tokens is null and p_output_tokens is null then
    -- A stream cut short: no usage was reported; the one estimate, from what the hold has on record.
    p_input_tokens := private.estimated_tokens(v_hold.prompt_chars);
    p_output_tokens := private.estimated_tokens(v_hold.delivered_chars);
  end if;
  if p_response is null or jsonb_typeof(p_response) <> 'object' then
    raise exception using errcode = 'PT422', message = 'invalid_response', detail = 'response: a JSON object';
  end if;
  if v_hold.session_id is not null then
    v_result := public.settle_chat_turn(p_hold_id, coalesce(nullif(left(p_user_message, 32000), ''), '(no text)'),
      left(coalesce(p_assistant_message, ''), 200000), p_input_tokens, p_output_tokens, p_cached_input_tokens,
      p_cache_write_tokens, p_reasoning_tokens, p_latency_ms, null, p_partial);
  else
    v_result := private.charge_hold(v_hold,
      private.hold_cost(v_hold, p_input_tokens, p_cached_input_tokens, p_cache_write_tokens, p_output_tokens,
                        p_reasoning_tokens),
      'v1', p_input_tokens, p_cached_input_tokens, p_cache_write_tokens, p_output_tokens, p_reasoning_tokens,
      p_latency_ms, jsonb_build_object('partial', p_partial));
  end if;
  update public.holds set result = result || jsonb_build_object('response', p_response) where id = p_hold_id;
  return v_result || jsonb_build_object('response', p_response, 'replay', false);
end
$$;

revoke all on function public.begin_api_call(uuid, text, text, text, integer, integer, uuid, uuid, text, uuid)
  from public, anon, authenticated;
revoke all on function public.settle_api_call(uuid, integer, integer, integer, integer, integer, integer, jsonb, text,
  text, boolean) from public, anon, authenticated;
grant execute on function public.begin_api_call(uuid, text, text, text, integer, integer, uuid, uuid, text, uuid)
  to service_role;
grant execute on function public.settle_api_call(uuid, integer, integer, integer, integer, integer, integer, jsonb, text,
  text, boolean) to service_role;
