-- Accounts: plans, model prices, profiles (created by a trigger on auth.users), API keys.

create table public.plans (
  id text primary key check (id ~ '^[a-z0-9_]{1,32}$'),
  name text not null check (length(name) between 1 and 80),
  monthly_quota_usd numeric(14,6) not null check (monthly_quota_usd >= 0),
  requests_per_minute integer not null default 60 check (requests_per_minute > 0),
  signup_grant_usd numeric(14,6) not null default 0 check (signup_grant_usd >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.plans is 'Subscription plans: monthly spend quota, request rate and the credit granted at sign-up.';
comment on column public.plans.monthly_quota_usd is 'Most a user on this plan may spend per calendar month (UTC), in USD.';
create trigger plans_touch before update on public.plans
  for each row execute function private.touch_updated_at();
alter table public.plans enable row level security;
create policy "anyone signed in reads plans" on public.plans for select to authenticated using (true);
revoke insert, update, delete, truncate, references, trigger on public.plans from anon, authenticated;

-- The schema needs a default plan for the profile trigger; other plans live in seed.sql.
insert into public.plans (id, name, monthly_quota_usd, requests_per_minute, signup_grant_usd)
values ('free', 'Free', 5, 20, 1)
on conflict (id) do nothing;

create table public.model_prices (
  model text primary key check (length(model) between 1 and 100),
  provider text not null check (provider in ('openai', 'anthropic', 'offline')),
  input_usd_per_mtok numeric(14,6) not null check (input_usd_per_mtok >= 0),
  output_usd_per_mtok numeric(14,6) not null check (output_usd_per_mtok >= 0),
  max_output_tokens integer not null default 4096 check (max_output_tokens between 1 and 200000),
  is_default boolean not null default false,
  active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.model_prices is 'Price per million input and output tokens for each model; edit here to change prices.';
create unique index model_prices_one_default on public.model_prices (is_default) where is_default;
create trigger model_prices_touch before update on public.model_prices
  for each row execute function private.touch_updated_at();
alter table public.model_prices enable row level security;
create policy "anyone signed in reads active prices" on public.model_prices for select to authenticated
  using (active);
revoke insert, update, delete, truncate, references, trigger on public.model_prices from anon, authenticated;

create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  email text,
  display_name text check (length(display_name) <= 200),
  plan_id text not null default 'free' references public.plans (id) on delete restrict,
  status text not null default 'active' check (status in ('active', 'paused', 'blocked')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.profiles is 'One row per auth user, created by trigger. status paused/blocked refuses model calls.';
create index profiles_plan_id_idx on public.profiles (plan_id);
create trigger profiles_touch before update on public.profiles
  for each row execute function private.touch_updated_at();
alter table public.profiles enable row level security;
create policy "owner reads own profile" on public.profiles for select to authenticated
  using ((select auth.uid()) = id);
create policy "owner updates own profile" on public.profiles for update to authenticated
  using ((select auth.uid()) = id) with check ((select auth.uid()) = id);
-- Users may change their display name only; plan and status belong to the backend.
revoke insert, update, delete, truncate, references, trigger on public.profiles from anon, authenticated;
grant update (display_name) on public.profiles to authenticated;

create table public.api_keys (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.profiles (id) on delete cascade,
  name text not null check (length(name) between 1 and 100),
  prefix text not null unique check (prefix ~ '^[0-9a-f]{12}$'),
  key_hash text not null check (key_hash ~ '^[0-9a-f]{64}$'),
  last_used_at timestamptz,
  revoked_at timestamptz,
  created_at timestamptz not null default now()
);
comment on table public.api_keys is 'Programmatic keys: sk_<prefix>_<secret>, stored as sha256 of the whole key. Revoked keys stay for audit.';
create index api_keys_user_id_idx on public.api_keys (user_id);
alter table public.api_keys enable row level security;
create policy "owner reads own api keys" on public.api_keys for select to authenticated
  using ((select auth.uid()) = user_id);
-- The hash is never readable through the API; keys are created and revoked through functions only.
revoke all on public.api_keys from anon, authenticated;
grant select (id, user_id, name, prefix, last_used_at, revoked_at, created_at) on public.api_keys to authenticated;

-- Profile (and, in the billing migration, the billing account) for every new auth user.
create or replace function private.handle_new_user() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.profiles (id, email, display_name)
  values (new.id, new.email, nullif(new.raw_user_meta_data ->> 'display_name', ''));
  return new;
end
$$;
revoke all on function private.handle_new_user() from public;
create trigger on_auth_user_created after insert on auth.users
  for each row execute function private.handle_new_user();

-- API keys ---------------------------------------------------------------------------------------

create or replace function public.create_api_key(p_name text, p_user_id uuid default null)
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
  v_key text;
  v_row public.api_keys;
begin
  if p_name is null or length(p_name) not between 1 and 100 then
    raise exception using errcode = 'PT422', message = 'invalid_name', detail = 'name: 1 to 100 characters';
  end if;
  v_key := 'sk_' || v_prefix || '_' || v_secret;
  insert into public.api_keys (user_id, name, prefix, key_hash)
  values (v_user, p_name, v_prefix, encode(sha256(convert_to(v_key, 'UTF8')), 'hex'))
  returning * into v_row;
  return jsonb_build_object('id', v_row.id, 'name', v_row.name, 'prefix', v_row.prefix,
    'created_at', v_row.created_at, 'key', v_key);
end
$$;

create or replace function public.list_api_keys(p_user_id uuid default null)
returns jsonb
language sql stable
security definer
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object('id', k.id, 'name', k.name, 'prefix', k.prefix,
    'last_used_at', k.last_used_at, 'revoked_at', k.revoked_at, 'created_at', k.created_at)
    order by k.created_at desc, k.id desc), '[]'::jsonb)
  from public.api_keys k
  where k.user_id = private.effective_user(p_user_id)
$$;

create or replace function public.revoke_api_key(p_key_id uuid, p_user_id uuid default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user uuid := private.effective_user(p_user_id);
  v_row public.api_keys;
begin
  update public.api_keys set revoked_at = coalesce(revoked_at, now())
  where id = p_key_id and user_id = v_user
  returning * into v_row;
  if not found then
    raise exception using errcode = 'PT404', message = 'api_key_not_found';
  end if;
  return jsonb_build_object('id', v_row.id, 'revoked_at', v_row.revoked_at);
end
$$;

-- Service only: who a presented key belongs to. PT401 for anything unknown, malformed or revoked.
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
  -- One write a minute at most, so a busy key does not turn every request into an update.
  if v_row.last_used_at is null or v_row.last_used_at < now() - interval '1 minute' then
    update public.api_keys set last_used_at = now() where id = v_row.id;
  end if;
  select p.status into v_status from public.profiles p where p.id = v_row.user_id;
  return jsonb_build_object('user_id', v_row.user_id, 'key_id', v_row.id, 'status', v_status);
end
$$;

revoke all on function public.create_api_key(text, uuid) from public, anon, authenticated;
revoke all on function public.list_api_keys(uuid) from public, anon, authenticated;
revoke all on function public.revoke_api_key(uuid, uuid) from public, anon, authenticated;
revoke all on function public.authenticate_api_key(text) from public, anon, authenticated;
grant execute on function public.create_api_key(text, uuid) to authenticated, service_role;
grant execute on function public.list_api_keys(uuid) to authenticated, service_role;
grant execute on function public.revoke_api_key(uuid, uuid) to authenticated, service_role;
grant execute on function public.authenticate_api_key(text) to service_role;
