-- API keys: scopes and expiry. A key carries one or more scopes ('models': chat and compile;
-- 'usage:read': reading usage) and may expire. Managing keys is never a key's scope: only a user's
-- own access token creates, lists and revokes keys (the functions refuse keys; PostgREST only takes JWTs).

alter table public.api_keys
  add column scopes text[] not null default array['models', 'usage:read']::text[],
  add column expires_at timestamptz;
alter table public.api_keys
  add constraint api_keys_scopes_known check (scopes <@ array['models', 'usage:read']::text[]),
  add constraint api_keys_scopes_not_empty check (cardinality(scopes) > 0);
comment on column public.api_keys.scopes is 'What the key may do: models (chat, compile), usage:read (GET /usage). Keys never manage keys.';
comment on column public.api_keys.expires_at is 'After this instant the key is refused (401 api_key_expired); null: never expires.';
grant select (scopes, expires_at) on public.api_keys to authenticated;

-- The signature changes (scopes and expiry): drop the old function, so no overload is left behind.
drop function public.create_api_key(text, uuid);

-- p_scopes is jsonb (a JSON array of strings), as PostgREST and the postgres transport both send JSON.
-- p_expires_in_days or p_expires_at, not both; neither: the key does not expire.
create function public.create_api_key(
  p_name text,
  p_scopes jsonb default null,
  p_expires_at timestamptz default null,
  p_expires_in_days integer default null,
  p_user_id uuid default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user uuid := private.effective_user(p_user_id);
  v_prefix text := substr(replace(gen_random_uuid()::text, '-', ''), 1, 12);
  -- 2 x 122 random bits from the server's strong RNG (gen_random_uuid uses pg_strong_random).
  v_secret text := replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '');
  v_scopes text[];
  v_expires timestamptz := p_expires_at;
  v_key text;
  v_row public.api_keys;
begin
  if p_name is null or length(p_name) not between 1 and 100 then
    raise exception using errcode = 'PT422', message = 'invalid_name', detail = 'name: 1 to 100 characters';
  end if;
  if p_scopes is null then
    v_scopes := array['models', 'usage:read'];
  elsif jsonb_typeof(p_scopes) <> 'array' or jsonb_array_length(p_scopes) = 0
        or exists (select 1 from jsonb_array_elements(p_scopes) s
                   where jsonb_typeof(s) <> 'string' or s #>> '{}' not in ('models', 'usage:read')) then
    raise exception using errcode = 'PT422', message = 'invalid_scopes',
      detail = 'scopes: one or more of models, usage:read';
  else
    select array_agg(distinct s order by s) into v_scopes from jsonb_array_elements_text(p_scopes) s;
  end if;
  if p_expires_at is not null and p_expires_in_days is not null then
    raise exception using errcode = 'PT422', message = 'invalid_expiry',
      detail = 'expires_at: give expires_at or expires_in_days, not both';
  end if;
  if p_expires_in_days is not null then
    if p_expires_in_days not between 1 and 3650 then
      raise exception using errcode = 'PT422', message = 'invalid_expiry',
        detail = 'expires_in_days: 1 to 3650';
    end if;
    v_expires := now() + make_interval(days => p_expires_in_days);
  elsif v_expires is not null and (v_expires <= now() or v_expires > now() + interval '3650 days') then
    raise exception using errcode = 'PT422', message = 'invalid_expiry',
      detail = 'expires_at: in the future, at most 3650 days ahead';
  end if;
  v_key := 'sk_' || v_prefix || '_' || v_secret;
  insert into public.api_keys (user_id, name, prefix, key_hash, scopes, expires_at)
  values (v_user, p_name, v_prefix, encode(sha256(convert_to(v_key, 'UTF8')), 'hex'), v_scopes, v_expires)
  returning * into v_row;
  return jsonb_build_object('id', v_row.id, 'name', v_row.name, 'prefix', v_row.prefix,
    'scopes', to_jsonb(v_row.scopes), 'expires_at', v_row.expires_at, 'created_at', v_row.created_at,
    'key', v_key);
end
$$;

-- Same signature, more fields: scopes, expires_at and a status (active, expired or revoked).
create or replace function public.list_api_keys(p_user_id uuid default null)
returns jsonb
language sql stable
security definer
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object('id', k.id, 'name', k.name, 'prefix', k.prefix,
    'scopes', to_jsonb(k.scopes), 'expires_at', k.expires_at,
    'status', case when k.revoked_at is not null then 'revoked'
                   when k.expires_at is not null and k.expires_at <= now() then 'expired'
                   else 'active' end,
    'last_used_at', k.last_used_at, 'revoked_at', k.revoked_at, 'created_at', k.created_at)
    order by k.created_at desc, k.id desc), '[]'::jsonb)
  from public.api_keys k
  where k.user_id = private.effective_user(p_user_id)
$$;

-- Service only: who a presented key belongs to and what it may do. PT401 for anything unknown,
-- malformed or revoked (invalid_api_key) and for an expired key (api_key_expired).
create or replace function public.authenticate_api_key(p_key text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_prefix text;
  v_row public.api_keys;
  v_status text;
begin
  if p_key is null or p_key !~ '^sk_[0-9a-f]{12}_[0-9a-f]{64}$' then
    raise exception using errcode = 'PT401', message = 'invalid_api_key';
  end if;
  v_prefix := substr(p_key, 4, 12);
  select * into v_row from public.api_keys where prefix = v_prefix;
  if not found or v_row.revoked_at is not null
     or v_row.key_hash <> encode(sha256(convert_to(p_key, 'UTF8')), 'hex') then
    raise exception using errcode = 'PT401', message = 'invalid_api_key';
  end if;
  if v_row.expires_at is not null and v_row.expires_at <= now() then
    raise exception using errcode = 'PT401', message = 'api_key_expired',
      detail = format('the key expired at %s', v_row.expires_at);
  end if;
  -- One write a minute at most, so a busy key does not turn every request into an update.
  if v_row.last_used_at is null or v_row.last_used_at < now() - interval '1 minute' then
    update public.api_keys set last_used_at = now() where id = v_row.id;
  end if;
  select p.status into v_status from public.profiles p where p.id = v_row.user_id;
  return jsonb_build_object('user_id', v_row.user_id, 'key_id', v_row.id, 'status', v_status,
    'scopes', to_jsonb(v_row.scopes), 'expires_at', v_row.expires_at);
end
$$;

revoke all on function public.create_api_key(text, jsonb, timestamptz, integer, uuid) from public, anon, authenticated;
revoke all on function public.list_api_keys(uuid) from public, anon, authenticated;
revoke all on function public.authenticate_api_key(text) from public, anon, authenticated;
grant execute on function public.create_api_key(text, jsonb, timestamptz, integer, uuid) to authenticated, service_role;
grant execute on function public.list_api_keys(uuid) to authenticated, service_role;
grant execute on function public.authenticate_api_key(text) to service_role;
