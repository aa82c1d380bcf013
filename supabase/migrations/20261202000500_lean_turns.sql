-- Leaner chat turns (issue 10). A turn is still two round trips (begin_chat_turn with the history, then
-- settle_chat_turn) and keeps every invariant; what it writes shrinks:
-- - the answer's text is kept once, in chat_messages: the hold's replayable result no longer carries a
--   second copy ('content'); replays read it back from the assistant message (private.with_answer);
-- - both messages of a turn go in one INSERT (one executor run, one pass of the triggers);
-- - the rows every turn updates (the account twice, the session, its summary, the hold) leave room on their
--   pages (fillfactor) so updates that change no indexed column stay HOT (no index entries, less WAL).

-- A settled chat result with its answer's text, read from the assistant message when the stored result
-- does not carry it (results stored since this migration); other results come back unchanged.
create or replace function private.with_answer(p_result jsonb) returns jsonb
language sql stable
set search_path = ''
as $$
  select case
    when p_result ? 'assistant_message_id' and not p_result ? 'content' then
      p_result || jsonb_build_object('content',
        (select m.content from public.chat_messages m where m.id = (p_result ->> 'assistant_message_id')::uuid))
    else p_result
  end
$$;
revoke all on function private.with_answer(jsonb) from public;

-- The JSON a hold is answered with (begin_charge, replays), its chat answer's text included.
create or replace function private.hold_json(p_hold public.holds, p_replay boolean, p_provider text) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object('hold_id', p_hold.id, 'request_id', p_hold.request_id, 'status', p_hold.status,
    'model', p_hold.model, 'provider', p_provider, 'amount_usd', p_hold.amount_usd, 'replay', p_replay,
    'session_id', p_hold.session_id, 'result', private.with_answer(p_hold.result))
$$;

-- One chat turn, all or nothing (as in 20261202000100_billing_exact, with the changes above).
create or replace function public.settle_chat_turn(
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
    return private.with_answer(v_hold.result) || jsonb_build_object('replay', true);
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

  -- Both messages in one statement (one executor run, one trigger pass).
  select coalesce(max(m.seq), 0) into v_seq from public.chat_messages m where m.session_id = v_session;
  with inserted as (
    insert into public.chat_messages (session_id, user_id, seq, role, content, model, input_tokens,
                                      cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, status,
                                      request_id, client_message_id, hold_id)
    values (v_session, v_hold.user_id, v_seq + 1, 'user', p_user_message, null, null, null, null, null, null,
            'complete', v_hold.request_id, p_client_message_id, v_hold.id),
           (v_session, v_hold.user_id, v_seq + 2, 'assistant', p_assistant_message, v_hold.model,
            p_input_tokens, p_cached_input_tokens, p_cache_write_tokens, p_output_tokens, p_reasoning_tokens,
            case when p_partial then 'partial' else 'complete' end, v_hold.request_id, null, v_hold.id)
    returning id, role
  )
  select (array_agg(i.id) filter (where i.role = 'user'))[1], (array_agg(i.id) filter (where i.role = 'assistant'))[1]
  into v_user_msg, v_asst_msg from inserted i;

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
                       'seq', v_seq + 2, 'partial', p_partial));
  return v_result || jsonb_build_object('content', p_assistant_message, 'replay', false);
end
$$;

alter table public.billing_accounts set (fillfactor = 70);
alter table public.holds set (fillfactor = 80);
alter table public.chat_sessions set (fillfactor = 80);
alter table public.chat_session_summaries set (fillfactor = 70);
