-- Demo data for local development: plans, model prices and one demo user. Nothing the schema needs.

insert into public.plans (id, name, monthly_quota_usd, requests_per_minute, signup_grant_usd) values
  ('pro', 'Pro', 100, 120, 0),
  ('team', 'Team', 1000, 600, 0)
on conflict (id) do update set name = excluded.name, monthly_quota_usd = excluded.monthly_quota_usd,
  requests_per_minute = excluded.requests_per_minute, signup_grant_usd = excluded.signup_grant_usd;

-- Prices per million tokens; a null cache price means the input price. One default model per provider:
-- MODEL_PROVIDER (or DEFAULT_MODEL) picks which one answers a request that names no model.
insert into public.model_prices (model, provider, input_usd_per_mtok, cached_input_usd_per_mtok, cache_write_usd_per_mtok,
                                 output_usd_per_mtok, max_output_tokens, is_default) values
  ('offline-dev', 'offline', 1.000000, 0.100000, null, 2.000000, 4096, true),
  ('gpt-4o-mini', 'openai', 0.150000, 0.075000, null, 0.600000, 16384, true),
  ('gpt-4o', 'openai', 2.500000, 1.250000, null, 10.000000, 16384, false),
  ('o4-mini', 'openai', 1.100000, 0.275000, null, 4.400000, 100000, false),
  ('claude-sonnet-4-5', 'anthropic', 3.000000, 0.300000, 3.750000, 15.000000, 8192, false),
  ('claude-haiku-4-5', 'anthropic', 1.000000, 0.100000, 1.250000, 5.000000, 8192, true)
on conflict (model) do update set provider = excluded.provider, input_usd_per_mtok = excluded.input_usd_per_mtok,
  cached_input_usd_per_mtok = excluded.cached_input_usd_per_mtok,
  cache_write_usd_per_mtok = excluded.cache_write_usd_per_mtok,
  output_usd_per_mtok = excluded.output_usd_per_mtok, max_output_tokens = excluded.max_output_tokens,
  is_default = excluded.is_default;

-- The demo user, written the way Supabase Auth writes an email sign-up (aud, role, instance_id,
-- raw_app_meta_data, confirmed email, '' tokens, timestamps, an `email` identity), so it is a real
-- user on a hosted project too. It has NO password: locally the server mints its token; on a hosted
-- project set one yourself (README, "Deploying") or leave it unable to sign in. Runs as `postgres`.
-- The profile and billing account come from the triggers; pro plan with $25 of credit.
insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
  confirmation_token, recovery_token, email_change_token_new, email_change, raw_app_meta_data,
  raw_user_meta_data, is_super_admin, created_at, updated_at, is_sso_user, is_anonymous)
values ('00000000-0000-0000-0000-000000000000', '00000000-0000-4000-8000-00000000d3e0', 'authenticated',
  'authenticated', 'demo@example.com', '', now(), '', '', '', '',
  '{"provider": "email", "providers": ["email"]}', '{"display_name": "Demo User"}', false, now(), now(),
  false, false)
on conflict (id) do nothing;
insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
values ('00000000-0000-4000-8000-00000000d3e0', '00000000-0000-4000-8000-00000000d3e0',
  '{"sub": "00000000-0000-4000-8000-00000000d3e0", "email": "demo@example.com", "email_verified": true,
    "phone_verified": false}', 'email', now(), now(), now())
on conflict (provider_id, provider) do nothing;
update public.profiles set plan_id = 'pro' where id = '00000000-0000-4000-8000-00000000d3e0';
select public.top_up('00000000-0000-4000-8000-00000000d3e0', 25, 'seed-demo-credit', 'grant', 'demo credit');
