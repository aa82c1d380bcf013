-- Chat: sessions (the browser may create, rename and soft-delete its own), messages and per-session
-- summaries (written only by settle_chat_turn, all or nothing with the charge), history and listings.

create table public.chat_sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references public.profiles (id) on delete cascade,
  title text check (length(title) <= 200),
  last_message_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
);
comment on table public.chat_sessions is 'A conversation. Soft-deleted with deleted_at; listed newest activity first.';
create index chat_sessions_user_recent_idx on public.chat_sessions (user_id, last_message_at desc, id desc)
  where deleted_at is null;
-- The partial index above skips soft-deleted rows, so it cannot serve the foreign key (cascade from profiles).
create index chat_sessions_user_id_idx on public.chat_sessions (user_id);
create trigger chat_sessions_touch before update on public.chat_sessions
  for each row execute function private.touch_updated_at();
alter table public.chat_sessions enable row level security;
create policy "owner reads own sessions" on public.chat_sessions for select to authenticated
  using ((select auth.uid()) = user_id);
create policy "owner creates own sessions" on public.chat_sessions for insert to authenticated
  with check ((select auth.uid()) = user_id);
create policy "owner updates own sessions" on public.chat_sessions for update to authenticated
  using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
-- No hard deletes from the API: set deleted_at.
revoke delete, truncate on public.chat_sessions from anon, authenticated;

create table public.chat_messages (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null references public.chat_sessions (id) on delete cascade,
  user_id uuid not null references public.profiles (id) on delete cascade,
  seq integer not null check (seq > 0),
  role text not null check (role in ('system', 'user', 'assistant')),
  content text not null check (length(content) <= 200000),
  model text,
  input_tokens integer check (input_tokens >= 0),
  output_tokens integer check (output_tokens >= 0),
  status text not null default 'complete' check (status in ('complete', 'partial')),
  request_id text check (length(request_id) <= 200),
  client_message_id text check (length(client_message_id) <= 200),
  hold_id uuid references public.holds (id) on delete set null,
  created_at timestamptz not null default now(),
  constraint chat_messages_seq_unique unique (session_id, seq)
);
comment on table public.chat_messages is 'Turns in order (seq) per session; partial = the stream ended before the model finished.';
create index chat_messages_user_id_idx on public.chat_messages (user_id);
create index chat_messages_hold_id_idx on public.chat_messages (hold_id);
alter table public.chat_messages enable row level security;
create policy "owner reads own messages" on public.chat_messages for select to authenticated
  using ((select auth.uid()) = user_id);
revoke insert, update, delete, truncate, references, trigger on public.chat_messages from anon, authenticated;

create table public.chat_session_summaries (
  session_id uuid primary key references public.chat_sessions (id) on delete cascade,
  user_id uuid not null references public.profiles (id) on delete cascade,
  summary text not null default '',
  message_count integer not null default 0 check (message_count >= 0),
  input_tokens bigint not null default 0 check (input_tokens >= 0),
  output_tokens bigint not null default 0 check (output_tokens >= 0),
  cost_usd numeric(14,6) not null default 0 check (cost_usd >= 0),
  updated_at timestamptz not null default now()
);
comment on table public.chat_session_summaries is 'Running totals and a preview of the latest exchange, per session.';
create index chat_session_summaries_user_id_idx on public.chat_session_summaries (user_id);
alter table public.chat_session_summaries enable row level security;
create policy "owner reads own session summaries" on public.chat_session_summaries for select to authenticated
  using ((select auth.uid()) = user_id);
revoke insert, update, delete, truncate, references, trigger on public.chat_session_summaries from anon, authenticated;

-- Recent history of a session, oldest first, within a character budget. A session the user does not
-- own (or that is deleted) is PT404; one that does not exist yet is empty unless p_must_exist.
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
  v_out jsonb;
begin
  select s.user_id, s.deleted_at into v_owner, v_deleted from public.chat_sessions s where s.id = p_session_id;
  if (not found and p_must_exist) or (found and (v_owner <> v_user or v_deleted is not null)) then
    raise exception using errcode = 'PT404', message = 'session_not_found';
  end if;
  select coalesce(jsonb_agg(jsonb_build_object('role', m.role, 'content', m.content) order by m.seq), '[]'::jsonb)
  into v_out
  from (
    select r.role, r.content, r.seq
    from (
      select cm.role, cm.content, cm.seq,
             sum(length(cm.content)) over (order by cm.seq desc) as chars
      from public.chat_messages cm
      where cm.session_id = p_session_id and cm.user_id = v_user
      order by cm.seq desc
      limit 200
    ) r
    where r.chars <= greatest(p_max_chars, 0)
  ) m;
  return v_out;
end
$$;

-- One chat turn, all or nothing: session (created if new), both messages, summary, usage row, ledger
-- entry, balance, hold closed. Replays of a settled hold return the stored answer.
create or replace function public.settle_chat_turn(
  p_hold_id uuid,
  p_session_id uuid,
  p_user_message text,
  p_assistant_message text,
  p_input_tokens integer,
  p_output_tokens integer,
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
  if p_assistant_message is null then
    raise exception using errcode = 'PT422', message = 'invalid_assistant_message';
  end if;
  v_cost := private.hold_cost(v_hold, p_input_tokens, p_output_tokens);  -- PT422 on bad counts, before any write

  -- The session: created if new, else locked (for the seq) and touched; another user's or a deleted one is 404.
  insert into public.chat_sessions as cs (id, user_id, title)
  values (coalesce(p_session_id, gen_random_uuid()), v_hold.user_id, left(p_user_message, 80))
  on conflict (id) do update set last_message_at = now()
    where cs.user_id = excluded.user_id and cs.deleted_at is null
  returning cs.id into v_session;
  if v_session is null then
    raise exception using errcode = 'PT404', message = 'session_not_found';
  end if;

  select coalesce(max(m.seq), 0) into v_seq from public.chat_messages m where m.session_id = v_session;
  insert into public.chat_messages (session_id, user_id, seq, role, content, request_id, client_message_id, hold_id)
  values (v_session, v_hold.user_id, v_seq + 1, 'user', p_user_message, v_hold.request_id, p_client_message_id, v_hold.id)
  returning id into v_user_msg;
  insert into public.chat_messages (session_id, user_id, seq, role, content, model, input_tokens, output_tokens,
                                    status, request_id, hold_id)
  values (v_session, v_hold.user_id, v_seq + 2, 'assistant', p_assistant_message, v_hold.model, p_input_tokens,
          p_output_tokens, case when p_partial then 'partial' else 'complete' end, v_hold.request_id, v_hold.id)
  returning id into v_asst_msg;

  insert into public.chat_session_summaries as s (session_id, user_id, summary, message_count, input_tokens,
                                                  output_tokens, cost_usd)
  values (v_session, v_hold.user_id, left(p_user_message, 280), 2, p_input_tokens, p_output_tokens, v_cost)
  on conflict (session_id) do update set
    summary = excluded.summary,
    message_count = s.message_count + 2,
    input_tokens = s.input_tokens + excluded.input_tokens,
    output_tokens = s.output_tokens + excluded.output_tokens,
    cost_usd = s.cost_usd + excluded.cost_usd,
    updated_at = now();

  -- Last, under the account lock: the charge, and the hold settled with this answer for replays.
  v_result := private.charge_hold(v_hold, v_cost, 'chat', p_input_tokens, p_output_tokens, p_latency_ms,
    jsonb_build_object('session_id', v_session, 'user_message_id', v_user_msg, 'assistant_message_id', v_asst_msg,
                       'seq', v_seq + 2, 'partial', p_partial, 'content', p_assistant_message));
  return v_result || jsonb_build_object('replay', false);
end
$$;

-- Keyset pagination: newest activity first; pass the last row's (last_message_at, id) to go on.
create or replace function public.list_sessions(
  p_limit integer default 20, p_before_at timestamptz default null, p_before_id uuid default null,
  p_user_id uuid default null
) returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'title', s.title, 'last_message_at', s.last_message_at,
           'created_at', s.created_at, 'message_count', coalesce(ss.message_count, 0))
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

-- Messages of one session, newest first; pass the last row's seq as p_before_seq to go on.
create or replace function public.list_messages(
  p_session_id uuid, p_limit integer default 50, p_before_seq integer default null, p_user_id uuid default null
) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_user uuid := private.effective_user(p_user_id);
  v_out jsonb;
begin
  perform 1 from public.chat_sessions s where s.id = p_session_id and s.user_id = v_user and s.deleted_at is null;
  if not found then
    raise exception using errcode = 'PT404', message = 'session_not_found';
  end if;
  select coalesce(jsonb_agg(jsonb_build_object('id', m.id, 'seq', m.seq, 'role', m.role, 'content', m.content,
           'model', m.model, 'status', m.status, 'input_tokens', m.input_tokens, 'output_tokens', m.output_tokens,
           'created_at', m.created_at) order by m.seq desc), '[]'::jsonb)
  into v_out
  from (
    select * from public.chat_messages cm
    where cm.session_id = p_session_id and cm.user_id = v_user
      and (p_before_seq is null or cm.seq < p_before_seq)
    order by cm.seq desc
    limit least(greatest(coalesce(p_limit, 50), 1), 200)
  ) m;
  return v_out;
end
$$;

revoke all on function public.chat_history(uuid, integer, boolean, uuid) from public, anon, authenticated;
revoke all on function public.settle_chat_turn(uuid, uuid, text, text, integer, integer, integer, text, boolean)
  from public, anon, authenticated;
revoke all on function public.list_sessions(integer, timestamptz, uuid, uuid) from public, anon, authenticated;
revoke all on function public.list_messages(uuid, integer, integer, uuid) from public, anon, authenticated;
grant execute on function public.chat_history(uuid, integer, boolean, uuid) to authenticated, service_role;
grant execute on function public.settle_chat_turn(uuid, uuid, text, text, integer, integer, integer, text, boolean)
  to service_role;
grant execute on function public.list_sessions(integer, timestamptz, uuid, uuid) to authenticated, service_role;
grant execute on function public.list_messages(uuid, integer, integer, uuid) to authenticated, service_role;
